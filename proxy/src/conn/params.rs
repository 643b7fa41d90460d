//! libpq connection strings: `postgresql://` URLs and `key=value` strings,
//! the `PG*` environment defaults, and the parameters they resolve to.
//!
//! Same keys and meanings as libpq (PostgreSQL 15–17 documentation, "Parameter
//! Key Words"). A key pgsieve cannot honour is an error naming it, never
//! silently ignored: a dropped `sslrootcert` would be a downgrade.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `sslmode`, with libpq's meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// Plain first; TLS (unverified) only if the server refuses plain.
    Allow,
    /// TLS (unverified) when the server offers it, else plain (libpq's default).
    Prefer,
    /// TLS, certificate not checked (checked like `verify-ca` when a root
    /// certificate file exists, the libpq rule).
    Require,
    /// TLS, chain checked against `sslrootcert`.
    VerifyCa,
    /// TLS, chain and host name checked.
    VerifyFull,
}

impl SslMode {
    /// Parses an `sslmode` value.
    pub fn parse(value: &str) -> Result<SslMode, String> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(format!(
                    "invalid sslmode {other:?}: expected disable, allow, prefer, require, verify-ca or verify-full"
                ));
            }
        })
    }

    /// The libpq spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// `channel_binding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelBinding {
    /// Never bind (plain SCRAM-SHA-256).
    Disable,
    /// Bind when TLS is up and the server offers SCRAM-SHA-256-PLUS (default).
    Prefer,
    /// Fail unless the server authenticated with SCRAM-SHA-256-PLUS.
    Require,
}

impl ChannelBinding {
    /// Parses a `channel_binding` value.
    pub fn parse(value: &str) -> Result<ChannelBinding, String> {
        Ok(match value {
            "disable" => ChannelBinding::Disable,
            "prefer" => ChannelBinding::Prefer,
            "require" => ChannelBinding::Require,
            other => {
                return Err(format!(
                    "invalid channel_binding {other:?}: expected disable, prefer or require"
                ));
            }
        })
    }
}

/// `target_session_attrs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetSessionAttrs {
    /// Any server.
    Any,
    /// `transaction_read_only` off.
    ReadWrite,
    /// `transaction_read_only` on.
    ReadOnly,
    /// Not in recovery.
    Primary,
    /// In recovery.
    Standby,
    /// A standby when one answers, else any.
    PreferStandby,
}

impl TargetSessionAttrs {
    /// Parses a `target_session_attrs` value.
    pub fn parse(value: &str) -> Result<TargetSessionAttrs, String> {
        Ok(match value {
            "any" => TargetSessionAttrs::Any,
            "read-write" => TargetSessionAttrs::ReadWrite,
            "read-only" => TargetSessionAttrs::ReadOnly,
            "primary" => TargetSessionAttrs::Primary,
            "standby" => TargetSessionAttrs::Standby,
            "prefer-standby" => TargetSessionAttrs::PreferStandby,
            other => {
                return Err(format!(
                    "invalid target_session_attrs {other:?}: expected any, read-write, read-only, primary, standby or prefer-standby"
                ));
            }
        })
    }
}

/// Where a root certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    /// A PEM file.
    File(PathBuf),
    /// `sslrootcert=system`: the Mozilla roots built into pgsieve.
    System,
}

/// A host to try, with its port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A name or IP address (checked against the certificate).
    Tcp {
        /// The name as written (`host=`), used for TLS verification and SNI.
        name: String,
        /// `hostaddr=`: the address to connect to instead of resolving `name`.
        addr: Option<IpAddr>,
        /// Port.
        port: u16,
    },
    /// A Unix-domain socket directory.
    Unix {
        /// The directory.
        dir: PathBuf,
        /// Port (names the socket file).
        port: u16,
    },
}

impl Host {
    /// `host:port` or the socket path, for messages.
    pub fn describe(&self) -> String {
        match self {
            Host::Tcp { name, port, .. } if name.contains(':') => format!("[{name}]:{port}"),
            Host::Tcp { name, port, .. } => format!("{name}:{port}"),
            Host::Unix { dir, port } => dir.join(format!(".s.PGSQL.{port}")).display().to_string(),
        }
    }
}

