//! Writes seed corpora for both fuzz targets using the crate's encoder:
//! one file per message kind (and context), so libFuzzer starts from valid
//! frames. Usage: `cargo run --bin make_seeds` from protocol/fuzz.

use std::fs;
use std::path::Path;

use bytes::{Bytes, BytesMut};
use pgsieve_protocol::pgoutput::{
    BeginPrepare, CommitPrepared, Message, Origin, PgString, Prepare, RollbackPrepared,
    StreamPrepare, TruncateOptions, Type,
};
use pgsieve_protocol::{
    Begin, Commit, Delete, Insert, LogicalMessage, Lsn, OldTuple, PgTimestamp, PrimaryKeepalive,
    Relation, RelationColumn, ReplicaIdentity, StandbyStatusUpdate, StreamAbort, StreamCommit,
    StreamStart, Truncate, TupleBuilder, Update,
};

fn messages(xid: Option<u32>, parallel: bool) -> Vec<LogicalMessage> {
    let row = TupleBuilder::new()
        .text("acct:variable:prod/app-17/db-password")
        .int(3)
        .text("\\x6162")
        .null()
        .unchanged_toast()
        .binary([0u8, 1, 2, 3])
        .finish();
    let key = TupleBuilder::new()
        .text("acct:variable:x")
        .int(1)
        .null()
        .finish();
    let t = PgTimestamp(785_000_000_000_000);
    let gid = PgString::from_static("gid-1");
    vec![
        LogicalMessage::Begin(Begin {
            final_lsn: Lsn(0x1_0000_0100),
            commit_time: t,
            xid: 7,
        }),
        LogicalMessage::Commit(Commit {
            flags: 0,
            commit_lsn: Lsn(1),
            end_lsn: Lsn(2),
            commit_time: t,
        }),
        LogicalMessage::Origin(Origin {
            origin_lsn: Lsn(5),
            name: PgString::from_static("pg_16389"),
        }),
        LogicalMessage::Relation(Relation {
            xid,
            oid: 16_400,
            namespace: "public".into(),
            name: "secrets".into(),
            replica_identity: ReplicaIdentity::Default,
            columns: vec![
                RelationColumn {
                    is_key: true,
                    name: "resource_id".into(),
                    type_oid: 25,
                    type_modifier: -1,
                },
                RelationColumn {
                    is_key: true,
                    name: "version".into(),
                    type_oid: 23,
                    type_modifier: -1,
                },
                RelationColumn {
                    is_key: false,
                    name: "value".into(),
                    type_oid: 17,
                    type_modifier: -1,
                },
            ],
        }),
        LogicalMessage::Type(Type {
            xid,
            oid: 90_000,
            namespace: "public".into(),
            name: "mood".into(),
        }),
        LogicalMessage::Insert(Insert {
            xid,
            rel_id: 16_400,
            new: row.clone(),
        }),
        LogicalMessage::Update(Update {
            xid,
            rel_id: 16_400,
            old: None,
            new: row.clone(),
        }),
        LogicalMessage::Update(Update {
            xid,
            rel_id: 16_400,
            old: Some(OldTuple::Key(key.clone())),
            new: row.clone(),
        }),
        LogicalMessage::Update(Update {
            xid,
            rel_id: 16_400,
            old: Some(OldTuple::Full(row.clone())),
            new: row.clone(),
        }),
        LogicalMessage::Delete(Delete {
            xid,
            rel_id: 16_400,
            old: OldTuple::Key(key),
        }),
        LogicalMessage::Delete(Delete {
            xid,
            rel_id: 16_400,
            old: OldTuple::Full(row),
        }),
        LogicalMessage::Truncate(Truncate {
            xid,
            options: TruncateOptions {
                cascade: true,
                restart_identity: false,
            },
            rel_ids: vec![16_400, 16_410],
        }),
        LogicalMessage::Message(Message {
            xid,
            flags: 1,
            message_lsn: Lsn(9),
            prefix: PgString::from_static("pgsieve"),
            content: Bytes::from_static(b"hello"),
        }),
        LogicalMessage::StreamStart(StreamStart {
            xid: 900,
            first_segment: true,
        }),
        LogicalMessage::StreamStop,
        LogicalMessage::StreamCommit(StreamCommit {
            xid: 900,
            flags: 0,
            commit_lsn: Lsn(10),
            end_lsn: Lsn(11),
            commit_time: t,
        }),
        LogicalMessage::StreamAbort(StreamAbort {
            xid: 900,
            subxid: 901,
            abort_lsn: parallel.then_some(Lsn(12)),
            abort_time: parallel.then_some(t),
        }),
        LogicalMessage::BeginPrepare(BeginPrepare {
            prepare_lsn: Lsn(1),
            end_lsn: Lsn(2),
            prepare_time: t,
            xid: 7,
            gid: gid.clone(),
        }),
        LogicalMessage::Prepare(Prepare {
            flags: 0,
            prepare_lsn: Lsn(1),
            end_lsn: Lsn(2),
            prepare_time: t,
            xid: 7,
            gid: gid.clone(),
        }),
        LogicalMessage::CommitPrepared(CommitPrepared {
            flags: 0,
            commit_lsn: Lsn(1),
            end_lsn: Lsn(2),
            commit_time: t,
            xid: 7,
            gid: gid.clone(),
        }),
        LogicalMessage::RollbackPrepared(RollbackPrepared {
            flags: 0,
            prepare_end_lsn: Lsn(1),
            rollback_end_lsn: Lsn(2),
            prepare_time: t,
            rollback_time: t,
            xid: 7,
            gid: gid.clone(),
        }),
        LogicalMessage::StreamPrepare(StreamPrepare {
            flags: 0,
            prepare_lsn: Lsn(1),
            end_lsn: Lsn(2),
            prepare_time: t,
            xid: 7,
            gid,
        }),
    ]
}

