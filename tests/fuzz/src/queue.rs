//! Guest memory and split virtqueues laid out by virtio-queue's mock driver, with the
//! fuzzer's bytes as the guest's side of it.
//!
//! The input is `[options; OPTION_BYTES]` then an image of guest memory from address
//! 0: the descriptor tables, available rings (flags, idx, ring) and everything the
//! descriptors point at come from the fuzzer, so it controls chain heads, lengths,
//! flags (NEXT, WRITE, INDIRECT), next indices, loops and the available index.

use devices::GuestMemoryMmap;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress};

/// Size of every queue (small, so that random next indices often hit the table).
pub const QUEUE_SIZE: u16 = 16;
/// Where queue `i` starts: its descriptor table, then its available and used rings
/// (at most 16 * 16 + 38 + 2 + 134 = 430 bytes for 16 entries).
pub const QUEUE_STRIDE: u64 = 0x200;
/// Guest memory size: small, so random addresses fall in it often enough.
pub const MEM_SIZE: usize = 0x1_0000;
/// Option bytes ahead of the memory image.
pub const OPTION_BYTES: usize = 4;

/// The guest of one fuzz input: memory, option bytes and ready queues.
pub struct Guest {
    pub mem: GuestMemoryMmap,
    pub options: [u8; OPTION_BYTES],
    /// The queues as a device gets them from the transport: ready, with the mock's
    /// ring addresses; queue `i` starts at `i * QUEUE_STRIDE`.
    pub queues: Vec<Queue>,
}

impl Guest {
    /// Lays out `queues` queues, then splits `data` into options and a memory image
    /// and writes the image over them (the mock zeroes ring indices as it lays them
    /// out, so the image comes second).
    pub fn new(data: &[u8], queues: u64) -> Option<Guest> {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).ok()?;
        let queues = (0..queues)
            .map(|index| {
                let start = GuestAddress(index.checked_mul(QUEUE_STRIDE)?);
                let mock = MockSplitQueue::create(&mem, start, QUEUE_SIZE);
                mock.create_queue::<Queue>().ok()
            })
            .collect::<Option<Vec<_>>>()?;
        let mut options = [0u8; OPTION_BYTES];
        let split = data.len().min(OPTION_BYTES);
        options[..split].copy_from_slice(&data[..split]);
        let image = &data[split..];
        let image = &image[..image.len().min(MEM_SIZE)];
        mem.write_slice(image, GuestAddress(0)).ok()?;
        Some(Guest {
            mem,
            options,
            queues,
        })
    }

    /// A little-endian u16 from option bytes `at`, `at + 1`.
    pub fn option_u16(&self, at: usize) -> u16 {
        let lo = self.options.get(at).copied().unwrap_or(0);
        let hi = self.options.get(at + 1).copied().unwrap_or(0);
        u16::from_le_bytes([lo, hi])
    }
}
