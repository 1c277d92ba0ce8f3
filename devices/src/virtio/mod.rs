//! virtio devices on the virtio-mmio transport (virtio 1.x).
//!
//! A device implements [`VirtioDevice`]; [`mmio::MmioTransport`] exposes it to the
//! guest as a virtio-mmio register window on the MMIO bus. The transport owns feature
//! negotiation, the status state machine and queue setup; when the driver sets
//! DRIVER_OK it hands the validated queues to the device with [`VirtioDevice::activate`].
//! Afterwards the VMM's event loop calls [`VirtioDevice::process_queue`] when a queue's
//! notification eventfd (a KVM ioeventfd on QueueNotify) fires, and
//! [`VirtioDevice::process_event`] for the device's own file descriptors.

pub mod block;
pub mod console;
pub mod mmio;
pub mod net;
pub mod persist;
pub(crate) mod rings;
pub mod rng;
#[cfg(test)]
pub(crate) mod test_utils;
pub mod vsock;

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use crate::snapshot::RestoreError;
use crate::GuestMemoryMmap;
use log::Level;
use thiserror::Error;
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vmm_sys_util::eventfd::EventFd;

pub use persist::VirtioDeviceState;

/// virtio device ids (virtio 1.2, section 5).
pub mod device_type {
    /// Network card.
    pub const NET: u32 = 1;
    /// Block device.
    pub const BLOCK: u32 = 2;
    /// Console.
    pub const CONSOLE: u32 = 3;
    /// Entropy source.
    pub const RNG: u32 = 4;
    /// Socket device (AF_VSOCK).
    pub const VSOCK: u32 = 19;
}

/// VIRTIO_F_VERSION_1: the device speaks virtio 1.x (mandatory for virtio-mmio v2).
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;

/// Interrupt status bit: a used buffer was added to a queue.
pub const VIRTIO_MMIO_INT_VRING: u32 = 1 << 0;
/// Interrupt status bit: the configuration space changed.
pub const VIRTIO_MMIO_INT_CONFIG: u32 = 1 << 1;

/// How a device raises its (single, level-style) virtio-mmio interrupt: set a bit in
/// the transport's InterruptStatus register, then signal the irqfd.
///
/// It also carries the device's DEVICE_NEEDS_RESET bit: a device that finds its
/// queue broken by the driver (an avail index more than a queue ahead, a chain that
/// loops or has no status to report through) calls [`IrqTrigger::fail`]; the
/// transport then shows NEEDS_RESET in the Status register and stops handing the
/// device notifications until the driver resets it.
#[derive(Debug, Clone)]
pub struct IrqTrigger {
    status: Arc<AtomicU32>,
    evt: Arc<EventFd>,
    needs_reset: Arc<AtomicBool>,
}

impl IrqTrigger {
    /// Wraps the irqfd the VMM registered for this device's GSI.
    pub fn new(evt: EventFd) -> Self {
        IrqTrigger {
            status: Arc::new(AtomicU32::new(0)),
            evt: Arc::new(evt),
            needs_reset: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Marks the device failed (DEVICE_NEEDS_RESET) and raises the configuration
    /// change interrupt so the driver looks at the status (virtio 1.2, 2.1.2).
    /// Returns false when it was already marked: the caller logs only the first time.
    pub fn fail(&self) -> bool {
        if self.needs_reset.swap(true, Ordering::SeqCst) {
            return false;
        }
        // The bit is set whatever happens to the interrupt; a driver that polls the
        // status still sees it.
        let _ = self.trigger(VIRTIO_MMIO_INT_CONFIG);
        true
    }

    /// Whether the device marked itself failed since the last reset.
    pub fn needs_reset(&self) -> bool {
        self.needs_reset.load(Ordering::SeqCst)
    }

    /// Snapshot restore: puts back the failed mark as saved, without an interrupt
    /// (the restored InterruptStatus brings its own).
    pub(crate) fn set_needs_reset(&self, needs_reset: bool) {
        self.needs_reset.store(needs_reset, Ordering::SeqCst);
    }

    /// Device reset: clears the failed mark.
    pub fn clear_needs_reset(&self) {
        self.needs_reset.store(false, Ordering::SeqCst);
    }

    /// Raises the interrupt with `bits` (VIRTIO_MMIO_INT_*) set in InterruptStatus.
    pub fn trigger(&self, bits: u32) -> io::Result<()> {
        self.status.fetch_or(bits, Ordering::SeqCst);
        self.evt.write(1)
    }

    /// Current InterruptStatus.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// InterruptACK: clears `bits`.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    /// The irqfd (for registering with KVM).
    pub fn eventfd(&self) -> &EventFd {
        &self.evt
    }
}

/// Copies device configuration space starting at `offset` into `data`; bytes past
/// its end (or an offset beyond it) read as 0. Shared by every device's
/// [`VirtioDevice::read_config`].
pub fn read_config_space(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Some(rest) = usize::try_from(offset)
        .ok()
        .and_then(|start| config.get(start..))
    else {
        return;
    };
    let n = data.len().min(rest.len());
    data[..n].copy_from_slice(&rest[..n]);
}

/// The next available chain of `queue`, for a device that has not failed. A queue
/// the driver broke (an avail index more than a queue ahead, a chain head past the
/// descriptor table) marks the device failed through `irq`, logged once with
/// `label`, instead of reaching virtio-queue's own unlimited error logging
/// (`pop_descriptor_chain`, `add_used` of a bad head) at the guest's pace.
pub(crate) fn next_chain_checked<'m>(
    queue: &mut Queue,
    mem: &'m GuestMemoryMmap,
    irq: &IrqTrigger,
    label: &str,
) -> Option<DescriptorChain<&'m GuestMemoryMmap>> {
    if irq.needs_reset() {
        return None;
    }
    let size = queue.size();
    let error = match queue.iter(mem).map(|mut chains| chains.next()) {
        Ok(None) => return None,
        Ok(Some(chain)) if chain.head_index() < size => return Some(chain),
        Ok(Some(chain)) => format!("chain head {} past the table", chain.head_index()),
        Err(e) => format!("avail ring: {e}"),
    };
    if irq.fail() {
        crate::ratelimit::log_ratelimited!(
            Level::Warn,
            "{label}: the driver broke a queue ({error}); the device needs a reset"
        );
    }
    None
}

