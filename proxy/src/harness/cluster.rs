/*!
Throwaway PostgreSQL clusters from the installed server binaries: one temp dir and one
free loopback port each, started in parallel, stopped and deleted on drop (also when a
test panics). Used by the integration tests, `pgsieve demo`, `pgsieve bench` and the
benches, so that none of them scripts PostgreSQL on its own.

Running as root (CI, containers): PostgreSQL refuses to run as root, so the cluster dir
is chowned to the OS user `postgres` and `initdb`/`pg_ctl` run under its uid/gid; the
clients (this process, psql) stay root and connect over TCP with `trust`. As an ordinary
user everything runs as that user.

Every cluster gets a database `conjur` and a non-superuser role `replicator` (LOGIN
REPLICATION, SCRAM password [`REPLICATOR_PASSWORD`]), the role pgsieve is meant to use
on a real leader; everyone else authenticates with `trust`.
*/

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use tempfile::TempDir;

use super::error::HarnessError;

/// Settings of every cluster (the docker kit includes the same file).
pub const COMMON_CONF: &str = include_str!("../../../docker/postgres/common.conf");
/// Settings only a throwaway cluster may have: speed over durability. Never
/// in `docker/` (a deployment copies those files; `tests/ops_kit.rs` checks).
pub const THROWAWAY_CONF: &str = "fsync = off\nfull_page_writes = off\n\
    # PG15 waits this long before restarting a subscription's apply worker.\n\
    wal_retrieve_retry_interval = 50ms\n";
/// Settings of a leader: `wal_level = logical`, wal senders and slots.
pub const LEADER_CONF: &str = include_str!("../../../docker/postgres/leader.conf");
/// Settings of a follower: slots (which also bound replication origins).
pub const FOLLOWER_CONF: &str = include_str!("../../../docker/postgres/follower.conf");

/// The database created in every cluster, where the Conjur schema goes.
pub const CONJUR_DB: &str = "conjur";
/// The non-superuser replication role created in every cluster.
pub const REPLICATOR_ROLE: &str = "replicator";
/// Its password (SCRAM-SHA-256). Throwaway clusters on loopback only.
pub const REPLICATOR_PASSWORD: &str = "pgsieve-replicator-pw";

/// pg_hba.conf of every cluster: `replicator` must use SCRAM (so tests exercise
/// pgsieve's password authentication), everything else is trusted.
const PG_HBA: &str = "\
# pgsieve harness: replicator authenticates with SCRAM, everyone else is trusted.
local   all         all                         trust
local   replication all                         trust
host    all         replicator  127.0.0.1/32    scram-sha-256
host    replication replicator  127.0.0.1/32    scram-sha-256
host    all         all         127.0.0.1/32    trust
host    replication all         127.0.0.1/32    trust
";

/// How many times a start is retried on a new port after "Address already in use".
const PORT_ATTEMPTS: usize = 5;
/// Marker file holding the pid of the process that owns a cluster dir (orphan reaping).
const OWNER_FILE: &str = "pgsieve-owner.pid";
/// Prefix of every cluster dir in the temp dir.
const DIR_PREFIX: &str = "pgsieve-pg-";

/// Which role a cluster plays; decides its configuration fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// The Conjur leader: `wal_level = logical`, wal senders, slots.
    Leader,
    /// A Conjur follower, written by pgsieve (origins need `max_replication_slots`).
    Follower,
}

/// What to start: a name (for logs and errors), a profile and extra settings.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    name: String,
    profile: Profile,
    conf: Vec<String>,
}

impl ClusterSpec {
    /// A leader named `name`.
    pub fn leader(name: impl Into<String>) -> Self {
        ClusterSpec {
            name: name.into(),
            profile: Profile::Leader,
            conf: Vec::new(),
        }
    }

    /// A follower named `name`.
    pub fn follower(name: impl Into<String>) -> Self {
        ClusterSpec {
            name: name.into(),
            profile: Profile::Follower,
            conf: Vec::new(),
        }
    }

    /// Adds one `postgresql.conf` line (`"key = value"`), applied after the profile's.
    pub fn with_conf(mut self, line: impl Into<String>) -> Self {
        self.conf.push(line.into());
        self
    }

    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cluster's profile.
    pub fn profile(&self) -> Profile {
        self.profile
    }
}

