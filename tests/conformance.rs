//! Conformance of the pgoutput decoder (`pgsieve_protocol::PgOutputDecoder`) with
//! PostgreSQL itself, using PostgreSQL's `test_decoding` plugin as the oracle.
//!
//! A PG15 leader (harness leader profile, `logical_decoding_work_mem = 64kB`, prepared
//! transactions enabled) gets the Conjur schema and publication, then four logical slots
//! created one after another with nothing written in between: pgoutput and
//! `test_decoding`, each once plain and once with two-phase decoding. A Conjur workload
//! (harness policy loads, secret writes and policy changes, plus raw SQL for the rest)
//! then writes every change shape pgsieve must decode: inserts, updates (non-key, key
//! change, unchanged TOAST > 8 kB, REPLICA IDENTITY FULL), deletes, truncates, logical
//! decoding messages, streamed transactions (one with an aborted subtransaction, one
//! aborted), prepared transactions (committed and rolled back), and Conjur's column
//! types (bytea, cidr[], hstore, enums, timestamp/timestamptz, tsvector, NULLs).
//!
//! Each test reads a pgoutput slot with `pg_logical_slot_peek_binary_changes` (one row =
//! one pgoutput message; peek, so one slot can be read several ways), decodes every row
//! with one `PgOutputDecoder` per read, turns the decoded stream into what
//! `test_decoding` prints for the same WAL, and asserts that both lists are equal, in
//! order: count, transaction boundaries (xid, end LSN, commit/prepare time, GID), table,
//! operation, old key or old row, and every column's name, type and value. Nothing is
//! hard-coded except through the oracles: `test_decoding` for the changes, the catalog
//! for Relation and Type messages (names, type OIDs, typmods, key flags, replica
//! identity), and PostgreSQL's own receive/output functions for binary-mode values
//! (every binary value is handed back to the server as a parameter of its column type
//! and printed by the type's output function, so all types are compared, not just the
//! simple ones).
//!
//! A decoder that misreads any field (an LSN, a timestamp, the streamed-change xid, a
//! tuple marker, a column kind or length, a GID) produces a different list and fails.

use std::collections::{BTreeSet, HashMap};
use std::error::Error;
use std::fmt;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use pgsieve::harness::conjur;
use pgsieve::harness::generate::PolicySpec;
use pgsieve::harness::workload::{self, Change, PolicyLoad};
use pgsieve::harness::{Cluster, ClusterSpec};
use pgsieve_protocol::pgoutput::{BeginPrepare, Type as TypeMessage};
use pgsieve_protocol::{
    Begin, Column, LogicalMessage, Lsn, OldTuple, PgOutputDecoder, PgTimestamp, Relation,
    RelationCache, RelationColumn, ReplicaIdentity, TupleData,
};
use rand::distributions::Alphanumeric;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_postgres::Client;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

use crate::support::ok;

/// The publication `harness::conjur::prepare_leader` creates (all Conjur tables).
const PUBLICATION: &str = "pgsieve";
/// Plain pgoutput slot, read with protocol 1 and 2.
const PGOUTPUT_SLOT: &str = "conformance_pgoutput";
/// pgoutput slot with two-phase decoding, read with protocol 3.
const PGOUTPUT_2PC_SLOT: &str = "conformance_pgoutput_2pc";
/// The oracle for [`PGOUTPUT_SLOT`].
const TEST_DECODING_SLOT: &str = "conformance_test_decoding";
/// The oracle for [`PGOUTPUT_2PC_SLOT`].
const TEST_DECODING_2PC_SLOT: &str = "conformance_test_decoding_2pc";
/// GID of the prepared transaction that is committed.
const GID_COMMITTED: &str = "pgsieve-conformance-commit";
/// GID of the prepared transaction that is rolled back.
const GID_ROLLED_BACK: &str = "pgsieve-conformance-rollback";

/// A published scratch table with REPLICA IDENTITY FULL, a TOASTed column that is
/// never compressed, and the types whose `test_decoding` literals are special
/// (unquoted numbers, `B'…'` bit strings, `true`/`false`).
const SCRATCH_DDL: &str = "
CREATE TABLE conformance_full (
  id integer NOT NULL,
  flag boolean,
  small smallint,
  big bigint,
  ratio double precision,
  amount numeric(12,3),
  bits bit varying(8),
  note text,
  doc text,
  tags text[],
  at timestamptz
);
ALTER TABLE conformance_full REPLICA IDENTITY FULL;
ALTER TABLE conformance_full ALTER COLUMN doc SET STORAGE EXTERNAL;
ALTER PUBLICATION pgsieve ADD TABLE conformance_full;
";

// Type OIDs whose values `test_decoding` prints specially (its `print_literal`).
const BOOLOID: u32 = 16;
const INT8OID: u32 = 20;
const INT2OID: u32 = 21;
const INT4OID: u32 = 23;
const OIDOID: u32 = 26;
const FLOAT4OID: u32 = 700;
const FLOAT8OID: u32 = 701;
const BITOID: u32 = 1560;
const VARBITOID: u32 = 1562;
const NUMERICOID: u32 = 1700;

/// Protocol 1, text and binary: every transaction arrives whole at commit.
#[tokio::test]
async fn pgoutput_v1_text_and_binary_match_test_decoding() {
    let (_cluster, client) = leader_with_workload("conf-v1").await;
    let expected = test_decoding_events(&client, TEST_DECODING_SLOT).await;
    assert_workload_covered(&expected, false);
    for binary in [false, true] {
        let read = Read {
            proto: 1,
            binary,
            two_phase: false,
        };
        let (events, stats) = pgoutput_events(&client, PGOUTPUT_SLOT, read).await;
        assert_eq!(stats.stream_blocks, 0, "{read}: streamed without streaming");
        stats.assert_format(read);
        assert_same_events(&read.to_string(), &expected, &events);
    }
}

/// Protocol 2 with streaming, text and binary: the large transactions arrive in
/// chunks with per-change xids, one loses an aborted subtransaction, one is aborted;
/// reassembled at Stream Commit they must equal test_decoding's whole transactions.
#[tokio::test]
async fn pgoutput_v2_streamed_text_and_binary_match_test_decoding() {
    let (_cluster, client) = leader_with_workload("conf-v2").await;
    let expected = test_decoding_events(&client, TEST_DECODING_SLOT).await;
    assert_workload_covered(&expected, false);
    for binary in [false, true] {
        let read = Read {
            proto: 2,
            binary,
            two_phase: false,
        };
        let (events, stats) = pgoutput_events(&client, PGOUTPUT_SLOT, read).await;
        stats.assert_format(read);
        // The large transactions must really have been streamed, and the aborts must
        // have found the changes they drop (by the streamed changes' xids).
        assert!(stats.stream_blocks >= 2, "{read}: {stats:?}");
        assert!(stats.stream_commits >= 2, "{read}: {stats:?}");
        assert!(stats.subxact_aborts >= 1, "{read}: {stats:?}");
        assert!(stats.dropped_by_subxact_abort > 0, "{read}: {stats:?}");
        assert!(stats.xact_aborts >= 1, "{read}: {stats:?}");
        assert_same_events(&read.to_string(), &expected, &events);
    }
}

/// Protocol 3 with two-phase decoding (text with streaming, binary without):
/// Begin Prepare … Prepare at PREPARE TRANSACTION, then Commit Prepared or Rollback
/// Prepared, against test_decoding on a two-phase slot.
#[tokio::test]
async fn pgoutput_v3_two_phase_matches_test_decoding() {
    let (_cluster, client) = leader_with_workload("conf-v3").await;
    let expected = test_decoding_events(&client, TEST_DECODING_2PC_SLOT).await;
    assert_workload_covered(&expected, true);
    for binary in [false, true] {
        let read = Read {
            proto: 3,
            binary,
            two_phase: true,
        };
        let (events, stats) = pgoutput_events(&client, PGOUTPUT_2PC_SLOT, read).await;
        stats.assert_format(read);
        assert_eq!(stats.begin_prepares, 2, "{read}: {stats:?}");
        // GIDs, xids, LSNs and times of Prepare / Commit Prepared / Rollback Prepared
        // are part of the events (assert_workload_covered made sure both GIDs are there).
        assert_same_events(&read.to_string(), &expected, &events);
    }
}