/// TLS parameters as written (files not read yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SslParams {
    /// `sslmode` (default `prefer`).
    pub mode: SslMode,
    /// `sslrootcert`.
    pub rootcert: Option<RootCert>,
    /// `sslcert`: client certificate (PEM).
    pub cert: Option<PathBuf>,
    /// `sslkey`: its private key (PEM; not readable by group/others).
    pub key: Option<PathBuf>,
    /// `sslcrl`: revocation list (PEM or DER).
    pub crl: Option<PathBuf>,
    /// `sslsni` (default on).
    pub sni: bool,
    /// `ssl_min_protocol_version` (default TLSv1.2).
    pub min_protocol: Option<String>,
    /// `ssl_max_protocol_version`.
    pub max_protocol: Option<String>,
}

impl Default for SslParams {
    fn default() -> Self {
        SslParams {
            mode: SslMode::Prefer,
            rootcert: None,
            cert: None,
            key: None,
            crl: None,
            sni: true,
            min_protocol: None,
            max_protocol: None,
        }
    }
}

/// TCP keepalive settings (`keepalives`, `keepalives_idle`, `_interval`, `_count`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keepalives {
    /// On by default, as in libpq.
    pub enabled: bool,
    /// Idle time before the first probe.
    pub idle: Option<Duration>,
    /// Time between probes.
    pub interval: Option<Duration>,
    /// Probes lost before the connection is dead.
    pub count: Option<u32>,
}

impl Default for Keepalives {
    fn default() -> Self {
        Keepalives {
            enabled: true,
            idle: None,
            interval: None,
            count: None,
        }
    }
}

/// Everything a connection string says, defaults and environment applied.
#[derive(Clone, PartialEq, Eq)]
pub struct Params {
    /// Hosts in the order they are tried.
    pub hosts: Vec<Host>,
    /// `user`.
    pub user: Option<String>,
    /// `password` written in the string (pgsieve prefers password files).
    pub password: Option<String>,
    /// `dbname` (default: the user name).
    pub dbname: Option<String>,
    /// `application_name` (or `fallback_application_name`).
    pub application_name: Option<String>,
    /// `options`.
    pub options: Option<String>,
    /// `connect_timeout`, per host tried.
    pub connect_timeout: Option<Duration>,
    /// `tcp_user_timeout`.
    pub tcp_user_timeout: Option<Duration>,
    /// TCP keepalives.
    pub keepalives: Keepalives,
    /// `target_session_attrs`.
    pub target_session_attrs: TargetSessionAttrs,
    /// `channel_binding`.
    pub channel_binding: ChannelBinding,
    /// TLS parameters.
    pub ssl: SslParams,
}

impl std::fmt::Debug for Params {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Params")
            .field("hosts", &self.hosts)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("dbname", &self.dbname)
            .field("application_name", &self.application_name)
            .field("ssl", &self.ssl)
            .field("target_session_attrs", &self.target_session_attrs)
            .field("channel_binding", &self.channel_binding)
            .finish_non_exhaustive()
    }
}

/// The environment variables libpq reads for each key (`PGPASSWORD` is not
/// here: a password belongs to one server, see `config::resolved`).
const ENV_DEFAULTS: &[(&str, &str)] = &[
    ("host", "PGHOST"),
    ("hostaddr", "PGHOSTADDR"),
    ("port", "PGPORT"),
    ("user", "PGUSER"),
    ("dbname", "PGDATABASE"),
    ("application_name", "PGAPPNAME"),
    ("options", "PGOPTIONS"),
    ("connect_timeout", "PGCONNECT_TIMEOUT"),
    ("sslmode", "PGSSLMODE"),
    ("sslrootcert", "PGSSLROOTCERT"),
    ("sslcert", "PGSSLCERT"),
    ("sslkey", "PGSSLKEY"),
    ("sslcrl", "PGSSLCRL"),
    ("sslsni", "PGSSLSNI"),
    ("ssl_min_protocol_version", "PGSSLMINPROTOCOLVERSION"),
    ("ssl_max_protocol_version", "PGSSLMAXPROTOCOLVERSION"),
    ("channel_binding", "PGCHANNELBINDING"),
    ("target_session_attrs", "PGTARGETSESSIONATTRS"),
    ("gssencmode", "PGGSSENCMODE"),
];

impl Params {
    /// Parses a connection string with the process environment as defaults.
    pub fn parse(conninfo: &str) -> Result<Params, String> {
        Self::parse_with_env(conninfo, |name| std::env::var(name).ok())
    }

