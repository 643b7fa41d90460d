//! The reader of one session: frames from the leader → assembler → filter →
//! fanout, and between reads a look at shutdown, stopped sinks and rejoins.
//! It owns the stream, the assembler and the filter, so the model is fed
//! once, in commit order.

use std::sync::Arc;

use pgsieve_protocol::Lsn;
use pgsieve_protocol::frame::ReplicationMessage;
use tokio::sync::{mpsc, watch};

use super::policy::{self, Directive};
use super::roster::Roster;
use super::{RunError, SessionEnd, start};
use crate::config::Config;
use crate::fanout::{DetachReason, Fanout, SendError};
use crate::feedback::Feedback;
use crate::filter::FilterStage;
use crate::metrics::{StreamMetrics, count_error};
use crate::sink::ApplyError;

/// The sink tasks of a session: each ends with its follower's index and result.
pub(super) type SinkTasks = tokio::task::JoinSet<(usize, Result<(), ApplyError>)>;
use crate::source::{ReplicationStream, SourceError};
use crate::txn::assemble::Assembled;
use crate::txn::{Assembler, TxnEvent};

/// Frames the reader takes while they are ready before it looks at
/// shutdown, the sinks and rejoins again.
const READY_BUDGET: u32 = 256;

/// What the reader does with one turn of its loop.
enum Turn {
    /// A frame (or the end of the stream) to handle.
    Frame(Option<bytes::Bytes>),
    /// Something else was handled: read again.
    Again,
    /// The session ends.
    End(SessionEnd),
}

/// The reader's state for one session.
pub(super) struct Reader<'a> {
    stream: ReplicationStream,
    assembler: Assembler,
    filter: FilterStage,
    seen: StreamMetrics,
    fanout: Fanout,
    feedback: Arc<Feedback>,
    roster: Roster<'a>,
    hub: bool,
    last_received: Lsn,
    /// Frames still to take straight from the read buffer before looking
    /// around.
    ready_budget: u32,
}

impl<'a> Reader<'a> {
    pub(super) fn new(
        config: &Config,
        start: start::Start,
        stream: ReplicationStream,
        fanout: Fanout,
        feedback: Arc<Feedback>,
        roster: Roster<'a>,
    ) -> Self {
        let mut assembler = Assembler::new(config.apply.spool_dir.clone());
        assembler.speculate_after(feedback.furthest_committed().max(start.start_lsn));
        Self {
            stream,
            assembler,
            filter: FilterStage::new(start.model, start.model_at),
            seen: StreamMetrics::default(),
            fanout,
            feedback,
            roster,
            hub: config.is_hub(),
            last_received: start.start_lsn,
            ready_budget: 0,
        }
    }

    /// Gives back what outlives the loop: the lanes (dropping them stops
    /// the sinks) and the roster.
    pub(super) fn finish(self) -> (Fanout, Roster<'a>) {
        (self.fanout, self.roster)
    }

    /// Reads until shutdown, a rewind or an error.
    pub(super) async fn run(
        &mut self,
        mut shutdown: watch::Receiver<bool>,
        sinks: &mut SinkTasks,
        mut rejoin: mpsc::UnboundedReceiver<usize>,
    ) -> Result<SessionEnd, RunError> {
        loop {
            let frame = match self.next_turn(&mut shutdown, sinks, &mut rejoin).await? {
                Turn::Frame(frame) => frame,
                Turn::Again => continue,
                Turn::End(end) => return Ok(end),
            };
            let Some(frame) = frame else {
                return Err(SourceError::Protocol(
                    "the leader ended the replication stream".into(),
                )
                .into());
            };
            self.handle_frame(frame).await?;
            for (index, reason) in self.fanout.take_detached() {
                // Its sink drains what it has; the rejoin probe starts when
                // it has stopped (the sink's join).
                self.roster.detach(&mut self.fanout, index, reason, false);
            }
        }
    }