/// A running (or deliberately stopped) throwaway cluster. Dropping it stops the server
/// (immediate mode) and deletes its directory.
#[derive(Debug)]
pub struct Cluster {
    spec: ClusterSpec,
    port: u16,
    dir: Option<TempDir>,
    bindir: PathBuf,
    owner: Option<(u32, u32)>,
    running: bool,
}

impl Cluster {
    /// Initialises and starts a cluster, then creates the `conjur` database and the
    /// `replicator` role. On failure the error holds the server log's tail.
    pub fn start(spec: ClusterSpec) -> Result<Cluster, HarnessError> {
        let mut cluster = Cluster::empty(spec)?;
        cluster.init()?;
        cluster.start_on_free_port()?;
        cluster.bootstrap()?;
        Ok(cluster)
    }

    /// A physical streaming standby of `primary` (`pg_basebackup -R`), started:
    /// the way a Conjur leader's auto-failover candidate is made. Its profile
    /// is the primary's (it becomes a leader when promoted).
    pub fn start_standby(name: &str, primary: &Cluster) -> Result<Cluster, HarnessError> {
        let spec = ClusterSpec {
            name: name.to_owned(),
            profile: primary.spec.profile,
            conf: Vec::new(),
        };
        let mut cluster = Cluster::empty(spec)?;
        let out = cluster
            .as_owner(Command::new(cluster.bindir.join("pg_basebackup")))
            .arg("-D")
            .arg(cluster.data_dir())
            .args([
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-sync",
                "-U",
                "postgres",
                "-h",
            ])
            .arg(primary.host())
            .arg("-p")
            .arg(primary.port().to_string())
            .output()
            .map_err(|e| HarnessError::io("running pg_basebackup", e))?;
        check(&out, || format!("pg_basebackup of {name}"))?;
        cluster.start_on_free_port()?;
        Ok(cluster)
    }

    /// Promotes a standby (`pg_ctl promote`, waiting until it accepts writes).
    pub fn promote(&mut self) -> Result<(), HarnessError> {
        let out = self
            .as_owner(Command::new(self.bindir.join("pg_ctl")))
            .arg("-D")
            .arg(self.data_dir())
            .args(["-w", "-t", "60", "promote"])
            .output()
            .map_err(|e| HarnessError::io("running pg_ctl promote", e))?;
        check(&out, || format!("promoting {}", self.spec.name))
    }

