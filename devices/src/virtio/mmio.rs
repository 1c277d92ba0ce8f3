//! virtio-mmio transport, register layout version 2 (virtio 1.2, section 4.2).
//!
//! [`MmioTransport`] is the register window the guest's `virtio_mmio` driver sees for
//! one [`VirtioDevice`]. It does everything that is the same for every device:
//! - identification: magic value, version, device and vendor id;
//! - feature negotiation: the driver can only accept features the device offers, and
//!   FEATURES_OK is refused unless it accepted VIRTIO_F_VERSION_1;
//! - the device status state machine: ACKNOWLEDGE, DRIVER, FEATURES_OK, DRIVER_OK
//!   added one at a time in that order, FAILED at any time, 0 to reset;
//!   DEVICE_NEEDS_RESET when activation fails or the device reports its queue
//!   broken ([`IrqTrigger::fail`]), after which it gets no notifications until reset;
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

use crate::GuestMemoryMmap;
use log::Level;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE as ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER as DRIVER,
    VIRTIO_CONFIG_S_DRIVER_OK as DRIVER_OK, VIRTIO_CONFIG_S_FAILED as FAILED,
    VIRTIO_CONFIG_S_FEATURES_OK as FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET as NEEDS_RESET,
};
use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::{Queue, QueueState, QueueT};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{
    ActivateError, ActivateParams, IrqTrigger, VirtioDevice, VIRTIO_F_VERSION_1,
    VIRTIO_MMIO_INT_CONFIG,
};
use crate::bus::BusDevice;
use crate::ratelimit::log_ratelimited;
use crate::virtio::rings::{RingConfig, RingError};

#[path = "mmio_persist.rs"]
mod persist;
pub use persist::MmioState;

#[path = "mmio_regs.rs"]
pub mod regs;

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
/// value on bad input, which would hide the driver's mistake). Saved as it is in
/// [`MmioState`]: nothing uses it before it passes those checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueConfig {
    /// QueueNum.
    pub size: u32,
    /// QueueDescLow/High.
    pub desc_table: u64,
    /// QueueDriverLow/High.
    pub avail_ring: u64,
    /// QueueDeviceLow/High.
    pub used_ring: u64,
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
    /// The transport's part of ConfigGeneration (the device adds its own, see
    /// [`VirtioDevice::config_generation`]); the transport never changes it.
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

    /// Number of queues of the device (and of notification eventfds).
    pub fn queue_count(&self) -> usize {
        self.queues.len()
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
        // A device that marked itself failed gets no more work until the driver
        // resets it: a notification storm on a broken queue costs nothing.
        if self.activated && !self.irq.needs_reset() {
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
            regs::STATUS => {
                if self.irq.needs_reset() {
                    self.status | NEEDS_RESET
                } else {
                    self.status
                }
            }
            regs::SHM_LEN_LOW | regs::SHM_LEN_HIGH | regs::SHM_BASE_LOW | regs::SHM_BASE_HIGH => {
                NO_SHM_REGION
            }
            regs::CONFIG_GENERATION => self
                .config_generation
                .wrapping_add(lock(&self.device).config_generation()),
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
        self.irq.clear_needs_reset();
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
        let ring_config = RingConfig {
            max_size,
            size: config.size,
            desc_table: config.desc_table,
            avail_ring: config.avail_ring,
            used_ring: config.used_ring,
        };
        let mut queue = ring_config.queue(Some(&self.mem)).map_err(|e| match e {
            RingError::MaxSize => Error::QueueInvalid { index },
            RingError::Size => Error::QueueSize {
                index,
                size: config.size,
                max_size,
            },
            RingError::Misaligned { ring, addr, source } => Error::QueueMisaligned {
                index,
                ring,
                addr,
                source,
            },
            RingError::Outside { ring, addr, len } => Error::QueueOutsideMemory {
                index,
                ring,
                addr,
                len,
            },
        })?;
        queue.set_ready(true);
        // Agrees with the checks above; they run first because this one logs every
        // refusal without a rate limit.
        if !queue.is_valid(&self.mem) {
            return Err(Error::QueueInvalid { index });
        }
        Ok(queue)
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
#[path = "mmio_tests.rs"]
mod tests;
