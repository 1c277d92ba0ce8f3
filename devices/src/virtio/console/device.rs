//! Console state and its [`VirtioDevice`] implementation.

use std::collections::VecDeque;
use std::fmt;
use std::io::Write;

use crate::GuestMemoryMmap;
use log::{debug, warn, Level};
use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::{Bytes, GuestMemoryError};
use vmm_sys_util::eventfd::EventFd;

use super::{
    ConsoleError, ErrorChain, CONFIG_SPACE_SIZE, CONSOLE_COLS, CONSOLE_ROWS, INPUT_BUFFER_CAPACITY,
    MAX_TX_CHAIN_BYTES, NUM_QUEUES, QUEUE_MAX_SIZE, RX_QUEUE, TX_QUEUE, VIRTIO_CONSOLE_F_SIZE,
};
use crate::ratelimit::log_ratelimited;
use crate::snapshot::RestoreError;
use crate::virtio::{
    device_type, next_chain_checked, ActivateError, ActivateParams, IrqTrigger, VirtioDevice,
    VirtioDeviceState, VIRTIO_F_VERSION_1, VIRTIO_MMIO_INT_VRING,
};

/// Queue sizes reported to the transport, one per queue.
const QUEUE_MAX_SIZES: [u16; NUM_QUEUES] = [QUEUE_MAX_SIZE; NUM_QUEUES];

/// What the device holds between activation and reset.
struct Active {
    mem: GuestMemoryMmap,
    rx: Queue,
    tx: Queue,
    irq: IrqTrigger,
}

/// A single-port virtio console: guest output goes to a host writer, host input is
/// buffered until the guest posts receive buffers.
pub struct Console {
    /// Where guest output goes (usually stdout).
    out: Box<dyn Write + Send>,
    /// Host input not yet delivered, at most [`INPUT_BUFFER_CAPACITY`] bytes. Kept
    /// across reset: like input typed before activation, it goes to the next driver.
    pending: VecDeque<u8>,
    /// Signalled when input was refused for lack of room and room has been made.
    input_room: EventFd,
    /// [`Console::enqueue_input`] refused bytes since `input_room` was last signalled.
    input_refused: bool,
    /// Queues and memory while the driver is running; `None` before activation and
    /// after reset.
    active: Option<Active>,
    /// The driver has sent something on the transmitq since activation: its console
    /// is open. Input waits until then, because Linux discards receive data that
    /// arrives while the port is not yet connected (between posting its first
    /// receive buffers and registering the console), and a pipe as cabin's stdin
    /// has its bytes ready from the start.
    listening: bool,
    /// Guest output bytes dropped because the host writer failed.
    dropped_output: u64,
    /// Features the driver accepted at the last activation.
    acked_features: u64,
}

impl fmt::Debug for Console {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Console")
            .field("pending", &self.pending.len())
            .field("input_refused", &self.input_refused)
            .field("active", &self.active.is_some())
            .field("listening", &self.listening)
            .field("dropped_output", &self.dropped_output)
            .finish_non_exhaustive()
    }
}

impl Console {
    /// A console whose guest output goes to `out`; `input_room` is signalled when
    /// input [`Console::enqueue_input`] refused can be offered again.
    pub fn new(out: Box<dyn Write + Send>, input_room: EventFd) -> Console {
        Console {
            out,
            pending: VecDeque::new(),
            input_room,
            input_refused: false,
            active: None,
            listening: false,
            dropped_output: 0,
            acked_features: 0,
        }
    }

