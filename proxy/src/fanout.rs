//! Fan-out from the one reader to each follower's sink, and what happens
//! when one follower cannot keep up.
//!
//! Each follower has a *lane*: a bounded channel of `buffer_events` events
//! to its sink. With one follower (sidecar mode) a full lane simply
//! back-pressures the reader, and so the walsender: there is nobody else to
//! protect. With several (hub mode) a full lane is tolerated only while it
//! holds nobody back; once a lane has stayed full for `detach_after` while
//! another follower's lane sat empty, or its sink stopped with an error, the
//! follower is **detached**:
//!
//! - its lane closes; its sink applies what it already has and stops;
//! - its durable progress stays in the slot's feedback (the flush LSN is the
//!   minimum over every configured follower, detached ones included), so the
//!   leader keeps the WAL it still needs — nothing is lost, and no other
//!   follower waits for it;
//! - it **catches up from the slot**: once its sink has stopped and its
//!   database answers again, the hub rewinds — it restarts the stream from
//!   the slot at the detached follower's own origin, re-reading its model
//!   tables there; the followers that are ahead skip what they already hold.
//!   Rejoin attempts of a follower that keeps falling behind back off
//!   (1 s doubling to 60 s), so a follower slower than the leader's write
//!   rate costs the others one short replay per minute, not a stall;
//! - a follower whose change can never apply (a schema mismatch, a
//!   constraint violation) stays detached until pgsieve restarts: retrying
//!   cannot help, and replaying for it would disturb the others.
//!
//! Detachment is visible in the log, in `/readyz` (not ready, with the
//! reason) and in `pgsieve_follower_attached{follower}` /
//! `pgsieve_detaches_total{follower,reason}`.
//!
//! Events travel in batches ([`EventBatch`]): the reader queues each event
//! and hands the batch over when it holds [`BATCH_EVENTS`] events or when the
//! reader is about to wait for the socket ([`Fanout::flush`]). A backlog
//! thus costs one channel send, and at most one wake-up of each sink, per
//! batch instead of per event, and nothing waits in a batch while the reader
//! waits: latency is unchanged.
//!
//! Why rewind rather than a second stream: a logical slot serves one
//! connection at a time and cannot start before its confirmed position, so
//! a laggard can only re-read WAL the shared slot still holds — which it does,
//! because feedback never confirms past the laggard's progress. One stream
//! keeps the leader's decoding cost flat in the number of followers.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::txn::TxnEvent;

/// How often a blocked send re-checks whether its lane is holding others back.
const TICK: Duration = Duration::from_millis(25);

/// Events per batch handed to a sink at most.
pub const BATCH_EVENTS: usize = 256;

/// Consecutive events of the stream, handed to a sink in one channel send.
pub type EventBatch = Vec<TxnEvent>;

/// Batches a lane holds for `buffer_events` events.
pub fn lane_capacity(buffer_events: usize) -> usize {
    buffer_events.div_ceil(BATCH_EVENTS).max(2)
}

/// Why a follower left the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DetachReason {
    /// Its lane stayed full for `detach_after` while another follower waited.
    Slow {
        /// How long it held the others back.
        held: Duration,
    },
    /// Its sink stopped with a transient error (the follower restarted, the
    /// connection dropped): rejoins when it answers again.
    Lost(String),
    /// Its sink stopped with an error retrying cannot fix.
    Failed(String),
    /// It could not be reached when the session started.
    Unreachable(String),
}

impl DetachReason {
    /// Short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            DetachReason::Slow { .. } => "slow",
            DetachReason::Lost(_) => "lost",
            DetachReason::Failed(_) => "failed",
            DetachReason::Unreachable(_) => "unreachable",
        }
    }

    /// Whether the follower may rejoin without a restart of pgsieve.
    pub fn may_rejoin(&self) -> bool {
        !matches!(self, DetachReason::Failed(_))
    }
}

impl std::fmt::Display for DetachReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DetachReason::Slow { held } => write!(
                f,
                "slow: its buffer stayed full for {} ms while another follower waited",
                held.as_millis()
            ),
            DetachReason::Lost(e) => write!(f, "lost: {e}"),
            DetachReason::Failed(e) => write!(f, "failed: {e}"),
            DetachReason::Unreachable(e) => write!(f, "unreachable: {e}"),
        }
    }
}

/// The reader's lanes of one session.
#[derive(Debug)]
pub struct Fanout {
    lanes: Vec<Lane>,
    detach_after: Duration,
    /// Several followers: a full lane may be detached instead of waited for.
    isolate: bool,
    /// Lanes detached as slow by `send`, not yet taken by the reader.
    newly_slow: Vec<(usize, DetachReason)>,
    /// Events queued for every attached lane, not yet sent.
    pending: EventBatch,
}

