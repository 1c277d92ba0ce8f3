//! The host half of the virtio-net device: the TAP, the receive and transmit
//! paths, the rate limiters. The device (`device.rs`) owns the queues and hands
//! them in.

use std::io;
use std::sync::Arc;

use crate::GuestMemoryMmap;
use log::{error, info, warn, Level};
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};

use super::frame::{self, FrameError};
use super::metrics::NetMetrics;
use super::tap::{Backend, ReadGate};
use super::{RX_FRAMES_PER_PASS, VNET_HDR_LEN};
use crate::rate_limiter::RateLimiter;
use crate::ratelimit::log_ratelimited;
use crate::virtio::{
    add_to_counter, next_chain_checked, IrqTrigger, VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_VRING,
};

/// What the device holds between activation and reset.
#[derive(Debug)]
pub(super) struct Active {
    pub(super) mem: GuestMemoryMmap,
    pub(super) rx: Queue,
    pub(super) tx: Queue,
    pub(super) irq: IrqTrigger,
}

/// What one read from the TAP gave.
enum Read {
    /// A frame of this length (header included) is in the receive buffer.
    Frame(usize),
    /// Something that is no frame was read and dropped; read on.
    Skipped,
    /// The TAP is drained (the gate is open) or failed.
    Stop,
}

/// What became of the pending frame.
enum Delivery {
    /// Written to a receive chain of the given used length.
    Delivered(u32),
    /// Larger than the next receive chain: dropped, the chain is kept.
    DoesNotFit(FrameError),
    /// The next receive chain was malformed and returned unused; the frame waits.
    BadChain(FrameError),
    /// The driver has posted no receive buffer.
    NoBuffer,
}

/// What became of a transmit chain.
enum Sent {
    /// Sent, or dropped and counted: the chain goes back to the driver.
    Done,
    /// Held back by the rate limiter: the chain stays on the queue.
    Throttled,
}

/// The host half of the device: everything but the queues, so queue processing can
/// borrow both halves at once.
pub(super) struct Host {
    /// `virtio-net<index> (<tap>)`, for messages.
    pub(super) label: String,
    pub(super) backend: Box<dyn Backend>,
    /// What the VMM watches: the TAP, while the device wants frames.
    pub(super) gate: ReadGate,
    /// The TAP failed for good: it is no longer read, written or watched.
    pub(super) gone: bool,
    /// A write failed with EIO (the TAP's link is down) and that was logged.
    pub(super) link_down_logged: bool,
    /// Receive buffer for one frame with its header.
    pub(super) rx_buf: Box<[u8]>,
    /// Length of the frame in `rx_buf` still waiting for a receive chain.
    pub(super) pending: Option<usize>,
    /// The receive rate limiter already admitted the pending frame.
    pub(super) pending_admitted: bool,
    /// Transmit buffer, reused.
    pub(super) tx_buf: Vec<u8>,
    /// The driver accepted VIRTIO_NET_F_GUEST_CSUM.
    pub(super) guest_csum: bool,
    /// Receive chains returned unused because they were malformed.
    pub(super) rx_malformed: u64,
    /// Transmit chains dropped because they were malformed.
    pub(super) tx_malformed: u64,
    pub(super) metrics: Arc<NetMetrics>,
    /// Limits frames to the guest; always there, unlimited by default.
    pub(super) rx_limiter: RateLimiter,
    /// Limits frames from the guest; always there, unlimited by default.
    pub(super) tx_limiter: RateLimiter,
}

impl Host {
    /// Moves frames from the TAP into receive chains until the TAP is drained (the
    /// gate stays open), the driver has no buffer left (the frame stays pending and
    /// the gate closes), or [`RX_FRAMES_PER_PASS`] frames were read (the gate stays
    /// open, so the event loop comes back). A frame the rate limiter holds back
    /// stays pending with the gate closed until the limiter's timer fires.
    pub(super) fn process_rx(&mut self, active: &mut Active) {
        if self.rx_limiter.is_blocked() {
            self.close_gate();
            return;
        }
        let mut used = 0usize;
        let mut budget = RX_FRAMES_PER_PASS;
        while !self.gone {
            let len = match self.pending {
                Some(len) => len,
                None if budget == 0 => {
                    self.open_gate();
                    break;
                }
                None => {
                    budget -= 1;
                    match self.read_frame(&active.irq) {
                        Read::Frame(len) => {
                            self.pending = Some(len);
                            len
                        }
                        Read::Skipped => continue,
                        Read::Stop => break,
                    }
                }
            };
            if !self.pending_admitted {
                let bytes = len.saturating_sub(VNET_HDR_LEN) as u64;
                if !self.rx_limiter.admit(bytes) {
                    add_to_counter(&self.metrics.rx_rate_limiter_throttled, 1);
                    self.close_gate();
                    break;
                }
                self.pending_admitted = true;
            }
            match deliver(active, &self.rx_buf[..len], &self.label) {
                Delivery::Delivered(used_len) => {
                    self.take_pending();
                    used = used.saturating_add(1);
                    add_to_counter(&self.metrics.rx_packets, 1);
                    add_to_counter(
                        &self.metrics.rx_bytes,
                        u64::from(used_len).saturating_sub(VNET_HDR_LEN as u64),
                    );
                }
                Delivery::DoesNotFit(e) => {
                    self.take_pending();
                    add_to_counter(&self.metrics.rx_drops, 1);
                    log_ratelimited!(
                        Level::Warn,
                        "{}: frame dropped: {e} (is the TAP's MTU larger than the guest's?)",
                        self.label
                    );
                }
                Delivery::BadChain(e) => {
                    used = used.saturating_add(1);
                    self.rx_malformed = self.rx_malformed.saturating_add(1);
                    log_ratelimited!(
                        Level::Warn,
                        "{}: receive chain returned unused: {e}",
                        self.label
                    );
                }
                Delivery::NoBuffer => {
                    self.close_gate();
                    break;
                }
            }
        }
        if used > 0 {
            signal_used(&mut active.rx, &active.mem, &active.irq, &self.label);
        }
    }

