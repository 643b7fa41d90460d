//! pgoutput: read, decode, assemble into the common form.

use super::*;

/// How a pgoutput slot is read.
#[derive(Clone, Copy, Debug)]
pub(super) struct Read {
    /// `proto_version`.
    pub(super) proto: u8,
    /// `binary`: values in send format.
    pub(super) binary: bool,
    /// `two_phase` (the slot must have been created with two-phase decoding).
    pub(super) two_phase: bool,
}

impl Read {
    /// Streaming is on for every read with protocol ≥ 2 except the binary two-phase
    /// one (so two-phase is also read without streaming).
    pub(super) fn streaming(self) -> bool {
        self.proto >= 2 && !(self.two_phase && self.binary)
    }

    /// The pgoutput options, as `VARIADIC text[]` of the peek function.
    pub(super) fn options(self) -> Vec<String> {
        let mut options = vec![
            "proto_version".to_string(),
            self.proto.to_string(),
            "publication_names".to_string(),
            PUBLICATION.to_string(),
            "messages".to_string(),
            "true".to_string(),
        ];
        let flags = [
            ("binary", self.binary),
            ("streaming", self.streaming()),
            ("two_phase", self.two_phase),
        ];
        for (name, on) in flags {
            if on {
                options.extend([name.to_string(), "on".to_string()]);
            }
        }
        options
    }
}

impl fmt::Display for Read {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pgoutput v{} {}{}{}",
            self.proto,
            if self.binary { "binary" } else { "text" },
            if self.streaming() { ", streaming" } else { "" },
            if self.two_phase { ", two-phase" } else { "" },
        )
    }
}

/// What a pgoutput read contained besides the events.
#[derive(Debug, Default)]
pub(super) struct Stats {
    /// Column values sent as `'t'`.
    pub(super) text_values: usize,
    /// Column values sent as `'b'`.
    pub(super) binary_values: usize,
    /// Stream Start … Stream Stop blocks.
    pub(super) stream_blocks: usize,
    /// Stream Commit messages.
    pub(super) stream_commits: usize,
    /// Stream Abort messages of a subtransaction.
    pub(super) subxact_aborts: usize,
    /// Streamed changes those aborts dropped (found by their xid).
    pub(super) dropped_by_subxact_abort: usize,
    /// Stream Abort messages of a whole transaction.
    pub(super) xact_aborts: usize,
    /// Begin Prepare messages.
    pub(super) begin_prepares: usize,
}

impl Stats {
    /// Binary reads must carry binary values only, text reads text only.
    #[track_caller]
    pub(super) fn assert_format(&self, read: Read) {
        if read.binary {
            assert!(
                self.binary_values > 0 && self.text_values == 0,
                "{read}: {self:?}"
            );
        } else {
            assert!(
                self.text_values > 0 && self.binary_values == 0,
                "{read}: {self:?}"
            );
        }
    }
}

/// Peeks every pgoutput message of `slot` as `read` says, decodes each with one
/// decoder and assembles them into the form `test_decoding` prints.
pub(super) async fn pgoutput_events(
    client: &Client,
    slot: &str,
    read: Read,
) -> (Vec<Event>, Stats) {
    let rows = client
        .query(
            "SELECT data FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL, VARIADIC $2::text[])",
            &[&slot, &read.options()],
        )
        .await
        .unwrap();
    let mut decoder = PgOutputDecoder::new();
    let mut assembler = Assembler::new(client, read);
    for (i, row) in rows.iter().enumerate() {
        let data: Vec<u8> = row.get(0);
        let message = decoder
            .decode(Bytes::from(data))
            .unwrap_or_else(|e| panic!("{read}: message {i} does not decode: {e}"));
        assembler.handle(message).await;
    }
    assembler.finish().await
}

/// An open Begin … Commit or Begin Prepare … Prepare block.
pub(super) enum Open {
    Txn(Begin, Vec<Event>),
    Prepared(BeginPrepare, Vec<Event>),
}

/// Turns decoded pgoutput messages into [`Event`]s: follows transactions, reassembles
/// streamed ones per xid (dropping aborted subtransactions by the changes' xids),
/// checks what pgoutput repeats (Begin vs Commit, Begin Prepare vs Prepare) and every
/// Relation and Type message against the catalog.
pub(super) struct Assembler<'a> {
    pub(super) read: Read,
    pub(super) oracle: Catalog<'a>,
    pub(super) relations: RelationCache,
    pub(super) open: Option<Open>,
    /// Streamed transactions by top-level xid: (change xid, event).
    pub(super) streams: HashMap<u32, Vec<(u32, Event)>>,
    pub(super) stream: Option<u32>,
    /// Prepared transactions by GID: prepare end LSN and prepare time.
    pub(super) prepared: HashMap<String, (Lsn, PgTimestamp)>,
    pub(super) events: Vec<Event>,
    pub(super) stats: Stats,
}

