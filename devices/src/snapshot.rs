//! What every device's `restore` may refuse, and the serializable form of a
//! virtqueue.
//!
//! A snapshot file is hostile input: its checksum only proves it was not damaged,
//! not that a friendly cabin wrote it. Every `restore` checks what it applies
//! against the device it is restoring into (built fresh from the same
//! configuration) and against guest memory, and refuses anything else with a
//! [`RestoreError`]; nothing in a state may panic cabin, reach outside guest
//! memory or make it allocate without bound.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use virtio_queue::{Queue, QueueState, QueueT};

use crate::virtio::rings::{RingConfig, RingError};
use crate::virtio::{ActivateError, ActivateParams, IrqTrigger, VirtioDeviceState};
use crate::GuestMemoryMmap;

/// Why a device refused a saved state.
#[derive(Debug, Error)]
pub enum RestoreError {
    /// The state is of another kind of device than the one restoring it.
    #[error("The slot holds a {snapshot} device in the snapshot but a {here} device here")]
    DeviceType {
        /// The kind of device the state was saved from.
        snapshot: &'static str,
        /// The kind of device here.
        here: &'static str,
    },
    /// The transport is not freshly created.
    #[error("Cannot restore into a virtio-mmio transport the driver already set up (status {status:#x})")]
    TransportInUse {
        /// The transport's status register.
        status: u32,
    },
    /// The device has another number of queues.
    #[error("Snapshot's {device} device has {snapshot} queues but this one has {here}")]
    QueueCount {
        /// The kind of device.
        device: &'static str,
        /// Queues in the snapshot.
        snapshot: usize,
        /// Queues here.
        here: usize,
    },
    /// A queue's maximum size differs from the device's.
    #[error("Snapshot's queue {index} has maximum size {snapshot} but this device's has {here}")]
    QueueMaxSize {
        /// Queue index.
        index: usize,
        /// Maximum size in the snapshot.
        snapshot: u16,
        /// Maximum size here.
        here: u16,
    },
    /// The driver accepted features the device does not offer.
    #[error(
        "The snapshot's driver accepted features {acked:#x} this device does not offer ({offered:#x})"
    )]
    FeaturesNotOffered {
        /// Features accepted in the snapshot.
        acked: u64,
        /// Features this device offers.
        offered: u64,
    },
    /// The transport and the device disagree on the accepted features.
    #[error("Snapshot's transport acked features {transport:#x} but its device {device:#x}")]
    FeaturesMismatch {
        /// The transport's copy.
        transport: u64,
        /// The device's copy.
        device: u64,
    },
    /// A queue in the snapshot cannot be used; `problem` says why (in the same
    /// line, so that the message alone names it).
    #[error("Snapshot's queue {index} refused: {problem}")]
    Queue {
        /// Queue index.
        index: usize,
        /// What is wrong with it.
        problem: Box<RestoreError>,
    },
    /// A queue size is 0, not a power of two or above the maximum.
    #[error("Size {size} is not a power of two between 1 and {max_size}")]
    QueueSize {
        /// The saved size.
        size: u16,
        /// The saved maximum.
        max_size: u16,
    },
    /// A ring address breaks the ring's alignment.
    #[error("The {ring} at {addr:#x} is misaligned")]
    QueueMisaligned {
        /// Which ring.
        ring: &'static str,
        /// Its address.
        addr: u64,
        /// virtio-queue's verdict.
        #[source]
        source: virtio_queue::Error,
    },
    /// A ring does not lie wholly inside guest memory.
    #[error("The {ring} at {addr:#x} ({len} bytes) lies outside guest memory")]
    QueueOutsideMemory {
        /// Which ring.
        ring: &'static str,
        /// Its address.
        addr: u64,
        /// Its length in bytes.
        len: u64,
    },
    /// A running device's queue is not marked ready.
    #[error("It is not ready although the device runs")]
    QueueNotReady,
    /// The snapshot says activated but has no live queues, or the reverse.
    #[error(
        "Snapshot's device state {queues} live queues but the transport says it is {activated}"
    )]
    ActivationMismatch {
        /// "has" or "has no".
        queues: &'static str,
        /// "activated" or "not activated".
        activated: &'static str,
    },
    /// The status register does not follow the initialization sequence.
    #[error("Snapshot's device status {status:#x} cannot be reached by a driver")]
    Status {
        /// The saved status.
        status: u32,
    },
    /// InterruptStatus has bits the transport never sets.
    #[error("Snapshot's interrupt status {status:#x} has bits beyond {known:#x}")]
    InterruptStatus {
        /// The saved interrupt status.
        status: u32,
        /// The bits the transport knows.
        known: u32,
    },
    /// The disk's size differs from the snapshot's.
    #[error("Disk {} has {here} sectors, the snapshot's had {snapshot}: restore needs the same disk", path.display())]
    DiskSize {
        /// The disk.
        path: PathBuf,
        /// Sectors here.
        here: u64,
        /// Sectors in the snapshot.
        snapshot: u64,
    },
    /// The disk is read-only here but not in the snapshot, or the reverse.
    #[error("Disk {} is {here} but the snapshot's was {snapshot}", path.display())]
    DiskReadOnly {
        /// The disk.
        path: PathBuf,
        /// "read-only" or "read-write".
        here: &'static str,
        /// "read-only" or "read-write".
        snapshot: &'static str,
    },
    /// The saved MAC address is multicast or all zeros.
    #[error("Snapshot's MAC address {mac} is not a unicast address")]
    Mac {
        /// The address, `xx:xx:xx:xx:xx:xx`.
        mac: String,
    },
    /// The saved MTU is below the minimum.
    #[error("Snapshot's MTU {mtu} is below the minimum {min}")]
    Mtu {
        /// The saved MTU.
        mtu: u16,
        /// The smallest MTU the device accepts.
        min: u16,
    },
    /// A saved buffer holds more bytes than the device's buffer can.
    #[error("Snapshot's {what} holds {len} bytes, more than its capacity of {capacity}")]
    BufferTooLong {
        /// Which buffer.
        what: &'static str,
        /// Bytes in the snapshot.
        len: usize,
        /// The buffer's capacity.
        capacity: usize,
    },
    /// A saved i8042 field has a value the controller never holds.
    #[error("Snapshot's i8042 {what} {value:#x} is not a value the controller holds")]
    I8042Value {
        /// Which field.
        what: &'static str,
        /// The saved value.
        value: u8,
    },
    /// Pending ACPI events with bits no event uses.
    #[error("Snapshot's ACPI events {events:#x} have bits beyond {known:#x}")]
    AcpiEvents {
        /// The saved event bits.
        events: u8,
        /// The bits events use.
        known: u8,
    },
    /// The device refused to start with the restored queues.
    #[error("The restored device cannot start")]
    Activate(#[source] ActivateError),
    /// Rebuilding the serial port failed (its interrupt could not be signalled).
    #[error("Cannot signal the restored serial port's interrupt")]
    SerialInterrupt(#[source] std::io::Error),
}

impl RestoreError {
    /// Wraps a refusal of queue `index`.
    pub(crate) fn in_queue(self, index: usize) -> RestoreError {
        RestoreError::Queue {
            index,
            problem: Box::new(self),
        }
    }
}

/// A virtqueue as saved: [`virtio_queue::QueueState`] with serde.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSnapshot {
    /// Maximum size the device declared.
    pub max_size: u16,
    /// Size the driver chose.
    pub size: u16,
    /// Whether the driver set the queue up.
    pub ready: bool,
    /// Guest address of the descriptor table.
    pub desc_table: u64,
    /// Guest address of the available ring (driver area).
    pub avail_ring: u64,
    /// Guest address of the used ring (device area).
    pub used_ring: u64,
    /// Index of the next available ring entry the device will read.
    pub next_avail: u16,
    /// Index of the next used ring entry the device will write.
    pub next_used: u16,
    /// Whether VIRTIO_RING_F_EVENT_IDX is in use.
    pub event_idx_enabled: bool,
}

