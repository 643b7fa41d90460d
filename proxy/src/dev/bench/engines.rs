/*!
The engines a bench case compares, each behind the same four steps: set up
(initial copy until the first sentinel version arrives), pause (nothing reads
the slot), catch up (resume and time until the new sentinel version arrives)
and measure (walsender CPU, pgsieve CPU and peak RSS, follower CPU).

- pgsieve: the real binary through [`PgsieveProcess`]; paused by SIGTERM.
- native: PG15 publication (a `LIKE` row filter on the secrets' prefix when
  half are filtered) and subscription; paused by `ALTER SUBSCRIPTION … DISABLE`.
- pglogical 2: the seed's replication set with `is_resource_visible` as the
  secrets row filter; paused by `alter_subscription_disable`.
- raw reader: pgsieve's own replication connection draining the slot and
  discarding every message (counting secrets inserts): the ceiling.
*/

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use pgsieve_protocol::pgoutput::LogicalMessage;
use pgsieve_protocol::{
    Lsn, PgOutputDecoder, PgTimestamp, ReplicationMessage, StandbyStatusUpdate,
};
use serde::Serialize;
use tokio_postgres::Client;

use super::BenchError;
use super::measure::{self, ChildCpu};
use super::workloads::{Filter, Schema, native_filter, replica_set, sentinel};
use crate::harness::HarnessError;
use crate::harness::cluster::{CONJUR_DB, Cluster};
use crate::harness::error::PgContext;
use crate::harness::process::{FollowerEntry, PgsieveConfig, PgsieveProcess};
use crate::harness::topology::DEFAULT_PUBLICATION;
use crate::source::{ReplicationConnection, SnapshotAction, SourceConfig};

/// Which engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum EngineKind {
    /// pgsieve (the binary).
    Pgsieve,
    /// PostgreSQL native logical replication.
    Native,
    /// pglogical 2.
    Pglogical,
    /// A replication connection that drains and discards.
    Raw,
}

impl EngineKind {
    /// Every engine, in report order.
    pub const ALL: [EngineKind; 4] = [
        EngineKind::Pgsieve,
        EngineKind::Native,
        EngineKind::Pglogical,
        EngineKind::Raw,
    ];

    /// Short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Pgsieve => "pgsieve",
            EngineKind::Native => "native",
            EngineKind::Pglogical => "pglogical",
            EngineKind::Raw => "ceiling",
        }
    }

    /// Whether it writes to a follower cluster.
    pub fn has_follower(self) -> bool {
        self != EngineKind::Raw
    }
}

/// Slot of the pgsieve engine.
const PGSIEVE_SLOT: &str = "bench_pgsieve";
/// Publication, subscription and slot of the native engine.
const NATIVE: &str = "bench_native";
/// Slot of the raw reader.
const RAW_SLOT: &str = "bench_raw";
/// pglogical's replication set and subscription.
const PGL_SET: &str = "bench";
const PGL_SUB: &str = "bench_sub";
/// Tables pglogical cannot replicate (no primary key).
pub const PGLOGICAL_SKIPS: &[&str] = &["policy_log"];

/// Whether `postgresql-15-pglogical` is installed beside the server binaries.
pub fn pglogical_available(bindir: &Path) -> bool {
    bindir
        .parent()
        .is_some_and(|d| d.join("lib").join("pglogical.so").is_file())
}

/// Extra `postgresql.conf` lines of clusters that run pglogical.
pub const PGLOGICAL_CONF: [&str; 2] = [
    "shared_preload_libraries = 'pglogical'",
    "track_commit_timestamp = on",
];

/// What one catch-up measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Measured {
    /// Share of the catch-up the leader's walsender spent on a CPU (its CPU
    /// seconds ÷ catch-up seconds): near 1, the walsender's decoding is the
    /// limit and the engine is at the ceiling; well below, the engine made
    /// the walsender wait.
    pub walsender_utilization: Option<f64>,
    /// From resume until the sentinel arrived.
    pub catch_up_seconds: f64,
    /// CPU of the leader's walsender(s) serving this engine.
    pub walsender_cpu_seconds: Option<f64>,
    /// CPU of the pgsieve process.
    pub pgsieve_cpu_seconds: Option<f64>,
    /// Peak RSS of the pgsieve process.
    pub pgsieve_peak_rss_kib: Option<u64>,
    /// CPU of the follower's PostgreSQL processes during the catch-up.
    pub follower_cpu_seconds: Option<f64>,
    /// Raw reader: secrets inserts received.
    pub raw_secret_inserts: Option<i64>,
}

