//! The docker kit (`docker/`) exercised without a Docker engine: its pgsieve
//! configs drive `pgsieve setup` and two `pgsieve run` sidecars against
//! harness clusters (whose PostgreSQL settings are the kit's own
//! `docker/postgres/*.conf`, compiled into the harness), with only hosts,
//! ports, password files and paths overridden through `PGSIEVE_*` variables,
//! as a deployment overrides them; and the compose file, the Kubernetes
//! example and the Dockerfile refer to exactly these files, paths and probes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pgsieve::conjur::CONJUR_TABLES;
use pgsieve::harness::Topology;
use pgsieve::harness::cluster::{CONJUR_DB, Cluster, REPLICATOR_PASSWORD, REPLICATOR_ROLE};
use pgsieve::harness::compare::follower_diff;
use pgsieve::harness::conjur::ReplicaSet;
use pgsieve::harness::generate::PolicySpec;
use pgsieve::harness::oracle::OracleRule;
use pgsieve::harness::process::{PgsieveProcess, run_pgsieve_with_env};
use pgsieve::harness::workload::{Change, apply_changes, create_replica_set, grant_layers_to_sets};

use crate::replication::wait_caught_up;
use crate::support::ok;

/// A file of the kit.
fn kit(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docker")
        .join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(kit(path)).unwrap_or_else(|e| panic!("docker/{path}: {e}"))
}

/// A loopback address nothing listens on yet (for `[metrics] listen`).
fn free_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// The follower role the kit creates (`docker/postgres/follower-roles.sql`).
const FOLLOWER_ROLE: &str = "pgsieve";

/// The overrides a deployment would set: where the databases are, where the
/// password files and the spool live, where metrics listen; and TLS off,
/// because the harness leader has no certificate (the kit's `verify-full`
/// is exercised by tests/source.rs's TLS tests).
fn overrides(
    leader_url: String,
    follower: &Cluster,
    secrets: &Path,
    spool: &Path,
) -> Vec<(String, String)> {
    vec![
        ("PGSIEVE_LEADER_URL".into(), leader_url),
        ("PGSIEVE_LEADER_TLS".into(), "disable".into()),
        (
            "PGSIEVE_LEADER_PASSWORD_FILE".into(),
            secrets.join("replicator_password").display().to_string(),
        ),
        (
            "PGSIEVE_FOLLOWER_0_URL".into(),
            format!(
                "postgresql://{FOLLOWER_ROLE}@{}:{}/{CONJUR_DB}",
                follower.host(),
                follower.port()
            ),
        ),
        (
            "PGSIEVE_FOLLOWER_0_PASSWORD_FILE".into(),
            secrets.join("follower_password").display().to_string(),
        ),
        (
            "PGSIEVE_APPLY_SPOOL_DIR".into(),
            spool.display().to_string(),
        ),
        ("PGSIEVE_METRICS_LISTEN".into(), free_address()),
    ]
}

/// The settings of a config text, except where the database is and where its
/// password file lives (which differ between compose and Kubernetes).
fn settings(toml: &str) -> Vec<String> {
    toml.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter(|l| !l.starts_with("url =") && !l.starts_with("password_file ="))
        .map(str::to_owned)
        .collect()
}

