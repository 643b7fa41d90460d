/*!
Where the tap's pgoutput messages come from, and the model they are judged by.

- **Live**: a TEMPORARY slot `pgsieve_tap_<pid>` created with an exported
  snapshot; the model is built from the leader's tables in that snapshot (an
  SQL session imports it), then `START_REPLICATION` (proto 2, streaming on,
  messages on) from the slot's consistent point. The slot disappears with the
  connection; the production slot is never touched. Status updates confirm
  each printed commit so the leader does not retain WAL for the tap.
- **Capture** (`--input FILE`): lines `LSN XID HEX` as printed by
  `psql -AtF ' '` over `pg_logical_slot_peek_binary_changes` (README). The model
  is the leader's *current* one when the leader is reachable, else none.
*/

use std::io::BufRead;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use pgsieve_filters::Model;
use pgsieve_protocol::frame::{ReplicationMessage, StandbyStatusUpdate};
use pgsieve_protocol::{Lsn, PgTimestamp};
use tokio_postgres::Client;

use super::TapError;
use crate::bootstrap::model_from_tables;
use crate::config::Config;
use crate::conn::connect_sql;
use crate::source::{
    ReplicationConnection, ReplicationStream, SnapshotAction, SourceConfig, StatusSender,
};

/// How often the live source reports progress even when the leader does not ask.
const STATUS_INTERVAL: Duration = Duration::from_secs(10);

/// One item from a source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// One pgoutput message and the WAL position it was sent at.
    Data {
        /// XLogData WAL start (capture: the `lsn` column).
        lsn: Lsn,
        /// The pgoutput message.
        data: Bytes,
    },
    /// The leader is alive and has nothing more for now.
    Keepalive,
}

/// What an opened source brings along.
pub struct Opened {
    /// The frames.
    pub source: TapSource,
    /// The model to judge by; `None` when it could not be built.
    pub model: Option<Model>,
    /// An SQL session on the leader, for effect version counts.
    pub leader: Option<Arc<Client>>,
    /// Where the model came from, in words (printed on stderr).
    pub model_origin: String,
}

/// A live slot or a capture file.
pub enum TapSource {
    /// Streaming from a temporary slot.
    Live(Box<LiveSource>),
    /// Reading a capture.
    Capture(CaptureSource),
}

impl TapSource {
    /// The next frame; `None` at the end of a capture (or of the stream).
    pub async fn next(&mut self) -> Result<Option<Frame>, TapError> {
        match self {
            TapSource::Live(live) => live.next().await,
            TapSource::Capture(capture) => capture.next(),
        }
    }

    /// Everything up to `end_lsn` has been printed: the slot may release it.
    pub fn confirm(&mut self, end_lsn: Lsn) {
        if let TapSource::Live(live) = self {
            live.confirmed = live.confirmed.max(end_lsn);
        }
    }
}

/// The live replication stream of the tap's temporary slot.
pub struct LiveSource {
    stream: ReplicationStream,
    status: StatusSender,
    confirmed: Lsn,
    last_status: Instant,
    last_received: Lsn,
}

impl LiveSource {
    async fn next(&mut self) -> Result<Option<Frame>, TapError> {
        let Some(payload) = self.stream.next_copy_data().await? else {
            return Ok(None);
        };
        let frame = match ReplicationMessage::parse(payload) {
            Ok(ReplicationMessage::XLogData(x)) => {
                self.last_received = self.last_received.max(x.wal_start);
                Frame::Data {
                    lsn: x.wal_start,
                    data: x.data,
                }
            }
            Ok(ReplicationMessage::PrimaryKeepalive(k)) => {
                if k.reply_requested {
                    self.send_status().await?;
                }
                Frame::Keepalive
            }
            Err(source) => {
                return Err(TapError::Frame {
                    after: self.last_received,
                    source,
                });
            }
        };
        if self.last_status.elapsed() >= STATUS_INTERVAL {
            self.send_status().await?;
        }
        Ok(Some(frame))
    }

    async fn send_status(&mut self) -> Result<(), TapError> {
        let update = StandbyStatusUpdate {
            write: self.confirmed,
            flush: self.confirmed,
            apply: self.confirmed,
            client_time: PgTimestamp::now(),
            reply_requested: false,
        };
        let mut buf = BytesMut::with_capacity(34);
        update.encode(&mut buf);
        self.status.send_copy_data(buf.freeze()).await?;
        self.last_status = Instant::now();
        Ok(())
    }
}

/// Name of the tap's temporary slot.
pub fn tap_slot_name() -> String {
    format!("pgsieve_tap_{}", std::process::id())
}

fn sql_err(what: &str) -> impl FnOnce(tokio_postgres::Error) -> TapError + '_ {
    move |source| TapError::Sql {
        what: what.to_owned(),
        source,
    }
}

