//! The host side of the device: the listening socket, the host streams, the port
//! map, the control packets waiting for the guest, and the epoll sets through which
//! the VMM's event loop sees all of it.
//!
//! Two epoll sets. The outer one (the fd the VMM watches) holds the listener, the
//! close timer, every host stream still sending its `CONNECT` line, every connection
//! with bytes waiting for its host stream (EPOLLOUT), every connection the device
//! does not read but must hear of its host peer's end from (interest 0, see below),
//! and, while the rxq has buffers, the inner set. The inner set holds the
//! connections the device wants to read (EPOLLIN): established, not shut down by
//! the guest, with credit left. So the outer fd is readable exactly when the device
//! has something to do, and a level-triggered watcher never spins on a stream the
//! guest cannot take data from. A stream's fd leaves both sets when the connection
//! ends and the fd is closed.
//!
//! Host hang-ups. A stream that is read learns that its host peer ended by reading
//! (EOF: a SHUTDOWN to the guest, or an error: a RST), as soon as the rxq has
//! buffers (nothing could reach the guest before). Any other stream of a live
//! connection ([`Connection::watches_hangup`]: no credit, the guest shut its receive
//! side, not yet established) is in the outer set with interest 0, where epoll
//! still reports EPOLLHUP and EPOLLERR. On a Unix stream socket EPOLLHUP means that
//! both directions are shut: the peer closed its end (or was killed), while its
//! `shutdown(SHUT_WR)` alone gives only EPOLLIN|EPOLLRDHUP, neither of which is
//! asked for. So a reported hang-up (or error, also on a stream with EPOLLOUT
//! interest: bytes for a peer that is gone) resets the connection: a RST to the
//! guest, the stream closed, which takes it out of every set, so the level-triggered
//! hang-up is reported once.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::Level;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::timerfd::TimerFd;

use super::connection::{ConnState, Connection, Outer};
use super::metrics::VsockMetrics;
use super::packet::{op, Header, SHUTDOWN_BOTH, TYPE_STREAM};
use super::unix::{bind_listener, parse_connect};
use super::{
    Error, VsockConfig, CLOSE_TIMEOUT_MS, HOST_CID, MAX_CONNECTIONS, MAX_CONNECT_LINE,
    MAX_CONTROL_BACKLOG, MAX_GUEST_CID, MAX_PENDING_STREAMS, MIN_GUEST_CID,
};
use crate::ratelimit::log_ratelimited;
use crate::set_nonblocking;
use crate::virtio::add_to_counter;

/// Outer-set token of the listener.
const LISTENER_TAG: u64 = 0;
/// Outer-set token of the close timer.
const TIMER_TAG: u64 = 1;
/// Outer-set token of the inner (read) set.
const READERS_TAG: u64 = 2;
/// First id of a stream (pending or connected).
const FIRST_ID: u64 = 16;
/// First host port handed to host-initiated connections.
pub const FIRST_HOST_PORT: u32 = 1 << 30;
/// Hard bound of the control backlog. The txq stops at [`MAX_CONTROL_BACKLOG`] and
/// each guest packet queues at most one reply; host events queue at most a few
/// packets per connection (REQUEST, SHUTDOWN, one credit packet, RST), and no new
/// host connection is taken while the backlog is at [`MAX_CONTROL_BACKLOG`].
const MAX_BACKLOG: usize = MAX_CONTROL_BACKLOG + 4 * MAX_CONNECTIONS;
/// Most connections accepted from the listener per event.
const ACCEPTS_PER_EVENT: usize = 16;

/// A control packet waiting for an rx buffer; its credit is filled in when sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Control {
    pub local_port: u32,
    pub peer_port: u32,
    pub op: u16,
    pub flags: u32,
}

/// A host stream that has not finished its `CONNECT <port>\n` line.
#[derive(Debug)]
struct Pending {
    stream: UnixStream,
    line: Vec<u8>,
    deadline: Instant,
}

/// What an outer-set event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ready {
    /// A host process connects to the listener.
    Listener,
    /// The close timer fired.
    Timer,
    /// Some connection can be read (the device reads them when it has rx buffers).
    Readers,
    /// A host stream (pending or connected) with this id; `hung_up` if epoll
    /// reported EPOLLHUP or EPOLLERR for it.
    Stream {
        /// The stream's id.
        id: u64,
        /// The host peer is gone (or the stream failed).
        hung_up: bool,
    },
}

