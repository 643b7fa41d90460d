//! The configuration pgsieve runs with: parsed URLs, passwords read from
//! files or the environment, replica sets as filter specs, defaults filled.

use std::path::{Path, PathBuf};
use std::time::Duration;

use pgsieve_filters::{ReplicaSetSpec, Rule};

use super::ConfigError;
use super::raw::{RawConfig, RawFollower, RawLeader};
use crate::conn::{ConnConfig, Params, RootCert, SslMode};

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The leader side: replication connection, slot and publication.
#[derive(Debug, Clone)]
pub struct LeaderConfig {
    /// Connection parameters, TLS and the leader's own password: used for
    /// the replication connection and every leader SQL session.
    pub pg: ConnConfig,
    /// Replication slot name.
    pub slot: String,
    /// Publication name.
    pub publication: String,
}

/// One follower database and what it may hold.
#[derive(Debug, Clone)]
pub struct FollowerConfig {
    /// Unique name (logs, metrics, tap).
    pub name: String,
    /// Connection parameters, TLS and this follower's own password.
    pub pg: ConnConfig,
    /// The follower's replica set; `None` replicates every secret.
    pub replica_set: Option<ReplicaSetSpec>,
}

/// Group commit and feedback tuning.
#[derive(Debug, Clone)]
pub struct ApplySettings {
    /// Most leader rows in one follower transaction.
    pub group_max_rows: u64,
    /// Longest a follower transaction collects leader transactions.
    pub group_max_wait: Duration,
    /// Standby status update interval (≤ 10 s).
    pub status_interval: Duration,
    /// Where streamed transactions are spooled.
    pub spool_dir: PathBuf,
    /// Events buffered between the reader and each follower's sink: the
    /// most a follower can fall behind its peers before it holds them back.
    pub buffer_events: usize,
    /// Hub mode: how long one follower may hold the others back (its buffer
    /// full while another follower's is empty) before it is detached and
    /// left to catch up from the slot on its own (see `fanout`).
    pub detach_after: Duration,
    /// What to do with a follower that fell off the stream.
    pub on_gap: OnGap,
}

/// What `run` does with a follower whose progress the slot no longer holds
/// (restored from a backup, slot lost, leader failover).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnGap {
    /// Online diff resync, then stream (the default).
    Resync,
    /// Exit 1 with one line naming the follower and the fix.
    Stop,
}

impl Default for ApplySettings {
    fn default() -> Self {
        Self {
            group_max_rows: 20_000,
            group_max_wait: Duration::from_millis(20),
            status_interval: Duration::from_secs(1),
            spool_dir: std::env::temp_dir(),
            buffer_events: 8192,
            detach_after: Duration::from_secs(5),
            on_gap: OnGap::Resync,
        }
    }
}

/// Everything `pgsieve run` needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The leader.
    pub leader: LeaderConfig,
    /// The followers (sidecar mode: exactly one).
    pub followers: Vec<FollowerConfig>,
    /// Apply tuning.
    pub apply: ApplySettings,
    /// `/metrics` listen address (`127.0.0.1` unless a host is given).
    pub metrics_listen: Option<String>,
    /// Bearer token guarding `/metrics` (and `/readyz`'s reason).
    pub metrics_token: Option<String>,
    /// Lag bound for readiness.
    pub max_lag_bytes: u64,
    /// A follower whose applied position stands still this long while the
    /// leader's moves is reported stalled (metric, log, `/readyz`).
    pub stall_after: Duration,
    /// Interval of heartbeat messages on the leader; `None`: off.
    pub heartbeat_interval: Option<Duration>,
    /// Log format.
    pub log_format: LogFormat,
    /// Tracing filter.
    pub log_level: String,
}

impl Config {
    /// Resolves a raw config, reading passwords from files and the environment.
    pub fn resolve(raw: &RawConfig) -> Result<Config, ConfigError> {
        Self::resolve_with_env(raw, |name| std::env::var(name).ok())
    }