impl From<&Queue> for QueueSnapshot {
    fn from(queue: &Queue) -> Self {
        QueueSnapshot::of(queue)
    }
}

impl QueueSnapshot {
    /// The state of `queue`.
    pub fn of(queue: &Queue) -> Self {
        let state = queue.state();
        QueueSnapshot {
            max_size: state.max_size,
            size: state.size,
            ready: state.ready,
            desc_table: state.desc_table,
            avail_ring: state.avail_ring,
            used_ring: state.used_ring,
            next_avail: state.next_avail,
            next_used: state.next_used,
            event_idx_enabled: state.event_idx_enabled,
        }
    }

    /// The queue this state describes, checked: the size must be a power of two
    /// between 1 and the maximum, the rings aligned, and, for a ready queue, every
    /// ring wholly inside `mem` (a queue that is not ready is never used, and holds
    /// the defaults or a configuration checked when it was ready). The indices are
    /// taken as they are: a driver's avail index that runs ahead of them is caught
    /// when the device next reads the queue.
    pub fn to_queue(&self, mem: &GuestMemoryMmap) -> Result<Queue, RestoreError> {
        let config = RingConfig {
            max_size: self.max_size,
            size: u32::from(self.size),
            desc_table: self.desc_table,
            avail_ring: self.avail_ring,
            used_ring: self.used_ring,
        };
        let mut queue = config
            .queue(self.ready.then_some(mem))
            .map_err(|e| match e {
                RingError::MaxSize | RingError::Size => RestoreError::QueueSize {
                    size: self.size,
                    max_size: self.max_size,
                },
                RingError::Misaligned { ring, addr, source } => {
                    RestoreError::QueueMisaligned { ring, addr, source }
                }
                RingError::Outside { ring, addr, len } => {
                    RestoreError::QueueOutsideMemory { ring, addr, len }
                }
            })?;
        queue.set_next_avail(self.next_avail);
        queue.set_next_used(self.next_used);
        queue.set_event_idx(self.event_idx_enabled);
        queue.set_ready(self.ready);
        Ok(queue)
    }