// ---------------------------------------------------------------------------------------
// Leader, slots and workload

/// Starts a leader with the Conjur schema, the publication and the scratch table,
/// creates the four slots back to back, runs [`run_workload`] and returns the cluster
/// (keep it alive) with a superuser connection to the Conjur database.
async fn leader_with_workload(name: &str) -> (Cluster, Client) {
    let cluster = ok(Cluster::start(
        ClusterSpec::leader(name)
            .with_conf("logical_decoding_work_mem = 64kB")
            .with_conf("max_prepared_transactions = 4"),
    ));
    let mut client = ok(conjur::prepare_conjur(&cluster).await);
    ok(conjur::prepare_leader(&client, PUBLICATION).await);
    client.batch_execute(SCRATCH_DDL).await.unwrap();
    // Back to back, before any write: every slot sees the same changes.
    for (slot, plugin, two_phase) in [
        (PGOUTPUT_SLOT, "pgoutput", false),
        (PGOUTPUT_2PC_SLOT, "pgoutput", true),
        (TEST_DECODING_SLOT, "test_decoding", false),
        (TEST_DECODING_2PC_SLOT, "test_decoding", true),
    ] {
        client
            .execute(
                "SELECT pg_create_logical_replication_slot($1, $2, false, $3)",
                &[&slot, &plugin, &two_phase],
            )
            .await
            .unwrap();
    }
    run_workload(&mut client).await;
    (cluster, client)
}

/// `s` as an SQL string literal (what `quote_literal` gives for strings without `\`).
fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Writes what Conjur writes (through the harness) plus the shapes Conjur's API paths
/// do not produce (raw SQL), one transaction at a time from one session.
async fn run_workload(client: &mut Client) {
    let mut rng = StdRng::seed_from_u64(0xC0DE);
    // Account, two policy loads (the second one large enough to be streamed: roles,
    // resources, memberships, permissions, annotations, tsvectors, hstore/enum
    // policy_log rows) and 180 bytea secret versions.
    let spec = PolicySpec::new("acme", 3, 30, 2).with_seed(7);
    let pop = ok(spec.populate(client).await);
    let admin = spec.admin();
    let var = |i: usize| pop.variables[i].clone();
    let expires = SystemTime::UNIX_EPOCH + Duration::from_micros(1_900_000_000_123_456);

    // Secret writes as the API does them: bytea with a quote, NUL and high bytes; a
    // rotation with an expiry (timestamp).
    ok(workload::add_secret(client, &var(0), b"it's \x00\xff secret").await);
    ok(workload::rotate_secret(&*client, &var(0), b"rotated", Some(expires)).await);

    // An incompressible secret > 8 kB (TOASTed), then updates of another column of
    // every version: the big value is an unchanged TOAST datum in those updates.
    let big: Vec<u8> = (0..12 * 1024).map(|_| rng.r#gen()).collect();
    ok(workload::add_secret(client, &var(1), &big).await);
    ok(workload::set_expiration(&*client, &var(1), Some(expires)).await);
    ok(workload::set_expiration(&*client, &var(1), None).await);

    // A policy load with a TOASTed policy text (inserted, then stamped at commit) and
    // an annotation with quotes, a newline, a tab and non-ASCII text.
    let app0 = spec.app_policy(0);
    let mut load = PolicyLoad::new(&app0, &admin);
    load.text = (&mut rng)
        .sample_iter(&Alphanumeric)
        .take(12 * 1024)
        .map(char::from)
        .collect();
    load.annotate(
        &var(2),
        "note",
        "it's \"annotated\"\nacross lines,\ttabbed, déjà vu",
        Some(&app0),
    );
    ok(workload::load_policy(client, &load).await);

    // A policy change: deletes (permission, membership), an insert, an owner change
    // and a resource delete that cascades to secrets, annotations and textsearch.
    let changes = [
        Change::Deny {
            role: pop.layers[1].clone(),
            privilege: "read".into(),
            resource: var(31),
        },
        Change::GrantRole {
            role: pop.layers[2].clone(),
            member: pop.hosts[1].clone(),
        },
        Change::RevokeRole {
            role: pop.layers[1].clone(),
            member: pop.hosts[1].clone(),
        },
        Change::SetOwner {
            resource: var(32),
            owner: pop.layers[1].clone(),
        },
        Change::DeleteResource { resource: var(33) },
    ];
    ok(workload::policy_change(client, &spec.app_policy(1), &admin, &changes).await);

    // Key change on a primary-key column: old key in both outputs.
    client
        .execute(
            "UPDATE annotations SET name = 'renamed' WHERE resource_id = $1 AND name = 'description'",
            &[&var(3)],
        )
        .await
        .unwrap();

    // cidr[], bytea, varchar, identity and NULL columns: insert, non-key update, key change.
    let (host0, host2) = (&pop.hosts[0], &pop.hosts[2]);
    client
        .execute(
            "INSERT INTO credentials (role_id, api_key, restricted_to)
             VALUES ($1, $2, '{10.0.0.0/8,192.168.1.0/24}')",
            &[host0, &b"\x01\x02'".as_slice()],
        )
        .await
        .unwrap();
    client
        .execute(
            "UPDATE credentials SET restricted_to = '{127.0.0.1/32}',
             updated_at = '2026-01-02 03:04:05.6' WHERE role_id = $1",
            &[host0],
        )
        .await
        .unwrap();
    client
        .execute(
            "UPDATE credentials SET role_id = $2 WHERE role_id = $1",
            &[host0, host2],
        )
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO host_factory_tokens (token_sha256, token, resource_id, cidr, expiration)
             VALUES (repeat('ab', 32), '\\xdeadbeef', $1, '{10.1.0.0/16,192.168.0.1/32}',
                     '2030-01-01 00:00:00')",
            &[&pop.layers[0]],
        )
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO authenticator_configs (resource_id, enabled) VALUES ($1, true)",
            &[&var(4)],
        )
        .await
        .unwrap();

    // REPLICA IDENTITY FULL: policy_log (hstore, enums, timestamptz) and the scratch
    // table, whose TOASTed doc is in the old row but unchanged in the new one.
    client
        .batch_execute(
            "UPDATE policy_log SET at = at + interval '1 second'
               WHERE ctid IN (SELECT ctid FROM policy_log WHERE kind = 'annotations' LIMIT 3);
             DELETE FROM policy_log
               WHERE ctid IN (SELECT ctid FROM policy_log WHERE kind = 'permissions' LIMIT 3);
             INSERT INTO conformance_full VALUES
               (1, true, -32768, 9223372036854775807, 0.1, 12345.678, B'1010',
                E'it''s \"quoted\"\\nand multi-line, déjà', repeat(md5('doc'), 400),
                '{a,\"b c\",NULL}', '2026-01-02 03:04:05.678901+00'),
               (2, false, 0, -1, 'NaN', -0.5, B'', '', NULL, '{}', NULL),
               (3, NULL, NULL, NULL, '-Infinity', NULL, NULL, NULL, NULL, NULL, NULL);
             UPDATE conformance_full SET flag = NOT flag WHERE id = 1;
             UPDATE conformance_full SET id = 10, note = 'moved' WHERE id = 2;
             DELETE FROM conformance_full WHERE id = 3;",
        )
        .await
        .unwrap();

    // Logical decoding messages: alone in a transaction, non-transactional, and
    // around a change.
    client
        .batch_execute(
            "SELECT pg_logical_emit_message(true, 'pgsieve', 'x');
             SELECT pg_logical_emit_message(false, 'pgsieve', 'not transactional: it''s');
             BEGIN;
             SELECT pg_logical_emit_message(true, 'pgsieve', 'before');
             INSERT INTO conformance_full (id, note) VALUES (4, 'between messages');
             SELECT pg_logical_emit_message(true, 'pgsieve', 'after');
             COMMIT;",
        )
        .await
        .unwrap();

    // Streamed (> 64 kB): a subtransaction rolled back after its changes were
    // streamed, then a whole streamed transaction rolled back.
    client
        .batch_execute(
            "BEGIN;
             INSERT INTO conformance_full (id, note)
               SELECT g, 'kept ' || g FROM generate_series(1000, 1599) g;
             SAVEPOINT doomed;
             INSERT INTO conformance_full (id, note)
               SELECT g, 'rolled back ' || g FROM generate_series(2000, 3999) g;
             ROLLBACK TO SAVEPOINT doomed;
             INSERT INTO conformance_full (id, note)
               SELECT g, 'after the savepoint ' || g FROM generate_series(4000, 4009) g;
             COMMIT;
             BEGIN;
             INSERT INTO conformance_full (id, note)
               SELECT g, 'aborted ' || g FROM generate_series(5000, 6999) g;
             ROLLBACK;",
        )
        .await
        .unwrap();

    // Prepared transactions: one committed (another transaction commits between its
    // PREPARE and its COMMIT PREPARED), one rolled back.
    client
        .batch_execute(&format!(
            "BEGIN;
             INSERT INTO secrets (resource_id, value) VALUES ({v5}, '\\xc0ffee');
             UPDATE annotations SET value = 'prepared' WHERE resource_id = {v5};
             PREPARE TRANSACTION {gid};",
            v5 = quote_literal(&var(5)),
            gid = quote_literal(GID_COMMITTED),
        ))
        .await
        .unwrap();
    ok(workload::add_secret(client, &var(6), b"between prepare and commit").await);
    // (COMMIT/ROLLBACK PREPARED cannot share a simple query with other statements.)
    let (gid, gid2) = (quote_literal(GID_COMMITTED), quote_literal(GID_ROLLED_BACK));
    for sql in [
        format!("COMMIT PREPARED {gid}"),
        format!(
            "BEGIN;
             DELETE FROM permissions WHERE resource_id = {};
             PREPARE TRANSACTION {gid2};",
            quote_literal(&var(7))
        ),
        format!("ROLLBACK PREPARED {gid2}"),
    ] {
        client.batch_execute(&sql).await.unwrap();
    }

    // Truncates: two tables with RESTART IDENTITY, one with CASCADE.
    client
        .batch_execute(
            "TRUNCATE host_factory_tokens, authenticator_configs RESTART IDENTITY;
             TRUNCATE credentials CASCADE;",
        )
        .await
        .unwrap();
    // Something after the truncates, so a truncate is not the last thing decoded.
    ok(workload::add_secret(client, &var(8), b"last").await);
}

