//! One line per error, with every cause: wrapped library errors such as
//! tokio-postgres' `db error` hide the server's message in their source
//! chain, and an operator needs that message, not the wrapper's.
//!
//! Row values never make it into that line: a server's `DETAIL: Failing row
//! contains (…)` or `Key (id)=(…) already exists.` quotes the row (a secret's
//! value, an API key hash), and the line goes to logs and to `/readyz`. The
//! column names stay; the values are replaced (see [`redact_row_values`]).

use std::error::Error;

/// `error: cause: cause…` on one line. A cause whose text the line already
/// holds (an error that prints its source itself) is not repeated;
/// multi-line causes (a server's DETAIL and HINT) are joined with `; `.
pub fn error_chain(error: &(dyn Error + 'static)) -> String {
    let mut line = one_line(&error.to_string());
    let mut cause = error.source();
    while let Some(e) = cause {
        let text = one_line(&e.to_string());
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = e.source();
    }
    line
}

fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(redact_row_values)
        .collect::<Vec<_>>()
        .join("; ")
}

/// What stands where row values were.
const REDACTED: &str = "values redacted";

/// The outcomes PostgreSQL writes after `Key (…)=(…)`, and what stays of them.
const KEY_OUTCOMES: [(&str, &str); 4] = [
    (") already exists", " already exists."),
    (
        ") is not present in table",
        " is not present in the referenced table.",
    ),
    (") is still referenced from table", " is still referenced."),
    (
        ") conflicts with existing key",
        " conflicts with an existing key.",
    ),
];

