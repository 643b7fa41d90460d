//! `pgsieve::source`: the leader replication connection against real
//! PostgreSQL 15 clusters — login (SCRAM, MD5, wrong password), replication
//! commands checked against SQL on the same server, exported snapshots,
//! streaming with feedback, error classification (TLS: `tls.rs`).

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use pgsieve::conn::ConnConfig;
use pgsieve::harness::cluster::{Cluster, ClusterSpec};
use pgsieve::source::{
    ReplicationConnection, ReplicationStream, SnapshotAction, SourceConfig, SourceError,
};
use pgsieve_protocol::{Lsn, PgTimestamp, ReplicationMessage, StandbyStatusUpdate};

const DB: &str = "conjur";
const WAIT: Duration = Duration::from_secs(30);

fn leader(name: &str) -> Cluster {
    Cluster::start(ClusterSpec::leader(name)).expect("start leader cluster")
}

/// The replicator (SCRAM, non-superuser) on `db`, without TLS.
fn replicator_config(cluster: &Cluster, db: &str) -> SourceConfig {
    let url = format!("{}?sslmode=disable", cluster.replicator_url(db));
    let mut cfg = SourceConfig::parse(&url).expect("parse replicator url");
    cfg.application_name = "pgsieve-test".into();
    cfg.connect_timeout = Duration::from_secs(10);
    cfg
}

async fn connect(cluster: &Cluster) -> ReplicationConnection {
    ReplicationConnection::connect(&replicator_config(cluster, DB))
        .await
        .expect("replication connection")
}

async fn sql_lsn(client: &tokio_postgres::Client, sql: &str) -> Lsn {
    let text: String = client.query_one(sql, &[]).await.expect(sql).get(0);
    text.parse().expect("lsn")
}

/// The next CopyData payload, decoded, within [`WAIT`].
async fn next_message(stream: &mut ReplicationStream) -> ReplicationMessage {
    let payload = tokio::time::timeout(WAIT, stream.next_copy_data())
        .await
        .expect("CopyData within the wait")
        .expect("stream ok")
        .expect("stream not ended");
    ReplicationMessage::parse(payload).expect("valid replication message")
}

fn be_u64(bytes: &[u8], at: usize) -> Option<u64> {
    let slice = bytes.get(at..at + 8)?;
    Some(u64::from_be_bytes(slice.try_into().ok()?))
}

#[tokio::test]
async fn scram_login_succeeds_and_wrong_password_fails_clearly() {
    let cluster = leader("src-scram");
    let mut conn = connect(&cluster).await;
    let rows = conn
        .simple_query("SELECT current_user, current_database()")
        .await
        .unwrap();
    assert_eq!(
        rows,
        vec![vec![Some("replicator".to_string()), Some(DB.to_string())]]
    );
    assert!(conn.backend_pid().is_some());
    assert_eq!(conn.server_parameter("client_encoding"), Some("UTF8"));

    let mut wrong = replicator_config(&cluster, DB);
    wrong.pg.password = Some(b"not-the-password".to_vec());
    let err = ReplicationConnection::connect(&wrong)
        .await
        .err()
        .expect("wrong password must fail");
    match &err {
        SourceError::Auth { code, user, .. } => {
            assert_eq!(code.as_deref(), Some("28P01"));
            assert_eq!(user, "replicator");
        }
        other => panic!("expected an Auth error, got {other:?}"),
    }
    assert!(!err.is_transient());
    let text = err.to_string();
    assert!(text.contains("password authentication failed"), "{text}");
    assert!(
        text.contains(&format!("127.0.0.1:{}", cluster.port())),
        "{text}"
    );

    let mut none = replicator_config(&cluster, DB);
    none.pg = ConnConfig::parse(&format!(
        "host=127.0.0.1 port={} user=replicator dbname={DB} sslmode=disable",
        cluster.port()
    ))
    .unwrap();
    let err = ReplicationConnection::connect(&none).await.err().unwrap();
    assert!(
        err.to_string().contains("none is configured"),
        "missing password: {err}"
    );
}

