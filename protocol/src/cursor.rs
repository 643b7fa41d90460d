//! A checked reader over one received buffer.
//!
//! Every read is bounds-checked and reports a [`DecodeError`] with the offset,
//! the message tag and the field name; slices of the buffer come out as
//! `Bytes` sharing the frame (no copy). The cursor owns the buffer, so a part
//! that runs to the end of it (the XLogData payload, the last tuple of a
//! change) is handed over without even a reference-count increment.

use bytes::{Buf, Bytes};

use crate::error::{DecodeError, DecodeErrorKind};
use crate::lsn::Lsn;
use crate::timestamp::PgTimestamp;

/// Reads big-endian fields from `data`, starting at `pos`.
pub(crate) struct Cursor {
    data: Bytes,
    /// Length of `data` as received (it is emptied when its tail is taken).
    len: usize,
    pos: usize,
    tag: Option<u8>,
}

pub(crate) type Result<T> = std::result::Result<T, DecodeError>;

impl Cursor {
    /// A reader at the start of `data`.
    pub(crate) fn new(data: Bytes) -> Self {
        Cursor {
            len: data.len(),
            data,
            pos: 0,
            tag: None,
        }
    }

    /// Records the tag of the message being decoded, for error reports.
    pub(crate) fn set_tag(&mut self, tag: u8) {
        self.tag = Some(tag);
    }

    /// Current offset from the start of the buffer.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    /// An error of `kind` at `offset`.
    pub(crate) fn error_at(
        &self,
        offset: usize,
        kind: DecodeErrorKind,
        expected: &'static str,
    ) -> DecodeError {
        DecodeError::new(kind, offset, self.tag, expected)
    }

    /// The next `n` bytes as a borrowed slice.
    #[inline]
    pub(crate) fn slice(&mut self, n: usize, expected: &'static str) -> Result<&[u8]> {
        let data: &[u8] = self.data.as_ref();
        let end = self.pos.checked_add(n);
        match end.and_then(|end| data.get(self.pos..end)) {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => Err(self.error_at(self.pos, DecodeErrorKind::UnexpectedEof, expected)),
        }
    }

    /// The next `N` bytes as an array.
    #[inline]
    fn array<const N: usize>(&mut self, expected: &'static str) -> Result<[u8; N]> {
        let s = self.slice(N, expected)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    #[inline]
    pub(crate) fn u8(&mut self, expected: &'static str) -> Result<u8> {
        match self.data.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                Ok(b)
            }
            None => Err(self.error_at(self.pos, DecodeErrorKind::UnexpectedEof, expected)),
        }
    }

    #[inline]
    pub(crate) fn i16(&mut self, expected: &'static str) -> Result<i16> {
        self.array(expected).map(i16::from_be_bytes)
    }

    #[inline]
    pub(crate) fn i32(&mut self, expected: &'static str) -> Result<i32> {
        self.array(expected).map(i32::from_be_bytes)
    }

    #[inline]
    pub(crate) fn u32(&mut self, expected: &'static str) -> Result<u32> {
        self.array(expected).map(u32::from_be_bytes)
    }

    #[inline]
    pub(crate) fn i64(&mut self, expected: &'static str) -> Result<i64> {
        self.array(expected).map(i64::from_be_bytes)
    }

    #[inline]
    pub(crate) fn lsn(&mut self, expected: &'static str) -> Result<Lsn> {
        self.array(expected).map(|b| Lsn(u64::from_be_bytes(b)))
    }

    #[inline]
    pub(crate) fn timestamp(&mut self, expected: &'static str) -> Result<PgTimestamp> {
        self.i64(expected).map(PgTimestamp)
    }

    /// A non-negative count or length given as a signed wire integer.
    #[inline]
    pub(crate) fn length(
        &mut self,
        value: i32,
        at: usize,
        expected: &'static str,
    ) -> Result<usize> {
        usize::try_from(value)
            .map_err(|_| self.error_at(at, DecodeErrorKind::BadLength(value), expected))
    }

    /// An Int32 length (or count) that must not be negative.
    #[inline]
    pub(crate) fn len_i32(&mut self, expected: &'static str) -> Result<usize> {
        let at = self.pos;
        let value = self.i32(expected)?;
        self.length(value, at, expected)
    }

    /// An Int16 count that must not be negative.
    #[inline]
    pub(crate) fn len_i16(&mut self, expected: &'static str) -> Result<usize> {
        let at = self.pos;
        let value = self.i16(expected)?;
        self.length(i32::from(value), at, expected)
    }

    /// A NUL-terminated UTF-8 string, borrowed; the NUL is consumed.
    pub(crate) fn cstr(&mut self, expected: &'static str) -> Result<&str> {
        let data: &[u8] = self.data.as_ref();
        let start = self.pos;
        let rest = data.get(start..).unwrap_or_default();
        let Some(nul) = rest.iter().position(|&b| b == 0) else {
            return Err(self.error_at(start, DecodeErrorKind::MissingNul, expected));
        };
        let bytes = rest.get(..nul).unwrap_or_default();
        let Ok(text) = std::str::from_utf8(bytes) else {
            return Err(self.error_at(start, DecodeErrorKind::InvalidUtf8, expected));
        };
        self.pos = start + nul + 1;
        Ok(text)
    }

    /// A NUL-terminated UTF-8 string sharing the buffer (NUL excluded).
    pub(crate) fn cstr_bytes(&mut self, expected: &'static str) -> Result<Bytes> {
        let start = self.pos;
        let len = self.cstr(expected)?.len();
        Ok(self.data.slice(start..start + len))
    }

    /// The next `n` bytes sharing the buffer.
    pub(crate) fn bytes(&mut self, n: usize, expected: &'static str) -> Result<Bytes> {
        let start = self.pos;
        self.skip(n, expected)?;
        Ok(self.since(start))
    }

    /// A sub-buffer `start..self.pos` sharing the buffer. When it reaches
    /// the end of the buffer the cursor gives up its buffer instead of
    /// cloning it (later reads then see end of data, as they would anyway).
    pub(crate) fn since(&mut self, start: usize) -> Bytes {
        let start = start.min(self.pos);
        if self.pos == self.len && self.data.len() == self.len {
            let mut tail = std::mem::take(&mut self.data);
            tail.advance(start);
            tail
        } else if self.pos <= self.data.len() {
            self.data.slice(start..self.pos)
        } else {
            Bytes::new()
        }
    }

    /// Skips `n` bytes.
    pub(crate) fn skip(&mut self, n: usize, expected: &'static str) -> Result<()> {
        self.slice(n, expected).map(|_| ())
    }

    /// The unread bytes, borrowed, without consuming them.
    pub(crate) fn peek_rest(&self) -> &[u8] {
        self.data.get(self.pos..).unwrap_or_default()
    }

    /// Everything after the current position, sharing the buffer.
    pub(crate) fn rest(&mut self) -> Bytes {
        let start = self.pos.min(self.len);
        self.pos = self.len;
        self.since(start)
    }

    /// Fails unless the whole buffer was consumed.
    pub(crate) fn finish(&self) -> Result<()> {
        if self.pos == self.len {
            Ok(())
        } else {
            Err(self.error_at(self.pos, DecodeErrorKind::TrailingBytes, "end of message"))
        }
    }
}