    /// Host input (stdin) for the guest. It is buffered in the device (at most
    /// [`INPUT_BUFFER_CAPACITY`] bytes) and delivered into receiveq buffers as soon
    /// as the guest provides them and its console is open (it has transmitted once):
    /// right away if so, otherwise when the driver posts buffers and notifies the
    /// receiveq (`process_queue(RX_QUEUE)`) or first transmits. Returns how many leading bytes were
    /// taken; the caller keeps the rest and offers it again once `input_room` is
    /// signalled. Nothing is ever dropped.
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        let mut accepted = 0;
        loop {
            let room = INPUT_BUFFER_CAPACITY.saturating_sub(self.pending.len());
            let take = room.min(bytes.len() - accepted);
            self.pending.extend(&bytes[accepted..accepted + take]);
            accepted += take;
            let before = self.pending.len();
            self.deliver_input();
            // Stop when everything is in, or when delivering freed no room.
            if accepted == bytes.len() || self.pending.len() == before {
                break;
            }
        }
        if accepted < bytes.len() {
            self.input_refused = true;
        }
        accepted
    }

    /// Host input bytes held in the device, waiting for receive buffers.
    pub fn pending_input_bytes(&self) -> usize {
        self.pending.len()
    }

    /// Guest output bytes dropped so far because the host writer failed.
    pub fn dropped_output_bytes(&self) -> u64 {
        self.dropped_output
    }

    /// Fills the guest's receive buffers with pending input until either runs out.
    fn deliver_input(&mut self) {
        if !self.listening {
            return;
        }
        let Some(Active { mem, rx, irq, .. }) = self.active.as_mut() else {
            return;
        };
        let mut used_any = false;
        let before = self.pending.len();
        while !self.pending.is_empty() {
            let Some(chain) = next_chain_checked(rx, mem, irq, "virtio-console receive queue")
            else {
                break;
            };
            let head = chain.head_index();
            let written = fill_rx_chain(mem, chain, &mut self.pending);
            add_used(rx, mem, RX_QUEUE, head, written);
            used_any = true;
        }
        if used_any {
            signal_used(rx, mem, irq, RX_QUEUE);
        }
        if self.input_refused && self.pending.len() < before {
            self.input_refused = false;
            if let Err(e) = self.input_room.write(1) {
                // Only a counter overflow fails, and then the eventfd is readable anyway.
                log_ratelimited!(Level::Warn, "virtio-console: cannot signal input room: {e}");
            }
        }
    }

    /// Writes every available transmit chain to the host writer.
    fn process_tx(&mut self) {
        let Some(Active { mem, tx, irq, .. }) = self.active.as_mut() else {
            return;
        };
        let mut used_any = false;
        while let Some(chain) = next_chain_checked(tx, mem, irq, "virtio-console transmit queue") {
            let head = chain.head_index();
            let bytes = read_tx_chain(mem, chain);
            if !bytes.is_empty() {
                let result = self.out.write_all(&bytes).and_then(|()| self.out.flush());
                if let Err(err) = result {
                    if self.dropped_output == 0 {
                        warn!(
                            "virtio-console: {}; dropping guest output, further errors \
                             are counted, not logged",
                            ErrorChain(&ConsoleError::Output(err))
                        );
                    }
                    self.dropped_output = self.dropped_output.saturating_add(bytes.len() as u64);
                }
            }
            // The device wrote nothing into a transmit buffer.
            add_used(tx, mem, TX_QUEUE, head, 0);
            used_any = true;
        }
        if used_any {
            signal_used(tx, mem, irq, TX_QUEUE);
            if !self.listening {
                self.listening = true;
                self.deliver_input();
            }
        }
    }
}

/// Copies pending input into the device-writable descriptors of a receive chain,
/// removing what was copied from `pending`. Returns the number of bytes written (the
/// used length). Device-readable descriptors are skipped; the first descriptor that
/// is not fully backed by guest memory ends the chain, since anything after it
/// would not be contiguous with what the guest sees as the data.
fn fill_rx_chain(
    mem: &GuestMemoryMmap,
    chain: DescriptorChain<&GuestMemoryMmap>,
    pending: &mut VecDeque<u8>,
) -> u32 {
    let head = chain.head_index();
    let mut written: usize = 0;
    for desc in chain {
        if pending.is_empty() {
            break;
        }
        if !desc.is_write_only() {
            log_ratelimited!(
                Level::Warn,
                "virtio-console: receive chain {head} has a device-readable descriptor, \
                 skipped"
            );
            continue;
        }
        let len = usize::try_from(desc.len())
            .unwrap_or(usize::MAX)
            .min(pending.len());
        let result = mem.write_slice(&pending.make_contiguous()[..len], desc.addr());
        match result {
            Ok(()) => {
                pending.drain(..len);
                written += len;
            }
            Err(source) => {
                if let GuestMemoryError::PartialBuffer { completed, .. } = source {
                    let completed = completed.min(len);
                    pending.drain(..completed);
                    written += completed;
                }
                let err = ConsoleError::guest_memory(desc.addr(), len, source);
                log_ratelimited!(
                    Level::Warn,
                    "virtio-console: receive chain {head}: {}",
                    ErrorChain(&err)
                );
                break;
            }
        }
    }
    // `written` is at most INPUT_BUFFER_CAPACITY.
    u32::try_from(written).unwrap_or(u32::MAX)
}

/// Reads the device-readable descriptors of a transmit chain, at most
/// [`MAX_TX_CHAIN_BYTES`] in total. Device-writable descriptors and descriptors
/// outside guest memory are skipped.
fn read_tx_chain(mem: &GuestMemoryMmap, chain: DescriptorChain<&GuestMemoryMmap>) -> Vec<u8> {
    let head = chain.head_index();
    let mut bytes = Vec::new();
    for desc in chain {
        if desc.is_write_only() {
            log_ratelimited!(
                Level::Warn,
                "virtio-console: transmit chain {head} has a device-writable descriptor, \
                 skipped"
            );
            continue;
        }
        let want = usize::try_from(desc.len()).unwrap_or(usize::MAX);
        let room = MAX_TX_CHAIN_BYTES - bytes.len();
        if want > room {
            log_ratelimited!(
                Level::Warn,
                "virtio-console: transmit chain {head} exceeds {MAX_TX_CHAIN_BYTES} bytes, \
                 rest dropped"
            );
        }
        let len = want.min(room);
        let start = bytes.len();
        bytes.resize(start + len, 0);
        if let Err(source) = mem.read_slice(&mut bytes[start..], desc.addr()) {
            bytes.truncate(start);
            let err = ConsoleError::guest_memory(desc.addr(), len, source);
            log_ratelimited!(
                Level::Warn,
                "virtio-console: transmit chain {head}: {}, descriptor skipped",
                ErrorChain(&err)
            );
        }
        if want > room {
            break;
        }
    }
    bytes
}

