/*!
`pgsieve status`: where replication stands, read from the databases themselves (the
leader's slot and each follower's replication origin), so it works whether or not
`pgsieve run` is up; and, when `[metrics] listen` is set, what only the running
process knows — attached or detached and why, lag in seconds, stalls, the last
re-sync and the last apply error — from its `/status` endpoint (the same
listener as `/metrics`, so nothing new to open). These are kept in memory, not
stored: they describe the process that is running, and a process that is not
running is reported as such.

The JSON form (`--format json`) is a stable interface for monitoring scripts; its
fields are documented in the README ("Operating") and must not be renamed.
*/

use std::fmt::Write as _;
use std::str::FromStr;

use pgsieve_protocol::Lsn;
use serde::Serialize;
use tokio_postgres::Client;

use crate::config::{Config, FollowerConfig};
use crate::metrics::RuntimeStatus;
use crate::metrics::followers::Event;
use crate::ops::check::{connect, db_message};

/// Renders `t` as UTC RFC 3339 with microseconds, in SQL (no date library needed).
const RFC3339_UTC: &str = r#"'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'"#;

/// Everything `pgsieve status` reports.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StatusReport {
    /// The leader.
    pub leader: LeaderStatus,
    /// pgsieve's replication slot on the leader.
    pub slot: SlotStatus,
    /// One entry per configured follower, in config order.
    pub followers: Vec<FollowerStatus>,
    /// The running `pgsieve run`, through its metrics listener.
    pub process: ProcessStatus,
}

/// The running process, as its `/status` endpoint describes it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ProcessStatus {
    /// The address asked (`[metrics] listen`); `None` when not configured.
    pub listen: Option<String>,
    /// Whether it answered.
    pub reachable: bool,
    /// `starting` (connecting or initial copy), `streaming` or `down`.
    pub state: Option<String>,
    /// Why it is `down`.
    pub reason: Option<String>,
    /// The last heartbeat written on the leader.
    pub last_heartbeat: Option<Event>,
    /// The last heartbeat failure.
    pub last_heartbeat_error: Option<Event>,
    /// Why it could not be asked (not configured, not running, …).
    pub error: Option<String>,
}

/// The leader's side.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LeaderStatus {
    /// `pg_current_wal_lsn()`, `X/X`; `None` when the leader could not be read.
    pub current_wal_lsn: Option<String>,
    /// Why the leader could not be read; `None` when it was.
    pub error: Option<String>,
}

/// The slot as `pg_replication_slots` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SlotStatus {
    /// Slot name (config `[leader] slot`).
    pub name: String,
    /// Whether the slot exists.
    pub exists: bool,
    /// Whether a walsender streams from it now (pgsieve is running).
    pub active: bool,
    /// Position up to which the followers have durably applied (`X/X`).
    pub confirmed_flush_lsn: Option<String>,
    /// Oldest WAL position the slot keeps (`X/X`).
    pub restart_lsn: Option<String>,
    /// WAL the leader keeps for the slot: current WAL LSN − restart LSN.
    pub wal_retained_bytes: Option<u64>,
    /// Current WAL LSN − confirmed flush LSN.
    pub lag_bytes: Option<u64>,
    /// When the leader last heard from pgsieve (`pg_stat_replication.reply_time`, UTC);
    /// `None` when not streaming or not visible to the role (needs `pg_read_all_stats`).
    pub last_feedback_time: Option<String>,
}