    /// While the leader's bytes are at hand, reads on; only before waiting
    /// hands the queued events to the sinks and looks around.
    async fn next_turn(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
        sinks: &mut SinkTasks,
        rejoin: &mut mpsc::UnboundedReceiver<usize>,
    ) -> Result<Turn, RunError> {
        if self.ready_budget > 0 {
            if let Some(frame) = futures_util::FutureExt::now_or_never(self.stream.next_copy_data())
            {
                self.ready_budget -= 1;
                return Ok(Turn::Frame(frame?));
            }
        }
        self.ready_budget = READY_BUDGET;
        self.fanout.flush().await.map_err(send_error)?;
        tokio::select! {
            biased;
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    tracing::info!("Shutting down: finishing applied transactions.");
                    return Ok(Turn::End(SessionEnd::Shutdown));
                }
                Ok(Turn::Again)
            }
            Some(joined) = sinks.join_next(), if !sinks.is_empty() => {
                let (index, result) = joined
                    .map_err(|join| RunError::Setup(format!("sink task failed: {join}")))?;
                self.sink_stopped(index, result)?;
                Ok(Turn::Again)
            }
            Some(index) = rejoin.recv() => {
                Ok(Turn::End(SessionEnd::Rewind { follower: self.roster.name(index).to_owned() }))
            }
            frame = self.stream.next_copy_data() => Ok(Turn::Frame(frame?)),
        }
    }

    /// A sink stopped: in a sidecar that ends the session; in a hub its
    /// follower is detached as the policy says, and the others go on.
    fn sink_stopped(
        &mut self,
        index: usize,
        result: Result<(), ApplyError>,
    ) -> Result<(), RunError> {
        match result {
            Err(e) => {
                let directive = policy::sink_error(self.hub, &e, self.feedback.received_lsn());
                self.roster.learn(index, directive);
                if !self.hub {
                    return Err(e.into());
                }
                count_error("apply", Some(e.follower()));
                let chain = crate::report::error_chain(&e);
                let reason = match directive {
                    Directive::DetachFailed => DetachReason::Failed(chain),
                    _ => DetachReason::Lost(chain),
                };
                self.roster.detach(&mut self.fanout, index, reason, true);
                if self.fanout.attached() == 0 {
                    return Err(e.into());
                }
            }
            Ok(()) if !self.hub => {
                return Err(RunError::Setup("the follower sink stopped".into()));
            }
            Ok(()) => {
                let reason = self
                    .roster
                    .reason(index)
                    .cloned()
                    .unwrap_or_else(|| DetachReason::Lost("its sink stopped".into()));
                self.roster.detach(&mut self.fanout, index, reason, true);
            }
        }
        if self.fanout.attached() == 0 {
            return Err(RunError::Setup("every follower is detached".into()));
        }
        Ok(())
    }

    async fn handle_frame(&mut self, frame: bytes::Bytes) -> Result<(), RunError> {
        match ReplicationMessage::parse(frame) {
            Ok(ReplicationMessage::XLogData(x)) => {
                self.last_received = self.last_received.max(x.wal_start);
                self.feedback
                    .received(x.wal_end.min(x.wal_start.max(self.last_received)));
                let assembled = self.assembler.handle(x.wal_start, x.data)?;
                self.forward_released().await?;
                match assembled {
                    Assembled::Nothing => {}
                    Assembled::Event(event) => self.forward(event).await?,
                    Assembled::Speculated(event) if self.filter.feeds_model(&event) => {
                        self.assembler.abandon_speculation();
                        self.forward_released().await?;
                    }
                    Assembled::Speculated(event) => self.forward(event).await?,
                    Assembled::Replay(mut replay) => {
                        while let Some(event) = replay.next_event(&self.assembler)? {
                            self.forward(event).await?;
                        }
                    }
                }
            }
            Ok(ReplicationMessage::PrimaryKeepalive(k)) => {
                tracing::debug!(wal_end = %k.wal_end, reply_requested = k.reply_requested, idle = self.assembler.is_idle(), spooled = self.assembler.spooled_transactions(), "Keepalive.");
                // Forward the idle position while it is not yet durable
                // everywhere: a sink may have skipped an earlier one (it
                // rate-limits its idle writes), and the walsender keeps
                // pinging with the same position until we confirm it.
                if self.assembler.is_idle() && k.wal_end > self.feedback.flush_lsn() {
                    self.feedback.received(k.wal_end);
                    self.forward(TxnEvent::Idle { wal_end: k.wal_end }).await?;
                }
                if k.reply_requested {
                    self.feedback.request_reply();
                }
            }
            Err(source) => {
                return Err(RunError::Frame {
                    after: self.last_received,
                    source,
                });
            }
        }
        Ok(())
    }

    /// Forwards what the assembler released ahead of the last message's
    /// events: a speculation given up, the Begin that gave it up.
    async fn forward_released(&mut self) -> Result<(), RunError> {
        for event in self.assembler.take_released().into_iter().flatten() {
            if let TxnEvent::Abandon { xid } = event {
                tracing::debug!(
                    xid,
                    "Speculation given up: the transaction is replayed at its commit."
                );
            }
            self.forward(event).await?;
        }
        Ok(())
    }

    async fn forward(&mut self, mut event: TxnEvent) -> Result<(), RunError> {
        self.filter.process(&mut event)?;
        self.seen.observe(&event);
        self.fanout.send(event).await.map_err(send_error)
    }
}

fn send_error(e: SendError) -> RunError {
    match e {
        SendError::SinkStopped(_) => RunError::Setup("a follower sink stopped".into()),
        SendError::NoFollower => RunError::Setup("every follower is detached".into()),
    }
}
