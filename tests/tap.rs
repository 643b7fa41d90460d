//! `pgsieve tap`: the real binary on a temporary slot of its own, against a
//! scripted workload. Every `secrets` change's decision per replica set must
//! equal the oracle query's membership after that transaction, every effect
//! must equal the oracle's difference across it, secret values never appear
//! (unless `--show-values`), and a capture taken with the README's psql
//! command decodes (`--input`) to the same lines as the live tap.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use pgsieve::harness::Topology;
use pgsieve::harness::cluster::bindir;
use pgsieve::harness::conjur::ReplicaSet;
use pgsieve::harness::generate::PolicySpec;
use pgsieve::harness::oracle::{OracleRule, variables_in_set};
use pgsieve::harness::process::{FollowerEntry, PgsieveConfig, pgsieve_binary, run_pgsieve};
use pgsieve::harness::workload::{
    Change, add_secret, apply_changes, create_replica_set, grant_layers_to_sets, rotate_secret,
    set_expiration,
};
use serde_json::Value;
use tokio_postgres::Client;

use crate::support::ok;

/// The README's capture command, minus connection options.
const CAPTURE_SQL: &str = "SELECT lsn, xid, encode(data,'hex') FROM pg_logical_slot_peek_binary_changes('tap_capture', NULL, NULL, 'proto_version','2','publication_names','pgsieve','messages','true')";

/// Oracle membership (east, west) after each step; index 0 = before the workload.
type Oracle = Vec<[BTreeSet<String>; 2]>;

async fn oracle_now(leader: &Client, sets: &[ReplicaSet; 2]) -> [BTreeSet<String>; 2] {
    [
        ok(variables_in_set(leader, &sets[0].data_group(), OracleRule::Execute).await),
        ok(variables_in_set(leader, &sets[1].data_group(), OracleRule::Execute).await),
    ]
}