#[tokio::test]
async fn md5_login_succeeds_and_wrong_password_fails() {
    let cluster = leader("src-md5");
    cluster
        .psql(
            "postgres",
            "SET password_encryption = 'md5'; \
             CREATE ROLE md5user LOGIN REPLICATION PASSWORD 'md5-secret'",
        )
        .unwrap();
    let stored = cluster
        .psql(
            "postgres",
            "SELECT left(rolpassword, 3) FROM pg_authid WHERE rolname = 'md5user'",
        )
        .unwrap();
    assert_eq!(stored, "md5");
    // First matching line wins: put ours on top.
    let hba = cluster.data_dir().join("pg_hba.conf");
    let old = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(&hba, format!("host all md5user 127.0.0.1/32 md5\n{old}")).unwrap();
    cluster.psql("postgres", "SELECT pg_reload_conf()").unwrap();

    let url = |pw: &str| {
        format!(
            "postgresql://md5user:{pw}@127.0.0.1:{}/{DB}?sslmode=disable",
            cluster.port()
        )
    };
    let mut conn =
        ReplicationConnection::connect(&SourceConfig::parse(&url("md5-secret")).unwrap())
            .await
            .expect("md5 login");
    let who = conn.simple_query("SELECT current_user").await.unwrap();
    assert_eq!(who, vec![vec![Some("md5user".to_string())]]);

    let err = ReplicationConnection::connect(&SourceConfig::parse(&url("wrong")).unwrap())
        .await
        .err()
        .expect("wrong md5 password must fail");
    assert!(matches!(err, SourceError::Auth { .. }), "{err:?}");
    assert!(!err.is_transient());
}