    /// As [`Config::resolve`], with an explicit environment (tests).
    pub fn resolve_with_env(
        raw: &RawConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let url = raw
            .leader
            .url
            .as_deref()
            .ok_or_else(|| ConfigError::Invalid("[leader] url is required".into()))?;
        let leader_pg = resolve_leader(&raw.leader, url, &env)?;
        let slot = raw.leader.slot.clone().unwrap_or_else(|| "pgsieve".into());
        validate_identifier("[leader] slot", &slot)?;
        let leader = LeaderConfig {
            pg: leader_pg,
            slot,
            publication: raw
                .leader
                .publication
                .clone()
                .unwrap_or_else(|| "pgsieve".into()),
        };

        let mut followers = Vec::with_capacity(raw.follower.len());
        for (index, f) in raw.follower.iter().enumerate() {
            followers.push(resolve_follower(index, f, &env)?);
        }
        for (i, a) in followers.iter().enumerate() {
            if followers[..i].iter().any(|b| b.name == a.name) {
                return Err(ConfigError::Invalid(format!(
                    "two followers are named {:?}",
                    a.name
                )));
            }
        }

        let defaults = ApplySettings::default();
        let status_ms = raw
            .apply
            .status_interval_ms
            .unwrap_or(defaults.status_interval.as_millis() as u64);
        if status_ms == 0 || status_ms > 10_000 {
            return Err(ConfigError::Invalid(
                "[apply] status_interval_ms must be between 1 and 10000".into(),
            ));
        }
        let apply = ApplySettings {
            group_max_rows: raw
                .apply
                .group_max_rows
                .unwrap_or(defaults.group_max_rows)
                .max(1),
            group_max_wait: raw
                .apply
                .group_max_ms
                .map(Duration::from_millis)
                .unwrap_or(defaults.group_max_wait),
            status_interval: Duration::from_millis(status_ms),
            spool_dir: raw.apply.spool_dir.clone().unwrap_or(defaults.spool_dir),
            buffer_events: raw
                .apply
                .buffer_events
                .map_or(defaults.buffer_events, |n| n.clamp(16, 1 << 20) as usize),
            detach_after: raw
                .apply
                .detach_after_ms
                .map(Duration::from_millis)
                .unwrap_or(defaults.detach_after),
            on_gap: match raw.apply.on_gap.as_deref() {
                None | Some("resync") => OnGap::Resync,
                Some("stop") => OnGap::Stop,
                Some(other) => {
                    return Err(ConfigError::Invalid(format!(
                        "[apply] on_gap {other:?}: expected resync or stop"
                    )));
                }
            },
        };
        let log_format = match raw.log.format.as_deref().unwrap_or("text") {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(ConfigError::Invalid(format!(
                    "[log] format {other:?}: expected text or json"
                )));
            }
        };
        Ok(Config {
            leader,
            followers,
            apply,
            metrics_listen: raw.metrics.listen.as_deref().map(listen_address),
            metrics_token: match &raw.metrics.token_file {
                None => None,
                Some(path) => {
                    let token = read_password(path, "[metrics] token_file")?;
                    if token.trim().is_empty() {
                        return Err(ConfigError::Invalid(format!(
                            "[metrics] token_file {} is empty",
                            path.display()
                        )));
                    }
                    Some(token.trim().to_owned())
                }
            },
            max_lag_bytes: raw.metrics.max_lag_bytes.unwrap_or(64 * 1024 * 1024),
            stall_after: Duration::from_millis(raw.metrics.stall_after_ms.unwrap_or(60_000).max(1)),
            heartbeat_interval: match raw.heartbeat.interval_ms.unwrap_or(10_000) {
                0 => None,
                ms => Some(Duration::from_millis(ms.max(100))),
            },
            log_format,
            log_level: raw.log.level.clone().unwrap_or_else(|| "info".into()),
        })
    }

    /// Whether one process serves several followers (hub mode: a follower that
    /// fails is detached instead of stopping the others).
    pub fn is_hub(&self) -> bool {
        self.followers.len() > 1
    }

    /// The distinct replica sets of the followers (one model bit each), and for
    /// each follower, in config order, the bit of its set (`None`: it gets
    /// everything). Followers configured with the same set (same data group,
    /// rule and `always`) share one bit: two followers of one region in hub
    /// mode cost one membership computation, not two.
    pub fn replica_sets(&self) -> (Vec<ReplicaSetSpec>, Vec<Option<usize>>) {
        let mut specs: Vec<ReplicaSetSpec> = Vec::new();
        let bits = self
            .followers
            .iter()
            .map(|f| {
                let spec = f.replica_set.as_ref()?;
                let same = |s: &ReplicaSetSpec| {
                    s.data_group == spec.data_group
                        && s.rule == spec.rule
                        && s.always == spec.always
                };
                Some(specs.iter().position(same).unwrap_or_else(|| {
                    // Same data group under another rule: a name of its own.
                    let mut spec = spec.clone();
                    if specs.iter().any(|s| s.name == spec.name) {
                        spec.name = format!("{} ({})", spec.name, f.name);
                    }
                    specs.push(spec);
                    specs.len() - 1
                }))
            })
            .collect();
        (specs, bits)
    }

    /// Name of the replication origin that records this slot's progress on a follower.
    pub fn origin_name(&self) -> String {
        format!("pgsieve_{}", self.leader.slot)
    }
}

