//! Issue 18, the operator kit: lag in seconds from heartbeats and stall
//! detection seen from outside (the real binary, a follower held back by a
//! lock while the leader is idle but for heartbeats), `pgsieve status` per
//! follower, the Grafana dashboard against a live `/metrics`, the alert rules
//! under `promtool test rules`, and the deployment files under the tools that
//! check them (hadolint, kubernetes-validate, check-jsonschema's compose
//! schema) and a grep for settings that trade durability for speed.
//!
//! The external tools are installed by `.ci/run`. Locally a missing tool
//! skips its test with a message; under CI (`CI` set) it fails.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use pgsieve::harness::conjur::ReplicaSet;
use pgsieve::harness::generate::PolicySpec;
use pgsieve::harness::process::{PgsieveProcess, run_pgsieve};
use pgsieve::harness::workload::{Change, apply_changes, create_replica_set, rotate_secret};
use pgsieve::harness::{Topology, wait_initial_copy};

use crate::replication::wait_caught_up;
use crate::support::ok;
use crate::support::probe::{
    PROBE, count, free_port, get, lock_secrets, poll, probed_config, sample,
};

/// A file of the docker kit.
fn kit(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docker")
        .join(path)
}

/// `pgsieve status --format json` of a running process's config.
fn status_json(pgsieve: &PgsieveProcess) -> serde_json::Value {
    let config = pgsieve.config_path().display().to_string();
    let (code, stdout, stderr) = ok(run_pgsieve(
        &["status", "-c", &config, "--format", "json"],
        Duration::from_secs(30),
    ));
    assert_eq!(code, Some(0), "status failed:\n{stdout}\n{stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("status JSON: {e}\n{stdout}"))
}

fn lag_of(metrics: &str) -> f64 {
    sample(
        metrics,
        "pgsieve_follower_lag_seconds",
        &[("follower", "east")],
    )
    .unwrap_or(f64::NAN)
}

/// The done-when test of issue 18.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_follower_shows_growing_lag_and_a_stall_then_recovers() {
    let topology = ok(Topology::start(1));
    let (mut leader, followers) = ok(topology.prepare_conjur().await);
    let east = ReplicaSet::new("east");
    ok(create_replica_set(&mut leader, &east).await);
    let spec = PolicySpec::new("acme", 3, 3, 1).with_seed(18);
    let pop = ok(spec.populate(&mut leader).await);
    let group = east.data_group();
    let grant = |app: usize| Change::GrantRole {
        role: pop.layers[app].clone(),
        member: group.clone(),
    };
    ok(apply_changes(&leader, None, &[grant(0)]).await);

    let port = free_port();
    let slot = "pgsieve_ops";
    let origin = format!("pgsieve_{slot}");
    let config = probed_config(
        &topology,
        slot,
        ("east", &group),
        port,
        "stall_after_ms = 2000\n",
        "[heartbeat]\ninterval_ms = 250\n",
    );
    let pgsieve = ok(PgsieveProcess::start(&config));
    ok(wait_initial_copy(&followers[0], &origin, PROBE).await);
    poll(port, "/readyz", "ready once streaming", &pgsieve, |r| {
        r.status == 200
    })
    .await;

    // A grant (a backfill: status shows it as the last resync), then the
    // leader stays idle: heartbeats alone keep the lag under the stall
    // threshold and the follower unstalled.
    ok(apply_changes(&leader, None, &[grant(1)]).await);
    wait_caught_up(&leader, &followers[0], &origin, &pgsieve, PROBE).await;
    let idle = poll(
        port,
        "/metrics",
        "heartbeats applied on an idle leader",
        &pgsieve,
        |r| count(&r.body, "pgsieve_heartbeats_total", &[]) >= 4 && lag_of(&r.body) < 2.0,
    )
    .await;
    assert_eq!(
        sample(
            &idle.body,
            "pgsieve_follower_stalled",
            &[("follower", "east")]
        ),
        Some(0.0),
        "{}",
        idle.body
    );
    let status = status_json(&pgsieve);
    let f = &status["followers"][0];
    assert_eq!(f["attached"], true, "{status:#}");
    assert_eq!(f["stalled"], false, "{status:#}");
    assert!(f["lag_seconds"].as_f64().is_some(), "{status:#}");
    assert!(
        f["last_resync"]["what"]
            .as_str()
            .is_some_and(|w| w.starts_with("backfill: 3 variables")),
        "{status:#}"
    );
    assert!(f["last_apply_error"].is_null(), "{status:#}");
    assert_eq!(status["process"]["state"], "streaming", "{status:#}");

    // The follower's secrets are locked and one leader transaction writes
    // a secret: its apply blocks. The leader then writes nothing but
    // heartbeats.
    let blocker = lock_secrets(&topology.followers[0]).await;
    ok(rotate_secret(&leader, &spec.variable(0, 0), b"behind a lock", None).await);
    let stalled = poll(port, "/metrics", "the stall reported", &pgsieve, |r| {
        sample(&r.body, "pgsieve_follower_stalled", &[("follower", "east")]) == Some(1.0)
    })
    .await;
    let beats_at_stall = count(&stalled.body, "pgsieve_heartbeats_total", &[]);
    let lag_at_stall = lag_of(&stalled.body);
    assert!(lag_at_stall >= 2.0, "lag {lag_at_stall} while stalled");
    // The lag keeps growing while heartbeats keep moving the leader.
    let grown = poll(port, "/metrics", "the lag growing", &pgsieve, |r| {
        lag_of(&r.body) >= lag_at_stall + 1.5
            && count(&r.body, "pgsieve_heartbeats_total", &[]) > beats_at_stall + 2
    })
    .await;
    let lag_before_release = lag_of(&grown.body);
    let ready = get(port, "/readyz").await.expect("readyz");
    assert_eq!(ready.status, 503, "{ready:?}");
    assert!(
        ready
            .body
            .starts_with("follower east is stalled: applied position "),
        "{ready:?}"
    );
    let status = status_json(&pgsieve);
    let f = &status["followers"][0];
    assert_eq!(f["stalled"], true, "{status:#}");
    assert!(
        f["lag_seconds"].as_f64().is_some_and(|s| s >= lag_at_stall),
        "{status:#}"
    );
    let config_arg = pgsieve.config_path().display().to_string();
    let (_, text, _) = ok(run_pgsieve(
        &["status", "-c", &config_arg],
        Duration::from_secs(30),
    ));
    assert!(text.contains("  attached, STALLED, lag "), "{text}");
    assert!(
        pgsieve.log().contains("Follower stalled"),
        "no stall warning in the log:\n{}",
        pgsieve.log()
    );

    // Released: the blocked transaction and the heartbeats behind it apply;
    // the stall clears and the lag falls back.
    blocker
        .batch_execute("COMMIT")
        .await
        .expect("releasing the lock");
    let recovered = poll(port, "/metrics", "recovery after the lock", &pgsieve, |r| {
        sample(&r.body, "pgsieve_follower_stalled", &[("follower", "east")]) == Some(0.0)
            && lag_of(&r.body) < 2.0
    })
    .await;
    assert!(lag_of(&recovered.body) < lag_before_release);
    poll(port, "/readyz", "ready again", &pgsieve, |r| {
        r.status == 200
    })
    .await;
    wait_caught_up(&leader, &followers[0], &origin, &pgsieve, PROBE).await;
    let value: Vec<u8> = followers[0]
        .query_one(
            "SELECT value FROM secrets WHERE resource_id = $1 ORDER BY version DESC LIMIT 1",
            &[&spec.variable(0, 0)],
        )
        .await
        .expect("the rotated secret")
        .get(0);
    assert_eq!(value, b"behind a lock");

    // The dashboard queries only metrics this live process exports.
    dashboard_names_are_exported(&recovered.body);
    println!(
        "ops kit: lag {lag_at_stall:.1} s at the stall, {lag_before_release:.1} s before the release, {:.1} s after",
        lag_of(&recovered.body)
    );
}