    /// A cluster dir (owned by the server's user) without a data directory.
    fn empty(spec: ClusterSpec) -> Result<Cluster, HarnessError> {
        reap_orphans_once();
        let bindir = bindir()?.to_path_buf();
        let owner = server_owner()?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("{DIR_PREFIX}{}-", sanitize(&spec.name)))
            .tempdir()
            .map_err(|e| HarnessError::io("creating the cluster's temp dir", e))?;
        fs::write(dir.path().join(OWNER_FILE), std::process::id().to_string())
            .map_err(|e| HarnessError::io("writing the owner pid file", e))?;
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))
            .map_err(|e| HarnessError::io("chmod 755 on the cluster dir", e))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .map_err(|e| HarnessError::io("chown of the cluster dir to postgres", e))?;
        }
        Ok(Cluster {
            spec,
            port: 0,
            dir: Some(dir),
            bindir,
            owner,
            running: false,
        })
    }

    /// Starts several clusters in parallel (one thread each). If one fails, the others
    /// are stopped and removed and the first error is returned.
    pub fn start_all(specs: Vec<ClusterSpec>) -> Result<Vec<Cluster>, HarnessError> {
        let results: Vec<Result<Cluster, HarnessError>> = std::thread::scope(|s| {
            let handles: Vec<_> = specs
                .into_iter()
                .map(|spec| {
                    let name = spec.name.clone();
                    (name, s.spawn(move || Cluster::start(spec)))
                })
                .collect();
            handles
                .into_iter()
                .map(|(name, h)| {
                    h.join().unwrap_or_else(|_| {
                        Err(HarnessError::Usage(format!(
                            "thread starting cluster {name} panicked"
                        )))
                    })
                })
                .collect()
        });
        results.into_iter().collect()
    }

    /// The cluster's name (from its spec).
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The cluster's profile.
    pub fn profile(&self) -> Profile {
        self.spec.profile
    }

    /// The loopback TCP port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The address it listens on (always `127.0.0.1`).
    pub fn host(&self) -> &str {
        "127.0.0.1"
    }

    /// The cluster's directory (`data/` and `log` inside); gone after drop.
    pub fn dir(&self) -> &Path {
        match &self.dir {
            Some(d) => d.path(),
            None => Path::new("/nonexistent"),
        }
    }

    /// The data directory (PGDATA).
    pub fn data_dir(&self) -> PathBuf {
        self.dir().join("data")
    }

    /// Whether the server is running (as far as the harness knows).
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// Superuser URL (`postgres`, trust) of database `db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// URL of database `db` for the non-superuser replication role `replicator`,
    /// which authenticates with SCRAM-SHA-256.
    pub fn replicator_url(&self, db: &str) -> String {
        format!(
            "postgresql://{REPLICATOR_ROLE}:{REPLICATOR_PASSWORD}@127.0.0.1:{}/{db}",
            self.port
        )
    }

    /// Connects as superuser to `db` and spawns the connection task on the current
    /// tokio runtime.
    pub async fn connect(&self, db: &str) -> Result<tokio_postgres::Client, HarnessError> {
        connect_url(&self.url(db)).await
    }

    /// Runs `sql` with `psql -XAtq -v ON_ERROR_STOP=1` as superuser on `db` and
    /// returns its stdout (unaligned, tuples only). For setup, not for hot loops.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, HarnessError> {
        let out = Command::new(self.bindir.join("psql"))
            .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.host())
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", "postgres", "-d", db, "-c", sql])
            .current_dir("/")
            .output()
            .map_err(|e| HarnessError::io("running psql", e))?;
        check(&out, || {
            format!("psql on {} ({})", self.spec.name, shorten(sql))
        })?;
        Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
    }

    /// Stops the server cleanly (`pg_ctl -m fast`), waiting until it is down.
    pub fn stop_fast(&mut self) {
        self.stop("fast");
    }

    /// Stops the server without a shutdown checkpoint (`pg_ctl -m immediate`): the next
    /// start runs crash recovery. For crash tests.
    pub fn kill(&mut self) {
        self.stop("immediate");
    }

    /// Starts a stopped server again on the same port and data directory.
    pub fn start_again(&mut self) -> Result<(), HarnessError> {
        if self.running {
            return Ok(());
        }
        match self.pg_ctl_start() {
            Ok(()) => Ok(()),
            Err(cause) => Err(self.start_error(cause)),
        }
    }

    /// The last `lines` lines of the server log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = fs::read_to_string(self.dir().join("log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn init(&mut self) -> Result<(), HarnessError> {
        let data = self.data_dir();
        let out = self
            .as_owner(Command::new(self.bindir.join("initdb")))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ])
            .output()
            .map_err(|e| HarnessError::io("running initdb", e))?;
        check(&out, || format!("initdb of {}", self.spec.name))?;
        let socket_dir = self.dir().display().to_string();
        // sun_path is 108 bytes; the socket name adds ~20. Fall back to TCP only.
        let sockets = if socket_dir.len() <= 80 {
            socket_dir
        } else {
            String::new()
        };
        let profile = match self.spec.profile {
            Profile::Leader => LEADER_CONF,
            Profile::Follower => FOLLOWER_CONF,
        };
        let mut conf = format!(
            "\n# --- pgsieve harness: common.conf ---\n{COMMON_CONF}\n\
             # --- pgsieve harness: throwaway ---\n{THROWAWAY_CONF}\n\
             # --- pgsieve harness: profile ---\n{profile}\n\
             # --- pgsieve harness: cluster ---\n\
             listen_addresses = '127.0.0.1'\nunix_socket_directories = '{sockets}'\n"
        );
        for line in &self.spec.conf {
            conf.push_str(line);
            conf.push('\n');
        }
        append(&data.join("postgresql.conf"), &conf)?;
        fs::write(data.join("pg_hba.conf"), PG_HBA)
            .map_err(|e| HarnessError::io("writing pg_hba.conf", e))?;
        Ok(())
    }

    fn start_on_free_port(&mut self) -> Result<(), HarnessError> {
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS {
            self.port = free_port()?;
            append(
                &self.data_dir().join("postgresql.conf"),
                &format!("port = {}\n", self.port),
            )?;
            match self.pg_ctl_start() {
                Ok(()) => return Ok(()),
                Err(cause) => {
                    let log = self.log_tail(20);
                    if !log.contains("Address already in use") {
                        return Err(self.start_error(cause));
                    }
                    last = cause;
                }
            }
        }
        Err(self.start_error(format!(
            "no free port after {PORT_ATTEMPTS} attempts: {last}"
        )))
    }

    fn pg_ctl_start(&mut self) -> Result<(), String> {
        let out = self
            .as_owner(Command::new(self.bindir.join("pg_ctl")))
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.dir().join("log"))
            .args(["-w", "-t", "60", "start"])
            .output()
            .map_err(|e| format!("running pg_ctl start: {e}"))?;
        if out.status.success() {
            self.running = true;
            Ok(())
        } else {
            Err(format!(
                "pg_ctl start exited with {}: {}",
                out.status,
                output_text(&out)
            ))
        }
    }

    fn bootstrap(&self) -> Result<(), HarnessError> {
        self.psql("postgres", &format!("CREATE DATABASE {CONJUR_DB}"))?;
        self.psql(
            "postgres",
            &format!(
                "CREATE ROLE {REPLICATOR_ROLE} LOGIN REPLICATION PASSWORD '{REPLICATOR_PASSWORD}'"
            ),
        )?;
        Ok(())
    }

    fn stop(&mut self, mode: &str) {
        if !self.running {
            return;
        }
        let data = self.data_dir();
        let _ = self
            .as_owner(Command::new(self.bindir.join("pg_ctl")))
            .arg("-D")
            .arg(data)
            .args(["-m", mode, "-w", "-t", "60", "stop"])
            .output();
        self.running = false;
    }

    fn start_error(&self, cause: String) -> HarnessError {
        HarnessError::Start {
            name: self.spec.name.clone(),
            cause,
            log_tail: self.log_tail(30),
        }
    }

    fn as_owner(&self, mut cmd: Command) -> Command {
        if let Some((uid, gid)) = self.owner {
            cmd.uid(uid).gid(gid);
        }
        cmd.current_dir("/");
        cmd
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill();
        // TempDir's own drop removes the directory (root can remove postgres's files).
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }
}

