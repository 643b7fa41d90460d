//! Read pacing: while messages keep coming, let the kernel gather a burst
//! before it wakes the reader.
//!
//! Why: on a streaming session the walsender sends every pgoutput message as
//! its own `send()`. When the reader has drained the socket and sleeps in
//! `epoll_wait`, each of those sends also wakes it, and that wakeup is paid
//! on the walsender's CPU (on loopback, the receiving side runs in the
//! sender's system call). A reader faster than the walsender thus makes the
//! walsender slower: measured on the plain-table W1, its CPU per transaction
//! rose with the reader's speed. `SO_RCVLOWAT` tells TCP not to signal
//! readability below a byte count, so while a backlog drains the reader wakes
//! once per burst instead of once per message (ARCHITECTURE.md, "Data flow").
//!
//! A quiet stream must not wait for a burst that never comes: a read in burst
//! mode waits at most [`PATIENCE`], then the low-water mark drops back to one
//! byte (which signals at once when anything is there) and the next read is
//! an ordinary one. So a lone transaction on an idle stream is read as soon as
//! it arrives, and one arriving right behind another waits at most
//! [`PATIENCE`].

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

/// Bytes TCP gathers before it wakes a reader in burst mode.
const BURST_BYTES: usize = 8 * 1024;

/// Longest a read in burst mode waits for [`BURST_BYTES`].
const PATIENCE: Duration = Duration::from_millis(1);

/// The read side's low-water mark, switched between one byte (a read wakes
/// at the first byte) and [`BURST_BYTES`].
#[derive(Debug, Default)]
pub(crate) struct ReadPacing {
    /// A duplicate of the TCP socket's descriptor (`None`: Unix socket, test
    /// stream, or pacing not wanted): options set through it apply to the
    /// socket the reader reads.
    socket: Option<OwnedFd>,
    is_bursting: bool,
}

impl ReadPacing {
    /// Pacing over `socket` (a duplicate of the connection's TCP socket).
    pub(crate) fn new(socket: Option<OwnedFd>) -> Self {
        let socket = socket.filter(|_| kernel_signals_lowered_low_water());
        ReadPacing {
            socket,
            is_bursting: false,
        }
    }

    /// How long the next read may wait for data: `None` for no limit.
    pub(crate) fn patience(&self) -> Option<Duration> {
        self.is_bursting.then_some(PATIENCE)
    }

    /// A read returned data: more is likely right behind it, so wait for a
    /// burst next time.
    pub(crate) fn after_read(&mut self) {
        if !self.is_bursting {
            self.set_bursting(true);
        }
    }

    /// A read in burst mode ran out of patience: take whatever is there.
    pub(crate) fn after_timeout(&mut self) {
        self.set_bursting(false);
    }

    fn set_bursting(&mut self, bursting: bool) {
        let Some(socket) = &self.socket else {
            return;
        };
        let bytes = if bursting { BURST_BYTES } else { 1 };
        match set_receive_low_water(socket, bytes) {
            Ok(()) => self.is_bursting = bursting,
            Err(e) => {
                // Not fatal: reads stay ordinary ones.
                tracing::debug!(error = %e, "SO_RCVLOWAT refused; read pacing off");
                self.socket = None;
                self.is_bursting = false;
            }
        }
    }
}

/// `setsockopt(SO_RCVLOWAT)`. Lowering it makes TCP signal readability at
/// once if enough bytes are queued (Linux `tcp_set_rcvlowat`), so a waiting
/// read is not stranded by the switch.
fn set_receive_low_water(socket: &OwnedFd, bytes: usize) -> std::io::Result<()> {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    #[allow(unsafe_code)]
    // SAFETY: the descriptor is open (owned here) and the option value is a
    // c_int on the stack whose size is passed along.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            std::ptr::from_ref(&value).cast(),
            libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>()).unwrap_or(4),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Whether lowering `SO_RCVLOWAT` wakes a reader when enough bytes are
/// already queued: Linux 4.18 and later (`tcp_set_rcvlowat`). On an older
/// kernel a read could sit on queued bytes until more arrive, so pacing
/// stays off there, as on any other system.
/// Read once per process: the kernel does not change under a running session.
fn kernel_signals_lowered_low_water() -> bool {
    static SIGNALS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SIGNALS.get_or_init(|| {
        let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
            return false;
        };
        let mut numbers = release
            .trim()
            .split(|c: char| !c.is_ascii_digit())
            .map(|part| part.parse::<u32>().unwrap_or(0));
        let major = numbers.next().unwrap_or(0);
        let minor = numbers.next().unwrap_or(0);
        (major, minor) >= (4, 18)
    })
}
