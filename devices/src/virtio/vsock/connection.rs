//! One vsock connection: its host stream, its state and the credit of both sides.
//!
//! Counters are the spec's wrapping u32s. For guest-to-host data the device is the
//! receiver: `rx_cnt` counts bytes the guest sent, `fwd_cnt` those handed to the host
//! stream; the difference waits in `to_host`, never more than [`CONN_BUF_ALLOC`].
//! For host-to-guest data the device is the sender: `tx_cnt` counts bytes sent, and
//! the guest's `buf_alloc` and `fwd_cnt` (from any packet it sends) bound how many
//! more it may send.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use thiserror::Error;

use super::packet::Header;
use super::{CONN_BUF_ALLOC, CREDIT_UPDATE_THRESHOLD};

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnState {
    /// Host-initiated: the REQUEST is sent, the guest's RESPONSE awaited.
    Connecting,
    /// Data flows.
    Established,
    /// Going away: the host stream ended (a SHUTDOWN was sent, the guest's RST is
    /// awaited) or the guest shut down (buffered data still goes to the host). Ends
    /// at the connection's deadline at the latest, unless guest data still waits
    /// for the host stream: the host decides how fast it reads, and if it goes away
    /// the hang-up watch ends the connection.
    Closing,
}

/// How a connection's stream is in the device's outer epoll set (see [`super::muxer`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outer {
    /// Not in it: the stream is read (the inner set reports its end as EOF), or its
    /// hang-up would tell nothing new (see [`Connection::watches_hangup`]).
    Absent,
    /// With interest 0: only a full hang-up (EPOLLHUP) or an error (EPOLLERR).
    HangUp,
    /// EPOLLOUT: bytes wait for the stream (a hang-up or error is reported too).
    Write,
}

/// Why a connection must be reset.
#[derive(Debug, Error)]
pub enum ConnError {
    /// The guest sent more than the credit it was given.
    #[error("The guest sent {len} bytes with only {free} bytes of credit")]
    CreditExceeded {
        /// Bytes in the packet.
        len: usize,
        /// Credit left.
        free: u32,
    },
    /// The host stream failed.
    #[error("The host stream failed")]
    Io(#[source] io::Error),
}

/// A connection between a guest port and a host Unix stream.
#[derive(Debug)]
pub struct Connection {
    stream: UnixStream,
    /// The host-side port.
    pub local_port: u32,
    /// The guest-side port.
    pub peer_port: u32,
    /// Its state.
    pub state: ConnState,
    rx_cnt: u32,
    fwd_cnt: u32,
    last_fwd_cnt_sent: u32,
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    tx_cnt: u32,
    /// Bytes for the host stream; the first `uncounted` are the device's own (the
    /// `OK` line) and do not count in `fwd_cnt`.
    to_host: VecDeque<u8>,
    uncounted: usize,
    /// The guest will send nothing more: shut the stream's write side once flushed.
    pub peer_shut_send: bool,
    /// The guest will take nothing more: stop reading the stream.
    pub peer_shut_rcv: bool,
    host_write_shut: bool,
    /// A CREDIT_REQUEST went out and no credit came back since.
    pub credit_request_sent: bool,
    /// A CREDIT_UPDATE waits in the control backlog.
    pub credit_update_queued: bool,
    /// When a closing connection is reset at the latest.
    pub deadline: Option<Instant>,

    /// The stream is in the device's read set.
    pub in_read_set: bool,
    /// How the stream is in the device's outer set.
    pub outer: Outer,
}

impl Connection {
    /// A connection in `state` over `stream` (nonblocking).
    pub fn new(stream: UnixStream, local_port: u32, peer_port: u32, state: ConnState) -> Self {
        Connection {
            stream,
            local_port,
            peer_port,
            state,
            rx_cnt: 0,
            fwd_cnt: 0,
            last_fwd_cnt_sent: 0,
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            tx_cnt: 0,
            to_host: VecDeque::new(),
            uncounted: 0,
            peer_shut_send: false,
            peer_shut_rcv: false,
            host_write_shut: false,
            credit_request_sent: false,
            credit_update_queued: false,
            deadline: None,
            in_read_set: false,
            outer: Outer::Absent,
        }
    }

