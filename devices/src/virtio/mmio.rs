//! virtio-mmio transport, register layout version 2 (virtio 1.2, section 4.2).
//!
//! [`MmioTransport`] is the register window the guest's `virtio_mmio` driver sees for
//! one [`VirtioDevice`]. It does everything that is the same for every device:
//! - identification: magic value, version, device and vendor id;
//! - feature negotiation: the driver can only accept features the device offers, and
//!   FEATURES_OK is refused unless it accepted VIRTIO_F_VERSION_1;
//! - the device status state machine: ACKNOWLEDGE, DRIVER, FEATURES_OK, DRIVER_OK
//!   added one at a time in that order, FAILED at any time, 0 to reset;
//! - virtqueue setup, checked (size, alignment, rings inside guest memory) before a
//!   queue may become ready, and handed to the device on DRIVER_OK;
//! - InterruptStatus and InterruptACK, backed by the device's [`IrqTrigger`];
//! - queue notifications: the VMM normally catches QueueNotify writes with a KVM
//!   ioeventfd per queue ([`MmioTransport::queue_evts`]) and calls
//!   [`MmioTransport::process_queue`]; a write that reaches the transport (no
//!   ioeventfd, as in tests) signals the same eventfd.
//!
//! Registers are 32 bits wide and little-endian; accesses of any other width to the
//! register area are ignored (reads return zeros). The device configuration space
//! starts at [`regs::CONFIG`] and takes any width. The guest is hostile: no access
//! panics, and anything unexpected is logged, rate-limited, and otherwise ignored.

use std::fmt;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use log::Level;
use thiserror::Error;
use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE as ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER as DRIVER,
    VIRTIO_CONFIG_S_DRIVER_OK as DRIVER_OK, VIRTIO_CONFIG_S_FAILED as FAILED,
    VIRTIO_CONFIG_S_FEATURES_OK as FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET as NEEDS_RESET,
};
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::{Queue, QueueState, QueueT};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{
    ActivateError, ActivateParams, IrqTrigger, VirtioDevice, VIRTIO_F_VERSION_1,
    VIRTIO_MMIO_INT_CONFIG,
};
use crate::bus::BusDevice;
use crate::ratelimit::log_ratelimited;

/// Register offsets within the window (virtio 1.2, section 4.2.2, version 2 layout).
/// R: the driver reads it; W: the driver writes it.
pub mod regs {
    /// R: the magic value "virt".
    pub const MAGIC_VALUE: u64 = 0x000;
    /// R: the register layout version (2).
    pub const VERSION: u64 = 0x004;
    /// R: the virtio device id.
    pub const DEVICE_ID: u64 = 0x008;
    /// R: the vendor id.
    pub const VENDOR_ID: u64 = 0x00c;
    /// R: 32 of the device's feature bits, chosen by DeviceFeaturesSel.
    pub const DEVICE_FEATURES: u64 = 0x010;
    /// W: which 32 feature bits DeviceFeatures shows (0: bits 0-31, 1: bits 32-63).
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    /// W: 32 of the feature bits the driver accepts, chosen by DriverFeaturesSel.
    pub const DRIVER_FEATURES: u64 = 0x020;
    /// W: which 32 feature bits DriverFeatures sets.
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    /// W: the queue the Queue* registers apply to.
    pub const QUEUE_SEL: u64 = 0x030;
    /// R: maximum size of the selected queue, 0 if it does not exist.
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    /// W: size of the selected queue.
    pub const QUEUE_NUM: u64 = 0x038;
    /// RW: the selected queue is set up (1) or not (0).
    pub const QUEUE_READY: u64 = 0x044;
    /// W: the driver made buffers available in the queue with the written index.
    pub const QUEUE_NOTIFY: u64 = 0x050;
    /// R: pending interrupt causes (VIRTIO_MMIO_INT_*).
    pub const INTERRUPT_STATUS: u64 = 0x060;
    /// W: interrupt causes the driver handled.
    pub const INTERRUPT_ACK: u64 = 0x064;
    /// RW: device status; writing 0 resets the device.
    pub const STATUS: u64 = 0x070;
    /// W: low 32 bits of the selected queue's descriptor table address.
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    /// W: high 32 bits of the selected queue's descriptor table address.
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    /// W: low 32 bits of the selected queue's driver area (available ring).
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    /// W: high 32 bits of the selected queue's driver area (available ring).
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    /// W: low 32 bits of the selected queue's device area (used ring).
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    /// W: high 32 bits of the selected queue's device area (used ring).
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    /// W: the shared memory region the SHM* registers describe.
    pub const SHM_SEL: u64 = 0x0ac;
    /// R: low 32 bits of the selected shared memory region's length.
    pub const SHM_LEN_LOW: u64 = 0x0b0;
    /// R: high 32 bits of the selected shared memory region's length.
    pub const SHM_LEN_HIGH: u64 = 0x0b4;
    /// R: low 32 bits of the selected shared memory region's address.
    pub const SHM_BASE_LOW: u64 = 0x0b8;
    /// R: high 32 bits of the selected shared memory region's address.
    pub const SHM_BASE_HIGH: u64 = 0x0bc;
    /// R: changes whenever the configuration space changes.
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    /// Start of the device-specific configuration space.
    pub const CONFIG: u64 = 0x100;
}

/// Offset of QueueNotify, where the VMM registers one ioeventfd per queue with the
/// queue index as datamatch.
pub const NOTIFY_REG_OFFSET: u64 = regs::QUEUE_NOTIFY;
/// Size of one device's MMIO window (registers and configuration space).
pub const MMIO_WINDOW_SIZE: u64 = 0x1000;

/// MagicValue: "virt" read as a little-endian u32.
const MAGIC: u32 = u32::from_le_bytes(*b"virt");
/// Version: the virtio 1.x (non-legacy) register layout.
const VERSION: u32 = 2;
/// VendorID: "CABI" read as a little-endian u32.
const VENDOR_ID: u32 = u32::from_le_bytes(*b"CABI");
/// Width of every register in bytes.
const REGISTER_WIDTH: usize = 4;
/// The SHMLen/SHMBase value meaning "no such shared memory region" (all ones in
/// both halves; this transport has none).
const NO_SHM_REGION: u32 = u32::MAX;
/// Feature select value for feature bits 0-31.
const FEATURES_SEL_LOW: u32 = 0;
/// Feature select value for feature bits 32-63.
const FEATURES_SEL_HIGH: u32 = 1;
/// QueueReady value: the queue is not in use.
const QUEUE_READY_OFF: u32 = 0;
/// QueueReady value: the queue is set up and may be used.
const QUEUE_READY_ON: u32 = 1;
/// The initialization bits in the order the driver must set them (virtio 1.2,
/// section 3.1.1).
const INIT_SEQUENCE: [u32; 4] = [ACKNOWLEDGE, DRIVER, FEATURES_OK, DRIVER_OK];

/// Split virtqueue layout (virtio 1.2, section 2.7), for checking that the rings
/// lie in guest memory.
mod ring {
    /// One descriptor: addr (le64), len (le32), flags (le16), next (le16).
    pub const DESC_SIZE: u64 = 16;
    /// flags and idx (le16 each) before the ring entries of both rings.
    pub const HEADER_SIZE: u64 = 4;
    /// used_event / avail_event (le16) after the ring entries; always laid out.
    pub const EVENT_SIZE: u64 = 2;
    /// One available ring entry: a descriptor index (le16).
    pub const AVAIL_ELEM_SIZE: u64 = 2;
    /// One used ring entry: id (le32) and len (le32).
    pub const USED_ELEM_SIZE: u64 = 8;
}

