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

/// `line` without the row values PostgreSQL quotes in constraint errors:
/// `Failing row contains (…)` (not-null and check violations) and
/// `Key (cols)=(…)` (unique, foreign-key and exclusion violations). What
/// follows a value is dropped too: values may contain anything, so where
/// one ends cannot be told for sure.
pub fn redact_row_values(line: &str) -> String {
    const FAILING_ROW: &str = "Failing row contains (";
    if let Some(at) = line.find(FAILING_ROW) {
        return format!("{}{REDACTED})", &line[..at + FAILING_ROW.len()]);
    }
    if let Some(key) = line.find("Key (") {
        if let Some(eq) = line[key..].find(")=(") {
            let head = &line[..key + eq + 3];
            let rest = &line[key + eq + 3..];
            let outcome = [
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
            ]
            .iter()
            .find(|(marker, _)| rest.contains(marker))
            .map_or("", |(_, said)| said);
            return format!("{head}{REDACTED}){outcome}");
        }
    }
    line.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn causes_are_appended_once_on_one_line() {
        assert_eq!(
            error_chain(&Outer(Wrapper(Inner))),
            "connecting to the leader: db error: inner failed; DETAIL: why"
        );
    }
}