/// The listener, the streams and everything waiting for the guest.
#[derive(Debug)]
pub struct Muxer {
    pub(super) guest_cid: u64,
    uds_path: PathBuf,
    listener: UnixListener,
    /// The listener left the outer set after a failed accept; the timer puts it back.
    listener_paused: bool,
    /// The listener's inode (device, inode), to unlink only our own socket.
    listener_inode: (u64, u64),
    outer: Epoll,
    readers: Epoll,
    gate_open: bool,
    timer: TimerFd,
    /// When the close timer fires, if armed.
    timer_at: Option<Instant>,
    pub(super) close_timeout: Duration,
    pending: HashMap<u64, Pending>,
    pub(super) conns: HashMap<u64, Connection>,
    pub(super) ports: HashMap<(u32, u32), u64>,
    next_id: u64,
    next_host_port: u32,
    pub(super) backlog: VecDeque<Control>,
    /// Whether the device runs (host connections are refused otherwise).
    pub(super) active: bool,
    pub(super) metrics: Arc<VsockMetrics>,
}

impl Muxer {
    /// Checks the configuration, binds the listener and builds the epoll sets.
    pub fn new(config: &VsockConfig, metrics: Arc<VsockMetrics>) -> Result<Muxer, Error> {
        let cid = config.guest_cid;
        if !(MIN_GUEST_CID..=MAX_GUEST_CID).contains(&cid) {
            return Err(Error::InvalidCid { cid });
        }
        let path = config.uds_path.clone();
        let listener = bind_listener(&path)?;
        let listen_err = |call, source| Error::Listen {
            path: path.clone(),
            call,
            source,
        };
        let meta = std::fs::symlink_metadata(&path).map_err(|e| listen_err("stat", e))?;
        let outer = Epoll::new().map_err(|e| listen_err("epoll_create1", e))?;
        let readers = Epoll::new().map_err(|e| listen_err("epoll_create1", e))?;
        let timer = TimerFd::new().map_err(|e| listen_err("timerfd_create", e.into()))?;
        set_nonblocking(timer.as_raw_fd()).map_err(|e| listen_err("fcntl", e))?;
        let muxer = Muxer {
            guest_cid: cid,
            uds_path: path.clone(),
            listener_inode: (meta.dev(), meta.ino()),
            listener,
            listener_paused: false,
            outer,
            readers,
            gate_open: false,
            timer,
            timer_at: None,
            close_timeout: Duration::from_millis(CLOSE_TIMEOUT_MS),
            pending: HashMap::new(),
            conns: HashMap::new(),
            ports: HashMap::new(),
            next_id: FIRST_ID,
            next_host_port: FIRST_HOST_PORT,
            backlog: VecDeque::new(),
            active: false,
            metrics,
        };
        for (fd, tag) in [
            (muxer.listener.as_raw_fd(), LISTENER_TAG),
            (muxer.timer.as_raw_fd(), TIMER_TAG),
        ] {
            muxer
                .outer
                .ctl(
                    ControlOperation::Add,
                    fd,
                    EpollEvent::new(EventSet::IN, tag),
                )
                .map_err(|e| listen_err("epoll_ctl", e))?;
        }
        Ok(muxer)
    }

    /// The fd the VMM watches.
    pub fn as_raw_fd(&self) -> RawFd {
        self.outer.as_raw_fd()
    }

    /// What is ready now, without waiting.
    pub fn poll(&self, events: &mut [EpollEvent]) -> Vec<Ready> {
        let n = match self.outer.wait(0, events) {
            Ok(n) => n,
            Err(e) => {
                log_ratelimited!(Level::Error, "virtio-vsock: epoll_wait failed: {e}");
                0
            }
        };
        events[..n]
            .iter()
            .map(|ev| match ev.data() {
                LISTENER_TAG => Ready::Listener,
                TIMER_TAG => Ready::Timer,
                READERS_TAG => Ready::Readers,
                id => Ready::Stream {
                    id,
                    hung_up: ev
                        .event_set()
                        .intersects(EventSet::HANG_UP | EventSet::ERROR),
                },
            })
            .collect()
    }

    /// Ids of connections whose streams can be read now.
    pub fn ready_readers(&self, events: &mut [EpollEvent]) -> Vec<u64> {
        let n = self.readers.wait(0, events).unwrap_or_else(|e| {
            log_ratelimited!(Level::Error, "virtio-vsock: epoll_wait failed: {e}");
            0
        });
        events[..n].iter().map(EpollEvent::data).collect()
    }

