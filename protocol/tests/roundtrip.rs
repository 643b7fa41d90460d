//! Property tests: encode → decode gives back every message and tuple kind,
//! and no byte string (random, truncated or mutated) makes a decoder panic.

use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;

use pgsieve_protocol::pgoutput::{
    BeginPrepare, CommitPrepared, Message, Origin, PgString, Prepare, RollbackPrepared,
    StreamPrepare, TruncateOptions, Type,
};
use pgsieve_protocol::{
    Begin, Column, Commit, Delete, Insert, LogicalMessage, Lsn, OldTuple, ParseContext,
    PgOutputDecoder, PgTimestamp, PrimaryKeepalive, Relation, RelationColumn, ReplicaIdentity,
    ReplicationMessage, StandbyStatusUpdate, StreamAbort, StreamCommit, StreamStart, Truncate,
    TupleData, Update, XLogData,
};

/// An owned column, so strategies can produce values the tuple borrows.
#[derive(Clone, Debug, PartialEq)]
enum OwnedColumn {
    Null,
    UnchangedToast,
    Text(Vec<u8>),
    Binary(Vec<u8>),
}

impl OwnedColumn {
    fn as_column(&self) -> Column<'_> {
        match self {
            OwnedColumn::Null => Column::Null,
            OwnedColumn::UnchangedToast => Column::UnchangedToast,
            OwnedColumn::Text(v) => Column::Text(v),
            OwnedColumn::Binary(v) => Column::Binary(v),
        }
    }
}

fn column() -> impl Strategy<Value = OwnedColumn> {
    prop_oneof![
        Just(OwnedColumn::Null),
        Just(OwnedColumn::UnchangedToast),
        vec(any::<u8>(), 0..40).prop_map(OwnedColumn::Text),
        vec(any::<u8>(), 0..40).prop_map(OwnedColumn::Binary),
    ]
}

fn tuple() -> impl Strategy<Value = TupleData> {
    vec(column(), 0..10)
        .prop_map(|cols| TupleData::from_columns(cols.iter().map(OwnedColumn::as_column)))
}

fn lsn() -> impl Strategy<Value = Lsn> {
    any::<u64>().prop_map(Lsn)
}

fn ts() -> impl Strategy<Value = PgTimestamp> {
    any::<i64>().prop_map(PgTimestamp)
}

/// Wire strings cannot hold NUL.
fn name() -> impl Strategy<Value = String> {
    "[^\u{0}]{0,12}"
}

fn pg_string() -> impl Strategy<Value = PgString> {
    name().prop_map(PgString::from)
}

fn old_tuple() -> impl Strategy<Value = OldTuple> {
    prop_oneof![
        tuple().prop_map(OldTuple::Key),
        tuple().prop_map(OldTuple::Full)
    ]
}

fn replica_identity() -> impl Strategy<Value = ReplicaIdentity> {
    prop_oneof![
        Just(ReplicaIdentity::Default),
        Just(ReplicaIdentity::Nothing),
        Just(ReplicaIdentity::Full),
        Just(ReplicaIdentity::Index),
    ]
}

fn relation_column() -> impl Strategy<Value = RelationColumn> {
    (any::<bool>(), name(), any::<u32>(), any::<i32>()).prop_map(
        |(is_key, name, type_oid, type_modifier)| RelationColumn {
            is_key,
            name,
            type_oid,
            type_modifier,
        },
    )
}

