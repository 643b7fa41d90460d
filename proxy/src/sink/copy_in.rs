//! `COPY … FROM STDIN` for runs of plain inserts into one table.
//!
//! A multi-row `INSERT … VALUES` makes the follower parse, plan and set up an
//! executor for every statement, with one parameter per value; `COPY` reads
//! the rows as a stream and inserts them in batches (`heap_multi_insert`).
//! On a table with few indexes that setup is a large share of the follower's
//! cost per row.
//!
//! The format is COPY's **text** format because pgoutput sends text: each
//! value is exactly what the leader's output function wrote, and the
//! follower's input function reads it back, as it does for a text
//! parameter. Only four bytes need escaping (backslash, tab, newline,
//! carriage return); NULL is `\N`. A row with a value in binary form (a
//! `binary` pgoutput stream) cannot be written this way: the caller sends
//! such a batch as INSERTs.

use bytes::{BufMut, BytesMut};

use super::value::WireValue;

/// Appends one row (`values`, in the table's column order) to `out` in COPY
/// text format. Returns `false`, leaving `out` as it was, when a value is in
/// binary form.
pub fn encode_copy_row(values: &[WireValue], out: &mut BytesMut) -> bool {
    let start = out.len();
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            out.put_u8(b'\t');
        }
        match value.text_bytes() {
            Ok(Some(text)) => escape_into(text, out),
            Ok(None) => out.put_slice(b"\\N"),
            Err(()) => {
                out.truncate(start);
                return false;
            }
        }
    }
    out.put_u8(b'\n');
    true
}

/// Copies `text` into `out`, escaping COPY's special bytes; runs without one
/// are copied whole.
fn escape_into(text: &[u8], out: &mut BytesMut) {
    let mut rest = text;
    while let Some(at) = rest
        .iter()
        .position(|b| matches!(b, b'\\' | b'\t' | b'\n' | b'\r'))
    {
        let (plain, tail) = rest.split_at(at);
        out.put_slice(plain);
        let Some((&special, after)) = tail.split_first() else {
            return;
        };
        out.put_slice(match special {
            b'\\' => b"\\\\",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            _ => b"\\r",
        });
        rest = after;
    }
    out.put_slice(rest);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn text(s: &str) -> WireValue {
        WireValue::text(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn rows_are_tab_separated_with_escapes_and_nulls() {
        let mut out = BytesMut::new();
        assert!(encode_copy_row(
            &[
                text("acme:variable:a\tb"),
                text("1"),
                text("\\x0102"),
                WireValue::NULL
            ],
            &mut out
        ));
        assert!(encode_copy_row(
            &[text("line\nbreak\r"), text(""), text("x")],
            &mut out
        ));
        assert_eq!(
            &out[..],
            b"acme:variable:a\\tb\t1\t\\\\x0102\t\\N\nline\\nbreak\\r\t\tx\n"
        );
    }

    #[test]
    fn a_binary_value_refuses_the_row_and_leaves_the_buffer() {
        let mut out = BytesMut::from(&b"earlier\n"[..]);
        assert!(!encode_copy_row(
            &[
                text("a"),
                WireValue::binary(Bytes::from_static(&[0, 0, 0, 1]))
            ],
            &mut out
        ));
        assert_eq!(&out[..], b"earlier\n");
    }
}