fn spawn_tap(config: &Path, format: &str, limit: usize) -> Child {
    let binary = ok(pgsieve_binary());
    Command::new(binary)
        .arg("tap")
        .arg("-c")
        .arg(config)
        .args(["--format", format, "--limit", &limit.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting pgsieve tap")
}

/// Waits for the child to exit on its own (`--limit`), killing it after `timeout`.
pub(crate) fn finish(mut child: Child, timeout: Duration) -> (String, String) {
    let deadline = Instant::now() + timeout;
    while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let timed_out = child.try_wait().ok().flatten().is_none();
    if timed_out {
        let _ = child.kill();
    }
    let out = child.wait_with_output().expect("tap output");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !timed_out && out.status.success(),
        "tap did not finish cleanly (timed out: {timed_out}, status {:?})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    (stdout, stderr)
}

pub(crate) async fn wait_for_tap_slots(leader: &Client, count: i64, taps: &mut [&mut Child]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let row = leader
            .query_one(
                "SELECT count(*) FROM pg_replication_slots
                 WHERE slot_name LIKE 'pgsieve_tap_%' AND temporary AND active",
                &[],
            )
            .await
            .expect("reading pg_replication_slots");
        if row.get::<_, i64>(0) == count {
            return;
        }
        for tap in taps.iter_mut() {
            if let Ok(Some(status)) = tap.try_wait() {
                panic!("pgsieve tap exited early with {status}");
            }
        }
        assert!(Instant::now() < deadline, "tap slots never became active");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn parse_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The lines with their `lsn` field blanked (live and capture may differ there).
fn normalised(lines: &[Value]) -> Vec<Value> {
    lines
        .iter()
        .cloned()
        .map(|mut v| {
            if let Some(o) = v.as_object_mut() {
                o.insert("lsn".into(), Value::String("-".into()));
            }
            v
        })
        .collect()
}

/// Checks decisions and effects of the JSON lines against the oracle; returns the
/// number of `secrets` changes checked.
fn check_against_oracle(lines: &[Value], oracle: &Oracle) -> usize {
    let set_index = |follower: &str| match follower {
        "east" => Some(0),
        "west" => Some(1),
        _ => None,
    };
    let mut txn = 0usize;
    let mut checked = 0;
    let mut effects: Vec<BTreeSet<(String, String, bool)>> = vec![BTreeSet::new(); oracle.len()];
    for line in lines {
        match line["type"].as_str() {
            Some("begin") => txn += 1,
            Some("change") if line["table"] == "public.secrets" => {
                let var = line["key"]["resource_id"].as_str().expect("resource_id");
                let after = &oracle[txn];
                let decisions = line["decisions"].as_array().expect("decisions");
                assert_eq!(decisions.len(), 3, "{line}");
                for d in decisions {
                    let follower = d["follower"].as_str().expect("follower");
                    let expected = match set_index(follower) {
                        Some(i) if after[i].contains(var) => "forward",
                        Some(_) => "drop",
                        None => "forward",
                    };
                    assert_eq!(
                        d["action"], expected,
                        "transaction {txn}, {var} for {follower}: {line}"
                    );
                    assert!(!d["reason"].as_str().unwrap_or("").is_empty());
                }
                checked += 1;
            }
            Some("effect") => {
                effects[txn].insert((
                    line["follower"].as_str().unwrap_or("").to_owned(),
                    line["variable"].as_str().unwrap_or("").to_owned(),
                    line["now_in"].as_bool().expect("now_in"),
                ));
            }
            _ => {}
        }
    }
    assert_eq!(txn, oracle.len() - 1, "one printed transaction per step");
    for k in 1..oracle.len() {
        let mut expected = BTreeSet::new();
        for (i, name) in ["east", "west"].iter().enumerate() {
            let (before, after) = (&oracle[k - 1][i], &oracle[k][i]);
            for v in after.difference(before) {
                expected.insert(((*name).to_owned(), v.clone(), true));
            }
            for v in before.difference(after) {
                expected.insert(((*name).to_owned(), v.clone(), false));
            }
        }
        assert_eq!(effects[k], expected, "effects of transaction {k}");
    }
    checked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tap_decisions_and_effects_match_the_oracle_and_a_capture_decodes_the_same() {
    let topology = ok(Topology::start(1));
    let (mut leader, _followers) = ok(topology.prepare_conjur().await);
    let sets = [ReplicaSet::new("east"), ReplicaSet::new("west")];
    for set in &sets {
        ok(create_replica_set(&mut leader, set).await);
    }
    let pop = ok(PolicySpec::new("acme", 4, 5, 2)
        .with_seed(11)
        .populate(&mut leader)
        .await);
    let v = |app: usize, var: usize| pop.variables[app * 5 + var].clone();
    ok(grant_layers_to_sets(&leader, &pop.layers[..2], &sets).await);

    // The tap never connects to followers; all three entries may name one cluster.
    let f = &topology.followers[0];
    let config = PgsieveConfig::new(
        &topology.leader,
        "pgsieve_unused",
        vec![
            FollowerEntry::filtered("east", f, &sets[0].data_group()),
            FollowerEntry::filtered("west", f, &sets[1].data_group()),
            FollowerEntry::full("all", f),
        ],
    );
    let config_path = topology.leader.dir().join("tap.toml");
    std::fs::write(&config_path, config.to_toml()).expect("writing tap.toml");

    // 13 transactions and one non-transactional message.
    const UNITS: usize = 14;
    let mut json_tap = spawn_tap(&config_path, "json", UNITS);
    let mut pretty_tap = spawn_tap(&config_path, "pretty", UNITS);
    wait_for_tap_slots(&leader, 2, &mut [&mut json_tap, &mut pretty_tap]).await;

    let values: [&[u8]; 7] = [
        b"tap-test alpha value",
        b"tap-test bravo value",
        b"tap-test charlie value",
        b"tap-test delta value",
        b"tap-test echo value",
        b"tap-test foxtrot value",
        b"tap-test golf value",
    ];
    let mut oracle: Oracle = vec![oracle_now(&leader, &sets).await];
    async fn in_tx(leader: &mut Client, changes: &[Change]) {
        let tx = leader.transaction().await.expect("begin");
        ok(apply_changes(&tx, None, changes).await);
        tx.commit().await.expect("commit");
    }

    // Phase A: secrets and grant changes.
    ok(add_secret(&mut leader, &v(0, 0), values[0]).await);
    oracle.push(oracle_now(&leader, &sets).await);
    ok(rotate_secret(&leader, &v(1, 0), values[1], None).await);
    oracle.push(oracle_now(&leader, &sets).await);
    ok(rotate_secret(&leader, &v(2, 0), values[2], None).await);
    oracle.push(oracle_now(&leader, &sets).await);
    let permit = Change::Permit {
        role: sets[0].data_group(),
        privilege: "execute".into(),
        resource: v(2, 0),
    };
    in_tx(&mut leader, &[permit]).await;
    oracle.push(oracle_now(&leader, &sets).await);
    ok(rotate_secret(&leader, &v(2, 0), values[3], None).await);
    oracle.push(oracle_now(&leader, &sets).await);
    let grant = Change::GrantRole {
        role: pop.layers[2].clone(),
        member: sets[1].data_group(),
    };
    in_tx(&mut leader, &[grant]).await;
    oracle.push(oracle_now(&leader, &sets).await);
    let revoke = Change::RevokeRole {
        role: pop.layers[0].clone(),
        member: sets[0].data_group(),
    };
    in_tx(&mut leader, &[revoke]).await;
    oracle.push(oracle_now(&leader, &sets).await);
    ok(rotate_secret(&leader, &v(0, 1), values[4], None).await);
    oracle.push(oracle_now(&leader, &sets).await);
    let delete = Change::DeleteResource { resource: v(1, 4) };
    in_tx(&mut leader, &[delete]).await;
    oracle.push(oracle_now(&leader, &sets).await);

    // Phase B, captured by a slot of its own: no model change from here on.
    leader
        .execute(
            "SELECT pg_create_logical_replication_slot('tap_capture', 'pgoutput')",
            &[],
        )
        .await
        .expect("creating the capture slot");
    ok(rotate_secret(&leader, &v(1, 1), values[5], None).await);
    oracle.push(oracle_now(&leader, &sets).await);
    let tomorrow = SystemTime::now() + Duration::from_secs(86_400);
    ok(set_expiration(&leader, &v(2, 0), Some(tomorrow)).await);
    oracle.push(oracle_now(&leader, &sets).await);
    ok(add_secret(&mut leader, &v(3, 0), values[6]).await);
    oracle.push(oracle_now(&leader, &sets).await);
    leader
        .execute(
            "SELECT pg_logical_emit_message(true, 'tap-test', 'inside')",
            &[],
        )
        .await
        .expect("transactional message");
    oracle.push(oracle_now(&leader, &sets).await);
    leader
        .execute(
            "SELECT pg_logical_emit_message(false, 'tap-test', 'end')",
            &[],
        )
        .await
        .expect("non-transactional message");
    assert_eq!(oracle.len(), UNITS, "13 steps + the starting state");

    let (stdout, stderr) = finish(json_tap, Duration::from_secs(90));
    let lines = parse_lines(&stdout);
    let checked = check_against_oracle(&lines, &oracle);
    assert!(
        checked >= 10,
        "only {checked} secrets changes checked\n{stdout}"
    );
    let messages: Vec<&Value> = lines.iter().filter(|l| l["type"] == "message").collect();
    assert_eq!(messages.len(), 2, "{stdout}");
    assert_eq!(messages[0]["transactional"], true);
    assert_eq!(messages[0]["content"], "inside");
    assert!(messages[0]["xid"].is_u64());
    assert_eq!(messages[1]["transactional"], false);
    assert_eq!(messages[1]["content"], "end");
    // Redaction: the first value arrives as `<redacted 20 bytes>`, none in clear or hex.
    let first = lines
        .iter()
        .find(|l| l["type"] == "change" && l["key"]["resource_id"] == v(0, 0).as_str())
        .expect("the first secret's insert");
    assert_eq!(
        first["columns"]["value"],
        format!("<redacted {} bytes>", values[0].len())
    );
    let (pretty, _) = finish(pretty_tap, Duration::from_secs(30));
    for value in values {
        for text in [&stdout, &stderr, &pretty] {
            assert!(!text.contains(&hex(value)), "a secret value leaked as hex");
            assert!(
                !text.contains(std::str::from_utf8(value).unwrap_or("")),
                "a secret value leaked in clear"
            );
        }
    }
    assert!(pretty.contains("effect") && pretty.contains("<redacted 20 bytes>"));
    if std::env::var_os("PGSIEVE_TAP_SAMPLE").is_some() {
        eprintln!("--- pretty tap ---\n{pretty}");
    }

    // The capture, taken with the README's psql command, decodes to the same lines.
    let capture = Command::new(ok(bindir()).join("psql"))
        .args(["-X", "-AtF", " ", "-h", topology.leader.host(), "-p"])
        .arg(topology.leader.port().to_string())
        .args(["-U", "postgres", "-d", "conjur", "-c", CAPTURE_SQL])
        .output()
        .expect("running psql");
    assert!(capture.status.success(), "{capture:?}");
    let capture_path = topology.leader.dir().join("capture.txt");
    std::fs::write(&capture_path, &capture.stdout).expect("writing the capture");
    let cfg = config_path.to_str().expect("utf-8 path");
    let input = capture_path.to_str().expect("utf-8 path");
    let (code, decoded, err) = ok(run_pgsieve(
        &["tap", "-c", cfg, "--input", input, "--format", "json"],
        Duration::from_secs(60),
    ));
    assert_eq!(code, Some(0), "{err}");
    let decoded = parse_lines(&decoded);
    let first_xid = decoded
        .iter()
        .find(|l| l["type"] == "begin")
        .map(|l| l["xid"].clone())
        .expect("a transaction in the capture");
    let start = lines
        .iter()
        .position(|l| l["type"] == "begin" && l["xid"] == first_xid)
        .expect("the capture's first transaction in the live tap");
    assert_eq!(normalised(&decoded), normalised(&lines[start..]));
    let changes = decoded.iter().filter(|l| l["type"] == "change").count();
    assert!(changes >= 5, "{changes} changes in the capture");

    // --show-values prints them; the filters narrow to one variable's rows.
    let (_, shown, _) = ok(run_pgsieve(
        &[
            "tap",
            "-c",
            cfg,
            "--input",
            input,
            "--format",
            "json",
            "--show-values",
        ],
        Duration::from_secs(60),
    ));
    assert!(shown.contains(&hex(values[5])), "{shown}");
    let var = v(2, 0);
    let (_, filtered, _) = ok(run_pgsieve(
        &[
            "tap",
            "-c",
            cfg,
            "--input",
            input,
            "--format",
            "json",
            "--table",
            "secrets",
            "--variable",
            &var,
            "--replica-set",
            "east",
        ],
        Duration::from_secs(60),
    ));
    let filtered = parse_lines(&filtered);
    let updates: Vec<&Value> = filtered.iter().filter(|l| l["type"] == "change").collect();
    assert_eq!(updates.len(), 4, "2 populated versions + 2 rotations");
    for u in &updates {
        assert_eq!(u["op"], "update");
        assert_eq!(u["key"]["resource_id"], var.as_str());
        assert_eq!(u["decisions"].as_array().map(Vec::len), Some(1));
        assert_eq!(u["decisions"][0]["action"], "forward");
    }
    assert!(filtered.iter().all(|l| l["type"] != "message"));
}