/// A follower cluster and the sessions the bench keeps on it.
pub struct FollowerSide {
    /// The cluster.
    pub cluster: Cluster,
    /// For checks.
    pub client: Client,
    /// Runs the sentinel loop (its backend is left out of CPU sums).
    waiter: Client,
    exclude: Vec<u32>,
}

impl Measured {
    /// Walsender CPU seconds ÷ catch-up seconds.
    pub fn walsender_utilization(&self) -> Option<f64> {
        let cpu = self.walsender_cpu_seconds?;
        (self.catch_up_seconds > 0.0).then(|| cpu / self.catch_up_seconds)
    }

    fn with_utilization(mut self) -> Measured {
        self.walsender_utilization = self.walsender_utilization();
        self
    }
}

impl FollowerSide {
    async fn new(cluster: Cluster, schema: Schema) -> Result<FollowerSide, HarnessError> {
        let client = crate::harness::conjur::prepare_conjur(&cluster).await?;
        if schema == Schema::Plain {
            super::workloads::use_plain_secrets(&client, false).await?;
        }
        let waiter = cluster.connect(CONJUR_DB).await?;
        let exclude = vec![
            measure::backend_pid(&client).await?,
            measure::backend_pid(&waiter).await?,
        ];
        Ok(FollowerSide {
            cluster,
            client,
            waiter,
            exclude,
        })
    }
}

/// What reads the leader's slot(s) for one or more followers: stopped so that a
/// backlog builds up, restarted to time its catch-up. The engines of a case (one
/// follower) and the fan-out runs (N followers) share it, so stopping and
/// restarting each kind of replication is written once.
pub enum Feeders {
    /// pgsieve processes (one hub, or one per follower): stopped by SIGTERM,
    /// started again with the same configuration.
    Pgsieve(Vec<PgsieveProcess>),
    /// A native subscription of this name on every follower:
    /// `ALTER SUBSCRIPTION … DISABLE` / `ENABLE`.
    Native(String),
    /// A pglogical subscription of this name on every follower:
    /// `alter_subscription_disable` / `alter_subscription_enable` (immediate).
    Pglogical(String),
}

impl Feeders {
    /// Stops reading (`followers`: a session on each follower, for the
    /// subscriptions) and waits until no walsender serves a slot whose name is
    /// `LIKE slots`, so a workload written next is a backlog.
    pub async fn pause(
        &mut self,
        followers: &[&Client],
        leader_client: &Client,
        slots: &str,
    ) -> Result<(), BenchError> {
        match self {
            Feeders::Pgsieve(processes) => {
                for p in processes {
                    p.terminate(Duration::from_secs(30));
                }
            }
            Feeders::Native(_) | Feeders::Pglogical(_) => {
                self.switch_subscriptions(followers, false).await?;
            }
        }
        measure::wait_slot_inactive(leader_client, slots, Duration::from_secs(60)).await?;
        Ok(())
    }

    /// Starts reading again (returns without waiting for anything).
    pub async fn resume(&mut self, followers: &[&Client]) -> Result<(), BenchError> {
        match self {
            Feeders::Pgsieve(processes) => {
                for p in processes {
                    p.start_again()?;
                }
            }
            Feeders::Native(_) | Feeders::Pglogical(_) => {
                self.switch_subscriptions(followers, true).await?;
            }
        }
        Ok(())
    }

    /// Enables or disables the subscription on every follower.
    async fn switch_subscriptions(
        &self,
        followers: &[&Client],
        on: bool,
    ) -> Result<(), BenchError> {
        let (sql, what) = match (self, on) {
            (Feeders::Native(name), true) => (format!("ALTER SUBSCRIPTION {name} ENABLE"), name),
            (Feeders::Native(name), false) => (format!("ALTER SUBSCRIPTION {name} DISABLE"), name),
            (Feeders::Pglogical(name), true) => (
                format!("SELECT pglogical.alter_subscription_enable('{name}', true)"),
                name,
            ),
            (Feeders::Pglogical(name), false) => (
                format!("SELECT pglogical.alter_subscription_disable('{name}', true)"),
                name,
            ),
            (Feeders::Pgsieve(_), _) => return Ok(()),
        };
        let verb = if on { "enabling" } else { "disabling" };
        for (i, c) in followers.iter().enumerate() {
            c.batch_execute(&sql)
                .await
                .ctx(|| format!("{verb} subscription {what} on follower {i}"))?;
        }
        Ok(())
    }

