//! Which server errors may go away on their own: one rule for every
//! connection, replication and SQL alike (`run::policy` builds on it).

/// Whether an ordinary SQL session's error may go away on its own (the same
/// rule as the replication connection's errors): a lost or refused connection, or a
/// server error whose SQLSTATE says the server is restarting or busy.
pub fn is_transient_sql_error(error: &tokio_postgres::Error) -> bool {
    if error.is_closed() {
        return true;
    }
    match error.code() {
        Some(code) => is_transient_sqlstate(code.code()),
        None => error.as_db_error().is_none(),
    }
}

/// SQLSTATEs after which a retry can succeed on its own.
pub fn is_transient_sqlstate(code: &str) -> bool {
    // 08: connection exception; 57: operator intervention (57P01 admin
    // shutdown, 57P02 crash shutdown, 57P03 cannot connect now); 53:
    // insufficient resources (53300 too many connections); 55006 object in
    // use (the slot is still active for the previous walsender); 40001/40P01
    // serialization failure/deadlock.
    code.starts_with("08")
        || code.starts_with("57")
        || code.starts_with("53")
        || code == "55006"
        || code == "40001"
        || code == "40P01"
}
