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

mod catalog;
mod event;
mod leader;
mod pgoutput;
mod test_decoding;

use catalog::*;
use event::*;
use leader::*;
use pgoutput::*;
use test_decoding::*;

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