    /// The pgsieve processes (none for subscriptions).
    pub fn processes(&self) -> &[PgsieveProcess] {
        match self {
            Feeders::Pgsieve(processes) => processes,
            Feeders::Native(_) | Feeders::Pglogical(_) => &[],
        }
    }

    /// CPU seconds of every pgsieve process so far; `None` for subscriptions.
    pub fn pgsieve_cpu_seconds(&self) -> Option<f64> {
        match self {
            Feeders::Pgsieve(processes) => Some(
                processes
                    .iter()
                    .filter_map(|p| p.pid().and_then(measure::cpu_seconds))
                    .sum(),
            ),
            Feeders::Native(_) | Feeders::Pglogical(_) => None,
        }
    }
}

/// One engine of a case, set up and paused between catch-ups.
pub struct Engine {
    kind: EngineKind,
    /// The follower (none for the raw reader).
    side: Option<FollowerSide>,
    /// What feeds the follower (none for the raw reader, which connects per catch-up).
    feeders: Option<Feeders>,
}

/// Bound on an initial copy.
const SETUP_TIMEOUT: Duration = Duration::from_secs(1800);

impl Engine {
    /// Which engine this is.
    pub fn kind(&self) -> EngineKind {
        self.kind
    }

    /// The follower side, if any.
    pub fn side(&self) -> Option<&FollowerSide> {
        self.side.as_ref()
    }

    /// Sets the engine up against a populated leader and waits for its initial
    /// copy (sentinel version 1 on the follower). Leaves it running.
    pub async fn setup(
        kind: EngineKind,
        leader: &Cluster,
        leader_client: &Client,
        follower: Option<Cluster>,
        schema: Schema,
        filter: Filter,
    ) -> Result<Engine, BenchError> {
        let side = match follower {
            Some(cluster) => Some(FollowerSide::new(cluster, schema).await?),
            None => None,
        };
        let need_side =
            || BenchError::Failed(format!("engine {} needs a follower cluster", kind.name()));
        let feeders = match kind {
            EngineKind::Pgsieve => {
                let side = side.as_ref().ok_or_else(need_side)?;
                let config = PgsieveConfig::new(
                    leader,
                    PGSIEVE_SLOT,
                    vec![FollowerEntry::filtered(
                        "bench",
                        &side.cluster,
                        &replica_set().data_group(),
                    )],
                );
                Some(Feeders::Pgsieve(vec![PgsieveProcess::start(&config)?]))
            }
            EngineKind::Native => {
                let side = side.as_ref().ok_or_else(need_side)?;
                setup_native(leader, leader_client, side, filter).await?;
                Some(Feeders::Native(NATIVE.to_owned()))
            }
            EngineKind::Pglogical => {
                let side = side.as_ref().ok_or_else(need_side)?;
                setup_pglogical(leader, side).await?;
                Some(Feeders::Pglogical(PGL_SUB.to_owned()))
            }
            EngineKind::Raw => {
                let mut conn = raw_connect(leader).await?;
                conn.create_slot(RAW_SLOT, false, SnapshotAction::Nothing)
                    .await
                    .map_err(|e| BenchError::source("creating the raw reader's slot", e))?;
                None
            }
        };
        let engine = Engine {
            kind,
            side,
            feeders,
        };
        if let Some(side) = engine.side() {
            measure::wait_sentinel(&side.waiter, &sentinel(), 1, SETUP_TIMEOUT)
                .await
                .map_err(|e| engine.with_log(e.into()))?;
        }
        Ok(engine)
    }

    /// Stops reading the slot and waits until its walsender is gone.
    pub async fn pause(&mut self, leader_client: &Client) -> Result<(), BenchError> {
        let slots = self.slot_pattern();
        let Engine { side, feeders, .. } = self;
        match feeders {
            Some(f) => f.pause(&follower_client(side), leader_client, slots).await,
            None => Ok(()),
        }
    }

