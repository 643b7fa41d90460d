//! TupleData: the column values of one row, read in place.
//!
//! A tuple is validated once when its message is decoded; afterwards
//! iterating its columns cannot fail and allocates nothing. Values are
//! slices of the received frame.

use bytes::Bytes;

use crate::cursor::{Cursor, Result};
use crate::error::DecodeErrorKind;

/// Column kind `'n'`: NULL.
pub const COLUMN_NULL: u8 = b'n';
/// Column kind `'u'`: unchanged TOASTed value, not sent.
pub const COLUMN_UNCHANGED_TOAST: u8 = b'u';
/// Column kind `'t'`: value in text format.
pub const COLUMN_TEXT: u8 = b't';
/// Column kind `'b'`: value in binary (send function) format.
pub const COLUMN_BINARY: u8 = b'b';

/// The columns of one row as sent by pgoutput (TupleData).
///
/// Holds the column region of the frame (after the Int16 count) and the
/// column count; equality is equality of the encoded columns.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct TupleData {
    data: Bytes,
    len: u16,
}

/// One column value of a [`TupleData`], borrowing the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Column<'a> {
    /// SQL NULL (also: a non-key column of a `'K'` old tuple).
    Null,
    /// An unchanged TOASTed value that was not sent: keep the stored one.
    UnchangedToast,
    /// The value in PostgreSQL's text output format.
    Text(&'a [u8]),
    /// The value in the type's binary send format.
    Binary(&'a [u8]),
}

/// Another name for [`Column`], for readers who think of it as a value.
pub type ColumnValue<'a> = Column<'a>;

impl<'a> Column<'a> {
    /// Whether this is SQL NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, Column::Null)
    }

    /// Whether this is an unchanged TOAST placeholder (`'u'`).
    pub fn is_unchanged_toast(&self) -> bool {
        matches!(self, Column::UnchangedToast)
    }

    /// The value bytes of a text or binary column.
    pub fn as_bytes(&self) -> Option<&'a [u8]> {
        match *self {
            Column::Text(b) | Column::Binary(b) => Some(b),
            Column::Null | Column::UnchangedToast => None,
        }
    }

    /// The bytes of a text-format column (what `test_decoding` prints).
    pub fn as_text(&self) -> Option<&'a [u8]> {
        match *self {
            Column::Text(b) => Some(b),
            _ => None,
        }
    }

    /// A text-format column as `&str`, if it is UTF-8.
    pub fn as_str(&self) -> Option<&'a str> {
        self.as_text().and_then(|b| std::str::from_utf8(b).ok())
    }
}

/// Why one column could not be read: kind, offset within the region, field.
struct StepError(DecodeErrorKind, usize, &'static str);

/// Reads the column at the start of `bytes`; returns it and the bytes consumed.
#[inline(always)]
fn step(bytes: &[u8]) -> std::result::Result<(Column<'_>, usize), StepError> {
    let Some((&kind, rest)) = bytes.split_first() else {
        return Err(StepError(DecodeErrorKind::UnexpectedEof, 0, "column kind"));
    };
    let binary = match kind {
        COLUMN_NULL => return Ok((Column::Null, 1)),
        COLUMN_UNCHANGED_TOAST => return Ok((Column::UnchangedToast, 1)),
        COLUMN_TEXT => false,
        COLUMN_BINARY => true,
        other => {
            return Err(StepError(
                DecodeErrorKind::UnknownColumnKind(other),
                0,
                "column kind 'n', 'u', 't' or 'b'",
            ));
        }
    };
    let Some((len, rest)) = rest.split_first_chunk::<4>() else {
        return Err(StepError(
            DecodeErrorKind::UnexpectedEof,
            1,
            "column length",
        ));
    };
    let len = i32::from_be_bytes(*len);
    let Ok(n) = usize::try_from(len) else {
        return Err(StepError(
            DecodeErrorKind::BadLength(len),
            1,
            "column length",
        ));
    };
    let Some((value, _)) = rest.split_at_checked(n) else {
        return Err(StepError(DecodeErrorKind::UnexpectedEof, 5, "column value"));
    };
    let column = if binary {
        Column::Binary(value)
    } else {
        Column::Text(value)
    };
    Ok((column, 5 + n))
}

impl TupleData {
    /// Reads and validates a TupleData (Int16 count + columns) at the cursor.
    #[inline]
    pub(crate) fn parse(c: &mut Cursor) -> Result<TupleData> {
        let at = c.pos();
        let count = c.len_i16("tuple column count")?;
        let len = u16::try_from(count).map_err(|_| {
            let shown = i32::try_from(count).unwrap_or(i32::MAX);
            c.error_at(at, DecodeErrorKind::BadLength(shown), "tuple column count")
        })?;
        let start = c.pos();
        let mut walked = 0usize;
        for _ in 0..len {
            let used = match step(c.peek_rest()) {
                Ok((_, used)) => used,
                Err(StepError(kind, rel, expected)) => {
                    return Err(c.error_at(c.pos() + rel, kind, expected));
                }
            };
            c.skip(used, "column")?;
            walked += 1;
        }
        debug_assert_eq!(walked, usize::from(len));
        Ok(TupleData {
            data: c.since(start),
            len,
        })
    }

    /// Builds a tuple from an already encoded column region (see `TupleBuilder`).
    pub(crate) fn from_encoded(data: Bytes, len: u16) -> TupleData {
        TupleData { data, len }
    }

    /// Number of columns.
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Whether the tuple has no columns.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The encoded column region (without the Int16 count), sharing the frame.
    pub fn encoded_columns(&self) -> &Bytes {
        &self.data
    }

    /// Total bytes of the encoded column region.
    pub fn encoded_len(&self) -> usize {
        self.data.len()
    }

    /// The columns in order; never fails and never allocates.
    pub fn columns(&self) -> Columns<'_> {
        Columns {
            rest: &self.data,
            remaining: usize::from(self.len),
        }
    }

    /// The column at `index` (linear scan), or `None` past the end.
    pub fn get(&self, index: usize) -> Option<Column<'_>> {
        self.columns().nth(index)
    }

    /// The value at `index` as `Bytes` sharing the frame (text or binary
    /// columns only), for consumers that must keep it beyond the borrow.
    pub fn get_bytes(&self, index: usize) -> Option<Bytes> {
        let value = self.get(index)?.as_bytes()?;
        Some(self.data.slice_ref(value))
    }
}

/// Iterator over the columns of a [`TupleData`].
#[derive(Clone, Debug)]
pub struct Columns<'a> {
    rest: &'a [u8],
    remaining: usize,
}

impl<'a> Iterator for Columns<'a> {
    type Item = Column<'a>;

    #[inline]
    fn next(&mut self) -> Option<Column<'a>> {
        if self.remaining == 0 {
            return None;
        }
        // Validated at decode time, so `step` cannot fail here; if it ever
        // did, the iterator ends instead of panicking.
        match step(self.rest) {
            Ok((column, used)) => {
                self.rest = self.rest.get(used..).unwrap_or_default();
                self.remaining -= 1;
                Some(column)
            }
            Err(_) => {
                self.remaining = 0;
                None
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for Columns<'_> {}

impl<'a> IntoIterator for &'a TupleData {
    type Item = Column<'a>;
    type IntoIter = Columns<'a>;
    fn into_iter(self) -> Columns<'a> {
        self.columns()
    }
}
