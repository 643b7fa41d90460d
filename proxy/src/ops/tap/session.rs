/*!
The tap's event loop body: pgoutput messages → assembled transactions →
filter stage (masks, model feed, effects) → lines, selected and rendered.

Begin lines are held back until something of the transaction is printed, so
filters hide whole uninteresting transactions; a transaction whose Begin was
printed always gets its Commit line. `--limit` counts printed transactions
and printed non-transactional messages.
*/

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use pgsieve_protocol::Lsn;
use pgsieve_protocol::pgoutput::{LogicalMessage, Message, PgOutputDecoder, Truncate};
use tokio_postgres::Client;

use super::TapError;
use super::decide::Targets;
use super::describe::describe;
use super::line::{BeginLine, ChangeLine, CommitLine, EffectLine, Line, MessageLine, TruncateLine};
use super::render::Renderer;
use super::select::Selection;
use crate::filter::FilterStage;
use crate::report::format_timestamp;
use crate::txn::assemble::Assembled;
use crate::txn::{AssembleError, Assembler, RowChange, TxnBegin, TxnCommit, TxnEvent};

/// Whether to keep reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Go on.
    Continue,
    /// `--limit` reached.
    Stop,
}

struct OpenTxn {
    xid: u32,
    commit_time: String,
    begin: BeginLine,
    begin_printed: bool,
    changes: u64,
}

/// State of one tap run.
pub struct Session<W: Write> {
    out: W,
    renderer: Renderer,
    selection: Selection,
    targets: Targets,
    show_values: bool,
    has_model: bool,
    leader: Option<Arc<Client>>,
    decoder: PgOutputDecoder,
    assembler: Assembler,
    filter: FilterStage,
    txn: Option<OpenTxn>,
    printed: u64,
    limit: Option<u64>,
    last_end: Lsn,
}

/// What a session needs besides its output.
pub struct SessionParts {
    /// Renders lines.
    pub renderer: Renderer,
    /// Printing filters.
    pub selection: Selection,
    /// Followers to decide for.
    pub targets: Targets,
    /// `--show-values`.
    pub show_values: bool,
    /// The filter stage over the model (an empty model when `has_model` is false).
    pub filter: FilterStage,
    /// Whether the model is real.
    pub has_model: bool,
    /// Leader session for version counts.
    pub leader: Option<Arc<Client>>,
    /// Where streamed transactions are spooled.
    pub spool_dir: PathBuf,
    /// `--limit`.
    pub limit: Option<u64>,
}

impl<W: Write> Session<W> {
    /// A session writing to `out`.
    pub fn new(out: W, parts: SessionParts) -> Self {
        Self {
            out,
            renderer: parts.renderer,
            selection: parts.selection,
            targets: parts.targets,
            show_values: parts.show_values,
            has_model: parts.has_model,
            leader: parts.leader,
            decoder: PgOutputDecoder::default(),
            assembler: Assembler::new(parts.spool_dir),
            filter: parts.filter,
            txn: None,
            printed: 0,
            limit: parts.limit,
            last_end: Lsn::ZERO,
        }
    }

    /// End LSN of the last transaction handled (what the slot may release).
    pub fn last_end(&self) -> Lsn {
        self.last_end
    }

    /// Handles the pgoutput message sent at `lsn`.
    pub async fn handle(&mut self, lsn: Lsn, data: Bytes) -> Result<Flow, TapError> {
        // The assembler ignores logical messages; decode once more to show them.
        let decoded = self
            .decoder
            .decode(data.clone())
            .map_err(|source| AssembleError::Decode { lsn, source })?;
        if let LogicalMessage::Message(message) = decoded
            && self.message(lsn, &message)? == Flow::Stop
        {
            return Ok(Flow::Stop);
        }
        match self.assembler.handle(lsn, data)? {
            Assembled::Nothing => Ok(Flow::Continue),
            // The tap's assembler never speculates; were it to, the change
            // is shown like any other.
            Assembled::Event(event) | Assembled::Speculated(event) => self.event(lsn, event).await,
            Assembled::Replay(mut replay) => {
                let mut flow = Flow::Continue;
                while let Some(event) = replay.next_event(&self.assembler)? {
                    if self.event(lsn, event).await? == Flow::Stop {
                        flow = Flow::Stop;
                    }
                }
                Ok(flow)
            }
        }
    }

