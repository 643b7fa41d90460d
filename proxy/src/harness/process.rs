/*!
Running the real `pgsieve` binary against harness clusters: a config file
written from a [`Topology`](super::Topology), start, SIGTERM, SIGKILL and
restart. Tests, the demo and the bench drive pgsieve through this, so they
exercise the same process operators run.
*/

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::cluster::{CONJUR_DB, Cluster};
use super::error::HarnessError;

/// One follower entry of a generated config.
#[derive(Debug, Clone)]
pub struct FollowerEntry {
    /// Follower name.
    pub name: String,
    /// Connection URL (superuser of the follower cluster).
    pub url: String,
    /// Replica set (full data-group id), `None` for a full follower.
    pub replica_set: Option<String>,
    /// `execute` or `any`.
    pub privilege: &'static str,
    /// `always` patterns.
    pub always: Vec<String>,
}

impl FollowerEntry {
    /// A follower cluster receiving everything.
    pub fn full(name: &str, cluster: &Cluster) -> Self {
        Self {
            name: name.to_owned(),
            url: cluster.url(CONJUR_DB),
            replica_set: None,
            privilege: "execute",
            always: Vec::new(),
        }
    }

    /// A follower cluster holding the replica set whose data group is `data_group`.
    pub fn filtered(name: &str, cluster: &Cluster, data_group: &str) -> Self {
        Self {
            replica_set: Some(data_group.to_owned()),
            ..Self::full(name, cluster)
        }
    }
}

/// A generated `pgsieve.toml`.
#[derive(Debug, Clone)]
pub struct PgsieveConfig {
    /// Leader URL (the SCRAM `replicator` role by default).
    pub leader_url: String,
    /// Slot name.
    pub slot: String,
    /// Publication name.
    pub publication: String,
    /// Followers.
    pub followers: Vec<FollowerEntry>,
    /// Extra TOML appended verbatim (e.g. an `[apply]` section).
    pub extra: String,
}

impl PgsieveConfig {
    /// A config for `leader` with the given slot and followers.
    pub fn new(leader: &Cluster, slot: &str, followers: Vec<FollowerEntry>) -> Self {
        Self {
            leader_url: leader.replicator_url(CONJUR_DB),
            slot: slot.to_owned(),
            publication: super::topology::DEFAULT_PUBLICATION.to_owned(),
            followers,
            extra: String::new(),
        }
    }

    /// The TOML text.
    pub fn to_toml(&self) -> String {
        let q = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
        let mut out = String::new();
        let _ = writeln!(
            out,
            "[leader]\nurl = {}\nslot = {}\npublication = {}\n",
            q(&self.leader_url),
            q(&self.slot),
            q(&self.publication)
        );
        for f in &self.followers {
            let _ = writeln!(
                out,
                "[[follower]]\nname = {}\nurl = {}",
                q(&f.name),
                q(&f.url)
            );
            if let Some(set) = &f.replica_set {
                let _ = writeln!(
                    out,
                    "replica_set = {}\nprivilege = {}",
                    q(set),
                    q(f.privilege)
                );
            }
            if !f.always.is_empty() {
                let list: Vec<String> = f.always.iter().map(|p| q(p)).collect();
                let _ = writeln!(out, "always = [{}]", list.join(", "));
            }
            out.push('\n');
        }
        out.push_str(&self.extra);
        out
    }
}