#[tokio::test]
async fn identify_system_agrees_with_sql() {
    let cluster = leader("src-identify");
    let client = cluster.connect(DB).await.unwrap();
    let mut conn = connect(&cluster).await;
    client
        .batch_execute("CREATE TABLE warm(x int); INSERT INTO warm VALUES (1)")
        .await
        .unwrap();
    let before = sql_lsn(&client, "SELECT pg_current_wal_flush_lsn()::text").await;
    let id = conn.identify_system().await.unwrap();
    client
        .batch_execute("INSERT INTO warm VALUES (2)")
        .await
        .unwrap();
    let after = sql_lsn(&client, "SELECT pg_current_wal_flush_lsn()::text").await;
    assert!(
        before <= id.xlogpos && id.xlogpos <= after,
        "{before} <= {} <= {after}",
        id.xlogpos
    );
    assert!(before < after);
    let system_id: i64 = client
        .query_one("SELECT system_identifier FROM pg_control_system()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(id.system_id, system_id.to_string());
    assert_eq!(id.timeline, 1);
    assert_eq!(id.dbname.as_deref(), Some(DB));
}

#[tokio::test]
async fn exported_snapshot_is_usable_from_another_session() {
    let cluster = leader("src-snapshot");
    let client = cluster.connect(DB).await.unwrap();
    client
        .batch_execute("CREATE TABLE snap(id int primary key); INSERT INTO snap VALUES (1)")
        .await
        .unwrap();
    let mut conn = connect(&cluster).await;
    let slot = conn
        .create_slot("snap_slot", false, SnapshotAction::Export)
        .await
        .unwrap();
    assert_eq!(slot.slot_name, "snap_slot");
    let snapshot = slot.snapshot_name.clone().expect("exported snapshot name");
    // Committed after the slot's snapshot: invisible inside it.
    client
        .batch_execute("INSERT INTO snap VALUES (2)")
        .await
        .unwrap();

    let mut reader = cluster.connect(DB).await.unwrap();
    let txn = reader
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .start()
        .await
        .unwrap();
    txn.batch_execute(&format!("SET TRANSACTION SNAPSHOT '{snapshot}'"))
        .await
        .unwrap();
    let ids: Vec<i32> = txn
        .query("SELECT id FROM snap ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(ids, vec![1]);
    txn.commit().await.unwrap();

    let info = conn
        .slot_info("snap_slot")
        .await
        .unwrap()
        .expect("slot exists");
    assert_eq!(info.plugin, "pgoutput");
    assert_eq!(info.database, DB);
    assert_eq!(info.confirmed_flush_lsn, slot.consistent_point);
    assert!(!info.active);
    conn.drop_slot("snap_slot").await.unwrap();
    assert_eq!(conn.slot_info("snap_slot").await.unwrap(), None);
    let err = conn.drop_slot("snap_slot").await.err().unwrap();
    assert_eq!(err.code(), Some("42704"), "{err}");
}

#[tokio::test]
async fn streams_a_committed_insert_and_feedback_moves_the_slot() {
    let cluster = leader("src-stream");
    let client = cluster.connect(DB).await.unwrap();
    client
        .batch_execute(
            "CREATE TABLE items(id int primary key, name text); \
             CREATE PUBLICATION pgsieve_pub FOR TABLE items",
        )
        .await
        .unwrap();
    let mut conn = connect(&cluster).await;
    let slot = conn
        .create_slot("stream_slot", false, SnapshotAction::Nothing)
        .await
        .unwrap();
    assert_eq!(slot.snapshot_name, None);
    client
        .batch_execute("INSERT INTO items VALUES (1, 'one')")
        .await
        .unwrap();

    let (mut stream, status) = conn
        .start_replication(
            "stream_slot",
            slot.consistent_point,
            &[
                ("proto_version", "2"),
                ("publication_names", "\"pgsieve_pub\""),
                ("streaming", "on"),
                ("messages", "true"),
            ],
        )
        .await
        .unwrap();

    let mut tags = Vec::new();
    let mut commit_end = None;
    let mut saw_keepalive = false;
    let deadline = Instant::now() + WAIT;
    while (commit_end.is_none() || !saw_keepalive) && Instant::now() < deadline {
        match next_message(&mut stream).await {
            ReplicationMessage::XLogData(x) => {
                let tag = *x.data.first().expect("non-empty pgoutput message");
                tags.push(tag);
                if tag == b'I' {
                    let text = String::from_utf8_lossy(&x.data);
                    assert!(text.contains("one"), "insert carries the row: {text:?}");
                }
                if tag == b'C' {
                    commit_end = be_u64(&x.data, 10).map(Lsn);
                }
            }
            ReplicationMessage::PrimaryKeepalive(_) => saw_keepalive = true,
        }
    }
    assert_eq!(tags, b"BRIC".to_vec(), "Begin, Relation, Insert, Commit");
    assert!(saw_keepalive, "a keepalive arrives after the transaction");
    let end = commit_end.expect("commit end LSN");
    assert!(end > slot.consistent_point);

    let confirmed = || async {
        let row = client
            .query_one(
                "SELECT confirmed_flush_lsn::text, active FROM pg_replication_slots \
                 WHERE slot_name = 'stream_slot'",
                &[],
            )
            .await
            .unwrap();
        let lsn: String = row.get(0);
        let active: bool = row.get(1);
        (lsn.parse::<Lsn>().unwrap(), active)
    };
    let (before, active) = confirmed().await;
    assert!(active);
    assert!(before < end, "nothing confirmed yet: {before} < {end}");

    let mut buf = BytesMut::new();
    StandbyStatusUpdate {
        write: end,
        flush: end,
        apply: end,
        client_time: PgTimestamp::now(),
        reply_requested: false,
    }
    .encode(&mut buf);
    status.send_copy_data(buf.freeze()).await.unwrap();

    let deadline = Instant::now() + WAIT;
    loop {
        let (now, _) = confirmed().await;
        if now == end {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "confirmed_flush_lsn {now} never reached {end}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A clone works too, and CopyDone ends the stream cleanly.
    status.clone().finish().await.unwrap();
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            match stream.next_copy_data().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("stream ends after CopyDone");
    assert!(matches!(ended, Ok(None)), "{ended:?}");
    assert!(matches!(stream.next_copy_data().await, Ok(None)));
}

/// Feedback goes out while nobody reads: the halves are independent.
#[tokio::test]
async fn status_updates_flow_while_reading_is_paused() {
    let cluster = leader("src-paused");
    let client = cluster.connect(DB).await.unwrap();
    client
        .batch_execute(
            "CREATE TABLE bulk(id int primary key, pad text); \
             CREATE PUBLICATION bulk_pub FOR TABLE bulk",
        )
        .await
        .unwrap();
    let mut conn = connect(&cluster).await;
    let slot = conn
        .create_slot("paused_slot", true, SnapshotAction::Nothing)
        .await
        .unwrap();
    // Enough data to fill the socket buffers while we do not read.
    client
        .batch_execute(
            "INSERT INTO bulk SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g",
        )
        .await
        .unwrap();
    let target = sql_lsn(&client, "SELECT pg_current_wal_flush_lsn()::text").await;
    let (stream, status) = conn
        .start_replication(
            "paused_slot",
            slot.consistent_point,
            &[
                ("proto_version", "2"),
                ("publication_names", "\"bulk_pub\""),
            ],
        )
        .await
        .unwrap();
    // Acknowledge the slot's start without ever reading: must not block.
    let mut buf = BytesMut::new();
    StandbyStatusUpdate {
        write: slot.consistent_point,
        flush: slot.consistent_point,
        apply: slot.consistent_point,
        client_time: PgTimestamp::now(),
        reply_requested: true,
    }
    .encode(&mut buf);
    let payload: Bytes = buf.freeze();
    for _ in 0..5 {
        tokio::time::timeout(
            Duration::from_secs(5),
            status.send_copy_data(payload.clone()),
        )
        .await
        .expect("status update not blocked by the unread stream")
        .unwrap();
    }
    // The walsender reports `sent_lsn` only once it has sent something: NULL
    // (or no row) right after START_REPLICATION on a busy machine.
    let mut sent = None;
    for _ in 0..500 {
        sent = client
            .query_opt(
                "SELECT sent_lsn::text FROM pg_stat_replication WHERE application_name = 'pgsieve-test'",
                &[],
            )
            .await
            .unwrap()
            .and_then(|row| row.get::<_, Option<String>>(0));
        if sent.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let sent: Lsn = sent
        .expect("the walsender reported a sent LSN")
        .parse()
        .unwrap();
    assert!(
        sent < target,
        "the walsender is held back: sent {sent} < {target}"
    );
    drop(stream);
}

#[tokio::test]
async fn missing_publication_errors_mid_stream() {
    let cluster = leader("src-nopub");
    let client = cluster.connect(DB).await.unwrap();
    client
        .batch_execute("CREATE TABLE t(id int primary key)")
        .await
        .unwrap();
    let mut conn = connect(&cluster).await;
    let slot = conn
        .create_slot("nopub_slot", true, SnapshotAction::Nothing)
        .await
        .unwrap();
    client
        .batch_execute("INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let (mut stream, _status) = conn
        .start_replication(
            "nopub_slot",
            slot.consistent_point,
            &[("proto_version", "2"), ("publication_names", "\"nope\"")],
        )
        .await
        .unwrap();
    let err = tokio::time::timeout(WAIT, async {
        loop {
            match stream.next_copy_data().await {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("stream ended without an error"),
                Err(e) => return e,
            }
        }
    })
    .await
    .expect("error within the wait");
    match &err {
        SourceError::Server { code, message, .. } => {
            assert_eq!(code, "42704");
            assert!(message.contains("nope"), "{message}");
        }
        other => panic!("expected a server error, got {other:?}"),
    }
    assert!(!err.is_transient());
}

#[tokio::test]
async fn unreachable_port_is_transient_and_names_the_address() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let cfg = SourceConfig::parse(&format!(
        "postgresql://replicator:pw@127.0.0.1:{port}/{DB}?sslmode=disable"
    ))
    .unwrap();
    let err = ReplicationConnection::connect(&cfg).await.err().unwrap();
    assert!(matches!(err, SourceError::Connect { .. }), "{err:?}");
    assert!(err.is_transient());
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
}

#[tokio::test]
async fn connect_timeout_is_transient() {
    // A listener that never answers the startup message.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let mut cfg = SourceConfig::parse(&format!(
        "postgresql://replicator:pw@127.0.0.1:{port}/{DB}?sslmode=disable"
    ))
    .unwrap();
    cfg.connect_timeout = Duration::from_millis(300);
    let started = Instant::now();
    let err = ReplicationConnection::connect(&cfg).await.err().unwrap();
    assert!(matches!(err, SourceError::Timeout { .. }), "{err:?}");
    assert!(err.is_transient());
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn missing_database_is_a_clear_permanent_error() {
    let cluster = leader("src-nodb");
    let err = ReplicationConnection::connect(&replicator_config(&cluster, "no_such_db"))
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Some("3D000"), "{err}");
    assert!(!err.is_transient());
    assert!(err.to_string().contains("no_such_db"), "{err}");
}

#[tokio::test]
async fn wal_level_replica_is_a_clear_permanent_error() {
    let cluster =
        Cluster::start(ClusterSpec::leader("src-replica").with_conf("wal_level = replica"))
            .unwrap();
    let mut conn = connect(&cluster).await;
    let err = conn
        .create_slot("never", true, SnapshotAction::Nothing)
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Some("55000"), "{err}");
    assert!(err.to_string().contains("wal_level"), "{err}");
    assert!(!err.is_transient());
    // The session survives a failed command.
    assert!(conn.identify_system().await.is_ok());
}