    /// The host stream's fd.
    pub fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    /// Takes the guest's credit from any packet it sent on this connection.
    pub fn update_peer_credit(&mut self, header: &Header) {
        if header.buf_alloc != self.peer_buf_alloc || header.fwd_cnt != self.peer_fwd_cnt {
            self.credit_request_sent = false;
        }
        self.peer_buf_alloc = header.buf_alloc;
        self.peer_fwd_cnt = header.fwd_cnt;
    }

    /// Bytes the guest can take now.
    pub fn peer_credit(&self) -> u32 {
        let in_flight = self.tx_cnt.wrapping_sub(self.peer_fwd_cnt);
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Whether the device wants to read the host stream now.
    pub fn wants_read(&self) -> bool {
        self.state == ConnState::Established && !self.peer_shut_rcv && self.peer_credit() > 0
    }

    /// Whether bytes wait for the host stream.
    pub fn wants_write(&self) -> bool {
        !self.to_host.is_empty()
    }

    /// Whether the device must watch the stream for a full hang-up of its host peer
    /// (EPOLLHUP: the peer closed its end or shut down both directions), the only way
    /// it would learn of it: the stream is not read ([`Self::wants_read`] false: no
    /// credit, the guest shut its receive side, or not yet established). Not once
    /// the stream ended for the device: a closing connection read the host's EOF
    /// (nothing is left to learn) or has only the guest's last bytes to flush (under
    /// EPOLLOUT, which reports a hang-up too); and after the device shut the
    /// stream's write side a peer's `shutdown(SHUT_WR)` alone gives EPOLLHUP, so a
    /// hang-up means no more than the EOF that reading the stream reports.
    pub fn watches_hangup(&self) -> bool {
        self.state != ConnState::Closing && !self.host_write_shut && !self.wants_read()
    }

    /// How the stream should be in the outer set now.
    pub fn wanted_outer(&self) -> Outer {
        if self.wants_write() {
            Outer::Write
        } else if self.watches_hangup() {
            Outer::HangUp
        } else {
            Outer::Absent
        }
    }

    /// Whether the guest's credit ran out and it has not been asked for more yet.
    pub fn needs_credit_request(&self) -> bool {
        self.state == ConnState::Established
            && !self.peer_shut_rcv
            && self.peer_credit() == 0
            && !self.credit_request_sent
    }

    /// Guest data for the host stream: written at once as far as the stream takes
    /// it, the rest buffered. Refused past the guest's credit.
    pub fn receive_data(&mut self, data: &[u8]) -> Result<(), ConnError> {
        let buffered = self.rx_cnt.wrapping_sub(self.fwd_cnt);
        let free = CONN_BUF_ALLOC.saturating_sub(buffered);
        let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
        if len > free {
            return Err(ConnError::CreditExceeded {
                len: data.len(),
                free,
            });
        }
        self.rx_cnt = self.rx_cnt.wrapping_add(len);
        self.to_host.extend(data);
        self.flush()
    }

    /// Sends the device's own bytes (the `OK` line, not guest data) to the host
    /// stream, before any guest data: refused once guest data is queued, since
    /// they would not count in `fwd_cnt` from the front of the buffer.
    pub fn push_own_bytes(&mut self, bytes: &[u8]) -> Result<(), ConnError> {
        if !self.to_host.is_empty() {
            return Err(ConnError::Io(io::Error::other(
                "the device's own bytes would follow guest data",
            )));
        }
        self.to_host.extend(bytes);
        self.uncounted = bytes.len();
        self.flush()
    }

    /// Writes what is buffered to the host stream until it is empty or the stream
    /// is full; shuts the stream's write side once flushed if the guest asked.
    pub fn flush(&mut self) -> Result<(), ConnError> {
        while !self.to_host.is_empty() {
            let (front, _) = self.to_host.as_slices();
            match self.stream.write(front) {
                Ok(0) => return Err(ConnError::Io(io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    self.to_host.drain(..n);

                    let own = n.min(self.uncounted);
                    self.uncounted -= own;
                    // n - own <= CONN_BUF_ALLOC.
                    let counted = u32::try_from(n - own).unwrap_or(u32::MAX);
                    self.fwd_cnt = self.fwd_cnt.wrapping_add(counted);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ConnError::Io(e)),
            }
        }
        if self.peer_shut_send && !self.host_write_shut {
            self.host_write_shut = true;
            // The peer may have gone already; nothing to do about it here.
            let _ = self.stream.shutdown(Shutdown::Write);
        }
        Ok(())
    }

    /// Reads host bytes for the guest into `buf`.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf)
    }

    /// Counts `len` bytes sent to the guest.
    pub fn record_sent(&mut self, len: u32) {
        self.tx_cnt = self.tx_cnt.wrapping_add(len);
    }

    /// Puts the device's credit in a header about to go to the guest.
    pub fn fill_credit(&mut self, header: &mut Header) {
        header.buf_alloc = CONN_BUF_ALLOC;
        header.fwd_cnt = self.fwd_cnt;
        self.last_fwd_cnt_sent = self.fwd_cnt;
    }

    /// Whether the guest probably waits for credit the device has freed since it
    /// last told it: the space the guest believes free is below the threshold.
    pub fn needs_credit_update(&self) -> bool {
        let believed_used = self.rx_cnt.wrapping_sub(self.last_fwd_cnt_sent);
        let believed_free = CONN_BUF_ALLOC.saturating_sub(believed_used);
        believed_free < CREDIT_UPDATE_THRESHOLD && self.fwd_cnt != self.last_fwd_cnt_sent
    }

    /// Guest bytes waiting for the host stream.
    pub fn buffered(&self) -> usize {
        self.to_host.len().saturating_sub(self.uncounted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> (Connection, UnixStream) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        (Connection::new(ours, 1, 2, ConnState::Established), theirs)
    }

    #[test]
    fn peer_credit_wraps_like_the_spec_counters() {
        let (mut c, _peer) = conn();
        c.tx_cnt = 5;
        c.update_peer_credit(&Header {
            buf_alloc: 100,
            fwd_cnt: u32::MAX - 4,
            ..Header::default()
        });

        // 10 bytes in flight across the wrap.
        assert_eq!(c.peer_credit(), 90);
        c.record_sent(90);
        assert_eq!(c.peer_credit(), 0);
        assert!(c.needs_credit_request());
        assert!(!c.wants_read());
    }

    #[test]
    fn peer_credit_bogus_fwd_cnt_gives_none() {
        let (mut c, _peer) = conn();
        c.update_peer_credit(&Header {
            buf_alloc: 100,
            fwd_cnt: 1000,
            ..Header::default()
        });

        assert_eq!(c.peer_credit(), 0);
    }

    #[test]
    fn receive_data_beyond_buffer_refused() {
        let (mut c, _peer) = conn();
        // The peer never reads: what the socket does not take stays buffered.
        let chunk = vec![0u8; 64 << 10];
        let mut refused = false;
        for _ in 0..64 {
            if let Err(e) = c.receive_data(&chunk) {
                assert!(matches!(e, ConnError::CreditExceeded { .. }));
                refused = true;
                break;
            }
            assert!(c.buffered() <= CONN_BUF_ALLOC as usize);
        }
        assert!(refused);
    }

    #[test]
    fn own_bytes_not_counted_in_fwd_cnt() {
        let (mut c, mut peer) = conn();
        c.push_own_bytes(b"OK 1\n").unwrap();
        c.receive_data(b"abc").unwrap();
        let mut header = Header::default();

        c.fill_credit(&mut header);

        assert_eq!(header.fwd_cnt, 3);
        assert_eq!(header.buf_alloc, CONN_BUF_ALLOC);
        let mut got = [0u8; 8];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"OK 1\nabc");
    }
}