/// Asserts that the oracle's output holds every shape the workload is meant to
/// produce, so the comparison cannot pass for lack of material.
fn assert_workload_covered(events: &[Event], two_phase: bool) {
    let has = |what: &str, f: &dyn Fn(&Event) -> bool| {
        assert!(
            events.iter().any(f),
            "test_decoding output has no {what}: the workload did not produce it"
        );
    };
    let table_is = |t: &str, e: &Event| match e {
        Event::Insert { table, .. } | Event::Update { table, .. } | Event::Delete { table, .. } => {
            table == t
        }
        _ => false,
    };
    let unchanged = |fields: &[Field]| fields.iter().any(|f| f.value == "unchanged-toast-datum");
    has("insert", &|e| matches!(e, Event::Insert { .. }));
    has("update without old key", &|e| {
        matches!(e, Event::Update { old: None, .. })
    });
    for table in ["public.annotations", "public.credentials"] {
        has(&format!("key change on {table}"), &|e| {
            table_is(table, e) && matches!(e, Event::Update { old: Some(_), .. })
        });
    }
    for table in ["public.policy_log", "public.conformance_full"] {
        has(&format!("full-identity update on {table}"), &|e| {
            table_is(table, e) && matches!(e, Event::Update { old: Some(_), .. })
        });
        has(&format!("delete on {table}"), &|e| {
            table_is(table, e) && matches!(e, Event::Delete { .. })
        });
    }
    for table in ["public.secrets", "public.conformance_full"] {
        has(&format!("unchanged TOAST on {table}"), &|e| {
            table_is(table, e) && matches!(e, Event::Update { new, .. } if unchanged(new))
        });
    }
    has(
        "truncate with restart_seqs",
        &|e| matches!(e, Event::Truncate { tables, restart_seqs: true, .. } if tables.len() == 2),
    );
    has("truncate with cascade", &|e| {
        matches!(e, Event::Truncate { cascade: true, .. })
    });
    for transactional in [true, false] {
        has(
            &format!("message (transactional: {transactional})"),
            &|e| matches!(e, Event::Message { transactional: t, .. } if *t == transactional),
        );
    }
    let types: BTreeSet<&str> = events
        .iter()
        .flat_map(Event::fields)
        .map(|f| f.type_name.as_str())
        .collect();
    for ty in [
        "bytea",
        "cidr[]",
        "hstore",
        "policy_log_op",
        "policy_log_kind",
        "timestamp without time zone",
        "timestamp with time zone",
        "tsvector",
        "boolean",
        "integer",
        "smallint",
        "bigint",
        "double precision",
        "numeric",
        "bit varying",
        "character varying",
        "text[]",
    ] {
        assert!(types.contains(ty), "no column of type {ty} in {types:?}");
    }
    has("NULL value", &|e| e.fields().any(|f| f.value == "null"));
    let prepared = |e: &Event| {
        matches!(
            e,
            Event::Prepare { .. } | Event::CommitPrepared { .. } | Event::RollbackPrepared { .. }
        )
    };
    if two_phase {
        for gid in [GID_COMMITTED, GID_ROLLED_BACK] {
            has(
                &format!("PREPARE of {gid}"),
                &|e| matches!(e, Event::Prepare { gid: g, .. } if g == gid),
            );
        }
        has(
            "COMMIT PREPARED",
            &|e| matches!(e, Event::CommitPrepared { gid, .. } if gid == GID_COMMITTED),
        );
        has(
            "ROLLBACK PREPARED",
            &|e| matches!(e, Event::RollbackPrepared { gid, .. } if gid == GID_ROLLED_BACK),
        );
    } else {
        assert!(!events.iter().any(prepared), "two-phase events without 2PC");
    }
}

// ---------------------------------------------------------------------------------------
// The common form: what test_decoding prints

/// One line of `test_decoding` output (`include-xids`, `include-timestamp`,
/// `skip-empty-xacts`), with the row's LSN where it identifies a record.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Event {
    /// `BEGIN xid`
    Begin { xid: u32 },
    /// `COMMIT xid (at time)`; the row's LSN is the transaction's end LSN.
    Commit { xid: u32, end_lsn: Lsn, at: String },
    /// `PREPARE TRANSACTION 'gid', txid xid (at time)`; LSN = end of the prepare record.
    Prepare {
        gid: String,
        xid: u32,
        end_lsn: Lsn,
        at: String,
    },
    /// `COMMIT PREPARED 'gid', txid xid (at time)`
    CommitPrepared {
        gid: String,
        xid: u32,
        end_lsn: Lsn,
        at: String,
    },
    /// `ROLLBACK PREPARED 'gid', txid xid (at time)`
    RollbackPrepared {
        gid: String,
        xid: u32,
        end_lsn: Lsn,
        at: String,
    },
    /// `message: transactional: 1 prefix: p, sz: n content:…`; LSN of the message.
    Message {
        transactional: bool,
        prefix: String,
        content: String,
        lsn: Lsn,
    },
    /// `table s.t: INSERT: fields`
    Insert { table: String, new: Vec<Field> },
    /// `table s.t: UPDATE: [old-key: fields new-tuple:] fields`
    Update {
        table: String,
        old: Option<Vec<Field>>,
        new: Vec<Field>,
    },
    /// `table s.t: DELETE: fields` (the old key or old row, NULLs left out)
    Delete { table: String, old: Vec<Field> },
    /// `table s.a, s.b: TRUNCATE: [restart_seqs] [cascade] | (no-flags)`
    Truncate {
        tables: Vec<String>,
        restart_seqs: bool,
        cascade: bool,
    },
}