    async fn resume(&mut self) -> Result<(), BenchError> {
        let Engine { side, feeders, .. } = self;
        match feeders {
            Some(f) => f.resume(&follower_client(side)).await,
            None => Ok(()),
        }
    }

    fn slot_pattern(&self) -> &'static str {
        match self.kind {
            EngineKind::Pgsieve => PGSIEVE_SLOT,
            EngineKind::Native => NATIVE,
            EngineKind::Pglogical => "pgl_%",
            EngineKind::Raw => RAW_SLOT,
        }
    }

    /// Resumes and times the catch-up until the sentinel has `version`, then
    /// reads the CPU figures and pauses again.
    pub async fn catch_up(
        &mut self,
        leader: &Cluster,
        leader_client: &Client,
        version: i32,
        timeout: Duration,
    ) -> Result<Measured, BenchError> {
        if self.kind == EngineKind::Raw {
            return raw_catch_up(leader, version, timeout).await;
        }
        let pattern = self.slot_pattern();
        let side = self
            .side()
            .ok_or_else(|| BenchError::Failed("engine without follower".into()))?;
        let postmaster = measure::postmaster_pid(&side.cluster.data_dir());
        let before = postmaster.map(ChildCpu::snapshot);
        let started = Instant::now();
        self.resume().await?;
        let side = self
            .side()
            .ok_or_else(|| BenchError::Failed("engine without follower".into()))?;
        let sentinel = sentinel();
        let (arrived, walsender) = tokio::join!(
            measure::wait_sentinel(&side.waiter, &sentinel, version, timeout),
            measure::walsender_pid(leader_client, pattern, timeout),
        );
        let catch_up = started.elapsed();
        if let Err(e) = arrived {
            return Err(self.with_log(e.into()));
        }
        let walsender = walsender?;
        let mut m = Measured {
            catch_up_seconds: catch_up.as_secs_f64(),
            walsender_cpu_seconds: measure::cpu_seconds(walsender),
            ..Measured::default()
        };
        if let Some(f) = &self.feeders {
            m.pgsieve_cpu_seconds = f.pgsieve_cpu_seconds();
            m.pgsieve_peak_rss_kib = f
                .processes()
                .iter()
                .filter_map(|p| p.pid().and_then(measure::peak_rss_kib))
                .max();
        }
        if let (Some(pm), Some(before), Some(side)) = (postmaster, before, self.side()) {
            let after = ChildCpu::snapshot(pm);
            m.follower_cpu_seconds = Some(before.spent_until(&after, &side.exclude));
        }
        let _ = leader;
        self.pause(leader_client).await?;
        Ok(m.with_utilization())
    }

    /// Adds pgsieve's log tail (or the follower's server log) to an error.
    pub(crate) fn with_log(&self, e: BenchError) -> BenchError {
        let process = self.feeders.as_ref().and_then(|f| f.processes().first());
        let log = match (process, &self.side) {
            (Some(process), _) => {
                let log = process.log();
                let lines: Vec<&str> = log.lines().collect();
                lines[lines.len().saturating_sub(30)..].join("\n")
            }
            (None, Some(side)) => side.cluster.log_tail(30),
            (None, None) => return e,
        };
        BenchError::Failed(format!(
            "{e}\n--- {} log tail ---\n{log}",
            self.kind().name()
        ))
    }
}

/// The follower's check session as the one-element list [`Feeders`] takes.
fn follower_client(side: &Option<FollowerSide>) -> Vec<&Client> {
    side.iter().map(|s| &s.client).collect()
}

/// `CREATE PUBLICATION` of Conjur's tables for native subscribers, `secrets`
/// with the closest row filter PG15 can express for `filter`.
pub fn native_publication_sql(name: &str, filter: Filter) -> String {
    let tables: Vec<String> = crate::conjur::CONJUR_TABLES
        .iter()
        .map(|t| match (*t, native_filter(filter)) {
            ("secrets", Some(pattern)) => format!("secrets WHERE (resource_id LIKE '{pattern}')"),
            (t, _) => t.to_owned(),
        })
        .collect();
    format!("CREATE PUBLICATION {name} FOR TABLE {}", tables.join(", "))
}

