/*!
`pgsieve tap`: the decoded stream with, per follower, where each change goes
and why, without applying anything.

Live, it reads a TEMPORARY slot of its own (`source.rs`) and judges every
change with the same filter stage and model as `pgsieve run`, built in the
slot's exported snapshot; with `--input FILE` it decodes a capture instead.
`session.rs` turns transactions into lines, `select.rs` decides which lines
print, `redact.rs` is the one place that hides secret values, `render.rs`
writes JSON or pretty text. The schema of the JSON lines is in the README.
*/

pub mod decide;
pub mod describe;
pub mod line;
pub mod redact;
pub mod render;
pub mod select;
pub mod session;
pub mod source;

use std::io::IsTerminal;
use std::path::PathBuf;

use pgsieve_filters::Model;
use pgsieve_protocol::{DecodeError, Lsn};
use tokio::sync::watch;

use crate::bootstrap::BootstrapError;
use crate::config::Config;
use crate::filter::{FilterStage, FilterStageError};
use crate::source::SourceError;
use crate::txn::AssembleError;

pub use render::TapFormat;
pub use select::Selection;

use decide::Targets;
use render::Renderer;
use session::{Flow, Session, SessionParts};
use source::Frame;

/// Everything `pgsieve tap` was asked for.
#[derive(Debug, Clone)]
pub struct TapOptions {
    /// Output format.
    pub format: TapFormat,
    /// Printing filters.
    pub selection: Selection,
    /// Print secret values instead of `<redacted N bytes>`.
    pub show_values: bool,
    /// Decode this capture instead of a live slot.
    pub input: Option<PathBuf>,
    /// Stop after this many printed transactions and non-transactional messages.
    pub limit: Option<u64>,
}

/// Why the tap stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The replication connection failed.
    #[error("leader: {0}")]
    Source(#[from] SourceError),
    /// An SQL session could not be opened.
    #[error(transparent)]
    Connect(#[from] crate::conn::ConnectError),
    /// An SQL statement failed.
    #[error("{what}: {source}")]
    Sql {
        /// Which step.
        what: String,
        /// The database error.
        source: tokio_postgres::Error,
    },
    /// The model could not be built.
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),
    /// The stream could not be assembled.
    #[error(transparent)]
    Assemble(#[from] AssembleError),
    /// The model rejected a change.
    #[error(transparent)]
    Filter(#[from] FilterStageError),
    /// A replication frame is malformed.
    #[error("malformed replication message after {after}: {source}")]
    Frame {
        /// Last WAL position received before it.
        after: Lsn,
        /// The decode error.
        source: DecodeError,
    },
    /// A capture line is malformed.
    #[error("capture {path} line {line}: {what}")]
    Capture {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        what: String,
    },
    /// Reading a file failed.
    #[error("{what}: {source}")]
    Io {
        /// Which file and step.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Writing the output failed.
    #[error("writing the tap output: {0}")]
    Output(std::io::Error),
    /// Anything else that makes the tap impossible.
    #[error("{0}")]
    Setup(String),
}

/// Runs the tap until the capture ends, `--limit` is reached, `shutdown`
/// turns true or stdout is closed.
pub async fn run(
    config: &Config,
    options: TapOptions,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), TapError> {
    let targets = Targets::from_config(config);
    let opened = match &options.input {
        Some(path) => source::open_capture(config, path).await?,
        None => source::open_live(config).await?,
    };
    eprintln!("pgsieve tap: {}", opened.model_origin);
    let stdout = std::io::stdout();
    let color = options.format == TapFormat::Pretty
        && stdout.is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let has_model = opened.model.is_some();
    let model = match opened.model {
        Some(model) => model,
        None => {
            let specs = config.replica_sets().0;
            Model::new(specs).map_err(BootstrapError::from)?
        }
    };
    let renderer = Renderer::new(
        options.format,
        color,
        targets.0.iter().map(|t| t.follower.as_str()),
    );
    let mut session = Session::new(
        std::io::BufWriter::new(stdout.lock()),
        SessionParts {
            renderer,
            selection: options.selection.clone(),
            targets,
            show_values: options.show_values,
            filter: FilterStage::new(model, pgsieve_protocol::Lsn::ZERO),
            has_model,
            leader: opened.leader,
            spool_dir: config.apply.spool_dir.clone(),
            limit: options.limit,
        },
    );
    let mut source = opened.source;
    let result = async {
        loop {
            let frame = tokio::select! {
                biased;
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        return Ok(());
                    }
                    continue;
                }
                frame = source.next() => frame?,
            };
            match frame {
                None => return Ok(()),
                Some(Frame::Keepalive) => session.flush()?,
                Some(Frame::Data { lsn, data }) => {
                    let flow = session.handle(lsn, data).await?;
                    source.confirm(session.last_end());
                    if flow == Flow::Stop {
                        return Ok(());
                    }
                }
            }
        }
    }
    .await;
    let result = result.and_then(|()| session.flush());
    match result {
        // `pgsieve tap | head` closing the pipe is a normal way to stop.
        Err(TapError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}