    /// The same state as virtio-queue's type.
    pub fn to_queue_state(&self) -> QueueState {
        QueueState {
            max_size: self.max_size,
            next_avail: self.next_avail,
            next_used: self.next_used,
            event_idx_enabled: self.event_idx_enabled,
            size: self.size,
            ready: self.ready,
            desc_table: self.desc_table,
            avail_ring: self.avail_ring,
            used_ring: self.used_ring,
        }
    }
}

/// Checks and converts the live queues of a running device's state: each must be
/// usable and ready.
pub(crate) fn live_queues(
    queues: &[QueueSnapshot],
    mem: &GuestMemoryMmap,
) -> Result<Vec<Queue>, RestoreError> {
    queues
        .iter()
        .enumerate()
        .map(|(index, snapshot)| {
            if !snapshot.ready {
                return Err(RestoreError::QueueNotReady.in_queue(index));
            }
            snapshot.to_queue(mem).map_err(|e| e.in_queue(index))
        })
        .collect()
}

/// What [`crate::virtio::VirtioDevice::restore`] needs to start a device that was
/// running: the live queues of `state`, checked, with its accepted features.
pub(crate) fn activate_params(
    state: &VirtioDeviceState,
    mem: &GuestMemoryMmap,
    irq: IrqTrigger,
) -> Result<ActivateParams, RestoreError> {
    Ok(ActivateParams {
        mem: mem.clone(),
        queues: live_queues(state.queues(), mem)?,
        acked_features: state.acked_features(),
        irq,
    })
}

/// "read-only" or "read-write".
pub(crate) fn access_mode(read_only: bool) -> &'static str {
    if read_only {
        "read-only"
    } else {
        "read-write"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::test_utils::guest_memory;

    fn ready_queue() -> QueueSnapshot {
        QueueSnapshot {
            max_size: 256,
            size: 256,
            ready: true,
            desc_table: 0x1000,
            avail_ring: 0x2000,
            used_ring: 0x3000,
            next_avail: 7,
            next_used: 5,
            event_idx_enabled: true,
        }
    }

    #[test]
    fn queue_snapshot_valid_round_trips_through_queue() {
        let mem = guest_memory(0x10000);
        let snapshot = ready_queue();
        let queue = snapshot.to_queue(&mem).unwrap();
        assert_eq!(QueueSnapshot::of(&queue), snapshot);
        assert_eq!(QueueSnapshot::from(&queue).to_queue_state(), queue.state());
    }

    #[test]
    fn queue_snapshot_bad_size_is_refused() {
        let mem = guest_memory(0x10000);
        for size in [0, 3, 512] {
            let snapshot = QueueSnapshot {
                size,
                ..ready_queue()
            };
            let err = snapshot.to_queue(&mem).unwrap_err();
            assert!(
                matches!(err, RestoreError::QueueSize { size: s, .. } if s == size),
                "{err}"
            );
        }
    }

    #[test]
    fn queue_snapshot_bad_max_size_is_refused() {
        let mem = guest_memory(0x10000);
        let snapshot = QueueSnapshot {
            max_size: 0,
            size: 0,
            ..ready_queue()
        };
        assert!(matches!(
            snapshot.to_queue(&mem),
            Err(RestoreError::QueueSize { .. })
        ));
    }

    #[test]
    fn queue_snapshot_ring_outside_memory_is_refused() {
        let mem = guest_memory(0x10000);
        let snapshot = QueueSnapshot {
            used_ring: 0xff00,
            ..ready_queue()
        };
        let err = snapshot.to_queue(&mem).unwrap_err();
        assert!(
            matches!(
                err,
                RestoreError::QueueOutsideMemory {
                    ring: "device area",
                    addr: 0xff00,
                    ..
                }
            ),
            "{err}"
        );
        let snapshot = QueueSnapshot {
            desc_table: u64::MAX - 15,
            ..ready_queue()
        };
        assert!(snapshot.to_queue(&mem).is_err());
    }

    #[test]
    fn queue_snapshot_misaligned_ring_is_refused() {
        let mem = guest_memory(0x10000);
        let snapshot = QueueSnapshot {
            desc_table: 0x1001,
            ..ready_queue()
        };
        assert!(matches!(
            snapshot.to_queue(&mem),
            Err(RestoreError::QueueMisaligned {
                ring: "descriptor table",
                ..
            })
        ));
    }

    #[test]
    fn live_queues_not_ready_is_refused_with_its_index() {
        let mem = guest_memory(0x10000);
        let queues = [
            ready_queue(),
            QueueSnapshot {
                ready: false,
                ..ready_queue()
            },
        ];
        let err = live_queues(&queues, &mem).unwrap_err();
        assert!(matches!(err, RestoreError::Queue { index: 1, .. }), "{err}");
    }
}
