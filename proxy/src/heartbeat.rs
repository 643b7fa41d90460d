/*!
Heartbeats: a tiny transactional logical message written on the leader every
`[heartbeat] interval_ms` (default 10 s), so that lag in seconds means
something on an idle leader.

Each heartbeat is one statement in its own transaction:

```sql
SELECT pg_logical_emit_message(true, 'pgsieve.heartbeat', '<slot>')
```

**Transactional, on purpose.** A transactional message gets an xid and a
commit record, so the stream carries `BEGIN`, the message, `COMMIT` with the
leader's commit time: the sink applies it like any leader transaction that
wrote nothing, storing its end LSN *and its commit time* in the follower's
replication origin in one follower transaction (exactly-once progress, the
same path as data). The newest durably applied leader commit time is then
the lag's reference: `pgsieve_follower_lag_seconds = now − that time`. A
non-transactional message would need a separate path through the sink, would
move no progress on its own, and would sit in the leader's WAL buffers until
the WAL writer flushes them (logical decoding reads flushed WAL only). The
price of a commit record is quoted in the README ("Monitoring").

The session runs with `synchronous_commit = local`: a heartbeat must not
wait for synchronous standbys (one standby outage would otherwise freeze
every heartbeat and make every follower look late), and its commit need not
survive a leader crash. A heartbeat that fails is counted
(`pgsieve_heartbeat_failures_total`), logged once per outage, and retried on
a new connection at the next tick; it never stops the pipeline.

The same statement reads the slot's retained WAL
(`pgsieve_slot_wal_retained_bytes`) and gives the leader's WAL position to
the stall detector ([`crate::metrics`]). Every slot on the database sees
every pgsieve's heartbeats: with N sidecars, each follower gets N per
interval, which only sharpens its lag.
*/

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use pgsieve_protocol::Lsn;
use tokio::task::JoinHandle;
use tokio_postgres::Client;

use crate::config::Config;
use crate::metrics::{HeartbeatReporter, Telemetry};

/// The message prefix (visible to any logical decoding consumer).
pub const PREFIX: &str = "pgsieve.heartbeat";

/// One heartbeat; returns the message's LSN and the slot's retained WAL.
const BEAT: &str = "SELECT pg_catalog.pg_logical_emit_message(true, $1::text, $2::text)::text,
        (SELECT pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), restart_lsn)::int8
         FROM pg_catalog.pg_replication_slots WHERE slot_name::text = $2::text)";

/// The running heartbeat task; stopped on drop.
#[derive(Debug)]
pub struct Heartbeat {
    task: JoinHandle<()>,
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts heartbeats for `config` (`None` when `[heartbeat] interval_ms = 0`).
pub fn spawn(config: &Config, telemetry: &Telemetry) -> Option<Heartbeat> {
    let interval = config.heartbeat_interval?;
    let pg = config.leader.pg.clone();
    let slot = config.leader.slot.clone();
    let reporter = telemetry.heartbeat_reporter();
    Some(Heartbeat {
        task: tokio::spawn(beat_forever(pg, slot, interval, reporter)),
    })
}

async fn beat_forever(
    pg: crate::conn::ConnConfig,
    slot: String,
    interval: Duration,
    reporter: HeartbeatReporter,
) {
    let mut every = tokio::time::interval(interval);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut session: Option<Arc<Client>> = None;
    loop {
        every.tick().await;
        let result = match session.as_ref().filter(|c| !c.is_closed()) {
            Some(client) => beat(client, &slot).await,
            None => match open(&pg).await {
                Ok(client) => {
                    let result = beat(&client, &slot).await;
                    session = Some(client);
                    result
                }
                Err(e) => Err(e),
            },
        };
        match result {
            Ok((lsn, retained)) => reporter.written(lsn, retained),
            Err(reason) => {
                session = None;
                if reporter.failed(&reason) {
                    tracing::warn!(error = %reason, "Heartbeat on the leader failed; lag in seconds grows until one gets through.");
                }
            }
        }
    }
}

async fn open(pg: &crate::conn::ConnConfig) -> Result<Arc<Client>, String> {
    let client = crate::conn::connect_sql(pg, "the leader (heartbeat)")
        .await
        .map_err(|e| crate::report::error_chain(&e))?;
    client
        .batch_execute(
            "SET synchronous_commit = local; SET statement_timeout = '10s';
             SET application_name = 'pgsieve heartbeat'",
        )
        .await
        .map_err(|e| format!("setting up the heartbeat session: {e}"))?;
    Ok(client)
}

async fn beat(client: &Client, slot: &str) -> Result<(Lsn, Option<u64>), String> {
    let row = client
        .query_one(BEAT, &[&PREFIX, &slot])
        .await
        .map_err(|e| match e.as_db_error() {
            Some(db) => format!("writing a heartbeat: {}", db.message()),
            None => format!("writing a heartbeat: {e}"),
        })?;
    let text: String = row.get(0);
    let lsn = Lsn::from_str(&text).map_err(|_| format!("unexpected LSN {text:?}"))?;
    let retained = row
        .get::<_, Option<i64>>(1)
        .map(|b| u64::try_from(b).unwrap_or(0));
    Ok((lsn, retained))
}
