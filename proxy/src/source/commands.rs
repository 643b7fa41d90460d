//! Replication commands and plain SQL on an idle replication connection:
//! `IDENTIFY_SYSTEM`, `CREATE_REPLICATION_SLOT`, `DROP_REPLICATION_SLOT`,
//! slot lookups through `pg_replication_slots`, and `START_REPLICATION`.
//!
//! Commands are upper-case and slot names validated up front: the
//! replication grammar parses the text before SQL would.

use pgsieve_protocol::Lsn;
use postgres_protocol::message::frontend;

use super::auth::encode_error;
use super::connect::{ReplicationConnection, log_notice};
use super::error::SourceError;
use super::messages::{self, tag};
use super::pacing::ReadPacing;
use super::stream::{ReplicationStream, StatusSender};

/// What `IDENTIFY_SYSTEM` says about the leader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemIdentity {
    /// Cluster system identifier (decimal text of a u64): tells leaders apart.
    pub system_id: String,
    /// Current timeline.
    pub timeline: u32,
    /// Current WAL flush position.
    pub xlogpos: Lsn,
    /// Database of this session (`None` for physical replication).
    pub dbname: Option<String>,
}

/// What to do with the snapshot a new slot comes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotAction {
    /// Export it, for `SET TRANSACTION SNAPSHOT` in other sessions; it lives
    /// until the next command on this connection.
    Export,
    /// Use it in the current transaction of this connection (must be inside
    /// `BEGIN ISOLATION LEVEL REPEATABLE READ`).
    Use,
    /// No snapshot.
    Nothing,
}

impl SnapshotAction {
    fn keyword(self) -> &'static str {
        match self {
            SnapshotAction::Export => "export",
            SnapshotAction::Use => "use",
            SnapshotAction::Nothing => "nothing",
        }
    }
}

/// A freshly created logical slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedSlot {
    /// The slot's name.
    pub slot_name: String,
    /// The first LSN the slot will decode from; data before it belongs to
    /// the snapshot.
    pub consistent_point: Lsn,
    /// Exported snapshot name with [`SnapshotAction::Export`].
    pub snapshot_name: Option<String>,
}

/// A slot as `pg_replication_slots` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotInfo {
    /// Output plugin (empty for a physical slot).
    pub plugin: String,
    /// Last flush position confirmed by a consumer (`0/0` when never set).
    pub confirmed_flush_lsn: Lsn,
    /// Whether a walsender currently streams from it.
    pub active: bool,
    /// Database the slot belongs to (empty for a physical slot).
    pub database: String,
    /// `wal_status`: `lost` once `max_slot_wal_keep_size` removed WAL it needed.
    pub wal_status: String,
}

impl SlotInfo {
    /// Whether the slot can still stream from its confirmed position.
    pub fn is_usable(&self) -> bool {
        self.wal_status != "lost"
    }
}

