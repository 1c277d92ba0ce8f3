//! Which parts of a chain receive random bytes.
//!
//! Pure: checks descriptors against guest memory, writes nothing. The device-writable
//! descriptors, in chain order, receive up to the cap; device-readable ones are
//! skipped (they get nothing), as are empty ones.

use thiserror::Error;
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Address, GuestAddress, GuestMemory};

use super::MAX_CHAIN_DESCRIPTORS;

/// Why a chain gets no random bytes.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RequestError {
    /// More descriptors than a queue holds.
    #[error("Chain has more than {MAX_CHAIN_DESCRIPTORS} descriptors")]
    ChainTooLong,
    /// A device-writable descriptor is not (entirely) in guest memory.
    #[error("Descriptor {index} at {addr:#x} (length {len}) is outside guest memory")]
    OutOfMemory {
        /// Position in the chain.
        index: usize,
        /// Descriptor address.
        addr: u64,
        /// Length of the part that would be written.
        len: u32,
    },
}

/// A guest buffer to fill, checked to lie in guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Guest-physical start.
    pub addr: GuestAddress,
    /// Bytes to write (non-zero).
    pub len: u32,
}

/// The buffers of a chain to fill, at most `cap` bytes in all, and their total.
/// Only the part of a descriptor that will be written is checked against memory.
pub fn writable_segments<M, I>(
    descs: I,
    mem: &M,
    cap: u32,
) -> Result<(Vec<Segment>, u32), RequestError>
where
    M: GuestMemory + ?Sized,
    I: IntoIterator<Item = Descriptor>,
{
    let mut segments = Vec::new();
    let mut total: u32 = 0;
    for (index, desc) in descs.into_iter().enumerate() {
        if index >= MAX_CHAIN_DESCRIPTORS {
            return Err(RequestError::ChainTooLong);
        }
        let room = cap.saturating_sub(total);
        let len = desc.len().min(room);
        if !desc.is_write_only() || len == 0 {
            continue;
        }
        let in_memory = usize::try_from(len)
            .is_ok_and(|n| mem.check_range(desc.addr(), n, vm_memory::Permissions::Write));
        if !in_memory {
            return Err(RequestError::OutOfMemory {
                index,
                addr: desc.addr().raw_value(),
                len,
            });
        }
        segments.push(Segment {
            addr: desc.addr(),
            len,
        });
        // len <= room = cap - total.
        total = total.saturating_add(len);
    }
    Ok((segments, total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::test_utils::guest_memory;
    use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;

    const W: u16 = VRING_DESC_F_WRITE as u16;

    fn desc(addr: u64, len: u32, flags: u16) -> Descriptor {
        Descriptor::new(addr, len, flags, 0)
    }

    #[test]
    fn writable_segments_read_only_and_empty_skipped() {
        let mem = guest_memory(0x10000);
        let descs = [desc(0x100, 16, 0), desc(0x200, 0, W), desc(0x300, 32, W)];

        let (segs, total) = writable_segments(descs, &mem, 1024).unwrap();

        assert_eq!(
            segs,
            vec![Segment {
                addr: GuestAddress(0x300),
                len: 32
            }]
        );
        assert_eq!(total, 32);
    }

    #[test]
    fn writable_segments_capped_across_descriptors() {
        let mem = guest_memory(0x10000);
        let descs = [
            desc(0x0, 600, W),
            desc(0x1000, 600, W),
            desc(0x2000, 600, W),
        ];

        let (segs, total) = writable_segments(descs, &mem, 1000).unwrap();

        assert_eq!(total, 1000);
        assert_eq!(segs.len(), 2);
        assert_eq!(segs[1].len, 400);
    }

    #[test]
    fn writable_segments_huge_length_only_capped_part_checked() {
        let mem = guest_memory(0x10000);
        let descs = [desc(0x1000, u32::MAX, W)];

        let (segs, total) = writable_segments(descs, &mem, 4096).unwrap();

        assert_eq!((segs.len(), total), (1, 4096));
    }

    #[test]
    fn writable_segments_outside_memory_error() {
        let mem = guest_memory(0x10000);
        let descs = [desc(0xfff0, 32, W)];

        let err = writable_segments(descs, &mem, 4096).unwrap_err();

        assert_eq!(
            err,
            RequestError::OutOfMemory {
                index: 0,
                addr: 0xfff0,
                len: 32
            }
        );
    }

    #[test]
    fn writable_segments_address_overflow_error() {
        let mem = guest_memory(0x10000);
        let descs = [desc(u64::MAX - 4, 32, W)];

        assert!(writable_segments(descs, &mem, 4096).is_err());
    }

    #[test]
    fn writable_segments_too_many_descriptors_error() {
        let mem = guest_memory(0x10000);
        let descs = vec![desc(0x100, 0, W); MAX_CHAIN_DESCRIPTORS + 1];

        let err = writable_segments(descs, &mem, 4096).unwrap_err();

        assert_eq!(err, RequestError::ChainTooLong);
    }

    #[test]
    fn writable_segments_only_read_only_nothing() {
        let mem = guest_memory(0x10000);

        let (segs, total) = writable_segments([desc(0x100, 64, 0)], &mem, 4096).unwrap();

        assert!(segs.is_empty());
        assert_eq!(total, 0);
    }
}
