//! Standby status updates: the only way the leader learns what it may
//! release.
//!
//! A timer task, independent of reading and applying, so a full pipeline
//! never starves it: it reports at least every `interval` (≤ 10 s) and at
//! once when the leader asks. The flush LSN is the minimum over followers of
//! what each has durably committed (origin progress), never more and never
//! going backwards.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use pgsieve_protocol::frame::StandbyStatusUpdate;
use pgsieve_protocol::{Lsn, PgTimestamp};
use tokio::sync::{Notify, watch};

use crate::progress::Progress;
use crate::source::{SourceError, StatusSender};

/// Shared state between the reader, the sinks and the feedback task.
#[derive(Debug)]
pub struct Feedback {
    followers: Vec<Arc<Progress>>,
    received: AtomicU64,
    reported: AtomicU64,
    reply_now: Notify,
}

impl Feedback {
    /// Feedback over the progress of every follower fed by this slot.
    pub fn new(followers: Vec<Arc<Progress>>) -> Arc<Self> {
        Arc::new(Self {
            followers,
            received: AtomicU64::new(0),
            reported: AtomicU64::new(0),
            reply_now: Notify::new(),
        })
    }

    /// Notes WAL received from the leader (for lag reports).
    pub fn received(&self, lsn: Lsn) {
        self.received.fetch_max(lsn.0, Ordering::AcqRel);
    }

    /// The leader asked for a reply.
    pub fn request_reply(&self) {
        self.reply_now.notify_one();
    }

    /// The furthest any follower has committed: nothing after it is on a
    /// follower yet.
    pub fn furthest_committed(&self) -> Lsn {
        self.committed_ends().max().unwrap_or(Lsn::ZERO)
    }

    /// The flush position that may be reported now.
    pub fn flush_lsn(&self) -> Lsn {
        self.committed_ends().min().unwrap_or(Lsn::ZERO)
    }

    /// What each follower has durably committed.
    fn committed_ends(&self) -> impl Iterator<Item = Lsn> + '_ {
        self.followers.iter().map(|p| p.committed_end())
    }

    /// Highest WAL end seen from the leader.
    pub fn received_lsn(&self) -> Lsn {
        Lsn(self.received.load(Ordering::Acquire))
    }

    /// The last flush LSN sent to the leader.
    pub fn reported(&self) -> Lsn {
        Lsn(self.reported.load(Ordering::Acquire))
    }

    /// Sends one status update now.
    pub async fn send(&self, sender: &StatusSender) -> Result<(), SourceError> {
        let flush = self.flush_lsn().max(self.reported());
        // `write` = `flush`: while it is behind what the walsender sent, the
        // walsender pings us when idle, and each ping lets the followers
        // record the idle position (the slot keeps moving).
        let write = flush;
        let update = StandbyStatusUpdate {
            write,
            flush,
            apply: flush,
            client_time: PgTimestamp::now(),
            reply_requested: false,
        };
        let mut buf = BytesMut::with_capacity(34);
        update.encode(&mut buf);
        sender.send_copy_data(buf.freeze()).await?;
        self.reported.fetch_max(flush.0, Ordering::AcqRel);
        Ok(())
    }

    /// Runs until `stop` turns true, then sends a last update.
    pub async fn run(
        self: Arc<Self>,
        sender: StatusSender,
        interval: Duration,
        mut stop: watch::Receiver<bool>,
    ) -> Result<(), SourceError> {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = self.reply_now.notified() => {}
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        break;
                    }
                }
            }
            self.send(&sender).await?;
        }
        self.send(&sender).await
    }
}