/// A context and a message that is valid under it.
fn message() -> impl Strategy<Value = (ParseContext, LogicalMessage)> {
    (any::<bool>(), any::<bool>()).prop_flat_map(|(in_stream, parallel_abort)| {
        let ctx = ParseContext {
            in_stream,
            parallel_abort,
        };
        let xid = if in_stream {
            any::<u32>().prop_map(Some).boxed()
        } else {
            Just(None).boxed()
        };
        let abort_extra = if parallel_abort {
            (lsn(), ts()).prop_map(|(l, t)| (Some(l), Some(t))).boxed()
        } else {
            Just((None, None)).boxed()
        };
        let msg = prop_oneof![
            (lsn(), ts(), any::<u32>()).prop_map(|(final_lsn, commit_time, xid)| {
                LogicalMessage::Begin(Begin {
                    final_lsn,
                    commit_time,
                    xid,
                })
            }),
            (any::<u8>(), lsn(), lsn(), ts()).prop_map(|(flags, commit_lsn, end_lsn, t)| {
                LogicalMessage::Commit(Commit {
                    flags,
                    commit_lsn,
                    end_lsn,
                    commit_time: t,
                })
            }),
            (lsn(), pg_string())
                .prop_map(|(origin_lsn, name)| LogicalMessage::Origin(Origin { origin_lsn, name })),
            (
                xid.clone(),
                any::<u32>(),
                name(),
                name(),
                replica_identity(),
                vec(relation_column(), 0..6)
            )
                .prop_map(|(xid, oid, namespace, name, replica_identity, columns)| {
                    LogicalMessage::Relation(Relation {
                        xid,
                        oid,
                        namespace,
                        name,
                        replica_identity,
                        columns,
                    })
                }),
            (xid.clone(), any::<u32>(), name(), name()).prop_map(|(xid, oid, namespace, name)| {
                LogicalMessage::Type(Type {
                    xid,
                    oid,
                    namespace,
                    name,
                })
            }),
            (xid.clone(), any::<u32>(), tuple())
                .prop_map(|(xid, rel_id, new)| LogicalMessage::Insert(Insert { xid, rel_id, new })),
            (
                xid.clone(),
                any::<u32>(),
                proptest::option::of(old_tuple()),
                tuple()
            )
                .prop_map(|(xid, rel_id, old, new)| LogicalMessage::Update(Update {
                    xid,
                    rel_id,
                    old,
                    new
                })),
            (xid.clone(), any::<u32>(), old_tuple())
                .prop_map(|(xid, rel_id, old)| LogicalMessage::Delete(Delete { xid, rel_id, old })),
            (xid.clone(), 0u8..4, vec(any::<u32>(), 0..8)).prop_map(|(xid, bits, rel_ids)| {
                LogicalMessage::Truncate(Truncate {
                    xid,
                    options: TruncateOptions::from_byte(bits),
                    rel_ids,
                })
            }),
            (
                xid,
                any::<u8>(),
                lsn(),
                pg_string(),
                vec(any::<u8>(), 0..64)
            )
                .prop_map(|(xid, flags, message_lsn, prefix, content)| {
                    LogicalMessage::Message(Message {
                        xid,
                        flags,
                        message_lsn,
                        prefix,
                        content: Bytes::from(content),
                    })
                }),
            (any::<u32>(), any::<bool>()).prop_map(|(xid, first_segment)| {
                LogicalMessage::StreamStart(StreamStart { xid, first_segment })
            }),
            Just(LogicalMessage::StreamStop),
            (any::<u32>(), any::<u8>(), lsn(), lsn(), ts()).prop_map(
                |(xid, flags, commit_lsn, end_lsn, commit_time)| {
                    LogicalMessage::StreamCommit(StreamCommit {
                        xid,
                        flags,
                        commit_lsn,
                        end_lsn,
                        commit_time,
                    })
                }
            ),
            (any::<u32>(), any::<u32>(), abort_extra).prop_map(
                |(xid, subxid, (abort_lsn, abort_time))| {
                    LogicalMessage::StreamAbort(StreamAbort {
                        xid,
                        subxid,
                        abort_lsn,
                        abort_time,
                    })
                }
            ),
            (lsn(), lsn(), ts(), any::<u32>(), pg_string()).prop_map(
                |(prepare_lsn, end_lsn, prepare_time, xid, gid)| {
                    LogicalMessage::BeginPrepare(BeginPrepare {
                        prepare_lsn,
                        end_lsn,
                        prepare_time,
                        xid,
                        gid,
                    })
                }
            ),
            (any::<u8>(), lsn(), lsn(), ts(), any::<u32>(), pg_string()).prop_map(
                |(flags, prepare_lsn, end_lsn, prepare_time, xid, gid)| {
                    LogicalMessage::Prepare(Prepare {
                        flags,
                        prepare_lsn,
                        end_lsn,
                        prepare_time,
                        xid,
                        gid,
                    })
                }
            ),
            (any::<u8>(), lsn(), lsn(), ts(), any::<u32>(), pg_string()).prop_map(
                |(flags, commit_lsn, end_lsn, commit_time, xid, gid)| {
                    LogicalMessage::CommitPrepared(CommitPrepared {
                        flags,
                        commit_lsn,
                        end_lsn,
                        commit_time,
                        xid,
                        gid,
                    })
                }
            ),
            (
                any::<u8>(),
                lsn(),
                lsn(),
                ts(),
                ts(),
                any::<u32>(),
                pg_string()
            )
                .prop_map(
                    |(
                        flags,
                        prepare_end_lsn,
                        rollback_end_lsn,
                        prepare_time,
                        rollback_time,
                        xid,
                        gid,
                    )| {
                        LogicalMessage::RollbackPrepared(RollbackPrepared {
                            flags,
                            prepare_end_lsn,
                            rollback_end_lsn,
                            prepare_time,
                            rollback_time,
                            xid,
                            gid,
                        })
                    }
                ),
            (any::<u8>(), lsn(), lsn(), ts(), any::<u32>(), pg_string()).prop_map(
                |(flags, prepare_lsn, end_lsn, prepare_time, xid, gid)| {
                    LogicalMessage::StreamPrepare(StreamPrepare {
                        flags,
                        prepare_lsn,
                        end_lsn,
                        prepare_time,
                        xid,
                        gid,
                    })
                }
            ),
        ];
        (Just(ctx), msg)
    })
}

