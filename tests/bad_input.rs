//! Bad input is an error, not a panic (ARCHITECTURE.md, "Invariants"): each
//! misconfiguration, and each frame no real leader sends (a tuple of the
//! wrong width, an unknown relation) or origin no real follower answers,
//! makes `pgsieve run` exit non-zero with one `pgsieve: error:` line naming
//! the cause, nothing in its output says "panicked", and the slot is not
//! confirmed past the bad transaction.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pgsieve::harness::cluster::{Cluster, ClusterSpec, REPLICATOR_PASSWORD, REPLICATOR_ROLE};
use pgsieve::harness::generate::PolicySpec;
use pgsieve::harness::process::{FollowerEntry, PgsieveConfig, PgsieveProcess};
use pgsieve::harness::{Topology, conjur, wait_caught_up, wait_initial_copy};
use pgsieve_protocol::pgoutput::{Column, Insert, LogicalMessage, TupleData};

use crate::support::ok;
use crate::support::tamper::{Mitm, Tamper, with_port};

/// How long a misconfigured pgsieve may take to give up.
const GIVE_UP: Duration = Duration::from_secs(60);

/// Starts pgsieve with `config`, waits for it to exit and checks the contract:
/// non-zero exit, exactly one `pgsieve: error:` line, no panic, and the error
/// line contains every one of `causes` (case-insensitive). Returns the error line.
fn fails_cleanly(config: &PgsieveConfig, causes: &[&str]) -> String {
    let mut pgsieve = ok(PgsieveProcess::start(config));
    exits_cleanly(&mut pgsieve, causes)
}

