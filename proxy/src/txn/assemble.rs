//! The assembler state machine: decoded pgoutput messages → [`TxnEvent`]s.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use pgsieve_filters::SetMask;
use pgsieve_protocol::pgoutput::{
    Commit, LogicalMessage, OldTuple, ParseContext, PgOutputDecoder, Relation, StreamAbort,
    StreamCommit, TupleData,
};
use pgsieve_protocol::{DecodeError, Lsn};

use super::event::{RowChange, RowOp, TxnBegin, TxnCommit, TxnEvent};
use super::spool::{Spool, SpoolReplay};

/// Why the stream cannot be assembled; always names the WAL position.
#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    /// The message bytes are malformed.
    #[error("cannot decode pgoutput message at {lsn}: {source}")]
    Decode {
        /// WAL start of the XLogData that carried it.
        lsn: Lsn,
        /// What the decoder found.
        source: DecodeError,
    },
    /// A change refers to a relation no Relation message described.
    #[error("change at {lsn} refers to relation OID {oid}, which the leader never described")]
    UnknownRelation {
        /// WAL position of the change.
        lsn: Lsn,
        /// The relation OID.
        oid: u32,
    },
    /// A tuple whose column count differs from its relation's: the leader's
    /// stream and the relation it announced disagree, so no column can be
    /// trusted to be the one its position says (ARCHITECTURE.md, "Invariants").
    #[error(
        "{op} at {lsn} on table {table}: its {tuple} tuple has {got} columns, the relation announced {want}"
    )]
    TupleWidth {
        /// WAL position of the change.
        lsn: Lsn,
        /// Qualified table name, as the Relation message named it.
        table: String,
        /// `insert`, `update` or `delete`.
        op: &'static str,
        /// `new`, `old` or `key`.
        tuple: &'static str,
        /// Columns the tuple carries.
        got: usize,
        /// Columns the relation announced.
        want: usize,
    },
    /// A message that cannot occur with the options pgsieve requests.
    #[error("unexpected {what} at {lsn}")]
    Unexpected {
        /// WAL position.
        lsn: Lsn,
        /// What arrived, in words.
        what: String,
    },
    /// The local spool of a streamed transaction failed.
    #[error("spool of streamed transaction {xid} failed: {source}")]
    Spool {
        /// Top-level xid.
        xid: u32,
        /// The I/O cause.
        source: std::io::Error,
    },
}

/// Turns decoded pgoutput into ordered transaction events.
#[derive(Debug)]
pub struct Assembler {
    decoder: PgOutputDecoder,
    relations: HashMap<u32, Arc<Relation>>,
    open_xid: Option<u32>,
    streaming_xid: Option<u32>,
    spools: HashMap<u32, Spool>,
    spool_dir: PathBuf,
    /// Streamed transactions whose first chunk starts after this position
    /// may be applied speculatively (`None`: never, as in `tap`).
    speculate_after: Option<Lsn>,
    /// The streamed transaction whose changes are forwarded as they arrive.
    speculating: Option<u32>,
    /// A speculation given up and not yet announced to the sinks.
    abandoned: Option<u32>,
    /// The Begin of a transaction that arrived during a speculation, held
    /// until it shows a change (then the speculation is given up) or
    /// commits empty (a heartbeat: then it is dropped, and the speculation
    /// goes on; its progress rides on the next commit).
    held_begin: Option<TxnBegin>,
    /// A held Begin released by its first change, not yet forwarded.
    released_begin: Option<TxnBegin>,
}

/// What one message produced.
#[derive(Debug)]
pub enum Assembled {
    /// Nothing to forward (stream control, spooled change, ignored message).
    Nothing,
    /// One event to forward.
    Event(TxnEvent),
    /// A change of the speculated transaction: forward it unless it would
    /// feed the model, in which case give the speculation up
    /// ([`Assembler::abandon_speculation`]); it is spooled either way.
    Speculated(TxnEvent),
    /// A streamed transaction committed: drain this replay in order.
    Replay(Box<StreamReplay>),
}

