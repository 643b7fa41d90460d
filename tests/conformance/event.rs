//! The common form both sides are turned into: what `test_decoding` prints.

use super::*;

/// One line of `test_decoding` output (`include-xids`, `include-timestamp`,
/// `skip-empty-xacts`), with the row's LSN where it identifies a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Event {
    /// `BEGIN xid`
    Begin { xid: u32 },
    /// `COMMIT xid (at time)`; the row's LSN is the transaction's end LSN.
    Commit { xid: u32, end_lsn: Lsn, at: String },
    /// `PREPARE TRANSACTION 'gid', txid xid (at time)`; LSN = end of the prepare record.
    Prepare {
        gid: String,
        xid: u32,
        end_lsn: Lsn,
        at: String,
    },
    /// `COMMIT PREPARED 'gid', txid xid (at time)`
    CommitPrepared {
        gid: String,
        xid: u32,
        end_lsn: Lsn,
        at: String,
    },
    /// `ROLLBACK PREPARED 'gid', txid xid (at time)`
    RollbackPrepared {
        gid: String,
        xid: u32,
        end_lsn: Lsn,
        at: String,
    },
    /// `message: transactional: 1 prefix: p, sz: n content:…`; LSN of the message.
    Message {
        transactional: bool,
        prefix: String,
        content: String,
        lsn: Lsn,
    },
    /// `table s.t: INSERT: fields`
    Insert { table: String, new: Vec<Field> },
    /// `table s.t: UPDATE: [old-key: fields new-tuple:] fields`
    Update {
        table: String,
        old: Option<Vec<Field>>,
        new: Vec<Field>,
    },
    /// `table s.t: DELETE: fields` (the old key or old row, NULLs left out)
    Delete { table: String, old: Vec<Field> },
    /// `table s.a, s.b: TRUNCATE: [restart_seqs] [cascade] | (no-flags)`
    Truncate {
        tables: Vec<String>,
        restart_seqs: bool,
        cascade: bool,
    },
}

/// One column as `test_decoding` prints it: ` name[type]:value`, where `value` is
/// `null`, `unchanged-toast-datum` or the literal (see [`literal`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Field {
    pub(super) name: String,
    pub(super) type_name: String,
    pub(super) value: String,
}

impl Event {
    /// Every column of the change (none for other events).
    pub(super) fn fields(&self) -> impl Iterator<Item = &Field> {
        let (a, b): (&[Field], &[Field]) = match self {
            Event::Insert { new, .. } => (new, &[]),
            Event::Update { old, new, .. } => (old.as_deref().unwrap_or_default(), new),
            Event::Delete { old, .. } => (old, &[]),
            _ => (&[], &[]),
        };
        a.iter().chain(b)
    }

    /// Every column of the change, to fill in deferred binary values.
    pub(super) fn fields_mut(&mut self) -> impl Iterator<Item = &mut Field> {
        let (a, b): (&mut [Field], &mut [Field]) = match self {
            Event::Insert { new, .. } => (new, &mut []),
            Event::Update { old, new, .. } => (old.as_deref_mut().unwrap_or_default(), new),
            Event::Delete { old, .. } => (old, &mut []),
            _ => (&mut [], &mut []),
        };
        a.iter_mut().chain(b)
    }

    /// The line plus the LSN the comparison also checks, for failure messages.
    pub(super) fn describe(&self) -> String {
        let line = self.to_string();
        let line = match line.char_indices().nth(300) {
            Some((i, _)) => format!("{}…", &line[..i]),
            None => line,
        };
        match self {
            Event::Commit { end_lsn, .. }
            | Event::Prepare { end_lsn, .. }
            | Event::CommitPrepared { end_lsn, .. }
            | Event::RollbackPrepared { end_lsn, .. } => format!("{line}  @{end_lsn}"),
            Event::Message { lsn, .. } => format!("{line}  @{lsn}"),
            _ => line,
        }
    }
}

