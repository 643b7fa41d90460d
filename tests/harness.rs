//! The harness itself: clusters start in parallel with their profiles, clean up after a
//! panic, survive a crash, report start failures with the server log; the Conjur schema
//! loads everywhere and the workload driver behaves like Conjur.

use std::collections::BTreeSet;
use std::time::Duration;

use pgsieve::conjur::CONJUR_TABLES;
use pgsieve::harness::cluster::{CONJUR_DB, REPLICATOR_PASSWORD};
use pgsieve::harness::conjur::{self, ReplicaSet};
use pgsieve::harness::generate::PolicySpec;
use pgsieve::harness::workload::{self, Change};
use pgsieve::harness::{Cluster, ClusterSpec, Topology};

use crate::support::{accepts_connections, ok};

#[tokio::test]
async fn leader_and_two_followers_start_in_parallel_with_schema_and_publication() {
    let topo = ok(Topology::start(2));
    assert_eq!(topo.followers.len(), 2);
    let ports: BTreeSet<u16> = std::iter::once(&topo.leader)
        .chain(&topo.followers)
        .map(Cluster::port)
        .collect();
    assert_eq!(ports.len(), 3, "distinct ports");

    for c in std::iter::once(&topo.leader).chain(&topo.followers) {
        assert_eq!(
            ok(c.psql("postgres", "SHOW wal_level")),
            "logical",
            "{}",
            c.name()
        );
        assert_eq!(ok(c.psql("postgres", "SHOW fsync")), "off");
        assert_eq!(ok(c.psql("postgres", "SHOW synchronous_commit")), "on");
        assert_eq!(ok(c.psql("postgres", "SHOW max_replication_slots")), "20");
        assert_eq!(
            ok(c.psql(
                "postgres",
                "SELECT rolreplication AND NOT rolsuper FROM pg_roles WHERE rolname = 'replicator'"
            )),
            "t"
        );
    }
    assert_eq!(
        ok(topo.leader.psql("postgres", "SHOW max_wal_senders")),
        "20"
    );

    let (leader, followers) = ok(topo.prepare_conjur().await);
    for client in std::iter::once(&leader).chain(&followers) {
        let tables: BTreeSet<String> = client
            .query(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut want: BTreeSet<String> = CONJUR_TABLES.iter().map(|t| t.to_string()).collect();
        want.insert("schema_migrations".into());
        assert_eq!(tables, want);
    }

    // The publication lists exactly the Conjur tables; policy_log has a full identity.
    let published: BTreeSet<String> = leader
        .query(
            "SELECT tablename FROM pg_publication_tables WHERE pubname = 'pgsieve'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let want: BTreeSet<String> = CONJUR_TABLES.iter().map(|t| t.to_string()).collect();
    assert_eq!(published, want);
    let ident: i8 = leader
        .query_one(
            "SELECT relreplident::\"char\" FROM pg_class WHERE oid = 'policy_log'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(ident as u8, b'f');
    // Idempotent, and it re-adds a table dropped from the publication.
    leader
        .batch_execute("ALTER PUBLICATION pgsieve DROP TABLE secrets")
        .await
        .unwrap();
    ok(conjur::prepare_leader(&leader, "pgsieve").await);
    ok(conjur::prepare_leader(&leader, "pgsieve").await);
    let n: i64 = leader
        .query_one(
            "SELECT count(*) FROM pg_publication_tables WHERE pubname = 'pgsieve'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n as usize, CONJUR_TABLES.len());
}

#[tokio::test]
async fn replicator_needs_its_scram_password_and_can_read_conjur_tables() {
    let c = ok(Cluster::start(ClusterSpec::leader("scram")));
    let admin = ok(conjur::prepare_conjur(&c).await);
    ok(workload::create_account(&mut { admin }, "acme").await);

    let repl = ok(pgsieve::harness::cluster::connect_url(&c.replicator_url(CONJUR_DB)).await);
    let n: i64 = repl
        .query_one("SELECT count(*) FROM roles", &[])
        .await
        .unwrap()
        .get(0);
    assert!(n >= 2);
    let wrong = c
        .replicator_url(CONJUR_DB)
        .replace(REPLICATOR_PASSWORD, "wrong");
    let err = pgsieve::harness::cluster::connect_url(&wrong)
        .await
        .expect_err("wrong password must fail");
    assert!(
        err.to_string().contains("password authentication failed"),
        "{err}"
    );
    assert!(
        !err.to_string().contains("wrong@"),
        "password redacted: {err}"
    );
}

#[test]
fn cluster_is_stopped_and_removed_when_its_owner_panics() {
    let (tx, rx) = std::sync::mpsc::channel();
    let joined = std::thread::spawn(move || {
        let c = Cluster::start(ClusterSpec::follower("doomed")).expect("start");
        tx.send((c.port(), c.dir().to_path_buf())).unwrap();
        assert!(accepts_connections(c.port()));
        panic!("test body fails while holding a cluster");
    })
    .join();
    assert!(joined.is_err(), "the thread panicked");
    let (port, dir) = rx.recv().unwrap();
    assert!(!dir.exists(), "{} removed", dir.display());
    assert!(!accepts_connections(port), "port {port} closed");
}

#[test]
fn kill_then_start_again_keeps_committed_rows() {
    let mut c = ok(Cluster::start(ClusterSpec::leader("crash")));
    let port = c.port();
    ok(c.psql(
        "postgres",
        "CREATE TABLE t(x int); INSERT INTO t VALUES (1), (2)",
    ));
    c.kill();
    assert!(!c.is_running());
    assert!(!accepts_connections(port));
    ok(c.start_again());
    assert_eq!(c.port(), port);
    assert_eq!(ok(c.psql("postgres", "SELECT sum(x) FROM t")), "3");
    assert!(c.log_tail(50).contains("database system was interrupted"));
    c.stop_fast();
    ok(c.start_again());
    assert_eq!(ok(c.psql("postgres", "SELECT count(*) FROM t")), "2");
}

#[test]
fn start_failure_reports_the_server_log() {
    let err = Cluster::start(ClusterSpec::leader("bad").with_conf("shared_buffers = 'lots'"))
        .expect_err("bad setting must fail");
    let text = err.to_string();
    assert!(text.contains("cluster bad did not start"), "{text}");
    assert!(text.contains("shared_buffers"), "log tail included: {text}");
}

#[tokio::test]
async fn secret_versions_are_numbered_by_the_trigger_and_trimmed_to_twenty() {
    let c = ok(Cluster::start(ClusterSpec::leader("secrets")));
    let mut client = ok(conjur::prepare_conjur(&c).await);
    let spec = PolicySpec::new("acme", 2, 2, 0);
    let pop = ok(spec.populate(&mut client).await);
    let var = &pop.variables[0];

    let mut got = Vec::new();
    for i in 0..25u8 {
        got.push(ok(workload::add_secret(&mut client, var, &[i]).await));
    }
    assert_eq!(got, (1..=25).collect::<Vec<i32>>());
    let versions = versions_of(&client, var).await;
    assert_eq!(versions, (6..=25).collect::<Vec<i32>>(), "newest 20 kept");

    // Rotation inserts without trimming; the next API write trims again.
    for _ in 0..3 {
        ok(workload::rotate_secret(&client, var, b"rotated", None).await);
    }
    assert_eq!(
        versions_of(&client, var).await,
        (6..=28).collect::<Vec<i32>>()
    );
    assert_eq!(ok(workload::add_secret(&mut client, var, b"api").await), 29);
    assert_eq!(
        versions_of(&client, var).await,
        (10..=29).collect::<Vec<i32>>()
    );

    // Expiration is an UPDATE of every version.
    let at = std::time::SystemTime::now() + Duration::from_secs(3600);
    assert_eq!(
        ok(workload::set_expiration(&client, var, Some(at)).await),
        20
    );
    let unexpiring: i64 = client
        .query_one(
            "SELECT count(*) FROM secrets WHERE resource_id = $1 AND expires_at IS NULL",
            &[var],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(unexpiring, 0);

    // Values are stored as given; other variables are untouched.
    let other = &pop.variables[1];
    assert!(versions_of(&client, other).await.is_empty());
    let latest: Vec<u8> = client
        .query_one(
            "SELECT value FROM secrets WHERE resource_id = $1 ORDER BY version DESC LIMIT 1",
            &[var],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(latest, b"api");
}

#[tokio::test]
async fn policy_load_logs_rows_stamps_finished_at_and_grants_owners() {
    let c = ok(Cluster::start(ClusterSpec::leader("load")));
    let mut client = ok(conjur::prepare_conjur(&c).await);
    let spec = PolicySpec::new("acme", 3, 4, 2).with_hosts_per_app(2);
    let pop = ok(spec.populate(&mut client).await);
    assert_eq!(pop.variables.len(), 12);

    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM policy_versions WHERE finished_at IS NULL"
        )
        .await,
        0
    );
    assert_eq!(
        count(&client, "SELECT count(*) FROM secrets").await,
        12 * 2,
        "versions per variable"
    );
    assert_eq!(
        count(&client, "SELECT max(version)::int8 FROM secrets").await,
        2
    );
    // Every resource has its textsearch row; every role-resource its owner membership.
    assert_eq!(
        count(&client, "SELECT count(*) FROM resources r LEFT JOIN resources_textsearch t USING (resource_id) WHERE t.textsearch IS NULL").await,
        0
    );
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM resources r JOIN roles o ON o.role_id = r.resource_id
           WHERE NOT EXISTS (SELECT 1 FROM role_memberships m WHERE m.role_id = r.resource_id
                             AND m.member_id = r.owner_id AND m.ownership AND m.admin_option)"
        )
        .await,
        0
    );
    // The body load (into acme:policy:apps) logged its roles, memberships, resources,
    // permissions and annotations.
    let kinds: BTreeSet<String> = client
        .query(
            "SELECT DISTINCT kind::text FROM policy_log WHERE policy_id = 'acme:policy:apps'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        kinds,
        [
            "annotations",
            "permissions",
            "resources",
            "role_memberships",
            "roles"
        ]
        .into_iter()
        .map(String::from)
        .collect()
    );
    let logged_vars = count(
        &client,
        "SELECT count(*) FROM policy_log WHERE kind = 'resources'
                         AND subject -> 'resource_id' LIKE 'acme:variable:%'",
    )
    .await;
    assert_eq!(logged_vars, 12);

    // Inside a load the new version is unfinished; the commit stamps it.
    let tx = client.transaction().await.unwrap();
    let v =
        ok(
            workload::begin_policy_version(&tx, "acme:policy:apps", "acme:user:admin", "- !grant")
                .await,
        );
    let open: Option<std::time::SystemTime> = tx
        .query_one(
            "SELECT finished_at FROM policy_versions WHERE resource_id = 'acme:policy:apps' AND version = $1",
            &[&v],
        )
        .await
        .unwrap()
        .get(0);
    assert!(open.is_none());
    tx.commit().await.unwrap();
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM policy_versions WHERE finished_at IS NULL"
        )
        .await,
        0
    );
}