/// Publication on the leader (Conjur's tables; secrets with a `LIKE` filter for
/// `half`), subscription on the follower (copies everything first).
async fn setup_native(
    leader: &Cluster,
    leader_client: &Client,
    side: &FollowerSide,
    filter: Filter,
) -> Result<(), BenchError> {
    leader_client
        .batch_execute(&native_publication_sql(NATIVE, filter))
        .await
        .ctx(|| "creating the native publication".into())?;
    side.client
        .batch_execute(&format!(
            "CREATE SUBSCRIPTION {NATIVE} CONNECTION 'host=127.0.0.1 port={} user=postgres dbname={CONJUR_DB}' \
             PUBLICATION {NATIVE}",
            leader.port()
        ))
        .await
        .ctx(|| "creating the native subscription".into())?;
    Ok(())
}

/// The tables `is_resource_visible` reads: in the seed they must be
/// `user_catalog_table`, or the walsender's historic snapshot does not see grants
/// made after the slot.
pub const PGLOGICAL_CATALOG_TABLES: [&str; 3] = ["permissions", "role_memberships", "resources"];

/// The pglogical provider on the leader (once per case, before any engine):
/// extension, node, replication set with every Conjur table that has a key,
/// secrets filtered by the seed's `is_resource_visible`.
///
/// `catalog_tables`: make [`PGLOGICAL_CATALOG_TABLES`] `user_catalog_table`, as
/// the seed must. PostgreSQL refuses `INSERT … ON CONFLICT` on such tables, which
/// a policy load (W4) uses; W4 passes `false`, which changes no decision there
/// because every grant its filter reads is committed before the slot exists.
pub async fn setup_pglogical_provider(
    leader: &Cluster,
    leader_client: &Client,
    catalog_tables: bool,
) -> Result<(), BenchError> {
    let group = replica_set().data_group();
    let mut sql = format!(
        "CREATE EXTENSION pglogical;
         SELECT pglogical.create_node(node_name := 'leader', dsn := 'host=127.0.0.1 port={} dbname={CONJUR_DB} user=postgres');\n",
        leader.port()
    );
    if catalog_tables {
        for table in PGLOGICAL_CATALOG_TABLES {
            sql.push_str(&format!(
                "ALTER TABLE {table} SET (user_catalog_table = true);\n"
            ));
        }
    }
    sql.push_str(&format!(
        "SELECT pglogical.create_replication_set('{PGL_SET}');\n"
    ));
    for table in crate::conjur::CONJUR_TABLES {
        if PGLOGICAL_SKIPS.contains(table) {
            continue;
        }
        let filter = if *table == "secrets" {
            format!(", row_filter := $f$is_resource_visible(resource_id, '{group}')$f$")
        } else {
            String::new()
        };
        sql.push_str(&format!(
            "SELECT pglogical.replication_set_add_table(set_name := '{PGL_SET}', relation := '{table}', \
             synchronize_data := true{filter});\n"
        ));
    }
    leader_client
        .batch_execute(&sql)
        .await
        .ctx(|| "setting up the pglogical provider".into())?;
    Ok(())
}

async fn setup_pglogical(leader: &Cluster, side: &FollowerSide) -> Result<(), BenchError> {
    side.client
        .batch_execute(&format!(
            "CREATE EXTENSION pglogical;
             SELECT pglogical.create_node(node_name := 'follower', dsn := 'host=127.0.0.1 port={f} dbname={CONJUR_DB} user=postgres');
             SELECT pglogical.create_subscription(subscription_name := '{PGL_SUB}',
               provider_dsn := 'host=127.0.0.1 port={l} dbname={CONJUR_DB} user=postgres',
               replication_sets := ARRAY['{PGL_SET}'], synchronize_structure := false,
               synchronize_data := true, forward_origins := '{{}}');",
            f = side.cluster.port(),
            l = leader.port()
        ))
        .await
        .ctx(|| "creating the pglogical subscription".into())?;
    side.client
        .batch_execute(&format!(
            "SET statement_timeout = '{}s'; SELECT pglogical.wait_for_subscription_sync_complete('{PGL_SUB}'); RESET statement_timeout;",
            SETUP_TIMEOUT.as_secs()
        ))
        .await
        .ctx(|| "waiting for pglogical's initial sync".into())?;
    Ok(())
}