/// One column as `test_decoding` prints it: ` name[type]:value`, where `value` is
/// `null`, `unchanged-toast-datum` or the literal (see [`literal`]).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Field {
    name: String,
    type_name: String,
    value: String,
}

impl Event {
    /// Every column of the change (none for other events).
    fn fields(&self) -> impl Iterator<Item = &Field> {
        let (a, b): (&[Field], &[Field]) = match self {
            Event::Insert { new, .. } => (new, &[]),
            Event::Update { old, new, .. } => (old.as_deref().unwrap_or_default(), new),
            Event::Delete { old, .. } => (old, &[]),
            _ => (&[], &[]),
        };
        a.iter().chain(b)
    }

    /// Every column of the change, to fill in deferred binary values.
    fn fields_mut(&mut self) -> impl Iterator<Item = &mut Field> {
        let (a, b): (&mut [Field], &mut [Field]) = match self {
            Event::Insert { new, .. } => (new, &mut []),
            Event::Update { old, new, .. } => (old.as_deref_mut().unwrap_or_default(), new),
            Event::Delete { old, .. } => (old, &mut []),
            _ => (&mut [], &mut []),
        };
        a.iter_mut().chain(b)
    }

    /// The line plus the LSN the comparison also checks, for failure messages.
    fn describe(&self) -> String {
        let line = self.to_string();
        let line = match line.char_indices().nth(300) {
            Some((i, _)) => format!("{}…", &line[..i]),
            None => line,
        };
        match self {
            Event::Commit { end_lsn, .. }
            | Event::Prepare { end_lsn, .. }
            | Event::CommitPrepared { end_lsn, .. }
            | Event::RollbackPrepared { end_lsn, .. } => format!("{line}  @{end_lsn}"),
            Event::Message { lsn, .. } => format!("{line}  @{lsn}"),
            _ => line,
        }
    }
}

/// Renders exactly the line `test_decoding` prints (the parser's self-check relies
/// on it).
impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fields = |f: &mut fmt::Formatter<'_>, fields: &[Field]| -> fmt::Result {
            for field in fields {
                write!(
                    f,
                    " {}[{}]:{}",
                    quote_ident(&field.name),
                    field.type_name,
                    field.value
                )?;
            }
            Ok(())
        };
        match self {
            Event::Begin { xid } => write!(f, "BEGIN {xid}"),
            Event::Commit { xid, at, .. } => write!(f, "COMMIT {xid} (at {at})"),
            Event::Prepare { gid, xid, at, .. } => {
                write!(
                    f,
                    "PREPARE TRANSACTION {}, txid {xid} (at {at})",
                    quote_literal(gid)
                )
            }
            Event::CommitPrepared { gid, xid, at, .. } => {
                write!(
                    f,
                    "COMMIT PREPARED {}, txid {xid} (at {at})",
                    quote_literal(gid)
                )
            }
            Event::RollbackPrepared { gid, xid, at, .. } => {
                write!(
                    f,
                    "ROLLBACK PREPARED {}, txid {xid} (at {at})",
                    quote_literal(gid)
                )
            }
            Event::Message {
                transactional,
                prefix,
                content,
                ..
            } => write!(
                f,
                "message: transactional: {} prefix: {prefix}, sz: {} content:{content}",
                u8::from(*transactional),
                content.len()
            ),
            Event::Insert { table, new } => {
                write!(f, "table {table}: INSERT:")?;
                fields(f, new)
            }
            Event::Update { table, old, new } => {
                write!(f, "table {table}: UPDATE:")?;
                if let Some(old) = old {
                    f.write_str(" old-key:")?;
                    fields(f, old)?;
                    f.write_str(" new-tuple:")?;
                }
                fields(f, new)
            }
            Event::Delete { table, old } => {
                write!(f, "table {table}: DELETE:")?;
                fields(f, old)
            }
            Event::Truncate {
                tables,
                restart_seqs,
                cascade,
            } => {
                write!(f, "table {}: TRUNCATE:", tables.join(", "))?;
                if *restart_seqs {
                    f.write_str(" restart_seqs")?;
                }
                if *cascade {
                    f.write_str(" cascade")?;
                }
                if !restart_seqs && !cascade {
                    f.write_str(" (no-flags)")?;
                }
                Ok(())
            }
        }
    }
}

/// A column name as `quote_identifier` prints it, for the names this workload uses
/// (lower-case, digits, `_`; none of them a reserved keyword).
fn quote_ident(name: &str) -> String {
    let plain = name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// A value in text output format as `test_decoding`'s `print_literal` prints it:
/// numbers bare, bit strings as `B'…'`, booleans as `true`/`false`, everything else
/// quoted with `'` doubled.
fn literal(type_oid: u32, text: &str) -> String {
    match type_oid {
        INT2OID | INT4OID | INT8OID | OIDOID | FLOAT4OID | FLOAT8OID | NUMERICOID => {
            text.to_string()
        }
        BITOID | VARBITOID => format!("B'{text}'"),
        BOOLOID => if text == "t" { "true" } else { "false" }.to_string(),
        _ => quote_literal(text),
    }
}

/// Asserts that the decoded stream equals the oracle's, in order; on failure shows
/// the counts and the first difference with some context.
#[track_caller]
fn assert_same_events(label: &str, expected: &[Event], actual: &[Event]) {
    if expected == actual {
        return;
    }
    let at = expected
        .iter()
        .zip(actual)
        .position(|(e, a)| e != a)
        .unwrap_or(expected.len().min(actual.len()));
    let show = |events: &[Event]| {
        events
            .iter()
            .enumerate()
            .skip(at.saturating_sub(3))
            .take(7)
            .map(|(i, e)| format!("  {i:5} {}", e.describe()))
            .collect::<Vec<_>>()
            .join("\n")
    };
    panic!(
        "{label}: decoded pgoutput differs from test_decoding at event {at} \
         (test_decoding: {} events, pgoutput: {} events)\n\
         test_decoding:\n{}\npgoutput:\n{}",
        expected.len(),
        actual.len(),
        show(expected),
        show(actual),
    );
}

// ---------------------------------------------------------------------------------------
// test_decoding: read and parse

/// Reads a `test_decoding` slot (peek: it stays readable) and parses every row;
/// each parsed line must render back to exactly the printed line.
async fn test_decoding_events(client: &Client, slot: &str) -> Vec<Event> {
    let rows = client
        .query(
            "SELECT lsn::text, data FROM pg_logical_slot_peek_changes($1, NULL, NULL,
               'include-xids', '1', 'include-timestamp', '1', 'skip-empty-xacts', '1')",
            &[&slot],
        )
        .await
        .unwrap();
    assert!(!rows.is_empty(), "{slot}: test_decoding printed nothing");
    rows.iter()
        .map(|row| {
            let lsn: Lsn = row.get::<_, &str>(0).parse().unwrap();
            let line: &str = row.get(1);
            let event = parse_test_decoding(lsn, line)
                .unwrap_or_else(|e| panic!("{slot}: cannot parse {line:?}: {e}"));
            assert_eq!(event.to_string(), line, "{slot}: parser lost something");
            event
        })
        .collect()
}

