//! On-disk spool of one streamed transaction.
//!
//! Chunks of a large transaction arrive long before its commit, interleaved
//! with other transactions. Each change message is appended here as raw
//! pgoutput bytes (length-prefixed) and replayed at Stream Commit. A
//! subtransaction abort truncates the file back to where that subtransaction
//! began: its changes, and those of subtransactions nested in it, are always
//! the file's tail when the abort is streamed (this is how PostgreSQL's own
//! apply worker handles it).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use bytes::Bytes;

/// The spooled changes of one top-level streamed transaction.
#[derive(Debug)]
pub struct Spool {
    xid: u32,
    writer: BufWriter<File>,
    len: u64,
    messages: u64,
    /// First offset of each subtransaction that spooled something.
    subxact_start: HashMap<u32, u64>,
}

impl Spool {
    /// A new, empty spool file in `dir` (removed from the directory at once;
    /// it lives as long as this value).
    pub fn create(dir: &Path, xid: u32) -> io::Result<Spool> {
        let file = tempfile::tempfile_in(dir)?;
        Ok(Spool {
            xid,
            writer: BufWriter::with_capacity(256 * 1024, file),
            len: 0,
            messages: 0,
            subxact_start: HashMap::new(),
        })
    }

    /// Top-level xid of the transaction.
    pub fn xid(&self) -> u32 {
        self.xid
    }

    /// Number of spooled messages.
    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.len
    }

    /// Appends one message of (sub)transaction `subxid`.
    pub fn append(&mut self, subxid: u32, message: &[u8]) -> io::Result<()> {
        if subxid != self.xid {
            self.subxact_start.entry(subxid).or_insert(self.len);
        }
        let len = u32::try_from(message.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message over 4 GiB"))?;
        self.writer.write_all(&len.to_be_bytes())?;
        self.writer.write_all(message)?;
        self.len += 4 + u64::from(len);
        self.messages += 1;
        Ok(())
    }

    /// Drops the changes of subtransaction `subxid` and of every
    /// subtransaction that started after it.
    pub fn abort_subxact(&mut self, subxid: u32) -> io::Result<()> {
        let Some(&start) = self.subxact_start.get(&subxid) else {
            return Ok(());
        };
        self.writer.flush()?;
        let file = self.writer.get_mut();
        file.set_len(start)?;
        file.seek(SeekFrom::Start(start))?;
        self.len = start;
        self.subxact_start.retain(|_, offset| *offset < start);
        // The message count is only informative; recount lazily on replay.
        Ok(())
    }

    /// Turns the spool into a reader over its messages, in order.
    pub fn into_replay(self) -> io::Result<SpoolReplay> {
        let mut file = self.writer.into_inner().map_err(|e| e.into_error())?;
        file.seek(SeekFrom::Start(0))?;
        Ok(SpoolReplay {
            reader: BufReader::with_capacity(256 * 1024, file),
            remaining: self.len,
        })
    }
}

/// Sequential reader of a finished spool.
#[derive(Debug)]
pub struct SpoolReplay {
    reader: BufReader<File>,
    remaining: u64,
}

impl SpoolReplay {
    /// The next message, or `None` at the end.
    pub fn next_message(&mut self) -> io::Result<Option<Bytes>> {
        if self.remaining == 0 {
            return Ok(None);
        }
        let mut len = [0u8; 4];
        self.reader.read_exact(&mut len)?;
        let len = u32::from_be_bytes(len) as usize;
        let mut body = vec![0u8; len];
        self.reader.read_exact(&mut body)?;
        self.remaining = self.remaining.saturating_sub(4 + len as u64);
        Ok(Some(Bytes::from(body)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replay_all(spool: Spool) -> Vec<Vec<u8>> {
        let mut replay = spool.into_replay().unwrap();
        let mut out = Vec::new();
        while let Some(m) = replay.next_message().unwrap() {
            out.push(m.to_vec());
        }
        out
    }

    #[test]
    fn replays_in_order() {
        let mut spool = Spool::create(&std::env::temp_dir(), 7).unwrap();
        spool.append(7, b"one").unwrap();
        spool.append(7, b"").unwrap();
        spool.append(7, b"three").unwrap();
        assert_eq!(
            replay_all(spool),
            vec![b"one".to_vec(), vec![], b"three".to_vec()]
        );
    }

    #[test]
    fn subxact_abort_drops_it_and_later_subxacts_only() {
        let mut spool = Spool::create(&std::env::temp_dir(), 7).unwrap();
        spool.append(7, b"top-1").unwrap();
        spool.append(8, b"sub8").unwrap();
        spool.append(9, b"sub9-nested").unwrap();
        spool.abort_subxact(8).unwrap();
        spool.append(7, b"top-2").unwrap();
        spool.append(10, b"sub10").unwrap();
        spool.abort_subxact(11).unwrap(); // never spooled: no-op
        assert_eq!(
            replay_all(spool),
            vec![b"top-1".to_vec(), b"top-2".to_vec(), b"sub10".to_vec()]
        );
    }
}