fn resolve_follower(
    index: usize,
    f: &RawFollower,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<FollowerConfig, ConfigError> {
    let name = f
        .name
        .clone()
        .unwrap_or_else(|| format!("follower-{index}"));
    let what = format!("[[follower]] {name:?} url");
    let url = f
        .url
        .as_deref()
        .ok_or_else(|| ConfigError::Invalid(format!("{what} is required")))?;
    let params = parse_params(&what, url, env)?;
    // This follower's own password only: never the leader's (not
    // `PGSIEVE_LEADER_PASSWORD`, not a bare `PGPASSWORD`), never another
    // follower's.
    let password = match (&params.password, &f.password_file) {
        (Some(password), _) => Some(password.clone()),
        (None, Some(path)) => Some(read_password(
            path,
            &format!("[[follower]] {name:?} password_file"),
        )?),
        (None, None) => env(&format!("PGSIEVE_FOLLOWER_{index}_PASSWORD")),
    };
    let pg = conn_config(&what, params, password)?;
    let replica_set = match &f.replica_set {
        None => None,
        Some(set) => {
            let account = f.account.as_deref().unwrap_or("system");
            let rule = match f.privilege.as_deref().unwrap_or("execute") {
                "execute" => Rule::Execute,
                "any" => Rule::Any,
                other => {
                    return Err(ConfigError::Invalid(format!(
                        "[[follower]] {name:?} privilege {other:?}: expected execute or any"
                    )));
                }
            };
            Some(ReplicaSetSpec {
                name: set.clone(),
                data_group: data_group_id(set, account),
                rule,
                always: f.always.clone().unwrap_or_default(),
            })
        }
    };
    Ok(FollowerConfig {
        name,
        pg,
        replica_set,
    })
}

/// The data-group role id of a replica set given by short name or full id.
///
/// `us-east` and `conjur/replication-sets/us-east` in account `system` both
/// become `system:group:conjur/replication-sets/us-east/replicated-data`; a
/// value containing `:` is taken as the full group id.
pub fn data_group_id(replica_set: &str, account: &str) -> String {
    if replica_set.contains(':') {
        return replica_set.to_owned();
    }
    if replica_set.starts_with("conjur/replication-sets/") {
        pgsieve_filters::data_group_id(account, replica_set)
    } else {
        pgsieve_filters::data_group_id(account, &format!("conjur/replication-sets/{replica_set}"))
    }
}

/// The leader's connection: its URL, the old `[leader] tls`/`ca_file` keys
/// folded in, and the leader's password (URL, `password_file`,
/// `PGSIEVE_LEADER_PASSWORD`, then a bare `PGPASSWORD`, which libpq users
/// set for the one server they talk to: here, the leader).
fn resolve_leader(
    raw: &RawLeader,
    url: &str,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<ConnConfig, ConfigError> {
    const WHAT: &str = "[leader] url";
    let mut params = parse_params(WHAT, url, env)?;
    let written = crate::conn::params::parse_pairs(url).unwrap_or_default();
    let in_url = |key: &str| written.iter().any(|(k, _)| k == key);
    if let Some(tls) = raw.tls.as_deref() {
        if in_url("sslmode") {
            return Err(ConfigError::Invalid(
                "[leader] tls and sslmode in [leader] url both set the TLS mode: keep sslmode in the url and remove tls".into(),
            ));
        }
        params.ssl.mode = match tls {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(ConfigError::Invalid(format!(
                    "[leader] tls {other:?}: expected disable, prefer, require, verify-ca or verify-full (better: sslmode=… in [leader] url)"
                )));
            }
        };
    }
    if let Some(ca_file) = &raw.ca_file {
        if in_url("sslrootcert") {
            return Err(ConfigError::Invalid(
                "[leader] ca_file and sslrootcert in [leader] url both name the CA: keep sslrootcert in the url and remove ca_file".into(),
            ));
        }
        params.ssl.rootcert = Some(RootCert::File(ca_file.clone()));
    } else if raw.tls.as_deref() == Some("verify-full") && params.ssl.rootcert.is_none() {
        // The old `tls = "verify-full"` without ca_file meant the public roots.
        params.ssl.rootcert = Some(RootCert::System);
    }
    let password = match (&params.password, &raw.password_file) {
        (Some(password), _) => Some(password.clone()),
        (None, Some(path)) => Some(read_password(path, "[leader] password_file")?),
        (None, None) => env("PGSIEVE_LEADER_PASSWORD").or_else(|| env("PGPASSWORD")),
    };
    conn_config(WHAT, params, password)
}

/// `[metrics] listen`: a bare port or `:port` means loopback only.
fn listen_address(listen: &str) -> String {
    let port = listen.strip_prefix(':').unwrap_or(listen);
    if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
        format!("127.0.0.1:{port}")
    } else {
        listen.to_owned()
    }
}

