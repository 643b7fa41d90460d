//! The configuration exactly as written: TOML plus `PGSIEVE_*` overrides.
//!
//! Every key of the file can be overridden from the environment:
//! `PGSIEVE_<SECTION>_<KEY>` for `[leader]`, `[apply]`, `[metrics]`,
//! `[heartbeat]`, `[log]`
//! (e.g. `PGSIEVE_LEADER_URL`), and `PGSIEVE_FOLLOWER_<N>_<KEY>` for the N-th
//! `[[follower]]` (0-based; N may be one past the last to add a follower).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ConfigError;

/// The whole file.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// The Conjur leader and its replication slot.
    #[serde(default)]
    pub leader: RawLeader,
    /// One entry per follower database.
    #[serde(default)]
    pub follower: Vec<RawFollower>,
    /// Apply tuning.
    #[serde(default)]
    pub apply: RawApply,
    /// Prometheus endpoint.
    #[serde(default)]
    pub metrics: RawMetrics,
    /// Heartbeat messages written on the leader (lag in seconds).
    #[serde(default)]
    pub heartbeat: RawHeartbeat,
    /// Logging.
    #[serde(default)]
    pub log: RawLog,
}

/// `[leader]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLeader {
    /// libpq URL or keyword string of a role with REPLICATION, with libpq's
    /// TLS parameters (`sslmode=verify-full&sslrootcert=…`, `sslcert`,
    /// `sslkey`, `sslcrl`, `channel_binding`) and `PGSSL*` defaults.
    pub url: Option<String>,
    /// Replication slot name (created on first run).
    pub slot: Option<String>,
    /// Publication name (see `pgsieve setup`).
    pub publication: Option<String>,
    /// File holding the password (first line; mode 0600); else
    /// `PGSIEVE_LEADER_PASSWORD`, else `PGPASSWORD`. Used for the leader only.
    pub password_file: Option<PathBuf>,
    /// Old spelling of the url's `sslmode` (`disable`, `prefer`, `require`,
    /// `verify-ca`, `verify-full`; `verify-full` without `ca_file` trusts the
    /// Mozilla roots). Setting both is an error.
    pub tls: Option<String>,
    /// Old spelling of the url's `sslrootcert`.
    pub ca_file: Option<PathBuf>,
}

/// `[[follower]]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFollower {
    /// Unique name, used for the replication origin, logs and metrics.
    pub name: Option<String>,
    /// URL of the follower database (a role allowed to set `session_replication_role`).
    pub url: Option<String>,
    /// File holding this follower's password (mode 0600); else
    /// `PGSIEVE_FOLLOWER_<N>_PASSWORD`. Never the leader's password nor a
    /// bare `PGPASSWORD`.
    pub password_file: Option<PathBuf>,
    /// Replica set: short name (`conjur/replication-sets/us-east` or `us-east`)
    /// or full data-group id. Absent: the follower receives everything.
    pub replica_set: Option<String>,
    /// Account of a short replica-set name (default `system`).
    pub account: Option<String>,
    /// `execute` (default) or `any`.
    pub privilege: Option<String>,
    /// Resource-id patterns (`*` wildcard) whose secrets this follower always gets.
    pub always: Option<Vec<String>>,
}

/// `[apply]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApply {
    /// Most leader rows in one follower transaction (group commit).
    pub group_max_rows: Option<u64>,
    /// Longest a follower transaction stays open collecting leader transactions.
    pub group_max_ms: Option<u64>,
    /// Interval of standby status updates to the leader (≤ 10 000).
    pub status_interval_ms: Option<u64>,
    /// Directory for spooling streamed transactions (default: system temp dir).
    pub spool_dir: Option<PathBuf>,
    /// Events buffered between the reader and each follower's sink.
    pub buffer_events: Option<u64>,
    /// Hub mode: how long one follower may hold the stream back (its buffer
    /// full while another follower waits) before it is detached.
    pub detach_after_ms: Option<u64>,
    /// What to do with a follower that fell off the stream: `resync`
    /// (default: online diff resync) or `stop` (exit 1 naming the fix).
    pub on_gap: Option<String>,
}