impl ReplicationConnection {
    /// Runs `sql` with the simple query protocol and returns all rows of all
    /// statements as text (`None` = NULL). Works for replication commands
    /// and, on a `replication=database` session, for SQL.
    pub async fn simple_query(
        &mut self,
        sql: &str,
    ) -> Result<Vec<Vec<Option<String>>>, SourceError> {
        self.send_query(sql).await?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            let frame = self.reader.next_frame().await?;
            match frame.tag {
                tag::DATA_ROW if error.is_none() => {
                    rows.push(messages::parse_data_row(&frame.body)?)
                }
                tag::ROW_DESCRIPTION
                | tag::DATA_ROW
                | tag::COMMAND_COMPLETE
                | tag::EMPTY_QUERY_RESPONSE
                | tag::NOTIFICATION_RESPONSE => {}
                tag::ERROR_RESPONSE => error = Some(messages::parse_error(&frame.body)),
                tag::NOTICE_RESPONSE => log_notice(&frame.body),
                tag::PARAMETER_STATUS => self.note_parameter(&frame.body)?,
                tag::READY_FOR_QUERY => break,
                other => {
                    return Err(SourceError::Protocol(format!(
                        "unexpected message {:?} in answer to a simple query (COPY is not supported here)",
                        char::from(other)
                    )));
                }
            }
        }
        match error {
            Some(e) => Err(e),
            None => Ok(rows),
        }
    }

    /// `IDENTIFY_SYSTEM`: system id, timeline, WAL position, database.
    pub async fn identify_system(&mut self) -> Result<SystemIdentity, SourceError> {
        let rows = self.simple_query("IDENTIFY_SYSTEM").await?;
        let row = single_row(rows, 4, "IDENTIFY_SYSTEM")?;
        let mut cols = row.into_iter();
        let system_id = required(cols.next(), "IDENTIFY_SYSTEM systemid")?;
        let timeline = required(cols.next(), "IDENTIFY_SYSTEM timeline")?;
        let timeline = timeline
            .parse()
            .map_err(|_| SourceError::Protocol(format!("bad timeline {timeline:?}")))?;
        let xlogpos = parse_lsn(&required(cols.next(), "IDENTIFY_SYSTEM xlogpos")?)?;
        let dbname = cols.next().flatten();
        Ok(SystemIdentity {
            system_id,
            timeline,
            xlogpos,
            dbname,
        })
    }

    /// `CREATE_REPLICATION_SLOT <slot> [TEMPORARY] LOGICAL pgoutput (SNAPSHOT '…')`.
    ///
    /// An exported snapshot stays valid only while this connection runs no
    /// other command.
    pub async fn create_slot(
        &mut self,
        slot: &str,
        temporary: bool,
        snapshot: SnapshotAction,
    ) -> Result<CreatedSlot, SourceError> {
        check_slot_name(slot)?;
        let sql = format!(
            "CREATE_REPLICATION_SLOT {slot}{} LOGICAL pgoutput (SNAPSHOT '{}')",
            if temporary { " TEMPORARY" } else { "" },
            snapshot.keyword()
        );
        let rows = self.simple_query(&sql).await?;
        let row = single_row(rows, 4, "CREATE_REPLICATION_SLOT")?;
        let mut cols = row.into_iter();
        let slot_name = required(cols.next(), "CREATE_REPLICATION_SLOT slot_name")?;
        let consistent_point = parse_lsn(&required(
            cols.next(),
            "CREATE_REPLICATION_SLOT consistent_point",
        )?)?;
        let snapshot_name = cols.next().flatten();
        Ok(CreatedSlot {
            slot_name,
            consistent_point,
            snapshot_name,
        })
    }

    /// The slot's row in `pg_replication_slots`, or `None` when it does not exist.
    pub async fn slot_info(&mut self, slot: &str) -> Result<Option<SlotInfo>, SourceError> {
        check_slot_name(slot)?;
        let sql = format!(
            "SELECT plugin, confirmed_flush_lsn, active, database, wal_status \
             FROM pg_catalog.pg_replication_slots WHERE slot_name = '{slot}'"
        );
        let mut rows = self.simple_query(&sql).await?;
        let Some(row) = rows.pop() else {
            return Ok(None);
        };
        let mut cols = row.into_iter();
        let plugin = cols.next().flatten().unwrap_or_default();
        let confirmed_flush_lsn = match cols.next().flatten() {
            Some(lsn) => parse_lsn(&lsn)?,
            None => Lsn::ZERO,
        };
        let active = cols.next().flatten().as_deref() == Some("t");
        let database = cols.next().flatten().unwrap_or_default();
        let wal_status = cols.next().flatten().unwrap_or_default();
        Ok(Some(SlotInfo {
            plugin,
            confirmed_flush_lsn,
            active,
            database,
            wal_status,
        }))
    }

    /// `DROP_REPLICATION_SLOT <slot>`; fails when it is in use or missing.
    pub async fn drop_slot(&mut self, slot: &str) -> Result<(), SourceError> {
        check_slot_name(slot)?;
        self.simple_query(&format!("DROP_REPLICATION_SLOT {slot}"))
            .await?;
        Ok(())
    }

    /// `START_REPLICATION SLOT <slot> LOGICAL <start> (name 'value', …)`.
    ///
    /// Option names must be plain identifiers; values are sent as quoted
    /// literals (so `publication_names` values carry their own identifier
    /// quoting, e.g. `"\"pgsieve\""`). Returns once the server answered with
    /// CopyBothResponse; an ErrorResponse instead (missing publication,
    /// `wal_level`, slot in use) is returned as [`SourceError::Server`].
    pub async fn start_replication(
        mut self,
        slot: &str,
        start: Lsn,
        options: &[(&str, &str)],
    ) -> Result<(ReplicationStream, StatusSender), SourceError> {
        let sql = start_replication_command(slot, start, options)?;
        self.send_query(&sql).await?;
        loop {
            let frame = self.reader.next_frame().await?;
            match frame.tag {
                tag::COPY_BOTH_RESPONSE => break,
                tag::ERROR_RESPONSE => return Err(messages::parse_error(&frame.body)),
                tag::NOTICE_RESPONSE => log_notice(&frame.body),
                tag::PARAMETER_STATUS => self.note_parameter(&frame.body)?,
                other => {
                    return Err(SourceError::Protocol(format!(
                        "unexpected message {:?} in answer to START_REPLICATION",
                        char::from(other)
                    )));
                }
            }
        }
        tracing::debug!(addr = %self.addr, %slot, %start, "Replication started.");
        let ReplicationConnection {
            reader,
            writer,
            addr,
            tcp_socket,
            ..
        } = self;
        Ok((
            ReplicationStream::new(reader.read_ahead(ReadPacing::new(tcp_socket))),
            StatusSender::spawn(writer, addr),
        ))
    }

    /// Starts pgoutput on `slot` at `start` for `publication`, with the
    /// options every pgsieve session uses (`run` and `tap` alike): protocol
    /// 2 with streamed in-progress transactions, and logical messages.
    pub async fn start_pgoutput(
        self,
        slot: &str,
        start: Lsn,
        publication: &str,
    ) -> Result<(ReplicationStream, StatusSender), SourceError> {
        let publication_names = crate::sql::quote_ident(publication);
        let options = [
            ("proto_version", "2"),
            ("publication_names", publication_names.as_str()),
            ("streaming", "on"),
            ("messages", "true"),
        ];
        self.start_replication(slot, start, &options).await
    }

    async fn send_query(&mut self, sql: &str) -> Result<(), SourceError> {
        self.write_buf.clear();
        frontend::query(sql, &mut self.write_buf).map_err(encode_error)?;
        self.flush_write_buf().await
    }
}