/// `line` without the row values PostgreSQL quotes in constraint errors:
/// `Failing row contains (…)` (not-null and check violations) and
/// `Key (cols)=(…)` (unique, foreign-key and exclusion violations). Values
/// may contain anything, so where one ends cannot be told for sure: the rest
/// of the line goes too, or, in a JSON log line, the rest of that string.
pub fn redact_row_values(line: &str) -> String {
    const FAILING_ROW: &str = "Failing row contains (";
    let json = line.trim_start().starts_with('{');
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    loop {
        let failing = rest
            .find(FAILING_ROW)
            .map(|at| (at, at + FAILING_ROW.len()));
        let key = rest.find("Key (").and_then(|at| {
            let eq = rest[at..].find(")=(")?;
            Some((at, at + eq + 3))
        });
        let (values_at, is_key) = match (failing, key) {
            (Some(f), Some(k)) if k.0 < f.0 => (k.1, true),
            (Some(f), _) => (f.1, false),
            (None, Some(k)) => (k.1, true),
            (None, None) => break,
        };
        out.push_str(&rest[..values_at]);
        out.push_str(REDACTED);
        out.push(')');
        let tail = &rest[values_at..];
        let end = if json { string_end(tail) } else { tail.len() };
        if is_key {
            let skipped = &tail[..end];
            if let Some((_, said)) = KEY_OUTCOMES.iter().find(|(m, _)| skipped.contains(m)) {
                out.push_str(said);
            }
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// Index of the first unescaped `"` (the end of the JSON string `text` is
/// inside), or the end of `text`.
fn string_end(text: &str) -> usize {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return i,
            _ => i += 1,
        }
    }
    text.len()
}

/// The log writer: standard error, every line passed through
/// [`redact_row_values`], so no log line (text or JSON, whatever code
/// formatted it) carries a row value a server quoted in an error.
pub fn redacting_stderr() -> RedactingStderr {
    RedactingStderr
}

/// See [`redacting_stderr`].
#[derive(Debug, Clone, Copy)]
pub struct RedactingStderr;

impl std::io::Write for RedactingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // The fmt layer writes one whole event per call.
        let text = String::from_utf8_lossy(buf);
        let redacted: String = text
            .split_inclusive('\n')
            .map(|line| match line.strip_suffix('\n') {
                Some(body) => redact_row_values(body) + "\n",
                None => redact_row_values(line),
            })
            .collect();
        std::io::stderr().write_all(redacted.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// RFC 3339 UTC with microseconds of a leader timestamp: how every
/// human-facing output (tap, status, bench) writes time.
pub fn format_timestamp(ts: pgsieve_protocol::PgTimestamp) -> String {
    const PG_EPOCH_UNIX_MICROS: i64 = 946_684_800_000_000;
    let unix_micros = ts.0.saturating_add(PG_EPOCH_UNIX_MICROS);
    let secs = unix_micros.div_euclid(1_000_000);
    let micros = unix_micros.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}Z",
        of_day / 3600,
        (of_day / 60) % 60,
        of_day % 60
    )
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgsieve_protocol::PgTimestamp;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(
            format_timestamp(PgTimestamp(0)),
            "2000-01-01T00:00:00.000000Z"
        );
        // 2024-02-29 12:34:56.789012 UTC = Unix 1_709_210_096.
        let unix = 1_709_210_096_i64;
        let ts = PgTimestamp((unix - 946_684_800) * 1_000_000 + 789_012);
        assert_eq!(format_timestamp(ts), "2024-02-29T12:34:56.789012Z");
        assert_eq!(
            format_timestamp(PgTimestamp(-1)),
            "1999-12-31T23:59:59.999999Z"
        );
    }

    #[derive(Debug, thiserror::Error)]
    #[error("inner failed\nDETAIL: why")]
    struct Inner;

    #[derive(Debug, thiserror::Error)]
    #[error("db error")]
    struct Wrapper(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("connecting to the leader: {0}")]
    struct Outer(#[source] Wrapper);

    #[derive(Debug, thiserror::Error)]
    #[error(
        "ERROR: duplicate key value violates unique constraint \"secrets_pkey\"\nDETAIL: Key (resource_id, version)=(acme:variable:db/pw, 3) already exists."
    )]
    struct Duplicate;

    #[derive(Debug, thiserror::Error)]
    #[error(
        "ERROR: new row for relation \"secrets\" violates check constraint \"v\"\nDETAIL: Failing row contains (acme:variable:x, 1, \\x73336372337421, null)."
    )]
    struct Check;

    #[test]
    fn row_values_never_reach_the_line() {
        let line = error_chain(&Outer(Wrapper(Inner)));
        assert!(line.contains("DETAIL: why"), "{line}");
        let line = error_chain(&Duplicate);
        assert_eq!(
            line,
            "ERROR: duplicate key value violates unique constraint \"secrets_pkey\"; DETAIL: Key (resource_id, version)=(values redacted) already exists."
        );
        let line = error_chain(&Check);
        assert!(
            line.ends_with("DETAIL: Failing row contains (values redacted)"),
            "{line}"
        );
        assert!(!line.contains("7337") && !line.contains("acme"), "{line}");
        assert_eq!(
            redact_row_values(
                "leader ERROR 23503: x (Key (a)=(1)) is not present in table \"t\".)"
            ),
            "leader ERROR 23503: x (Key (a)=(values redacted) is not present in the referenced table."
        );
    }

    #[test]
    fn json_log_lines_stay_json() {
        let line = r#"{"level":"ERROR","fields":{"error":"db: ERROR: dup; DETAIL: Key (id)=(s3cr\"t) already exists.","follower":"east"}}"#;
        let redacted = redact_row_values(line);
        assert_eq!(
            redacted,
            r#"{"level":"ERROR","fields":{"error":"db: ERROR: dup; DETAIL: Key (id)=(values redacted) already exists.","follower":"east"}}"#
        );
        assert!(!redacted.contains("s3cr"));
        let twice = r#"{"a":"Failing row contains (x, y).","b":"Failing row contains (z)."}"#;
        assert_eq!(
            redact_row_values(twice),
            r#"{"a":"Failing row contains (values redacted)","b":"Failing row contains (values redacted)"}"#
        );
    }

    #[test]
    fn causes_are_appended_once_on_one_line() {
        assert_eq!(
            error_chain(&Outer(Wrapper(Inner))),
            "connecting to the leader: db error: inner failed; DETAIL: why"
        );
    }
}
