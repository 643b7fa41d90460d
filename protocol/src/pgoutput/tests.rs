//! Decoding hand-assembled frames, byte by byte as the PostgreSQL docs
//! describe them (not made by our encoder, so encoder and decoder cannot
//! share a mistake).

use bytes::Bytes;

use super::*;
use crate::error::DecodeErrorKind;
use crate::{Lsn, PgTimestamp};

fn insert_frame(xid: Option<u32>) -> Vec<u8> {
    let mut f = vec![b'I'];
    if let Some(xid) = xid {
        f.extend_from_slice(&xid.to_be_bytes());
    }
    f.extend_from_slice(&16_385u32.to_be_bytes());
    f.push(b'N');
    f.extend_from_slice(&4i16.to_be_bytes());
    f.push(b't');
    f.extend_from_slice(&2i32.to_be_bytes());
    f.extend_from_slice(b"42");
    f.push(b'n');
    f.push(b'u');
    f.push(b'b');
    f.extend_from_slice(&3i32.to_be_bytes());
    f.extend_from_slice(&[0, 1, 2]);
    f
}

#[test]
fn insert_columns_are_slices_of_the_frame() {
    let frame = Bytes::from(insert_frame(None));
    let msg = LogicalMessage::parse(frame.clone(), ParseContext::default()).unwrap();
    let LogicalMessage::Insert(insert) = msg else {
        panic!("not an insert: {msg:?}")
    };
    assert_eq!(insert.xid, None);
    assert_eq!(insert.rel_id, 16_385);
    let columns: Vec<_> = insert.new.columns().collect();
    assert_eq!(
        columns,
        vec![
            Column::Text(b"42"),
            Column::Null,
            Column::UnchangedToast,
            Column::Binary(&[0, 1, 2]),
        ]
    );
    assert_eq!(insert.new.get(3), Some(Column::Binary(&[0, 1, 2])));
    assert_eq!(insert.new.get(4), None);
    // Zero copy: the value points into the received frame.
    let value = insert.new.get(0).unwrap().as_bytes().unwrap();
    let range = frame.as_ptr_range();
    assert!(range.contains(&value.as_ptr()));
    assert_eq!(insert.new.get_bytes(0).unwrap(), Bytes::from_static(b"42"));
}

#[test]
fn decoder_reads_xid_only_inside_stream_block() {
    let mut decoder = PgOutputDecoder::new();
    let mut start = vec![b'S'];
    start.extend_from_slice(&900u32.to_be_bytes());
    start.push(1);
    let msg = decoder.decode(Bytes::from(start.clone())).unwrap();
    assert_eq!(
        msg,
        LogicalMessage::StreamStart(StreamStart {
            xid: 900,
            first_segment: true
        })
    );
    assert!(decoder.in_stream());
    let LogicalMessage::Insert(insert) = decoder
        .decode(Bytes::from(insert_frame(Some(901))))
        .unwrap()
    else {
        panic!("not an insert")
    };
    assert_eq!(insert.xid, Some(901));
    assert_eq!(insert.rel_id, 16_385);
    // A nested Stream Start is refused and leaves the state alone.
    let err = decoder.decode(Bytes::from(start)).unwrap_err();
    assert_eq!(err.kind, DecodeErrorKind::NestedStreamStart);
    assert!(decoder.in_stream());
    assert_eq!(
        decoder.decode(Bytes::from_static(b"E")).unwrap(),
        LogicalMessage::StreamStop
    );
    assert!(!decoder.in_stream());
    let err = decoder.decode(Bytes::from_static(b"E")).unwrap_err();
    assert_eq!(err.kind, DecodeErrorKind::StreamStopOutsideStream);
    // Outside the block the same bytes would misparse: the xid is read as rel_id.
    let LogicalMessage::Insert(insert) = decoder.decode(Bytes::from(insert_frame(None))).unwrap()
    else {
        panic!("not an insert")
    };
    assert_eq!(insert.xid, None);
}

#[test]
fn begin_and_commit_fields_in_wire_order() {
    let mut b = vec![b'B'];
    b.extend_from_slice(&0x0000_0001_0000_0010u64.to_be_bytes());
    b.extend_from_slice(&785_000_000_000_000i64.to_be_bytes());
    b.extend_from_slice(&777u32.to_be_bytes());
    assert_eq!(
        LogicalMessage::parse(Bytes::from(b), ParseContext::default()).unwrap(),
        LogicalMessage::Begin(Begin {
            final_lsn: Lsn(0x1_0000_0010),
            commit_time: PgTimestamp(785_000_000_000_000),
            xid: 777
        })
    );
    let mut c = vec![b'C', 0];
    c.extend_from_slice(&10u64.to_be_bytes());
    c.extend_from_slice(&20u64.to_be_bytes());
    c.extend_from_slice(&30i64.to_be_bytes());
    assert_eq!(
        LogicalMessage::parse(Bytes::from(c), ParseContext::default()).unwrap(),
        LogicalMessage::Commit(Commit {
            flags: 0,
            commit_lsn: Lsn(10),
            end_lsn: Lsn(20),
            commit_time: PgTimestamp(30)
        })
    );
}