async fn raw_connect(leader: &Cluster) -> Result<ReplicationConnection, BenchError> {
    let cfg = SourceConfig::parse(&leader.replicator_url(CONJUR_DB))
        .map_err(|e| BenchError::source("the raw reader's connection string", e))?;
    ReplicationConnection::connect(&cfg)
        .await
        .map_err(|e| BenchError::source("connecting the raw reader", e))
}

/// The ceiling: drains the raw slot as fast as the socket delivers it until
/// the Commit after the sentinel's `version`. Reads are pgsieve's own (128 KiB
/// at a time, frames cut out of the read buffer without a copy); each
/// pgoutput message is decoded in place (tens of nanoseconds) to count secrets
/// inserts and spot the sentinel, nothing is kept, no timer is armed per frame,
/// and a status update goes out only when a keepalive asks for one. What is
/// left is the walsender: its utilization says how close this is to its
/// decoding rate.
async fn raw_catch_up(
    leader: &Cluster,
    version: i32,
    timeout: Duration,
) -> Result<Measured, BenchError> {
    let started = Instant::now();
    let conn = raw_connect(leader).await?;
    let walsender = conn.backend_pid().and_then(|p| u32::try_from(p).ok());
    let publication = format!("\"{DEFAULT_PUBLICATION}\"");
    let options = [
        ("proto_version", "2"),
        ("publication_names", publication.as_str()),
        ("streaming", "on"),
        ("messages", "true"),
    ];
    let (mut stream, status) = conn
        .start_replication(RAW_SLOT, Lsn::ZERO, &options)
        .await
        .map_err(|e| BenchError::source("starting the raw reader", e))?;
    let sentinel = sentinel();
    let version_text = version.to_string();
    let drain = async {
        let mut decoder = PgOutputDecoder::new();
        let mut secrets_oid = None;
        let mut inserts = 0i64;
        let mut seen_sentinel = false;
        loop {
            let Some(payload) = stream
                .next_copy_data()
                .await
                .map_err(|e| BenchError::source("reading the raw stream", e))?
            else {
                return Err(BenchError::Failed("the raw stream ended early".into()));
            };
            let data = match ReplicationMessage::parse(payload)
                .map_err(|e| BenchError::Failed(format!("raw reader: bad frame: {e}")))?
            {
                ReplicationMessage::XLogData(x) => x.data,
                ReplicationMessage::PrimaryKeepalive(k) if k.reply_requested => {
                    let mut buf = BytesMut::new();
                    StandbyStatusUpdate {
                        write: k.wal_end,
                        flush: k.wal_end,
                        apply: k.wal_end,
                        client_time: PgTimestamp::now(),
                        reply_requested: false,
                    }
                    .encode(&mut buf);
                    status
                        .send_copy_data(buf.freeze())
                        .await
                        .map_err(|e| BenchError::source("raw reader status update", e))?;
                    continue;
                }
                ReplicationMessage::PrimaryKeepalive(_) => continue,
            };
            match decoder
                .decode(data)
                .map_err(|e| BenchError::Failed(format!("raw reader: bad pgoutput message: {e}")))?
            {
                LogicalMessage::Relation(r) if r.name == "secrets" => secrets_oid = Some(r.oid),
                LogicalMessage::Insert(i) if Some(i.rel_id) == secrets_oid => {
                    inserts += 1;
                    if i.new.get(0).and_then(|c| c.as_bytes()) == Some(sentinel.as_bytes())
                        && i.new.get(1).and_then(|c| c.as_bytes()) == Some(version_text.as_bytes())
                    {
                        seen_sentinel = true;
                    }
                }
                LogicalMessage::Commit(_) | LogicalMessage::StreamCommit(_) if seen_sentinel => {
                    return Ok(inserts);
                }
                _ => {}
            }
        }
    };
    let inserts = tokio::time::timeout(timeout, drain).await.map_err(|_| {
        BenchError::Harness(HarnessError::Timeout {
            what: "the raw reader reaching the sentinel".into(),
            waited: timeout,
        })
    })??;
    let catch_up = started.elapsed();
    let m = Measured {
        catch_up_seconds: catch_up.as_secs_f64(),
        walsender_cpu_seconds: walsender.and_then(measure::cpu_seconds),
        raw_secret_inserts: Some(inserts),
        ..Measured::default()
    };
    let _ = status.finish().await;
    Ok(m.with_utilization())
}