impl<'a> Assembler<'a> {
    pub(super) fn new(client: &'a Client, read: Read) -> Self {
        Assembler {
            read,
            oracle: Catalog::new(client),
            relations: RelationCache::new(),
            open: None,
            streams: HashMap::new(),
            stream: None,
            prepared: HashMap::new(),
            events: Vec::new(),
            stats: Stats::default(),
        }
    }

    pub(super) async fn handle(&mut self, message: LogicalMessage) {
        let read = self.read;
        match message {
            LogicalMessage::Begin(begin) => {
                assert!(
                    self.open.is_none() && self.stream.is_none(),
                    "{read}: {begin:?}"
                );
                self.open = Some(Open::Txn(begin, Vec::new()));
            }
            LogicalMessage::Commit(commit) => {
                let Some(Open::Txn(begin, items)) = self.open.take() else {
                    panic!("{read}: Commit outside a transaction");
                };
                assert_eq!(commit.flags, 0, "{read}: {commit:?}");
                assert_eq!(
                    commit.commit_lsn, begin.final_lsn,
                    "{read}: {begin:?} {commit:?}"
                );
                assert_eq!(commit.commit_time, begin.commit_time, "{read}: {commit:?}");
                assert!(commit.commit_lsn < commit.end_lsn, "{read}: {commit:?}");
                let at = self.oracle.time(commit.commit_time).await;
                let end = Event::Commit {
                    xid: begin.xid,
                    end_lsn: commit.end_lsn,
                    at,
                };
                self.close(begin.xid, items, end);
            }
            LogicalMessage::Relation(relation) => {
                self.check_xid(relation.xid, "Relation");
                self.oracle.check_relation(&relation).await;
                self.relations.insert(relation);
            }
            LogicalMessage::Type(ty) => {
                self.check_xid(ty.xid, "Type");
                self.oracle.check_type(&ty).await;
            }
            LogicalMessage::Insert(insert) => {
                let rel = self.relation(insert.rel_id);
                let new = self.tuple(&rel, &insert.new, false).await;
                let table = rel.qualified_name();
                self.push(insert.xid, Event::Insert { table, new });
            }
            LogicalMessage::Update(update) => {
                let rel = self.relation(update.rel_id);
                let old = match &update.old {
                    Some(old) => Some(self.old_tuple(&rel, old).await),
                    None => None,
                };
                let new = self.tuple(&rel, &update.new, false).await;
                let table = rel.qualified_name();
                self.push(update.xid, Event::Update { table, old, new });
            }
            LogicalMessage::Delete(delete) => {
                let rel = self.relation(delete.rel_id);
                let old = self.old_tuple(&rel, &delete.old).await;
                let table = rel.qualified_name();
                self.push(delete.xid, Event::Delete { table, old });
            }
            LogicalMessage::Truncate(truncate) => {
                let tables = truncate
                    .rel_ids
                    .iter()
                    .map(|&id| self.relation(id).qualified_name())
                    .collect();
                let event = Event::Truncate {
                    tables,
                    restart_seqs: truncate.options.restart_identity,
                    cascade: truncate.options.cascade,
                };
                self.push(truncate.xid, event);
            }
            LogicalMessage::Message(message) => {
                let event = Event::Message {
                    transactional: message.is_transactional(),
                    prefix: message.prefix.to_string(),
                    content: String::from_utf8(message.content.to_vec()).unwrap(),
                    lsn: message.message_lsn,
                };
                if message.is_transactional() {
                    self.push(message.xid, event);
                } else {
                    assert!(self.open.is_none() && self.stream.is_none(), "{read}");
                    assert_eq!(message.xid, None, "{read}: {message:?}");
                    self.events.push(event);
                }
            }
            LogicalMessage::StreamStart(start) => {
                assert!(
                    self.open.is_none(),
                    "{read}: {start:?} inside a transaction"
                );
                self.stats.stream_blocks += 1;
                let known = self.streams.contains_key(&start.xid);
                assert_eq!(start.first_segment, !known, "{read}: {start:?}");
                self.streams.entry(start.xid).or_default();
                self.stream = Some(start.xid);
            }
            LogicalMessage::StreamStop => {
                assert!(self.stream.take().is_some(), "{read}: Stream Stop");
            }
            LogicalMessage::StreamCommit(commit) => {
                assert!(self.stream.is_none(), "{read}: {commit:?} inside a stream");
                let Some(items) = self.streams.remove(&commit.xid) else {
                    panic!("{read}: {commit:?} of an unknown transaction");
                };
                assert_eq!(commit.flags, 0, "{read}: {commit:?}");
                assert!(commit.commit_lsn < commit.end_lsn, "{read}: {commit:?}");
                self.stats.stream_commits += 1;
                let at = self.oracle.time(commit.commit_time).await;
                let end = Event::Commit {
                    xid: commit.xid,
                    end_lsn: commit.end_lsn,
                    at,
                };
                let items = items.into_iter().map(|(_, event)| event).collect();
                self.close(commit.xid, items, end);
            }
            LogicalMessage::StreamAbort(abort) => {
                assert!(self.stream.is_none(), "{read}: {abort:?} inside a stream");
                assert_eq!(abort.abort_lsn, None, "{read}: {abort:?}");
                let Some(items) = self.streams.get_mut(&abort.xid) else {
                    panic!("{read}: {abort:?} of an unknown transaction");
                };
                if abort.is_subtransaction() {
                    let before = items.len();
                    items.retain(|(xid, _)| *xid != abort.subxid);
                    self.stats.subxact_aborts += 1;
                    self.stats.dropped_by_subxact_abort += before - items.len();
                } else {
                    self.streams.remove(&abort.xid);
                    self.stats.xact_aborts += 1;
                }
            }
            LogicalMessage::BeginPrepare(begin) => {
                assert!(
                    self.open.is_none() && self.stream.is_none(),
                    "{read}: {begin:?}"
                );
                self.stats.begin_prepares += 1;
                self.open = Some(Open::Prepared(begin, Vec::new()));
            }
            LogicalMessage::Prepare(prepare) => {
                let Some(Open::Prepared(begin, items)) = self.open.take() else {
                    panic!("{read}: Prepare outside Begin Prepare");
                };
                assert_eq!(prepare.flags, 0, "{read}: {prepare:?}");
                assert_eq!(
                    (
                        &begin.gid,
                        begin.xid,
                        begin.prepare_lsn,
                        begin.end_lsn,
                        begin.prepare_time
                    ),
                    (
                        &prepare.gid,
                        prepare.xid,
                        prepare.prepare_lsn,
                        prepare.end_lsn,
                        prepare.prepare_time
                    ),
                    "{read}: Begin Prepare and Prepare disagree"
                );
                assert!(prepare.prepare_lsn < prepare.end_lsn, "{read}: {prepare:?}");
                let gid = prepare.gid.to_string();
                self.prepared
                    .insert(gid.clone(), (prepare.end_lsn, prepare.prepare_time));
                let at = self.oracle.time(prepare.prepare_time).await;
                let end = Event::Prepare {
                    gid,
                    xid: prepare.xid,
                    end_lsn: prepare.end_lsn,
                    at,
                };
                self.close(prepare.xid, items, end);
            }
            LogicalMessage::CommitPrepared(commit) => {
                assert!(
                    self.open.is_none() && self.stream.is_none(),
                    "{read}: {commit:?}"
                );
                assert_eq!(commit.flags, 0, "{read}: {commit:?}");
                assert!(commit.commit_lsn < commit.end_lsn, "{read}: {commit:?}");
                let at = self.oracle.time(commit.commit_time).await;
                self.events.push(Event::CommitPrepared {
                    gid: commit.gid.to_string(),
                    xid: commit.xid,
                    end_lsn: commit.end_lsn,
                    at,
                });
            }
            LogicalMessage::RollbackPrepared(rollback) => {
                assert!(self.open.is_none() && self.stream.is_none(), "{read}");
                assert_eq!(rollback.flags, 0, "{read}: {rollback:?}");
                let gid = rollback.gid.to_string();
                assert_eq!(
                    self.prepared.get(&gid),
                    Some(&(rollback.prepare_end_lsn, rollback.prepare_time)),
                    "{read}: {rollback:?} does not match its Prepare"
                );
                let at = self.oracle.time(rollback.rollback_time).await;
                self.events.push(Event::RollbackPrepared {
                    gid,
                    xid: rollback.xid,
                    end_lsn: rollback.rollback_end_lsn,
                    at,
                });
            }
            other @ (LogicalMessage::Origin(_) | LogicalMessage::StreamPrepare(_)) => {
                panic!("{read}: the workload cannot produce {other:?}");
            }
        }
    }