/// Adds `n` to a device metrics counter (wrapping, as counters do).
pub(crate) fn add_to_counter(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Why a device could not start.
#[derive(Debug, Error)]
pub enum ActivateError {
    /// The driver did not set up a queue the device needs.
    #[error("Queue {0} is not ready")]
    QueueNotReady(usize),
    /// Wrong number of queues.
    #[error("Device needs {expected} queues, got {got}")]
    QueueCount {
        /// Needed.
        expected: usize,
        /// Given.
        got: usize,
    },
    /// Any device-specific failure.
    #[error("Cannot activate the device: {0}")]
    Device(String),
}

/// Everything a device needs once the driver is ready.
#[derive(Debug)]
pub struct ActivateParams {
    /// Guest memory.
    pub mem: GuestMemoryMmap,
    /// The queues, validated by the transport, in index order.
    pub queues: Vec<Queue>,
    /// Features the driver accepted (a subset of [`VirtioDevice::avail_features`]).
    pub acked_features: u64,
    /// The device's interrupt.
    pub irq: IrqTrigger,
}

/// A virtio device behind a transport.
pub trait VirtioDevice: Send {
    /// virtio device id ([`device_type`]).
    fn device_type(&self) -> u32;
    /// Maximum size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Features the device offers (including [`VIRTIO_F_VERSION_1`]).
    fn avail_features(&self) -> u64;
    /// Reads device configuration space at `offset`; out-of-range bytes read as 0.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes device configuration space; most devices ignore this.
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// Changes whenever the device changes its configuration space on its own (e.g.
    /// a new disk capacity), so the driver can tell a torn multi-register read
    /// (the transport's ConfigGeneration register).
    fn config_generation(&self) -> u32 {
        0
    }
    /// Starts the device with the driver's queues.
    fn activate(&mut self, params: ActivateParams) -> Result<(), ActivateError>;
    /// Stops the device (driver reset); it may be activated again later.
    fn reset(&mut self);
    /// Processes available buffers on queue `index` (after a notification).
    fn process_queue(&mut self, index: usize);
    /// Host file descriptors the event loop must watch for this device (e.g. a TAP
    /// or stdin), with an opaque token passed back to [`VirtioDevice::process_event`].
    fn event_fds(&self) -> Vec<(RawFd, u32)> {
        Vec::new()
    }
    /// One of [`VirtioDevice::event_fds`] is readable.
    fn process_event(&mut self, _token: u32) {}
    /// The device's own state for a snapshot, taken while the vCPUs are paused:
    /// its live queues (none before activation), the features the driver accepted
    /// and whatever else the device keeps between requests.
    fn save(&self) -> VirtioDeviceState;
    /// Puts back `state` into a device freshly built from the same configuration,
    /// checking it first (a snapshot is hostile input). With `activate` (built by
    /// the transport from the state's live queues, checked against guest memory)
    /// the device then runs on those queues from their saved indices, as
    /// [`VirtioDevice::activate`] would start it. Refuses a state of another kind
    /// of device, or one that does not fit this device.
    fn restore(
        &mut self,
        state: &VirtioDeviceState,
        activate: Option<ActivateParams>,
    ) -> Result<(), RestoreError>;
}

#[cfg(test)]
mod read_config_tests {
    use super::read_config_space;

    #[test]
    fn read_config_space_clips_at_the_end_and_zero_fills() {
        let config = [1u8, 2, 3, 4];
        let mut data = [0xffu8; 4];
        read_config_space(&config, 2, &mut data);
        assert_eq!(data, [3, 4, 0, 0]);
        read_config_space(&config, u64::MAX, &mut data);
        assert_eq!(data, [0; 4]);
        read_config_space(&config, 0, &mut data[..2]);
        assert_eq!(data[..2], [1, 2]);
    }
}
