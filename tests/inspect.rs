//! The operator commands around `run`: `pgsieve check` (preflight, one PASS/FAIL line
//! per check), `pgsieve status` (slot and follower progress) and `pgsieve setup`
//! (publication, idempotent), each run as the real binary against real clusters.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pgsieve::conjur::CONJUR_TABLES;
use pgsieve::harness::Topology;
use pgsieve::harness::cluster::{CONJUR_DB, Cluster, ClusterSpec};
use pgsieve::harness::conjur::{id, prepare_conjur, prepare_leader};
use pgsieve::harness::process::{FollowerEntry, PgsieveConfig, PgsieveProcess, run_pgsieve};
use pgsieve::harness::topology::DEFAULT_PUBLICATION;
use pgsieve::harness::workload::{PolicyLoad, add_secret, create_account, load_policy};
use pgsieve_protocol::Lsn;

use crate::support::ok;

const TIMEOUT: Duration = Duration::from_secs(60);

/// A config file in the temp dir, removed on drop.
struct ConfigFile(PathBuf);

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn write_config(config: &PgsieveConfig) -> ConfigFile {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "pgsieve-inspect-{}-{}.toml",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, config.to_toml()).expect("writing pgsieve.toml");
    ConfigFile(path)
}

/// Runs `pgsieve <command> -c <path> [extra…]`; returns (exit code, stdout, stderr).
fn pgsieve(command: &str, path: &std::path::Path, extra: &[&str]) -> (Option<i32>, String, String) {
    let path = path.to_str().expect("utf-8 temp path");
    let mut args = vec![command, "-c", path];
    args.extend_from_slice(extra);
    ok(run_pgsieve(&args, TIMEOUT))
}

fn fail_lines(stdout: &str) -> Vec<&str> {
    stdout.lines().filter(|l| l.starts_with("FAIL")).collect()
}

