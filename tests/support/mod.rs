//! Helpers shared by the integration test modules (the harness itself lives in
//! `pgsieve::harness`; only test-side conveniences go here).

use pgsieve::harness::HarnessError;

/// Unwraps a harness result, printing the error's full text (server log tails and
/// server messages included) instead of a `Debug` dump.
#[track_caller]
pub fn ok<T>(r: Result<T, HarnessError>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub fn accepts_connections(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        std::time::Duration::from_millis(500),
    )
    .is_ok()
}

pub mod mix;
pub mod probe;
pub mod sampler;
pub mod scene;
pub mod tamper;

use pgsieve::harness::generate::PolicySpec;
use pgsieve::harness::invariants::LeakReport;
use tokio_postgres::Client;

/// The variables of `app` (of `spec`, loaded on `leader`) that are in no replica set
/// as long as the app's layer is never granted to one: owned by the app's policy and
/// with no privilege held by any role but the app's own layer (the generator adds a
/// few cross-app `read` grants, which count under rule `any`). Panics if none is left.
pub async fn never_granted_variables(
    leader: &Client,
    spec: &PolicySpec,
    app: usize,
) -> Vec<String> {
    let ids: Vec<String> = (0..spec.variables_per_app)
        .map(|v| spec.variable(app, v))
        .collect();
    let rows = leader
        .query(
            "SELECT r.resource_id FROM resources r
             WHERE r.resource_id = ANY($1::text[]) AND r.owner_id = $2
               AND NOT EXISTS (SELECT 1 FROM permissions p
                               WHERE p.resource_id = r.resource_id AND p.role_id <> $3)
             ORDER BY 1",
            &[&ids, &spec.app_policy(app), &spec.layer(app)],
        )
        .await
        .expect("listing never-granted variables");
    let vars: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert!(
        !vars.is_empty(),
        "every variable of app {app} is readable by another app"
    );
    vars
}

/// Asserts a leak watch saw no `secrets` row of a never-granted variable and took at
/// least `min_samples` samples.
#[track_caller]
pub fn assert_no_leak(report: &LeakReport, min_samples: u64, pgsieve_log: &str) {
    assert!(
        report.violations.is_empty(),
        "never-granted variables reached a follower in {} sample(s) of {}:\n{}\npgsieve log:\n{}",
        report.violations.len(),
        report.samples,
        report.violations[..report.violations.len().min(10)].join("\n"),
        pgsieve_log
    );
    assert!(
        report.samples >= min_samples,
        "the leak watch took only {} samples ({} unavailable), expected at least {min_samples}",
        report.samples,
        report.unavailable
    );
}

/// Where a follower's transaction ids stand now: rows written after this
/// call have an `xmin` at or above it (see [`rows_written_since`]).
pub async fn xid_horizon(follower: &Client) -> i64 {
    follower
        .query_one(
            "SELECT (pg_snapshot_xmax(pg_current_snapshot())::text::int8 % 4294967296)",
            &[],
        )
        .await
        .expect("reading the follower's xid horizon")
        .get(0)
}

/// Live rows of Conjur's tables (`public`, all but `except`) inserted or
/// updated on the follower since `horizon` ([`xid_horizon`]). Exact at once,
/// unlike `pg_stat_user_tables`, whose counters a backend may publish seconds
/// later.
pub async fn rows_written_since(follower: &Client, horizon: i64, except: Option<&str>) -> i64 {
    let mut total = 0;
    for table in pgsieve::conjur::CONJUR_TABLES {
        if Some(*table) == except {
            continue;
        }
        let n: i64 = follower
            .query_one(
                &format!("SELECT count(*) FROM public.{table} WHERE xmin::text::int8 >= $1"),
                &[&horizon],
            )
            .await
            .expect("counting rows by xmin")
            .get(0);
        total += n;
    }
    total
}
