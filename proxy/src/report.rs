//! One line per error, with every cause: wrapped library errors such as
//! tokio-postgres' `db error` hide the server's message in their source
//! chain, and an operator needs that message, not the wrapper's.

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
        .collect::<Vec<_>>()
        .join("; ")
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

    #[test]
    fn causes_are_appended_once_on_one_line() {
        assert_eq!(
            error_chain(&Outer(Wrapper(Inner))),
            "connecting to the leader: db error: inner failed; DETAIL: why"
        );
    }
}