#[derive(Debug)]
struct Lane {
    tx: Option<mpsc::Sender<EventBatch>>,
    /// Since when this lane has been full while another lane was starved.
    held_since: Option<Instant>,
}

/// What went wrong sending to a lane in sidecar mode (or to the last lane).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The sink of lane `.0` stopped; its join result says why.
    SinkStopped(usize),
    /// Every follower is detached.
    NoFollower,
}

impl Fanout {
    /// Lanes for `followers` followers, `None` for one detached from the
    /// start; `isolate` when more than one follower is configured.
    pub fn new(lanes: Vec<Option<mpsc::Sender<EventBatch>>>, detach_after: Duration) -> Self {
        let isolate = lanes.len() > 1;
        Self {
            lanes: lanes
                .into_iter()
                .map(|tx| Lane {
                    tx,
                    held_since: None,
                })
                .collect(),
            detach_after,
            isolate,
            newly_slow: Vec::new(),
            pending: Vec::with_capacity(BATCH_EVENTS),
        }
    }

    /// Followers still fed.
    pub fn attached(&self) -> usize {
        self.lanes.iter().filter(|l| l.tx.is_some()).count()
    }

    /// Closes lane `index`: its sink drains what it has and stops.
    pub fn detach(&mut self, index: usize) {
        if let Some(lane) = self.lanes.get_mut(index) {
            lane.tx = None;
            lane.held_since = None;
        }
    }

    /// Lanes `send` detached as slow since the last call.
    pub fn take_detached(&mut self) -> Vec<(usize, DetachReason)> {
        std::mem::take(&mut self.newly_slow)
    }

    /// Queues `event` for every attached lane; sends the batch once it is
    /// full. The caller must [`Self::flush`] before it waits for more input.
    pub async fn send(&mut self, event: TxnEvent) -> Result<(), SendError> {
        if !self.lanes.iter().any(|l| l.tx.is_some()) {
            return Err(SendError::NoFollower);
        }
        self.pending.push(event);
        if self.pending.len() >= BATCH_EVENTS {
            self.flush().await?;
        }
        Ok(())
    }

