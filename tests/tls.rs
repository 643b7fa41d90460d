//! TLS on every connection (issue 15), with certificates made by the test:
//! a leader and two followers that accept only `hostssl`, every command
//! (`setup`, `check`, `run` with initial copy, streaming and a grant's
//! backfill, `status`, `tap`) over `sslmode=verify-full`; a follower that
//! logs in with a client certificate; SCRAM bound to the TLS session
//! (`channel_binding=require`); one clear line and exit 1 for a wrong CA, a
//! wrong host name and a server without TLS; a fake follower that asks for
//! passwords and never gets the leader's; private password files; the
//! metrics token and idle connections; no row values in logs or `/readyz`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pgsieve::conn::ConnConfig;
use pgsieve::harness::cluster::{CONJUR_DB, Cluster, REPLICATOR_PASSWORD};
use pgsieve::harness::conjur::ReplicaSet;
use pgsieve::harness::generate::PolicySpec;
use pgsieve::harness::process::{
    FollowerEntry, PgsieveConfig, PgsieveProcess, pgsieve_binary, run_pgsieve_with_env,
};
use pgsieve::harness::tls::{CERT_ROLE, Certs, HOSTSSL_HBA, enable_tls};
use pgsieve::harness::workload::{Change, add_secret, apply_changes, create_replica_set};
use pgsieve::harness::{OracleRule, Topology, variables_in_set, wait_initial_copy};
use pgsieve::source::{ReplicationConnection, SourceConfig, SourceError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::Client;

use crate::replication::wait_caught_up;
use crate::support::ok;
use crate::support::probe::{free_port, get_with_token, poll};

const TIMEOUT: Duration = Duration::from_secs(60);
/// The role of the second follower, which logs in with SCRAM.
const WEST_ROLE: &str = "pgsieve_west";
const WEST_PASSWORD: &str = "west-follower-pw";
/// A secret value that must never appear in a log line or on `/readyz`.
const LEAKY: &[u8] = b"leaky-row-value-xyzzy";

/// Writes `text` to `dir/name` with mode 0600.
fn private_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, text).expect("writing a private file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

/// `verify-full` URL of `role` on `cluster`, by the certificate's name.
fn verify_full(cluster: &Cluster, role: &str, ca: &Path) -> String {
    format!(
        "postgresql://{role}@localhost:{}/{CONJUR_DB}?sslmode=verify-full&sslrootcert={}",
        cluster.port(),
        ca.display()
    )
}

async fn secret_variables(client: &Client) -> BTreeSet<String> {
    client
        .query("SELECT DISTINCT resource_id FROM secrets", &[])
        .await
        .expect("reading secrets")
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Rows of `pg_stat_ssl` for `role`'s sessions: (ssl, client DN).
async fn ssl_sessions(client: &Client, role: &str) -> Vec<(bool, Option<String>)> {
    client
        .query(
            "SELECT s.ssl, s.client_dn FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.usename = $1",
            &[&role],
        )
        .await
        .expect("reading pg_stat_ssl")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

fn stderr_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| !l.trim().is_empty()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_runs_over_verified_tls() {
    let topology = ok(Topology::start(2));
    let (mut leader, followers) = ok(topology.prepare_conjur().await);
    let east = ReplicaSet::new("east");
    ok(create_replica_set(&mut leader, &east).await);
    let spec = PolicySpec::new("acme", 3, 3, 2).with_seed(15);
    let pop = ok(spec.populate(&mut leader).await);
    let group = east.data_group();
    let grant = |app: usize| Change::GrantRole {
        role: pop.layers[app].clone(),
        member: group.clone(),
    };
    ok(apply_changes(&leader, None, &[grant(0)]).await);

    // Certificates; east logs in with a client certificate, west with SCRAM.
    let certs = ok(Certs::generate());
    let ca = certs.path("ca.crt");
    let (client_crt, client_key) = ok(certs.client(CERT_ROLE));
    followers[0]
        .batch_execute(&format!("CREATE ROLE {CERT_ROLE} LOGIN SUPERUSER"))
        .await
        .expect("certificate role");
    followers[1]
        .batch_execute(&format!(
            "CREATE ROLE {WEST_ROLE} LOGIN SUPERUSER PASSWORD '{WEST_PASSWORD}'"
        ))
        .await
        .expect("west role");
    ok(enable_tls(&topology.leader, &certs, HOSTSSL_HBA));
    ok(enable_tls(&topology.followers[0], &certs, HOSTSSL_HBA));
    let west_hba = format!("hostssl all {WEST_ROLE} 127.0.0.1/32 scram-sha-256\n{HOSTSSL_HBA}");
    ok(enable_tls(&topology.followers[1], &certs, &west_hba));

    // Nothing connects without TLS any more.
    let plain = ConnConfig::parse(&format!(
        "host=127.0.0.1 port={} user=postgres dbname={CONJUR_DB} sslmode=disable",
        topology.leader.port()
    ))
    .unwrap();
    let Err(refused) = pgsieve::conn::connect_client(&plain, "the leader").await else {
        panic!("a plain connection to a hostssl-only leader succeeded");
    };
    let refused = pgsieve::report::error_chain(&refused);
    assert!(refused.contains("no encryption"), "{refused}");

    let dir = tempfile::tempdir().unwrap();
    let leader_pw = private_file(dir.path(), "leader_pw", REPLICATOR_PASSWORD);
    let west_pw = private_file(dir.path(), "west_pw", WEST_PASSWORD);
    let token = "metrics-token-15";
    let token_file = private_file(dir.path(), "token", token);
    let port = free_port();
    let slot = "pgsieve_tls";
    let origin = format!("pgsieve_{slot}");
    let mut config = PgsieveConfig::new(&topology.leader, slot, Vec::new());
    config.leader_url = format!(
        "{}&channel_binding=require",
        verify_full(&topology.leader, "replicator", &ca)
    );
    let mut east_entry = FollowerEntry::filtered("east", &topology.followers[0], &group);
    east_entry.url = format!(
        "{}&sslcert={}&sslkey={}",
        verify_full(&topology.followers[0], CERT_ROLE, &ca),
        client_crt.display(),
        client_key.display()
    );
    let mut west_entry = FollowerEntry::full("west", &topology.followers[1]);
    west_entry.url = format!(
        "{}&channel_binding=require",
        verify_full(&topology.followers[1], WEST_ROLE, &ca)
    );
    config.followers = vec![east_entry, west_entry];
    config.extra = format!(
        "[metrics]\nlisten = \"{port}\"\ntoken_file = \"{}\"\n",
        token_file.display()
    );
    let path = dir.path().join("pgsieve.toml");
    std::fs::write(&path, config.to_toml()).unwrap();
    let path_arg = path.display().to_string();
    let env = vec![
        (
            "PGSIEVE_LEADER_PASSWORD_FILE".to_owned(),
            leader_pw.display().to_string(),
        ),
        (
            "PGSIEVE_FOLLOWER_1_PASSWORD_FILE".to_owned(),
            west_pw.display().to_string(),
        ),
    ];
    let command = |args: &[&str], extra_env: &[(String, String)]| {
        let mut all = env.clone();
        all.extend_from_slice(extra_env);
        let mut argv = vec![args[0], "-c", path_arg.as_str()];
        argv.extend_from_slice(&args[1..]);
        ok(run_pgsieve_with_env(&argv, &all, TIMEOUT))
    };

    // setup, as the tables' owner, over verify-full.
    let owner = vec![(
        "PGSIEVE_LEADER_URL".to_owned(),
        verify_full(&topology.leader, "postgres", &ca),
    )];
    let (code, stdout, stderr) = command(&["setup"], &owner);
    assert_eq!(code, Some(0), "setup\nstdout:\n{stdout}\nstderr:\n{stderr}");

    // check: every connection verified.
    let (code, stdout, stderr) = command(&["check"], &[]);
    assert_eq!(code, Some(0), "check\nstdout:\n{stdout}\nstderr:\n{stderr}");
    for line in [
        "PASS  leader: replication connection: IDENTIFY_SYSTEM",
        "connected as replicator, TLS verified (sslmode=verify-full)",
        &format!("connected as {CERT_ROLE}, TLS verified (sslmode=verify-full)"),
        &format!("connected as {WEST_ROLE}, TLS verified (sslmode=verify-full)"),
    ] {
        assert!(stdout.contains(line), "{line:?} missing from:\n{stdout}");
    }
    assert!(stdout.contains(", TLS"), "{stdout}");

    // run: initial copy, streaming, a grant's backfill.
    let pgsieve = ok(PgsieveProcess::start_with_env(&path, env.clone()));
    ok(wait_initial_copy(&followers[0], &origin, TIMEOUT).await);
    ok(wait_initial_copy(&followers[1], &origin, TIMEOUT).await);
    let in_set = ok(variables_in_set(&leader, &group, OracleRule::Execute).await);
    assert!(!in_set.is_empty());
    assert_eq!(
        secret_variables(&followers[0]).await,
        in_set,
        "east after the copy"
    );
    ok(apply_changes(&leader, None, &[grant(1)]).await);
    ok(add_secret(&mut leader, &spec.variable(0, 0), b"streamed").await);
    wait_caught_up(&leader, &followers[0], &origin, &pgsieve, TIMEOUT).await;
    wait_caught_up(&leader, &followers[1], &origin, &pgsieve, TIMEOUT).await;
    let grown = ok(variables_in_set(&leader, &group, OracleRule::Execute).await);
    assert!(grown.len() > in_set.len(), "the grant added variables");
    assert_eq!(
        secret_variables(&followers[0]).await,
        grown,
        "east after the backfill"
    );
    assert_eq!(
        secret_variables(&followers[1]).await,
        secret_variables(&leader).await,
        "west holds everything"
    );

    // The servers agree: every pgsieve session is TLS; east's carries the
    // client certificate, and SCRAM was bound to the channel (the sessions
    // exist although channel_binding=require).
    let leader_sessions = ssl_sessions(&leader, "replicator").await;
    assert!(leader_sessions.len() >= 2, "{leader_sessions:?}");
    assert!(
        leader_sessions.iter().all(|(ssl, _)| *ssl),
        "{leader_sessions:?}"
    );
    let east_sessions = ssl_sessions(&followers[0], CERT_ROLE).await;
    assert!(!east_sessions.is_empty());
    assert!(
        east_sessions
            .iter()
            .all(|(ssl, dn)| *ssl && dn.as_deref() == Some(&format!("/CN={CERT_ROLE}")[..])),
        "{east_sessions:?}"
    );
    assert!(
        ssl_sessions(&followers[1], WEST_ROLE)
            .await
            .iter()
            .all(|(ssl, _)| *ssl)
    );

    // status over the same connections.
    let (code, stdout, stderr) = command(&["status"], &[]);
    assert_eq!(
        code,
        Some(0),
        "status\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("follower east: origin"), "{stdout}");

    // tap: its own temporary slot, over verify-full and channel binding.
    let mut tap = Command::new(ok(pgsieve_binary()))
        .args(["tap", "-c", &path_arg, "--format", "json", "--limit", "1"])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting pgsieve tap");
    crate::tap::wait_for_tap_slots(&leader, 1, &mut [&mut tap]).await;
    ok(add_secret(&mut leader, &spec.variable(1, 0), b"tapped").await);
    let (tapped, _) = crate::tap::finish(tap, TIMEOUT);
    assert!(tapped.contains("\"type\":\"begin\""), "{tapped}");

    // Metrics: the token guards /metrics; /readyz without it says only
    // ready or not; 100 idle connections do not delay /healthz.
    let denied = get_with_token(port, "/metrics", None)
        .await
        .expect("metrics");
    assert_eq!(denied.status, 401, "{denied:?}");
    let metrics = get_with_token(port, "/metrics", Some(token))
        .await
        .expect("metrics");
    assert_eq!(metrics.status, 200);
    assert!(
        metrics.body.contains("pgsieve_streaming 1"),
        "{}",
        metrics.body
    );
    let mut idle = Vec::new();
    for _ in 0..100 {
        idle.push(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("idle connection"),
        );
    }
    let started = Instant::now();
    let health = get_with_token(port, "/healthz", None)
        .await
        .expect("healthz");
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "/healthz took {:?} beside 100 idle connections",
        started.elapsed()
    );
    drop(idle);

    // A check violation on west whose DETAIL quotes the row: west is
    // detached, and neither the log nor /readyz carries the value.
    followers[1]
        .batch_execute(&format!(
            "ALTER TABLE secrets ADD CONSTRAINT pgsieve_test_no_leak CHECK (value <> '\\x{}'::bytea)",
            hex(LEAKY)
        ))
        .await
        .expect("check constraint");
    ok(add_secret(&mut leader, &spec.variable(2, 2), LEAKY).await);
    let readyz = poll(port, "/readyz", "west detached", &pgsieve, |r| {
        r.status == 503
    })
    .await;
    assert_eq!(readyz.body, "not ready\n", "no reason without the token");
    let detailed = get_with_token(port, "/readyz", Some(token))
        .await
        .expect("readyz");
    assert!(
        detailed.body.contains("pgsieve_test_no_leak") && detailed.body.contains("values redacted"),
        "{detailed:?}"
    );
    let log = pgsieve.log();
    assert!(log.contains("pgsieve_test_no_leak"), "{log}");
    for text in [detailed.body.as_str(), log.as_str()] {
        assert!(
            !text.contains("leaky") && !text.contains(&hex(LEAKY)),
            "a row value escaped: {text}"
        );
    }
    assert!(!log.contains(REPLICATOR_PASSWORD) && !log.contains(WEST_PASSWORD));
    drop(pgsieve);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_failures_are_one_line_and_nothing_is_written() {
    let topology = ok(Topology::start(1));
    let (leader, followers) = ok(topology.prepare_conjur().await);
    let certs = ok(Certs::generate());
    let ca = certs.path("ca.crt");
    ok(enable_tls(&topology.leader, &certs, HOSTSSL_HBA));
    let dir = tempfile::tempdir().unwrap();
    let leader_pw = private_file(dir.path(), "leader_pw", REPLICATOR_PASSWORD);
    let good_leader = verify_full(&topology.leader, "replicator", &ca);
    let follower_url = topology.followers[0].url(CONJUR_DB);
    let start = |name: &str, leader_url: String, follower_url: String, pw: &Path| {
        let mut config = PgsieveConfig::new(
            &topology.leader,
            "pgsieve_tls_fail",
            vec![FollowerEntry::full("f1", &topology.followers[0])],
        );
        config.leader_url = leader_url;
        config.followers[0].url = follower_url;
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, config.to_toml()).unwrap();
        let env = [(
            "PGSIEVE_LEADER_PASSWORD_FILE".to_owned(),
            pw.display().to_string(),
        )];
        let (code, stdout, stderr) = ok(run_pgsieve_with_env(
            &["run", "-c", path.to_str().unwrap()],
            &env,
            TIMEOUT,
        ));
        assert_eq!(
            code,
            Some(1),
            "{name}\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
        let lines = stderr_lines(&stderr);
        assert_eq!(lines.len(), 1, "{name}: one line, got:\n{stderr}");
        assert!(lines[0].starts_with("pgsieve: error: "), "{name}: {stderr}");
        lines[0].to_owned()
    };

    // A CA that did not sign the leader's certificate.
    let line = start(
        "wrong-ca",
        good_leader.replace("ca.crt", "other-ca.crt"),
        follower_url.clone(),
        &leader_pw,
    );
    assert!(line.contains("not signed by a CA in sslrootcert"), "{line}");
    assert!(line.contains("the leader"), "{line}");

    // The address instead of the certificate's name.
    let line = start(
        "wrong-name",
        good_leader.replace("@localhost:", "@127.0.0.1:"),
        follower_url.clone(),
        &leader_pw,
    );
    assert!(line.contains("not valid for name"), "{line}");

    // A follower without TLS under sslmode=require.
    let line = start(
        "no-tls",
        good_leader.clone(),
        format!("{follower_url}?sslmode=require"),
        &leader_pw,
    );
    assert!(line.contains("follower f1"), "{line}");
    assert!(line.contains("does not accept TLS"), "{line}");

    // A password file others can read.
    let open_pw = dir.path().join("open_pw");
    std::fs::write(&open_pw, REPLICATOR_PASSWORD).unwrap();
    let line = start(
        "open-pw",
        good_leader.clone(),
        follower_url.clone(),
        &open_pw,
    );
    assert!(
        line.contains("0644") && line.contains("chmod 0600"),
        "{line}"
    );

    // Nothing was written anywhere.
    let slots: i64 = leader
        .query_one("SELECT count(*) FROM pg_replication_slots", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(slots, 0);
    let origins: i64 = followers[0]
        .query_one("SELECT count(*) FROM pg_replication_origin", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(origins, 0);
    let secrets: i64 = followers[0]
        .query_one("SELECT count(*) FROM secrets", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(secrets, 0);

    // The replication connection gives the same verdicts.
    let wrong_ca = SourceConfig::parse(&format!(
        "{}&password={REPLICATOR_PASSWORD}",
        good_leader.replace("ca.crt", "other-ca.crt")
    ))
    .unwrap();
    let err = ReplicationConnection::connect(&wrong_ca)
        .await
        .err()
        .unwrap();
    assert!(matches!(err, SourceError::Tls { .. }), "{err:?}");
    assert!(!err.is_transient());
    let bound = SourceConfig::parse(&format!(
        "{good_leader}&channel_binding=require&password={REPLICATOR_PASSWORD}"
    ))
    .unwrap();
    let mut conn = ReplicationConnection::connect(&bound)
        .await
        .expect("SCRAM-SHA-256-PLUS");
    assert!(conn.is_tls());
    let rows = conn
        .simple_query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .await
        .unwrap();
    assert_eq!(rows, vec![vec![Some("t".to_owned())]]);

    // The control: without TLS (the follower, plain SCRAM) the same
    // requirement fails, on both connection kinds, so the sessions above
    // really were bound to their TLS channel (SCRAM-SHA-256-PLUS).
    let unbound = format!(
        "{}?sslmode=disable&channel_binding=require",
        topology.followers[0].replicator_url(CONJUR_DB)
    );
    let err = ReplicationConnection::connect(&SourceConfig::parse(&unbound).unwrap())
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("SCRAM-SHA-256-PLUS"), "{err}");
    let Err(err) =
        pgsieve::conn::connect_client(&ConnConfig::parse(&unbound).unwrap(), "follower").await
    else {
        panic!("channel_binding=require without TLS succeeded");
    };
    let err = pgsieve::report::error_chain(&err);
    assert!(err.contains("channel binding"), "{err}");

    // verify-ca checks the chain only: the address is fine, another CA is not;
    // require with a root certificate is verify-ca (libpq's rule).
    let by_address = good_leader.replace("@localhost:", "@127.0.0.1:");
    let with_password = |url: String| format!("{url}&password={REPLICATOR_PASSWORD}");
    let verify_ca = with_password(by_address.replace("verify-full", "verify-ca"));
    ReplicationConnection::connect(&SourceConfig::parse(&verify_ca).unwrap())
        .await
        .expect("verify-ca by address");
    let require_other_ca = with_password(
        by_address
            .replace("verify-full", "require")
            .replace("ca.crt", "other-ca.crt"),
    );
    let err = ReplicationConnection::connect(&SourceConfig::parse(&require_other_ca).unwrap())
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");

    // A revocation list naming the leader's certificate.
    let crl = ok(certs.revoking("server"));
    let revoked = with_password(format!("{good_leader}&sslcrl={}", crl.display()));
    let err = ReplicationConnection::connect(&SourceConfig::parse(&revoked).unwrap())
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("Revoked"), "{err}");

    // A client key others can read is refused before connecting.
    let (crt, key) = ok(certs.client(CERT_ROLE));
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let err = ConnConfig::parse(&format!(
        "{good_leader}&sslcert={}&sslkey={}",
        crt.display(),
        key.display()
    ))
    .err()
    .unwrap();
    assert!(err.contains("sslkey") && err.contains("0644"), "{err}");

    // Several hosts: a dead one first, then the leader; target_session_attrs
    // is honoured (a primary is not read-only).
    let dead = free_port();
    let hosts = format!(
        "host=localhost,localhost port={dead},{} user=postgres dbname={CONJUR_DB} sslmode=verify-full sslrootcert={}",
        topology.leader.port(),
        ca.display()
    );
    let cfg = ConnConfig::parse(&hosts).unwrap();
    let (_, tls) = pgsieve::conn::connect_client(&cfg, "the leader")
        .await
        .map_err(|e| pgsieve::report::error_chain(&e))
        .expect("second host");
    assert!(tls.is_some_and(|t| t.verified));
    let cfg = ConnConfig::parse(&format!("{hosts} target_session_attrs=read-only")).unwrap();
    let Err(err) = pgsieve::conn::connect_client(&cfg, "the leader").await else {
        panic!("a primary passed as read-only");
    };
    assert!(err.to_string().contains("is read-only"), "{err}");
    let cfg = ConnConfig::parse(&format!("{hosts} target_session_attrs=prefer-standby")).unwrap();
    assert!(
        pgsieve::conn::connect_client(&cfg, "the leader")
            .await
            .is_ok()
    );
}

/// A fake PostgreSQL server: answers `SSLRequest` with `N`, reads the
/// startup message, asks for a password with `request` (an Authentication
/// message body), and records everything the client sends after that.
async fn fake_follower(request: Vec<u8>) -> (u16, tokio::task::JoinHandle<Vec<Vec<u8>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut received = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let accepted = tokio::time::timeout(Duration::from_secs(3), listener.accept()).await;
            let Ok(Ok((mut socket, _))) = accepted else {
                break;
            };
            let mut after_request = Vec::new();
            if read_startup(&mut socket).await.is_none() {
                continue;
            }
            let mut message = vec![b'R'];
            message.extend_from_slice(&((request.len() + 4) as u32).to_be_bytes());
            message.extend_from_slice(&request);
            if socket.write_all(&message).await.is_err() {
                continue;
            }
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                socket.read_to_end(&mut after_request),
            )
            .await;
            received.push(after_request);
        }
        received
    });
    (port, task)
}

/// Reads `SSLRequest`s (answering `N`) until a startup message has arrived.
async fn read_startup(socket: &mut tokio::net::TcpStream) -> Option<()> {
    loop {
        let mut len = [0u8; 4];
        socket.read_exact(&mut len).await.ok()?;
        let mut body = vec![0u8; (u32::from_be_bytes(len) as usize).checked_sub(4)?];
        socket.read_exact(&mut body).await.ok()?;
        if body.get(..4) == Some(&80877103u32.to_be_bytes()[..]) {
            socket.write_all(b"N").await.ok()?;
            continue;
        }
        return Some(());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_asking_for_a_password_never_gets_the_leaders() {
    let leader_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let leader_password = "the-leaders-own-password";
    for (name, request) in [
        ("cleartext", 3u32.to_be_bytes().to_vec()),
        ("md5", [5u32.to_be_bytes(), *b"salt"].concat()),
    ] {
        let (port, fake) = fake_follower(request).await;
        let config = format!(
            "[leader]\nurl = \"postgresql://replicator@127.0.0.1:{leader_port}/conjur?sslmode=disable\"\n\
             [[follower]]\nname = \"f\"\nurl = \"postgresql://pgsieve@127.0.0.1:{port}/conjur\"\n"
        );
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, config).unwrap();
        // Every place a leader password can come from.
        let env = [
            ("PGPASSWORD".to_owned(), leader_password.to_owned()),
            (
                "PGSIEVE_LEADER_PASSWORD".to_owned(),
                leader_password.to_owned(),
            ),
        ];
        let (code, _, stderr) = ok(run_pgsieve_with_env(
            &["run", "-c", path.to_str().unwrap()],
            &env,
            Duration::from_secs(6),
        ));
        let received = fake.await.unwrap();
        assert!(
            !received.is_empty(),
            "{name}: pgsieve never asked the fake follower\n{stderr}"
        );
        for bytes in &received {
            assert!(
                bytes.first() != Some(&b'p'),
                "{name}: a password message was sent: {bytes:?}\n{stderr}"
            );
            assert!(
                !String::from_utf8_lossy(bytes).contains(leader_password),
                "{name}: the leader's password reached the follower"
            );
        }
        if name == "cleartext" {
            // The replication connection refuses the same way, and sends nothing.
            let (port, fake) = fake_follower(3u32.to_be_bytes().to_vec()).await;
            let cfg = SourceConfig::parse(&format!(
                "postgresql://replicator:{leader_password}@127.0.0.1:{port}/conjur"
            ))
            .unwrap();
            let err = ReplicationConnection::connect(&cfg).await.err().unwrap();
            assert!(err.to_string().contains("cleartext"), "{err}");
            assert!(!err.is_transient());
            let received = fake.await.unwrap();
            assert!(
                received.iter().all(|b| b.first() != Some(&b'p')),
                "{received:?}"
            );

            assert_eq!(code, Some(1), "{stderr}");
            assert!(
                stderr.contains("asks for the password in cleartext"),
                "{stderr}"
            );
        }
    }
}