/// Renders exactly the line `test_decoding` prints (the parser's self-check relies
/// on it).
impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fields = |f: &mut fmt::Formatter<'_>, fields: &[Field]| -> fmt::Result {
            for field in fields {
                write!(
                    f,
                    " {}[{}]:{}",
                    quote_ident(&field.name),
                    field.type_name,
                    field.value
                )?;
            }
            Ok(())
        };
        match self {
            Event::Begin { xid } => write!(f, "BEGIN {xid}"),
            Event::Commit { xid, at, .. } => write!(f, "COMMIT {xid} (at {at})"),
            Event::Prepare { gid, xid, at, .. } => {
                write!(
                    f,
                    "PREPARE TRANSACTION {}, txid {xid} (at {at})",
                    quote_literal(gid)
                )
            }
            Event::CommitPrepared { gid, xid, at, .. } => {
                write!(
                    f,
                    "COMMIT PREPARED {}, txid {xid} (at {at})",
                    quote_literal(gid)
                )
            }
            Event::RollbackPrepared { gid, xid, at, .. } => {
                write!(
                    f,
                    "ROLLBACK PREPARED {}, txid {xid} (at {at})",
                    quote_literal(gid)
                )
            }
            Event::Message {
                transactional,
                prefix,
                content,
                ..
            } => write!(
                f,
                "message: transactional: {} prefix: {prefix}, sz: {} content:{content}",
                u8::from(*transactional),
                content.len()
            ),
            Event::Insert { table, new } => {
                write!(f, "table {table}: INSERT:")?;
                fields(f, new)
            }
            Event::Update { table, old, new } => {
                write!(f, "table {table}: UPDATE:")?;
                if let Some(old) = old {
                    f.write_str(" old-key:")?;
                    fields(f, old)?;
                    f.write_str(" new-tuple:")?;
                }
                fields(f, new)
            }
            Event::Delete { table, old } => {
                write!(f, "table {table}: DELETE:")?;
                fields(f, old)
            }
            Event::Truncate {
                tables,
                restart_seqs,
                cascade,
            } => {
                write!(f, "table {}: TRUNCATE:", tables.join(", "))?;
                if *restart_seqs {
                    f.write_str(" restart_seqs")?;
                }
                if *cascade {
                    f.write_str(" cascade")?;
                }
                if !restart_seqs && !cascade {
                    f.write_str(" (no-flags)")?;
                }
                Ok(())
            }
        }
    }
}

/// A column name as `quote_identifier` prints it, for the names this workload uses
/// (lower-case, digits, `_`; none of them a reserved keyword).
pub(super) fn quote_ident(name: &str) -> String {
    let plain = name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

/// A value in text output format as `test_decoding`'s `print_literal` prints it:
/// numbers bare, bit strings as `B'…'`, booleans as `true`/`false`, everything else
/// quoted with `'` doubled.
pub(super) fn literal(type_oid: u32, text: &str) -> String {
    match type_oid {
        INT2OID | INT4OID | INT8OID | OIDOID | FLOAT4OID | FLOAT8OID | NUMERICOID => {
            text.to_string()
        }
        BITOID | VARBITOID => format!("B'{text}'"),
        BOOLOID => if text == "t" { "true" } else { "false" }.to_string(),
        _ => quote_literal(text),
    }
}

/// Asserts that the decoded stream equals the oracle's, in order; on failure shows
/// the counts and the first difference with some context.
#[track_caller]
pub(super) fn assert_same_events(label: &str, expected: &[Event], actual: &[Event]) {
    if expected == actual {
        return;
    }
    let at = expected
        .iter()
        .zip(actual)
        .position(|(e, a)| e != a)
        .unwrap_or(expected.len().min(actual.len()));
    let show = |events: &[Event]| {
        events
            .iter()
            .enumerate()
            .skip(at.saturating_sub(3))
            .take(7)
            .map(|(i, e)| format!("  {i:5} {}", e.describe()))
            .collect::<Vec<_>>()
            .join("\n")
    };
    panic!(
        "{label}: decoded pgoutput differs from test_decoding at event {at} \
         (test_decoding: {} events, pgoutput: {} events)\n\
         test_decoding:\n{}\npgoutput:\n{}",
        expected.len(),
        actual.len(),
        show(expected),
        show(actual),
    );
}