    /// Checks that everything was closed (no open transaction, stream block or
    /// streamed transaction is left) and fills in the binary values.
    pub(super) async fn finish(mut self) -> (Vec<Event>, Stats) {
        let read = self.read;
        assert!(self.open.is_none(), "{read}: transaction left open");
        assert!(self.stream.is_none(), "{read}: stream block left open");
        assert!(
            self.streams.is_empty(),
            "{read}: streamed transaction left open"
        );
        self.oracle.resolve_binary(&mut self.events).await;
        (self.events, self.stats)
    }

    /// A change's xid must be present exactly inside stream blocks.
    pub(super) fn check_xid(&self, xid: Option<u32>, what: &str) {
        assert_eq!(
            xid.is_some(),
            self.stream.is_some(),
            "{}: {what} xid {xid:?}, in stream {:?}",
            self.read,
            self.stream
        );
    }

    /// The cached Relation a change refers to (it must have been sent before).
    pub(super) fn relation(&self, rel_id: u32) -> Relation {
        self.relations
            .get(rel_id)
            .cloned()
            .unwrap_or_else(|| panic!("{}: change of unknown relation {rel_id}", self.read))
    }

    /// Adds a change or transactional message to the open transaction or stream.
    pub(super) fn push(&mut self, xid: Option<u32>, event: Event) {
        self.check_xid(xid, "change");
        match (self.stream, &mut self.open, xid) {
            (Some(top), None, Some(xid)) => self
                .streams
                .get_mut(&top)
                .expect("stream started")
                .push((xid, event)),
            (None, Some(Open::Txn(_, items) | Open::Prepared(_, items)), None) => items.push(event),
            _ => panic!("{}: change outside a transaction: {event}", self.read),
        }
    }