impl Assembler {
    /// A fresh assembler (use a new one per replication session).
    pub fn new(spool_dir: PathBuf) -> Self {
        Self {
            decoder: PgOutputDecoder::default(),
            relations: HashMap::new(),
            open_xid: None,
            streaming_xid: None,
            spools: HashMap::new(),
            spool_dir,
            speculate_after: None,
            speculating: None,
            abandoned: None,
            held_begin: None,
            released_begin: None,
        }
    }

    /// Applies streamed transactions speculatively from now on: the changes
    /// of one streamed transaction at a time go on as they arrive, so the
    /// followers apply it while the leader still decodes it, instead of
    /// after its commit (ARCHITECTURE.md, "Streamed transactions").
    ///
    /// `after`: no follower has committed anything past it. A transaction
    /// streamed from a later position cannot be on any follower yet; one
    /// from before it might be (a hub resumes at its slowest follower), so
    /// it is only spooled.
    pub fn speculate_after(&mut self, after: Lsn) {
        self.speculate_after = Some(after);
    }

    /// Gives up the speculation in progress: the sinks roll it back (the
    /// caller forwards [`TxnEvent::Abandon`], see [`Assembler::take_released`])
    /// and the transaction is replayed from its spool at its commit.
    pub fn abandon_speculation(&mut self) {
        if let Some(xid) = self.speculating.take() {
            self.abandoned = Some(xid);
        }
    }

    /// Events to forward before whatever the last message produced: the
    /// [`TxnEvent::Abandon`] of a speculation given up, then the held Begin
    /// of the transaction whose change gave it up.
    pub fn take_released(&mut self) -> [Option<TxnEvent>; 2] {
        [
            self.abandoned.take().map(|xid| TxnEvent::Abandon { xid }),
            self.released_begin.take().map(TxnEvent::Begin),
        ]
    }

    /// True when no transaction is open or pending: everything received so
    /// far has been handed on.
    pub fn is_idle(&self) -> bool {
        self.open_xid.is_none() && self.streaming_xid.is_none() && self.spools.is_empty()
    }

    /// Streamed transactions currently spooled.
    pub fn spooled_transactions(&self) -> usize {
        self.spools.len()
    }

    /// Handles the pgoutput message carried by the XLogData at `lsn`.
    pub fn handle(&mut self, lsn: Lsn, data: Bytes) -> Result<Assembled, AssembleError> {
        let message = self
            .decoder
            .decode(data.clone())
            .map_err(|source| AssembleError::Decode { lsn, source })?;
        let in_stream = self.streaming_xid;
        Ok(match message {
            LogicalMessage::Begin(begin) => {
                self.open_xid = Some(begin.xid);
                let begin = TxnBegin {
                    xid: begin.xid,
                    commit_lsn: begin.final_lsn,
                    commit_time: begin.commit_time,
                    streamed: false,
                    speculative: false,
                };
                if self.speculating.is_some() {
                    self.held_begin = Some(begin);
                    return Ok(Assembled::Nothing);
                }
                Assembled::Event(TxnEvent::Begin(begin))
            }
            LogicalMessage::Commit(_) if self.held_begin.take().is_some() => {
                self.open_xid = None;
                Assembled::Nothing
            }
            LogicalMessage::Commit(commit) => self.commit(lsn, &commit)?,
            LogicalMessage::Relation(relation) => {
                let relation = Arc::new(relation);
                self.relations.insert(relation.oid, relation.clone());
                Assembled::Event(TxnEvent::Relation(relation))
            }
            LogicalMessage::Insert(_)
            | LogicalMessage::Update(_)
            | LogicalMessage::Delete(_)
            | LogicalMessage::Truncate(_)
                if in_stream.is_some() =>
            {
                let top = in_stream.unwrap_or_default();
                self.spool_change(top, &message, &data)?;
                if self.speculating != Some(top) {
                    return Ok(Assembled::Nothing);
                }
                if matches!(message, LogicalMessage::Truncate(_)) {
                    // Rare in a large transaction, and a TRUNCATE of a
                    // model table would change decisions: replayed instead.
                    self.abandon_speculation();
                    return Ok(Assembled::Nothing);
                }
                Assembled::Speculated(to_event(&self.relations, lsn, message)?)
            }
            LogicalMessage::Insert(_)
            | LogicalMessage::Update(_)
            | LogicalMessage::Delete(_)
            | LogicalMessage::Truncate(_) => {
                if self.open_xid.is_none() {
                    return Err(AssembleError::Unexpected {
                        lsn,
                        what: "row change outside a transaction".into(),
                    });
                }
                if let Some(begin) = self.held_begin.take() {
                    // Another transaction commits first with a change: its
                    // decisions may see a model the speculation never saw,
                    // and the follower applies it before the speculation.
                    self.abandon_speculation();
                    self.released_begin = Some(begin);
                }
                Assembled::Event(to_event(&self.relations, lsn, message)?)
            }
            LogicalMessage::StreamStart(start) => {
                self.streaming_xid = Some(start.xid);
                self.spool_for(start.xid)?;
                self.maybe_speculate(lsn, start.xid, start.first_segment)
            }
            LogicalMessage::StreamStop => {
                self.streaming_xid = None;
                Assembled::Nothing
            }
            LogicalMessage::StreamAbort(abort) => {
                // Even a subtransaction's abort: its rows are already on
                // the followers' open transactions.
                if self.speculating == Some(abort.xid) {
                    self.abandon_speculation();
                }
                self.stream_abort(&abort)?;
                Assembled::Nothing
            }
            LogicalMessage::StreamCommit(commit) => self.stream_commit(lsn, &commit)?,
            LogicalMessage::Type(_) | LogicalMessage::Origin(_) | LogicalMessage::Message(_) => {
                Assembled::Nothing
            }
            other => {
                return Err(AssembleError::Unexpected {
                    lsn,
                    what: format!(
                        "{} message (two-phase decoding is not requested)",
                        other.name()
                    ),
                });
            }
        })
    }