#[test]
fn compose_kubernetes_and_dockerfile_use_the_kit_files() {
    let compose = read("compose.yaml");
    for name in ["us-east", "eu-west"] {
        assert!(
            compose.contains(&format!("./pgsieve/{name}.toml:/etc/pgsieve/pgsieve.toml")),
            "compose does not mount docker/pgsieve/{name}.toml"
        );
        assert!(compose.contains(&format!("follower-{name}:")));
        let config = read(&format!("pgsieve/{name}.toml"));
        assert!(config.contains(&format!("@follower-{name}:5432/")));
    }
    assert!(compose.contains("./postgres:/etc/pgsieve/postgres"));
    assert!(compose.contains("./postgres/initdb:/docker-entrypoint-initdb.d"));
    assert!(compose.contains("../proxy/sql/conjur-schema.sql:/etc/pgsieve/conjur-schema.sql"));
    // The init script includes the harness's fragments, which must exist.
    let init = read("postgres/initdb/10-pgsieve.sh");
    assert!(init.contains("$conf_dir/common.conf") && init.contains("$conf_dir/$role.conf"));
    for conf in ["common.conf", "leader.conf", "follower.conf"] {
        assert!(kit(&format!("postgres/{conf}")).is_file(), "{conf} missing");
    }
    let roles = read("postgres/initdb/20-conjur.sh");
    assert!(roles.contains("$conf_dir/$PGSIEVE_ROLE-roles.sql"));
    for sql in ["leader-roles.sql", "follower-roles.sql"] {
        assert!(kit(&format!("postgres/{sql}")).is_file(), "{sql} missing");
    }
    let dockerfile = read("Dockerfile");
    assert!(dockerfile.contains("/etc/pgsieve/pgsieve.toml"));
    assert!(dockerfile.contains("USER 10001"));
    // The Kubernetes example probes the endpoints `run` serves, and embeds
    // the same sidecar config (its follower on localhost).
    let k8s = read("k8s/follower-with-pgsieve.yaml");
    assert!(k8s.contains("path: /healthz") && k8s.contains("path: /readyz"));
    let block: String = k8s
        .lines()
        .skip_while(|l| !l.contains("pgsieve.toml: |"))
        .skip(1)
        .take_while(|l| !l.starts_with("---"))
        .map(|l| format!("{}\n", l.trim()))
        .collect();
    let k8s_lines = settings(&block);
    let embedded = settings(&read("pgsieve/us-east.toml"));
    assert_eq!(
        k8s_lines, embedded,
        "k8s/follower-with-pgsieve.yaml embeds a config that differs from pgsieve/us-east.toml"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kit_configs_run_two_sidecars_that_filter_by_their_sets() {
    let topology = ok(Topology::start(2));
    let (mut leader, followers) = ok(topology.prepare_conjur().await);
    // The sidecars apply as the kit's non-superuser follower role.
    let role_sql = read("postgres/follower-roles.sql").replace(":'pw'", "'unused'");
    for follower in &followers {
        follower
            .batch_execute(&role_sql)
            .await
            .expect("docker/postgres/follower-roles.sql on a follower");
    }
    let sets = [ReplicaSet::new("us-east"), ReplicaSet::new("eu-west")];
    for set in &sets {
        ok(create_replica_set(&mut leader, set).await);
    }
    let pop = ok(PolicySpec::new("acme", 3, 4, 2)
        .with_seed(5)
        .populate(&mut leader)
        .await);
    ok(grant_layers_to_sets(&leader, &pop.layers[..2], &sets).await);

    let scratch = tempfile::tempdir().unwrap();
    let secrets = scratch.path().join("secrets");
    std::fs::create_dir(&secrets).unwrap();
    std::fs::write(secrets.join("replicator_password"), REPLICATOR_PASSWORD).unwrap();
    // The followers trust loopback; the file must exist all the same.
    std::fs::write(secrets.join("follower_password"), "unused").unwrap();
    // Password files readable by others are refused (libpq's rule).
    for name in ["replicator_password", "follower_password"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::Permissions::from_mode(0o600);
        std::fs::set_permissions(secrets.join(name), mode).unwrap();
    }
    let port = topology.leader.port();
    let replicator = format!("postgresql://{REPLICATOR_ROLE}@127.0.0.1:{port}/{CONJUR_DB}");

    // `pgsieve setup` as the compose file runs it: as the tables' owner.
    let config = kit("pgsieve/us-east.toml");
    let config_arg = config.display().to_string();
    let setup_env = overrides(
        topology.leader.url(CONJUR_DB),
        &topology.followers[0],
        &secrets,
        scratch.path(),
    );
    let (code, stdout, stderr) = ok(run_pgsieve_with_env(
        &["setup", "-c", &config_arg],
        &setup_env,
        Duration::from_secs(60),
    ));
    assert_eq!(code, Some(0), "setup failed:\n{stdout}\n{stderr}");

    let mut sidecars = Vec::new();
    for (i, set) in sets.iter().enumerate() {
        let spool = scratch.path().join(format!("spool-{}", set.name));
        std::fs::create_dir(&spool).unwrap();
        let env = overrides(replicator.clone(), &topology.followers[i], &secrets, &spool);
        let file = kit(&format!("pgsieve/{}.toml", set.name));
        sidecars.push(ok(PgsieveProcess::start_with_env(&file, env)));
    }
    let origins = ["pgsieve_pgsieve_us_east", "pgsieve_pgsieve_eu_west"];
    let check = |step: &'static str| {
        let (leader, followers, sidecars, sets) = (&leader, &followers, &sidecars, &sets);
        async move {
            for i in 0..2 {
                wait_caught_up(
                    leader,
                    &followers[i],
                    origins[i],
                    &sidecars[i],
                    Duration::from_secs(120),
                )
                .await;
                let diff = ok(follower_diff(
                    leader,
                    &followers[i],
                    CONJUR_TABLES,
                    &sets[i].data_group(),
                    OracleRule::Execute,
                    &[],
                )
                .await);
                assert!(
                    diff.is_empty(),
                    "{step}: follower of {} differs:\n{}\npgsieve log:\n{}",
                    sets[i].name,
                    diff.join("\n"),
                    sidecars[i].log()
                );
            }
        }
    };
    check("after the initial copy").await;
    // A live grant to us-east of the third app: only that follower gains it.
    ok(apply_changes(
        &leader,
        None,
        &[Change::GrantRole {
            role: pop.layers[2].clone(),
            member: sets[0].data_group(),
        }],
    )
    .await);
    check("after a live grant").await;
    let held: i64 = followers[1]
        .query_one(
            "SELECT count(*) FROM secrets WHERE resource_id = ANY($1)",
            &[&pop.variables],
        )
        .await
        .unwrap()
        .get(0);
    assert!(held > 0, "eu-west holds none of its app's secrets");
    for mut sidecar in sidecars {
        assert_eq!(sidecar.terminate(Duration::from_secs(20)), Some(0));
    }
}