    /// Flushes the output.
    pub fn flush(&mut self) -> Result<(), TapError> {
        self.out.flush().map_err(TapError::Output)
    }

    fn emit(&mut self, line: &Line) -> Result<(), TapError> {
        let text = self.renderer.render(line);
        self.out
            .write_all(text.as_bytes())
            .and_then(|()| self.out.flush())
            .map_err(TapError::Output)
    }

    fn ensure_begin(&mut self) -> Result<(), TapError> {
        let pending = match &mut self.txn {
            Some(txn) if !txn.begin_printed => {
                txn.begin_printed = true;
                Some(txn.begin.clone())
            }
            _ => None,
        };
        match pending {
            Some(begin) => self.emit(&Line::Begin(begin)),
            None => Ok(()),
        }
    }

    fn count_printed(&mut self) -> Flow {
        self.printed += 1;
        match self.limit {
            Some(limit) if self.printed >= limit => Flow::Stop,
            _ => Flow::Continue,
        }
    }

    fn message(&mut self, lsn: Lsn, m: &Message) -> Result<Flow, TapError> {
        let in_txn = m.is_transactional() && m.xid.is_none();
        let xid = m
            .xid
            .or_else(|| in_txn.then(|| self.txn.as_ref().map(|t| t.xid)).flatten());
        if !self.selection.message(xid) {
            return Ok(Flow::Continue);
        }
        if in_txn {
            self.ensure_begin()?;
        }
        self.emit(&Line::Message(MessageLine {
            lsn: lsn.to_string(),
            xid,
            transactional: m.is_transactional(),
            prefix: m.prefix.as_str().to_owned(),
            content: String::from_utf8_lossy(&m.content).into_owned(),
        }))?;
        Ok(if m.is_transactional() {
            Flow::Continue
        } else {
            self.count_printed()
        })
    }

    /// One assembled event, after the filter stage marked it: opens, prints or
    /// closes the current transaction's lines.
    async fn event(&mut self, lsn: Lsn, mut event: TxnEvent) -> Result<Flow, TapError> {
        self.filter.process(&mut event)?;
        match event {
            // The tap's assembler never speculates.
            TxnEvent::Relation(_) | TxnEvent::Idle { .. } | TxnEvent::Abandon { .. } => {}
            TxnEvent::Begin(begin) => self.begin(lsn, begin),
            TxnEvent::Change(change) => self.change(lsn, &change)?,
            TxnEvent::Truncate(truncate) => self.truncate(lsn, &truncate)?,
            TxnEvent::Commit(commit) => return self.commit(lsn, &commit).await,
        }
        Ok(Flow::Continue)
    }

    /// Opens the transaction; its Begin line is held back until something of it
    /// is printed.
    fn begin(&mut self, lsn: Lsn, begin: TxnBegin) {
        let commit_time = format_timestamp(begin.commit_time);
        self.txn = Some(OpenTxn {
            xid: begin.xid,
            begin: BeginLine {
                lsn: lsn.to_string(),
                xid: begin.xid,
                commit_lsn: begin.commit_lsn.to_string(),
                commit_time: commit_time.clone(),
                streamed: begin.streamed,
            },
            commit_time,
            begin_printed: false,
            changes: 0,
        });
    }

    /// A row change: counted, then printed with each target's decision when the
    /// selection keeps it.
    fn change(&mut self, lsn: Lsn, change: &RowChange) -> Result<(), TapError> {
        let Some(txn) = &mut self.txn else {
            return Ok(());
        };
        txn.changes += 1;
        let (xid, commit_time) = (txn.xid, txn.commit_time.clone());
        let table = change.relation.qualified_name();
        let described = describe(change, self.show_values);
        if !self
            .selection
            .change(xid, &table, &described.key, &described.columns)
        {
            return Ok(());
        }
        let resource_id = described
            .key
            .get("resource_id")
            .or_else(|| described.columns.get("resource_id"));
        let model = self.has_model.then(|| self.filter.model());
        let selection = &self.selection;
        let decisions = self
            .targets
            .decisions(change, resource_id, model, |t| selection.target(t));
        let line = Line::Change(ChangeLine {
            lsn: lsn.to_string(),
            xid,
            commit_time,
            table,
            op: change.op.as_str(),
            key: described.key,
            old_key: described.old_key,
            columns: described.columns,
            decisions,
        });
        self.ensure_begin()?;
        self.emit(&line)
    }