    /// Commit: closes the open transaction (an error outside one).
    #[inline]
    fn commit(&mut self, lsn: Lsn, commit: &Commit) -> Result<Assembled, AssembleError> {
        let xid = self
            .open_xid
            .take()
            .ok_or_else(|| AssembleError::Unexpected {
                lsn,
                what: "Commit outside a transaction".into(),
            })?;
        Ok(Assembled::Event(TxnEvent::Commit(TxnCommit {
            xid,
            commit_lsn: commit.commit_lsn,
            end_lsn: commit.end_lsn,
            commit_time: commit.commit_time,
            effects: super::event::no_effects(),
        })))
    }

    /// A change of a streamed transaction goes to its spool as received, under
    /// its subtransaction, until the stream commits or aborts.
    fn spool_change(
        &mut self,
        top: u32,
        message: &LogicalMessage,
        data: &Bytes,
    ) -> Result<(), AssembleError> {
        let subxid = message_xid(message).unwrap_or(top);
        let spool = self.spool_for(top)?;
        spool
            .append(subxid, data)
            .map_err(|source| AssembleError::Spool { xid: top, source })
    }

    /// Stream Abort: drops the whole spool, or only the aborted subtransaction.
    fn stream_abort(&mut self, abort: &StreamAbort) -> Result<(), AssembleError> {
        if abort.subxid == abort.xid {
            self.spools.remove(&abort.xid);
        } else if let Some(spool) = self.spools.get_mut(&abort.xid) {
            spool
                .abort_subxact(abort.subxid)
                .map_err(|source| AssembleError::Spool {
                    xid: abort.xid,
                    source,
                })?;
        }
        Ok(())
    }

    /// Starts a speculation at the first chunk of a streamed transaction
    /// when none runs and no follower can hold the transaction yet.
    fn maybe_speculate(&mut self, lsn: Lsn, xid: u32, first_segment: bool) -> Assembled {
        let is_new_enough = self.speculate_after.is_some_and(|after| lsn > after);
        if !first_segment || !is_new_enough || self.speculating.is_some() {
            return Assembled::Nothing;
        }
        self.speculating = Some(xid);
        Assembled::Event(TxnEvent::Begin(TxnBegin {
            xid,
            // Not known before Stream Commit; the first chunk's position
            // is below it and above every follower's progress.
            commit_lsn: lsn,
            commit_time: pgsieve_protocol::PgTimestamp::now(),
            streamed: true,
            speculative: true,
        }))
    }