/// Every `pgsieve_*` name in the dashboard's queries is a series of `scrape`.
fn dashboard_names_are_exported(scrape: &str) {
    let exported: BTreeSet<&str> = scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .filter(|n| !n.is_empty())
        .collect();
    let text = std::fs::read_to_string(kit("grafana/pgsieve.json")).expect("dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    let mut queries = Vec::new();
    collect_queries(&dashboard, &mut queries);
    assert!(queries.len() >= 15, "few queries: {queries:?}");
    let mut missing = Vec::new();
    for query in &queries {
        let names = metric_names(query);
        assert!(
            !names.is_empty(),
            "a query names no pgsieve metric: {query}"
        );
        missing.extend(
            names
                .into_iter()
                .filter(|n| !exported.contains(n.as_str()))
                .map(|n| format!("{n} (in {query})")),
        );
    }
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics pgsieve does not export:\n{}\nexported: {exported:?}",
        missing.join("\n")
    );
}

/// Every PromQL string of a dashboard: panel targets' `expr` and template
/// variables' `query`/`definition`.
fn collect_queries(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr" | "definition", serde_json::Value::String(s)) => out.push(s.clone()),
                    ("query", serde_json::Value::String(s)) if s.contains('(') => {
                        out.push(s.clone())
                    }
                    _ => collect_queries(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_queries(v, out)),
        _ => {}
    }
}