/// Creates the temporary slot, builds the model in its snapshot and starts streaming.
pub async fn open_live(config: &Config) -> Result<Opened, TapError> {
    let mut source = SourceConfig::new(config.leader.pg.clone());
    source.application_name = "pgsieve-tap".into();
    let mut repl = ReplicationConnection::connect(&source).await?;
    let slot = tap_slot_name();
    let created = repl
        .create_slot(&slot, true, SnapshotAction::Export)
        .await?;
    let snapshot = created.snapshot_name.clone().ok_or_else(|| {
        TapError::Setup("the leader exported no snapshot for the tap slot".into())
    })?;
    let leader = connect_sql(&config.leader.pg, "the leader").await?;
    leader
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{snapshot}'"
        ))
        .await
        .map_err(sql_err("importing the tap slot's snapshot on the leader"))?;
    let specs = config.replica_sets().0;
    let model = model_from_tables(&leader, specs).await?;
    leader
        .batch_execute("COMMIT")
        .await
        .map_err(sql_err("ending the snapshot transaction"))?;

    let (stream, status) = repl
        .start_pgoutput(&slot, created.consistent_point, &config.leader.publication)
        .await?;
    Ok(Opened {
        source: TapSource::Live(Box::new(LiveSource {
            stream,
            status,
            confirmed: created.consistent_point,
            last_status: Instant::now(),
            last_received: created.consistent_point,
        })),
        model: Some(model),
        leader: Some(leader),
        model_origin: format!(
            "temporary slot {slot} from {}; model from the leader at that point",
            created.consistent_point
        ),
    })
}

/// Opens a capture file; the model is the leader's current one if reachable.
pub async fn open_capture(config: &Config, path: &Path) -> Result<Opened, TapError> {
    let file = std::fs::File::open(path).map_err(|source| TapError::Io {
        what: format!("opening capture {}", path.display()),
        source,
    })?;
    let capture = CaptureSource {
        lines: std::io::BufReader::new(file),
        line_no: 0,
        path: path.display().to_string(),
    };
    let (model, leader, model_origin) = match connect_sql(&config.leader.pg, "the leader").await {
        Ok(leader) => {
            leader
                .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .await
                .map_err(sql_err("reading the leader's model tables"))?;
            let specs = config.replica_sets().0;
            let model = model_from_tables(&leader, specs).await?;
            leader
                .batch_execute("COMMIT")
                .await
                .map_err(sql_err("reading the leader's model tables"))?;
            (
                Some(model),
                Some(leader),
                "model from the leader's current tables (exact when no grant changed since the capture started)".to_owned(),
            )
        }
        Err(e) => {
            tracing::warn!(error = %e, "Leader unreachable: decisions on secrets rows say \"model unavailable\".");
            (None, None, "no model: the leader is unreachable".to_owned())
        }
    };
    Ok(Opened {
        source: TapSource::Capture(capture),
        model,
        leader,
        model_origin,
    })
}

/// A capture file being read line by line.
pub struct CaptureSource {
    lines: std::io::BufReader<std::fs::File>,
    line_no: usize,
    path: String,
}

impl CaptureSource {
    fn next(&mut self) -> Result<Option<Frame>, TapError> {
        let mut line = String::new();
        loop {
            line.clear();
            let read = self
                .lines
                .read_line(&mut line)
                .map_err(|source| TapError::Io {
                    what: format!("reading capture {}", self.path),
                    source,
                })?;
            if read == 0 {
                return Ok(None);
            }
            self.line_no += 1;
            let text = line.trim_end_matches(['\n', '\r']);
            if text.trim().is_empty() {
                continue;
            }
            return parse_capture_line(text)
                .map(|(lsn, data)| Some(Frame::Data { lsn, data }))
                .map_err(|what| TapError::Capture {
                    path: self.path.clone(),
                    line: self.line_no,
                    what,
                });
        }
    }
}

/// Parses `LSN XID HEX` (XID may be empty); the XID is not needed (the
/// messages carry what matters), the LSN and bytes are.
pub fn parse_capture_line(text: &str) -> Result<(Lsn, Bytes), String> {
    let mut parts = text.splitn(3, ' ');
    let lsn = parts.next().unwrap_or_default();
    let _xid = parts.next().ok_or("expected `LSN XID HEX`")?;
    let hex = parts.next().ok_or("expected `LSN XID HEX`")?;
    let lsn: Lsn = lsn.parse().map_err(|_| format!("{lsn:?} is not an LSN"))?;
    let hex = hex.trim();
    let hex = hex.strip_prefix("\\x").unwrap_or(hex).as_bytes();
    if hex.is_empty() || hex.len() % 2 != 0 {
        return Err("the message bytes must be a non-empty even number of hex digits".into());
    }
    let digit = |c: u8| -> Result<u8, String> {
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err(format!("{:?} is not a hex digit", char::from(c))),
        }
    };
    let bytes = hex
        .chunks_exact(2)
        .map(|pair| match pair {
            [hi, lo] => Ok(digit(*hi)? << 4 | digit(*lo)?),
            _ => Err("odd hex".to_owned()),
        })
        .collect::<Result<Vec<u8>, String>>()?;
    Ok((lsn, Bytes::from(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capture_lines_parse() {
        let (lsn, data) = parse_capture_line("0/1A2B 742 4201ff").unwrap_or_default();
        assert_eq!(lsn, Lsn(0x1A2B));
        assert_eq!(&data[..], &[0x42, 0x01, 0xff]);
        // Non-transactional messages have no xid.
        let (_, data) = parse_capture_line("0/10  4d00").unwrap_or_default();
        assert_eq!(&data[..], &[0x4d, 0x00]);
    }

    #[test]
    fn bad_capture_lines_are_errors() {
        assert!(parse_capture_line("0/10 1").is_err());
        assert!(parse_capture_line("zz 1 00").is_err());
        assert!(parse_capture_line("0/10 1 0g").is_err());
        assert!(parse_capture_line("0/10 1 012").is_err());
    }
}