    /// Stream Commit: a speculated transaction commits where it stands;
    /// any other spooled one becomes a replay of its events between a Begin
    /// and a Commit of its own (after the speculation, if one runs, is
    /// given up: this transaction commits first).
    fn stream_commit(
        &mut self,
        lsn: Lsn,
        commit: &StreamCommit,
    ) -> Result<Assembled, AssembleError> {
        let commit_event = TxnCommit {
            xid: commit.xid,
            commit_lsn: commit.commit_lsn,
            end_lsn: commit.end_lsn,
            commit_time: commit.commit_time,
            effects: super::event::no_effects(),
        };
        if self.speculating == Some(commit.xid) {
            self.speculating = None;
            self.spools.remove(&commit.xid);
            return Ok(Assembled::Event(TxnEvent::Commit(commit_event)));
        }
        self.abandon_speculation();
        let spool = match self.spools.remove(&commit.xid) {
            Some(spool) => spool,
            None => Spool::create(&self.spool_dir, commit.xid).map_err(|source| {
                AssembleError::Spool {
                    xid: commit.xid,
                    source,
                }
            })?,
        };
        let reader = spool.into_replay().map_err(|source| AssembleError::Spool {
            xid: commit.xid,
            source,
        })?;
        Ok(Assembled::Replay(Box::new(StreamReplay {
            reader,
            lsn,
            state: ReplayState::Begin,
            begin: TxnBegin {
                xid: commit.xid,
                commit_lsn: commit.commit_lsn,
                commit_time: commit.commit_time,
                streamed: true,
                speculative: false,
            },
            commit: commit_event,
        })))
    }

    fn spool_for(&mut self, xid: u32) -> Result<&mut Spool, AssembleError> {
        if !self.spools.contains_key(&xid) {
            let spool = Spool::create(&self.spool_dir, xid)
                .map_err(|source| AssembleError::Spool { xid, source })?;
            self.spools.insert(xid, spool);
        }
        self.spools.get_mut(&xid).ok_or(AssembleError::Spool {
            xid,
            source: std::io::Error::other("spool vanished"),
        })
    }

    /// Looks up a relation by OID.
    pub fn relation(&self, oid: u32) -> Option<&Arc<Relation>> {
        self.relations.get(&oid)
    }
}

fn message_xid(message: &LogicalMessage) -> Option<u32> {
    match message {
        LogicalMessage::Insert(m) => m.xid,
        LogicalMessage::Update(m) => m.xid,
        LogicalMessage::Delete(m) => m.xid,
        LogicalMessage::Truncate(m) => m.xid,
        _ => None,
    }
}

fn to_event(
    relations: &HashMap<u32, Arc<Relation>>,
    lsn: Lsn,
    message: LogicalMessage,
) -> Result<TxnEvent, AssembleError> {
    let lookup = |oid: u32| {
        relations
            .get(&oid)
            .cloned()
            .ok_or(AssembleError::UnknownRelation { lsn, oid })
    };
    let (relation, op) = match message {
        LogicalMessage::Insert(m) => (lookup(m.rel_id)?, RowOp::Insert(m)),
        LogicalMessage::Update(m) => (lookup(m.rel_id)?, RowOp::Update(m)),
        LogicalMessage::Delete(m) => (lookup(m.rel_id)?, RowOp::Delete(m)),
        LogicalMessage::Truncate(m) => {
            for oid in m.rel_ids.iter() {
                lookup(*oid)?;
            }
            return Ok(TxnEvent::Truncate(m));
        }
        other => {
            return Err(AssembleError::Unexpected {
                lsn,
                what: format!("{} where a row change was expected", other.name()),
            });
        }
    };
    check_widths(&relation, &op, lsn)?;
    Ok(TxnEvent::Change(RowChange {
        relation,
        op,
        mask: SetMask::ALL,
    }))
}

