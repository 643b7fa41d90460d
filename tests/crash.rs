//! Crash safety and progress (ARCHITECTURE.md, "Invariants": no leak, nothing
//! lost, bounded memory, the slot keeps moving): pgsieve killed with
//! SIGKILL at seeded random points of a mixed Conjur workload (with its 100 k-row
//! streamed policy load, filtered or not), during a filtered initial copy and
//! during backfills, the leader and a follower restarted under it, idle periods
//! with filtered-out writes, and a 1 M-row transaction's peak memory. After each
//! run every follower must equal the leader (secrets filtered by the oracle for
//! replica-set followers), a background watch must never have seen the slot's
//! `confirmed_flush_lsn` ahead of a follower's durable origin progress, and a
//! leak watch must never have seen a replica-set follower hold a `secrets` row of
//! a variable never granted to its set.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pgsieve::conjur::CONJUR_TABLES;
use pgsieve::harness::cluster::{CONJUR_DB, Cluster};
use pgsieve::harness::compare::follower_diff;
use pgsieve::harness::conjur::ReplicaSet;
use pgsieve::harness::generate::PolicySpec;
use pgsieve::harness::invariants::{
    FlushReport, FlushWatch, LeakWatch, LeakWatched, current_wal_insert_lsn, never_granted_rows,
    origin_progress, slot_confirmed_flush, wait_slot_flush_at_least,
};
use pgsieve::harness::process::{FollowerEntry, PgsieveConfig, PgsieveProcess};
use pgsieve::harness::workload::{
    Change, apply_changes, create_replica_set, grant_layers_to_sets, rotate_secret,
};
use pgsieve::harness::{OracleRule, Topology, wait_initial_copy};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_postgres::Client;

use crate::replication::wait_caught_up;
use crate::support::mix::{Mix, streaming_topology};
use crate::support::{assert_no_leak, never_granted_variables, ok};

/// SIGKILLs per crash test.
const KILLS: usize = 20;
/// Poll interval of the flush watch.
const WATCH_EVERY: Duration = Duration::from_millis(20);
/// How long a follower may take to catch up after the last crash.
const CONVERGE: Duration = Duration::from_secs(120);
/// How long the slot may take to pass a burst of filtered-out writes once idle.
const IDLE_CATCH_UP: Duration = Duration::from_secs(10);

/// What one crash run did, for the report.
struct CrashRun {
    kills: usize,
    rounds: usize,
    workload: Duration,
    converge: Duration,
    watch: FlushReport,
    /// Restarts with upserts after a plain INSERT met a row a backfill had
    /// copied before a kill (the sink's bound on that lives in memory).
    upsert_resumes: usize,
}