fn parse_params(
    what: &str,
    url: &str,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Params, ConfigError> {
    Params::parse_with_env(url, env).map_err(|e| ConfigError::Invalid(format!("{what}: {e}")))
}

fn conn_config(
    what: &str,
    params: Params,
    password: Option<String>,
) -> Result<ConnConfig, ConfigError> {
    let mut pg = ConnConfig::from_params(params)
        .map_err(|e| ConfigError::Invalid(format!("{what}: {e}")))?;
    pg.password = password.map(String::into_bytes);
    Ok(pg)
}

fn read_password(path: &Path, what: &str) -> Result<String, ConfigError> {
    crate::conn::files::read_password_file(path, what).map_err(ConfigError::Invalid)
}

fn validate_identifier(what: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid(format!(
            "{what} {name:?}: use 1-63 characters of a-z, 0-9 and _"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_and_stall_settings() {
        let resolve = |extra: &str| {
            let text = format!("[leader]\nurl = \"host=l user=r dbname=conjur\"\n{extra}");
            Config::resolve_with_env(&RawConfig::parse(&text).unwrap(), |_| None).unwrap()
        };
        let defaults = resolve("");
        assert_eq!(defaults.heartbeat_interval, Some(Duration::from_secs(10)));
        assert_eq!(defaults.stall_after, Duration::from_secs(60));
        let off = resolve("[heartbeat]\ninterval_ms = 0\n[metrics]\nstall_after_ms = 2500\n");
        assert_eq!(off.heartbeat_interval, None);
        assert_eq!(off.stall_after, Duration::from_millis(2500));
        let fast = resolve("[heartbeat]\ninterval_ms = 5\n");
        assert_eq!(fast.heartbeat_interval, Some(Duration::from_millis(100)));
    }

    #[test]
    fn short_and_full_replica_set_names() {
        let want = "system:group:conjur/replication-sets/us-east/replicated-data";
        assert_eq!(data_group_id("us-east", "system"), want);
        assert_eq!(
            data_group_id("conjur/replication-sets/us-east", "system"),
            want
        );
        assert_eq!(
            data_group_id(
                "acme:group:conjur/replication-sets/x/replicated-data",
                "system"
            ),
            "acme:group:conjur/replication-sets/x/replicated-data"
        );
    }

    #[test]
    fn followers_of_one_set_share_its_bit() {
        let follower = |name: &str, set: &str, privilege: &str| {
            format!(
                "[[follower]]\nname = \"{name}\"\nurl = \"host=h user=u dbname=conjur\"\n\
                 replica_set = \"{set}\"\nprivilege = \"{privilege}\"\n"
            )
        };
        let text = format!(
            "[leader]\nurl = \"host=l user=r dbname=conjur\"\n{}{}{}{}\
             [[follower]]\nname = \"all\"\nurl = \"host=h user=u dbname=conjur\"\n",
            follower("east-1", "us-east", "execute"),
            follower("west", "eu-west", "execute"),
            follower("east-2", "conjur/replication-sets/us-east", "execute"),
            follower("east-any", "us-east", "any"),
        );
        let config = Config::resolve_with_env(&RawConfig::parse(&text).unwrap(), |_| None).unwrap();
        let (specs, bits) = config.replica_sets();
        assert_eq!(bits, vec![Some(0), Some(1), Some(0), Some(2), None]);
        assert_eq!(specs.len(), 3);
        // Same data group under another rule: its own bit and its own name.
        assert_eq!(specs[2].data_group, specs[0].data_group);
        assert_ne!(specs[2].name, specs[0].name);
    }

    #[test]
    fn password_comes_from_the_environment_not_the_url() {
        let raw = RawConfig::parse(
            "[leader]\nurl = \"postgresql://replicator@127.0.0.1:5432/conjur\"\n\
             [[follower]]\nname = \"f\"\nurl = \"host=127.0.0.1 user=postgres dbname=conjur\"\n\
             replica_set = \"us-east\"\nprivilege = \"any\"\n",
        )
        .unwrap();
        let config = Config::resolve_with_env(&raw, |name| {
            (name == "PGSIEVE_LEADER_PASSWORD").then(|| "s3cret".to_owned())
        })
        .unwrap();
        assert_eq!(config.leader.pg.password.as_deref(), Some(&b"s3cret"[..]));
        assert_eq!(config.followers[0].pg.password, None);
        let set = config.followers[0].replica_set.as_ref().unwrap();
        assert_eq!(set.rule, Rule::Any);
        assert_eq!(config.origin_name(), "pgsieve_pgsieve");
    }

    #[test]
    fn passwords_stay_with_their_server() {
        let raw = RawConfig::parse(
            "[leader]\nurl = \"host=l user=r dbname=conjur\"\n\
             [[follower]]\nname = \"a\"\nurl = \"host=a user=u dbname=conjur\"\n\
             [[follower]]\nname = \"b\"\nurl = \"host=b user=u dbname=conjur\"\n",
        )
        .unwrap();
        let env = |name: &str| match name {
            "PGPASSWORD" => Some("leader-pw".to_owned()),
            "PGSIEVE_FOLLOWER_1_PASSWORD" => Some("b-pw".to_owned()),
            _ => None,
        };
        let config = Config::resolve_with_env(&raw, env).unwrap();
        assert_eq!(
            config.leader.pg.password.as_deref(),
            Some(&b"leader-pw"[..])
        );
        assert_eq!(config.followers[0].pg.password, None, "no bare PGPASSWORD");
        assert_eq!(
            config.followers[1].pg.password.as_deref(),
            Some(&b"b-pw"[..])
        );
    }

    #[test]
    fn readable_password_files_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "pw\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let text = format!(
            "[leader]\nurl = \"host=l user=r\"\npassword_file = {:?}\n",
            file.display().to_string()
        );
        let err = Config::resolve_with_env(&RawConfig::parse(&text).unwrap(), |_| None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("[leader] password_file") && err.contains("0644"),
            "{err}"
        );
    }

    #[test]
    fn old_tls_keys_map_to_sslmode_and_sslrootcert() {
        let resolve = |leader: &str| {
            Config::resolve_with_env(
                &RawConfig::parse(&format!("[leader]\n{leader}")).unwrap(),
                |_| None,
            )
        };
        let c = resolve("url = \"host=l user=r\"\ntls = \"verify-full\"\n").unwrap();
        assert_eq!(c.leader.pg.tls.mode, SslMode::VerifyFull);
        assert_eq!(c.leader.pg.params.ssl.rootcert, Some(RootCert::System));
        let c = resolve("url = \"host=l user=r\"\ntls = \"require\"\n").unwrap();
        assert_eq!(c.leader.pg.tls.mode, SslMode::Require);
        let err = resolve("url = \"host=l user=r sslmode=disable\"\ntls = \"require\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("remove tls"), "{err}");
        let err = resolve(
            "url = \"postgresql://l/db?sslmode=verify-full&sslrootcert=/nonexistent.pem\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("/nonexistent.pem"), "{err}");
    }

    #[test]
    fn metrics_listen_defaults_to_loopback() {
        assert_eq!(listen_address("9187"), "127.0.0.1:9187");
        assert_eq!(listen_address(":9187"), "127.0.0.1:9187");
        assert_eq!(listen_address("0.0.0.0:9187"), "0.0.0.0:9187");
        assert_eq!(listen_address("[::1]:9187"), "[::1]:9187");
    }

    #[test]
    fn missing_leader_url_is_reported() {
        let err = Config::resolve_with_env(&RawConfig::default(), |_| None).unwrap_err();
        assert!(err.to_string().contains("[leader] url"), "{err}");
    }

    #[test]
    fn bad_slot_names_are_rejected() {
        let raw = RawConfig::parse("[leader]\nurl = \"host=x\"\nslot = \"Bad-Slot\"\n").unwrap();
        assert!(Config::resolve_with_env(&raw, |_| None).is_err());
    }
}
