//! Which followers of a hub session are detached, why, and bringing them
//! back: the bookkeeping around [`crate::fanout`]'s policy.
//!
//! A follower that may rejoin is probed once its sink has stopped (after a
//! backoff that grows with each consecutive detachment); the first probe
//! that connects asks the reader to rewind the stream to that follower's
//! origin.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use pgsieve_protocol::Lsn;

use super::policy::Directive;
use crate::config::Config;
use crate::fanout::{DetachReason, Fanout};
use crate::metrics::Telemetry;

/// The detached followers of one session and their rejoin probes.
pub struct Roster<'a> {
    config: &'a Config,
    telemetry: &'a Telemetry,
    standings: &'a mut [Standing],
    detached: Vec<Option<DetachReason>>,
    probes: JoinSet<()>,
    rejoin: mpsc::UnboundedSender<usize>,
}

impl<'a> Roster<'a> {
    /// A roster over `config`'s followers, `detached` as the session
    /// starts; returns the receiver of rejoin requests (follower indexes).
    pub fn new(
        config: &'a Config,
        telemetry: &'a Telemetry,
        standings: &'a mut [Standing],
        detached: Vec<Option<DetachReason>>,
    ) -> (Self, mpsc::UnboundedReceiver<usize>) {
        let (rejoin, requests) = mpsc::unbounded_channel();
        let mut roster = Self {
            config,
            telemetry,
            standings,
            detached,
            probes: JoinSet::new(),
            rejoin,
        };
        for index in 0..roster.detached.len() {
            // A follower that failed for good was counted when it failed;
            // one unreachable now is news.
            if let Some(reason @ DetachReason::Unreachable(_)) = roster.detached[index].clone() {
                let name = &config.followers[index].name;
                tracing::warn!(follower = %name, reason = %reason, "Follower starts detached: it holds only its own progress and rejoins from the slot.");
                telemetry.detached(name, &reason);
                roster.probe(index);
            }
        }
        (roster, requests)
    }

    /// Name of follower `index`.
    pub fn name(&self, index: usize) -> &str {
        &self.config.followers[index].name
    }

    /// Why follower `index` is detached, if it is.
    pub fn reason(&self, index: usize) -> Option<&DetachReason> {
        self.detached[index].as_ref()
    }

    /// Detaches follower `index` (idempotent: the first reason is kept).
    /// `sink_stopped`: its sink has drained and stopped, so a rejoin probe
    /// may start.
    pub fn detach(
        &mut self,
        fanout: &mut Fanout,
        index: usize,
        reason: DetachReason,
        sink_stopped: bool,
    ) {
        fanout.detach(index);
        let name = self.config.followers[index].name.clone();
        if self.detached[index].is_none() {
            tracing::warn!(follower = %name, reason = %reason, "Follower detached: it holds only its own progress and rejoins from the slot.");
            self.standings[index].detaches += 1;
            self.telemetry.detached(&name, &reason);
            self.detached[index] = Some(reason.clone());
        }
        if let DetachReason::Failed(e) = &reason {
            tracing::error!(follower = %name, error = %e, "Follower failed for good: detached until pgsieve restarts.");
            self.standings[index].failed = Some(e.clone());
        } else if sink_stopped {
            self.probe(index);
        }
    }

    /// Learns what a directive about follower `index` says of its next
    /// session ([`Standing::learn`]).
    pub fn learn(&mut self, index: usize, directive: Directive) {
        let name = &self.config.followers[index].name;
        self.standings[index].learn(name, directive);
    }

    /// Ends the session's bookkeeping: a follower that stayed attached
    /// through a session of at least a minute starts its rejoin backoff over.
    pub fn finish(self, lived: Duration) {
        if lived >= Duration::from_secs(60) {
            for (standing, detached) in self.standings.iter_mut().zip(&self.detached) {
                if detached.is_none() {
                    standing.detaches = 0;
                }
            }
        }
    }

    fn probe(&mut self, index: usize) {
        let f = &self.config.followers[index];
        self.probes.spawn(probe_follower(
            f.pg.clone(),
            f.name.clone(),
            index,
            self.standings[index].rejoin_delay(),
            self.rejoin.clone(),
        ));
    }
}

/// Per-follower standing that outlives one session: how often it fell
/// behind in a row (rejoin backoff) and the last durable progress known
/// (held in the feedback while it is unreachable).
#[derive(Debug, Clone, Default)]
pub struct Standing {
    /// Consecutive detachments without a session that kept it a minute.
    pub detaches: u32,
    /// Its durable progress when last seen.
    pub last_progress: Option<Lsn>,
    /// Set when it failed for good: not reconnected until pgsieve restarts.
    pub failed: Option<String>,
    /// Inserts of transactions committed before this are applied as upserts
    /// (raised by a duplicate key: [`Directive::UpsertThrough`]).
    pub upsert_until: Lsn,
}

impl Standing {
    /// Learns what a directive about this follower says of its next
    /// session (a duplicate key: upserts through what was received).
    pub fn learn(&mut self, follower: &str, directive: Directive) {
        if let Directive::UpsertThrough(through) = directive {
            tracing::warn!(%follower, %through, "The follower already held a row a plain INSERT wrote: resuming with upserts through what was received.");
            self.upsert_until = self.upsert_until.max(through);
        }
    }

    /// Delay before a detached follower tries to rejoin.
    pub fn rejoin_delay(&self) -> Duration {
        let exp = self.detaches.saturating_sub(1).min(6);
        (Duration::from_secs(1) * (1 << exp)).min(Duration::from_secs(60))
    }
}

/// Waits `delay`, then polls the follower until it accepts a connection
/// and reports `index` on `rejoin`.
async fn probe_follower(
    pg: crate::conn::ConnConfig,
    name: String,
    index: usize,
    delay: Duration,
    rejoin: mpsc::UnboundedSender<usize>,
) {
    tokio::time::sleep(delay).await;
    let mut every = Duration::from_millis(500);
    loop {
        match crate::conn::connect_client(&pg, &format!("follower {name}")).await {
            Ok((client, _)) => {
                drop(client);
                tracing::info!(follower = %name, "Detached follower answers again: rejoining.");
                let _ = rejoin.send(index);
                return;
            }
            Err(e) => {
                tracing::debug!(follower = %name, error = %e, "Detached follower still unreachable.");
                tokio::time::sleep(every).await;
                every = (every * 2).min(Duration::from_secs(10));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejoin_backoff_doubles_to_a_minute() {
        let delays: Vec<u64> = (0..10)
            .map(|detaches| {
                Standing {
                    detaches,
                    ..Standing::default()
                }
                .rejoin_delay()
                .as_secs()
            })
            .collect();
        assert_eq!(delays, [1, 1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }
}