    /// As [`Params::parse`], with an explicit environment (tests).
    pub fn parse_with_env(
        conninfo: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Params, String> {
        let mut pairs = parse_pairs(conninfo)?;
        for (key, var) in ENV_DEFAULTS {
            if !pairs.iter().any(|(k, _)| k == key) {
                if let Some(value) = env(var).filter(|v| !v.is_empty()) {
                    pairs.push((key.to_string(), value));
                }
            }
        }
        let home = env("HOME").map(PathBuf::from);
        Self::from_pairs(&pairs, home.as_deref())
    }

    fn from_pairs(pairs: &[(String, String)], home: Option<&Path>) -> Result<Params, String> {
        check_keys(pairs)?;
        let get = Lookup(pairs);
        if let Some(enc) = get.value("client_encoding") {
            if !enc.eq_ignore_ascii_case("utf8") && !enc.eq_ignore_ascii_case("utf-8") {
                return Err(format!("client_encoding {enc:?}: pgsieve always uses UTF8"));
            }
        }
        let mut connect_timeout = get.seconds("connect_timeout")?;
        // libpq treats 1 as 2 (a one-second timeout is too short to mean it).
        if connect_timeout == Some(Duration::from_secs(1)) {
            connect_timeout = Some(Duration::from_secs(2));
        }
        let tcp_user_timeout = match get.value("tcp_user_timeout") {
            None | Some("") => None,
            Some(v) => v
                .parse::<u64>()
                .map(|ms| (ms > 0).then(|| Duration::from_millis(ms)))
                .map_err(|_| format!("invalid tcp_user_timeout {v:?}: expected milliseconds"))?,
        };
        let keepalives = get.keepalives()?;
        let target_session_attrs =
            TargetSessionAttrs::parse(get.value("target_session_attrs").unwrap_or("any"))?;
        let channel_binding =
            ChannelBinding::parse(get.value("channel_binding").unwrap_or("prefer"))?;
        let ssl = get.ssl(home)?;
        Ok(Params {
            hosts: hosts(get.value("host"), get.value("hostaddr"), get.value("port"))?,
            user: get.non_empty("user").map(str::to_owned),
            password: get.value("password").map(str::to_owned),
            dbname: get.non_empty("dbname").map(str::to_owned),
            application_name: get
                .value("application_name")
                .or(get.value("fallback_application_name"))
                .map(str::to_owned),
            options: get.non_empty("options").map(str::to_owned),
            connect_timeout,
            tcp_user_timeout,
            keepalives,
            target_session_attrs,
            channel_binding,
            ssl,
        })
    }

    /// `host:port[,host:port…]/dbname`, for messages (no user, no password).
    pub fn describe(&self) -> String {
        let hosts: Vec<String> = self.hosts.iter().map(Host::describe).collect();
        format!(
            "{}/{}",
            hosts.join(","),
            self.dbname
                .as_deref()
                .or(self.user.as_deref())
                .unwrap_or("(default database)")
        )
    }
}

/// The keys pgsieve honours whatever their value (libpq's meaning).
const SUPPORTED_KEYS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "user",
    "password",
    "dbname",
    "options",
    "application_name",
    "fallback_application_name",
    "connect_timeout",
    "tcp_user_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_count",
    "target_session_attrs",
    "channel_binding",
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "sslcrl",
    "sslsni",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
    "sslcompression",
    "client_encoding",
    "requiressl",
];

/// Fails on the first key pgsieve cannot honour, so that none is silently dropped;
/// a few keys are accepted only with the value that means what pgsieve does anyway.
fn check_keys(pairs: &[(String, String)]) -> Result<(), String> {
    for (key, value) in pairs {
        let supported = SUPPORTED_KEYS.contains(&key.as_str())
            || match key.as_str() {
                "gssencmode" => value == "disable" || value == "prefer",
                "sslnegotiation" => value == "postgres",
                "load_balance_hosts" => value == "disable",
                _ => false,
            };
        if !supported {
            return Err(format!(
                "connection parameter {key}={value:?} is not supported by pgsieve"
            ));
        }
    }
    Ok(())
}

/// The pairs of a connection string read by key, the last occurrence winning (as
/// in libpq); one place for the value conversions the keys share.
struct Lookup<'a>(&'a [(String, String)]);