fn contexts() -> [ParseContext; 4] {
    [false, true]
        .map(|s| {
            [false, true].map(|p| ParseContext {
                in_stream: s,
                parallel_abort: p,
            })
        })
        .concat()
        .try_into()
        .unwrap()
}

/// Whatever decodes must re-encode to something that decodes the same,
/// and its tuples must iterate exactly `len()` columns.
fn check_decoded(message: &LogicalMessage, ctx: ParseContext) {
    let tuples: Vec<&TupleData> = match message {
        LogicalMessage::Insert(m) => vec![&m.new],
        LogicalMessage::Update(m) => m.old.iter().map(OldTuple::tuple).chain([&m.new]).collect(),
        LogicalMessage::Delete(m) => vec![m.old.tuple()],
        _ => vec![],
    };
    for t in tuples {
        assert_eq!(t.columns().count(), t.len());
    }
    let again = LogicalMessage::parse(message.to_bytes(), ctx).expect("re-encoded message decodes");
    assert_eq!(&again, message);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn every_message_round_trips((ctx, msg) in message()) {
        let bytes = msg.to_bytes();
        let decoded = LogicalMessage::parse(bytes.clone(), ctx);
        prop_assert_eq!(decoded.as_ref(), Ok(&msg));
        // Through XLogData too.
        let frame = msg.to_xlog_data(Lsn(1), Lsn(2), PgTimestamp(3));
        let ReplicationMessage::XLogData(x) = ReplicationMessage::parse(frame).unwrap() else {
            panic!("not XLogData")
        };
        prop_assert_eq!(&x.data, &bytes);
    }

    #[test]
    fn tuples_give_back_their_columns(cols in vec(column(), 0..20)) {
        let tuple = TupleData::from_columns(cols.iter().map(OwnedColumn::as_column));
        let got: Vec<Column<'_>> = tuple.columns().collect();
        let want: Vec<Column<'_>> = cols.iter().map(OwnedColumn::as_column).collect();
        prop_assert_eq!(&got, &want);
        prop_assert_eq!(tuple.len(), cols.len());
        for (i, c) in want.iter().enumerate() {
            prop_assert_eq!(tuple.get(i), Some(*c));
            let owned = tuple.get_bytes(i);
            prop_assert_eq!(owned.as_deref(), c.as_bytes());
        }
        prop_assert_eq!(tuple.get(cols.len()), None);
    }

    #[test]
    fn frames_round_trip(
        wal_start in lsn(), wal_end in lsn(), send_time in ts(), reply in any::<bool>(),
        data in vec(any::<u8>(), 0..64), apply in lsn(),
    ) {
        let x = ReplicationMessage::XLogData(XLogData {
            wal_start, wal_end, send_time, data: Bytes::from(data),
        });
        let k = ReplicationMessage::PrimaryKeepalive(PrimaryKeepalive {
            wal_end, send_time, reply_requested: reply,
        });
        for m in [x, k] {
            let mut buf = BytesMut::new();
            m.encode(&mut buf);
            prop_assert_eq!(ReplicationMessage::parse(buf.freeze()), Ok(m));
        }
        let r = StandbyStatusUpdate {
            write: wal_end, flush: wal_start, apply, client_time: send_time, reply_requested: reply,
        };
        let mut buf = BytesMut::new();
        r.encode(&mut buf);
        prop_assert_eq!(StandbyStatusUpdate::parse(buf.freeze()), Ok(r));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..200)) {
        let bytes = Bytes::from(bytes);
        for ctx in contexts() {
            if let Ok(m) = LogicalMessage::parse(bytes.clone(), ctx) {
                check_decoded(&m, ctx);
            }
        }
        let _ = ReplicationMessage::parse(bytes.clone());
        let _ = StandbyStatusUpdate::parse(bytes);
    }

    #[test]
    fn arbitrary_bytes_with_a_known_tag_never_panic(
        tag in prop::sample::select(b"BCORYIUDTMSEcAbPKrp".to_vec()),
        body in vec(any::<u8>(), 0..120),
    ) {
        let mut bytes = vec![tag];
        bytes.extend_from_slice(&body);
        let bytes = Bytes::from(bytes);
        for ctx in contexts() {
            if let Ok(m) = LogicalMessage::parse(bytes.clone(), ctx) {
                check_decoded(&m, ctx);
            }
        }
    }

    #[test]
    fn truncated_and_mutated_messages_never_panic(
        (ctx, msg) in message(),
        cut in any::<prop::sample::Index>(),
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        insert_at in any::<prop::sample::Index>(),
        inserted in vec(any::<u8>(), 1..6),
    ) {
        let bytes = msg.to_bytes().to_vec();
        // Every strict prefix is an error.
        let prefix = &bytes[..cut.index(bytes.len())];
        prop_assert!(LogicalMessage::parse(Bytes::copy_from_slice(prefix), ctx).is_err());
        // Byte flips: Ok or Err, and an Ok re-encodes consistently.
        let mut mutated = bytes.clone();
        for (at, value) in &flips {
            let i = at.index(mutated.len());
            mutated[i] = *value;
        }
        if let Ok(m) = LogicalMessage::parse(Bytes::from(mutated), ctx) {
            check_decoded(&m, ctx);
        }
        // Insertions.
        let mut grown = bytes;
        let at = insert_at.index(grown.len() + 1);
        grown.splice(at..at, inserted);
        if let Ok(m) = LogicalMessage::parse(Bytes::from(grown), ctx) {
            check_decoded(&m, ctx);
        }
    }

    #[test]
    fn decoder_survives_any_sequence(frames in vec(vec(any::<u8>(), 0..40), 0..30)) {
        let mut decoder = PgOutputDecoder::with_parallel_abort(true);
        for frame in frames {
            let before = decoder;
            match decoder.decode(Bytes::from(frame)) {
                Ok(LogicalMessage::StreamStart(_)) => prop_assert!(decoder.in_stream()),
                Ok(LogicalMessage::StreamStop) => prop_assert!(!decoder.in_stream()),
                Ok(_) => prop_assert_eq!(decoder, before),
                Err(_) => prop_assert_eq!(decoder, before),
            }
        }
    }
}