/// The tuple gate: every tuple of a change has exactly its relation's column
/// count (an old tuple too: a `'K'` key tuple carries every column, the
/// non-key ones NULL). Past this point filter, fanout and sinks may address
/// a tuple's columns by the relation's positions.
fn check_widths(relation: &Relation, op: &RowOp, lsn: Lsn) -> Result<(), AssembleError> {
    let want = relation.columns.len();
    let check = |tuple: &TupleData, which: &'static str| {
        if tuple.len() == want {
            return Ok(());
        }
        Err(AssembleError::TupleWidth {
            lsn,
            table: format!("{}.{}", relation.namespace, relation.name),
            op: op.as_str(),
            tuple: which,
            got: tuple.len(),
            want,
        })
    };
    let old_name = |old: &OldTuple| if old.is_key() { "key" } else { "old" };
    match op {
        RowOp::Insert(insert) => check(&insert.new, "new"),
        RowOp::Update(update) => {
            if let Some(old) = &update.old {
                check(old.tuple(), old_name(old))?;
            }
            check(&update.new, "new")
        }
        RowOp::Delete(delete) => check(delete.old.tuple(), old_name(&delete.old)),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReplayState {
    Begin,
    Changes,
    Done,
}

/// The events of one committed streamed transaction, read back from its spool.
#[derive(Debug)]
pub struct StreamReplay {
    reader: SpoolReplay,
    lsn: Lsn,
    state: ReplayState,
    begin: TxnBegin,
    commit: TxnCommit,
}

impl StreamReplay {
    /// The next event (Begin, each change, Commit), `None` after Commit.
    pub fn next_event(&mut self, assembler: &Assembler) -> Result<Option<TxnEvent>, AssembleError> {
        match self.state {
            ReplayState::Begin => {
                self.state = ReplayState::Changes;
                Ok(Some(TxnEvent::Begin(self.begin)))
            }
            ReplayState::Changes => {
                let next = self
                    .reader
                    .next_message()
                    .map_err(|source| AssembleError::Spool {
                        xid: self.begin.xid,
                        source,
                    })?;
                match next {
                    Some(data) => {
                        let message = LogicalMessage::parse(
                            data,
                            ParseContext {
                                in_stream: true,
                                parallel_abort: false,
                            },
                        )
                        .map_err(|source| AssembleError::Decode {
                            lsn: self.lsn,
                            source,
                        })?;
                        to_event(&assembler.relations, self.lsn, message).map(Some)
                    }
                    None => {
                        self.state = ReplayState::Done;
                        Ok(Some(TxnEvent::Commit(self.commit.clone())))
                    }
                }
            }
            ReplayState::Done => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use pgsieve_protocol::PgTimestamp;
    use pgsieve_protocol::encode::TupleBuilder;
    use pgsieve_protocol::pgoutput::{
        Begin, Delete, Insert, RelationColumn, ReplicaIdentity, Update,
    };

    use super::*;

    fn relation(columns: usize) -> Relation {
        Relation {
            xid: None,
            oid: 16384,
            namespace: "public".into(),
            name: "wide".into(),
            replica_identity: ReplicaIdentity::Default,
            columns: (0..columns)
                .map(|i| RelationColumn {
                    is_key: i == 0,
                    name: format!("c{i}"),
                    type_oid: 25,
                    type_modifier: -1,
                })
                .collect(),
        }
    }

    fn tuple(columns: usize) -> TupleData {
        let mut b = TupleBuilder::new();
        for i in 0..columns {
            b.text(i.to_string());
        }
        b.finish()
    }

    /// An assembler inside a transaction on a relation of `width` columns.
    fn assembler(width: usize) -> Assembler {
        let mut a = Assembler::new(std::env::temp_dir());
        let begin = LogicalMessage::Begin(Begin {
            final_lsn: Lsn(0x200),
            commit_time: PgTimestamp(0),
            xid: 7,
        });
        for m in [LogicalMessage::Relation(relation(width)), begin] {
            a.handle(Lsn(0x100), m.to_bytes())
                .expect("relation and begin");
        }
        a
    }

    fn handle(width: usize, change: LogicalMessage) -> Result<Assembled, AssembleError> {
        assembler(width).handle(Lsn(0x180), change.to_bytes())
    }

    fn insert(columns: usize) -> LogicalMessage {
        LogicalMessage::Insert(Insert {
            xid: None,
            rel_id: 16384,
            new: tuple(columns),
        })
    }

    /// Feeds `message` at `lsn` and names what came out (and what the
    /// assembler released ahead of it).
    fn step(a: &mut Assembler, lsn: u64, message: LogicalMessage) -> String {
        let out = match a.handle(Lsn(lsn), message.to_bytes()).expect("handled") {
            Assembled::Nothing => "nothing".to_owned(),
            Assembled::Event(TxnEvent::Begin(b)) if b.speculative => "speculative begin".into(),
            Assembled::Event(TxnEvent::Begin(_)) => "begin".into(),
            Assembled::Event(TxnEvent::Change(_)) => "change".into(),
            Assembled::Event(TxnEvent::Commit(_)) => "commit".into(),
            Assembled::Event(other) => format!("{other:?}"),
            Assembled::Speculated(_) => "speculated change".into(),
            Assembled::Replay(_) => "replay".into(),
        };
        let released: Vec<String> = a
            .take_released()
            .into_iter()
            .flatten()
            .map(|e| match e {
                TxnEvent::Abandon { xid } => format!("abandon {xid}"),
                TxnEvent::Begin(b) => format!("begin {}", b.xid),
                other => format!("{other:?}"),
            })
            .collect();
        if released.is_empty() {
            out
        } else {
            format!("{} + {out}", released.join(" + "))
        }
    }

    fn streamed_insert(xid: u32) -> LogicalMessage {
        LogicalMessage::Insert(Insert {
            xid: Some(xid),
            rel_id: 16384,
            new: tuple(2),
        })
    }

    fn chunk(a: &mut Assembler, lsn: u64, first: bool) -> Vec<String> {
        vec![
            step(
                a,
                lsn,
                LogicalMessage::StreamStart(pgsieve_protocol::pgoutput::StreamStart {
                    xid: 9,
                    first_segment: first,
                }),
            ),
            step(a, lsn + 1, streamed_insert(9)),
            step(a, lsn + 2, LogicalMessage::StreamStop),
        ]
    }

    fn regular(xid: u32, with_change: bool) -> Vec<LogicalMessage> {
        let mut messages = vec![LogicalMessage::Begin(Begin {
            final_lsn: Lsn(0x900),
            commit_time: PgTimestamp(0),
            xid,
        })];
        if with_change {
            messages.push(insert(2));
        }
        messages.push(LogicalMessage::Commit(pgsieve_protocol::pgoutput::Commit {
            flags: 0,
            commit_lsn: Lsn(0x900),
            end_lsn: Lsn(0x901),
            commit_time: PgTimestamp(0),
        }));
        messages
    }

    /// The speculation's rules message by message (`tests/speculation.rs`
    /// shows each against a real leader): it starts at a first chunk after
    /// `speculate_after`, an empty commit in between leaves it alone, a
    /// commit with a change gives it up ahead of its own Begin, and the
    /// given-up transaction is spooled on and replayed at its commit.
    #[test]
    fn a_speculation_is_given_up_only_by_a_commit_that_changes_something() {
        let mut a = Assembler::new(std::env::temp_dir());
        a.speculate_after(Lsn(0x100));
        step(&mut a, 0x101, LogicalMessage::Relation(relation(2)));
        assert_eq!(
            chunk(&mut a, 0x200, true),
            ["speculative begin", "speculated change", "nothing"]
        );
        let heartbeat: Vec<String> = regular(10, false)
            .into_iter()
            .map(|m| step(&mut a, 0x300, m))
            .collect();
        assert_eq!(heartbeat, ["nothing", "nothing"]);
        assert_eq!(
            chunk(&mut a, 0x400, false),
            ["nothing", "speculated change", "nothing"]
        );
        let rotation: Vec<String> = regular(11, true)
            .into_iter()
            .map(|m| step(&mut a, 0x500, m))
            .collect();
        assert_eq!(
            rotation,
            ["nothing", "abandon 9 + begin 11 + change", "commit"]
        );
        assert_eq!(
            chunk(&mut a, 0x600, false),
            ["nothing", "nothing", "nothing"]
        );
        let commit = LogicalMessage::StreamCommit(pgsieve_protocol::pgoutput::StreamCommit {
            xid: 9,
            flags: 0,
            commit_lsn: Lsn(0x700),
            end_lsn: Lsn(0x701),
            commit_time: PgTimestamp(0),
        });
        let Assembled::Replay(mut replay) = a.handle(Lsn(0x700), commit.to_bytes()).unwrap() else {
            panic!("a given-up speculation is replayed at its commit");
        };
        let mut changes = 0;
        while let Some(event) = replay.next_event(&a).unwrap() {
            changes += usize::from(matches!(event, TxnEvent::Change(_)));
        }
        assert_eq!(
            changes, 3,
            "every chunk was spooled, the speculated ones too"
        );
    }

    /// A transaction streamed from before a follower's progress may already
    /// be on it: never speculated.
    #[test]
    fn no_speculation_before_the_furthest_follower() {
        let mut a = Assembler::new(std::env::temp_dir());
        a.speculate_after(Lsn(0x300));
        step(&mut a, 0x101, LogicalMessage::Relation(relation(2)));
        assert_eq!(
            chunk(&mut a, 0x200, true),
            ["nothing", "nothing", "nothing"]
        );
        let mut never = Assembler::new(std::env::temp_dir());
        step(&mut never, 0x101, LogicalMessage::Relation(relation(2)));
        assert_eq!(
            chunk(&mut never, 0x400, true),
            ["nothing", "nothing", "nothing"]
        );
    }

    #[test]
    fn tuples_of_the_relations_width_pass_the_gate() {
        for width in [1, 4, 64, 65, 200] {
            assert!(matches!(
                handle(width, insert(width)),
                Ok(Assembled::Event(_))
            ));
        }
        let update = LogicalMessage::Update(Update {
            xid: None,
            rel_id: 16384,
            old: Some(OldTuple::Key(tuple(70))),
            new: tuple(70),
        });
        assert!(handle(70, update).is_ok());
    }

    #[test]
    fn a_tuple_of_another_width_is_a_typed_error_naming_lsn_table_and_widths() {
        let cases = [
            (4, insert(3), "insert", "new", 3),
            (4, insert(5), "insert", "new", 5),
            (4, insert(65), "insert", "new", 65),
            (
                4,
                LogicalMessage::Update(Update {
                    xid: None,
                    rel_id: 16384,
                    old: Some(OldTuple::Key(tuple(2))),
                    new: tuple(4),
                }),
                "update",
                "key",
                2,
            ),
            (
                4,
                LogicalMessage::Update(Update {
                    xid: None,
                    rel_id: 16384,
                    old: None,
                    new: tuple(70),
                }),
                "update",
                "new",
                70,
            ),
            (
                4,
                LogicalMessage::Delete(Delete {
                    xid: None,
                    rel_id: 16384,
                    old: OldTuple::Full(tuple(5)),
                }),
                "delete",
                "old",
                5,
            ),
        ];
        for (width, change, want_op, want_tuple, want_got) in cases {
            let err = handle(width, change).expect_err("a tuple of another width");
            let line = err.to_string();
            assert!(
                line.contains("0/180") && line.contains("public.wide"),
                "{line}"
            );
            let AssembleError::TupleWidth {
                lsn,
                table,
                op,
                tuple,
                got,
                want,
            } = err
            else {
                panic!("not a width error: {line}");
            };
            assert_eq!(
                (lsn, table.as_str(), op, tuple, got, want),
                (
                    Lsn(0x180),
                    "public.wide",
                    want_op,
                    want_tuple,
                    want_got,
                    width
                )
            );
        }
    }

    #[test]
    fn a_change_of_an_unannounced_relation_is_a_typed_error() {
        let change = LogicalMessage::Insert(Insert {
            xid: None,
            rel_id: 99,
            new: tuple(4),
        });
        assert!(matches!(
            handle(4, change),
            Err(AssembleError::UnknownRelation { oid: 99, .. })
        ));
    }
}
