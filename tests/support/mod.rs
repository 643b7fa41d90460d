//! Helpers shared by the integration test modules (the harness itself lives in
//! `pgsieve::harness`; only test-side conveniences go here).

use pgsieve::harness::HarnessError;

/// Unwraps a harness result, printing the error's full text (server log tails and
/// server messages included) instead of a `Debug` dump.
#[track_caller]
pub fn ok<T>(r: Result<T, HarnessError>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub fn accepts_connections(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        std::time::Duration::from_millis(500),
    )
    .is_ok()
}

pub mod mix;