/// [`fails_cleanly`] for a pgsieve already started.
fn exits_cleanly(pgsieve: &mut PgsieveProcess, causes: &[&str]) -> String {
    let code = pgsieve.wait_exited(GIVE_UP);
    let log = pgsieve.log();
    let code =
        code.unwrap_or_else(|| panic!("pgsieve still running after {GIVE_UP:?}; log:\n{log}"));
    assert!(
        code.is_some_and(|c| c != 0),
        "pgsieve exited with {code:?}; log:\n{log}"
    );
    assert!(!log.contains("panicked"), "pgsieve panicked:\n{log}");
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("pgsieve: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "want one error line; log:\n{log}");
    let line = errors[0];
    let lower = line.to_lowercase();
    for cause in causes {
        assert!(
            lower.contains(&cause.to_lowercase()),
            "the error line does not name {cause:?}: {line}\nlog:\n{log}"
        );
    }
    assert!(
        !line.contains(REPLICATOR_PASSWORD),
        "the error line shows a password: {line}"
    );
    line.to_owned()
}

/// A topology with the Conjur schema and a small policy on the leader.
async fn conjur_topology() -> (
    Topology,
    tokio_postgres::Client,
    Vec<tokio_postgres::Client>,
) {
    let topology = ok(Topology::start(1));
    let (mut leader, followers) = ok(topology.prepare_conjur().await);
    ok(PolicySpec::new("acme", 2, 2, 1).populate(&mut leader).await);
    (topology, leader, followers)
}

fn full_config(topology: &Topology, slot: &str) -> PgsieveConfig {
    PgsieveConfig::new(
        &topology.leader,
        slot,
        vec![FollowerEntry::full("f1", &topology.followers[0])],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_leader_password() {
    let (topology, _leader, _followers) = conjur_topology().await;
    let mut config = full_config(&topology, "pgsieve_badpw");
    config.leader_url = config
        .leader_url
        .replace(REPLICATOR_PASSWORD, "not-the-password");
    let line = fails_cleanly(&config, &["password authentication failed", "replicator"]);
    println!("{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_without_logical_wal_level() {
    let clusters = ok(Cluster::start_all(vec![
        ClusterSpec::leader("leader").with_conf("wal_level = replica"),
        ClusterSpec::follower("f1"),
    ]));
    let mut clusters = clusters.into_iter();
    let topology = Topology {
        leader: clusters.next().expect("leader"),
        followers: clusters.collect(),
    };
    let (_leader, _followers) = ok(topology.prepare_conjur().await);
    let line = fails_cleanly(&full_config(&topology, "pgsieve_replica"), &["wal_level"]);
    println!("{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_table_missing_a_column() {
    let (topology, _leader, followers) = conjur_topology().await;
    followers[0]
        .batch_execute("ALTER TABLE annotations DROP COLUMN policy_id")
        .await
        .unwrap();
    let line = fails_cleanly(
        &full_config(&topology, "pgsieve_nocol"),
        &["annotations", "policy_id"],
    );
    println!("{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_column_of_another_type() {
    let (topology, _leader, followers) = conjur_topology().await;
    followers[0]
        .batch_execute("ALTER TABLE annotations ALTER COLUMN value TYPE integer USING 0")
        .await
        .unwrap();
    let line = fails_cleanly(
        &full_config(&topology, "pgsieve_type"),
        &["annotations", "value"],
    );
    println!("{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_leader() {
    let follower = ok(Cluster::start(ClusterSpec::follower("f1")));
    ok(conjur::prepare_conjur(&follower).await);
    // A port nothing listens on: bound, read, closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let config = PgsieveConfig {
        leader_url: format!(
            "postgresql://replicator:{REPLICATOR_PASSWORD}@127.0.0.1:{port}/conjur"
        ),
        slot: "pgsieve_unreachable".into(),
        publication: "pgsieve".into(),
        followers: vec![FollowerEntry::full("f1", &follower)],
        extra: String::new(),
    };
    let line = fails_cleanly(&config, &["refused", &port.to_string()]);
    println!("{line}");
}

/// The annotation the tampered-stream tests insert once streaming has begun.
const BAD_ROW: &str = "INSERT INTO annotations (resource_id, name, value) \
     SELECT resource_id, 'bad-input', 'x' FROM resources ORDER BY 1 LIMIT 1";

async fn bad_rows(follower: &tokio_postgres::Client) -> i64 {
    follower
        .query_one(
            "SELECT count(*) FROM annotations WHERE name = 'bad-input'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

async fn slot_flush(leader: &tokio_postgres::Client, slot: &str) -> Option<String> {
    leader
        .query_opt(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await
        .unwrap()
        .and_then(|row| row.get(0))
}

/// pgsieve reads the leader through a man in the middle that replaces the
/// first streamed insert into `annotations` by `rewrite(insert)`; once the
/// initial copy is done the test inserts one annotation. pgsieve must exit
/// with one error line naming `causes` and the change's LSN, without
/// confirming the slot past that transaction or applying the row; a pgsieve
/// reading the leader directly afterwards applies it (nothing lost).
/// Returns the error line.
async fn tampered_insert(slot: &str, rewrite: fn(&Insert) -> Insert, causes: &[&str]) -> String {
    let (topology, leader, followers) = conjur_topology().await;
    let oid: u32 = leader
        .query_one("SELECT 'public.annotations'::regclass::oid", &[])
        .await
        .unwrap()
        .get(0);
    let done = Arc::new(AtomicBool::new(false));
    let tamper = Tamper::Pgoutput(Box::new(move |message| match message {
        LogicalMessage::Insert(insert)
            if insert.rel_id == oid && !done.swap(true, Ordering::SeqCst) =>
        {
            Some(LogicalMessage::Insert(rewrite(insert)))
        }
        _ => None,
    }));
    let mitm = Mitm::start(topology.leader.port(), tamper).await;
    let direct = full_config(&topology, slot);
    let mut config = direct.clone();
    config.leader_url = with_port(&config.leader_url, mitm.port());
    let origin = format!("pgsieve_{slot}");

    let mut pgsieve = ok(PgsieveProcess::start(&config));
    ok(wait_initial_copy(&followers[0], &origin, GIVE_UP).await);
    leader.batch_execute(BAD_ROW).await.unwrap();
    let line = exits_cleanly(&mut pgsieve, causes);

    let tampered = mitm.tampered();
    assert_eq!(tampered.len(), 1, "one insert replaced: {tampered:?}");
    let at = tampered[0];
    assert!(
        line.contains(&at.wal_start.to_string()),
        "the error line does not name the change's LSN {}: {line}",
        at.wal_start
    );
    let flushed = slot_flush(&leader, slot).await.expect("the slot exists");
    let past: bool = leader
        .query_one(
            "SELECT $1::text::pg_lsn > $2::text::pg_lsn",
            &[&flushed, &at.commit_lsn.to_string()],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        !past,
        "slot confirmed at {flushed}, past the bad transaction committed at {}",
        at.commit_lsn
    );
    assert_eq!(bad_rows(&followers[0]).await, 0, "the bad row was applied");

    let mut again = ok(PgsieveProcess::start(&direct));
    ok(wait_caught_up(&leader, &followers[0], &origin, GIVE_UP).await);
    assert_eq!(
        bad_rows(&followers[0]).await,
        1,
        "the row is applied once the stream is read directly; log:\n{}",
        again.log()
    );
    assert_eq!(again.terminate(GIVE_UP), Some(0), "log:\n{}", again.log());
    line
}

/// `insert` with its new tuple replaced by `columns`.
fn with_columns<'a>(insert: &Insert, columns: impl IntoIterator<Item = Column<'a>>) -> Insert {
    Insert {
        new: TupleData::from_columns(columns),
        ..insert.clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn narrower_insert_tuple() {
    let line = tampered_insert(
        "pgsieve_narrow",
        |i| with_columns(i, i.new.columns().take(3)),
        &[
            "public.annotations",
            "new tuple has 3 columns",
            "announced 4",
        ],
    )
    .await;
    println!("{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wider_insert_tuple() {
    let line = tampered_insert(
        "pgsieve_wider",
        |i| with_columns(i, i.new.columns().chain([Column::Text(b"extra")])),
        &[
            "public.annotations",
            "new tuple has 5 columns",
            "announced 4",
        ],
    )
    .await;
    println!("{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_tuple_over_64_columns() {
    let line = tampered_insert(
        "pgsieve_over64",
        |i| {
            let padding = std::iter::repeat_n(Column::Text(b"x"), 66);
            with_columns(i, i.new.columns().chain(padding))
        },
        &[
            "public.annotations",
            "new tuple has 70 columns",
            "announced 4",
        ],
    )
    .await;
    println!("{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_into_unknown_relation() {
    let line = tampered_insert(
        "pgsieve_unknown_rel",
        |i| Insert {
            rel_id: 4_000_000_000,
            ..i.clone()
        },
        &["relation OID 4000000000", "never described"],
    )
    .await;
    println!("{line}");
}

/// A follower whose replication origin answers something that is not an
/// LSN (here: a man in the middle rewriting the answer; PostgreSQL itself
/// always answers `X/X` or NULL). Before, it read as `0/0`, which made a
/// resuming follower look fresh or behind a gap: re-copied or resynced.
/// Now pgsieve stops with one line and leaves slot, origin and data alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_origin_position() {
    let (topology, leader, followers) = conjur_topology().await;
    let slot = "pgsieve_bad_origin";
    let origin = format!("pgsieve_{slot}");
    let direct = full_config(&topology, slot);
    let mut first = ok(PgsieveProcess::start(&direct));
    ok(wait_initial_copy(&followers[0], &origin, GIVE_UP).await);
    assert_eq!(first.terminate(GIVE_UP), Some(0), "log:\n{}", first.log());
    let origin_progress = "SELECT pg_replication_origin_progress($1, true)::text";
    let origin_before: Option<String> = followers[0]
        .query_one(origin_progress, &[&origin])
        .await
        .unwrap()
        .get(0);
    let slot_before = slot_flush(&leader, slot).await;
    assert!(slot_before.is_some() && origin_before.is_some());
    leader.batch_execute(BAD_ROW).await.unwrap();

    let mitm = Mitm::start(
        topology.followers[0].port(),
        Tamper::Answer {
            query: "pg_replication_origin_progress",
            value: "not-an-lsn",
        },
    )
    .await;
    let mut config = direct.clone();
    config.followers[0].url = with_port(&config.followers[0].url, mitm.port());
    let line = fails_cleanly(
        &config,
        &["f1", "unreadable replication origin position", "not-an-lsn"],
    );
    println!("{line}");
    assert!(mitm.answers() >= 1, "the origin answer was not replaced");
    assert_eq!(slot_flush(&leader, slot).await, slot_before, "slot moved");
    let origin_after: Option<String> = followers[0]
        .query_one(origin_progress, &[&origin])
        .await
        .unwrap()
        .get(0);
    assert_eq!(origin_after, origin_before, "origin moved");
    assert_eq!(bad_rows(&followers[0]).await, 0);
}

/// A valid table of 70 columns (more than a 64-bit mask holds) applies:
/// inserts, an update leaving the 70th column as unchanged TOAST, an update
/// of that column, a delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_over_64_columns_applies() {
    let (topology, leader, followers) = conjur_topology().await;
    let columns: Vec<String> = (1..70).map(|i| format!("c{i} text")).collect();
    let ddl = format!(
        "CREATE TABLE wide (id int PRIMARY KEY, {}); \
         ALTER TABLE wide ALTER COLUMN c69 SET STORAGE EXTERNAL;",
        columns.join(", ")
    );
    leader
        .batch_execute(&format!(
            "{ddl} GRANT SELECT ON wide TO {REPLICATOR_ROLE}; \
             ALTER PUBLICATION pgsieve ADD TABLE wide; \
             INSERT INTO wide (id, c1, c69) VALUES (1, 'copied', repeat('t', 5000));"
        ))
        .await
        .unwrap();
    followers[0].batch_execute(&ddl).await.unwrap();
    let slot = "pgsieve_wide";
    let origin = format!("pgsieve_{slot}");
    let mut pgsieve = ok(PgsieveProcess::start(&full_config(&topology, slot)));
    ok(wait_initial_copy(&followers[0], &origin, GIVE_UP).await);
    let all = (1..70)
        .map(|i| format!("'v{i}-' || g"))
        .collect::<Vec<_>>()
        .join(", ");
    leader
        .batch_execute(&format!(
            "INSERT INTO wide SELECT g, {all} FROM generate_series(2, 40) g; \
             UPDATE wide SET c69 = repeat('u', 5000) WHERE id = 2; \
             UPDATE wide SET c2 = 'changed', c66 = 'changed' WHERE id IN (1, 2); \
             UPDATE wide SET c69 = 'short' WHERE id = 3; \
             DELETE FROM wide WHERE id = 4;"
        ))
        .await
        .unwrap();
    ok(wait_caught_up(&leader, &followers[0], &origin, GIVE_UP).await);
    let digest =
        "SELECT count(*)::text || ' ' || md5(string_agg(w::text, '|' ORDER BY id)) FROM wide w";
    let want: String = leader.query_one(digest, &[]).await.unwrap().get(0);
    let got: String = followers[0].query_one(digest, &[]).await.unwrap().get(0);
    assert_eq!(got, want, "log:\n{}", pgsieve.log());
    assert!(want.starts_with("39 "), "{want}");
    assert_eq!(
        pgsieve.terminate(GIVE_UP),
        Some(0),
        "log:\n{}",
        pgsieve.log()
    );
    assert!(!pgsieve.log().contains("panicked"));
}