/// Errors of the virtio-mmio transport. Only the first two are returned to the VMM;
/// the others describe guest accesses the transport refused, and are logged.
#[derive(Debug, Error)]
pub enum Error {
    /// The device declares a queue size the virtio-queue crate cannot use.
    #[error("Queue {index} of the device has invalid maximum size {max_size}")]
    QueueMaxSize {
        /// Queue index.
        index: usize,
        /// The declared maximum.
        max_size: u16,
        /// Why virtio-queue refused it.
        #[source]
        source: virtio_queue::Error,
    },
    /// Creating a queue's notification eventfd failed.
    #[error("Cannot create the notification eventfd of queue {index}")]
    QueueEventFd {
        /// Queue index.
        index: usize,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The offset is not a register the driver may write.
    #[error("Register {offset:#x} does not exist or is read-only")]
    NotWritable {
        /// Offset in the window.
        offset: u64,
    },
    /// DriverFeatures written outside the feature negotiation phase.
    #[error("Driver features are only writable after DRIVER and before FEATURES_OK (status {status:#x})")]
    FeaturesLocked {
        /// Device status at the time.
        status: u32,
    },
    /// DriverFeaturesSel names neither the low nor the high feature word.
    #[error("Driver feature select {select} does not exist")]
    FeatureSelect {
        /// The selected word.
        select: u32,
    },
    /// The written status does not follow the initialization sequence.
    #[error("Status change from {from:#x} to {to:#x} is not allowed")]
    StatusTransition {
        /// Status before the write.
        from: u32,
        /// The written status.
        to: u32,
    },
    /// FEATURES_OK without VIRTIO_F_VERSION_1 among the accepted features.
    #[error(
        "FEATURES_OK refused: the driver did not accept VIRTIO_F_VERSION_1 (features {acked:#x})"
    )]
    Version1NotAccepted {
        /// The features the driver accepted.
        acked: u64,
    },
    /// QueueSel names a queue the device does not have.
    #[error("Queue {index} does not exist")]
    QueueSelect {
        /// The selected queue.
        index: u32,
    },
    /// A queue register written outside the queue setup phase.
    #[error(
        "Queues are only configurable after FEATURES_OK and before DRIVER_OK (status {status:#x})"
    )]
    QueueLocked {
        /// Device status at the time.
        status: u32,
    },
    /// A queue register written while the queue is ready.
    #[error("Queue {index} is ready; its configuration cannot change")]
    QueueAlreadyReady {
        /// Queue index.
        index: usize,
    },
    /// QueueReady written with neither 0 nor 1.
    #[error("QueueReady value {value} is neither 0 nor 1")]
    QueueReadyValue {
        /// The written value.
        value: u32,
    },
    /// The queue size is 0, not a power of two, or above the maximum.
    #[error("Queue {index} size {size} is not a power of two between 1 and {max_size}")]
    QueueSize {
        /// Queue index.
        index: usize,
        /// The size the driver wrote.
        size: u32,
        /// The queue's maximum size.
        max_size: u16,
    },
    /// A ring address breaks the ring's alignment requirement.
    #[error("Queue {index} {ring} at {addr:#x} is misaligned")]
    QueueMisaligned {
        /// Queue index.
        index: usize,
        /// Which ring.
        ring: &'static str,
        /// The address the driver wrote.
        addr: u64,
        /// virtio-queue's verdict.
        #[source]
        source: virtio_queue::Error,
    },
    /// A ring does not lie entirely in guest memory.
    #[error("Queue {index} {ring} at {addr:#x} ({len} bytes) is outside guest memory")]
    QueueOutsideMemory {
        /// Queue index.
        index: usize,
        /// Which ring.
        ring: &'static str,
        /// The address the driver wrote.
        addr: u64,
        /// Size of the ring in bytes.
        len: u64,
    },
    /// virtio-queue's own validity check refused the queue.
    #[error("Queue {index} is not valid")]
    QueueInvalid {
        /// Queue index.
        index: usize,
    },
    /// DRIVER_OK while a queue of the device is not ready.
    #[error("DRIVER_OK with queue {index} not ready; the device needs a reset")]
    QueueNotReady {
        /// Queue index.
        index: usize,
    },
    /// The device refused to start.
    #[error("Device activation failed; the device needs a reset")]
    Activate(#[source] ActivateError),
    /// QueueNotify names a queue the device does not have.
    #[error("Notification for queue {index}, which does not exist")]
    NotifyQueue {
        /// The written queue index.
        index: u32,
    },
    /// Signalling a queue's notification eventfd failed.
    #[error("Cannot signal the notification eventfd of queue {index}")]
    NotifySignal {
        /// Queue index.
        index: usize,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// Queue configuration as the driver wrote it, applied to the [`Queue`] only once
/// it passes the checks on QueueReady (virtio-queue's setters silently keep the old
/// value on bad input, which would hide the driver's mistake).
#[derive(Clone, Copy, Debug, Default)]
struct QueueConfig {
    size: u32,
    desc_table: u64,
    avail_ring: u64,
    used_ring: u64,
}

/// The virtio-mmio register window of one device.
pub struct MmioTransport {
    device: Arc<Mutex<dyn VirtioDevice>>,
    /// Cached: a device's type never changes.
    device_type: u32,
    mem: GuestMemoryMmap,
    irq: IrqTrigger,
    /// Validated queue state; a queue is ready only if its configuration passed.
    queues: Vec<Queue>,
    /// What the driver wrote to the Queue* registers, per queue.
    queue_configs: Vec<QueueConfig>,
    queue_evts: Vec<EventFd>,
    queue_sel: u32,
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    acked_features: u64,
    /// Never changes yet: no device changes its configuration space on its own.
    config_generation: u32,
    activated: bool,
}

impl fmt::Debug for MmioTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MmioTransport")
            .field("device_type", &self.device_type)
            .field("status", &format_args!("{:#x}", self.status))
            .field(
                "acked_features",
                &format_args!("{:#x}", self.acked_features),
            )
            .field("queue_sel", &self.queue_sel)
            .field("queues", &self.queues)
            .field("activated", &self.activated)
            .finish_non_exhaustive()
    }
}