/// Parses one `test_decoding` line; `lsn` is its row's LSN.
fn parse_test_decoding(lsn: Lsn, line: &str) -> Result<Event, String> {
    let xid = |s: &str| s.parse::<u32>().map_err(|e| format!("xid {s:?}: {e}"));
    if let Some(rest) = line.strip_prefix("BEGIN ") {
        return Ok(Event::Begin { xid: xid(rest)? });
    }
    if let Some(rest) = line.strip_prefix("COMMIT PREPARED ") {
        let (gid, x, at) = gid_txid_at(rest)?;
        return Ok(Event::CommitPrepared {
            gid,
            xid: xid(x)?,
            end_lsn: lsn,
            at,
        });
    }
    if let Some(rest) = line.strip_prefix("COMMIT ") {
        let (x, at) = rest.split_once(" (at ").ok_or("no commit time")?;
        let at = at.strip_suffix(')').ok_or("unclosed commit time")?;
        return Ok(Event::Commit {
            xid: xid(x)?,
            end_lsn: lsn,
            at: at.to_string(),
        });
    }
    if let Some(rest) = line.strip_prefix("PREPARE TRANSACTION ") {
        let (gid, x, at) = gid_txid_at(rest)?;
        return Ok(Event::Prepare {
            gid,
            xid: xid(x)?,
            end_lsn: lsn,
            at,
        });
    }
    if let Some(rest) = line.strip_prefix("ROLLBACK PREPARED ") {
        let (gid, x, at) = gid_txid_at(rest)?;
        return Ok(Event::RollbackPrepared {
            gid,
            xid: xid(x)?,
            end_lsn: lsn,
            at,
        });
    }
    if let Some(rest) = line.strip_prefix("message: transactional: ") {
        let (flag, rest) = rest.split_once(" prefix: ").ok_or("no prefix")?;
        let (prefix, rest) = rest.split_once(", sz: ").ok_or("no size")?;
        let (size, content) = rest.split_once(" content:").ok_or("no content")?;
        let size: usize = size.parse().map_err(|e| format!("size {size:?}: {e}"))?;
        if size != content.len() {
            return Err(format!("content of {} bytes, sz {size}", content.len()));
        }
        return Ok(Event::Message {
            transactional: flag == "1",
            prefix: prefix.to_string(),
            content: content.to_string(),
            lsn,
        });
    }
    let rest = line.strip_prefix("table ").ok_or("unknown line")?;
    let (tables, rest) = rest.split_once(": ").ok_or("no operation")?;
    let table = tables.to_string();
    if let Some(flags) = rest.strip_prefix("TRUNCATE: ") {
        let flags: Vec<&str> = flags.split(' ').collect();
        return Ok(Event::Truncate {
            tables: tables.split(", ").map(str::to_string).collect(),
            restart_seqs: flags.contains(&"restart_seqs"),
            cascade: flags.contains(&"cascade"),
        });
    }
    if let Some(rest) = rest.strip_prefix("INSERT:") {
        let (new, _) = parse_fields(rest, false)?;
        return Ok(Event::Insert { table, new });
    }
    if let Some(rest) = rest.strip_prefix("UPDATE:") {
        if let Some(rest) = rest.strip_prefix(" old-key:") {
            let (old, rest) = parse_fields(rest, true)?;
            let rest = rest.strip_prefix(" new-tuple:").ok_or("no new-tuple")?;
            let (new, _) = parse_fields(rest, false)?;
            return Ok(Event::Update {
                table,
                old: Some(old),
                new,
            });
        }
        let (new, _) = parse_fields(rest, false)?;
        return Ok(Event::Update {
            table,
            old: None,
            new,
        });
    }
    if let Some(rest) = rest.strip_prefix("DELETE:") {
        let (old, _) = parse_fields(rest, false)?;
        return Ok(Event::Delete { table, old });
    }
    Err("unknown operation".into())
}

/// Splits `'gid', txid N (at time)` into the unquoted GID, N and the time.
fn gid_txid_at(s: &str) -> Result<(String, &str, String), String> {
    let (gid, rest) = quoted(s, '\'')?;
    let rest = rest.strip_prefix(", txid ").ok_or("no txid")?;
    let (xid, at) = rest.split_once(" (at ").ok_or("no time")?;
    let at = at.strip_suffix(')').ok_or("unclosed time")?;
    Ok((gid, xid, at.to_string()))
}

/// Reads a `q`-quoted string (with `q` doubled inside) at the start of `s`; returns
/// the unquoted text and the rest.
fn quoted(s: &str, q: char) -> Result<(String, &str), String> {
    let body = s.strip_prefix(q).ok_or("no opening quote")?;
    let mut text = String::new();
    let mut chars = body.char_indices();
    while let Some((i, c)) = chars.next() {
        if c != q {
            text.push(c);
        } else if body[i + 1..].starts_with(q) {
            text.push(q);
            chars.next();
        } else {
            return Ok((text, &body[i + 1..]));
        }
    }
    Err("no closing quote".into())
}

/// Parses ` name[type]:value` columns up to the end of `s` or, when `old_key`, up to
/// ` new-tuple:`; returns them and the unparsed rest.
fn parse_fields(mut s: &str, old_key: bool) -> Result<(Vec<Field>, &str), String> {
    let mut fields = Vec::new();
    while !s.is_empty() {
        if old_key && s.starts_with(" new-tuple:") {
            break;
        }
        let rest = s.strip_prefix(' ').ok_or("no space before a column")?;
        let (name, rest) = if rest.starts_with('"') {
            quoted(rest, '"')?
        } else {
            let end = rest.find('[').ok_or("no column type")?;
            (rest[..end].to_string(), &rest[end..])
        };
        let rest = rest.strip_prefix('[').ok_or("no '[' after the name")?;
        let end = rest.find("]:").ok_or("no ']:' after the type")?;
        let type_name = rest[..end].to_string();
        let rest = &rest[end + 2..];
        let len = value_len(rest)?;
        fields.push(Field {
            name,
            type_name,
            value: rest[..len].to_string(),
        });
        s = &rest[len..];
    }
    Ok((fields, s))
}

/// Length of the printed value at the start of `s`: a quoted literal, a `B'…'` bit
/// string, or a bare word (number, `true`, `null`, `unchanged-toast-datum`).
fn value_len(s: &str) -> Result<usize, String> {
    if s.starts_with('\'') {
        let (_, rest) = quoted(s, '\'')?;
        Ok(s.len() - rest.len())
    } else if let Some(bits) = s.strip_prefix("B'") {
        let end = bits.find('\'').ok_or("unclosed bit string")?;
        Ok(2 + end + 1)
    } else {
        Ok(s.find(' ').unwrap_or(s.len()))
    }
}

// ---------------------------------------------------------------------------------------
// pgoutput: read, decode, assemble into the common form

/// How a pgoutput slot is read.
#[derive(Clone, Copy, Debug)]
struct Read {
    /// `proto_version`.
    proto: u8,
    /// `binary`: values in send format.
    binary: bool,
    /// `two_phase` (the slot must have been created with two-phase decoding).
    two_phase: bool,
}

impl Read {
    /// Streaming is on for every read with protocol ≥ 2 except the binary two-phase
    /// one (so two-phase is also read without streaming).
    fn streaming(self) -> bool {
        self.proto >= 2 && !(self.two_phase && self.binary)
    }

    /// The pgoutput options, as `VARIADIC text[]` of the peek function.
    fn options(self) -> Vec<String> {
        let mut options = vec![
            "proto_version".to_string(),
            self.proto.to_string(),
            "publication_names".to_string(),
            PUBLICATION.to_string(),
            "messages".to_string(),
            "true".to_string(),
        ];
        let flags = [
            ("binary", self.binary),
            ("streaming", self.streaming()),
            ("two_phase", self.two_phase),
        ];
        for (name, on) in flags {
            if on {
                options.extend([name.to_string(), "on".to_string()]);
            }
        }
        options
    }
}

impl fmt::Display for Read {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pgoutput v{} {}{}{}",
            self.proto,
            if self.binary { "binary" } else { "text" },
            if self.streaming() { ", streaming" } else { "" },
            if self.two_phase { ", two-phase" } else { "" },
        )
    }
}

/// What a pgoutput read contained besides the events.
#[derive(Debug, Default)]
struct Stats {
    /// Column values sent as `'t'`.
    text_values: usize,
    /// Column values sent as `'b'`.
    binary_values: usize,
    /// Stream Start … Stream Stop blocks.
    stream_blocks: usize,
    /// Stream Commit messages.
    stream_commits: usize,
    /// Stream Abort messages of a subtransaction.
    subxact_aborts: usize,
    /// Streamed changes those aborts dropped (found by their xid).
    dropped_by_subxact_abort: usize,
    /// Stream Abort messages of a whole transaction.
    xact_aborts: usize,
    /// Begin Prepare messages.
    begin_prepares: usize,
}

