//! What the device does with each packet the guest sends (a part of [`Muxer`]).
//!
//! Every packet is checked before it touches a connection: a stream packet, from
//! the guest's CID to the host's, with a known op and a payload that matches its
//! header. Anything else is answered with a RST (never a RST to a RST) and ends the
//! connection it names, if any.

use std::time::Instant;

use log::Level;

use super::connection::{ConnState, Connection};
use super::muxer::Muxer;
use super::packet::{op, Header, TxError, TxPacket, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM};
use super::unix::connect_nonblocking;
use super::{HOST_CID, MAX_CONNECTIONS};
use crate::ratelimit::log_ratelimited;
use crate::virtio::add_to_counter;

impl Muxer {
    /// Handles one packet from the txq (or the reason it is unusable).
    pub fn handle_guest_packet(&mut self, packet: Result<TxPacket, TxError>) {
        let TxPacket { header, data } = match packet {
            Ok(packet) => packet,
            Err(TxError { header, error }) => {
                add_to_counter(&self.metrics.malformed_packets, 1);
                log_ratelimited!(
                    Level::Warn,
                    "virtio-vsock: bad packet from the guest: {error}"
                );
                if let Some(header) = header {
                    self.refuse(&header);
                }
                return;
            }
        };
        add_to_counter(&self.metrics.tx_bytes, data.len() as u64);
        if header.kind != TYPE_STREAM
            || header.src_cid != self.guest_cid
            || header.dst_cid != HOST_CID
        {
            add_to_counter(&self.metrics.malformed_packets, 1);
            log_ratelimited!(
                Level::Warn,
                "virtio-vsock: guest packet of type {} from CID {} to CID {} refused",
                header.kind,
                header.src_cid,
                header.dst_cid
            );
            self.refuse(&header);
            return;
        }
        let key = (header.dst_port, header.src_port);
        if header.op == op::REQUEST {
            self.guest_request(&header);
            return;
        }
        let Some(&id) = self.ports.get(&key) else {
            // RST, or anything for a connection that does not exist.
            if header.op != op::RST {
                self.push(header.dst_port, header.src_port, op::RST, 0);
            }
            return;
        };
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        conn.update_peer_credit(&header);
        match (header.op, conn.state) {
            (op::RST, _) => self.kill(id, false),
            (op::RESPONSE, ConnState::Connecting) => {
                conn.state = ConnState::Established;
                conn.deadline = None;
                let line = format!("OK {}\n", conn.local_port);
                if conn.push_own_bytes(line.as_bytes()).is_err() {
                    self.kill(id, true);
                    return;
                }
            }
            (op::RW, ConnState::Established) if !conn.peer_shut_send => {
                if let Err(e) = conn.receive_data(&data) {
                    log_ratelimited!(Level::Debug, "virtio-vsock: connection reset: {e}");
                    if matches!(e, super::connection::ConnError::CreditExceeded { .. }) {
                        add_to_counter(&self.metrics.malformed_packets, 1);
                    }
                    self.kill(id, true);
                    return;
                }
            }
            (op::SHUTDOWN, ConnState::Established | ConnState::Closing) => {
                conn.peer_shut_rcv |= header.flags & SHUTDOWN_RCV != 0;
                conn.peer_shut_send |= header.flags & SHUTDOWN_SEND != 0;
                if conn.peer_shut_rcv && conn.peer_shut_send {
                    conn.state = ConnState::Closing;
                    if conn.deadline.is_none() {
                        conn.deadline = Some(Instant::now() + self.close_timeout);
                        self.arm_timer();
                    }
                }
                let flushed = self.conns.get_mut(&id).map(Connection::flush);
                if matches!(flushed, Some(Err(_))) {
                    self.kill(id, true);
                    return;
                }
            }
            (op::CREDIT_UPDATE, ConnState::Established | ConnState::Closing) => {}
            (op::CREDIT_REQUEST, ConnState::Established | ConnState::Closing) => {
                if !conn.credit_update_queued {
                    conn.credit_update_queued = true;
                    let (local, peer) = (conn.local_port, conn.peer_port);
                    self.push(local, peer, op::CREDIT_UPDATE, 0);
                }
            }
            _ => {
                add_to_counter(&self.metrics.malformed_packets, 1);
                log_ratelimited!(
                    Level::Warn,
                    "virtio-vsock: guest op {} on a {:?} connection; resetting it",
                    header.op,
                    conn.state
                );
                self.kill(id, true);
                return;
            }
        }
        self.sync(id);
    }

    /// A RST for what `header` names (unless it is a RST), ending that connection.
    fn refuse(&mut self, header: &Header) {
        let key = (header.dst_port, header.src_port);
        if let Some(&id) = self.ports.get(&key) {
            self.kill(id, false);
        }
        if header.op != op::RST {
            self.push(header.dst_port, header.src_port, op::RST, 0);
        }
    }

    /// The guest connects to host port `dst_port`: to the Unix socket
    /// `<uds_path>_<dst_port>`, without waiting.
    fn guest_request(&mut self, header: &Header) {
        let (local, peer) = (header.dst_port, header.src_port);
        if let Some(&id) = self.ports.get(&(local, peer)) {
            // A second REQUEST for a live connection: the guest lost track of it.
            add_to_counter(&self.metrics.malformed_packets, 1);
            self.kill(id, false);
            self.push(local, peer, op::RST, 0);
            return;
        }
        if self.conns.len() >= MAX_CONNECTIONS {
            add_to_counter(&self.metrics.conns_refused, 1);
            log_ratelimited!(
                Level::Warn,
                "virtio-vsock: {MAX_CONNECTIONS} connections open; guest REQUEST refused"
            );
            self.push(local, peer, op::RST, 0);
            return;
        }
        let stream = match connect_nonblocking(&self.guest_target(local)) {
            Ok(stream) => stream,
            Err(e) => {
                add_to_counter(&self.metrics.conns_refused, 1);
                log_ratelimited!(
                    Level::Debug,
                    "virtio-vsock: guest connection to port {local} refused: {e}"
                );
                self.push(local, peer, op::RST, 0);
                return;
            }
        };
        let mut conn = Connection::new(stream, local, peer, ConnState::Established);
        conn.update_peer_credit(header);
        let id = self.alloc_id();
        self.insert(id, conn);
        self.push(local, peer, op::RESPONSE, 0);
        self.sync(id);
    }
}