/// Returns chain `head` to the used ring with `len` bytes written, logging failure.
fn add_used(queue: &mut Queue, mem: &GuestMemoryMmap, index: usize, head: u16, len: u32) {
    if let Err(source) = queue.add_used(mem, head, len) {
        let err = ConsoleError::AddUsed {
            queue: index,
            head,
            source,
        };
        log_ratelimited!(Level::Warn, "virtio-console: {}", ErrorChain(&err));
    }
}

/// Raises the used-buffer interrupt if the driver wants one for this queue.
fn signal_used(queue: &mut Queue, mem: &GuestMemoryMmap, irq: &IrqTrigger, index: usize) {
    let err = match queue.needs_notification(mem) {
        Ok(false) => return,
        Ok(true) => match irq.trigger(VIRTIO_MMIO_INT_VRING) {
            Ok(()) => return,
            Err(source) => ConsoleError::Irq(source),
        },
        Err(source) => ConsoleError::NeedsNotification {
            queue: index,
            source,
        },
    };
    log_ratelimited!(Level::Error, "virtio-console: {}", ErrorChain(&err));
}

/// The configuration space: `cols`, `rows`, then `max_nr_ports` and `emerg_wr` as 0.
fn config_space() -> [u8; CONFIG_SPACE_SIZE] {
    let mut config = [0u8; CONFIG_SPACE_SIZE];
    config[0..2].copy_from_slice(&CONSOLE_COLS.to_le_bytes());
    config[2..4].copy_from_slice(&CONSOLE_ROWS.to_le_bytes());
    config
}

impl VirtioDevice for Console {
    fn save(&self) -> VirtioDeviceState {
        VirtioDeviceState::Console(self.save_state())
    }

    fn restore(
        &mut self,
        state: &VirtioDeviceState,
        activate: Option<ActivateParams>,
    ) -> Result<(), RestoreError> {
        self.restore_state(state, activate)
    }

    fn device_type(&self) -> u32 {
        device_type::CONSOLE
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_MAX_SIZES
    }

    fn avail_features(&self) -> u64 {
        VIRTIO_F_VERSION_1 | VIRTIO_CONSOLE_F_SIZE
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let config = config_space();
        crate::virtio::read_config_space(&config, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // emerg_wr is the only writable field, and only with VIRTIO_CONSOLE_F_EMERG_WRITE,
        // which this device does not offer.
        log_ratelimited!(
            Level::Warn,
            "virtio-console: ignoring {}-byte config write at offset {offset:#x}",
            data.len()
        );
    }

    fn activate(&mut self, params: ActivateParams) -> Result<(), ActivateError> {
        let ActivateParams {
            mem,
            queues,
            irq,
            acked_features,
        } = params;
        let [rx, tx] = <[Queue; NUM_QUEUES]>::try_from(queues).map_err(|queues| {
            ActivateError::QueueCount {
                expected: NUM_QUEUES,
                got: queues.len(),
            }
        })?;
        if !rx.ready() {
            return Err(ActivateError::QueueNotReady(RX_QUEUE));
        }
        if !tx.ready() {
            return Err(ActivateError::QueueNotReady(TX_QUEUE));
        }
        if self.active.is_some() {
            warn!("virtio-console: activated again without a reset, replacing the queues");
        }
        self.acked_features = acked_features;
        self.active = Some(Active { mem, rx, tx, irq });
        debug!(
            "virtio-console: activated, {} bytes of input pending",
            self.pending.len()
        );
        self.deliver_input();
        Ok(())
    }

    fn reset(&mut self) {
        self.listening = false;
        self.acked_features = 0;
        if self.active.take().is_some() {
            debug!("virtio-console: reset");
        }
    }

    fn process_queue(&mut self, index: usize) {
        if self.active.is_none() {
            log_ratelimited!(
                Level::Debug,
                "virtio-console: queue {index} notified while inactive, ignored"
            );
            return;
        }
        match index {
            RX_QUEUE => self.deliver_input(),
            TX_QUEUE => self.process_tx(),
            _ => log_ratelimited!(
                Level::Warn,
                "virtio-console: notification for nonexistent queue {index}, ignored"
            ),
        }
    }
}

#[path = "persist.rs"]
mod persist;
pub use persist::ConsoleState;