/// The `pgsieve` binary: `$PGSIEVE_BIN`, else next to the running
/// executable's directory (cargo puts test binaries in `target/*/deps`).
pub fn pgsieve_binary() -> Result<PathBuf, HarnessError> {
    if let Ok(path) = std::env::var("PGSIEVE_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()
        .map_err(|e| HarnessError::Usage(format!("cannot locate the test executable: {e}")))?;
    let mut dir = exe.parent().map(Path::to_path_buf);
    while let Some(d) = dir {
        let candidate = d.join("pgsieve");
        if candidate.is_file() {
            return Ok(candidate);
        }
        dir = d.parent().map(Path::to_path_buf);
    }
    Err(HarnessError::Usage(
        "pgsieve binary not found: build it (cargo build -p pgsieve) or set PGSIEVE_BIN".into(),
    ))
}

/// A running `pgsieve run`, killed on drop.
#[derive(Debug)]
pub struct PgsieveProcess {
    child: Option<Child>,
    dir: tempfile::TempDir,
    config: PathBuf,
    env: Vec<(String, String)>,
    log: PathBuf,
    starts: u32,
}

impl PgsieveProcess {
    /// Writes `config` and starts `pgsieve run`.
    pub fn start(config: &PgsieveConfig) -> Result<Self, HarnessError> {
        let dir = tempfile::tempdir()
            .map_err(|e| HarnessError::Usage(format!("temp dir for pgsieve: {e}")))?;
        let path = dir.path().join("pgsieve.toml");
        std::fs::write(&path, config.to_toml())
            .map_err(|e| HarnessError::Usage(format!("writing pgsieve.toml: {e}")))?;
        Self::start_file(&path, Vec::new(), dir)
    }

    /// Starts `pgsieve run -c <config_file>` with `env` added (`PGSIEVE_*`
    /// overrides): how the docker kit's own config files are exercised.
    pub fn start_with_env(
        config_file: &Path,
        env: Vec<(String, String)>,
    ) -> Result<Self, HarnessError> {
        let dir = tempfile::tempdir()
            .map_err(|e| HarnessError::Usage(format!("temp dir for pgsieve: {e}")))?;
        Self::start_file(config_file, env, dir)
    }

    fn start_file(
        config_file: &Path,
        env: Vec<(String, String)>,
        dir: tempfile::TempDir,
    ) -> Result<Self, HarnessError> {
        let log = dir.path().join("pgsieve.log");
        let mut process = Self {
            child: None,
            dir,
            config: config_file.to_owned(),
            env,
            log,
            starts: 0,
        };
        process.start_again()?;
        Ok(process)
    }

    /// Starts the process again after a kill or stop (appends to the same log).
    pub fn start_again(&mut self) -> Result<(), HarnessError> {
        if self.child.is_some() {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| HarnessError::Usage(format!("pgsieve log: {e}")))?;
        let err = log
            .try_clone()
            .map_err(|e| HarnessError::Usage(format!("pgsieve log: {e}")))?;
        let child = Command::new(pgsieve_binary()?)
            .arg("run")
            .arg("-c")
            .arg(&self.config)
            .env(
                "PGSIEVE_LOG",
                std::env::var("PGSIEVE_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|e| HarnessError::Usage(format!("starting pgsieve: {e}")))?;
        self.child = Some(child);
        self.starts += 1;
        Ok(())
    }

    /// Path of the config file.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The temp dir holding config and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything the process(es) logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a clean exit (up to `timeout`); returns the exit code.
    pub fn terminate(&mut self, timeout: Duration) -> Option<i32> {
        let mut child = self.child.take()?;
        #[allow(unsafe_code)]
        // SAFETY: kill(2) on a pid we own; no memory is touched.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Process id of the running pgsieve, if any.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Peak resident set size of the running process so far, in KiB (`VmHWM` in
    /// `/proc/<pid>/status`); `None` if it is not running or the value is unreadable.
    /// Read it before terminating: the kernel forgets it at exit.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// Waits up to `timeout` for the process to exit on its own; its exit code
    /// (`Some(None)` for a signal), or `None` if it is still running.
    pub fn wait_exited(&mut self, timeout: Duration) -> Option<Option<i32>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(code) = self.exited() {
                return Some(code);
            }
            if self.child.is_none() || Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// If the process has exited, its exit code (`Some(None)` for a signal).
    pub fn exited(&mut self) -> Option<Option<i32>> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                Some(status.code())
            }
            _ => None,
        }
    }
}

impl Drop for PgsieveProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `pgsieve <args>` to completion, returning (exit code, stdout, stderr).
pub fn run_pgsieve(
    args: &[&str],
    timeout: Duration,
) -> Result<(Option<i32>, String, String), HarnessError> {
    run_pgsieve_with_env(args, &[], timeout)
}

/// [`run_pgsieve`] with extra environment variables (`PGSIEVE_*` overrides).
pub fn run_pgsieve_with_env(
    args: &[&str],
    env: &[(String, String)],
    timeout: Duration,
) -> Result<(Option<i32>, String, String), HarnessError> {
    let mut child = Command::new(pgsieve_binary()?)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| HarnessError::Usage(format!("starting pgsieve: {e}")))?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child
        .wait_with_output()
        .map_err(|e| HarnessError::Usage(format!("pgsieve output: {e}")))?;
    Ok((
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}