    /// Sends the queued events to every attached lane (a clone each, the
    /// original to the last). In hub mode a lane that holds the others back
    /// for `detach_after` is detached instead of waited for
    /// ([`Self::take_detached`]).
    pub async fn flush(&mut self) -> Result<(), SendError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let Some(last) = self.lanes.iter().rposition(|l| l.tx.is_some()) else {
            self.pending.clear();
            return Err(SendError::NoFollower);
        };
        let batch = std::mem::replace(&mut self.pending, Vec::with_capacity(BATCH_EVENTS));
        for index in 0..last {
            if self.lanes[index].tx.is_some() {
                self.deliver(index, batch.clone()).await?;
            }
        }
        self.deliver(last, batch).await
    }

    async fn deliver(&mut self, index: usize, event: EventBatch) -> Result<(), SendError> {
        let lane = &mut self.lanes[index];
        let Some(tx) = &lane.tx else {
            return Ok(());
        };
        // The common case: room in the lane, no clone of the sender.
        let (tx, event) = match tx.try_send(event) {
            Ok(()) => {
                // A lane back below half full is keeping up again.
                if tx.capacity() * 2 >= tx.max_capacity() {
                    lane.held_since = None;
                }
                return Ok(());
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return self.closed(index),
            Err(mpsc::error::TrySendError::Full(event)) => (tx.clone(), event),
        };
        if !self.isolate {
            return tx
                .send(event)
                .await
                .map_err(|_| SendError::SinkStopped(index));
        }
        loop {
            if self.another_lane_starved(index) {
                let since = *self.lanes[index]
                    .held_since
                    .get_or_insert_with(Instant::now);
                let held = since.elapsed();
                if held >= self.detach_after {
                    self.detach(index);
                    self.newly_slow.push((index, DetachReason::Slow { held }));
                    return Ok(());
                }
            } else {
                self.lanes[index].held_since = None;
            }
            match tokio::time::timeout(TICK, tx.reserve()).await {
                Ok(Ok(permit)) => {
                    permit.send(event);
                    return Ok(());
                }
                Ok(Err(_)) => return self.closed(index),
                Err(_elapsed) => {}
            }
        }
    }

    /// The sink of lane `index` stopped. In hub mode the lane is detached
    /// and the others go on (the reader learns why from the sink's join
    /// result); alone, the session must end.
    fn closed(&mut self, index: usize) -> Result<(), SendError> {
        if self.isolate {
            self.detach(index);
            Ok(())
        } else {
            Err(SendError::SinkStopped(index))
        }
    }

    /// Whether some other attached lane is (nearly) empty: its follower is
    /// waiting on the reader, which is waiting on lane `index`.
    fn another_lane_starved(&self, index: usize) -> bool {
        self.lanes.iter().enumerate().any(|(i, lane)| {
            i != index
                && lane
                    .tx
                    .as_ref()
                    .is_some_and(|tx| tx.capacity() * 16 >= tx.max_capacity() * 15)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgsieve_protocol::Lsn;

    const DETACH: Duration = Duration::from_millis(100);

    fn idle(n: u64) -> TxnEvent {
        TxnEvent::Idle { wal_end: Lsn(n) }
    }

    /// One event as its own batch, as the reader sends before it waits.
    async fn send_now(fanout: &mut Fanout, event: TxnEvent) -> Result<(), SendError> {
        fanout.send(event).await?;
        fanout.flush().await
    }

    #[tokio::test]
    async fn a_lane_that_holds_a_hungry_peer_back_is_detached() {
        let (slow_tx, _slow_rx) = mpsc::channel(4);
        let (fast_tx, mut fast_rx) = mpsc::channel(4);
        let mut fanout = Fanout::new(vec![Some(slow_tx), Some(fast_tx)], DETACH);
        // The fast follower drains everything; the slow one never reads.
        let drain = tokio::spawn(async move {
            let mut seen = 0u64;
            while fast_rx.recv().await.is_some() {
                seen += 1;
            }
            seen
        });
        let started = Instant::now();
        for n in 0..64 {
            send_now(&mut fanout, idle(n))
                .await
                .expect("a follower is attached");
        }
        assert!(started.elapsed() >= DETACH, "detached before detach_after");
        let detached = fanout.take_detached();
        assert_eq!(detached.len(), 1, "{detached:?}");
        assert_eq!(detached[0].0, 0);
        assert!(matches!(detached[0].1, DetachReason::Slow { held } if held >= DETACH));
        assert_eq!(fanout.attached(), 1);
        drop(fanout);
        assert_eq!(
            drain.await.expect("drain task"),
            64,
            "the fast follower got every event"
        );
    }

    #[tokio::test]
    async fn lanes_equally_behind_pace_the_reader_instead() {
        // Both followers read one event every 5 ms: both lanes stay full,
        // nobody starves, nobody is detached.
        let mut lanes = Vec::new();
        let mut readers = Vec::new();
        for _ in 0..2 {
            let (tx, mut rx) = mpsc::channel::<EventBatch>(4);
            lanes.push(Some(tx));
            readers.push(tokio::spawn(async move {
                let mut seen = 0u64;
                while rx.recv().await.is_some() {
                    seen += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                seen
            }));
        }
        // A generous bound: the test is about who starves, not timing.
        let mut fanout = Fanout::new(lanes, Duration::from_millis(500));
        for n in 0..60 {
            send_now(&mut fanout, idle(n)).await.expect("attached");
        }
        assert!(fanout.take_detached().is_empty());
        assert_eq!(fanout.attached(), 2);
        drop(fanout);
        for reader in readers {
            assert_eq!(reader.await.expect("reader"), 60);
        }
    }

    #[tokio::test]
    async fn a_single_follower_is_waited_for_and_its_stop_is_an_error() {
        let (tx, mut rx) = mpsc::channel(2);
        let mut fanout = Fanout::new(vec![Some(tx)], DETACH);
        let reader = tokio::spawn(async move {
            // Slower than detach_after: a sidecar still waits.
            tokio::time::sleep(DETACH * 3).await;
            for _ in 0..8 {
                rx.recv().await;
            }
        });
        for n in 0..8 {
            send_now(&mut fanout, idle(n)).await.expect("waited for");
        }
        assert!(fanout.take_detached().is_empty());
        reader.await.expect("reader");
        assert_eq!(
            send_now(&mut fanout, idle(9)).await,
            Err(SendError::SinkStopped(0))
        );
    }

    #[tokio::test]
    async fn a_stopped_sink_in_a_hub_detaches_only_its_lane() {
        let (gone_tx, gone_rx) = mpsc::channel(2);
        let (ok_tx, mut ok_rx) = mpsc::channel(2);
        drop(gone_rx);
        let mut fanout = Fanout::new(vec![Some(gone_tx), Some(ok_tx)], DETACH);
        send_now(&mut fanout, idle(1))
            .await
            .expect("the other follower is fed");
        assert_eq!(fanout.attached(), 1);
        assert!(matches!(
            ok_rx.recv().await.as_deref(),
            Some([TxnEvent::Idle { .. }])
        ));
        drop(ok_rx);
        send_now(&mut fanout, idle(2))
            .await
            .expect("detaches the second");
        assert_eq!(
            send_now(&mut fanout, idle(3)).await,
            Err(SendError::NoFollower)
        );
    }
}