impl<'a> Lookup<'a> {
    /// The value of `key`, if given.
    fn value(&self, key: &str) -> Option<&'a str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `key` unless absent or empty (empty means "default" in libpq).
    fn non_empty(&self, key: &str) -> Option<&'a str> {
        self.value(key).filter(|v| !v.is_empty())
    }

    /// A whole number of seconds; zero or negative means none.
    fn seconds(&self, key: &str) -> Result<Option<Duration>, String> {
        match self.value(key) {
            None | Some("") => Ok(None),
            Some(v) => v
                .trim()
                .parse::<i64>()
                .map(|n| (n > 0).then(|| Duration::from_secs(n as u64)))
                .map_err(|_| format!("invalid {key} {v:?}: expected whole seconds")),
        }
    }

    /// A file path, unless absent or empty.
    fn path(&self, key: &str) -> Option<PathBuf> {
        self.non_empty(key).map(PathBuf::from)
    }

    /// `keepalives` and its `keepalives_*` settings.
    fn keepalives(&self) -> Result<Keepalives, String> {
        Ok(Keepalives {
            enabled: match self.value("keepalives") {
                None | Some("1") => true,
                Some("0") => false,
                Some(v) => return Err(format!("invalid keepalives {v:?}: expected 0 or 1")),
            },
            idle: self.seconds("keepalives_idle")?,
            interval: self.seconds("keepalives_interval")?,
            count: match self.value("keepalives_count") {
                None | Some("") => None,
                Some(v) => Some(
                    v.parse::<u32>()
                        .map_err(|_| format!("invalid keepalives_count {v:?}"))?,
                ),
            },
        })
    }

    /// The `ssl*` keys, with libpq's defaults from `~/.postgresql/` (`home`).
    fn ssl(&self, home: Option<&Path>) -> Result<SslParams, String> {
        let mode = match (self.value("sslmode"), self.value("requiressl")) {
            (Some(mode), _) => SslMode::parse(mode)?,
            (None, Some("1")) => SslMode::Require,
            _ => SslMode::Prefer,
        };
        let in_home = |name: &str| {
            home.map(|h| h.join(".postgresql").join(name))
                .filter(|p| p.exists())
        };
        let rootcert = match self.non_empty("sslrootcert") {
            Some("system") => Some(RootCert::System),
            Some(file) => Some(RootCert::File(PathBuf::from(file))),
            None => in_home("root.crt").map(RootCert::File),
        };
        let cert = self.path("sslcert").or_else(|| in_home("postgresql.crt"));
        let key = self
            .path("sslkey")
            .or_else(|| cert.as_ref().and(in_home("postgresql.key")));
        let sni = match self.value("sslsni") {
            None | Some("1") => true,
            Some("0") => false,
            Some(v) => return Err(format!("invalid sslsni {v:?}: expected 0 or 1")),
        };
        for key in ["ssl_min_protocol_version", "ssl_max_protocol_version"] {
            if let Some(v) = self.value(key) {
                if !matches!(v, "" | "TLSv1" | "TLSv1.1" | "TLSv1.2" | "TLSv1.3") {
                    return Err(format!("invalid {key} {v:?}: expected TLSv1.2 or TLSv1.3"));
                }
            }
        }
        Ok(SslParams {
            mode,
            rootcert,
            cert,
            key,
            crl: self.path("sslcrl"),
            sni,
            min_protocol: self
                .non_empty("ssl_min_protocol_version")
                .map(str::to_owned),
            max_protocol: self
                .non_empty("ssl_max_protocol_version")
                .map(str::to_owned),
        })
    }
}

/// libpq's default socket directory as Debian builds it, else `/tmp`.
fn default_socket_dir() -> PathBuf {
    let debian = Path::new("/var/run/postgresql");
    if debian.is_dir() {
        debian.to_owned()
    } else {
        PathBuf::from("/tmp")
    }
}

