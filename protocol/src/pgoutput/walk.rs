//! The hot-path walk: decode one pgoutput message and touch every column
//! value of its tuples, as the filter stage does. Benches and the
//! no-allocation test measure exactly this.

use bytes::Bytes;

use crate::error::DecodeError;
use crate::pgoutput::change::OldTuple;
use crate::pgoutput::decoder::PgOutputDecoder;
use crate::pgoutput::message::LogicalMessage;
use crate::pgoutput::tuple::TupleData;

/// What a walk saw; returned so the optimiser cannot skip the work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalkSummary {
    /// Columns visited (all tuples of the message).
    pub columns: usize,
    /// Bytes of text/binary column values visited.
    pub value_bytes: usize,
}

impl WalkSummary {
    #[inline]
    fn add_tuple(&mut self, tuple: &TupleData) {
        for column in tuple.columns() {
            self.columns += 1;
            self.value_bytes += column.as_bytes().map_or(0, <[u8]>::len);
        }
    }
}

/// Decodes `data` with `decoder` and iterates the columns of every tuple of
/// an Insert, Update or Delete; other messages are decoded only.
pub fn walk(decoder: &mut PgOutputDecoder, data: Bytes) -> Result<WalkSummary, DecodeError> {
    let mut summary = WalkSummary::default();
    match decoder.decode(data)? {
        LogicalMessage::Insert(insert) => summary.add_tuple(&insert.new),
        LogicalMessage::Update(update) => {
            if let Some(OldTuple::Key(old) | OldTuple::Full(old)) = &update.old {
                summary.add_tuple(old);
            }
            summary.add_tuple(&update.new);
        }
        LogicalMessage::Delete(delete) => summary.add_tuple(delete.old.tuple()),
        _ => {}
    }
    Ok(summary)
}