    /// Lets the inner set's readiness through (the rxq has buffers) or not.
    pub fn set_gate(&mut self, open: bool) {
        if open == self.gate_open {
            return;
        }
        let (operation, event) = if open {
            (
                ControlOperation::Add,
                EpollEvent::new(EventSet::IN, READERS_TAG),
            )
        } else {
            (ControlOperation::Delete, EpollEvent::default())
        };
        match self.outer.ctl(operation, self.readers.as_raw_fd(), event) {
            Ok(()) => self.gate_open = open,
            Err(e) => log_ratelimited!(Level::Error, "virtio-vsock: epoll_ctl (gate): {e}"),
        }
    }

    /// Accepts host connections; each must send its `CONNECT` line next.
    pub fn accept(&mut self) {
        for _ in 0..ACCEPTS_PER_EVENT {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    // Out of fds or memory: the listener stays readable, so it leaves
                    // the set until the timer puts it back, or the loop would spin.
                    log_ratelimited!(
                        Level::Warn,
                        "virtio-vsock: accept failed: {e}; pausing the listener"
                    );
                    self.pause_listener();
                    return;
                }
            };
            if self.pending.len() >= MAX_PENDING_STREAMS || stream.set_nonblocking(true).is_err() {
                add_to_counter(&self.metrics.conns_refused, 1);
                continue;
            }
            let id = self.alloc_id();
            let event = EpollEvent::new(EventSet::IN, id);
            if let Err(e) = self
                .outer
                .ctl(ControlOperation::Add, stream.as_raw_fd(), event)
            {
                log_ratelimited!(Level::Error, "virtio-vsock: epoll_ctl (accept): {e}");
                continue;
            }
            let deadline = Instant::now() + self.close_timeout;
            let line = Vec::with_capacity(MAX_CONNECT_LINE);
            self.pending.insert(
                id,
                Pending {
                    stream,
                    line,
                    deadline,
                },
            );
            self.arm_timer();
        }
    }

    /// Takes the listener out of the outer set for a timer period.
    pub(super) fn pause_listener(&mut self) {
        let fd = self.listener.as_raw_fd();
        match self
            .outer
            .ctl(ControlOperation::Delete, fd, EpollEvent::default())
        {
            Ok(()) => {
                self.listener_paused = true;
                self.arm_timer();
            }
            Err(e) => log_ratelimited!(Level::Error, "virtio-vsock: epoll_ctl (listener): {e}"),
        }
    }

    /// Puts a paused listener back in the outer set.
    fn resume_listener(&mut self) {
        if !self.listener_paused {
            return;
        }
        let event = EpollEvent::new(EventSet::IN, LISTENER_TAG);
        let fd = self.listener.as_raw_fd();
        match self.outer.ctl(ControlOperation::Add, fd, event) {
            Ok(()) => self.listener_paused = false,
            Err(e) => {
                log_ratelimited!(Level::Error, "virtio-vsock: epoll_ctl (listener): {e}");
                self.arm_timer();
            }
        }
    }

    /// A stream the outer set reported: reads a pending `CONNECT` line, resets a
    /// connection whose host peer hung up (`hung_up`), or flushes a connection's
    /// buffered bytes.
    pub fn stream_ready(&mut self, id: u64, hung_up: bool) {
        if self.pending.contains_key(&id) {
            // A hang-up shows as EOF (or an error) there: the stream is dropped.
            self.read_connect_line(id);
        } else if let Some(conn) = self.conns.get_mut(&id) {
            if hung_up && conn.outer != Outer::Absent {
                // Only a stream the device does not read, or one with bytes waiting
                // for it, is in the outer set: either way its peer is gone (a peer's
                // SHUT_WR alone is no EPOLLHUP), nothing more reaches it and the
                // guest would not learn otherwise. Reset before any flush: the
                // buffered bytes have nowhere to go.
                log_ratelimited!(
                    Level::Debug,
                    "virtio-vsock: host stream of port {} hung up; resetting",
                    conn.local_port
                );
                add_to_counter(&self.metrics.host_hangups, 1);
                self.kill(id, true);
                return;
            }
            if let Err(e) = conn.flush() {
                log_ratelimited!(Level::Debug, "virtio-vsock: host stream: {e}");
                self.kill(id, true);
                return;
            }
            self.sync(id);
        }
    }

    /// Reads a pending stream's line one byte at a time (nothing past the newline
    /// is taken from the stream) until it is complete or the stream is empty.
    fn read_connect_line(&mut self, id: u64) {
        let Some(pending) = self.pending.get_mut(&id) else {
            return;
        };
        let mut byte = [0u8; 1];
        let port = loop {
            match pending.stream.read(&mut byte) {
                Ok(1) if byte[0] == b'\n' => break parse_connect(&pending.line),
                Ok(1) if pending.line.len() + 1 < MAX_CONNECT_LINE => pending.line.push(byte[0]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // EOF, an error or a line too long.
                _ => break None,
            }
        };
        let Some(pending) = self.pending.remove(&id) else {
            return;
        };
        // The fd stays open in a connection, so it must leave the set explicitly.
        let fd = pending.stream.as_raw_fd();
        if let Err(e) = self
            .outer
            .ctl(ControlOperation::Delete, fd, EpollEvent::default())
        {
            log_ratelimited!(Level::Error, "virtio-vsock: epoll_ctl (pending): {e}");
        }
        let Some(peer_port) = port else {
            add_to_counter(&self.metrics.conns_refused, 1);
            return;
        };
        let busy = self.conns.len() >= MAX_CONNECTIONS || self.backlog.len() >= MAX_CONTROL_BACKLOG;
        if !self.active || busy {
            add_to_counter(&self.metrics.conns_refused, 1);
            return;
        }
        let Some(local_port) = self.alloc_host_port() else {
            add_to_counter(&self.metrics.conns_refused, 1);
            return;
        };
        let mut conn =
            Connection::new(pending.stream, local_port, peer_port, ConnState::Connecting);
        conn.deadline = Some(Instant::now() + self.close_timeout);
        self.insert(id, conn);
        self.arm_timer();
        self.push(local_port, peer_port, op::REQUEST, 0);
        // Watched for a hang-up while the guest has not answered.
        self.sync(id);
    }

    /// A fresh stream id.
    pub(super) fn alloc_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(FIRST_ID);
        id
    }

    /// An unused host port for a host-initiated connection.
    fn alloc_host_port(&mut self) -> Option<u32> {
        for _ in 0..=MAX_CONNECTIONS {
            let port = self.next_host_port;
            self.next_host_port = port.checked_add(1).unwrap_or(FIRST_HOST_PORT);
            if !self.ports.keys().any(|&(local, _)| local == port) {
                return Some(port);
            }
        }
        None
    }

    /// Adds a connection under `id`.
    pub(super) fn insert(&mut self, id: u64, conn: Connection) {
        self.ports.insert((conn.local_port, conn.peer_port), id);
        self.conns.insert(id, conn);
        add_to_counter(&self.metrics.conns_added, 1);
    }

    /// Queues a control packet for the guest.
    pub(super) fn push(&mut self, local_port: u32, peer_port: u32, op: u16, flags: u32) {
        if op == op::RST {
            add_to_counter(&self.metrics.rst_sent, 1);
        }
        if self.backlog.len() >= MAX_BACKLOG {
            // Unreachable while the bounds above hold; a last guard on memory.
            self.backlog.pop_front();
            log_ratelimited!(
                Level::Warn,
                "virtio-vsock: control backlog full, oldest dropped"
            );
        }
        self.backlog.push_back(Control {
            local_port,
            peer_port,
            op,
            flags,
        });
    }

    /// The next control packet for the guest, with the connection's credit.
    pub fn pop_control(&mut self) -> Option<Header> {
        let control = self.backlog.pop_front()?;
        let mut header = host_header(
            self.guest_cid,
            control.local_port,
            control.peer_port,
            control.op,
        );
        header.flags = control.flags;
        let key = (control.local_port, control.peer_port);
        if let Some(conn) = self.ports.get(&key).and_then(|id| self.conns.get_mut(id)) {
            conn.fill_credit(&mut header);
            if control.op == op::CREDIT_UPDATE {
                conn.credit_update_queued = false;
            }
        }
        Some(header)
    }

    /// Whether control packets wait for rx buffers.
    pub fn has_control(&self) -> bool {
        !self.backlog.is_empty()
    }

    /// Reads host bytes for the guest from connection `id` into `buf`, at most the
    /// guest's credit: the RW header (its `len` the bytes read), or `None` when there
    /// is nothing to send (no data, no credit, the stream ended or failed: the
    /// SHUTDOWN or RST is then queued).
    pub fn read_for_guest(&mut self, id: u64, buf: &mut [u8]) -> Option<Header> {
        let conn = self.conns.get_mut(&id)?;
        if !conn.wants_read() {
            return None;
        }
        let credit = usize::try_from(conn.peer_credit()).unwrap_or(usize::MAX);
        let max = buf.len().min(credit);
        let result = conn.read(&mut buf[..max]);
        match result {
            Ok(0) => {
                let (local, peer) = (conn.local_port, conn.peer_port);
                conn.state = ConnState::Closing;
                conn.deadline = Some(Instant::now() + self.close_timeout);
                self.arm_timer();
                self.push(local, peer, op::SHUTDOWN, SHUTDOWN_BOTH);
                self.sync(id);
                None
            }
            Ok(n) => {
                // n <= max <= u32::MAX.
                let len = u32::try_from(n).unwrap_or(u32::MAX);
                conn.record_sent(len);
                let mut header = Header {
                    len,
                    ..host_header(self.guest_cid, conn.local_port, conn.peer_port, op::RW)
                };
                conn.fill_credit(&mut header);
                add_to_counter(&self.metrics.rx_bytes, u64::from(len));
                self.sync(id);
                Some(header)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => None,
            Err(e) => {
                log_ratelimited!(Level::Debug, "virtio-vsock: host stream read: {e}");
                self.kill(id, true);
                None
            }
        }
    }

    /// Brings connection `id`'s epoll interest in line with what it wants, queues
    /// the credit packets it needs, and ends it if it finished closing.
    pub(super) fn sync(&mut self, id: u64) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let fd = conn.fd();
        let mut failed = false;
        let want_read = conn.wants_read();
        if want_read != conn.in_read_set {
            failed |= interest(&self.readers, fd, want_read, EventSet::IN, id).is_err();
            conn.in_read_set = want_read;
        }
        let want_write = conn.wants_write();
        let want_outer = conn.wanted_outer();
        if want_outer != conn.outer {
            failed |= outer_interest(&self.outer, fd, conn.outer, want_outer, id).is_err();
            conn.outer = want_outer;
        }
        let (local, peer) = (conn.local_port, conn.peer_port);
        let finished = conn.state == ConnState::Closing
            && conn.peer_shut_send
            && conn.peer_shut_rcv
            && !want_write;
        if failed || finished {
            self.kill(id, true);
            return;
        }
        if conn.needs_credit_request() {
            conn.credit_request_sent = true;
            self.push(local, peer, op::CREDIT_REQUEST, 0);
        } else if conn.needs_credit_update() && !conn.credit_update_queued {
            conn.credit_update_queued = true;
            self.push(local, peer, op::CREDIT_UPDATE, 0);
        }
    }

    /// Ends connection `id`, closing its stream (which takes it out of both sets),
    /// with a RST to the guest if `rst`.
    pub(super) fn kill(&mut self, id: u64, rst: bool) {
        let Some(conn) = self.conns.remove(&id) else {
            return;
        };
        self.ports.remove(&(conn.local_port, conn.peer_port));
        add_to_counter(&self.metrics.conns_killed, 1);
        if rst {
            self.push(conn.local_port, conn.peer_port, op::RST, 0);
        }
    }

    /// Makes the close timer fire by a deadline set now (`close_timeout` from now).
    pub(super) fn arm_timer(&mut self) {
        let deadline = Instant::now() + self.close_timeout;
        if self.timer_at.is_none_or(|at| deadline < at) {
            self.rearm(self.close_timeout);
        }
    }

    fn rearm(&mut self, after: Duration) {
        let after = after.max(Duration::from_millis(1));
        match self.timer.reset(after, None) {
            Ok(()) => self.timer_at = Some(Instant::now() + after),
            Err(e) => log_ratelimited!(Level::Error, "virtio-vsock: timerfd_settime: {e}"),
        }
    }

    /// The close timer fired: resets the connections and drops the pending streams
    /// past their deadline, and arms the timer for the next deadline.
    pub fn timer_fired(&mut self) {
        match self.timer.wait().map_err(io::Error::from) {
            Ok(_) => self.timer_at = None,
            // Re-armed since it was reported: it fires again later.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) => {
                log_ratelimited!(Level::Error, "virtio-vsock: cannot read the timerfd: {e}");
                self.timer_at = None;
            }
        }
        self.resume_listener();
        // A deadline a moment away counts as reached: the timer may fire a little
        // early against `Instant`, and a 1 ms re-arm for it would be wasted.
        let now = Instant::now() + Duration::from_millis(1);
        let timeout = self.close_timeout;
        let mut expired = Vec::new();
        for (&id, conn) in &mut self.conns {
            if conn.deadline.is_none_or(|d| d > now) {
                continue;
            }
            // Guest data still waits for the host stream: the host reads at its own
            // pace (a Unix socket only turns writable again once it drained most
            // of its buffer), and a host that goes away hangs up, which ends the
            // connection. Look again a timeout later.
            if conn.wants_write() {
                conn.deadline = Some(now + timeout);
            } else {
                expired.push(id);
            }
        }
        for id in expired {
            add_to_counter(&self.metrics.conns_timed_out, 1);
            self.kill(id, true);
        }
        let before = self.pending.len();
        self.pending.retain(|_, p| p.deadline > now);
        let dropped = before - self.pending.len();
        add_to_counter(&self.metrics.conns_refused, dropped as u64);
        let next = self
            .conns
            .values()
            .filter_map(|c| c.deadline)
            .chain(self.pending.values().map(|p| p.deadline))
            .min();
        if let Some(next) = next {
            self.rearm(next.saturating_duration_since(now));
        }
    }

    /// Device reset: every connection and pending stream closed, nothing queued;
    /// the listener stays.
    pub fn reset(&mut self) {
        let killed = self.conns.len() as u64;
        add_to_counter(&self.metrics.conns_killed, killed);
        self.conns.clear();
        self.ports.clear();
        self.pending.clear();
        self.backlog.clear();
        self.set_gate(false);
        if self.timer_at.is_some() {
            if let Err(e) = self.timer.clear() {
                log_ratelimited!(Level::Error, "virtio-vsock: timerfd_settime: {e}");
            }
            self.timer_at = None;
        }
    }

    /// `<uds_path>_<port>`: where a guest connection to `port` goes.
    pub(super) fn guest_target(&self, port: u32) -> PathBuf {
        let mut path = self.uds_path.clone().into_os_string();
        path.push(format!("_{port}"));
        PathBuf::from(path)
    }
}