/// A correctly prepared leader and one full follower, and a check config for them.
async fn prepared() -> (
    Topology,
    tokio_postgres::Client,
    Vec<tokio_postgres::Client>,
    PgsieveConfig,
) {
    let topology = ok(Topology::start(1));
    let (leader, followers) = ok(topology.prepare_conjur().await);
    let config = PgsieveConfig::new(
        &topology.leader,
        "pgsieve_check",
        vec![FollowerEntry::full("f1", &topology.followers[0])],
    );
    (topology, leader, followers, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_passes_on_a_correct_setup() {
    let (_topology, _leader, _followers, config) = prepared().await;
    let file = write_config(&config);
    let path = &file.0;
    let (code, stdout, stderr) = pgsieve("check", path, &[]);
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(fail_lines(&stdout).is_empty(), "{stdout}");
    for line in [
        "PASS  leader: wal_level: logical",
        "PASS  leader: replication connection: IDENTIFY_SYSTEM",
        "PASS  leader: role may replicate: role replicator has REPLICATION",
        &format!(
            "PASS  leader: publication {DEFAULT_PUBLICATION}: lists exactly Conjur's 14 tables"
        ),
        "PASS  leader: policy_log replica identity: FULL",
        "PASS  leader: slot pgsieve_check: does not exist yet",
        "PASS  follower f1: schema: 14 published tables match the leader column by column",
        "PASS  follower f1: apply privileges:",
        "PASS  follower f1: replication origin: origin pgsieve_pgsieve_check not created yet",
    ] {
        assert!(stdout.contains(line), "{line:?} missing from:\n{stdout}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_fails_on_a_leader_without_logical_wal() {
    let clusters = ok(Cluster::start_all(vec![
        ClusterSpec::leader("x").with_conf("wal_level = replica"),
        ClusterSpec::follower("f1"),
    ]));
    let leader = ok(prepare_conjur(&clusters[0]).await);
    ok(prepare_leader(&leader, DEFAULT_PUBLICATION).await);
    ok(prepare_conjur(&clusters[1]).await);
    let config = PgsieveConfig::new(
        &clusters[0],
        "pgsieve_check",
        vec![FollowerEntry::full("f1", &clusters[1])],
    );
    let file = write_config(&config);
    let path = &file.0;
    let (code, stdout, stderr) = pgsieve("check", path, &[]);
    assert_eq!(code, Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(
        fail_lines(&stdout),
        vec![
            "FAIL  leader: wal_level: wal_level is replica, logical decoding needs logical: set \
             wal_level = logical and restart the leader"
        ],
        "{stdout}"
    );
    assert!(stderr.contains("1 of "), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_the_column_a_follower_lacks() {
    let (_topology, _leader, followers, config) = prepared().await;
    followers[0]
        .batch_execute("ALTER TABLE public.secrets DROP COLUMN expires_at")
        .await
        .expect("dropping a follower column");
    let file = write_config(&config);
    let path = &file.0;
    let (code, stdout, stderr) = pgsieve("check", path, &[]);
    assert_eq!(code, Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(
        fail_lines(&stdout),
        vec![
            "FAIL  follower f1: schema: table public.secrets: the follower has no column \
             \"expires_at\" (leader type timestamp without time zone)"
        ],
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_fails_when_the_publication_is_missing() {
    let (_topology, leader, _followers, config) = prepared().await;
    leader
        .batch_execute(&format!("DROP PUBLICATION {DEFAULT_PUBLICATION}"))
        .await
        .expect("dropping the publication");
    let file = write_config(&config);
    let path = &file.0;
    let (code, stdout, stderr) = pgsieve("check", path, &[]);
    assert_eq!(code, Some(1), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(
        fail_lines(&stdout),
        vec![&*format!(
            "FAIL  leader: publication {p}: publication {p} does not exist: run pgsieve setup",
            p = DEFAULT_PUBLICATION
        )],
        "{stdout}"
    );
}

fn lsn(v: &serde_json::Value) -> Lsn {
    let text = v
        .as_str()
        .unwrap_or_else(|| panic!("not an LSN string: {v}"));
    Lsn::from_str(text).unwrap_or_else(|_| panic!("bad LSN {text:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_json_reports_slot_and_follower_progress_after_a_run() {
    let (topology, mut leader, followers, config) = prepared().await;
    ok(create_account(&mut leader, "acme").await);
    let admin = id("acme", "user", "admin");
    let root = id("acme", "policy", "root");
    let mut load = PolicyLoad::new(root.clone(), admin.clone());
    let variables: Vec<String> = (0..5)
        .map(|i| id("acme", "variable", &format!("app/secret{i}")))
        .collect();
    for v in &variables {
        load.resource(v, &admin, Some(&root));
    }
    ok(load_policy(&mut leader, &load).await);
    let pgsieve_run = ok(PgsieveProcess::start(&config));
    for (i, v) in variables.iter().enumerate() {
        ok(add_secret(&mut leader, v, format!("value-{i}").as_bytes()).await);
    }
    let target: String = leader
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await
        .expect("leader WAL position")
        .get(0);
    let target = Lsn::from_str(&target).expect("LSN");
    let origin = "pgsieve_pgsieve_check";
    crate::replication::wait_caught_up(&leader, &followers[0], origin, &pgsieve_run, TIMEOUT).await;

    // The slot's confirmed flush follows the origin through feedback (every second by
    // default): poll until they agree.
    let file = write_config(&config);
    let path = &file.0;
    let deadline = Instant::now() + TIMEOUT;
    let report = loop {
        let (code, stdout, stderr) = pgsieve("status", path, &["--format", "json"]);
        assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
        let report: serde_json::Value =
            serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
        let f = &report["followers"][0];
        let confirmed = report["slot"]["confirmed_flush_lsn"]
            .as_str()
            .map(str::to_owned);
        if confirmed.is_some() && f["origin_lsn"].as_str().map(str::to_owned) == confirmed {
            break report;
        }
        assert!(
            Instant::now() < deadline,
            "slot confirmed flush never reached the origin: {report:#}\npgsieve log:\n{}",
            pgsieve_run.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    let slot = &report["slot"];
    assert_eq!(slot["name"], "pgsieve_check");
    assert_eq!(slot["exists"], true);
    assert_eq!(slot["active"], true, "{report:#}");
    let f = &report["followers"][0];
    assert_eq!(f["name"], "f1");
    assert_eq!(f["origin"], origin);
    assert!(f["error"].is_null(), "{report:#}");
    // The origin holds everything committed before the wait, as read on the follower.
    let origin_lsn = lsn(&f["origin_lsn"]);
    assert!(origin_lsn >= target, "origin {origin_lsn} < {target}");
    let current = lsn(&report["leader"]["current_wal_lsn"]);
    assert!(current >= origin_lsn);
    // Lag figures are the differences they claim to be.
    assert_eq!(
        f["lag_bytes"].as_u64(),
        Some(current.bytes_since(origin_lsn))
    );
    assert_eq!(
        slot["lag_bytes"].as_u64(),
        Some(current.bytes_since(lsn(&slot["confirmed_flush_lsn"])))
    );
    let retained = slot["wal_retained_bytes"]
        .as_u64()
        .expect("wal_retained_bytes");
    assert_eq!(retained, current.bytes_since(lsn(&slot["restart_lsn"])));
    assert!(retained >= slot["lag_bytes"].as_u64().unwrap_or(u64::MAX));
    // Idle after the workload: only unrelated WAL (checkpoints, running-xacts records)
    // can separate the follower from the leader's current position.
    assert!(
        f["lag_bytes"].as_u64().unwrap_or(u64::MAX) <= 64 * 1024,
        "{report:#}"
    );

    // Text form agrees.
    let (code, text, _) = pgsieve("status", path, &[]);
    assert_eq!(code, Some(0));
    assert!(
        text.contains(&format!("follower f1: origin {origin} at {origin_lsn}")),
        "{text}"
    );
    drop(topology);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_dry_run_prints_sql_and_setup_is_idempotent() {
    let cluster = ok(Cluster::start(ClusterSpec::leader("leader")));
    let leader = ok(prepare_conjur(&cluster).await);
    let mut config = PgsieveConfig::new(&cluster, "pgsieve_setup", Vec::new());
    // Creating a publication and altering policy_log need the tables' owner.
    config.leader_url = cluster.url(CONJUR_DB);
    let file = write_config(&config);
    let path = &file.0;
    let publication_count = || async {
        leader
            .query_one(
                "SELECT count(*) FROM pg_publication WHERE pubname = $1",
                &[&DEFAULT_PUBLICATION],
            )
            .await
            .expect("pg_publication")
            .get::<_, i64>(0)
    };

    let (code, stdout, stderr) = pgsieve("setup", path, &["--dry-run"]);
    assert_eq!(code, Some(0), "stderr:\n{stderr}");
    assert!(
        stdout.contains("ALTER TABLE public.policy_log REPLICA IDENTITY FULL;"),
        "{stdout}"
    );
    assert!(
        stdout.contains("CREATE PUBLICATION %I FOR TABLE %s"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("pub text := '{DEFAULT_PUBLICATION}';")),
        "{stdout}"
    );
    assert_eq!(publication_count().await, 0, "--dry-run changed the leader");

    for round in 0..2 {
        let (code, stdout, stderr) = pgsieve("setup", path, &[]);
        assert_eq!(
            code,
            Some(0),
            "round {round}: stdout:\n{stdout}\nstderr:\n{stderr}"
        );
    }
    assert_eq!(publication_count().await, 1);
    let mut published: Vec<String> = leader
        .query(
            "SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = $1",
            &[&DEFAULT_PUBLICATION],
        )
        .await
        .expect("pg_publication_tables")
        .iter()
        .map(|r| r.get(0))
        .collect();
    published.sort();
    let mut wanted: Vec<String> = CONJUR_TABLES
        .iter()
        .map(|t| format!("public.{t}"))
        .collect();
    wanted.sort();
    assert_eq!(published, wanted);
    let identity: String = leader
        .query_one(
            "SELECT relreplident::text FROM pg_class WHERE oid = 'public.policy_log'::regclass",
            &[],
        )
        .await
        .expect("pg_class")
        .get(0);
    assert_eq!(identity, "f");
}