impl Stats {
    /// Binary reads must carry binary values only, text reads text only.
    #[track_caller]
    fn assert_format(&self, read: Read) {
        if read.binary {
            assert!(
                self.binary_values > 0 && self.text_values == 0,
                "{read}: {self:?}"
            );
        } else {
            assert!(
                self.text_values > 0 && self.binary_values == 0,
                "{read}: {self:?}"
            );
        }
    }
}

/// Peeks every pgoutput message of `slot` as `read` says, decodes each with one
/// decoder and assembles them into the form `test_decoding` prints.
async fn pgoutput_events(client: &Client, slot: &str, read: Read) -> (Vec<Event>, Stats) {
    let rows = client
        .query(
            "SELECT data FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL, VARIADIC $2::text[])",
            &[&slot, &read.options()],
        )
        .await
        .unwrap();
    let mut decoder = PgOutputDecoder::new();
    let mut assembler = Assembler::new(client, read);
    for (i, row) in rows.iter().enumerate() {
        let data: Vec<u8> = row.get(0);
        let message = decoder
            .decode(Bytes::from(data))
            .unwrap_or_else(|e| panic!("{read}: message {i} does not decode: {e}"));
        assembler.handle(message).await;
    }
    assembler.finish().await
}

/// An open Begin … Commit or Begin Prepare … Prepare block.
enum Open {
    Txn(Begin, Vec<Event>),
    Prepared(BeginPrepare, Vec<Event>),
}

/// Turns decoded pgoutput messages into [`Event`]s: follows transactions, reassembles
/// streamed ones per xid (dropping aborted subtransactions by the changes' xids),
/// checks what pgoutput repeats (Begin vs Commit, Begin Prepare vs Prepare) and every
/// Relation and Type message against the catalog.
struct Assembler<'a> {
    read: Read,
    oracle: Catalog<'a>,
    relations: RelationCache,
    open: Option<Open>,
    /// Streamed transactions by top-level xid: (change xid, event).
    streams: HashMap<u32, Vec<(u32, Event)>>,
    stream: Option<u32>,
    /// Prepared transactions by GID: prepare end LSN and prepare time.
    prepared: HashMap<String, (Lsn, PgTimestamp)>,
    events: Vec<Event>,
    stats: Stats,
}

impl<'a> Assembler<'a> {
    fn new(client: &'a Client, read: Read) -> Self {
        Assembler {
            read,
            oracle: Catalog::new(client),
            relations: RelationCache::new(),
            open: None,
            streams: HashMap::new(),
            stream: None,
            prepared: HashMap::new(),
            events: Vec::new(),
            stats: Stats::default(),
        }
    }

    async fn handle(&mut self, message: LogicalMessage) {
        let read = self.read;
        match message {
            LogicalMessage::Begin(begin) => {
                assert!(
                    self.open.is_none() && self.stream.is_none(),
                    "{read}: {begin:?}"
                );
                self.open = Some(Open::Txn(begin, Vec::new()));
            }
            LogicalMessage::Commit(commit) => {
                let Some(Open::Txn(begin, items)) = self.open.take() else {
                    panic!("{read}: Commit outside a transaction");
                };
                assert_eq!(commit.flags, 0, "{read}: {commit:?}");
                assert_eq!(
                    commit.commit_lsn, begin.final_lsn,
                    "{read}: {begin:?} {commit:?}"
                );
                assert_eq!(commit.commit_time, begin.commit_time, "{read}: {commit:?}");
                assert!(commit.commit_lsn < commit.end_lsn, "{read}: {commit:?}");
                let at = self.oracle.time(commit.commit_time).await;
                let end = Event::Commit {
                    xid: begin.xid,
                    end_lsn: commit.end_lsn,
                    at,
                };
                self.close(begin.xid, items, end);
            }
            LogicalMessage::Relation(relation) => {
                self.check_xid(relation.xid, "Relation");
                self.oracle.check_relation(&relation).await;
                self.relations.insert(relation);
            }
            LogicalMessage::Type(ty) => {
                self.check_xid(ty.xid, "Type");
                self.oracle.check_type(&ty).await;
            }
            LogicalMessage::Insert(insert) => {
                let rel = self.relation(insert.rel_id);
                let new = self.tuple(&rel, &insert.new, false).await;
                let table = rel.qualified_name();
                self.push(insert.xid, Event::Insert { table, new });
            }
            LogicalMessage::Update(update) => {
                let rel = self.relation(update.rel_id);
                let old = match &update.old {
                    Some(old) => Some(self.old_tuple(&rel, old).await),
                    None => None,
                };
                let new = self.tuple(&rel, &update.new, false).await;
                let table = rel.qualified_name();
                self.push(update.xid, Event::Update { table, old, new });
            }
            LogicalMessage::Delete(delete) => {
                let rel = self.relation(delete.rel_id);
                let old = self.old_tuple(&rel, &delete.old).await;
                let table = rel.qualified_name();
                self.push(delete.xid, Event::Delete { table, old });
            }
            LogicalMessage::Truncate(truncate) => {
                let tables = truncate
                    .rel_ids
                    .iter()
                    .map(|&id| self.relation(id).qualified_name())
                    .collect();
                let event = Event::Truncate {
                    tables,
                    restart_seqs: truncate.options.restart_identity,
                    cascade: truncate.options.cascade,
                };
                self.push(truncate.xid, event);
            }
            LogicalMessage::Message(message) => {
                let event = Event::Message {
                    transactional: message.is_transactional(),
                    prefix: message.prefix.to_string(),
                    content: String::from_utf8(message.content.to_vec()).unwrap(),
                    lsn: message.message_lsn,
                };
                if message.is_transactional() {
                    self.push(message.xid, event);
                } else {
                    assert!(self.open.is_none() && self.stream.is_none(), "{read}");
                    assert_eq!(message.xid, None, "{read}: {message:?}");
                    self.events.push(event);
                }
            }
            LogicalMessage::StreamStart(start) => {
                assert!(
                    self.open.is_none(),
                    "{read}: {start:?} inside a transaction"
                );
                self.stats.stream_blocks += 1;
                let known = self.streams.contains_key(&start.xid);
                assert_eq!(start.first_segment, !known, "{read}: {start:?}");
                self.streams.entry(start.xid).or_default();
                self.stream = Some(start.xid);
            }
            LogicalMessage::StreamStop => {
                assert!(self.stream.take().is_some(), "{read}: Stream Stop");
            }
            LogicalMessage::StreamCommit(commit) => {
                assert!(self.stream.is_none(), "{read}: {commit:?} inside a stream");
                let Some(items) = self.streams.remove(&commit.xid) else {
                    panic!("{read}: {commit:?} of an unknown transaction");
                };
                assert_eq!(commit.flags, 0, "{read}: {commit:?}");
                assert!(commit.commit_lsn < commit.end_lsn, "{read}: {commit:?}");
                self.stats.stream_commits += 1;
                let at = self.oracle.time(commit.commit_time).await;
                let end = Event::Commit {
                    xid: commit.xid,
                    end_lsn: commit.end_lsn,
                    at,
                };
                let items = items.into_iter().map(|(_, event)| event).collect();
                self.close(commit.xid, items, end);
            }
            LogicalMessage::StreamAbort(abort) => {
                assert!(self.stream.is_none(), "{read}: {abort:?} inside a stream");
                assert_eq!(abort.abort_lsn, None, "{read}: {abort:?}");
                let Some(items) = self.streams.get_mut(&abort.xid) else {
                    panic!("{read}: {abort:?} of an unknown transaction");
                };
                if abort.is_subtransaction() {
                    let before = items.len();
                    items.retain(|(xid, _)| *xid != abort.subxid);
                    self.stats.subxact_aborts += 1;
                    self.stats.dropped_by_subxact_abort += before - items.len();
                } else {
                    self.streams.remove(&abort.xid);
                    self.stats.xact_aborts += 1;
                }
            }
            LogicalMessage::BeginPrepare(begin) => {
                assert!(
                    self.open.is_none() && self.stream.is_none(),
                    "{read}: {begin:?}"
                );
                self.stats.begin_prepares += 1;
                self.open = Some(Open::Prepared(begin, Vec::new()));
            }
            LogicalMessage::Prepare(prepare) => {
                let Some(Open::Prepared(begin, items)) = self.open.take() else {
                    panic!("{read}: Prepare outside Begin Prepare");
                };
                assert_eq!(prepare.flags, 0, "{read}: {prepare:?}");
                assert_eq!(
                    (
                        &begin.gid,
                        begin.xid,
                        begin.prepare_lsn,
                        begin.end_lsn,
                        begin.prepare_time
                    ),
                    (
                        &prepare.gid,
                        prepare.xid,
                        prepare.prepare_lsn,
                        prepare.end_lsn,
                        prepare.prepare_time
                    ),
                    "{read}: Begin Prepare and Prepare disagree"
                );
                assert!(prepare.prepare_lsn < prepare.end_lsn, "{read}: {prepare:?}");
                let gid = prepare.gid.to_string();
                self.prepared
                    .insert(gid.clone(), (prepare.end_lsn, prepare.prepare_time));
                let at = self.oracle.time(prepare.prepare_time).await;
                let end = Event::Prepare {
                    gid,
                    xid: prepare.xid,
                    end_lsn: prepare.end_lsn,
                    at,
                };
                self.close(prepare.xid, items, end);
            }
            LogicalMessage::CommitPrepared(commit) => {
                assert!(
                    self.open.is_none() && self.stream.is_none(),
                    "{read}: {commit:?}"
                );
                assert_eq!(commit.flags, 0, "{read}: {commit:?}");
                assert!(commit.commit_lsn < commit.end_lsn, "{read}: {commit:?}");
                let at = self.oracle.time(commit.commit_time).await;
                self.events.push(Event::CommitPrepared {
                    gid: commit.gid.to_string(),
                    xid: commit.xid,
                    end_lsn: commit.end_lsn,
                    at,
                });
            }
            LogicalMessage::RollbackPrepared(rollback) => {
                assert!(self.open.is_none() && self.stream.is_none(), "{read}");
                assert_eq!(rollback.flags, 0, "{read}: {rollback:?}");
                let gid = rollback.gid.to_string();
                assert_eq!(
                    self.prepared.get(&gid),
                    Some(&(rollback.prepare_end_lsn, rollback.prepare_time)),
                    "{read}: {rollback:?} does not match its Prepare"
                );
                let at = self.oracle.time(rollback.rollback_time).await;
                self.events.push(Event::RollbackPrepared {
                    gid,
                    xid: rollback.xid,
                    end_lsn: rollback.rollback_end_lsn,
                    at,
                });
            }
            other @ (LogicalMessage::Origin(_) | LogicalMessage::StreamPrepare(_)) => {
                panic!("{read}: the workload cannot produce {other:?}");
            }
        }
    }