#[test]
fn relation_message() {
    let mut r = vec![b'R'];
    r.extend_from_slice(&16_400u32.to_be_bytes());
    r.extend_from_slice(b"public\0secrets\0");
    r.push(b'd');
    r.extend_from_slice(&2i16.to_be_bytes());
    r.push(1);
    r.extend_from_slice(b"resource_id\0");
    r.extend_from_slice(&25u32.to_be_bytes());
    r.extend_from_slice(&(-1i32).to_be_bytes());
    r.push(0);
    r.extend_from_slice(b"value\0");
    r.extend_from_slice(&17u32.to_be_bytes());
    r.extend_from_slice(&(-1i32).to_be_bytes());
    let LogicalMessage::Relation(rel) =
        LogicalMessage::parse(Bytes::from(r), ParseContext::default()).unwrap()
    else {
        panic!("not a relation")
    };
    assert_eq!(rel.qualified_name(), "public.secrets");
    assert_eq!(rel.replica_identity, ReplicaIdentity::Default);
    assert_eq!(rel.column_index("value"), Some(1));
    assert_eq!(rel.column_index("nope"), None);
    assert!(rel.columns[0].is_key && !rel.columns[1].is_key);
    assert_eq!(rel.columns[1].type_oid, 17);
    let mut cache = RelationCache::new();
    assert!(cache.insert(rel.clone()).is_none());
    assert_eq!(cache.insert(rel).map(|r| r.oid), Some(16_400));
    assert_eq!(cache.get(16_400).map(|r| r.name.as_str()), Some("secrets"));
    cache.clear();
    assert!(cache.get(16_400).is_none());
}

#[test]
fn stream_abort_v4_fields_only_when_parallel() {
    let mut a = vec![b'A'];
    a.extend_from_slice(&5u32.to_be_bytes());
    a.extend_from_slice(&6u32.to_be_bytes());
    let short = Bytes::from(a.clone());
    a.extend_from_slice(&99u64.to_be_bytes());
    a.extend_from_slice(&100i64.to_be_bytes());
    let long = Bytes::from(a);
    let plain = ParseContext::default();
    let parallel = ParseContext {
        in_stream: false,
        parallel_abort: true,
    };
    let LogicalMessage::StreamAbort(abort) = LogicalMessage::parse(short.clone(), plain).unwrap()
    else {
        panic!()
    };
    assert!(abort.is_subtransaction());
    assert_eq!((abort.abort_lsn, abort.abort_time), (None, None));
    let LogicalMessage::StreamAbort(abort) = LogicalMessage::parse(long.clone(), parallel).unwrap()
    else {
        panic!()
    };
    assert_eq!(abort.abort_lsn, Some(Lsn(99)));
    assert_eq!(abort.abort_time, Some(PgTimestamp(100)));
    assert_eq!(
        LogicalMessage::parse(long, plain).unwrap_err().kind,
        DecodeErrorKind::TrailingBytes
    );
    assert_eq!(
        LogicalMessage::parse(short, parallel).unwrap_err().kind,
        DecodeErrorKind::UnexpectedEof
    );
}

#[test]
fn malformed_tuples_are_typed_errors() {
    // Negative column length.
    let mut f = insert_frame(None);
    f[9..13].copy_from_slice(&(-1i32).to_be_bytes());
    let err = LogicalMessage::parse(Bytes::from(f), ParseContext::default()).unwrap_err();
    assert_eq!(err.kind, DecodeErrorKind::BadLength(-1));
    assert_eq!((err.offset, err.tag), (9, Some(b'I')));
    // Unknown column kind.
    let mut f = insert_frame(None);
    f[8] = b'x';
    let err = LogicalMessage::parse(Bytes::from(f), ParseContext::default()).unwrap_err();
    assert_eq!(err.kind, DecodeErrorKind::UnknownColumnKind(b'x'));
    assert_eq!(err.offset, 8);
    // Wrong tuple marker.
    let mut f = insert_frame(None);
    f[5] = b'K';
    let err = LogicalMessage::parse(Bytes::from(f), ParseContext::default()).unwrap_err();
    assert_eq!(err.kind, DecodeErrorKind::UnexpectedTupleMarker(b'K'));
    // Huge length: end of data, not an overflow.
    let mut f = insert_frame(None);
    f[9..13].copy_from_slice(&i32::MAX.to_be_bytes());
    let err = LogicalMessage::parse(Bytes::from(f), ParseContext::default()).unwrap_err();
    assert_eq!(err.kind, DecodeErrorKind::UnexpectedEof);
    // Negative column count.
    let mut f = insert_frame(None);
    f[6..8].copy_from_slice(&(-2i16).to_be_bytes());
    let err = LogicalMessage::parse(Bytes::from(f), ParseContext::default()).unwrap_err();
    assert_eq!(err.kind, DecodeErrorKind::BadLength(-2));
    // Every truncation is an error, never a panic.
    let full = insert_frame(None);
    for cut in 0..full.len() {
        let result = LogicalMessage::parse(
            Bytes::copy_from_slice(&full[..cut]),
            ParseContext::default(),
        );
        assert!(result.is_err(), "cut at {cut}");
    }
}

#[test]
fn unknown_tag_and_bad_utf8() {
    let err = LogicalMessage::parse(Bytes::from_static(b"Z"), ParseContext::default()).unwrap_err();
    assert_eq!(err.kind, DecodeErrorKind::UnknownTag(b'Z'));
    let mut o = vec![b'O'];
    o.extend_from_slice(&1u64.to_be_bytes());
    o.extend_from_slice(b"\xff\xfe\0");
    let err = LogicalMessage::parse(Bytes::from(o), ParseContext::default()).unwrap_err();
    assert_eq!((err.kind, err.offset), (DecodeErrorKind::InvalidUtf8, 9));
    let mut o = vec![b'O'];
    o.extend_from_slice(&1u64.to_be_bytes());
    o.extend_from_slice(b"origin");
    let err = LogicalMessage::parse(Bytes::from(o), ParseContext::default()).unwrap_err();
    assert_eq!(err.kind, DecodeErrorKind::MissingNul);
}