impl MmioTransport {
    /// Wraps `device`, with one queue per entry of its
    /// [`VirtioDevice::queue_max_sizes`] and a non-blocking notification eventfd for
    /// each. On DRIVER_OK every one of those queues must have been set up.
    pub fn new(
        mem: GuestMemoryMmap,
        device: Arc<Mutex<dyn VirtioDevice>>,
        irq: IrqTrigger,
    ) -> Result<Self, Error> {
        let (device_type, max_sizes) = {
            let dev = lock(&device);
            (dev.device_type(), dev.queue_max_sizes().to_vec())
        };
        let queues = max_sizes
            .iter()
            .enumerate()
            .map(|(index, &max_size)| {
                Queue::new(max_size).map_err(|source| Error::QueueMaxSize {
                    index,
                    max_size,
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let queue_evts = (0..queues.len())
            .map(|index| {
                EventFd::new(EFD_NONBLOCK).map_err(|source| Error::QueueEventFd { index, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(MmioTransport {
            device,
            device_type,
            mem,
            irq,
            queue_configs: vec![QueueConfig::default(); queues.len()],
            queues,
            queue_evts,
            queue_sel: 0,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            acked_features: 0,
            config_generation: 0,
            activated: false,
        })
    }

    /// One notification eventfd per queue, in queue order. The VMM registers each as
    /// a KVM ioeventfd on `base + NOTIFY_REG_OFFSET` with the queue index as
    /// datamatch, and watches it in its event loop.
    pub fn queue_evts(&self) -> &[EventFd] {
        &self.queue_evts
    }

    /// The device behind this transport.
    pub fn device(&self) -> Arc<Mutex<dyn VirtioDevice>> {
        Arc::clone(&self.device)
    }

    /// Whether the device runs (DRIVER_OK was accepted and no reset since).
    pub fn is_activated(&self) -> bool {
        self.activated
    }

    /// Handles a notification on queue `index`: drains its eventfd, then lets the
    /// device process the queue if it is running. Called by the VMM's event loop
    /// when `queue_evts()[index]` becomes readable; the caller need not read it.
    pub fn process_queue(&mut self, index: usize) {
        let Some(evt) = self.queue_evts.get(index) else {
            log_ratelimited!(
                Level::Warn,
                "virtio-mmio device type {}: no queue {index} to process",
                self.device_type
            );
            return;
        };
        if let Err(e) = evt.read() {
            if e.kind() != io::ErrorKind::WouldBlock {
                log_ratelimited!(
                    Level::Warn,
                    "virtio-mmio device type {}: cannot read the eventfd of queue {index}: {e}",
                    self.device_type
                );
            }
        }
        if self.activated {
            lock(&self.device).process_queue(index);
        }
    }

    /// The selected queue's index, if it exists.
    fn selected_queue(&self) -> Result<usize, Error> {
        usize::try_from(self.queue_sel)
            .ok()
            .filter(|&index| index < self.queues.len())
            .ok_or(Error::QueueSelect {
                index: self.queue_sel,
            })
    }

    fn read_register(&self, offset: u64) -> Option<u32> {
        let value = match offset {
            regs::MAGIC_VALUE => MAGIC,
            regs::VERSION => VERSION,
            regs::DEVICE_ID => self.device_type,
            regs::VENDOR_ID => VENDOR_ID,
            regs::DEVICE_FEATURES => {
                let offered = lock(&self.device).avail_features();
                feature_word(offered, self.device_features_sel).unwrap_or(0)
            }
            regs::QUEUE_NUM_MAX => self
                .selected_queue()
                .ok()
                .and_then(|index| self.queues.get(index))
                .map_or(0, |queue| u32::from(queue.max_size())),
            regs::QUEUE_READY => self
                .selected_queue()
                .ok()
                .and_then(|index| self.queues.get(index))
                .map_or(QUEUE_READY_OFF, |queue| {
                    if queue.ready() {
                        QUEUE_READY_ON
                    } else {
                        QUEUE_READY_OFF
                    }
                }),
            regs::INTERRUPT_STATUS => self.irq.status(),
            regs::STATUS => self.status,
            regs::SHM_LEN_LOW | regs::SHM_LEN_HIGH | regs::SHM_BASE_LOW | regs::SHM_BASE_HIGH => {
                NO_SHM_REGION
            }
            regs::CONFIG_GENERATION => self.config_generation,
            _ => return None,
        };
        Some(value)
    }

    fn write_register(&mut self, offset: u64, value: u32) -> Result<(), Error> {
        match offset {
            regs::DEVICE_FEATURES_SEL => self.device_features_sel = value,
            regs::DRIVER_FEATURES => self.set_driver_features(value)?,
            regs::DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            regs::QUEUE_SEL => self.queue_sel = value,
            regs::QUEUE_NUM => self.queue_config_mut()?.size = value,
            regs::QUEUE_READY => self.set_queue_ready(value)?,
            regs::QUEUE_NOTIFY => self.notify(value)?,
            regs::INTERRUPT_ACK => self.irq.ack(value),
            regs::STATUS => self.set_status(value)?,
            regs::QUEUE_DESC_LOW => set_low(&mut self.queue_config_mut()?.desc_table, value),
            regs::QUEUE_DESC_HIGH => set_high(&mut self.queue_config_mut()?.desc_table, value),
            regs::QUEUE_DRIVER_LOW => set_low(&mut self.queue_config_mut()?.avail_ring, value),
            regs::QUEUE_DRIVER_HIGH => set_high(&mut self.queue_config_mut()?.avail_ring, value),
            regs::QUEUE_DEVICE_LOW => set_low(&mut self.queue_config_mut()?.used_ring, value),
            regs::QUEUE_DEVICE_HIGH => set_high(&mut self.queue_config_mut()?.used_ring, value),
            // There are no shared memory regions: every selection reads as absent.
            regs::SHM_SEL => {}
            _ => return Err(Error::NotWritable { offset }),
        }
        Ok(())
    }

    fn set_driver_features(&mut self, value: u32) -> Result<(), Error> {
        if self.status & (DRIVER | FEATURES_OK) != DRIVER {
            return Err(Error::FeaturesLocked {
                status: self.status,
            });
        }
        let offered = lock(&self.device).avail_features();
        let select = self.driver_features_sel;
        let acked = with_feature_word(self.acked_features, select, value)
            .ok_or(Error::FeatureSelect { select })?;
        if acked & !offered != 0 {
            log_ratelimited!(
                Level::Debug,
                "virtio-mmio device type {}: driver accepted features {:#x} that were not offered; dropped",
                self.device_type,
                acked & !offered
            );
        }
        self.acked_features = acked & offered;
        Ok(())
    }

    fn set_status(&mut self, value: u32) -> Result<(), Error> {
        if value == 0 {
            self.reset();
            return Ok(());
        }
        // DEVICE_NEEDS_RESET belongs to the device: it is neither set nor cleared by
        // the driver's writes.
        let current = self.status & !NEEDS_RESET;
        let requested = value & !NEEDS_RESET;
        if !is_valid_status_transition(current, requested) {
            return Err(Error::StatusTransition {
                from: self.status,
                to: value,
            });
        }
        let added = requested & !current;
        if added == FEATURES_OK && self.acked_features & VIRTIO_F_VERSION_1 == 0 {
            return Err(Error::Version1NotAccepted {
                acked: self.acked_features,
            });
        }
        self.status = requested | (self.status & NEEDS_RESET);
        if added == DRIVER_OK {
            if let Err(e) = self.activate() {
                self.status |= NEEDS_RESET;
                if let Err(e) = self.irq.trigger(VIRTIO_MMIO_INT_CONFIG) {
                    log_ratelimited!(
                        Level::Error,
                        "virtio-mmio device type {}: cannot signal the configuration change interrupt: {e}",
                        self.device_type
                    );
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Starts the device on DRIVER_OK with clones of the validated queues.
    fn activate(&mut self) -> Result<(), Error> {
        for (index, queue) in self.queues.iter().enumerate() {
            if !queue.ready() {
                return Err(Error::QueueNotReady { index });
            }
            if !queue.is_valid(&self.mem) {
                return Err(Error::QueueInvalid { index });
            }
        }
        let event_idx = self.acked_features & (1 << VIRTIO_RING_F_EVENT_IDX) != 0;
        // `Queue` is not `Clone`; its state is all there is to copy before first use.
        let queues = self
            .queues
            .iter()
            .enumerate()
            .map(|(index, queue)| {
                let state = QueueState {
                    event_idx_enabled: event_idx,
                    ..queue.state()
                };
                Queue::try_from(state).map_err(|_| Error::QueueInvalid { index })
            })
            .collect::<Result<Vec<_>, _>>()?;
        lock(&self.device)
            .activate(ActivateParams {
                mem: self.mem.clone(),
                queues,
                acked_features: self.acked_features,
                irq: self.irq.clone(),
            })
            .map_err(Error::Activate)?;
        self.activated = true;
        Ok(())
    }

    /// Device reset (status 0): back to the state right after [`MmioTransport::new`].
    fn reset(&mut self) {
        if self.activated {
            lock(&self.device).reset();
            self.activated = false;
        }
        self.queues.iter_mut().for_each(QueueT::reset);
        self.queue_configs.fill(QueueConfig::default());
        self.queue_sel = 0;
        self.status = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.acked_features = 0;
        self.irq.ack(u32::MAX);
    }

    /// Checks that the queue registers may be written now.
    fn check_queue_setup_phase(&self) -> Result<(), Error> {
        if self.status & (FEATURES_OK | DRIVER_OK) != FEATURES_OK {
            return Err(Error::QueueLocked {
                status: self.status,
            });
        }
        Ok(())
    }

    /// The selected queue's pending configuration, if it may be written now.
    fn queue_config_mut(&mut self) -> Result<&mut QueueConfig, Error> {
        self.check_queue_setup_phase()?;
        let index = self.selected_queue()?;
        if self.queues.get(index).is_some_and(Queue::ready) {
            return Err(Error::QueueAlreadyReady { index });
        }
        self.queue_configs.get_mut(index).ok_or(Error::QueueSelect {
            index: self.queue_sel,
        })
    }

    fn set_queue_ready(&mut self, value: u32) -> Result<(), Error> {
        let index = self.selected_queue()?;
        let ready = self.queues.get(index).is_some_and(Queue::ready);
        match value {
            // Already in the requested state: nothing to do, whatever the status.
            QUEUE_READY_OFF if !ready => return Ok(()),
            QUEUE_READY_ON if ready => return Ok(()),
            QUEUE_READY_OFF | QUEUE_READY_ON => {}
            _ => return Err(Error::QueueReadyValue { value }),
        }
        self.check_queue_setup_phase()?;
        if value == QUEUE_READY_ON {
            let queue = self.validated_queue(index)?;
            if let Some(slot) = self.queues.get_mut(index) {
                *slot = queue;
            }
        } else if let Some(queue) = self.queues.get_mut(index) {
            queue.set_ready(false);
        }
        Ok(())
    }

    /// Queue `index` with the driver's configuration applied and marked ready, if that
    /// configuration is acceptable.
    fn validated_queue(&self, index: usize) -> Result<Queue, Error> {
        let (Some(max_size), Some(config)) = (
            self.queues.get(index).map(Queue::max_size),
            self.queue_configs.get(index),
        ) else {
            return Err(Error::QueueSelect {
                index: self.queue_sel,
            });
        };
        let mut queue = Queue::new(max_size).map_err(|_| Error::QueueInvalid { index })?;
        let size_error = || Error::QueueSize {
            index,
            size: config.size,
            max_size,
        };
        let size = u16::try_from(config.size).map_err(|_| size_error())?;
        queue.try_set_size(size).map_err(|_| size_error())?;
        let misaligned = |ring, addr| {
            move |source| Error::QueueMisaligned {
                index,
                ring,
                addr,
                source,
            }
        };
        queue
            .try_set_desc_table_address(GuestAddress(config.desc_table))
            .map_err(misaligned("descriptor table", config.desc_table))?;
        queue
            .try_set_avail_ring_address(GuestAddress(config.avail_ring))
            .map_err(misaligned("driver area", config.avail_ring))?;
        queue
            .try_set_used_ring_address(GuestAddress(config.used_ring))
            .map_err(misaligned("device area", config.used_ring))?;
        self.check_rings_in_memory(index, &queue)?;
        queue.set_ready(true);
        // Agrees with the checks above; they run first because this one logs every
        // refusal without a rate limit.
        if !queue.is_valid(&self.mem) {
            return Err(Error::QueueInvalid { index });
        }
        Ok(queue)
    }

    fn check_rings_in_memory(&self, index: usize, queue: &Queue) -> Result<(), Error> {
        let entries = u64::from(queue.size());
        let rings = [
            (
                "descriptor table",
                queue.desc_table(),
                ring::DESC_SIZE * entries,
            ),
            (
                "driver area",
                queue.avail_ring(),
                ring::HEADER_SIZE + ring::AVAIL_ELEM_SIZE * entries + ring::EVENT_SIZE,
            ),
            (
                "device area",
                queue.used_ring(),
                ring::HEADER_SIZE + ring::USED_ELEM_SIZE * entries + ring::EVENT_SIZE,
            ),
        ];
        for (ring, addr, len) in rings {
            let inside =
                usize::try_from(len).is_ok_and(|len| self.mem.check_range(GuestAddress(addr), len));
            if !inside {
                return Err(Error::QueueOutsideMemory {
                    index,
                    ring,
                    addr,
                    len,
                });
            }
        }
        Ok(())
    }

    /// QueueNotify reached the transport (no ioeventfd caught it): signal the queue's
    /// eventfd as KVM would have.
    fn notify(&self, value: u32) -> Result<(), Error> {
        let (index, evt) = usize::try_from(value)
            .ok()
            .and_then(|index| Some((index, self.queue_evts.get(index)?)))
            .ok_or(Error::NotifyQueue { index: value })?;
        evt.write(1)
            .map_err(|source| Error::NotifySignal { index, source })
    }

    /// Where an access at `offset` of `len` bytes falls in the configuration space,
    /// if it lies entirely inside the window.
    fn config_offset(offset: u64, len: usize) -> Option<u64> {
        let config_offset = offset.checked_sub(regs::CONFIG)?;
        let end = offset.checked_add(u64::try_from(len).ok()?)?;
        (len > 0 && end <= MMIO_WINDOW_SIZE).then_some(config_offset)
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if offset >= regs::CONFIG {
            match Self::config_offset(offset, data.len()) {
                Some(config_offset) => lock(&self.device).read_config(config_offset, data),
                None => log_ratelimited!(
                    Level::Debug,
                    "virtio-mmio device type {}: ignored config read at {offset:#x} of {} bytes",
                    self.device_type,
                    data.len()
                ),
            }
            return;
        }
        let width = data.len();
        let Ok(bytes) = <&mut [u8; REGISTER_WIDTH]>::try_from(data) else {
            log_ratelimited!(
                Level::Debug,
                "virtio-mmio device type {}: ignored {width}-byte read of register {offset:#x}",
                self.device_type
            );
            return;
        };
        match self.read_register(offset) {
            Some(value) => *bytes = value.to_le_bytes(),
            None => log_ratelimited!(
                Level::Debug,
                "virtio-mmio device type {}: read of unknown or write-only register {offset:#x}",
                self.device_type
            ),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= regs::CONFIG {
            match Self::config_offset(offset, data.len()) {
                Some(config_offset) => lock(&self.device).write_config(config_offset, data),
                None => log_ratelimited!(
                    Level::Debug,
                    "virtio-mmio device type {}: ignored config write at {offset:#x} of {} bytes",
                    self.device_type,
                    data.len()
                ),
            }
            return;
        }
        let Ok(bytes) = <[u8; REGISTER_WIDTH]>::try_from(data) else {
            log_ratelimited!(
                Level::Debug,
                "virtio-mmio device type {}: ignored {}-byte write of register {offset:#x}",
                self.device_type,
                data.len()
            );
            return;
        };
        let value = u32::from_le_bytes(bytes);
        if let Err(e) = self.write_register(offset, value) {
            log_ratelimited!(
                Level::Warn,
                "virtio-mmio device type {}: ignored write of {value:#x} to {offset:#x}: {e}",
                self.device_type
            );
        }
    }
}

/// Whether the driver may change the status from `current` to `requested` (neither
/// containing DEVICE_NEEDS_RESET, and `requested` not 0, which is a reset).
///
/// Writing the current value again is allowed and changes nothing; FAILED may be
/// added at any time; otherwise exactly the next bit of [`INIT_SEQUENCE`] is added,
/// and nothing is added after FAILED.
fn is_valid_status_transition(current: u32, requested: u32) -> bool {
    if requested == current || requested == current | FAILED {
        return true;
    }
    let mut done = 0;
    for bit in INIT_SEQUENCE {
        if current == done {
            return requested == done | bit;
        }
        done |= bit;
    }
    false
}

/// The 32 feature bits `select` chooses, or `None` for a select beyond bit 63.
fn feature_word(features: u64, select: u32) -> Option<u32> {
    match select {
        FEATURES_SEL_LOW => Some(features as u32),
        FEATURES_SEL_HIGH => Some((features >> u32::BITS) as u32),
        _ => None,
    }
}

/// `features` with the 32 bits `select` chooses replaced by `word`.
fn with_feature_word(features: u64, select: u32, word: u32) -> Option<u64> {
    let mut features = features;
    match select {
        FEATURES_SEL_LOW => set_low(&mut features, word),
        FEATURES_SEL_HIGH => set_high(&mut features, word),
        _ => return None,
    }
    Some(features)
}

/// Replaces the low 32 bits of `value`.
fn set_low(value: &mut u64, low: u32) {
    *value = (*value & !u64::from(u32::MAX)) | u64::from(low);
}

/// Replaces the high 32 bits of `value`.
fn set_high(value: &mut u64, high: u32) {
    *value = (*value & u64::from(u32::MAX)) | (u64::from(high) << u32::BITS);
}

/// Locks the device, recovering from poisoning: a panic in the device on another
/// thread must not make every later guest access panic too.
fn lock(device: &Mutex<dyn VirtioDevice>) -> MutexGuard<'_, dyn VirtioDevice + 'static> {
    device.lock().unwrap_or_else(|poisoned| {
        log_ratelimited!(
            Level::Warn,
            "virtio device was poisoned by an earlier panic; using it anyway"
        );
        poisoned.into_inner()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::test_utils::{
        guest_memory, DummyDevice, DUMMY_CONFIG_SIZE, DUMMY_DEVICE_TYPE, DUMMY_FEATURE,
        DUMMY_QUEUE_MAX_SIZES,
    };
    use crate::virtio::VIRTIO_MMIO_INT_VRING;

    /// Guest memory of the fixture: 64 KiB at address 0.
    const MEM_SIZE: u64 = 0x1_0000;
    /// VIRTIO_F_EVENT_IDX as a feature mask.
    const EVENT_IDX: u64 = 1 << VIRTIO_RING_F_EVENT_IDX;

    /// Ring addresses of one queue.
    #[derive(Clone, Copy, Debug)]
    struct Rings {
        desc: u64,
        avail: u64,
        used: u64,
    }

    /// Well-formed rings for queue `index`: one page each, inside [`MEM_SIZE`].
    fn rings(index: u32) -> Rings {
        let base = 0x1000 + u64::from(index) * 0x3000;
        Rings {
            desc: base,
            avail: base + 0x1000,
            used: base + 0x2000,
        }
    }

    struct Fixture {
        transport: MmioTransport,
        device: Arc<Mutex<DummyDevice>>,
        irq: IrqTrigger,
    }

    fn fixture_with(device: DummyDevice) -> Fixture {
        let device = Arc::new(Mutex::new(device));
        let irq = IrqTrigger::new(EventFd::new(EFD_NONBLOCK).unwrap());
        let mem = guest_memory(usize::try_from(MEM_SIZE).unwrap());
        let transport = MmioTransport::new(mem, device.clone(), irq.clone()).unwrap();
        Fixture {
            transport,
            device,
            irq,
        }
    }

    fn fixture() -> Fixture {
        fixture_with(DummyDevice::default())
    }

    impl Fixture {
        fn read(&mut self, offset: u64) -> u32 {
            let mut data = [0u8; 4];
            self.transport.read(offset, &mut data);
            u32::from_le_bytes(data)
        }

        fn write(&mut self, offset: u64, value: u32) {
            self.transport.write(offset, &value.to_le_bytes());
        }

        fn status(&mut self) -> u32 {
            self.read(regs::STATUS)
        }

        fn write_driver_features(&mut self, features: u64) {
            self.write(regs::DRIVER_FEATURES_SEL, FEATURES_SEL_LOW);
            self.write(regs::DRIVER_FEATURES, features as u32);
            self.write(regs::DRIVER_FEATURES_SEL, FEATURES_SEL_HIGH);
            self.write(regs::DRIVER_FEATURES, (features >> 32) as u32);
        }

        /// ACKNOWLEDGE, DRIVER, accept `features`, FEATURES_OK.
        fn negotiate_with(&mut self, features: u64) {
            self.write(regs::STATUS, ACKNOWLEDGE);
            self.write(regs::STATUS, ACKNOWLEDGE | DRIVER);
            self.write_driver_features(features);
            self.write(regs::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
        }

        /// Negotiation accepting everything the device offers.
        fn negotiate(&mut self) {
            self.negotiate_with(u64::MAX);
            assert_eq!(self.status(), ACKNOWLEDGE | DRIVER | FEATURES_OK);
        }

        /// Configures queue `index` and writes QueueReady = 1.
        fn setup_queue(&mut self, index: u32, size: u32, rings: Rings) {
            self.write(regs::QUEUE_SEL, index);
            self.write(regs::QUEUE_NUM, size);
            self.write(regs::QUEUE_DESC_LOW, rings.desc as u32);
            self.write(regs::QUEUE_DESC_HIGH, (rings.desc >> 32) as u32);
            self.write(regs::QUEUE_DRIVER_LOW, rings.avail as u32);
            self.write(regs::QUEUE_DRIVER_HIGH, (rings.avail >> 32) as u32);
            self.write(regs::QUEUE_DEVICE_LOW, rings.used as u32);
            self.write(regs::QUEUE_DEVICE_HIGH, (rings.used >> 32) as u32);
            self.write(regs::QUEUE_READY, QUEUE_READY_ON);
        }

        /// Sets up every queue of the dummy device at its maximum size.
        fn setup_queues(&mut self) {
            for (index, max_size) in (0..).zip(DUMMY_QUEUE_MAX_SIZES) {
                self.setup_queue(index, u32::from(max_size), rings(index));
                assert_eq!(self.queue_ready(index), QUEUE_READY_ON);
            }
        }

        fn queue_ready(&mut self, index: u32) -> u32 {
            self.write(regs::QUEUE_SEL, index);
            self.read(regs::QUEUE_READY)
        }

        fn driver_ok(&mut self) {
            let status = self.status();
            self.write(regs::STATUS, status | DRIVER_OK);
        }

        /// The whole driver initialization sequence.
        fn activate(&mut self) {
            self.negotiate();
            self.setup_queues();
            self.driver_ok();
            assert!(self.transport.is_activated());
        }

        fn dev(&self) -> MutexGuard<'_, DummyDevice> {
            self.device.lock().unwrap()
        }
    }

    fn is_signalled(evt: &EventFd) -> bool {
        evt.read().is_ok()
    }

    #[test]
    fn identification_registers_report_magic_version_and_ids() {
        let mut f = fixture();

        assert_eq!(f.read(regs::MAGIC_VALUE), 0x7472_6976);
        assert_eq!(f.read(regs::VERSION), 2);
        assert_eq!(f.read(regs::DEVICE_ID), DUMMY_DEVICE_TYPE);
        assert_eq!(f.read(regs::VENDOR_ID), VENDOR_ID);
        assert_eq!(f.read(regs::CONFIG_GENERATION), 0);
    }

    #[test]
    fn shm_registers_report_no_region() {
        let mut f = fixture();
        f.write(regs::SHM_SEL, 0);

        for offset in [
            regs::SHM_LEN_LOW,
            regs::SHM_LEN_HIGH,
            regs::SHM_BASE_LOW,
            regs::SHM_BASE_HIGH,
        ] {
            assert_eq!(f.read(offset), u32::MAX, "{offset:#x}");
        }
    }

    #[test]
    fn new_invalid_queue_max_size_fails() {
        for max_size in [0, 3, 0x8001] {
            let device = DummyDevice {
                queue_max_sizes: vec![16, max_size],
                ..DummyDevice::default()
            };
            let irq = IrqTrigger::new(EventFd::new(EFD_NONBLOCK).unwrap());

            let result =
                MmioTransport::new(guest_memory(0x1000), Arc::new(Mutex::new(device)), irq);

            assert!(
                matches!(result, Err(Error::QueueMaxSize { index: 1, max_size: m, .. }) if m == max_size),
                "{max_size}: {result:?}"
            );
        }
    }

    #[test]
    fn device_features_each_select_reports_its_word() {
        let mut f = fixture();
        let offered = VIRTIO_F_VERSION_1 | DUMMY_FEATURE;
        let cases = [
            (FEATURES_SEL_LOW, offered as u32),
            (FEATURES_SEL_HIGH, (offered >> 32) as u32),
            (2, 0),
            (u32::MAX, 0),
        ];

        for (select, expected) in cases {
            f.write(regs::DEVICE_FEATURES_SEL, select);
            assert_eq!(f.read(regs::DEVICE_FEATURES), expected, "select {select}");
        }
    }

    #[test]
    fn driver_features_unoffered_bits_dropped() {
        let mut f = fixture();
        f.write(regs::STATUS, ACKNOWLEDGE);
        f.write(regs::STATUS, ACKNOWLEDGE | DRIVER);

        f.write_driver_features(u64::MAX);

        assert_eq!(
            f.transport.acked_features,
            VIRTIO_F_VERSION_1 | DUMMY_FEATURE
        );
    }

    #[test]
    fn driver_features_outside_negotiation_ignored() {
        let mut f = fixture();

        // Before DRIVER.
        f.write(regs::STATUS, ACKNOWLEDGE);
        f.write_driver_features(u64::MAX);
        assert_eq!(f.transport.acked_features, 0);

        // After FEATURES_OK.
        f.write(regs::STATUS, ACKNOWLEDGE | DRIVER);
        f.write_driver_features(VIRTIO_F_VERSION_1);
        f.write(regs::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
        f.write_driver_features(u64::MAX);
        assert_eq!(f.transport.acked_features, VIRTIO_F_VERSION_1);
    }

    #[test]
    fn driver_features_invalid_select_ignored() {
        let mut f = fixture();
        f.write(regs::STATUS, ACKNOWLEDGE);
        f.write(regs::STATUS, ACKNOWLEDGE | DRIVER);

        f.write(regs::DRIVER_FEATURES_SEL, 2);
        f.write(regs::DRIVER_FEATURES, u32::MAX);

        assert_eq!(f.transport.acked_features, 0);
    }

    #[test]
    fn features_ok_without_version_1_refused() {
        let mut f = fixture();

        f.negotiate_with(DUMMY_FEATURE);

        assert_eq!(f.status(), ACKNOWLEDGE | DRIVER);
        // The driver may still fix its choice.
        f.write_driver_features(VIRTIO_F_VERSION_1);
        f.write(regs::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
        assert_eq!(f.status(), ACKNOWLEDGE | DRIVER | FEATURES_OK);
    }

    #[test]
    fn status_transition_table_only_next_step_or_failed() {
        const A: u32 = ACKNOWLEDGE;
        const AD: u32 = ACKNOWLEDGE | DRIVER;
        const ADF: u32 = AD | FEATURES_OK;
        const ADFO: u32 = ADF | DRIVER_OK;
        /// Not a status bit of virtio 1.2.
        const UNDEFINED: u32 = 1 << 4;
        let cases = [
            (0, A, true),
            (0, FAILED, true),
            (0, DRIVER, false),
            (0, AD, false),
            (A, A, true),
            (A, AD, true),
            (A, A | FEATURES_OK, false),
            (A, DRIVER, false),
            (AD, A, false),
            (AD, AD | DRIVER_OK, false),
            (AD, ADF, true),
            (AD, AD | FAILED, true),
            (ADF, ADFO, true),
            (ADF, ADFO | UNDEFINED, false),
            (ADF, ADF | UNDEFINED, false),
            (ADFO, ADFO | FAILED, true),
            (ADFO, AD | DRIVER_OK, false),
            (A | FAILED, AD | FAILED, false),
            (FAILED, FAILED, true),
        ];

        for (current, requested, valid) in cases {
            assert_eq!(
                is_valid_status_transition(current, requested),
                valid,
                "{current:#x} -> {requested:#x}"
            );
        }
    }

    #[test]
    fn status_out_of_order_ignored() {
        let mut f = fixture();

        f.write(regs::STATUS, DRIVER);
        assert_eq!(f.status(), 0);
        f.write(regs::STATUS, ACKNOWLEDGE);
        f.write(regs::STATUS, ACKNOWLEDGE | FEATURES_OK);
        assert_eq!(f.status(), ACKNOWLEDGE);
        f.write(regs::STATUS, ACKNOWLEDGE | DRIVER);
        f.write(regs::STATUS, ACKNOWLEDGE | DRIVER | DRIVER_OK);
        assert_eq!(f.status(), ACKNOWLEDGE | DRIVER);
        f.write(regs::STATUS, ACKNOWLEDGE);
        assert_eq!(f.status(), ACKNOWLEDGE | DRIVER);

        assert_eq!(f.dev().activate_calls, 0);
    }

    #[test]
    fn status_failed_accepted_in_any_state_and_blocks_progress() {
        let mut f = fixture();
        f.write(regs::STATUS, ACKNOWLEDGE);
        f.write(regs::STATUS, ACKNOWLEDGE | DRIVER);

        f.write(regs::STATUS, ACKNOWLEDGE | DRIVER | FAILED);
        assert_eq!(f.status(), ACKNOWLEDGE | DRIVER | FAILED);

        f.write_driver_features(VIRTIO_F_VERSION_1);
        f.write(regs::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK | FAILED);
        assert_eq!(f.status(), ACKNOWLEDGE | DRIVER | FAILED);
    }

    #[test]
    fn driver_ok_all_queues_ready_activates_device_with_queues() {
        let mut f = fixture();

        f.activate();

        assert_eq!(f.status(), ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
        let dev = f.dev();
        assert_eq!(dev.activate_calls, 1);
        let params = dev.activation.as_ref().unwrap();
        assert_eq!(params.acked_features, VIRTIO_F_VERSION_1 | DUMMY_FEATURE);
        assert_eq!(params.queues.len(), DUMMY_QUEUE_MAX_SIZES.len());
        for ((index, queue), max_size) in (0..).zip(&params.queues).zip(DUMMY_QUEUE_MAX_SIZES) {
            let expected = rings(index);
            assert!(queue.ready(), "queue {index}");
            assert_eq!(queue.size(), max_size);
            assert_eq!(queue.desc_table(), expected.desc);
            assert_eq!(queue.avail_ring(), expected.avail);
            assert_eq!(queue.used_ring(), expected.used);
            assert!(!queue.event_idx_enabled());
        }
    }

    #[test]
    fn driver_ok_event_idx_accepted_queues_use_event_idx() {
        let mut f = fixture_with(DummyDevice {
            avail_features: VIRTIO_F_VERSION_1 | EVENT_IDX,
            ..DummyDevice::default()
        });

        f.activate();

        let dev = f.dev();
        let params = dev.activation.as_ref().unwrap();
        assert!(params.queues.iter().all(|queue| queue.event_idx_enabled()));
    }

    #[test]
    fn queue_smaller_than_max_accepted() {
        let mut f = fixture();
        f.negotiate();

        f.setup_queue(1, 4, rings(1));

        assert_eq!(f.queue_ready(1), QUEUE_READY_ON);
        assert_eq!(f.transport.queues[1].size(), 4);
    }

    #[test]
    fn queue_num_max_reports_max_and_zero_for_missing_queue() {
        let mut f = fixture();

        for (index, max_size) in (0..).zip(DUMMY_QUEUE_MAX_SIZES) {
            f.write(regs::QUEUE_SEL, index);
            assert_eq!(f.read(regs::QUEUE_NUM_MAX), u32::from(max_size));
        }
        for index in [2, u32::MAX] {
            f.write(regs::QUEUE_SEL, index);
            assert_eq!(f.read(regs::QUEUE_NUM_MAX), 0);
            assert_eq!(f.read(regs::QUEUE_READY), QUEUE_READY_OFF);
        }
    }

    #[test]
    fn queue_ready_invalid_size_refused() {
        // Queue 0 has maximum size 16.
        for size in [0, 3, 12, 32, 0x1_0000, u32::MAX] {
            let mut f = fixture();
            f.negotiate();

            f.setup_queue(0, size, rings(0));

            assert_eq!(f.queue_ready(0), QUEUE_READY_OFF, "size {size}");
        }
    }

    #[test]
    fn queue_ready_rings_outside_memory_refused() {
        let good = rings(0);
        let cases = [
            // The 16-entry descriptor table (256 bytes) runs past the end.
            Rings {
                desc: MEM_SIZE - 0x80,
                ..good
            },
            Rings {
                desc: MEM_SIZE,
                ..good
            },
            Rings {
                desc: 1 << 32,
                ..good
            },
            Rings {
                desc: u64::MAX - 0xf,
                ..good
            },
            // The driver area is 4 + 2 * 16 + 2 = 38 bytes.
            Rings {
                avail: MEM_SIZE - 36,
                ..good
            },
            // The device area is 4 + 8 * 16 + 2 = 134 bytes.
            Rings {
                used: MEM_SIZE - 132,
                ..good
            },
            Rings {
                used: u64::MAX - 0x3,
                ..good
            },
        ];

        for rings in cases {
            let mut f = fixture();
            f.negotiate();

            f.setup_queue(0, 16, rings);

            assert_eq!(f.queue_ready(0), QUEUE_READY_OFF, "{rings:x?}");
        }
    }

    #[test]
    fn queue_ready_rings_ending_at_memory_end_accepted() {
        let mut f = fixture();
        f.negotiate();

        f.setup_queue(
            0,
            16,
            Rings {
                desc: MEM_SIZE - 256,
                avail: MEM_SIZE - 0x200,
                used: MEM_SIZE - 0x400,
            },
        );

        assert_eq!(f.queue_ready(0), QUEUE_READY_ON);
    }

    #[test]
    fn queue_ready_misaligned_rings_refused() {
        let good = rings(0);
        let cases = [
            Rings {
                desc: good.desc + 8,
                ..good
            },
            Rings {
                avail: good.avail + 1,
                ..good
            },
            Rings {
                used: good.used + 2,
                ..good
            },
        ];

        for rings in cases {
            let mut f = fixture();
            f.negotiate();

            f.setup_queue(0, 16, rings);

            assert_eq!(f.queue_ready(0), QUEUE_READY_OFF, "{rings:x?}");
        }
    }

    #[test]
    fn queue_ready_invalid_value_ignored() {
        let mut f = fixture();
        f.negotiate();

        f.setup_queue(0, 16, rings(0));
        f.write(regs::QUEUE_READY, 2);

        assert_eq!(f.queue_ready(0), QUEUE_READY_ON);
    }

    #[test]
    fn queue_setup_before_features_ok_ignored() {
        let mut f = fixture();
        f.write(regs::STATUS, ACKNOWLEDGE);
        f.write(regs::STATUS, ACKNOWLEDGE | DRIVER);

        f.setup_queue(0, 16, rings(0));

        assert_eq!(f.queue_ready(0), QUEUE_READY_OFF);
        assert_eq!(f.transport.queue_configs[0].size, 0);
    }

    #[test]
    fn queue_config_of_ready_queue_ignored() {
        let mut f = fixture();
        f.negotiate();
        f.setup_queue(0, 16, rings(0));

        f.write(regs::QUEUE_NUM, 4);
        f.write(regs::QUEUE_DESC_LOW, 0x8000);

        let config = f.transport.queue_configs[0];
        assert_eq!(config.size, 16);
        assert_eq!(config.desc_table, rings(0).desc);
    }

    #[test]
    fn queue_ready_zero_before_driver_ok_allows_reconfiguration() {
        let mut f = fixture();
        f.negotiate();
        f.setup_queue(0, 16, rings(0));

        f.write(regs::QUEUE_READY, QUEUE_READY_OFF);
        assert_eq!(f.queue_ready(0), QUEUE_READY_OFF);
        f.setup_queue(0, 8, rings(0));

        assert_eq!(f.queue_ready(0), QUEUE_READY_ON);
        assert_eq!(f.transport.queues[0].size(), 8);
    }

    #[test]
    fn queue_registers_after_driver_ok_ignored() {
        let mut f = fixture();
        f.activate();

        f.write(regs::QUEUE_SEL, 0);
        f.write(regs::QUEUE_READY, QUEUE_READY_OFF);
        f.write(regs::QUEUE_NUM, 4);

        assert_eq!(f.queue_ready(0), QUEUE_READY_ON);
        assert_eq!(f.transport.queue_configs[0].size, 16);
    }

    #[test]
    fn driver_ok_with_unready_queue_needs_reset_not_activated() {
        let mut f = fixture();
        f.negotiate();
        f.setup_queue(0, 16, rings(0));

        f.driver_ok();

        assert_eq!(
            f.status(),
            ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK | NEEDS_RESET
        );
        assert!(!f.transport.is_activated());
        assert_eq!(f.dev().activate_calls, 0);
        assert_eq!(f.irq.status(), VIRTIO_MMIO_INT_CONFIG);
        assert!(is_signalled(f.irq.eventfd()));
    }

    #[test]
    fn driver_ok_activation_error_needs_reset() {
        let mut f = fixture_with(DummyDevice {
            fail_activation: true,
            ..DummyDevice::default()
        });
        f.negotiate();
        f.setup_queues();

        f.driver_ok();

        assert_eq!(f.status() & NEEDS_RESET, NEEDS_RESET);
        assert!(!f.transport.is_activated());
        assert_eq!(f.dev().activate_calls, 1);
        assert_eq!(f.irq.status(), VIRTIO_MMIO_INT_CONFIG);
    }

    #[test]
    fn needs_reset_cleared_by_reset_only() {
        let mut f = fixture();
        f.negotiate();
        f.driver_ok();
        let status = f.status();
        assert_eq!(status & NEEDS_RESET, NEEDS_RESET);

        // The driver writing its own view of the status back changes nothing.
        f.write(regs::STATUS, status & !NEEDS_RESET);
        assert_eq!(f.status(), status);

        f.write(regs::STATUS, 0);
        assert_eq!(f.status(), 0);
    }

    #[test]
    fn reset_after_activation_resets_device_and_clears_state() {
        let mut f = fixture();
        f.activate();
        f.irq.trigger(VIRTIO_MMIO_INT_VRING).unwrap();
        f.write(regs::QUEUE_SEL, 1);
        f.write(regs::DEVICE_FEATURES_SEL, 1);

        f.write(regs::STATUS, 0);

        assert_eq!(f.dev().reset_calls, 1);
        assert!(!f.transport.is_activated());
        assert_eq!(f.status(), 0);
        assert_eq!(f.transport.acked_features, 0);
        assert_eq!(f.transport.queue_sel, 0);
        assert_eq!(f.transport.device_features_sel, 0);
        assert_eq!(f.read(regs::INTERRUPT_STATUS), 0);
        for index in 0..2 {
            assert_eq!(f.queue_ready(index), QUEUE_READY_OFF);
            assert_eq!(f.transport.queue_configs[index as usize].size, 0);
        }

        // The driver can start over.
        f.activate();
        assert_eq!(f.dev().activate_calls, 2);
    }

    #[test]
    fn reset_before_activation_leaves_device_alone() {
        let mut f = fixture();
        f.negotiate();

        f.write(regs::STATUS, 0);

        assert_eq!(f.dev().reset_calls, 0);
        assert_eq!(f.status(), 0);
    }

    #[test]
    fn queue_notify_valid_index_signals_that_eventfd() {
        let mut f = fixture();

        f.write(NOTIFY_REG_OFFSET, 1);

        assert!(!is_signalled(&f.transport.queue_evts()[0]));
        assert!(is_signalled(&f.transport.queue_evts()[1]));
    }

    #[test]
    fn queue_notify_invalid_index_signals_nothing() {
        let mut f = fixture();

        f.write(NOTIFY_REG_OFFSET, 2);
        f.write(NOTIFY_REG_OFFSET, u32::MAX);

        assert!(f.transport.queue_evts().iter().all(|e| !is_signalled(e)));
    }

    #[test]
    fn process_queue_before_activation_not_forwarded() {
        let mut f = fixture();
        f.write(NOTIFY_REG_OFFSET, 0);

        f.transport.process_queue(0);

        assert!(f.dev().processed.is_empty());
        assert!(!is_signalled(&f.transport.queue_evts()[0]), "not drained");
    }

    #[test]
    fn process_queue_after_activation_forwarded() {
        let mut f = fixture();
        f.activate();
        f.write(NOTIFY_REG_OFFSET, 1);

        f.transport.process_queue(1);
        f.transport.process_queue(0);
        f.transport.process_queue(2);

        assert_eq!(f.dev().processed, vec![1, 0]);
        assert!(!is_signalled(&f.transport.queue_evts()[1]), "not drained");
    }

    #[test]
    fn interrupt_ack_clears_acknowledged_bits() {
        let mut f = fixture();
        f.irq
            .trigger(VIRTIO_MMIO_INT_VRING | VIRTIO_MMIO_INT_CONFIG)
            .unwrap();
        assert_eq!(
            f.read(regs::INTERRUPT_STATUS),
            VIRTIO_MMIO_INT_VRING | VIRTIO_MMIO_INT_CONFIG
        );

        f.write(regs::INTERRUPT_ACK, VIRTIO_MMIO_INT_VRING);

        assert_eq!(f.read(regs::INTERRUPT_STATUS), VIRTIO_MMIO_INT_CONFIG);
    }

    #[test]
    fn config_space_reads_any_width_forwarded() {
        let mut f = fixture();

        for width in 1..=8 {
            let mut data = vec![0xaa; width];
            f.transport.read(regs::CONFIG + 3, &mut data);
            let expected: Vec<u8> = (3..).take(width).collect();
            assert_eq!(data, expected, "width {width}");
        }
    }

    #[test]
    fn config_space_read_past_device_config_zero_filled() {
        let mut f = fixture();
        let last = u64::try_from(DUMMY_CONFIG_SIZE).unwrap() - 1;
        let mut data = [0xaa; 4];

        f.transport.read(regs::CONFIG + last, &mut data);

        assert_eq!(data, [0x0f, 0, 0, 0]);
    }

    #[test]
    fn config_space_access_past_window_ignored() {
        let mut f = fixture();
        let mut data = [0xaa; 4];

        f.transport.read(MMIO_WINDOW_SIZE - 2, &mut data);
        f.transport.write(MMIO_WINDOW_SIZE - 2, &data);
        f.transport.read(u64::MAX, &mut data);

        assert_eq!(data, [0; 4]);
        assert!(f.dev().config_writes.is_empty());
    }

    #[test]
    fn config_space_writes_forwarded_with_config_offset() {
        let mut f = fixture();

        f.transport.write(regs::CONFIG + 5, &[1, 2, 3]);

        assert_eq!(f.dev().config_writes, vec![(5, vec![1, 2, 3])]);
    }

    #[test]
    fn register_access_of_wrong_width_ignored() {
        let mut f = fixture();

        for width in [0, 1, 2, 3, 8] {
            let mut data = vec![0xaa; width];
            f.transport.read(regs::MAGIC_VALUE, &mut data);
            assert!(data.iter().all(|&b| b == 0), "width {width}");

            let mut value = vec![0; width];
            if let Some(first) = value.first_mut() {
                *first = ACKNOWLEDGE as u8;
            }
            f.transport.write(regs::STATUS, &value);
            assert_eq!(f.status(), 0, "width {width}");
        }
    }

    #[test]
    fn read_of_write_only_or_unknown_register_zero() {
        let mut f = fixture();
        f.negotiate();
        f.setup_queue(0, 16, rings(0));

        for offset in [
            regs::QUEUE_NUM,
            regs::QUEUE_DESC_LOW,
            regs::QUEUE_NOTIFY,
            0x2,
            0xc0,
        ] {
            assert_eq!(f.read(offset), 0, "{offset:#x}");
        }
    }

    #[test]
    fn guest_access_any_offset_or_width_never_panics() {
        let patterns = [0x00u8, 0x01, 0x0f, 0xff];
        for setup in 0..3 {
            let mut f = fixture();
            match setup {
                0 => {}
                1 => f.negotiate(),
                _ => f.activate(),
            }
            for offset in (0..0x200).chain([MMIO_WINDOW_SIZE - 1, u64::MAX - 8, u64::MAX]) {
                for width in 0..9 {
                    let mut data = vec![0u8; width];
                    f.transport.read(offset, &mut data);
                    for pattern in patterns {
                        f.transport.write(offset, &vec![pattern; width]);
                    }
                }
            }
            f.transport.process_queue(usize::MAX);
        }
    }
}