    /// Forgets the pending frame; whether there was one.
    pub(super) fn take_pending(&mut self) -> bool {
        self.pending_admitted = false;
        self.pending.take().is_some()
    }

    /// Reads the next frame into `rx_buf`.
    fn read_frame(&mut self, irq: &IrqTrigger) -> Read {
        loop {
            match self.backend.read_frame(&mut self.rx_buf) {
                Ok(len) => {
                    return match self.rx_buf.get_mut(..len) {
                        Some(frame) if len > VNET_HDR_LEN => {
                            frame::complete_rx_header(frame, self.guest_csum);
                            Read::Frame(len)
                        }
                        _ => {
                            add_to_counter(&self.metrics.rx_drops, 1);
                            log_ratelimited!(
                                Level::Warn,
                                "{}: dropped a {len}-byte read from the TAP: no frame after \
                                 the header",
                                self.label
                            );
                            Read::Skipped
                        }
                    };
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.open_gate();
                    return Read::Stop;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Nothing else is expected from a healthy TAP; reading on would spin.
                Err(e) => {
                    self.fail("read", &e, irq);
                    return Read::Stop;
                }
            }
        }
    }

    /// Writes every available transmit chain to the TAP and returns the chains to the
    /// driver, with driver notifications off meanwhile. A frame the rate limiter
    /// holds back stays on the queue, and notifications stay off until the
    /// limiter's timer resumes transmission.
    pub(super) fn process_tx(&mut self, active: &mut Active) {
        if self.tx_limiter.is_blocked() {
            return;
        }
        let Active { mem, tx, irq, .. } = active;
        let mut used = 0usize;
        let mut throttled = false;
        loop {
            if let Err(e) = tx.disable_notification(&*mem) {
                log_ratelimited!(
                    Level::Warn,
                    "{}: cannot disable transmit notifications: {e}",
                    self.label
                );
            }
            let mut this_pass = 0usize;
            while let Some(chain) = next_chain_checked(tx, mem, irq, &self.label) {
                let head = chain.head_index();
                if let Sent::Throttled = self.transmit(mem, chain, irq) {
                    tx.go_to_previous_position();
                    throttled = true;
                    break;
                }
                // The device writes nothing into a transmit buffer.
                add_used(tx, mem, head, 0, &self.label);
                this_pass = this_pass.saturating_add(1);
            }
            used = used.saturating_add(this_pass);
            if throttled {
                break;
            }
            match tx.enable_notification(&*mem) {
                // Chains arrived while notifications were off. If this pass found none,
                // the avail ring is broken: stop instead of spinning.
                Ok(true) if this_pass > 0 => {}
                Ok(_) => break,
                Err(e) => {
                    log_ratelimited!(
                        Level::Warn,
                        "{}: cannot enable transmit notifications: {e}",
                        self.label
                    );
                    break;
                }
            }
        }
        if used > 0 {
            signal_used(tx, mem, irq, &self.label);
        }
    }

    /// Sends one transmit chain to the TAP once the rate limiter admits it (an op,
    /// and the frame's bytes without the header), or drops and counts it.
    /// Malformed chains and frames for a failed TAP cost nothing.
    fn transmit(
        &mut self,
        mem: &GuestMemoryMmap,
        chain: DescriptorChain<&GuestMemoryMmap>,
        irq: &IrqTrigger,
    ) -> Sent {
        let head = chain.head_index();
        if let Err(e) = frame::read_tx_frame(mem, chain, &mut self.tx_buf) {
            self.tx_malformed = self.tx_malformed.saturating_add(1);
            log_ratelimited!(
                Level::Warn,
                "{}: transmit chain {head} dropped: {e}",
                self.label
            );
            return Sent::Done;
        }
        if self.gone {
            add_to_counter(&self.metrics.tx_drops, 1);
            return Sent::Done;
        }
        let bytes = self.tx_buf.len().saturating_sub(VNET_HDR_LEN) as u64;
        if !self.tx_limiter.admit(bytes) {
            add_to_counter(&self.metrics.tx_rate_limiter_throttled, 1);
            return Sent::Throttled;
        }
        match self.backend.write_frame(&self.tx_buf) {
            Ok(_) => {
                add_to_counter(&self.metrics.tx_packets, 1);
                add_to_counter(&self.metrics.tx_bytes, bytes);
                if self.link_down_logged {
                    self.link_down_logged = false;
                    info!("{}: the TAP takes frames again", self.label);
                }
            }
            Err(e) => {
                add_to_counter(&self.metrics.tx_drops, 1);
                self.write_failed(&e, irq);
            }
        }
        Sent::Done
    }

    /// Classifies a failed TAP write: the TAP is gone, its link is down (EIO, until
    /// it is up again: logged once), or this one frame was refused.
    fn write_failed(&mut self, e: &io::Error, irq: &IrqTrigger) {
        match e.raw_os_error() {
            Some(libc::EBADFD | libc::ENODEV | libc::ENXIO) => self.fail("write", e, irq),
            Some(libc::EIO) => {
                if !self.link_down_logged {
                    self.link_down_logged = true;
                    warn!(
                        "{}: the TAP's link is down ({e}); dropping guest frames until it is up",
                        self.label
                    );
                }
            }
            _ => log_ratelimited!(
                Level::Warn,
                "{}: the TAP refused a {}-byte frame: {e}",
                self.label,
                self.tx_buf.len()
            ),
        }
    }

    /// The TAP failed for good (deleted, detached): stop using and watching it, drop
    /// the pending frame, and tell the driver the link is down. Logged once.
    pub(super) fn fail(&mut self, call: &str, e: &io::Error, irq: &IrqTrigger) {
        if self.gone {
            return;
        }
        self.gone = true;
        self.close_gate();
        if self.take_pending() {
            add_to_counter(&self.metrics.rx_drops, 1);
        }
        error!(
            "{}: TAP {call} failed ({e}); the guest's link is now down and the TAP is no \
             longer used",
            self.label
        );
        if let Err(e) = irq.trigger(VIRTIO_MMIO_INT_CONFIG) {
            error!(
                "{}: cannot signal the configuration change: {e}",
                self.label
            );
        }
    }

    /// Lets the VMM see the TAP's readiness.
    pub(super) fn open_gate(&mut self) {
        let fd = self.backend.ready_fd();
        if let Err(e) = self.gate.open(fd) {
            // Without the TAP in the gate, frames would wait until the next receive
            // notification; nothing better to do than say so.
            log_ratelimited!(Level::Error, "{}: cannot watch the TAP: {e}", self.label);
        }
    }

    /// Hides the TAP's readiness from the VMM.
    pub(super) fn close_gate(&mut self) {
        let fd = self.backend.ready_fd();
        if let Err(e) = self.gate.close(fd) {
            log_ratelimited!(
                Level::Error,
                "{}: cannot stop watching the TAP: {e}",
                self.label
            );
        }
    }
}

/// Puts `frame` into the next receive chain, if there is one.
fn deliver(active: &mut Active, frame: &[u8], label: &str) -> Delivery {
    let Active { mem, rx, irq, .. } = active;
    let Some(chain) = next_chain_checked(rx, mem, irq, label) else {
        return Delivery::NoBuffer;
    };
    let head = chain.head_index();
    match frame::write_rx_frame(mem, chain, frame) {
        Ok(len) => {
            add_used(rx, mem, head, len, label);
            Delivery::Delivered(len)
        }
        Err(e @ FrameError::DoesNotFit { .. }) => {
            // The chain is fine, only too small for this frame: keep it for the next.
            rx.go_to_previous_position();
            Delivery::DoesNotFit(e)
        }
        Err(e) => {
            add_used(rx, mem, head, 0, label);
            Delivery::BadChain(e)
        }
    }
}

/// Returns chain `head` to the used ring with `len` bytes written, logging failure.
fn add_used(queue: &mut Queue, mem: &GuestMemoryMmap, head: u16, len: u32, label: &str) {
    if let Err(e) = queue.add_used(mem, head, len) {
        log_ratelimited!(Level::Warn, "{label}: cannot return chain {head}: {e}");
    }
}

/// Raises the used-buffer interrupt if the driver wants one for this queue.
fn signal_used(queue: &mut Queue, mem: &GuestMemoryMmap, irq: &IrqTrigger, label: &str) {
    match queue.needs_notification(mem) {
        Ok(false) => {}
        Ok(true) => {
            if let Err(e) = irq.trigger(VIRTIO_MMIO_INT_VRING) {
                log_ratelimited!(Level::Error, "{label}: cannot raise the interrupt: {e}");
            }
        }
        Err(e) => log_ratelimited!(Level::Warn, "{label}: cannot read the used event: {e}"),
    }
}
