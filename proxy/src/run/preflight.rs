//! Before `run` touches any server: one session to each, so a wrong
//! certificate or password is one clear error before anything is written.

use crate::config::Config;
use crate::conn::{ConnectError, connect_client};

/// Opens (and closes) a session to the leader and to every follower before
/// `run` touches any of them, so a wrong CA, a wrong host name, a server
/// without TLS under `sslmode=require` or a refused password is one clear
/// error before anything is written. Unreachable servers are left to
/// `run`'s retries.
pub async fn preflight(config: &Config) -> Result<(), ConnectError> {
    let mut targets = vec![(&config.leader.pg, "the leader".to_owned())];
    targets.extend(
        config
            .followers
            .iter()
            .map(|f| (&f.pg, format!("follower {}", f.name))),
    );
    let attempts = targets.iter().map(|(pg, what)| connect_client(pg, what));
    for result in futures_util::future::join_all(attempts).await {
        match result {
            Ok(_) => {}
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %crate::report::error_chain(&e), "Server not reachable yet; run will retry.");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
