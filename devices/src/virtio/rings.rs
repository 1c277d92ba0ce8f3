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
/// inside `mem`, as (name, address, length in bytes); `None` when all do. Shared by
/// QueueReady and snapshot restore.
pub(crate) fn ring_outside_memory(
    mem: &GuestMemoryMmap,
    queue: &Queue,
) -> Option<(&'static str, u64, u64)> {
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
/// and `max_size`. Shared by QueueReady and snapshot restore.
pub(crate) fn valid_queue_size(size: u32, max_size: u16) -> bool {
    size.is_power_of_two() && size <= u32::from(max_size)
}