/// `[metrics]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// `host:port` for `/metrics`, `/healthz`, `/readyz`; a bare port (or
    /// `:port`) listens on 127.0.0.1 only.
    pub listen: Option<String>,
    /// File holding a bearer token: `/metrics` then answers 401 without
    /// `Authorization: Bearer <token>`, and `/readyz` keeps its reason to
    /// itself (status code only).
    pub token_file: Option<PathBuf>,
    /// Lag (bytes) above which `/readyz` fails and `check` warns.
    pub max_lag_bytes: Option<u64>,
    /// How long a follower's applied position may stand still while the
    /// leader's moves before it is reported stalled.
    pub stall_after_ms: Option<u64>,
}

/// `[heartbeat]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeartbeat {
    /// Interval of heartbeat messages on the leader; 0 turns them off.
    pub interval_ms: Option<u64>,
}

/// `[log]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// `text` (default) or `json`.
    pub format: Option<String>,
    /// A tracing filter such as `info` or `pgsieve=debug`.
    pub level: Option<String>,
}

impl RawConfig {
    /// Reads `path` (if given) and applies the process environment on top.
    pub fn load(path: Option<&Path>) -> Result<RawConfig, ConfigError> {
        let mut raw = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                Self::parse(&text).map_err(|message| ConfigError::Parse {
                    path: path.to_owned(),
                    message,
                })?
            }
            None => RawConfig::default(),
        };
        raw.apply_env(std::env::vars())?;
        Ok(raw)
    }

    /// Parses TOML text; the error is the parser's message.
    pub fn parse(text: &str) -> Result<RawConfig, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Applies `PGSIEVE_*` variables from `vars` on top of the file's values.
    pub fn apply_env(
        &mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(), ConfigError> {
        let vars: BTreeMap<String, String> = vars
            .into_iter()
            .filter(|(k, _)| k.starts_with("PGSIEVE_"))
            .collect();
        for (name, value) in &vars {
            let key = &name["PGSIEVE_".len()..];
            let set = |slot: &mut Option<String>| *slot = Some(value.clone());
            let path = |slot: &mut Option<PathBuf>| *slot = Some(PathBuf::from(value));
            let num = |slot: &mut Option<u64>| -> Result<(), ConfigError> {
                *slot = Some(value.parse().map_err(|_| ConfigError::Env {
                    name: name.clone(),
                    value: value.clone(),
                    reason: "expected a non-negative integer".into(),
                })?);
                Ok(())
            };
            match key {
                "LEADER_URL" => set(&mut self.leader.url),
                "LEADER_SLOT" => set(&mut self.leader.slot),
                "LEADER_PUBLICATION" => set(&mut self.leader.publication),
                "LEADER_PASSWORD_FILE" => path(&mut self.leader.password_file),
                "LEADER_TLS" => set(&mut self.leader.tls),
                "LEADER_CA_FILE" => path(&mut self.leader.ca_file),
                "APPLY_GROUP_MAX_ROWS" => num(&mut self.apply.group_max_rows)?,
                "APPLY_GROUP_MAX_MS" => num(&mut self.apply.group_max_ms)?,
                "APPLY_STATUS_INTERVAL_MS" => num(&mut self.apply.status_interval_ms)?,
                "APPLY_SPOOL_DIR" => path(&mut self.apply.spool_dir),
                "APPLY_BUFFER_EVENTS" => num(&mut self.apply.buffer_events)?,
                "APPLY_DETACH_AFTER_MS" => num(&mut self.apply.detach_after_ms)?,
                "APPLY_ON_GAP" => set(&mut self.apply.on_gap),
                "METRICS_LISTEN" => set(&mut self.metrics.listen),
                "METRICS_MAX_LAG_BYTES" => num(&mut self.metrics.max_lag_bytes)?,
                "METRICS_STALL_AFTER_MS" => num(&mut self.metrics.stall_after_ms)?,
                "HEARTBEAT_INTERVAL_MS" => num(&mut self.heartbeat.interval_ms)?,
                "METRICS_TOKEN_FILE" => path(&mut self.metrics.token_file),
                "LOG_FORMAT" => set(&mut self.log.format),
                "LOG_LEVEL" => set(&mut self.log.level),
                // Read at resolve time, never stored in the raw config.
                "LEADER_PASSWORD" | "LOG" => {}
                other => {
                    if let Some(rest) = other.strip_prefix("FOLLOWER_") {
                        self.apply_follower_env(name, rest, value)?;
                    }
                    // Unknown PGSIEVE_* names are ignored: they may belong to
                    // the test harness or a newer version.
                }
            }
        }
        Ok(())
    }

    fn apply_follower_env(
        &mut self,
        name: &str,
        rest: &str,
        value: &str,
    ) -> Result<(), ConfigError> {
        let bad = |reason: &str| ConfigError::Env {
            name: name.to_owned(),
            value: value.to_owned(),
            reason: reason.to_owned(),
        };
        let (index, key) = rest
            .split_once('_')
            .ok_or_else(|| bad("expected PGSIEVE_FOLLOWER_<N>_<KEY>"))?;
        let Ok(index) = index.parse::<usize>() else {
            return Ok(());
        };
        if index > self.follower.len() {
            return Err(bad(
                "follower index is more than one past the last follower",
            ));
        }
        if index == self.follower.len() {
            self.follower.push(RawFollower::default());
        }
        let follower = &mut self.follower[index];
        let value = value.to_owned();
        match key {
            "NAME" => follower.name = Some(value),
            "URL" => follower.url = Some(value),
            "PASSWORD_FILE" => follower.password_file = Some(PathBuf::from(value)),
            "REPLICA_SET" => follower.replica_set = Some(value),
            "ACCOUNT" => follower.account = Some(value),
            "PRIVILEGE" => follower.privilege = Some(value),
            "ALWAYS" => {
                follower.always = Some(
                    value
                        .split(',')
                        .map(str::trim)
                        .filter(|p| !p.is_empty())
                        .map(str::to_owned)
                        .collect(),
                )
            }
            "PASSWORD" => {}
            _ => return Err(bad("unknown follower key")),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
[leader]
url = "postgresql://replicator@leader:5432/conjur"
slot = "pgsieve_us_east"
publication = "pgsieve"

[[follower]]
name = "us-east"
url = "postgresql://pgsieve@follower-us-east:5432/conjur"
replica_set = "conjur/replication-sets/us-east"
account = "system"
privilege = "execute"
always = ["*:variable:conjur/shared/*"]

[metrics]
listen = "127.0.0.1:9187"
"#;

    #[test]
    fn parses_the_design_sample() {
        let raw = RawConfig::parse(SAMPLE).unwrap();
        assert_eq!(raw.leader.slot.as_deref(), Some("pgsieve_us_east"));
        assert_eq!(raw.follower.len(), 1);
        assert_eq!(raw.follower[0].always.as_ref().unwrap().len(), 1);
        assert_eq!(raw.metrics.listen.as_deref(), Some("127.0.0.1:9187"));
    }

    #[test]
    fn rejects_unknown_keys() {
        let err = RawConfig::parse("[leader]\nurll = \"x\"\n").unwrap_err();
        assert!(err.contains("urll"), "{err}");
    }

    #[test]
    fn environment_overrides_and_adds_followers() {
        let mut raw = RawConfig::parse(SAMPLE).unwrap();
        raw.apply_env([
            ("PGSIEVE_LEADER_SLOT".to_owned(), "other".to_owned()),
            ("PGSIEVE_FOLLOWER_0_PRIVILEGE".to_owned(), "any".to_owned()),
            ("PGSIEVE_FOLLOWER_1_NAME".to_owned(), "eu".to_owned()),
            ("PGSIEVE_APPLY_GROUP_MAX_ROWS".to_owned(), "7".to_owned()),
            ("HOME".to_owned(), "/root".to_owned()),
        ])
        .unwrap();
        assert_eq!(raw.leader.slot.as_deref(), Some("other"));
        assert_eq!(raw.follower[0].privilege.as_deref(), Some("any"));
        assert_eq!(raw.follower[1].name.as_deref(), Some("eu"));
        assert_eq!(raw.apply.group_max_rows, Some(7));
    }

    #[test]
    fn bad_numbers_name_the_variable() {
        let mut raw = RawConfig::default();
        let err = raw
            .apply_env([("PGSIEVE_APPLY_GROUP_MAX_MS".to_owned(), "soon".to_owned())])
            .unwrap_err();
        assert!(
            err.to_string().contains("PGSIEVE_APPLY_GROUP_MAX_MS"),
            "{err}"
        );
    }
}
