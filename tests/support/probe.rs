//! Talking to a running pgsieve's `/metrics`, `/healthz` and `/readyz`,
//! and holding a follower back with a lock: shared by the metrics and hub
//! tests.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use pgsieve::harness::Topology;
use pgsieve::harness::cluster::CONJUR_DB;
use pgsieve::harness::process::{FollowerEntry, PgsieveConfig, PgsieveProcess};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::Client;

use super::ok;

/// How long a probe may take to reach an expected state.
pub const PROBE: Duration = Duration::from_secs(60);

/// One HTTP answer.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Body text.
    pub body: String,
}

/// `GET path` over a plain HTTP/1.0 connection; `None` if nothing answers.
pub async fn get(port: u16, path: &str) -> Option<Reply> {
    get_with_token(port, path, None).await
}

/// [`get`] with `Authorization: Bearer <token>` when a token is given.
pub async fn get_with_token(port: u16, path: &str, token: Option<&str>) -> Option<Reply> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{auth}\r\n").as_bytes())
        .await
        .ok()?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some(Reply {
        status,
        body: body.to_owned(),
    })
}

/// Polls `path` until `done` holds, or panics naming `what` with the last
/// answer and the pgsieve log.
pub async fn poll(
    port: u16,
    path: &str,
    what: &str,
    pgsieve: &PgsieveProcess,
    done: impl Fn(&Reply) -> bool,
) -> Reply {
    let deadline = Instant::now() + PROBE;
    loop {
        let reply = get(port, path).await;
        match reply {
            Some(reply) if done(&reply) => return reply,
            last if Instant::now() > deadline => {
                panic!(
                    "{what}: {path} never got there; last answer {last:?}\npgsieve log:\n{}",
                    pgsieve.log()
                )
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// The value of one series of a Prometheus text exposition (labels matched
/// as a set), `None` if absent.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<&str, &str> = labels.iter().copied().collect();
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.rsplit_once(' '))
        .find_map(|(series, value)| {
            let (metric, labels) = match series.split_once('{') {
                Some((metric, rest)) => (metric, rest.strip_suffix('}')?),
                None => (series, ""),
            };
            let got: BTreeMap<&str, &str> = labels
                .split(',')
                .filter(|kv| !kv.is_empty())
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k, v.trim_matches('"')))
                .collect();
            (metric == name && got == want)
                .then(|| value.parse().ok())
                .flatten()
        })
}

/// Like [`sample`], 0 when the series is absent (a counter never touched).
pub fn count(text: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    sample(text, name, labels).unwrap_or(0.0) as u64
}

/// A config with the topology's first follower as `name`, filtered by the
/// data group `group`, `[metrics]` listening on `port` with the `metrics`
/// keys given, and `extra` TOML after it.
pub fn probed_config(
    topology: &Topology,
    slot: &str,
    (name, group): (&str, &str),
    port: u16,
    metrics: &str,
    extra: &str,
) -> PgsieveConfig {
    let mut config = PgsieveConfig::new(
        &topology.leader,
        slot,
        vec![FollowerEntry::filtered(name, &topology.followers[0], group)],
    );
    config.extra = format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n{metrics}{extra}");
    config
}

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Takes `secrets` on the follower until the returned session commits.
pub async fn lock_secrets(follower: &pgsieve::harness::Cluster) -> Client {
    let blocker = ok(follower.connect(CONJUR_DB).await);
    blocker
        .batch_execute("BEGIN; LOCK TABLE secrets IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("locking secrets on the follower");
    blocker
}
