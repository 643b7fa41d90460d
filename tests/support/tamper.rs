//! A man in the middle between pgsieve and one PostgreSQL server, for the
//! bad-input tests: it forwards every connection message by message and
//! rewrites only what its [`Tamper`] asks for, so pgsieve meets input no
//! real server sends (a tuple of the wrong width, an unknown relation, an
//! origin position that is not an LSN) while everything else is real: the
//! leader, its slot, the follower.
//!
//! It refuses TLS (answers `N` to `SSLRequest`), as a server without TLS
//! does, so it can read the messages.

use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use pgsieve_protocol::Lsn;
use pgsieve_protocol::pgoutput::{LogicalMessage, ParseContext};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

/// Rewrites one pgoutput message: `Some` replaces it, `None` forwards it.
pub type Rewrite = dyn Fn(&LogicalMessage) -> Option<LogicalMessage> + Send + Sync;

/// What the man in the middle changes.
pub enum Tamper {
    /// Each pgoutput message a walsender streams (in XLogData) goes through
    /// the function.
    Pgoutput(Box<Rewrite>),
    /// The first row answering a query whose text contains `query` becomes
    /// one row with the single value `value`.
    Answer {
        /// Part of the query text.
        query: &'static str,
        /// The value the row carries instead.
        value: &'static str,
    },
}

/// Where a pgoutput message was replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tampered {
    /// WAL start of the XLogData that carried it.
    pub wal_start: Lsn,
    /// Commit LSN of its transaction (from the last Begin).
    pub commit_lsn: Lsn,
}

#[derive(Default)]
struct Seen {
    /// Final LSN of the last Begin streamed.
    commit_lsn: Lsn,
    /// Every replaced pgoutput message.
    tampered: Vec<Tampered>,
    /// Rows replaced by [`Tamper::Answer`].
    answers: usize,
}

/// A running man in the middle; stops on drop.
pub struct Mitm {
    port: u16,
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl Mitm {
    /// Listens on a free loopback port and relays each connection to
    /// 127.0.0.1:`upstream`.
    pub async fn start(upstream: u16, tamper: Tamper) -> Mitm {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("local address").port();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let tamper = Arc::new(tamper);
        let shared = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (tamper, seen) = (tamper.clone(), shared.clone());
                tokio::spawn(async move {
                    let _ = relay(client, upstream, tamper, seen).await;
                });
            }
        });
        Mitm { port, seen, task }
    }

    /// The port to connect to instead of the server's.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The pgoutput messages replaced so far.
    pub fn tampered(&self) -> Vec<Tampered> {
        self.seen.lock().expect("lock").tampered.clone()
    }

    /// The rows replaced so far by [`Tamper::Answer`].
    pub fn answers(&self) -> usize {
        self.seen.lock().expect("lock").answers
    }
}

impl Drop for Mitm {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `url` with its port replaced by `port` (`…@host:PORT/db`).
pub fn with_port(url: &str, port: u16) -> String {
    let (head, tail) = url.rsplit_once(':').expect("url with a port");
    let rest = tail.find('/').map_or("", |i| &tail[i..]);
    format!("{head}:{port}{rest}")
}

const SSL_REQUEST: i32 = 80_877_103;
const GSSENC_REQUEST: i32 = 80_877_104;

async fn relay(
    mut client: TcpStream,
    upstream: u16,
    tamper: Arc<Tamper>,
    seen: Arc<Mutex<Seen>>,
) -> std::io::Result<()> {
    // The untyped startup phase: refuse encryption, forward the startup packet.
    let startup = loop {
        let len = client.read_i32().await?;
        let mut body = vec![0; usize::try_from(len - 4).unwrap_or(0)];
        client.read_exact(&mut body).await?;
        let code = body
            .get(..4)
            .map_or(0, |b| i32::from_be_bytes(b.try_into().unwrap_or_default()));
        if code == SSL_REQUEST || code == GSSENC_REQUEST {
            client.write_all(b"N").await?;
            continue;
        }
        let mut packet = len.to_be_bytes().to_vec();
        packet.extend_from_slice(&body);
        break packet;
    };
    let mut server = TcpStream::connect(("127.0.0.1", upstream)).await?;
    server.write_all(&startup).await?;
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let up = {
        let (tamper, armed) = (tamper.clone(), armed.clone());
        async move {
            while let Some((tag, body)) = read_message(&mut cr).await? {
                if let (Tamper::Answer { query, .. }, b'P') = (tamper.as_ref(), tag) {
                    if body.windows(query.len()).any(|w| w == query.as_bytes()) {
                        armed.store(true, std::sync::atomic::Ordering::SeqCst);
                    }
                }
                write_message(&mut sw, tag, &body).await?;
            }
            Ok::<_, std::io::Error>(())
        }
    };
    let down = async move {
        while let Some((tag, body)) = read_message(&mut sr).await? {
            let body = match (tamper.as_ref(), tag) {
                (Tamper::Pgoutput(rewrite), b'd') => rewrite_xlog(body, rewrite, &seen),
                (Tamper::Answer { value, .. }, b'D')
                    if armed.swap(false, std::sync::atomic::Ordering::SeqCst) =>
                {
                    seen.lock().expect("lock").answers += 1;
                    let mut row = 1i16.to_be_bytes().to_vec();
                    row.extend_from_slice(&i32::try_from(value.len()).unwrap_or(0).to_be_bytes());
                    row.extend_from_slice(value.as_bytes());
                    row
                }
                _ => body,
            };
            write_message(&mut cw, tag, &body).await?;
        }
        Ok::<_, std::io::Error>(())
    };
    tokio::select! {
        r = up => r,
        r = down => r,
    }
}

/// Replaces the pgoutput message of an XLogData (`'w'`) CopyData body when
/// `rewrite` says so.
fn rewrite_xlog(body: Vec<u8>, rewrite: &Rewrite, seen: &Mutex<Seen>) -> Vec<u8> {
    const HEADER: usize = 25;
    if body.first() != Some(&b'w') || body.len() <= HEADER {
        return body;
    }
    let payload = Bytes::copy_from_slice(&body[HEADER..]);
    let context = ParseContext {
        in_stream: false,
        parallel_abort: false,
    };
    let Ok(message) = LogicalMessage::parse(payload, context) else {
        return body;
    };
    let mut seen = seen.lock().expect("lock");
    if let LogicalMessage::Begin(begin) = &message {
        seen.commit_lsn = begin.final_lsn;
    }
    let Some(replacement) = rewrite(&message) else {
        return body;
    };
    let wal_start = Lsn(u64::from_be_bytes(
        body[1..9].try_into().unwrap_or_default(),
    ));
    let commit_lsn = seen.commit_lsn;
    seen.tampered.push(Tampered {
        wal_start,
        commit_lsn,
    });
    let mut out = BytesMut::from(&body[..HEADER]);
    replacement.encode(&mut out);
    out.to_vec()
}

async fn read_message(r: &mut OwnedReadHalf) -> std::io::Result<Option<(u8, Vec<u8>)>> {
    let tag = match r.read_u8().await {
        Ok(tag) => tag,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    };
    let len = r.read_i32().await?;
    let mut body = vec![0; usize::try_from(len - 4).unwrap_or(0)];
    r.read_exact(&mut body).await?;
    Ok(Some((tag, body)))
}

async fn write_message(w: &mut OwnedWriteHalf, tag: u8, body: &[u8]) -> std::io::Result<()> {
    let len = i32::try_from(body.len() + 4).unwrap_or(i32::MAX);
    let mut frame = Vec::with_capacity(body.len() + 5);
    frame.push(tag);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(body);
    w.write_all(&frame).await
}