/// One follower.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FollowerStatus {
    /// Follower name (config `[[follower]] name`).
    pub name: String,
    /// The replication origin holding its progress.
    pub origin: String,
    /// Position of the last leader transaction applied (`X/X`), from
    /// `pg_replication_origin_progress(origin, true)`; `None` before the first copy.
    pub origin_lsn: Option<String>,
    /// Leader's current WAL LSN − origin LSN. Unrelated leader WAL (other databases,
    /// checkpoints) counts too, so an idle follower can show a small non-zero lag.
    pub lag_bytes: Option<u64>,
    /// Commit time (UTC) of the follower's last transaction when that transaction was
    /// pgsieve's (its origin) and `track_commit_timestamp = on`; otherwise `None`.
    pub last_apply_time: Option<String>,
    /// Why this follower could not be read; `None` when it was.
    pub error: Option<String>,
    /// From the running process (all `None` when it could not be asked):
    /// fed by the stream, or detached (hub mode).
    pub attached: Option<bool>,
    /// Why it is detached.
    pub detached_reason: Option<String>,
    /// Age in seconds of the newest leader commit (heartbeats included)
    /// durably applied: `pgsieve_follower_lag_seconds`.
    pub lag_seconds: Option<f64>,
    /// Applied position standing still while the leader's moves.
    pub stalled: Option<bool>,
    /// The last re-sync of variables (backfill or purge) since the process started.
    pub last_resync: Option<Event>,
    /// The last apply error since the process started.
    pub last_apply_error: Option<Event>,
}

impl StatusReport {
    /// Whether every database could be read (the exit code of `pgsieve status`).
    pub fn is_complete(&self) -> bool {
        self.leader.error.is_none() && self.followers.iter().all(|f| f.error.is_none())
    }

    /// The report as one JSON object (field names as documented in the README).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| {
            // Serialising plain strings and numbers cannot fail; keep the CLI total anyway.
            format!("{{\"error\": \"cannot serialise the status: {e}\"}}")
        })
    }

    /// The report for people.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "unknown".into());
        let bytes = |v: Option<u64>| v.map_or_else(|| "unknown".into(), |b| format!("{b} bytes"));
        match &self.leader.error {
            Some(e) => {
                let _ = writeln!(out, "leader: unreachable: {e}");
            }
            None => {
                let _ = writeln!(
                    out,
                    "leader: current WAL LSN {}",
                    show(&self.leader.current_wal_lsn)
                );
            }
        }
        let s = &self.slot;
        if s.exists {
            let _ = writeln!(
                out,
                "slot {}: {}, confirmed flush {}, restart {}, WAL retained {}, lag {}, last feedback {}",
                s.name,
                if s.active { "active" } else { "inactive" },
                show(&s.confirmed_flush_lsn),
                show(&s.restart_lsn),
                bytes(s.wal_retained_bytes),
                bytes(s.lag_bytes),
                show(&s.last_feedback_time),
            );
        } else if self.leader.error.is_none() {
            let _ = writeln!(out, "slot {}: does not exist", s.name);
        }
        for f in &self.followers {
            match &f.error {
                Some(e) => {
                    let _ = writeln!(out, "follower {}: unreachable: {e}", f.name);
                }
                None => {
                    let _ = writeln!(
                        out,
                        "follower {}: origin {} at {}, lag {}, last apply {}",
                        f.name,
                        f.origin,
                        f.origin_lsn
                            .clone()
                            .unwrap_or_else(|| "none (not copied yet)".into()),
                        bytes(f.lag_bytes),
                        show(&f.last_apply_time),
                    );
                }
            }
            if !self.process.reachable {
                continue;
            }
            let state = match (f.attached, &f.detached_reason, f.stalled) {
                (None, _, _) => "not in the running session".to_owned(),
                (Some(false), reason, _) => {
                    format!("detached: {}", reason.as_deref().unwrap_or("unknown"))
                }
                (Some(true), _, Some(true)) => "attached, STALLED".to_owned(),
                (Some(true), _, _) => "attached".to_owned(),
            };
            let event = |e: &Option<Event>| {
                e.as_ref()
                    .map_or_else(|| "none".to_owned(), |e| format!("{} {}", e.at, e.what))
            };
            let _ = writeln!(
                out,
                "  {state}, lag {}, last resync {}, last apply error {}",
                f.lag_seconds
                    .map_or_else(|| "unknown".to_owned(), |s| format!("{s:.1} s")),
                event(&f.last_resync),
                event(&f.last_apply_error),
            );
        }
        let p = &self.process;
        match (&p.listen, p.reachable) {
            (_, true) => {
                let _ = writeln!(
                    out,
                    "pgsieve run: {}{}, last heartbeat {}",
                    p.state.as_deref().unwrap_or("unknown"),
                    p.reason
                        .as_ref()
                        .map_or_else(String::new, |r| format!(" ({r})")),
                    p.last_heartbeat
                        .as_ref()
                        .map_or_else(|| "none".to_owned(), |e| e.at.clone()),
                );
            }
            (_, false) => {
                let _ = writeln!(
                    out,
                    "pgsieve run: unknown: {}",
                    p.error.as_deref().unwrap_or("not asked")
                );
            }
        }
        out
    }
}