impl Drop for Muxer {
    fn drop(&mut self) {
        // Unlink only the socket we bound: someone may have replaced it.
        let ours = std::fs::symlink_metadata(&self.uds_path)
            .is_ok_and(|m| (m.dev(), m.ino()) == self.listener_inode);
        if ours {
            let _ = std::fs::remove_file(&self.uds_path);
        }
    }
}

/// A header from the host to the guest.
fn host_header(guest_cid: u64, local_port: u32, peer_port: u32, op: u16) -> Header {
    Header {
        src_cid: HOST_CID,
        dst_cid: guest_cid,
        src_port: local_port,
        dst_port: peer_port,
        kind: TYPE_STREAM,
        op,
        ..Header::default()
    }
}

/// Moves `fd` in the outer set from interest `from` to `to`.
fn outer_interest(set: &Epoll, fd: RawFd, from: Outer, to: Outer, id: u64) -> io::Result<()> {
    // Interest 0 for a hang-up: EPOLLHUP and EPOLLERR are always reported.
    let events = if to == Outer::Write {
        EventSet::OUT
    } else {
        EventSet::empty()
    };
    let result = match (from, to) {
        (_, Outer::Absent) => set.ctl(ControlOperation::Delete, fd, EpollEvent::default()),
        (Outer::Absent, _) => set.ctl(ControlOperation::Add, fd, EpollEvent::new(events, id)),
        _ => set.ctl(ControlOperation::Modify, fd, EpollEvent::new(events, id)),
    };
    if let Err(e) = &result {
        log_ratelimited!(Level::Error, "virtio-vsock: epoll_ctl: {e}");
    }
    result
}

/// Adds `fd` to `set` with `events`, or removes it.
fn interest(set: &Epoll, fd: RawFd, add: bool, events: EventSet, id: u64) -> io::Result<()> {
    let result = if add {
        set.ctl(ControlOperation::Add, fd, EpollEvent::new(events, id))
    } else {
        set.ctl(ControlOperation::Delete, fd, EpollEvent::default())
    };
    if let Err(e) = &result {
        log_ratelimited!(Level::Error, "virtio-vsock: epoll_ctl: {e}");
    }
    result
}