    /// A TRUNCATE: counted, then printed with its tables' names when selected.
    fn truncate(&mut self, lsn: Lsn, truncate: &Truncate) -> Result<(), TapError> {
        let Some(txn) = &mut self.txn else {
            return Ok(());
        };
        txn.changes += 1;
        let (xid, commit_time) = (txn.xid, txn.commit_time.clone());
        let tables: Vec<String> = truncate
            .rel_ids
            .iter()
            .map(|oid| {
                self.assembler
                    .relation(*oid)
                    .map_or_else(|| format!("oid {oid}"), |r| r.qualified_name())
            })
            .collect();
        if self.selection.truncate(xid, &tables) {
            self.ensure_begin()?;
            self.emit(&Line::Truncate(TruncateLine {
                lsn: lsn.to_string(),
                xid,
                commit_time,
                tables,
                cascade: truncate.options.cascade,
                restart_identity: truncate.options.restart_identity,
            }))?;
        }
        Ok(())
    }

    /// The commit: the transaction's effects (flips) first, then its Commit line
    /// when its Begin was printed, which counts towards `--limit`.
    async fn commit(&mut self, lsn: Lsn, commit: &TxnCommit) -> Result<Flow, TapError> {
        self.last_end = self.last_end.max(commit.end_lsn);
        let Some(txn) = &self.txn else {
            return Ok(Flow::Continue);
        };
        let commit_time = txn.commit_time.clone();
        if self.has_model {
            self.effects(lsn, commit, &commit_time).await?;
        }
        let Some(txn) = self.txn.take() else {
            return Ok(Flow::Continue);
        };
        if txn.begin_printed {
            self.emit(&Line::Commit(CommitLine {
                lsn: lsn.to_string(),
                xid: commit.xid,
                commit_lsn: commit.commit_lsn.to_string(),
                end_lsn: commit.end_lsn.to_string(),
                commit_time,
                changes: txn.changes,
            }))?;
            return Ok(self.count_printed());
        }
        Ok(Flow::Continue)
    }

    /// One line per selected flip and target: who gains or loses which variable.
    async fn effects(
        &mut self,
        lsn: Lsn,
        commit: &TxnCommit,
        commit_time: &str,
    ) -> Result<(), TapError> {
        let flips = commit.effects.flips.iter().flat_map(|flip| {
            self.targets
                .for_bit(flip.set)
                .map(move |target| (flip, target.clone()))
        });
        for (flip, target) in flips.collect::<Vec<_>>() {
            if !self
                .selection
                .effect(commit.xid, &target, &flip.resource_id)
            {
                continue;
            }
            let leader_versions = self.leader_versions(&flip.resource_id).await;
            self.ensure_begin()?;
            self.emit(&Line::Effect(EffectLine {
                lsn: lsn.to_string(),
                xid: commit.xid,
                commit_time: commit_time.to_owned(),
                follower: target.follower,
                replica_set: target.replica_set,
                variable: flip.resource_id.clone(),
                now_in: flip.now_in,
                leader_versions,
            }))?;
        }
        Ok(())
    }

    /// `secrets` rows of `variable` on the leader now (one COUNT per flip).
    async fn leader_versions(&self, variable: &str) -> Option<i64> {
        let leader = self.leader.as_ref()?;
        match leader
            .query_one(
                "SELECT count(*) FROM secrets WHERE resource_id = $1",
                &[&variable],
            )
            .await
        {
            Ok(row) => row.try_get(0).ok(),
            Err(e) => {
                tracing::warn!(error = %e, "Cannot count the leader's secret versions of a flipped variable.");
                None
            }
        }
    }
}