/// Reads the status of the slot and every follower. Never fails as a whole: what
/// could not be read is reported in the `error` fields.
pub async fn read_status(config: &Config) -> StatusReport {
    let mut slot = SlotStatus {
        name: config.leader.slot.clone(),
        exists: false,
        active: false,
        confirmed_flush_lsn: None,
        restart_lsn: None,
        wal_retained_bytes: None,
        lag_bytes: None,
        last_feedback_time: None,
    };
    let (leader, current) = match read_leader(config, &mut slot).await {
        Ok(current) => (
            LeaderStatus {
                current_wal_lsn: Some(current.to_string()),
                error: None,
            },
            Some(current),
        ),
        Err(e) => (
            LeaderStatus {
                current_wal_lsn: None,
                error: Some(e),
            },
            None,
        ),
    };
    let origin = config.origin_name();
    let mut followers = Vec::with_capacity(config.followers.len());
    for f in &config.followers {
        followers.push(read_follower(f, &origin, current).await);
    }
    let mut report = StatusReport {
        leader,
        slot,
        followers,
        process: ProcessStatus {
            listen: config.metrics_listen.clone(),
            reachable: false,
            state: None,
            reason: None,
            last_heartbeat: None,
            last_heartbeat_error: None,
            error: None,
        },
    };
    match &config.metrics_listen {
        None => {
            report.process.error =
                Some("[metrics] listen is not set: nothing to ask the process".into())
        }
        Some(listen) => match ask_process(listen).await {
            Ok(runtime) => report.merge(runtime),
            Err(e) => report.process.error = Some(e),
        },
    }
    report
}

impl StatusReport {
    fn merge(&mut self, runtime: RuntimeStatus) {
        let p = &mut self.process;
        p.reachable = true;
        p.state = Some(runtime.state);
        p.reason = runtime.reason;
        p.last_heartbeat = runtime.last_heartbeat;
        p.last_heartbeat_error = runtime.last_heartbeat_error;
        for f in &mut self.followers {
            if let Some(r) = runtime.followers.iter().find(|r| r.name == f.name) {
                f.attached = Some(r.attached);
                f.detached_reason = r.detached_reason.clone();
                f.lag_seconds = Some(r.lag_seconds);
                f.stalled = Some(r.stalled);
                f.last_resync = r.last_resync.clone();
                f.last_apply_error = r.last_apply_error.clone();
            }
        }
    }
}

/// How long `status` waits for the running process.
const ASK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// `GET /status` from the process listening on `listen` (a wildcard address
/// is asked on loopback: `status` runs beside `run`).
async fn ask_process(listen: &str) -> Result<RuntimeStatus, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr: std::net::SocketAddr = match listen.parse::<std::net::SocketAddr>() {
        Ok(mut addr) => {
            if addr.ip().is_unspecified() {
                addr.set_ip(match addr {
                    std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                    std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                });
            }
            addr
        }
        Err(_) => tokio::net::lookup_host(listen)
            .await
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| format!("cannot resolve [metrics] listen {listen:?}"))?,
    };
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(b"GET /status HTTP/1.0\r\nHost: pgsieve\r\n\r\n")
            .await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(ASK_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("pgsieve run at {addr} did not answer in {ASK_TIMEOUT:?}"))?
        .map_err(|e| format!("pgsieve run is not reachable at {addr}: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("pgsieve run at {addr}: malformed answer"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!(
            "pgsieve run at {addr} answered {} (an older version without /status?)",
            head.lines().next().unwrap_or_default()
        ));
    }
    serde_json::from_str(body).map_err(|e| format!("pgsieve run at {addr}: bad /status: {e}"))
}

