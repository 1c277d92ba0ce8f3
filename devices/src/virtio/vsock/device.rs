//! The virtio-vsock device: its queues and the [`VirtioDevice`] implementation.

use std::os::fd::RawFd;
use std::sync::Arc;

use log::{debug, Level};
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::Bytes;
use vmm_sys_util::epoll::EpollEvent;

use super::metrics::VsockMetrics;
use super::muxer::{Muxer, Ready};
use super::packet::{read_tx_packet, Header, RxBuffer};
use super::{
    Error, VsockConfig, CONFIG_SPACE_SIZE, EPOLL_EVENT_TOKEN, EVENT_QUEUE, MAX_CONTROL_BACKLOG,
    MAX_PAYLOAD, NUM_QUEUES, PACKETS_PER_STREAM_PASS, QUEUE_MAX_SIZE, RX_QUEUE, TX_QUEUE,
};
use crate::ratelimit::log_ratelimited;
use crate::snapshot::RestoreError;
use crate::virtio::{
    add_to_counter, device_type, next_chain_checked, read_config_space, ActivateError,
    ActivateParams, IrqTrigger, VirtioDevice, VirtioDeviceState, VIRTIO_F_VERSION_1,
    VIRTIO_MMIO_INT_VRING,
};
use crate::GuestMemoryMmap;

/// `virtio_vsock_event.id` of a transport reset: the driver drops every connection.
pub const VIRTIO_VSOCK_EVENT_TRANSPORT_RESET: u32 = 0;
/// Most outer events handled per `process_event`.
const EVENTS_PER_CALL: usize = 64;

/// What the device holds between DRIVER_OK and reset.
#[derive(Debug)]
pub(super) struct Active {
    pub(super) mem: GuestMemoryMmap,
    pub(super) queues: [Queue; NUM_QUEUES],
    pub(super) irq: IrqTrigger,
    /// The rxq had no buffer the last time the device looked.
    rx_starved: bool,
    /// Queues with used buffers the driver has not been told about.
    used: [bool; NUM_QUEUES],
}

/// A virtio-vsock device.
#[derive(Debug)]
pub struct Vsock {
    pub(super) muxer: Muxer,
    metrics: Arc<VsockMetrics>,
    pub(super) acked_features: u64,
    pub(super) active: Option<Active>,
    /// A transport reset event waits for an eventq buffer.
    pub(super) reset_event_pending: bool,
    scratch: Vec<u8>,
    events: Vec<EpollEvent>,
}

impl Vsock {
    /// A device for `config`: checks the CID and binds and listens on `uds_path`.
    pub fn new(config: &VsockConfig) -> Result<Vsock, Error> {
        let metrics = Arc::new(VsockMetrics::default());
        Ok(Vsock {
            muxer: Muxer::new(config, Arc::clone(&metrics))?,
            metrics,
            acked_features: 0,
            active: None,
            reset_event_pending: false,
            scratch: vec![0; MAX_PAYLOAD as usize],
            events: vec![EpollEvent::default(); EVENTS_PER_CALL],
        })
    }

    /// The device's counters, shared.
    pub fn metrics(&self) -> Arc<VsockMetrics> {
        Arc::clone(&self.metrics)
    }

    /// The guest's CID.
    pub fn guest_cid(&self) -> u64 {
        self.muxer.guest_cid
    }