#[tokio::test]
async fn deleting_a_policy_cascades_to_its_secrets_and_replica_sets_grant() {
    let c = ok(Cluster::start(ClusterSpec::leader("cascade")));
    let mut client = ok(conjur::prepare_conjur(&c).await);
    let spec = PolicySpec::new("acme", 2, 3, 2);
    let pop = ok(spec.populate(&mut client).await);

    // A replica set in account system; its data group joins app 0's layer.
    let set = ReplicaSet::new("us-east");
    ok(workload::create_replica_set(&mut client, &set).await);
    ok(workload::create_replica_set(&mut client, &set).await); // idempotent
    let group = set.data_group();
    assert_eq!(
        group,
        "system:group:conjur/replication-sets/us-east/replicated-data"
    );
    ok(workload::policy_change(
        &mut client,
        &spec.app_policy(0),
        &spec.admin(),
        &[Change::GrantRole {
            role: spec.layer(0),
            member: group.clone(),
        }],
    )
    .await);
    let allowed: bool = client
        .query_one(
            "SELECT is_role_allowed_to($1, 'execute', $2)",
            &[&group, &pop.variables[0]],
        )
        .await
        .unwrap()
        .get(0);
    assert!(allowed);

    // Deleting app 0's policy removes its variables, secrets, layer and the grant.
    let before: i64 = client
        .query_one("SELECT count(*) FROM secrets", &[])
        .await
        .unwrap()
        .get(0);
    ok(workload::policy_change(
        &mut client,
        &spec.base_policy(),
        &spec.admin(),
        &[Change::DeleteResource {
            resource: spec.app_policy(0),
        }],
    )
    .await);
    let app0 = format!("acme:variable:apps/{}/%", spec.app_name(0));
    let left: i64 = client
        .query_one(
            "SELECT count(*) FROM secrets WHERE resource_id LIKE $1",
            &[&app0],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
    let after: i64 = client
        .query_one("SELECT count(*) FROM secrets", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(after, before - 3 * 2, "only app 0's secrets went");
    let grants: i64 = client
        .query_one(
            "SELECT count(*) FROM role_memberships WHERE member_id = $1",
            &[&group],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(grants, 0);
}

async fn count(client: &tokio_postgres::Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0)
}

async fn versions_of(client: &tokio_postgres::Client, var: &str) -> Vec<i32> {
    client
        .query(
            "SELECT version FROM secrets WHERE resource_id = $1 ORDER BY version",
            &[&var],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Not a pass/fail test: prints how long a 100k-row policy load takes
/// (`cargo nextest run -p pgsieve-tests --run-ignored only large_policy_load`).
#[tokio::test]
#[ignore = "timing report, run on demand"]
async fn large_policy_load_timing() {
    let c = ok(Cluster::start(ClusterSpec::leader("large")));
    let mut client = ok(conjur::prepare_conjur(&c).await);
    let spec = PolicySpec::new("acme", 250, 100, 3);
    ok(workload::create_account(&mut client, "acme").await);
    let [top, body] = spec.loads();
    ok(workload::load_policy(&mut client, &top).await);
    let t = std::time::Instant::now();
    ok(workload::load_policy(&mut client, &body).await);
    let load = t.elapsed();
    let t = std::time::Instant::now();
    let n = ok(workload::add_secret_versions(&client, &spec.variables(), 3, 32, 1).await);
    let secrets = t.elapsed();
    let logged = count(&client, "SELECT count(*) FROM policy_log").await;
    println!(
        "policy load: {} rows written directly, {logged} policy_log rows, {:.2?}; \
         {n} secret versions in {:.2?}",
        body.row_count(),
        load,
        secrets
    );
}