fn main() -> std::io::Result<()> {
    let pgoutput = Path::new("corpus/decode_pgoutput");
    let frame = Path::new("corpus/decode_frame");
    fs::create_dir_all(pgoutput)?;
    fs::create_dir_all(frame)?;
    let mut n = 0;
    for mode in 0u8..4 {
        let in_stream = mode & 1 != 0;
        let parallel = mode & 2 != 0;
        let xid = in_stream.then_some(901);
        let all = messages(xid, parallel);
        // A stream block as one sequence: S, changes, E.
        let mut sequence = vec![mode];
        for m in &all {
            let mut seed = vec![mode];
            seed.extend_from_slice(&m.to_bytes());
            fs::write(pgoutput.join(format!("{mode}-{n:03}")), &seed)?;
            if !in_stream {
                let wrapped = m.to_xlog_data(Lsn(1), Lsn(2), PgTimestamp(3));
                fs::write(frame.join(format!("w-{n:03}")), &wrapped)?;
            }
            sequence.extend_from_slice(&m.to_bytes());
            sequence.extend_from_slice(&[0xFE, 0xFF]);
            n += 1;
        }
        fs::write(pgoutput.join(format!("{mode}-sequence")), &sequence)?;
    }
    let mut buf = BytesMut::new();
    PrimaryKeepalive {
        wal_end: Lsn(7),
        send_time: PgTimestamp(8),
        reply_requested: true,
    }
    .encode(&mut buf);
    fs::write(frame.join("k"), &buf)?;
    buf.clear();
    StandbyStatusUpdate {
        write: Lsn(1),
        flush: Lsn(2),
        apply: Lsn(3),
        client_time: PgTimestamp(4),
        reply_requested: false,
    }
    .encode(&mut buf);
    fs::write(frame.join("r"), &buf)?;
    println!("wrote {n} pgoutput seeds and {} frame seeds", n / 4 + 2);
    Ok(())
}