/// The START_REPLICATION text, with names validated and values quoted.
pub(crate) fn start_replication_command(
    slot: &str,
    start: Lsn,
    options: &[(&str, &str)],
) -> Result<String, SourceError> {
    check_slot_name(slot)?;
    let mut sql = format!("START_REPLICATION SLOT {slot} LOGICAL {start}");
    for (i, (name, value)) in options.iter().enumerate() {
        let is_identifier = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            && !name.as_bytes()[0].is_ascii_digit();
        if !is_identifier {
            return Err(SourceError::Config(format!(
                "replication option name {name:?} is not a lower-case identifier"
            )));
        }
        if value.contains('\0') {
            return Err(SourceError::Config(format!(
                "replication option {name} contains a NUL byte"
            )));
        }
        sql.push_str(if i == 0 { " (" } else { ", " });
        sql.push_str(name);
        sql.push_str(" '");
        sql.push_str(&value.replace('\'', "''"));
        sql.push('\'');
    }
    if !options.is_empty() {
        sql.push(')');
    }
    Ok(sql)
}

/// Slot names PostgreSQL accepts: 1–63 of `[a-z0-9_]`. Checking here keeps
/// them safe to splice into commands and SQL.
fn check_slot_name(slot: &str) -> Result<(), SourceError> {
    let valid = !slot.is_empty()
        && slot.len() <= 63
        && slot
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(SourceError::Config(format!(
            "invalid replication slot name {slot:?}: use 1-63 characters of a-z, 0-9 and _"
        )))
    }
}

fn single_row(
    mut rows: Vec<Vec<Option<String>>>,
    columns: usize,
    command: &str,
) -> Result<Vec<Option<String>>, SourceError> {
    match (rows.pop(), rows.is_empty()) {
        (Some(row), true) if row.len() >= columns => Ok(row),
        _ => Err(SourceError::Protocol(format!(
            "{command} did not return one row of {columns} columns"
        ))),
    }
}

fn required(col: Option<Option<String>>, what: &str) -> Result<String, SourceError> {
    col.flatten()
        .ok_or_else(|| SourceError::Protocol(format!("{what} is missing")))
}

fn parse_lsn(text: &str) -> Result<Lsn, SourceError> {
    text.parse()
        .map_err(|_| SourceError::Protocol(format!("bad LSN {text:?} from the leader")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_replication_quotes_values() {
        let sql = start_replication_command(
            "pgsieve_a",
            Lsn(0x1_0000_00AB),
            &[("proto_version", "2"), ("publication_names", "\"it's\"")],
        )
        .unwrap();
        assert_eq!(
            sql,
            "START_REPLICATION SLOT pgsieve_a LOGICAL 1/AB (proto_version '2', publication_names '\"it''s\"')"
        );
        assert_eq!(
            start_replication_command("s", Lsn::ZERO, &[]).unwrap(),
            "START_REPLICATION SLOT s LOGICAL 0/0"
        );
    }

    #[test]
    fn rejects_unsafe_names() {
        assert!(check_slot_name("Bad").is_err());
        assert!(check_slot_name("a'; DROP").is_err());
        assert!(check_slot_name(&"a".repeat(64)).is_err());
        assert!(check_slot_name("pgsieve_1").is_ok());
        assert!(start_replication_command("s", Lsn::ZERO, &[("x) y", "1")]).is_err());
    }
}
