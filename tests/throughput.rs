//! On-demand throughput probes of `pgsieve run` (backlog catch-up of W1 and
//! W2 shapes). Ignored by default: speed lives in `pgsieve bench`; these are
//! the quick loop for tuning the sink. Run with a release binary:
//! `cargo build --release -p pgsieve && PGSIEVE_BIN=target/release/pgsieve \
//!  cargo test -p pgsieve-tests --test integration throughput -- --ignored --nocapture`

use std::time::{Duration, Instant};

use pgsieve::harness::Topology;
use pgsieve::harness::process::{FollowerEntry, PgsieveConfig, PgsieveProcess};

use crate::replication::wait_caught_up;
use crate::support::ok;

async fn backlog(label: &str, rows: i64, workload: &str) {
    let topology = ok(Topology::start(1));
    let (leader, followers) = ok(topology.prepare_conjur().await);
    leader
        .batch_execute(
            "INSERT INTO roles VALUES ('acct:user:admin');
             INSERT INTO resources (resource_id, owner_id) VALUES ('acct:user:admin', 'acct:user:admin');
             INSERT INTO resources (resource_id, owner_id)
               SELECT 'acct:variable:v' || i, 'acct:user:admin' FROM generate_series(1, 1000) i;",
        )
        .await
        .unwrap();
    let config = PgsieveConfig::new(
        &topology.leader,
        "pgsieve_probe",
        vec![FollowerEntry::full("f1", &topology.followers[0])],
    );
    let mut pgsieve = ok(PgsieveProcess::start(&config));
    wait_caught_up(
        &leader,
        &followers[0],
        "pgsieve_pgsieve_probe",
        &pgsieve,
        Duration::from_secs(60),
    )
    .await;
    pgsieve.terminate(Duration::from_secs(10));
    let written = Instant::now();
    leader.batch_execute(workload).await.unwrap();
    let write_time = written.elapsed();
    let start = Instant::now();
    ok(pgsieve.start_again());
    wait_caught_up(
        &leader,
        &followers[0],
        "pgsieve_pgsieve_probe",
        &pgsieve,
        Duration::from_secs(600),
    )
    .await;
    let took = start.elapsed();
    let count: i64 = followers[0]
        .query_one("SELECT count(*) FROM secrets", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, rows);
    println!(
        "{label}: {rows} rows written in {write_time:?}, caught up in {took:?} = {:.0} rows/s; peak RSS {:?} KiB",
        rows as f64 / took.as_secs_f64(),
        pgsieve_peak_rss(&pgsieve)
    );
}

fn pgsieve_peak_rss(_p: &PgsieveProcess) -> Option<u64> {
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "throughput probe; run on demand"]
async fn throughput_w1_single_row_transactions() {
    let n = 200_000;
    backlog(
        "W1",
        n,
        &format!(
            "DO $$ BEGIN FOR i IN 1..{n} LOOP
               INSERT INTO secrets VALUES ('acct:variable:v' || (i % 1000 + 1), i, '\\x0102030405060708');
               COMMIT; END LOOP; END $$"
        ),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "throughput probe; run on demand"]
async fn throughput_w2_one_big_transaction() {
    let n = 1_000_000;
    backlog(
        "W2",
        n,
        &format!(
            "INSERT INTO secrets SELECT 'acct:variable:v' || (i % 1000 + 1), i, '\\x0102030405060708'
             FROM generate_series(1, {n}) i"
        ),
    )
    .await;
}