async fn read_leader(config: &Config, slot: &mut SlotStatus) -> Result<Lsn, String> {
    let (leader, _) = connect(&config.leader.pg, "the leader").await?;
    let current = parse_lsn(
        &leader
            .query_one("SELECT pg_catalog.pg_current_wal_lsn()::text", &[])
            .await
            .map_err(|e| format!("reading the current WAL LSN: {}", db_message(&e)))?
            .get::<_, String>(0),
    )?;
    let sql = format!(
        "SELECT s.active, s.confirmed_flush_lsn::text, s.restart_lsn::text,
                to_char(r.reply_time AT TIME ZONE 'UTC', {RFC3339_UTC})
         FROM pg_catalog.pg_replication_slots s
         LEFT JOIN pg_catalog.pg_stat_replication r ON r.pid = s.active_pid
         WHERE s.slot_name = $1"
    );
    let row = leader
        .query_opt(&sql, &[&config.leader.slot])
        .await
        .map_err(|e| format!("reading pg_replication_slots: {}", db_message(&e)))?;
    if let Some(row) = row {
        let confirmed = row
            .get::<_, Option<String>>(1)
            .map(|s| parse_lsn(&s))
            .transpose()?;
        let restart = row
            .get::<_, Option<String>>(2)
            .map(|s| parse_lsn(&s))
            .transpose()?;
        slot.exists = true;
        slot.active = row.get(0);
        slot.confirmed_flush_lsn = confirmed.map(|l| l.to_string());
        slot.restart_lsn = restart.map(|l| l.to_string());
        slot.wal_retained_bytes = restart.map(|r| current.bytes_since(r));
        slot.lag_bytes = confirmed.map(|c| current.bytes_since(c));
        slot.last_feedback_time = row.get(3);
    }
    Ok(current)
}

async fn read_follower(
    f: &FollowerConfig,
    origin: &str,
    leader_current: Option<Lsn>,
) -> FollowerStatus {
    let mut status = FollowerStatus {
        name: f.name.clone(),
        origin: origin.to_owned(),
        origin_lsn: None,
        lag_bytes: None,
        last_apply_time: None,
        error: None,
        attached: None,
        detached_reason: None,
        lag_seconds: None,
        stalled: None,
        last_resync: None,
        last_apply_error: None,
    };
    if let Err(e) = read_follower_into(f, origin, leader_current, &mut status).await {
        status.error = Some(e);
    }
    status
}

async fn read_follower_into(
    f: &FollowerConfig,
    origin: &str,
    leader_current: Option<Lsn>,
    status: &mut FollowerStatus,
) -> Result<(), String> {
    let (client, _) = connect(&f.pg, &format!("follower {}", f.name)).await?;
    let progress = client
        .query_opt(
            "SELECT pg_catalog.pg_replication_origin_progress(roname, true)::text
             FROM pg_catalog.pg_replication_origin WHERE roname = $1",
            &[&origin],
        )
        .await
        .map_err(|e| format!("reading origin {origin}: {}", db_message(&e)))?
        .and_then(|row| row.get::<_, Option<String>>(0))
        .map(|s| parse_lsn(&s))
        .transpose()?;
    status.origin_lsn = progress.map(|l| l.to_string());
    status.lag_bytes = match (leader_current, progress) {
        (Some(current), Some(applied)) => Some(current.bytes_since(applied)),
        _ => None,
    };
    status.last_apply_time = last_apply_time(&client, origin).await?;
    Ok(())
}

/// Commit time of the follower's last transaction if it was pgsieve's; needs
/// `track_commit_timestamp` (without it `pg_last_committed_xact()` has nothing).
async fn last_apply_time(client: &Client, origin: &str) -> Result<Option<String>, String> {
    let tracked: String = client
        .query_one("SELECT current_setting('track_commit_timestamp')", &[])
        .await
        .map_err(|e| format!("reading track_commit_timestamp: {}", db_message(&e)))?
        .get(0);
    if tracked != "on" {
        return Ok(None);
    }
    let sql = format!(
        "SELECT to_char(x.timestamp AT TIME ZONE 'UTC', {RFC3339_UTC})
         FROM pg_catalog.pg_last_committed_xact() x
         JOIN pg_catalog.pg_replication_origin o ON o.roident = x.roident
         WHERE o.roname = $1"
    );
    Ok(client
        .query_opt(&sql, &[&origin])
        .await
        .map_err(|e| format!("reading pg_last_committed_xact(): {}", db_message(&e)))?
        .and_then(|row| row.get(0)))
}