    /// Emits a finished transaction as `test_decoding` prints it with
    /// `skip-empty-xacts`: its BEGIN is deferred to the first row change, so
    /// transactional messages before it come first, and a transaction without row
    /// changes has neither BEGIN nor end line (its messages only).
    pub(super) fn close(&mut self, xid: u32, items: Vec<Event>, end: Event) {
        let first_change = items
            .iter()
            .position(|e| !matches!(e, Event::Message { .. }));
        match first_change {
            None => self.events.extend(items),
            Some(first) => {
                let mut items = items;
                let changes = items.split_off(first);
                self.events.extend(items);
                self.events.push(Event::Begin { xid });
                self.events.extend(changes);
                self.events.push(end);
            }
        }
    }

    /// An old key (`K`: only the identity columns may be filled, and all of them
    /// are) or old row (`O`: the table must have REPLICA IDENTITY FULL), NULLs left
    /// out as `test_decoding` does.
    pub(super) async fn old_tuple(&mut self, rel: &Relation, old: &OldTuple) -> Vec<Field> {
        match old {
            OldTuple::Key(tuple) => {
                let filled: Vec<usize> = tuple
                    .columns()
                    .enumerate()
                    .filter(|(_, c)| !c.is_null())
                    .map(|(i, _)| i)
                    .collect();
                let keys: Vec<usize> = rel.key_indexes().collect();
                assert_eq!(filled, keys, "{}: old key of {}", self.read, rel.name);
            }
            OldTuple::Full(_) => assert_eq!(
                rel.replica_identity,
                ReplicaIdentity::Full,
                "{}: old row of {}",
                self.read,
                rel.name
            ),
        }
        self.tuple(rel, old.tuple(), true).await
    }

    /// A tuple as `test_decoding` prints it; binary values are left as placeholders
    /// for [`Catalog::resolve_binary`].
    pub(super) async fn tuple(
        &mut self,
        rel: &Relation,
        tuple: &TupleData,
        skip_nulls: bool,
    ) -> Vec<Field> {
        assert_eq!(
            tuple.len(),
            rel.columns.len(),
            "{}: tuple of {}",
            self.read,
            rel.name
        );
        let mut fields = Vec::with_capacity(tuple.len());
        for (column, RelationColumn { name, type_oid, .. }) in tuple.columns().zip(&rel.columns) {
            let value = match column {
                Column::Null if skip_nulls => continue,
                Column::Null => "null".to_string(),
                Column::UnchangedToast => "unchanged-toast-datum".to_string(),
                Column::Text(text) => {
                    self.stats.text_values += 1;
                    literal(*type_oid, std::str::from_utf8(text).unwrap())
                }
                Column::Binary(bytes) => {
                    self.stats.binary_values += 1;
                    self.oracle.defer_binary(*type_oid, bytes)
                }
            };
            fields.push(Field {
                name: name.clone(),
                type_name: self.oracle.type_name(*type_oid).await,
                value,
            });
        }
        fields
    }
}