    /// Checks that everything was closed (no open transaction, stream block or
    /// streamed transaction is left) and fills in the binary values.
    async fn finish(mut self) -> (Vec<Event>, Stats) {
        let read = self.read;
        assert!(self.open.is_none(), "{read}: transaction left open");
        assert!(self.stream.is_none(), "{read}: stream block left open");
        assert!(
            self.streams.is_empty(),
            "{read}: streamed transaction left open"
        );
        self.oracle.resolve_binary(&mut self.events).await;
        (self.events, self.stats)
    }

    /// A change's xid must be present exactly inside stream blocks.
    fn check_xid(&self, xid: Option<u32>, what: &str) {
        assert_eq!(
            xid.is_some(),
            self.stream.is_some(),
            "{}: {what} xid {xid:?}, in stream {:?}",
            self.read,
            self.stream
        );
    }

    /// The cached Relation a change refers to (it must have been sent before).
    fn relation(&self, rel_id: u32) -> Relation {
        self.relations
            .get(rel_id)
            .cloned()
            .unwrap_or_else(|| panic!("{}: change of unknown relation {rel_id}", self.read))
    }

    /// Adds a change or transactional message to the open transaction or stream.
    fn push(&mut self, xid: Option<u32>, event: Event) {
        self.check_xid(xid, "change");
        match (self.stream, &mut self.open, xid) {
            (Some(top), None, Some(xid)) => self
                .streams
                .get_mut(&top)
                .expect("stream started")
                .push((xid, event)),
            (None, Some(Open::Txn(_, items) | Open::Prepared(_, items)), None) => items.push(event),
            _ => panic!("{}: change outside a transaction: {event}", self.read),
        }
    }

    /// Emits a finished transaction as `test_decoding` prints it with
    /// `skip-empty-xacts`: its BEGIN is deferred to the first row change, so
    /// transactional messages before it come first, and a transaction without row
    /// changes has neither BEGIN nor end line (its messages only).
    fn close(&mut self, xid: u32, items: Vec<Event>, end: Event) {
        let first_change = items
            .iter()
            .position(|e| !matches!(e, Event::Message { .. }));
        match first_change {
            None => self.events.extend(items),
            Some(first) => {
                let mut items = items;
                let changes = items.split_off(first);
                self.events.extend(items);
                self.events.push(Event::Begin { xid });
                self.events.extend(changes);
                self.events.push(end);
            }
        }
    }

    /// An old key (`K`: only the identity columns may be filled, and all of them
    /// are) or old row (`O`: the table must have REPLICA IDENTITY FULL), NULLs left
    /// out as `test_decoding` does.
    async fn old_tuple(&mut self, rel: &Relation, old: &OldTuple) -> Vec<Field> {
        match old {
            OldTuple::Key(tuple) => {
                let filled: Vec<usize> = tuple
                    .columns()
                    .enumerate()
                    .filter(|(_, c)| !c.is_null())
                    .map(|(i, _)| i)
                    .collect();
                let keys: Vec<usize> = rel.key_indexes().collect();
                assert_eq!(filled, keys, "{}: old key of {}", self.read, rel.name);
            }
            OldTuple::Full(_) => assert_eq!(
                rel.replica_identity,
                ReplicaIdentity::Full,
                "{}: old row of {}",
                self.read,
                rel.name
            ),
        }
        self.tuple(rel, old.tuple(), true).await
    }

    /// A tuple as `test_decoding` prints it; binary values are left as placeholders
    /// for [`Catalog::resolve_binary`].
    async fn tuple(&mut self, rel: &Relation, tuple: &TupleData, skip_nulls: bool) -> Vec<Field> {
        assert_eq!(
            tuple.len(),
            rel.columns.len(),
            "{}: tuple of {}",
            self.read,
            rel.name
        );
        let mut fields = Vec::with_capacity(tuple.len());
        for (column, RelationColumn { name, type_oid, .. }) in tuple.columns().zip(&rel.columns) {
            let value = match column {
                Column::Null if skip_nulls => continue,
                Column::Null => "null".to_string(),
                Column::UnchangedToast => "unchanged-toast-datum".to_string(),
                Column::Text(text) => {
                    self.stats.text_values += 1;
                    literal(*type_oid, std::str::from_utf8(text).unwrap())
                }
                Column::Binary(bytes) => {
                    self.stats.binary_values += 1;
                    self.oracle.defer_binary(*type_oid, bytes)
                }
            };
            fields.push(Field {
                name: name.clone(),
                type_name: self.oracle.type_name(*type_oid).await,
                value,
            });
        }
        fields
    }
}

/// The server as oracle for what the stream only names by OID or sends in binary,
/// with caches (one query per distinct question).
struct Catalog<'a> {
    client: &'a Client,
    type_names: HashMap<u32, String>,
    relations: HashMap<u32, Relation>,
    times: HashMap<PgTimestamp, String>,
    /// Distinct binary values (type OID, send format) behind the placeholders.
    deferred: Vec<(u32, Vec<u8>)>,
    deferred_index: HashMap<(u32, Vec<u8>), usize>,
}