/// Connects to `url` through pgsieve's connection layer (libpq defaults: TLS
/// when the server offers it, so `hostssl`-only clusters work too) and
/// spawns the connection task on the current runtime.
pub async fn connect_url(url: &str) -> Result<tokio_postgres::Client, HarnessError> {
    let what = || format!("connecting to {}", redact_url(url));
    let cfg = crate::conn::ConnConfig::parse(url)
        .map_err(|e| HarnessError::Usage(format!("{}: {e}", what())))?;
    match crate::conn::connect_client(&cfg, "a harness cluster").await {
        Ok((client, _)) => Ok(client),
        Err(e) => match e.source {
            crate::conn::sql::Failure::Pg(source) => Err(HarnessError::pg(what(), source)),
            crate::conn::sql::Failure::Conn(source) => {
                Err(HarnessError::Usage(format!("{}: {source}", what())))
            }
        },
    }
}

/// The directory of the PostgreSQL server binaries: `$PGSIEVE_PG_BINDIR`, else
/// `pg_config --bindir`, else `/usr/lib/postgresql/15/bin`.
pub fn bindir() -> Result<&'static Path, HarnessError> {
    static BINDIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = BINDIR.get_or_init(|| {
        if let Some(d) = std::env::var_os("PGSIEVE_PG_BINDIR") {
            return PathBuf::from(d);
        }
        Command::new("pg_config")
            .arg("--bindir")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
            .unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
    });
    if dir.join("initdb").is_file() {
        Ok(dir.as_path())
    } else {
        Err(HarnessError::Usage(format!(
            "no initdb in {} (set PGSIEVE_PG_BINDIR to PostgreSQL's bin directory)",
            dir.display()
        )))
    }
}

