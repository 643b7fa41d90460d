//! `pgsieve demo` end to end: the demo's scenario (clusters, policy, two sidecars,
//! live grant and revoke, cleanup) succeeds and reports both followers and the
//! latency of the grant and the revoke. The demo checks every follower against the
//! oracle itself and fails otherwise, so success here means the followers matched.

use pgsieve::dev::demo::{DemoOptions, run_with_output};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_and_reports_both_followers_and_latencies() {
    let mut out = Vec::new();
    let result = run_with_output(&DemoOptions::default(), &mut out).await;
    let report = String::from_utf8_lossy(&out);
    if let Err(e) = result {
        panic!("demo failed: {e}\n--- report ---\n{report}");
    }
    println!("{report}");
    for needle in [
        "follower east:",
        "follower west:",
        "ms after the grant was sent",
        "east no longer holds it",
        "== cleanup ==",
    ] {
        assert!(
            report.contains(needle),
            "report lacks {needle:?}:\n{report}"
        );
    }
    let latency_lines = report
        .lines()
        .filter(|l| l.contains(" ms after the"))
        .count();
    assert_eq!(
        latency_lines, 2,
        "expected a grant and a revoke latency:\n{report}"
    );
    // The report never carries secret values: the sample's fake ciphertexts start
    // with 'G' and are printed nowhere as bytea hex.
    assert!(
        !report.contains("\\x47"),
        "report shows a secret value:\n{report}"
    );
}
