/*!
What a column value prints as in the tap: the one place that knows which
columns hold secret material (ARCHITECTURE.md, "Invariants": no values in logs).

Conjur encrypts five kinds of value with slosilo: `secrets.value`,
`credentials.api_key` and `credentials.encrypted_hash`,
`slosilo_keystore.key`, `host_factory_tokens.token` and `issuers.data`.
Ciphertext is still material an attacker wants next to a stolen data key, so
every one of them prints as `<redacted N bytes>` unless the operator asks for
values with `--show-values`. Everything else prints as PostgreSQL's text form.
*/

use std::borrow::Cow;

use pgsieve_protocol::pgoutput::Column;

/// `(table, column)` pairs whose values are redacted (table names without schema).
pub const SENSITIVE_COLUMNS: &[(&str, &str)] = &[
    ("secrets", "value"),
    ("credentials", "api_key"),
    ("credentials", "encrypted_hash"),
    ("slosilo_keystore", "key"),
    ("host_factory_tokens", "token"),
    ("issuers", "data"),
];

/// Whether `table.column` holds secret material.
pub fn is_sensitive(table: &str, column: &str) -> bool {
    SENSITIVE_COLUMNS
        .iter()
        .any(|&(t, c)| t == table && c == column)
}

/// A column value as the tap shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shown<'a> {
    /// SQL NULL.
    Null,
    /// An unchanged TOASTed value the leader did not send.
    UnchangedToast,
    /// The value's text form (lossy UTF-8).
    Text(Cow<'a, str>),
    /// A sensitive value, hidden; `bytes` is its length in bytes.
    Redacted {
        /// Length of the value (for `bytea` text `\x…`, the decoded length).
        bytes: usize,
    },
}

impl Shown<'_> {
    /// The value as a JSON-ready string (`None` for NULL).
    pub fn to_json_string(&self) -> Option<String> {
        match self {
            Shown::Null => None,
            Shown::UnchangedToast => Some("<unchanged toast>".into()),
            Shown::Text(t) => Some(t.to_string()),
            Shown::Redacted { bytes } => Some(format!("<redacted {bytes} bytes>")),
        }
    }
}

/// Decides how `table.column`'s `value` prints: redacted when sensitive and
/// `show_values` is false, otherwise its text (binary-format values as `\x` hex).
pub fn show<'a>(table: &str, column: &str, value: Column<'a>, show_values: bool) -> Shown<'a> {
    match value {
        Column::Null => Shown::Null,
        Column::UnchangedToast => Shown::UnchangedToast,
        Column::Text(bytes) if !show_values && is_sensitive(table, column) => Shown::Redacted {
            bytes: text_value_len(bytes),
        },
        Column::Binary(bytes) if !show_values && is_sensitive(table, column) => {
            Shown::Redacted { bytes: bytes.len() }
        }
        Column::Text(bytes) => Shown::Text(String::from_utf8_lossy(bytes)),
        Column::Binary(bytes) => {
            let mut hex = String::with_capacity(2 + 2 * bytes.len());
            hex.push_str("\\x");
            for b in bytes {
                hex.push_str(&format!("{b:02x}"));
            }
            Shown::Text(Cow::Owned(hex))
        }
    }
}

/// Length of the value behind a text-format column: `bytea` in hex output
/// (`\x` + two digits per byte) counts its bytes, anything else its text.
fn text_value_len(text: &[u8]) -> usize {
    match text.strip_prefix(b"\\x") {
        Some(hex) if hex.len() % 2 == 0 && hex.iter().all(u8::is_ascii_hexdigit) => hex.len() / 2,
        _ => text.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_values_are_redacted_with_their_decoded_length() {
        let v = show("secrets", "value", Column::Text(b"\\x476869"), false);
        assert_eq!(v, Shown::Redacted { bytes: 3 });
        assert_eq!(v.to_json_string().as_deref(), Some("<redacted 3 bytes>"));
        let b = show("issuers", "data", Column::Binary(&[1, 2, 3, 4]), false);
        assert_eq!(b, Shown::Redacted { bytes: 4 });
    }

    #[test]
    fn every_listed_column_is_redacted_and_others_are_not() {
        for &(table, column) in SENSITIVE_COLUMNS {
            assert!(matches!(
                show(table, column, Column::Text(b"\\x00"), false),
                Shown::Redacted { bytes: 1 }
            ));
        }
        assert_eq!(
            show(
                "secrets",
                "resource_id",
                Column::Text(b"a:variable:x"),
                false
            ),
            Shown::Text("a:variable:x".into())
        );
        assert_eq!(
            show("resources", "value", Column::Text(b"x"), false),
            Shown::Text("x".into())
        );
    }

    #[test]
    fn show_values_prints_them_and_null_stays_null() {
        assert_eq!(
            show("secrets", "value", Column::Text(b"\\x4142"), true),
            Shown::Text("\\x4142".into())
        );
        assert_eq!(
            show("secrets", "value", Column::Binary(b"AB"), true),
            Shown::Text("\\x4142".into())
        );
        assert_eq!(show("secrets", "value", Column::Null, false), Shown::Null);
        assert_eq!(
            show("secrets", "value", Column::UnchangedToast, false),
            Shown::UnchangedToast
        );
    }
}