/// `Some((uid, gid))` of the OS user `postgres` when this process is root (the server
/// refuses to run as root), `None` otherwise.
fn server_owner() -> Result<Option<(u32, u32)>, HarnessError> {
    let euid = fs::metadata("/proc/self")
        .map_err(|e| HarnessError::io("reading /proc/self", e))?
        .uid();
    if euid != 0 {
        return Ok(None);
    }
    let passwd = fs::read_to_string("/etc/passwd")
        .map_err(|e| HarnessError::io("reading /etc/passwd", e))?;
    passwd
        .lines()
        .find_map(|line| {
            let mut f = line.split(':');
            if f.next()? != "postgres" {
                return None;
            }
            let uid = f.nth(1)?.parse().ok()?;
            let gid = f.next()?.parse().ok()?;
            Some(Some((uid, gid)))
        })
        .ok_or_else(|| {
            HarnessError::Usage(
                "running as root but there is no OS user `postgres` to own the clusters \
                 (useradd --system postgres)"
                    .into(),
            )
        })
}

/// A loopback port that was free a moment ago (bind to port 0, read, close).
fn free_port() -> Result<u16, HarnessError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| HarnessError::io("binding 127.0.0.1:0 to find a free port", e))?;
    let port = l
        .local_addr()
        .map_err(|e| HarnessError::io("reading the bound port", e))?
        .port();
    Ok(port)
}

/// Once per process: stops and removes cluster dirs whose owning process is gone
/// (left behind when a test process was killed, e.g. by a timeout).
fn reap_orphans_once() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(reap_orphans);
}

fn reap_orphans() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_ours = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(DIR_PREFIX));
        if !is_ours {
            continue;
        }
        let Some(pid) = fs::read_to_string(path.join(OWNER_FILE))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
        else {
            continue; // being created right now, or not ours
        };
        if is_alive(pid) {
            continue;
        }
        if let Ok(bindir) = bindir() {
            let data = path.join("data");
            if data.join("postmaster.pid").exists() {
                let owner = server_owner().ok().flatten();
                let mut cmd = Command::new(bindir.join("pg_ctl"));
                if let Some((uid, gid)) = owner {
                    cmd.uid(uid).gid(gid);
                }
                let _ = cmd
                    .current_dir("/")
                    .arg("-D")
                    .arg(&data)
                    .args(["-m", "immediate", "-w", "-t", "30", "stop"])
                    .output();
            }
        }
        let _ = fs::remove_dir_all(&path);
    }
}

/// Whether process `pid` exists and is not a zombie (in containers PID 1 may never reap
/// a killed test process, leaving its `/proc` entry behind).
fn is_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rfind(')')
                .and_then(|i| stat.get(i + 1..))
                .and_then(|rest| rest.split_whitespace().next());
            !matches!(state, Some("Z") | Some("X"))
        }
        Err(_) => false,
    }
}

fn append(path: &Path, text: &str) -> Result<(), HarnessError> {
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| HarnessError::io(format!("opening {}", path.display()), e))?;
    f.write_all(text.as_bytes())
        .map_err(|e| HarnessError::io(format!("writing {}", path.display()), e))
}

fn check(out: &Output, what: impl FnOnce() -> String) -> Result<(), HarnessError> {
    if out.status.success() {
        Ok(())
    } else {
        Err(HarnessError::Command {
            what: what(),
            status: out.status.to_string(),
            output: output_text(out),
        })
    }
}

fn output_text(out: &Output) -> String {
    let mut s = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !stdout.trim().is_empty() {
        s.push('\n');
        s.push_str(stdout.trim());
    }
    s
}

fn shorten(sql: &str) -> String {
    let one_line: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > 80 {
        format!("{}…", one_line.chars().take(80).collect::<String>())
    } else {
        one_line
    }
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(20)
        .collect()
}

/// `url` with any password replaced by `***` (errors must not print credentials).
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}
