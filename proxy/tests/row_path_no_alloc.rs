//! The per-row path from the socket to the follower's parameters allocates
//! nothing: a frame is parsed, its pgoutput message decoded and assembled
//! into a [`TxnEvent`], the filter decides the row's replica sets (one hash
//! lookup), and a row that passes is encoded as parameters of the pending
//! multi-row INSERT — zero heap allocations per row, counted by a global
//! allocator on this thread (as `protocol/tests/no_alloc.rs` does for the
//! decoder alone).
//!
//! What is left is per statement (up to 256 rows): the batch's parameter
//! vector, the pipeline's boxed future and tokio-postgres's message buffer;
//! and per batch of events (up to 256): the vector the reader hands to a sink.

use bytes::{Bytes, BytesMut};
use pgsieve::filter::FilterStage;
use pgsieve::sink::value::{WireValue, encode_row};
use pgsieve::txn::assemble::Assembled;
use pgsieve::txn::{Assembler, RowOp, TxnEvent};
use pgsieve_filters::{Change, Model, ReplicaSetSpec, Rule};
use pgsieve_protocol::pgoutput::{RelationColumn, ReplicaIdentity};
use pgsieve_protocol::{
    Begin, Commit, Insert, LogicalMessage, Lsn, PgTimestamp, Relation, ReplicationMessage,
    TupleBuilder,
};

#[path = "../../protocol/tests/support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::allocations_during;

const SECRETS_OID: u32 = 16_400;
const VARIABLES: u32 = 100;
const GROUP: &str = "system:group:conjur/replication-sets/east/replicated-data";

fn variable(i: u32) -> String {
    format!("acme:variable:app/v{i}")
}

/// A model in which the even variables are in set 0 (`execute` granted to a
/// layer the set's data group is a member of) and the odd ones are not.
fn model() -> Model {
    let mut m = Model::new(vec![ReplicaSetSpec {
        name: "east".into(),
        data_group: GROUP.into(),
        rule: Rule::Execute,
        always: vec![],
    }])
    .expect("one set");
    m.begin();
    m.feed(Change::MembershipUpsert {
        role_id: "acme:layer:app",
        member_id: GROUP,
        ownership: false,
    })
    .expect("membership");
    for i in 0..VARIABLES {
        let id = variable(i);
        m.feed(Change::ResourceUpsert {
            resource_id: &id,
            owner_id: "acme:policy:app",
        })
        .expect("resource");
        if i % 2 == 0 {
            m.feed(Change::PermissionUpsert {
                resource_id: &id,
                role_id: "acme:layer:app",
                privilege: "execute",
            })
            .expect("permission");
        }
    }
    m.end();
    m
}

fn secrets_relation() -> LogicalMessage {
    let column = |name: &str, type_oid, is_key| RelationColumn {
        is_key,
        name: name.into(),
        type_oid,
        type_modifier: -1,
    };
    LogicalMessage::Relation(Relation {
        xid: None,
        oid: SECRETS_OID,
        namespace: "public".into(),
        name: "secrets".into(),
        replica_identity: ReplicaIdentity::Default,
        columns: vec![
            column("resource_id", 25, true),
            column("version", 23, true),
            column("value", 17, false),
        ],
    })
}

/// `n` single-row secrets transactions (W1's shape) after one Relation, as
/// CopyData payloads cut from a single read buffer, as the source does.
fn frames(n: u32) -> Vec<Bytes> {
    let mut messages = vec![secrets_relation()];
    for i in 0..n {
        let lsn = Lsn(0x100_0000 + u64::from(i) * 200);
        messages.push(LogicalMessage::Begin(Begin {
            final_lsn: lsn,
            commit_time: PgTimestamp(i64::from(i)),
            xid: 1000 + i,
        }));
        messages.push(LogicalMessage::Insert(Insert {
            xid: None,
            rel_id: SECRETS_OID,
            new: TupleBuilder::new()
                .text(variable(i % VARIABLES))
                .int(i64::from(i))
                .text("\\x0102030405060708")
                .finish(),
        }));
        messages.push(LogicalMessage::Commit(Commit {
            flags: 0,
            commit_lsn: lsn,
            end_lsn: lsn.advanced_by(48),
            commit_time: PgTimestamp(i64::from(i)),
        }));
    }
    let mut wire = BytesMut::new();
    let mut lengths = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let lsn = Lsn(0x100_0000 + i as u64 * 64);
        let frame = m.to_xlog_data(lsn, lsn, PgTimestamp(3));
        lengths.push(frame.len());
        wire.extend_from_slice(&frame);
    }
    lengths
        .into_iter()
        .map(|len| wire.split_to(len).freeze())
        .collect()
}

/// Parameters of one 256-row INSERT of the three columns.
const STATEMENT_VALUES: usize = 256 * 3;

#[test]
fn decode_decide_encode_allocates_nothing_per_row() {
    let transactions = 4_000;
    let frames = frames(transactions);
    let mut assembler = Assembler::new(std::env::temp_dir());
    let mut filter = FilterStage::new(model(), Lsn::ZERO);
    let mut params: Vec<WireValue> = Vec::with_capacity(STATEMENT_VALUES);
    let (mut rows_in, mut rows_out, mut statements) = (0usize, 0usize, 0usize);
    let mut run = |frames: &[Bytes], count: bool| {
        for frame in frames {
            let Ok(ReplicationMessage::XLogData(x)) = ReplicationMessage::parse(frame.clone())
            else {
                panic!("an XLogData frame");
            };
            let Ok(Assembled::Event(mut event)) = assembler.handle(x.wal_start, x.data) else {
                panic!("one event per message");
            };
            filter.process(&mut event).expect("decided");
            if let TxnEvent::Change(change) = &event {
                if let (true, RowOp::Insert(insert)) = (change.mask.contains(0), &change.op) {
                    encode_row(&insert.new, &mut params);
                    if count {
                        rows_in += 1;
                    }
                    if params.len() >= STATEMENT_VALUES {
                        // The statement goes out with these parameters.
                        params.clear();
                        statements += 1;
                    }
                } else if count {
                    rows_out += 1;
                }
            }
        }
    };
    // The Relation message and a first transaction build the caches.
    let (warm, measured) = frames.split_at(4);
    run(warm, false);
    let allocations = allocations_during(|| run(measured, true));
    assert_eq!(rows_in + rows_out, transactions as usize - 1);
    assert!(
        rows_in > 1_000 && rows_out > 1_000,
        "{rows_in} in, {rows_out} out"
    );
    assert!(statements > 5);
    assert_eq!(
        allocations,
        0,
        "the row path allocated ({} rows)",
        rows_in + rows_out
    );
}