/// Pairs `host`, `hostaddr` and `port` lists the way libpq does: one port for
/// all, or one per host (empty entries mean 5432).
fn hosts(
    host: Option<&str>,
    hostaddr: Option<&str>,
    port: Option<&str>,
) -> Result<Vec<Host>, String> {
    let split = |v: Option<&str>| -> Vec<String> {
        match v {
            None | Some("") => Vec::new(),
            Some(v) => v.split(',').map(|s| s.trim().to_owned()).collect(),
        }
    };
    let names = split(host);
    let addrs = split(hostaddr);
    let ports = split(port);
    let count = names.len().max(addrs.len()).max(1);
    if !names.is_empty() && !addrs.is_empty() && names.len() != addrs.len() {
        return Err(format!(
            "{} host names but {} hostaddr values",
            names.len(),
            addrs.len()
        ));
    }
    if ports.len() > 1 && ports.len() != count {
        return Err(format!("{count} hosts but {} ports", ports.len()));
    }
    let port_of = |i: usize| -> Result<u16, String> {
        let p = ports
            .get(i)
            .or(ports.first())
            .map(String::as_str)
            .unwrap_or("");
        if p.is_empty() {
            return Ok(5432);
        }
        p.parse::<u16>()
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| format!("invalid port {p:?}"))
    };
    (0..count)
        .map(|i| {
            let port = port_of(i)?;
            let addr = match addrs.get(i).map(String::as_str) {
                None | Some("") => None,
                Some(a) => Some(
                    a.parse::<IpAddr>()
                        .map_err(|_| format!("invalid hostaddr {a:?}: expected an IP address"))?,
                ),
            };
            let name = names.get(i).cloned().unwrap_or_default();
            if name.starts_with('/') && addr.is_none() {
                return Ok(Host::Unix {
                    dir: PathBuf::from(name),
                    port,
                });
            }
            if name.is_empty() {
                return Ok(match addr {
                    Some(a) => Host::Tcp {
                        name: a.to_string(),
                        addr,
                        port,
                    },
                    None => Host::Unix {
                        dir: default_socket_dir(),
                        port,
                    },
                });
            }
            Ok(Host::Tcp { name, addr, port })
        })
        .collect()
}

/// The `(key, value)` pairs of a URL or keyword string, in order.
pub fn parse_pairs(conninfo: &str) -> Result<Vec<(String, String)>, String> {
    let s = conninfo.trim();
    for scheme in ["postgresql://", "postgres://"] {
        if let Some(rest) = s.strip_prefix(scheme) {
            return parse_url(rest);
        }
    }
    parse_keywords(s)
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| "invalid percent-encoded token in URL".to_owned())?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "URL is not valid UTF-8 after percent-decoding".to_owned())
}

fn parse_url(rest: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let (main, query) = match rest.split_once('?') {
        Some((m, q)) => (m, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match main.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (main, None),
    };
    let hostspec = match authority.rsplit_once('@') {
        Some((userinfo, hostspec)) => {
            let (user, password) = match userinfo.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userinfo, None),
            };
            if !user.is_empty() {
                pairs.push(("user".to_owned(), percent_decode(user)?));
            }
            if let Some(p) = password {
                pairs.push(("password".to_owned(), percent_decode(p)?));
            }
            hostspec
        }
        None => authority,
    };
    if !hostspec.is_empty() {
        let mut hosts = Vec::new();
        let mut ports = Vec::new();
        for one in hostspec.split(',') {
            let (host, port) = if let Some(v6) = one.strip_prefix('[') {
                let (h, after) = v6
                    .split_once(']')
                    .ok_or_else(|| format!("unterminated IPv6 address in URL: {one:?}"))?;
                (h, after.strip_prefix(':'))
            } else {
                match one.split_once(':') {
                    Some((h, p)) => (h, Some(p)),
                    None => (one, None),
                }
            };
            hosts.push(percent_decode(host)?);
            ports.push(port.unwrap_or("").to_owned());
        }
        pairs.push(("host".to_owned(), hosts.join(",")));
        if ports.iter().any(|p| !p.is_empty()) {
            pairs.push(("port".to_owned(), ports.join(",")));
        }
    }
    if let Some(db) = path.filter(|p| !p.is_empty()) {
        pairs.push(("dbname".to_owned(), percent_decode(db)?));
    }
    for param in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = param
            .split_once('=')
            .ok_or_else(|| format!("missing \"=\" after {param:?} in URL query"))?;
        let key = percent_decode(k)?;
        // libpq's URL alias.
        let key = if key == "ssl" && v == "true" {
            pairs.push(("sslmode".to_owned(), "require".to_owned()));
            continue;
        } else {
            key
        };
        pairs.push((key, percent_decode(v)?));
    }
    Ok(pairs)
}