fn parse_lsn(text: &str) -> Result<Lsn, String> {
    Lsn::from_str(text).map_err(|_| format!("unexpected LSN {text:?} from the server"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StatusReport {
        StatusReport {
            leader: LeaderStatus {
                current_wal_lsn: Some("0/3000100".into()),
                error: None,
            },
            slot: SlotStatus {
                name: "pgsieve".into(),
                exists: true,
                active: true,
                confirmed_flush_lsn: Some("0/3000000".into()),
                restart_lsn: Some("0/2000000".into()),
                wal_retained_bytes: Some(0x1000100),
                lag_bytes: Some(0x100),
                last_feedback_time: None,
            },
            followers: vec![FollowerStatus {
                name: "us-east".into(),
                origin: "pgsieve_pgsieve".into(),
                origin_lsn: Some("0/3000000".into()),
                lag_bytes: Some(0x100),
                last_apply_time: None,
                error: None,
                attached: Some(true),
                detached_reason: None,
                lag_seconds: Some(2.5),
                stalled: Some(false),
                last_resync: None,
                last_apply_error: Some(Event {
                    at: "2026-12-02T16:00:00Z".into(),
                    what: "duplicate key".into(),
                }),
            }],
            process: ProcessStatus {
                listen: Some("127.0.0.1:9187".into()),
                reachable: true,
                state: Some("streaming".into()),
                reason: None,
                last_heartbeat: None,
                last_heartbeat_error: None,
                error: None,
            },
        }
    }

    #[test]
    fn json_field_names_are_stable() {
        let v: serde_json::Value = serde_json::from_str(&sample().to_json()).unwrap();
        assert_eq!(v["leader"]["current_wal_lsn"], "0/3000100");
        assert!(v["leader"]["error"].is_null());
        for key in [
            "name",
            "exists",
            "active",
            "confirmed_flush_lsn",
            "restart_lsn",
            "wal_retained_bytes",
            "lag_bytes",
            "last_feedback_time",
        ] {
            assert!(v["slot"].get(key).is_some(), "slot.{key}");
        }
        let f = &v["followers"][0];
        for key in [
            "name",
            "origin",
            "origin_lsn",
            "lag_bytes",
            "last_apply_time",
            "error",
            "attached",
            "detached_reason",
            "lag_seconds",
            "stalled",
            "last_resync",
            "last_apply_error",
        ] {
            assert!(f.get(key).is_some(), "followers[0].{key}");
        }
        assert_eq!(f["lag_bytes"], 256);
        assert_eq!(f["lag_seconds"], 2.5);
        assert_eq!(f["last_apply_error"]["what"], "duplicate key");
        assert_eq!(v["process"]["state"], "streaming");
    }

    #[test]
    fn text_says_unknown_for_missing_times() {
        let text = sample().to_text();
        assert!(
            text.contains("slot pgsieve: active, confirmed flush 0/3000000"),
            "{text}"
        );
        assert!(
            text.contains("follower us-east: origin pgsieve_pgsieve at 0/3000000, lag 256 bytes, last apply unknown"),
            "{text}"
        );
        assert!(
            text.contains("  attached, lag 2.5 s, last resync none, last apply error 2026-12-02T16:00:00Z duplicate key"),
            "{text}"
        );
    }

    #[test]
    fn an_unreachable_follower_makes_the_report_incomplete() {
        let mut report = sample();
        assert!(report.is_complete());
        report.followers[0].error = Some("cannot connect".into());
        assert!(!report.is_complete());
        assert!(
            report
                .to_text()
                .contains("follower us-east: unreachable: cannot connect")
        );
    }
}
