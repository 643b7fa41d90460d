//! Shared oracle of both targets: whatever decodes must re-encode to bytes
//! that decode to the same message, and its tuples must iterate exactly
//! `len()` columns.

use pgsieve_protocol::{LogicalMessage, OldTuple, ParseContext, TupleData};

pub fn check_decoded(message: &LogicalMessage, ctx: ParseContext) {
    let mut tuples: [Option<&TupleData>; 2] = [None, None];
    match message {
        LogicalMessage::Insert(m) => tuples[0] = Some(&m.new),
        LogicalMessage::Update(m) => {
            tuples[0] = m.old.as_ref().map(OldTuple::tuple);
            tuples[1] = Some(&m.new);
        }
        LogicalMessage::Delete(m) => tuples[0] = Some(m.old.tuple()),
        _ => {}
    }
    for tuple in tuples.into_iter().flatten() {
        assert_eq!(tuple.columns().count(), tuple.len());
        for (i, column) in tuple.columns().enumerate() {
            assert_eq!(tuple.get(i), Some(column));
        }
    }
    let again = LogicalMessage::parse(message.to_bytes(), ctx).expect("re-encoded message decodes");
    assert_eq!(&again, message);
}
