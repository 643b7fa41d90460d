//! The hot path allocates nothing: decoding XLogData frames of Inserts,
//! Updates, Deletes, Begins and Commits and iterating every column makes
//! zero heap allocations (counted by a global allocator on this thread).
//!
//! Frames are cut out of one read buffer with `BytesMut::split_to`, as the
//! replication source does, so every payload already shares one allocation.

use bytes::{Bytes, BytesMut};
use pgsieve_protocol::pgoutput::walk;
use pgsieve_protocol::{
    Begin, Column, Commit, Delete, Insert, LogicalMessage, Lsn, OldTuple, PgOutputDecoder,
    PgTimestamp, ReplicationMessage, TupleBuilder, Update,
};

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::allocations_during;

/// `n` transactions of one secrets insert, one update and one delete, as
/// CopyData payloads cut from a single buffer.
fn frames(n: u32) -> Vec<Bytes> {
    let mut messages = Vec::new();
    for i in 0..n {
        let id = format!("acct:variable:prod/app-{}/db-password", i % 97);
        let row = TupleBuilder::new()
            .text(&id)
            .int(i64::from(i))
            .text(format!("\\x{}", "ab".repeat(30)))
            .null()
            .finish();
        let key = TupleBuilder::new()
            .text(&id)
            .int(i64::from(i))
            .null()
            .null()
            .finish();
        let lsn = Lsn(u64::from(i) * 1000);
        messages.push(LogicalMessage::Begin(Begin {
            final_lsn: lsn,
            commit_time: PgTimestamp(i64::from(i)),
            xid: i,
        }));
        messages.push(LogicalMessage::Insert(Insert {
            xid: None,
            rel_id: 16_400,
            new: row.clone(),
        }));
        messages.push(LogicalMessage::Update(Update {
            xid: None,
            rel_id: 16_400,
            old: Some(OldTuple::Key(key.clone())),
            new: row,
        }));
        messages.push(LogicalMessage::Delete(Delete {
            xid: None,
            rel_id: 16_400,
            old: OldTuple::Key(key),
        }));
        messages.push(LogicalMessage::Commit(Commit {
            flags: 0,
            commit_lsn: lsn,
            end_lsn: lsn.advanced_by(40),
            commit_time: PgTimestamp(i64::from(i)),
        }));
    }
    let mut wire = BytesMut::new();
    let mut lengths = Vec::new();
    for m in &messages {
        let frame = m.to_xlog_data(Lsn(1), Lsn(2), PgTimestamp(3));
        lengths.push(frame.len());
        wire.extend_from_slice(&frame);
    }
    lengths
        .into_iter()
        .map(|len| wire.split_to(len).freeze())
        .collect()
}

#[test]
fn decoding_and_walking_changes_allocates_nothing() {
    let frames = frames(2_000);
    let mut decoder = PgOutputDecoder::new();
    let mut columns = 0usize;
    let mut text_bytes = 0usize;
    let mut inserts = 0usize;
    let allocations = allocations_during(|| {
        for frame in &frames {
            let Ok(ReplicationMessage::XLogData(x)) = ReplicationMessage::parse(frame.clone())
            else {
                continue;
            };
            // Decode and look at columns the way the filter stage does.
            let message = decoder.decode(x.data.clone());
            if let Ok(LogicalMessage::Insert(insert)) = &message {
                inserts += 1;
                for column in insert.new.columns() {
                    if let Column::Text(t) = column {
                        text_bytes += t.len();
                    }
                }
            }
            if let Ok(summary) = walk(&mut decoder, x.data) {
                columns += summary.columns;
            }
        }
    });
    assert_eq!(inserts, 2_000);
    // Insert 4 + Update 4 old + 4 new + Delete 4 columns per transaction.
    assert_eq!(columns, 2_000 * 16);
    assert!(text_bytes > 2_000 * 60);
    assert_eq!(allocations, 0, "the hot path allocated");
}
