//! Checks of a split virtqueue's configuration shared by the virtio-mmio transport
//! (QueueReady) and snapshot restore.

use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryBackend};

use crate::GuestMemoryMmap;

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

/// The first ring of `queue` (by its size and addresses) that does not lie wholly
/// inside `mem`, as (name, address, length in bytes); `None` when all do.
fn ring_outside_memory(mem: &GuestMemoryMmap, queue: &Queue) -> Option<(&'static str, u64, u64)> {
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
    rings.into_iter().find(|&(_, addr, len)| {
        !usize::try_from(len).is_ok_and(|len| mem.check_range(GuestAddress(addr), len))
    })
}

/// Whether `size` is a queue size the driver may choose: a power of two between 1
/// and `max_size`.
fn valid_queue_size(size: u32, max_size: u16) -> bool {
    size.is_power_of_two() && size <= u32::from(max_size)
}

/// Why a queue configuration was refused; each caller names the queue in its own
/// error type.
#[derive(Debug)]
pub(crate) enum RingError {
    /// The maximum size is not one virtio-queue takes.
    MaxSize,
    /// The size is not a power of two between 1 and the maximum.
    Size,
    /// A ring's address is not aligned as the ring needs.
    Misaligned {
        /// Which ring.
        ring: &'static str,
        /// Its address.
        addr: u64,
        /// virtio-queue's verdict.
        source: virtio_queue::Error,
    },
    /// A ring does not lie wholly inside guest memory.
    Outside {
        /// Which ring.
        ring: &'static str,
        /// Its address.
        addr: u64,
        /// Its length in bytes.
        len: u64,
    },
}

/// A split virtqueue's configuration, as the driver wrote it (QueueReady) or as a
/// snapshot holds it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RingConfig {
    pub(crate) max_size: u16,
    pub(crate) size: u32,
    pub(crate) desc_table: u64,
    pub(crate) avail_ring: u64,
    pub(crate) used_ring: u64,
}

impl RingConfig {
    /// A queue (not yet ready) with this configuration applied, each part checked:
    /// the size, each ring's alignment and, when `mem` is given, that every ring lies
    /// inside it. Shared by QueueReady and snapshot restore.
    pub(crate) fn queue(&self, mem: Option<&GuestMemoryMmap>) -> Result<Queue, RingError> {
        let mut queue = Queue::new(self.max_size).map_err(|_| RingError::MaxSize)?;
        if !valid_queue_size(self.size, self.max_size) {
            return Err(RingError::Size);
        }
        let size = u16::try_from(self.size).map_err(|_| RingError::Size)?;
        queue.try_set_size(size).map_err(|_| RingError::Size)?;
        let misaligned = |ring, addr| move |source| RingError::Misaligned { ring, addr, source };
        queue
            .try_set_desc_table_address(GuestAddress(self.desc_table))
            .map_err(misaligned("descriptor table", self.desc_table))?;
        queue
            .try_set_avail_ring_address(GuestAddress(self.avail_ring))
            .map_err(misaligned("driver area", self.avail_ring))?;
        queue
            .try_set_used_ring_address(GuestAddress(self.used_ring))
            .map_err(misaligned("device area", self.used_ring))?;
        if let Some(mem) = mem {
            if let Some((ring, addr, len)) = ring_outside_memory(mem, &queue) {
                return Err(RingError::Outside { ring, addr, len });
            }
        }
        Ok(queue)
    }
}