/// The `pgsieve_…` identifiers of a PromQL expression.
fn metric_names(query: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = query;
    while let Some(at) = rest.find("pgsieve_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

#[test]
fn dashboard_query_names_are_parsed() {
    assert_eq!(
        metric_names(
            "histogram_quantile(0.5, sum by (le) (rate(pgsieve_apply_latency_seconds_bucket{follower=~\"$f\"}[5m]))) + pgsieve_streaming"
        ),
        ["pgsieve_apply_latency_seconds_bucket", "pgsieve_streaming"]
    );
}

// ------------------------------------------------------------ external tools

/// Runs `tool args…` in `docker/`; `None` (with a note) when the tool is
/// missing outside CI. Under CI a missing tool fails the test.
fn run_tool(tool: &str, args: &[&str]) -> Option<(bool, String)> {
    let out = Command::new(tool).args(args).current_dir(kit("")).output();
    match out {
        Ok(out) => Some((
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                std::env::var_os("CI").is_none(),
                "{tool} is not installed, and CI must run it (.ci/run installs it)"
            );
            println!("SKIPPED: {tool} is not installed (.ci/run installs it)");
            None
        }
        Err(e) => panic!("running {tool}: {e}"),
    }
}

fn tool_passes(tool: &str, args: &[&str]) {
    if let Some((passed, output)) = run_tool(tool, args) {
        assert!(passed, "{tool} {}:\n{output}", args.join(" "));
    }
}

#[test]
fn alert_rules_pass_promtool_with_a_firing_and_a_quiet_case_each() {
    tool_passes("promtool", &["check", "rules", "prometheus/alerts.yaml"]);
    // The kit's Prometheus config (it loads the rules) is valid too.
    tool_passes(
        "promtool",
        &["check", "config", "prometheus/prometheus.yml"],
    );
    tool_passes(
        "promtool",
        &["test", "rules", "prometheus/alerts.test.yaml"],
    );
    // Each alert has a firing case (exp_alerts with items) and a quiet one
    // (`exp_alerts: []`) in the test file.
    let rules = std::fs::read_to_string(kit("prometheus/alerts.yaml")).unwrap();
    let tests = std::fs::read_to_string(kit("prometheus/alerts.test.yaml")).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 7, "{alerts:?}");
    let mut cases: Vec<(String, bool)> = Vec::new();
    let mut current = None;
    for line in tests.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("alertname: ") {
            current = Some(name.to_owned());
        } else if let (Some(rest), Some(name)) = (line.strip_prefix("exp_alerts:"), &current) {
            cases.push((name.clone(), rest.trim() != "[]"));
        }
    }
    for alert in alerts {
        for firing in [true, false] {
            assert!(
                cases.contains(&(alert.to_owned(), firing)),
                "alerts.test.yaml has no {} case for {alert}",
                if firing { "firing" } else { "quiet" }
            );
        }
    }
}

#[test]
fn dockerfile_passes_hadolint() {
    tool_passes("hadolint", &["Dockerfile"]);
}

#[test]
fn kubernetes_example_passes_the_schema_check() {
    tool_passes(
        "kubernetes-validate",
        &["--strict", "k8s/follower-with-pgsieve.yaml"],
    );
}

#[test]
fn compose_file_passes_the_compose_schema() {
    tool_passes(
        "check-jsonschema",
        &["--builtin-schema", "vendor.compose-spec", "compose.yaml"],
    );
}

/// No file under `docker/` (all of it is what a deployment copies) turns
/// off a setting that keeps committed transactions: those belong to the
/// harness's throwaway clusters only.
#[test]
fn deployment_files_never_trade_durability_for_speed() {
    const SETTINGS: [&str; 3] = ["fsync", "full_page_writes", "synchronous_commit"];
    let mut offending = Vec::new();
    let mut files = 0;
    let mut stack = vec![kit("")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            files += 1;
            for (n, line) in text.lines().enumerate() {
                let code = line.split('#').next().unwrap_or_default();
                let flat: String = code
                    .to_lowercase()
                    .chars()
                    .filter(|c| !c.is_whitespace() && !matches!(c, '\'' | '"'))
                    .collect();
                for setting in SETTINGS {
                    let off = ["off", "false", "0", "no"].iter().any(|v| {
                        flat.contains(&format!("{setting}={v}"))
                            || flat.contains(&format!("{setting}:{v}"))
                    });
                    if off {
                        offending.push(format!("{}:{}: {line}", path.display(), n + 1));
                    }
                }
            }
        }
    }
    assert!(files >= 10, "only {files} files under docker/");
    assert!(
        offending.is_empty(),
        "deployment files turn durability off:\n{}",
        offending.join("\n")
    );
    // And the harness still does (throwaway clusters stay fast).
    assert!(pgsieve::harness::cluster::THROWAWAY_CONF.contains("fsync = off"));
}