/// Runs `mix` on the leader while SIGKILLing and restarting `pgsieve` at seeded
/// random points (≥ [`KILLS`] times), every 5th kill letting it catch up first so a
/// transaction longer than the kill interval still gets through. Then lets it
/// converge and stops the flush watch.
#[allow(clippy::too_many_arguments)]
async fn crash_run(
    topology: &Topology,
    leader: &Client,
    followers: &[Client],
    origin: &str,
    pgsieve: &mut PgsieveProcess,
    watch: FlushWatch,
    mut mix: Mix,
    seed: u64,
) -> CrashRun {
    let kills = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut writer = ok(topology.leader_client().await);
    let workload = tokio::spawn({
        let kills = kills.clone();
        async move {
            while mix.rounds() < 8 || kills.load(Ordering::Acquire) < KILLS {
                mix.round(&mut writer).await?;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok::<usize, String>(mix.rounds())
        }
    });
    let mut rng = StdRng::seed_from_u64(seed);
    while kills.load(Ordering::Acquire) < KILLS || !workload.is_finished() {
        let n = kills.load(Ordering::Acquire);
        if n > 0 && n % 5 == 0 {
            for f in followers {
                wait_caught_up(leader, f, origin, pgsieve, CONVERGE).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(30..900))).await;
        if let Some(code) = pgsieve.exited() {
            panic!(
                "pgsieve exited on its own ({code:?}) after {n} kills; log:\n{}",
                pgsieve.log()
            );
        }
        pgsieve.kill();
        ok(pgsieve.start_again());
        kills.fetch_add(1, Ordering::AcqRel);
    }
    let rounds = match workload.await {
        Ok(Ok(rounds)) => rounds,
        Ok(Err(e)) => panic!("workload failed: {e}"),
        Err(e) => panic!("workload task failed: {e}"),
    };
    let workload_time = started.elapsed();
    let t = Instant::now();
    for f in followers {
        wait_caught_up(leader, f, origin, pgsieve, CONVERGE).await;
    }
    let converge = t.elapsed();
    let watch = ok(watch.stop().await);
    CrashRun {
        kills: kills.load(Ordering::Acquire),
        rounds,
        workload: workload_time,
        converge,
        watch,
        upsert_resumes: pgsieve.log().matches("resuming with upserts").count(),
    }
}

fn assert_watch_clean(run: &CrashRun, pgsieve: &PgsieveProcess) {
    assert!(
        run.watch.violations.is_empty(),
        "slot flush ahead of a follower in {} of {} samples:\n{}\npgsieve log:\n{}",
        run.watch.violations.len(),
        run.watch.samples,
        run.watch.violations[..run.watch.violations.len().min(10)].join("\n"),
        pgsieve.log()
    );
    assert!(
        run.watch.samples >= 100,
        "the flush watch took only {} samples ({} unavailable)",
        run.watch.samples,
        run.watch.unavailable
    );
    let log = pgsieve.log();
    assert!(!log.contains("panicked"), "pgsieve panicked:\n{log}");
}

fn report(name: &str, run: &CrashRun) {
    println!(
        "{name}: {} kills over {} rounds in {:.1?}, converged {:.1?} after; \
         flush watch: {} samples, {} unavailable, max confirmed {:?}, 0 violations; \
         {} restarts with upserts after a duplicate key",
        run.kills,
        run.rounds,
        run.workload,
        run.converge,
        run.watch.samples,
        run.watch.unavailable,
        run.watch.max_flush.map(|l| l.to_string()),
        run.upsert_resumes
    );
}

/// A fresh spool directory for one test (so leftovers after SIGKILLs can be counted)
/// and the `[apply]` section pointing pgsieve at it.
fn spool_dir(slot: &str) -> (std::path::PathBuf, String) {
    let dir = std::env::temp_dir().join(format!("pgsieve-spool-{}-{slot}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("spool dir");
    let extra = format!("[apply]\nspool_dir = \"{}\"\n", dir.display());
    (dir, extra)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_follower_converges_after_sigkill_at_random_points() {
    let (topology, mut leader, followers) = streaming_topology(1).await;
    let spec = PolicySpec::new("acme", 10, 6, 2).with_seed(11);
    ok(spec.populate(&mut leader).await);
    let slot = "pgsieve_crash_full";
    let origin = format!("pgsieve_{slot}");
    let (spool, extra) = spool_dir(slot);
    let mut config = PgsieveConfig::new(
        &topology.leader,
        slot,
        vec![FollowerEntry::full("f1", &topology.followers[0])],
    );
    config.extra = extra;
    let mut pgsieve = ok(PgsieveProcess::start(&config));
    wait_caught_up(&leader, &followers[0], &origin, &pgsieve, CONVERGE).await;

    let watch = topology.flush_watch(slot, &origin, WATCH_EVERY);
    let big = PolicySpec::new("bulk", 250, 100, 0).with_seed(3);
    let mix = Mix::new(21, spec, Vec::new(), Some(big));
    let run = crash_run(
        &topology,
        &leader,
        &followers,
        &origin,
        &mut pgsieve,
        watch,
        mix,
        1,
    )
    .await;
    assert_watch_clean(&run, &pgsieve);
    let diff = ok(follower_diff(
        &leader,
        &followers[0],
        CONJUR_TABLES,
        "nobody:group:none",
        OracleRule::Execute,
        &["*"],
    )
    .await);
    assert!(
        diff.is_empty(),
        "follower differs after {} kills:\n{}\npgsieve log:\n{}",
        run.kills,
        diff.join("\n"),
        pgsieve.log()
    );
    report("full follower", &run);
    assert_eq!(pgsieve.terminate(Duration::from_secs(20)), Some(0));
    let leftover = std::fs::read_dir(&spool).map_or(0, |d| d.count());
    println!(
        "spool files left behind after {} SIGKILLs: {leftover}",
        run.kills
    );
    let _ = std::fs::remove_dir_all(&spool);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_set_followers_converge_after_sigkill_at_random_points() {
    let (topology, mut leader, followers) = streaming_topology(2).await;
    let east = ReplicaSet::new("east");
    let west = ReplicaSet::new("west");
    ok(create_replica_set(&mut leader, &east).await);
    ok(create_replica_set(&mut leader, &west).await);
    // App 10 is never granted: the mix writes its secrets but never grants,
    // permits or deletes it.
    let spec = PolicySpec::new("acme", 11, 6, 2).with_seed(12);
    let pop = ok(spec.populate(&mut leader).await);
    let never_granted = never_granted_variables(&leader, &spec, 10).await;
    let leak_watch = LeakWatch::spawn(
        topology
            .followers
            .iter()
            .map(|f| LeakWatched {
                url: f.url(CONJUR_DB),
                never_granted: never_granted.clone(),
            })
            .collect(),
        WATCH_EVERY,
    );
    ok(grant_layers_to_sets(&leader, &pop.layers[..2], &[east.clone(), west.clone()]).await);
    let slot = "pgsieve_crash_sets";
    let origin = format!("pgsieve_{slot}");
    let (spool, extra) = spool_dir(slot);
    let mut config = PgsieveConfig::new(
        &topology.leader,
        slot,
        vec![
            FollowerEntry::filtered("east", &topology.followers[0], &east.data_group()),
            FollowerEntry::filtered("west", &topology.followers[1], &west.data_group()),
        ],
    );
    config.extra = extra;
    let mut pgsieve = ok(PgsieveProcess::start(&config));
    for f in &followers {
        wait_caught_up(&leader, f, &origin, &pgsieve, CONVERGE).await;
    }
    let watch = topology.flush_watch(slot, &origin, WATCH_EVERY);
    // The 100 k-row policy load streams through the filter too (its resources,
    // permissions and memberships feed the model); the final comparison covers it.
    let big = PolicySpec::new("bulk", 250, 100, 0).with_seed(5);
    let mix = Mix::new(22, spec, vec![east.clone(), west.clone()], Some(big)).never_granting(10);
    let run = crash_run(
        &topology,
        &leader,
        &followers,
        &origin,
        &mut pgsieve,
        watch,
        mix,
        2,
    )
    .await;
    assert_watch_clean(&run, &pgsieve);
    for (f, set) in followers.iter().zip([&east, &west]) {
        let diff = ok(follower_diff(
            &leader,
            f,
            CONJUR_TABLES,
            &set.data_group(),
            OracleRule::Execute,
            &[],
        )
        .await);
        assert!(
            diff.is_empty(),
            "follower of {} differs after {} kills:\n{}\npgsieve log:\n{}",
            set.name,
            run.kills,
            diff.join("\n"),
            pgsieve.log()
        );
    }
    let leaks = ok(leak_watch.stop().await);
    assert_no_leak(&leaks, 100, &pgsieve.log());
    let on_leader: i64 = ok(never_granted_rows(&leader, &never_granted).await)
        .iter()
        .map(|l| l.rows)
        .sum();
    report("two replica sets (hub)", &run);
    println!(
        "two replica sets (hub): leak watch {} samples ({} unavailable) of {} never-granted \
         variables ({on_leader} secrets rows on the leader), 0 violations",
        leaks.samples,
        leaks.unavailable,
        never_granted.len()
    );
    assert_eq!(pgsieve.terminate(Duration::from_secs(20)), Some(0));
    let _ = std::fs::remove_dir_all(&spool);
}

/// SIGKILLs during the initial copy (before it commits): the first a random
/// moment after the start, the others at random rows of the `secrets` copy.
const COPY_KILLS: usize = 4;
/// Rows of `secrets` the leader sends in the test's initial copy (108 000), less
/// a margin: the range of the random kill points.
const COPY_ROWS: i64 = 100_000;
/// Grant cycles whose backfill is interrupted by a SIGKILL.
const BACKFILL_CYCLES: usize = 4;

/// Where the initial copy was when [`wait_secrets_copy`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CopyPoint {
    /// Killed this many ms after the start, wherever the copy was.
    After(u64),
    /// The leader had sent this many `secrets` rows (at least the threshold).
    Rows(i64),
    /// The `secrets` copy had run and finished; the copy's commit may be pending.
    SecretsDone,
    /// The follower's origin already had progress: the copy committed.
    Committed,
}

/// Polls the leader's `pg_stat_progress_copy` until pgsieve's `COPY secrets TO
/// STDOUT` has sent `threshold` rows (or has finished), or the follower's origin shows
/// that the copy committed.
async fn wait_secrets_copy(
    leader: &Client,
    follower: &Client,
    origin: &str,
    threshold: i64,
    pgsieve: &mut PgsieveProcess,
) -> CopyPoint {
    let deadline = Instant::now() + CONVERGE;
    let mut seen = false;
    let mut poll = 0u64;
    loop {
        poll += 1;
        let rows: Option<i64> = leader
            .query_opt(
                "SELECT tuples_processed FROM pg_stat_progress_copy \
                 WHERE relid = 'public.secrets'::regclass AND command = 'COPY TO'",
                &[],
            )
            .await
            .unwrap()
            .map(|r| r.get(0));
        match rows {
            Some(n) if n >= threshold => return CopyPoint::Rows(n),
            Some(_) => seen = true,
            None if seen => return CopyPoint::SecretsDone,
            None => {}
        }
        if poll % 10 == 0 {
            if ok(origin_progress(follower, origin).await).is_some_and(|p| !p.is_zero()) {
                return CopyPoint::Committed;
            }
            if let Some(code) = pgsieve.exited() {
                panic!(
                    "pgsieve exited ({code:?}) during its initial copy; log:\n{}",
                    pgsieve.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no initial copy of secrets seen; pgsieve log:\n{}",
                pgsieve.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Waits until no `COPY … TO STDOUT` runs on the leader any more: the backend of a
/// killed pgsieve's copy stops once it notices, and must not be taken for the next
/// run's copy.
async fn wait_no_copy(leader: &Client) {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let n: i64 = leader
            .query_one(
                "SELECT count(*) FROM pg_stat_progress_copy WHERE command = 'COPY TO'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if n == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "a killed copy keeps running on the leader"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Drops the replication origin on the follower (retrying while the killed
/// pgsieve's session still holds it), so the next start copies again.
async fn drop_origin(follower: &Client, origin: &str) {
    let deadline = Instant::now() + CONVERGE;
    loop {
        match follower
            .execute("SELECT pg_replication_origin_drop($1)", &[&origin])
            .await
        {
            Ok(_) => return,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("dropping origin {origin}: {e}"),
        }
    }
}

/// Waits (up to 10 s) until pgsieve's follower session is copying backfilled rows
/// (its `INSERT … ON CONFLICT DO NOTHING` into `secrets`) inside an open
/// transaction. Whether it saw that.
async fn wait_backfill_running(follower: &Client) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let n: i64 = follower
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid() \
                   AND state IN ('active', 'idle in transaction') \
                   AND query LIKE 'INSERT INTO \"public\".\"secrets\"%ON CONFLICT DO NOTHING'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if n > 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    false
}

/// Whether the follower holds the (non-ownership) membership `member` → `role`.
async fn has_membership(client: &Client, role: &str, member: &str) -> bool {
    client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM role_memberships \
             WHERE role_id = $1 AND member_id = $2 AND NOT ownership)",
            &[&role, &member],
        )
        .await
        .unwrap()
        .get(0)
}

/// Asserts the follower's `tables` equal the leader's, `secrets` filtered by the oracle.
async fn assert_matches_oracle(
    leader: &Client,
    follower: &Client,
    tables: &[&str],
    set: &ReplicaSet,
    pgsieve: &PgsieveProcess,
    step: &str,
) {
    let diff = ok(follower_diff(
        leader,
        follower,
        tables,
        &set.data_group(),
        OracleRule::Execute,
        &[],
    )
    .await);
    assert!(
        diff.is_empty(),
        "follower of {} differs {step}:\n{}\npgsieve log:\n{}",
        set.name,
        diff.join("\n"),
        pgsieve.log()
    );
}

/// SIGKILL while pgsieve's filtered initial copy of 108 k secrets is running (at a
/// random row of `secrets`, until it has been killed before committing
/// [`COPY_KILLS`] times), then while it backfills a grant that moves 12 000 secret
/// versions (and purges a revoked app's): after every restart the follower converges
/// to the oracle, and a leak watch over the whole run never sees a `secrets` row of
/// the never-granted app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_set_follower_converges_after_sigkill_during_initial_copy_and_backfills() {
    let started = Instant::now();
    let topology = ok(Topology::start(1));
    let (mut leader, followers) = ok(topology.prepare_conjur().await);
    let follower = &followers[0];
    let east = ReplicaSet::new("east");
    ok(create_replica_set(&mut leader, &east).await);
    // 9 apps × 200 variables × 60 versions: 108 000 secrets, 12 000 per app (they
    // move with the app's layer). App 8 is never granted.
    let spec = PolicySpec::new("acme", 9, 200, 60).with_seed(14);
    let pop = ok(spec.populate(&mut leader).await);
    let never_granted = never_granted_variables(&leader, &spec, 8).await;
    ok(apply_changes(
        &leader,
        None,
        &[Change::GrantRole {
            role: pop.layers[0].clone(),
            member: east.data_group(),
        }],
    )
    .await);
    let leak_watch = LeakWatch::spawn(
        vec![LeakWatched {
            url: topology.followers[0].url(CONJUR_DB),
            never_granted: never_granted.clone(),
        }],
        WATCH_EVERY,
    );
    let slot = "pgsieve_copy_backfill";
    let origin = format!("pgsieve_{slot}");
    let config = PgsieveConfig::new(
        &topology.leader,
        slot,
        vec![FollowerEntry::filtered(
            "east",
            &topology.followers[0],
            &east.data_group(),
        )],
    );
    let setup = started.elapsed();
    let mut pgsieve = ok(PgsieveProcess::start(&config));
    let mut rng = StdRng::seed_from_u64(4);

    // (a) Kills during the initial copy.
    let t = Instant::now();
    let (mut copy_kills, mut late) = (0, 0);
    let mut points = Vec::new();
    let mut run_log_start = 0;
    while copy_kills < COPY_KILLS {
        assert!(
            copy_kills + late < 3 * COPY_KILLS,
            "{late} kills came after the initial copy committed"
        );
        let point = if copy_kills == 0 {
            let ms = rng.gen_range(20..300);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            CopyPoint::After(ms)
        } else {
            // One band of the secrets copy per kill.
            let band = COPY_ROWS / (COPY_KILLS as i64 - 1);
            let low = band * (copy_kills as i64 - 1);
            let threshold = rng.gen_range(low + 1..low + band);
            wait_secrets_copy(&leader, follower, &origin, threshold, &mut pgsieve).await
        };
        pgsieve.kill();
        wait_no_copy(&leader).await;
        let log = pgsieve.log();
        let run_log = &log[run_log_start..];
        run_log_start = log.len();
        let progress = ok(origin_progress(follower, &origin).await);
        if progress.is_none_or(|p| p.is_zero()) {
            assert!(
                !run_log.contains("Initial copy committed."),
                "the log says the copy committed but the origin has no progress:\n{run_log}"
            );
            copy_kills += 1;
            let tables = run_log.matches("Copied table.").count();
            points.push(format!("{point:?} after {tables} tables"));
        } else {
            // Too late: make the next start copy again.
            late += 1;
            drop_origin(follower, &origin).await;
        }
        ok(pgsieve.start_again());
    }
    ok(wait_initial_copy(follower, &origin, CONVERGE).await);
    wait_caught_up(&leader, follower, &origin, &pgsieve, CONVERGE).await;
    assert_matches_oracle(
        &leader,
        follower,
        CONJUR_TABLES,
        &east,
        &pgsieve,
        "after kills during the initial copy",
    )
    .await;
    let copy_phase = t.elapsed();

    // (b) Kills during backfills: app i's layer granted (12 000 rows copied from the
    // leader) and app i-1's revoked (purged) in one transaction, SIGKILL a few ms
    // after the commit or once the backfill's inserts are seen on the follower.
    let t = Instant::now();
    let (mut interrupted, mut seen_running) = (0, 0);
    for i in 1..=BACKFILL_CYCLES {
        wait_caught_up(&leader, follower, &origin, &pgsieve, CONVERGE).await;
        let mut changes = vec![Change::GrantRole {
            role: pop.layers[i].clone(),
            member: east.data_group(),
        }];
        if i >= 2 {
            changes.push(Change::RevokeRole {
                role: pop.layers[i - 1].clone(),
                member: east.data_group(),
            });
        }
        {
            let tx = leader.transaction().await.unwrap();
            ok(apply_changes(&tx, None, &changes).await);
            tx.commit().await.unwrap();
        }
        if i % 2 == 1 {
            if wait_backfill_running(follower).await {
                seen_running += 1;
            }
            tokio::time::sleep(Duration::from_millis(rng.gen_range(0..5))).await;
        } else {
            tokio::time::sleep(Duration::from_millis(rng.gen_range(1..8))).await;
        }
        if let Some(code) = pgsieve.exited() {
            panic!(
                "pgsieve exited on its own ({code:?}); log:\n{}",
                pgsieve.log()
            );
        }
        pgsieve.kill();
        if !has_membership(follower, &pop.layers[i], &east.data_group()).await {
            interrupted += 1;
        }
        // While pgsieve is down: a new version of a revoked variable.
        if i >= 2 {
            ok(rotate_secret(&leader, &spec.variable(i - 1, 0), b"after the revoke", None).await);
        }
        ok(pgsieve.start_again());
        wait_caught_up(&leader, follower, &origin, &pgsieve, CONVERGE).await;
        assert_matches_oracle(
            &leader,
            follower,
            &["secrets", "role_memberships"],
            &east,
            &pgsieve,
            &format!("after a kill during backfill cycle {i}"),
        )
        .await;
    }
    let backfill_phase = t.elapsed();
    assert!(
        interrupted >= 1,
        "no kill landed before a grant's backfill committed ({seen_running} backfills seen running)"
    );
    assert_matches_oracle(
        &leader,
        follower,
        CONJUR_TABLES,
        &east,
        &pgsieve,
        "at the end",
    )
    .await;
    let leaks = ok(leak_watch.stop().await);
    assert_no_leak(&leaks, 100, &pgsieve.log());
    let log = pgsieve.log();
    assert!(!log.contains("panicked"), "pgsieve panicked:\n{log}");
    let held: i64 = follower
        .query_one("SELECT count(*) FROM secrets", &[])
        .await
        .unwrap()
        .get(0);
    println!(
        "copy/backfill kills: setup {setup:.1?}; {copy_kills} kills during the initial copy \
         at {points:?} ({late} too late) in {copy_phase:.1?}; {BACKFILL_CYCLES} backfill \
         cycles, {interrupted} killed before the grant committed on the follower ({seen_running} \
         seen copying) in {backfill_phase:.1?}; follower holds {held} secrets; leak watch \
         {} samples ({} unavailable) of {} never-granted variables, 0 violations",
        leaks.samples,
        leaks.unavailable,
        never_granted.len()
    );
    assert_eq!(pgsieve.terminate(Duration::from_secs(20)), Some(0));
}

/// Fails if pgsieve gave up after an outage of `server` instead of reconnecting.
fn assert_still_running(pgsieve: &mut PgsieveProcess, after: &str, server: &Cluster) {
    if let Some(code) = pgsieve.exited() {
        panic!(
            "pgsieve exited ({code:?}) after {after} instead of reconnecting; log:\n{}\n\
             --- {} server log (tail) ---\n{}",
            pgsieve.log(),
            server.name(),
            server.log_tail(15)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_follower_and_leader_restarts() {
    let (mut topology, mut leader, _followers) = streaming_topology(1).await;
    let spec = PolicySpec::new("acme", 10, 6, 2).with_seed(13);
    ok(spec.populate(&mut leader).await);
    let slot = "pgsieve_restarts";
    let origin = format!("pgsieve_{slot}");
    let mut pgsieve = ok(PgsieveProcess::start(&PgsieveConfig::new(
        &topology.leader,
        slot,
        vec![FollowerEntry::full("f1", &topology.followers[0])],
    )));
    let follower = ok(topology.followers[0].connect(CONJUR_DB).await);
    wait_caught_up(&leader, &follower, &origin, &pgsieve, CONVERGE).await;
    drop(follower);
    let watch = topology.flush_watch(slot, &origin, WATCH_EVERY);
    // A streamed policy load (≈ 10 k rows with its trigger rows), so the
    // follower goes down while pgsieve is applying it.
    let medium = PolicySpec::new("bulk", 20, 50, 0).with_seed(4);
    let mut mix = Mix::new(23, spec, Vec::new(), Some(medium));
    for _ in 0..3 {
        mix.round(&mut leader).await.unwrap();
    }
    topology.followers[0].kill();
    for _ in 0..2 {
        mix.round(&mut leader).await.unwrap();
    }
    ok(topology.followers[0].start_again());
    for _ in 0..3 {
        mix.round(&mut leader).await.unwrap();
    }
    assert_still_running(
        &mut pgsieve,
        "the follower's restart",
        &topology.followers[0],
    );
    // The leader restarts (fast shutdown) with pgsieve streaming from it.
    topology.leader.stop_fast();
    tokio::time::sleep(Duration::from_millis(500)).await;
    ok(topology.leader.start_again());
    let mut leader = ok(topology.leader_client().await);
    for _ in 0..3 {
        mix.round(&mut leader).await.unwrap();
    }
    assert_still_running(&mut pgsieve, "the leader's restart", &topology.leader);
    let follower = ok(topology.followers[0].connect(CONJUR_DB).await);
    wait_caught_up(&leader, &follower, &origin, &pgsieve, CONVERGE).await;
    let report = ok(watch.stop().await);
    assert!(
        report.violations.is_empty(),
        "slot flush ahead of the follower:\n{}\npgsieve log:\n{}",
        report.violations.join("\n"),
        pgsieve.log()
    );
    let diff = ok(follower_diff(
        &leader,
        &follower,
        CONJUR_TABLES,
        "nobody:group:none",
        OracleRule::Execute,
        &["*"],
    )
    .await);
    assert!(
        diff.is_empty(),
        "follower differs after the restarts:\n{}\npgsieve log:\n{}",
        diff.join("\n"),
        pgsieve.log()
    );
    println!(
        "restarts: {} rounds; flush watch {} samples, {} unavailable",
        mix.rounds(),
        report.samples,
        report.unavailable
    );
    assert_eq!(pgsieve.terminate(Duration::from_secs(20)), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_keeps_moving_when_idle_and_when_everything_is_filtered() {
    let topology = ok(Topology::start(1));
    let (mut leader, followers) = ok(topology.prepare_conjur().await);
    ok(PolicySpec::new("acme", 3, 3, 2).populate(&mut leader).await);
    let slot = "pgsieve_idle";
    let origin = format!("pgsieve_{slot}");
    let mut pgsieve = ok(PgsieveProcess::start(&PgsieveConfig::new(
        &topology.leader,
        slot,
        vec![FollowerEntry::full("f1", &topology.followers[0])],
    )));
    wait_caught_up(&leader, &followers[0], &origin, &pgsieve, CONVERGE).await;
    // Idle: keepalives only; the slot reaches the WAL position of the catch-up.
    let caught_up = ok(current_wal_insert_lsn(&leader).await);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let idle =
        ok(wait_slot_flush_at_least(&leader, slot, caught_up, Duration::from_secs(30)).await);
    // A burst of writes to a table outside the publication: nothing is forwarded.
    leader
        .batch_execute("CREATE TABLE scratch (id int PRIMARY KEY, payload text)")
        .await
        .unwrap();
    for i in 0..40 {
        leader
            .execute(
                "INSERT INTO scratch SELECT g, repeat('x', 200) FROM generate_series($1::int, $1::int + 249) g",
                &[&(i * 250)],
            )
            .await
            .unwrap();
    }
    let burst_end = ok(current_wal_insert_lsn(&leader).await);
    assert!(burst_end > idle, "the burst wrote no WAL");
    let before = ok(slot_confirmed_flush(&leader, slot).await);
    // Idle again: the slot must move past the whole burst.
    let t = Instant::now();
    // Well under the 15 s after which the leader's bgwriter writes a standby
    // snapshot record anyway (new WAL, a new keepalive): pgsieve must move the
    // slot on its own, from the keepalives of the idle stream.
    let reached = match wait_slot_flush_at_least(&leader, slot, burst_end, IDLE_CATCH_UP).await {
        Ok(lsn) => lsn,
        Err(e) => {
            let walsender: Vec<String> = leader
                .query(
                    "SELECT format('sent %s write %s flush %s', sent_lsn, write_lsn, flush_lsn) \
                     FROM pg_stat_replication",
                    &[],
                )
                .await
                .map(|rows| rows.iter().map(|r| r.get(0)).collect())
                .unwrap_or_default();
            panic!(
                "{e}; walsender: {walsender:?}; pgsieve log:\n{}",
                pgsieve.log()
            )
        }
    };
    let origin_at = ok(origin_progress(&followers[0], &origin).await);
    assert!(
        origin_at >= Some(reached),
        "the slot ({reached}) is ahead of the follower's origin ({origin_at:?})"
    );
    println!(
        "idle: slot at {idle} after catch-up; burst of {} bytes of WAL to {burst_end}; \
         slot {before:?} right after the burst, {reached} after {:.1?}",
        burst_end.bytes_since(idle),
        t.elapsed()
    );
    let diff = ok(follower_diff(
        &leader,
        &followers[0],
        CONJUR_TABLES,
        "nobody:group:none",
        OracleRule::Execute,
        &["*"],
    )
    .await);
    assert!(diff.is_empty(), "follower differs:\n{}", diff.join("\n"));
    assert_eq!(pgsieve.terminate(Duration::from_secs(20)), Some(0));
}

/// Peak memory of pgsieve applying one 1 M-row transaction ("bounded memory"). Run with
/// `cargo nextest run -p pgsieve-tests --run-ignored only --no-capture one_million_row_transaction`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "several minutes; run on demand (see the doc comment)"]
async fn one_million_row_transaction_peak_rss() {
    let (topology, mut leader, followers) = streaming_topology(1).await;
    let spec = PolicySpec::new("acme", 1, 1, 0);
    ok(spec.populate(&mut leader).await);
    let var = spec.variable(0, 0);
    let slot = "pgsieve_million";
    let origin = format!("pgsieve_{slot}");
    let mut pgsieve = ok(PgsieveProcess::start(&PgsieveConfig::new(
        &topology.leader,
        slot,
        vec![FollowerEntry::full("f1", &topology.followers[0])],
    )));
    wait_caught_up(&leader, &followers[0], &origin, &pgsieve, CONVERGE).await;
    let baseline = pgsieve.peak_rss_kib();
    let t = Instant::now();
    leader
        .execute(
            "INSERT INTO secrets (resource_id, value)
             SELECT $1, '\\x47'::bytea || decode(md5(g::text) || md5((g + 1)::text), 'hex')
             FROM generate_series(1, 1000000) g",
            &[&var],
        )
        .await
        .unwrap();
    let on_leader = t.elapsed();
    wait_caught_up(
        &leader,
        &followers[0],
        &origin,
        &pgsieve,
        Duration::from_secs(1200),
    )
    .await;
    let applied = t.elapsed();
    let peak = pgsieve.peak_rss_kib().expect("pgsieve running");
    let n: i64 = followers[0]
        .query_one(
            "SELECT count(*) FROM secrets WHERE resource_id = $1",
            &[&var],
        )
        .await
        .unwrap()
        .get(0);
    println!(
        "1M-row transaction: {on_leader:.1?} on the leader, applied after {applied:.1?}; \
         pgsieve peak RSS {peak} KiB ({:.1} MiB; {baseline:?} KiB before)",
        peak as f64 / 1024.0
    );
    assert_eq!(n, 1_000_000);
    assert_eq!(pgsieve.terminate(Duration::from_secs(20)), Some(0));
    assert!(peak <= 64 * 1024, "peak RSS {peak} KiB > 64 MiB");
}