    /// Takes packets from the txq while the control backlog has room.
    fn process_tx(&mut self) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let [_, tx, _] = &mut active.queues;
        while self.muxer.backlog.len() < MAX_CONTROL_BACKLOG {
            let Some(chain) = next_chain_checked(tx, &active.mem, &active.irq, "virtio-vsock")
            else {
                break;
            };
            let head = chain.head_index();
            let packet = read_tx_packet(chain, &active.mem);
            if let Err(e) = tx.add_used(&active.mem, head, 0) {
                log_ratelimited!(
                    Level::Warn,
                    "virtio-vsock: cannot complete tx chain {head}: {e}"
                );
            }
            active.used[TX_QUEUE] = true;
            add_to_counter(&self.metrics.tx_packets, 1);
            self.muxer.handle_guest_packet(packet);
        }
    }

    /// Moves packets to the guest: every queued control packet first, then one
    /// round of reads from the readable streams. Stops when the rxq runs dry.
    fn pump_rx(&mut self) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        Self::drain_control(active, &mut self.muxer, &self.metrics);
        if !active.rx_starved {
            let ready = self.muxer.ready_readers(&mut self.events);
            'streams: for id in ready {
                for _ in 0..PACKETS_PER_STREAM_PASS {
                    // Control packets first (a RESPONSE before the data it allows).
                    Self::drain_control(active, &mut self.muxer, &self.metrics);
                    if active.rx_starved {
                        break 'streams;
                    }
                    let (head, buf) = match Self::rx_buffer(active, &self.metrics) {
                        Some(Some(got)) => got,
                        Some(None) => continue,
                        None => break 'streams,
                    };
                    let max = usize::try_from(buf.max_payload()).unwrap_or(0);
                    let max = max.min(self.scratch.len());
                    if max == 0 {
                        // Room for a header only: useless for data (and a read of 0
                        // bytes would look like the end of the stream).
                        Self::complete_empty(active, &self.metrics, head);
                        continue;
                    }
                    match self.muxer.read_for_guest(id, &mut self.scratch[..max]) {
                        Some(header) => {
                            let len = usize::try_from(header.len).unwrap_or(0);
                            let data = &self.scratch[..len];
                            Self::deliver(active, &self.metrics, head, &buf, &header, data);
                        }
                        None => {
                            // Not used: the chain goes back for the next packet.
                            active.queues[RX_QUEUE].go_to_previous_position();
                            continue 'streams;
                        }
                    }
                }
            }
            // A SHUTDOWN, RST or credit packet the reads queued goes out now if it can.
            Self::drain_control(active, &mut self.muxer, &self.metrics);
        }
        self.muxer.set_gate(!active.rx_starved);
    }

    /// Puts queued control packets on the rxq until it runs dry.
    fn drain_control(active: &mut Active, muxer: &mut Muxer, metrics: &VsockMetrics) {
        while muxer.has_control() {
            match Self::rx_buffer(active, metrics) {
                Some(Some((head, buf))) => {
                    if let Some(header) = muxer.pop_control() {
                        Self::deliver(active, metrics, head, &buf, &header, &[]);
                    }
                }
                Some(None) => {}
                None => break,
            }
        }
    }

    /// The next rx chain: `None` when there is none (the rxq is starved),
    /// `Some(None)` when it could not hold a packet (completed empty).
    fn rx_buffer(active: &mut Active, metrics: &VsockMetrics) -> Option<Option<(u16, RxBuffer)>> {
        let rx = &mut active.queues[RX_QUEUE];
        let Some(chain) = next_chain_checked(rx, &active.mem, &active.irq, "virtio-vsock") else {
            active.rx_starved = true;
            return None;
        };
        let head = chain.head_index();
        match RxBuffer::new(chain, &active.mem) {
            Ok(buf) => Some(Some((head, buf))),
            Err(e) => {
                log_ratelimited!(Level::Warn, "virtio-vsock: rx chain {head} unusable: {e}");
                Self::complete_empty(active, metrics, head);
                Some(None)
            }
        }
    }

    /// Completes an rx chain that cannot hold a packet with nothing in it.
    fn complete_empty(active: &mut Active, metrics: &VsockMetrics, head: u16) {
        add_to_counter(&metrics.rx_bad_buffers, 1);
        if let Err(e) = active.queues[RX_QUEUE].add_used(&active.mem, head, 0) {
            log_ratelimited!(Level::Warn, "virtio-vsock: cannot complete rx chain: {e}");
        }
        active.used[RX_QUEUE] = true;
    }

    /// Writes a packet into an rx chain and completes it.
    fn deliver(
        active: &mut Active,
        metrics: &VsockMetrics,
        head: u16,
        buf: &RxBuffer,
        header: &Header,
        data: &[u8],
    ) {
        let len = match buf.write(&active.mem, header, data) {
            Ok(len) => len,
            Err(e) => {
                log_ratelimited!(
                    Level::Warn,
                    "virtio-vsock: cannot fill rx chain {head}: {e}"
                );
                0
            }
        };
        if let Err(e) = active.queues[RX_QUEUE].add_used(&active.mem, head, len) {
            log_ratelimited!(Level::Warn, "virtio-vsock: cannot complete rx chain: {e}");
        }
        active.used[RX_QUEUE] = true;
        add_to_counter(&metrics.rx_packets, 1);
    }

    /// Puts a pending transport reset on the eventq if it has a buffer.
    fn deliver_reset_event(&mut self) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        if !self.reset_event_pending {
            return;
        }
        let queue = &mut active.queues[EVENT_QUEUE];
        let Some(chain) = next_chain_checked(queue, &active.mem, &active.irq, "virtio-vsock")
        else {
            return;
        };
        self.reset_event_pending = false;
        let head = chain.head_index();
        let id = VIRTIO_VSOCK_EVENT_TRANSPORT_RESET.to_le_bytes();
        let target = chain
            .filter(|d| d.is_write_only() && d.len() as usize >= id.len())
            .map(|d| d.addr())
            .next();
        let len = match target.map(|addr| active.mem.write_slice(&id, addr)) {
            Some(Ok(())) => id.len() as u32,
            _ => {
                log_ratelimited!(Level::Warn, "virtio-vsock: eventq chain {head} unusable");
                0
            }
        };
        if let Err(e) = queue.add_used(&active.mem, head, len) {
            log_ratelimited!(
                Level::Warn,
                "virtio-vsock: cannot complete event chain: {e}"
            );
        }
        active.used[EVENT_QUEUE] = true;
    }

    /// Tells the driver about used buffers, queue by queue, if it wants to know.
    fn signal(&mut self) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let mut notify = false;
        for (queue, used) in active.queues.iter_mut().zip(active.used.iter_mut()) {
            if std::mem::take(used) {
                notify |= queue.needs_notification(&active.mem).unwrap_or(true);
            }
        }
        if notify {
            if let Err(e) = active.irq.trigger(VIRTIO_MMIO_INT_VRING) {
                log_ratelimited!(
                    Level::Error,
                    "virtio-vsock: cannot raise the interrupt: {e}"
                );
            }
        }
    }

    /// Everything that may have become possible: tx, then rx, then tx again (the
    /// rx pass may have drained the backlog tx was waiting on), then interrupts.
    fn run(&mut self) {
        self.process_tx();
        self.pump_rx();
        if self.muxer.backlog.len() < MAX_CONTROL_BACKLOG {
            self.process_tx();
            self.pump_rx();
        }
        self.deliver_reset_event();
        self.signal();
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        device_type::VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_MAX_SIZE; NUM_QUEUES]
    }

    fn avail_features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let config: [u8; CONFIG_SPACE_SIZE] = self.muxer.guest_cid.to_le_bytes();
        read_config_space(&config, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        log_ratelimited!(
            Level::Warn,
            "virtio-vsock: ignoring {}-byte config write at {offset:#x}: read-only",
            data.len()
        );
    }

    fn activate(&mut self, params: ActivateParams) -> Result<(), ActivateError> {
        let ActivateParams {
            mem,
            queues,
            acked_features,
            irq,
        } = params;
        let got = queues.len();
        let result = match <[Queue; NUM_QUEUES]>::try_from(queues) {
            Err(_) => Err(ActivateError::QueueCount {
                expected: NUM_QUEUES,
                got,
            }),
            Ok(queues) => match queues.iter().position(|q| !q.ready()) {
                Some(index) => Err(ActivateError::QueueNotReady(index)),
                None => Ok(queues),
            },
        };
        let queues = result.inspect_err(|_| add_to_counter(&self.metrics.activate_fails, 1))?;
        self.muxer.reset();
        self.acked_features = acked_features;
        self.active = Some(Active {
            mem,
            queues,
            irq,
            rx_starved: false,
            used: [false; NUM_QUEUES],
        });
        self.muxer.active = true;
        self.muxer.set_gate(true);
        debug!("virtio-vsock: activated with features {acked_features:#x}");
        Ok(())
    }

    fn reset(&mut self) {
        self.muxer.reset();
        self.muxer.active = false;
        self.active = None;
        self.acked_features = 0;
        self.reset_event_pending = false;
    }

    fn process_queue(&mut self, index: usize) {
        let Some(active) = self.active.as_mut() else {
            log_ratelimited!(
                Level::Warn,
                "virtio-vsock: queue notification before activation"
            );
            return;
        };
        match index {
            RX_QUEUE => active.rx_starved = false,
            TX_QUEUE | EVENT_QUEUE => {}
            _ => {
                log_ratelimited!(
                    Level::Warn,
                    "virtio-vsock: notification for nonexistent queue {index}"
                );
                return;
            }
        }
        self.run();
    }

    fn event_fds(&self) -> Vec<(RawFd, u32)> {
        vec![(self.muxer.as_raw_fd(), EPOLL_EVENT_TOKEN)]
    }

    fn process_event(&mut self, token: u32) {
        if token != EPOLL_EVENT_TOKEN {
            log_ratelimited!(Level::Warn, "virtio-vsock: event for unknown token {token}");
            return;
        }
        for ready in self.muxer.poll(&mut self.events) {
            match ready {
                Ready::Listener => self.muxer.accept(),
                Ready::Timer => self.muxer.timer_fired(),
                Ready::Readers => {}
                Ready::Stream { id, hung_up } => self.muxer.stream_ready(id, hung_up),
            }
        }
        self.run();
    }

    fn save(&self) -> VirtioDeviceState {
        VirtioDeviceState::Vsock(self.save_state())
    }

    fn restore(
        &mut self,
        state: &VirtioDeviceState,
        activate: Option<ActivateParams>,
    ) -> Result<(), RestoreError> {
        self.restore_state(state, activate)
    }
}

#[path = "persist.rs"]
mod persist;
pub use persist::VsockState;