fn parse_keywords(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            return Err(format!("missing \"=\" after {key:?} in connection string"));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err("unterminated quoted string in connection string".into()),
                    Some('\'') => break,
                    Some('\\') => value.push(chars.next().unwrap_or('\\')),
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                chars.next();
                if c == '\\' {
                    value.push(chars.next().unwrap_or('\\'));
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Params {
        Params::parse_with_env(s, |_| None).unwrap()
    }

    #[test]
    fn urls_with_several_hosts_and_tls_parameters() {
        let p = parse(
            "postgresql://rep:p%40ss@a.example:5433,[::1],b/conjur?sslmode=verify-full&sslrootcert=/ca.pem&target_session_attrs=read-write&application_name=x",
        );
        assert_eq!(p.user.as_deref(), Some("rep"));
        assert_eq!(p.password.as_deref(), Some("p@ss"));
        assert_eq!(p.dbname.as_deref(), Some("conjur"));
        assert_eq!(p.hosts.len(), 3);
        assert_eq!(p.hosts[0].describe(), "a.example:5433");
        assert_eq!(p.hosts[1].describe(), "[::1]:5432");
        assert_eq!(p.hosts[2].describe(), "b:5432");
        assert_eq!(p.ssl.mode, SslMode::VerifyFull);
        assert_eq!(p.ssl.rootcert, Some(RootCert::File("/ca.pem".into())));
        assert_eq!(p.target_session_attrs, TargetSessionAttrs::ReadWrite);
        assert_eq!(p.application_name.as_deref(), Some("x"));
    }

    #[test]
    fn keyword_strings_with_quotes() {
        let p = parse(
            "host=h1,h2 port=1,2 user=u password='it\\'s a pw' dbname = d sslmode=require connect_timeout=1 keepalives_idle=30",
        );
        assert_eq!(p.password.as_deref(), Some("it's a pw"));
        assert_eq!(p.hosts[1].describe(), "h2:2");
        assert_eq!(p.ssl.mode, SslMode::Require);
        assert_eq!(p.connect_timeout, Some(Duration::from_secs(2)));
        assert_eq!(p.keepalives.idle, Some(Duration::from_secs(30)));
        assert!(format!("{p:?}").contains("<redacted>"));
        assert!(!format!("{p:?}").contains("it's"));
    }

    #[test]
    fn environment_fills_only_what_is_missing() {
        let env = |name: &str| match name {
            "PGSSLMODE" => Some("verify-ca".to_owned()),
            "PGSSLROOTCERT" => Some("/env-ca.pem".to_owned()),
            "PGPASSWORD" => Some("never".to_owned()),
            _ => None,
        };
        let p = Params::parse_with_env("host=h user=u", env).unwrap();
        assert_eq!(p.ssl.mode, SslMode::VerifyCa);
        assert_eq!(p.ssl.rootcert, Some(RootCert::File("/env-ca.pem".into())));
        assert_eq!(
            p.password, None,
            "PGPASSWORD is not a per-connection default"
        );
        let p = Params::parse_with_env("host=h user=u sslmode=disable", env).unwrap();
        assert_eq!(p.ssl.mode, SslMode::Disable);
    }

    #[test]
    fn unknown_or_bad_values_are_errors() {
        let err = |s: &str| Params::parse_with_env(s, |_| None).unwrap_err();
        assert!(err("host=h sslmode=verify").contains("sslmode"));
        assert!(err("host=h sslpassword=x").contains("sslpassword"));
        assert!(err("host=h,i port=1,2,3").contains("ports"));
        assert!(err("postgresql://h/db?sslmode").contains("="));
        assert!(err("host=h gssencmode=require").contains("gssencmode"));
    }

    #[test]
    fn sockets_and_hostaddr() {
        let p = parse("host=/run/pg port=5433");
        assert_eq!(p.hosts[0].describe(), "/run/pg/.s.PGSQL.5433");
        let p = parse("host=db.example hostaddr=10.0.0.1");
        assert_eq!(
            p.hosts[0],
            Host::Tcp {
                name: "db.example".into(),
                addr: Some("10.0.0.1".parse().unwrap()),
                port: 5432
            }
        );
    }
}