/// Starts the placeholder of a deferred binary value (NUL: no text value has one).
const DEFERRED: char = '\0';

/// A parameter passed in binary format as is, whatever its declared type: the
/// server's receive function for that type reads the bytes pgoutput sent.
#[derive(Debug)]
struct RawBinary<'a>(&'a [u8]);

impl ToSql for RawBinary<'_> {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        out.extend_from_slice(self.0);
        Ok(IsNull::No)
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// The text output of binary values of type `oid` (named `ty`), in order: one
/// query with the values as a binary array, or (for array types, which cannot nest)
/// one query per value.
async fn output_texts(client: &Client, ty: &str, oid: u32, values: &[&[u8]]) -> Vec<String> {
    if ty.ends_with("[]") {
        let one = client
            .prepare(&format!("SELECT format('%s', $1::{ty})"))
            .await
            .unwrap();
        let mut texts = Vec::with_capacity(values.len());
        for value in values {
            let row = client.query_one(&one, &[&RawBinary(value)]).await;
            texts.push(
                row.unwrap_or_else(|e| panic!("{ty} value rejected: {e}"))
                    .get(0),
            );
        }
        return texts;
    }
    let array = binary_array(oid, values);
    client
        .query(
            &format!(
                "SELECT format('%s', v) FROM unnest($1::{ty}[]) WITH ORDINALITY AS u(v, i)
                 ORDER BY i"
            ),
            &[&RawBinary(&array)],
        )
        .await
        .unwrap_or_else(|e| panic!("{ty} values rejected: {e}"))
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// `values` (send format of type `oid`) as a one-dimensional array in binary
/// (`array_send`) format: dimensions, no NULL bitmap, then length-prefixed elements.
fn binary_array(oid: u32, values: &[&[u8]]) -> Vec<u8> {
    let len = |n: usize| i32::try_from(n).unwrap().to_be_bytes();
    let mut out = Vec::new();
    out.extend(1i32.to_be_bytes()); // dimensions
    out.extend(0i32.to_be_bytes()); // has NULLs
    out.extend(oid.to_be_bytes());
    out.extend(len(values.len()));
    out.extend(1i32.to_be_bytes()); // lower bound
    for value in values {
        out.extend(len(value.len()));
        out.extend_from_slice(value);
    }
    out
}

impl<'a> Catalog<'a> {
    fn new(client: &'a Client) -> Self {
        Catalog {
            client,
            type_names: HashMap::new(),
            relations: HashMap::new(),
            times: HashMap::new(),
            deferred: Vec::new(),
            deferred_index: HashMap::new(),
        }
    }

    /// `format_type(oid, NULL)`: the type name `test_decoding` prints.
    async fn type_name(&mut self, oid: u32) -> String {
        if let Some(name) = self.type_names.get(&oid) {
            return name.clone();
        }
        let name: String = self
            .client
            .query_one("SELECT format_type($1, NULL)", &[&oid])
            .await
            .unwrap()
            .get(0);
        self.type_names.insert(oid, name.clone());
        name
    }

    /// A placeholder for a binary value of type `oid`, printed later in one batch
    /// per type by [`Catalog::resolve_binary`] (one query per value is too slow).
    fn defer_binary(&mut self, oid: u32, bytes: &[u8]) -> String {
        let next = self.deferred.len();
        let key = (oid, bytes.to_vec());
        let index = *self.deferred_index.entry(key.clone()).or_insert(next);
        if index == next {
            self.deferred.push(key);
        }
        format!("{DEFERRED}{index}")
    }

    /// Replaces every binary placeholder in `events` by the value as
    /// `test_decoding` prints it: the server reads the bytes with the type's receive
    /// function and prints them with its output function (`format('%s', …)` calls
    /// the output function, unlike a cast to text, which differs for bool or inet).
    async fn resolve_binary(&mut self, events: &mut [Event]) {
        let placeholder = |value: &str| -> Option<usize> {
            value.strip_prefix(DEFERRED).map(|i| i.parse().unwrap())
        };
        let mut by_type: HashMap<u32, Vec<usize>> = HashMap::new();
        let used: BTreeSet<usize> = events
            .iter()
            .flat_map(Event::fields)
            .filter_map(|f| placeholder(&f.value))
            .collect();
        for index in used {
            by_type
                .entry(self.deferred[index].0)
                .or_default()
                .push(index);
        }
        let mut printed = HashMap::new();
        for (oid, indexes) in by_type {
            let ty = self.type_name(oid).await;
            let values: Vec<&[u8]> = indexes
                .iter()
                .map(|&i| self.deferred[i].1.as_slice())
                .collect();
            let texts = output_texts(self.client, &ty, oid, &values).await;
            assert_eq!(texts.len(), values.len(), "type {oid}");
            for (index, text) in indexes.into_iter().zip(texts) {
                printed.insert(index, literal(oid, &text));
            }
        }
        for field in events.iter_mut().flat_map(Event::fields_mut) {
            if let Some(index) = placeholder(&field.value) {
                field.value = printed[&index].clone();
            }
        }
    }

    /// A pgoutput timestamp as `test_decoding` prints it (timestamptz output in this
    /// session's time zone, the one `test_decoding` used).
    async fn time(&mut self, at: PgTimestamp) -> String {
        if let Some(text) = self.times.get(&at) {
            return text.clone();
        }
        let text: String = self
            .client
            .query_one(
                "SELECT (timestamptz '2000-01-01 00:00:00+00' + $1::int8 * interval '1 microsecond')::text",
                &[&at.0],
            )
            .await
            .unwrap()
            .get(0);
        self.times.insert(at, text.clone());
        text
    }

    /// Asserts that a Relation message says what the catalog says: schema, name,
    /// replica identity, and per column name, type OID, typmod and key flag (every
    /// column for FULL, else the primary key or replica identity index).
    async fn check_relation(&mut self, relation: &Relation) {
        if !self.relations.contains_key(&relation.oid) {
            let expected = self.catalog_relation(relation.oid).await;
            self.relations.insert(relation.oid, expected);
        }
        let expected = Relation {
            xid: relation.xid,
            ..self.relations[&relation.oid].clone()
        };
        assert_eq!(relation, &expected, "Relation message vs catalog");
    }

    async fn catalog_relation(&self, oid: u32) -> Relation {
        let row = self
            .client
            .query_one(
                "SELECT n.nspname::text, c.relname::text, c.relreplident::text
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1",
                &[&oid],
            )
            .await
            .unwrap();
        let identity: &str = row.get(2);
        let columns = self
            .client
            .query(
                "SELECT a.attname::text, a.atttypid, a.atttypmod,
                        c.relreplident = 'f' OR EXISTS (
                          SELECT 1 FROM pg_index i
                          WHERE i.indrelid = c.oid AND a.attnum = ANY (i.indkey)
                            AND CASE c.relreplident WHEN 'd' THEN i.indisprimary
                                                    WHEN 'i' THEN i.indisreplident
                                                    ELSE false END)
                 FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
                 WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped
                   AND a.attgenerated = ''
                 ORDER BY a.attnum",
                &[&oid],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| RelationColumn {
                name: r.get(0),
                type_oid: r.get(1),
                type_modifier: r.get(2),
                is_key: r.get(3),
            })
            .collect();
        Relation {
            xid: None,
            oid,
            namespace: row.get(0),
            name: row.get(1),
            replica_identity: ReplicaIdentity::from_byte(identity.as_bytes()[0]).unwrap(),
            columns,
        }
    }

    /// Asserts that a Type message names the type the catalog has under its OID.
    async fn check_type(&mut self, ty: &TypeMessage) {
        let row = self
            .client
            .query_one(
                "SELECT n.nspname::text, t.typname::text
                 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE t.oid = $1",
                &[&ty.oid],
            )
            .await
            .unwrap();
        let expected: (String, String) = (row.get(0), row.get(1));
        assert_eq!(
            (ty.namespace.clone(), ty.name.clone()),
            expected,
            "Type message {ty:?} vs catalog"
        );
    }
}
