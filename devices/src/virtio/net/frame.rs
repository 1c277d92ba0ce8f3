//! Descriptor chains to frames and back, with no fd in sight: what the guest may get
//! wrong is checked here, and only here.
//!
//! A transmit chain is gathered into one buffer (header and frame, as the TAP takes
//! them); a received frame is scattered over the device-writable descriptors of one
//! receive chain. Descriptors are read once into a bounded list before anything is
//! checked, so a guest rewriting its descriptor table meanwhile changes nothing.

use std::cmp::min;

use crate::GuestMemoryMmap;
use thiserror::Error;
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Bytes, GuestMemoryError};

use super::{MAX_BUFFER_LEN, MAX_CHAIN_DESCRIPTORS, NUM_BUFFERS_OFFSET, VNET_HDR_LEN};

/// `flags` offset in the header.
const FLAGS_OFFSET: usize = 0;

/// Why a chain cannot carry a frame.
#[derive(Debug, Error)]
pub enum FrameError {
    /// A descriptor goes the wrong way: device-writable in a transmit chain or
    /// device-readable in a receive chain.
    #[error("Descriptor {position} of the chain is device-{found}")]
    WrongDirection {
        /// Position in the chain, from 0.
        position: usize,
        /// "readable" or "writable".
        found: &'static str,
    },
    /// The chain is longer than any valid one.
    #[error("Chain has more than {MAX_CHAIN_DESCRIPTORS} descriptors")]
    TooManyDescriptors,
    /// A transmit chain holds no more than a header.
    #[error("Transmit chain of {len} bytes carries no frame after the {VNET_HDR_LEN}-byte header")]
    Empty {
        /// Total length of the chain.
        len: u64,
    },
    /// A transmit chain is longer than the largest frame.
    #[error("Transmit chain of {len} bytes exceeds {MAX_BUFFER_LEN} bytes")]
    TooLong {
        /// Total length of the chain.
        len: u64,
    },
    /// A received frame is larger than the receive chain.
    #[error("Frame of {frame} bytes does not fit the receive chain of {capacity} bytes")]
    DoesNotFit {
        /// Length of header plus frame.
        frame: usize,
        /// Total length of the chain.
        capacity: u64,
    },
    /// A descriptor points outside guest memory.
    #[error("Cannot access {len} bytes of guest memory at {addr:#x}")]
    GuestMemory {
        /// Guest-physical address of the buffer.
        addr: u64,
        /// Length of the access.
        len: usize,
        /// vm-memory's reason.
        #[source]
        source: GuestMemoryError,
    },
}

/// Gathers a transmit chain into `frame` (cleared first): the header and the
/// Ethernet frame after it, ready for the TAP. Only device-readable descriptors are
/// allowed, and the total must be more than a header and at most [`MAX_BUFFER_LEN`].
pub fn read_tx_frame<I>(
    mem: &GuestMemoryMmap,
    descs: I,
    frame: &mut Vec<u8>,
) -> Result<(), FrameError>
where
    I: IntoIterator<Item = Descriptor>,
{
    frame.clear();
    let (descs, len) = collect(descs, false)?;
    if len <= VNET_HDR_LEN as u64 {
        return Err(FrameError::Empty { len });
    }
    let total = usize::try_from(len)
        .ok()
        .filter(|&total| total <= MAX_BUFFER_LEN)
        .ok_or(FrameError::TooLong { len })?;
    frame.resize(total, 0);
    let mut offset = 0usize;
    for desc in descs {
        let len = desc_len(&desc);
        // `collect` summed these very lengths to `total`: the ranges fit.
        let end = offset.saturating_add(len);
        let Some(dst) = frame.get_mut(offset..end) else {
            break;
        };
        mem.read_slice(dst, desc.addr())
            .map_err(|source| FrameError::GuestMemory {
                addr: desc.addr().0,
                len,
                source,
            })?;
        offset = end;
    }
    Ok(())
}

/// Scatters `frame` (header included) over the device-writable descriptors of a
/// receive chain and returns the used length (the frame's length). Fails before
/// writing anything if a descriptor is device-readable or the frame does not fit.
pub fn write_rx_frame<I>(mem: &GuestMemoryMmap, descs: I, frame: &[u8]) -> Result<u32, FrameError>
where
    I: IntoIterator<Item = Descriptor>,
{
    let (descs, capacity) = collect(descs, true)?;
    let used = u32::try_from(frame.len())
        .ok()
        .filter(|&used| u64::from(used) <= capacity)
        .ok_or(FrameError::DoesNotFit {
            frame: frame.len(),
            capacity,
        })?;
    let mut rest = frame;
    for desc in descs {
        if rest.is_empty() {
            break;
        }
        let (now, later) = rest.split_at(min(desc_len(&desc), rest.len()));
        mem.write_slice(now, desc.addr())
            .map_err(|source| FrameError::GuestMemory {
                addr: desc.addr().0,
                len: now.len(),
                source,
            })?;
        rest = later;
    }
    Ok(used)
}

/// Completes the header of a frame read from the TAP for the driver: `num_buffers`
/// is 1 (the kernel leaves those bytes alone; without MRG_RXBUF the device must
/// write 1), and without VIRTIO_NET_F_GUEST_CSUM `flags` must be 0. Frames shorter
/// than a header are left alone (they are dropped).
pub fn complete_rx_header(frame: &mut [u8], guest_csum: bool) {
    let Some(header) = frame.get_mut(..VNET_HDR_LEN) else {
        return;
    };
    header[NUM_BUFFERS_OFFSET..NUM_BUFFERS_OFFSET + 2].copy_from_slice(&1u16.to_le_bytes());
    if !guest_csum {
        header[FLAGS_OFFSET] = 0;
    }
}

/// The descriptors of a chain, all checked to go the `device_writable` way, and
/// their total length. At most [`MAX_CHAIN_DESCRIPTORS`] are accepted.
fn collect<I>(descs: I, device_writable: bool) -> Result<(Vec<Descriptor>, u64), FrameError>
where
    I: IntoIterator<Item = Descriptor>,
{
    let mut list = Vec::new();
    let mut total: u64 = 0;
    for (position, desc) in descs.into_iter().enumerate() {
        if position >= MAX_CHAIN_DESCRIPTORS {
            return Err(FrameError::TooManyDescriptors);
        }
        if desc.is_write_only() != device_writable {
            return Err(FrameError::WrongDirection {
                position,
                found: if desc.is_write_only() {
                    "writable"
                } else {
                    "readable"
                },
            });
        }
        // At most MAX_CHAIN_DESCRIPTORS lengths of at most u32::MAX each: no overflow,
        // but checked all the same.
        total = total.saturating_add(u64::from(desc.len()));
        list.push(desc);
    }
    Ok((list, total))
}

/// A descriptor's length as usize (a u32 always fits on the 64-bit hosts cabin runs
/// on; saturating keeps the conversion checked).
fn desc_len(desc: &Descriptor) -> usize {
    usize::try_from(desc.len()).unwrap_or(usize::MAX)
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
