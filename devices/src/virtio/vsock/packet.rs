//! vsock packets over descriptor chains: the 44-byte header (`struct
//! virtio_vsock_hdr`, little-endian) and its payload.
//!
//! Pure: reads and writes guest memory through vm-memory, touches no fd. A driver
//! may split the header and payload over descriptors in any way (Linux's transmit
//! path puts them in two descriptors, a receive buffer is often one for both), so
//! both directions walk the chain byte-wise, at most [`MAX_CHAIN_DESCRIPTORS`]
//! descriptors and [`HDR_LEN`] + [`MAX_PAYLOAD`] bytes.

use thiserror::Error;
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory};

use super::{MAX_CHAIN_DESCRIPTORS, MAX_PAYLOAD};
use crate::GuestMemoryMmap;

/// Length of the packet header.
pub const HDR_LEN: usize = 44;
/// `type`: a stream socket (the only one the device offers).
pub const TYPE_STREAM: u16 = 1;
/// `type`: a seqpacket socket (VIRTIO_VSOCK_F_SEQPACKET, not offered).
pub const TYPE_SEQPACKET: u16 = 2;
/// `flags` of SHUTDOWN: the sender will receive nothing more.
pub const SHUTDOWN_RCV: u32 = 1;
/// `flags` of SHUTDOWN: the sender will send nothing more.
pub const SHUTDOWN_SEND: u32 = 2;
/// Both SHUTDOWN flags.
pub const SHUTDOWN_BOTH: u32 = SHUTDOWN_RCV | SHUTDOWN_SEND;

/// `op` values (virtio 1.2, 5.10.6).
pub mod op {
    /// Connection request.
    pub const REQUEST: u16 = 1;
    /// Connection accepted.
    pub const RESPONSE: u16 = 2;
    /// Connection reset (refused or aborted).
    pub const RST: u16 = 3;
    /// The sender shuts down one or both directions ([`super::SHUTDOWN_RCV`],
    /// [`super::SHUTDOWN_SEND`]).
    pub const SHUTDOWN: u16 = 4;
    /// Data.
    pub const RW: u16 = 5;
    /// The sender's credit (`buf_alloc`, `fwd_cnt`) changed.
    pub const CREDIT_UPDATE: u16 = 6;
    /// The sender asks for a CREDIT_UPDATE.
    pub const CREDIT_REQUEST: u16 = 7;
}

/// Offsets of the header fields.
mod offset {
    pub const SRC_CID: usize = 0;
    pub const DST_CID: usize = 8;
    pub const SRC_PORT: usize = 16;
    pub const DST_PORT: usize = 20;
    pub const LEN: usize = 24;
    pub const TYPE: usize = 28;
    pub const OP: usize = 30;
    pub const FLAGS: usize = 32;
    pub const BUF_ALLOC: usize = 36;
    pub const FWD_CNT: usize = 40;
}

/// A packet header, decoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// Sender's CID.
    pub src_cid: u64,
    /// Receiver's CID.
    pub dst_cid: u64,
    /// Sender's port.
    pub src_port: u32,
    /// Receiver's port.
    pub dst_port: u32,
    /// Payload length.
    pub len: u32,
    /// Socket type ([`TYPE_STREAM`]).
    pub kind: u16,
    /// Operation ([`op`]).
    pub op: u16,
    /// Operation flags (SHUTDOWN's).
    pub flags: u32,
    /// The sender's receive buffer for this connection.
    pub buf_alloc: u32,
    /// Bytes the sender has consumed from that buffer, ever (wrapping).
    pub fwd_cnt: u32,
}

fn le_u16(b: &[u8; HDR_LEN], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le_u32(b: &[u8; HDR_LEN], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le_u64(b: &[u8; HDR_LEN], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

impl Header {
    /// Decodes a header.
    pub fn from_bytes(b: &[u8; HDR_LEN]) -> Header {
        Header {
            src_cid: le_u64(b, offset::SRC_CID),
            dst_cid: le_u64(b, offset::DST_CID),
            src_port: le_u32(b, offset::SRC_PORT),
            dst_port: le_u32(b, offset::DST_PORT),
            len: le_u32(b, offset::LEN),
            kind: le_u16(b, offset::TYPE),
            op: le_u16(b, offset::OP),
            flags: le_u32(b, offset::FLAGS),
            buf_alloc: le_u32(b, offset::BUF_ALLOC),
            fwd_cnt: le_u32(b, offset::FWD_CNT),
        }
    }

    /// Encodes the header.
    pub fn to_bytes(&self) -> [u8; HDR_LEN] {
        let mut b = [0u8; HDR_LEN];
        b[offset::SRC_CID..offset::DST_CID].copy_from_slice(&self.src_cid.to_le_bytes());
        b[offset::DST_CID..offset::SRC_PORT].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[offset::SRC_PORT..offset::DST_PORT].copy_from_slice(&self.src_port.to_le_bytes());
        b[offset::DST_PORT..offset::LEN].copy_from_slice(&self.dst_port.to_le_bytes());
        b[offset::LEN..offset::TYPE].copy_from_slice(&self.len.to_le_bytes());
        b[offset::TYPE..offset::OP].copy_from_slice(&self.kind.to_le_bytes());
        b[offset::OP..offset::FLAGS].copy_from_slice(&self.op.to_le_bytes());
        b[offset::FLAGS..offset::BUF_ALLOC].copy_from_slice(&self.flags.to_le_bytes());
        b[offset::BUF_ALLOC..offset::FWD_CNT].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[offset::FWD_CNT..].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }
}

/// Why a chain does not hold a usable packet (or cannot take one).
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum PacketError {
    /// More descriptors than a queue holds.
    #[error("Chain has more than {MAX_CHAIN_DESCRIPTORS} descriptors")]
    ChainTooLong,
    /// A transmit chain has a device-writable descriptor, or a receive chain a
    /// device-readable one.
    #[error("Descriptor {index} has the wrong direction")]
    WrongDirection {
        /// Position in the chain.
        index: usize,
    },
    /// A descriptor is not (entirely) in guest memory.
    #[error("Descriptor {index} at {addr:#x} is outside guest memory")]
    OutOfMemory {
        /// Position in the chain.
        index: usize,
        /// Descriptor address.
        addr: u64,
    },
    /// The chain is shorter than a header.
    #[error("Chain holds {got} bytes, less than a {HDR_LEN}-byte header")]
    NoHeader {
        /// Bytes in the chain.
        got: usize,
    },
    /// The header announces more than [`MAX_PAYLOAD`] bytes.
    #[error("Header announces {len} payload bytes, more than {MAX_PAYLOAD}")]
    PayloadTooLong {
        /// The announced length.
        len: u32,
    },
    /// The chain holds less payload than the header announces.
    #[error("Header announces {len} payload bytes but the chain holds {got}")]
    Truncated {
        /// The announced length.
        len: u32,
        /// Payload bytes in the chain.
        got: usize,
    },
    /// A receive buffer cannot hold a header, or a payload is larger than it.
    #[error("Receive buffer of {capacity} bytes cannot hold the packet")]
    BufferTooSmall {
        /// Bytes the buffer holds.
        capacity: u32,
    },
}

/// A packet from the txq.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxPacket {
    /// Its header.
    pub header: Header,
    /// Its payload, exactly `header.len` bytes.
    pub data: Vec<u8>,
}

/// A refused transmit chain: why, and its header when it had a whole one (so the
/// device can answer with a RST to the right ports).
#[derive(Debug, PartialEq, Eq)]
pub struct TxError {
    /// The header, if the chain held one.
    pub header: Option<Header>,
    /// What is wrong.
    pub error: PacketError,
}

/// Reads a packet from the descriptors of a transmit chain. Payload bytes beyond
/// `len` are ignored; a payload longer than [`MAX_PAYLOAD`] or shorter than `len`
/// is refused.
pub fn read_tx_packet<I>(descs: I, mem: &GuestMemoryMmap) -> Result<TxPacket, TxError>
where
    I: IntoIterator<Item = Descriptor>,
{
    let mut hdr = [0u8; HDR_LEN];
    let mut hdr_got = 0usize;
    let mut header: Option<Header> = None;
    let mut data = Vec::new();
    let mut want = 0usize;
    let fail = |header, error| TxError { header, error };
    for (index, desc) in descs.into_iter().enumerate() {
        if header.is_some() && data.len() == want {
            break;
        }
        if index >= MAX_CHAIN_DESCRIPTORS {
            return Err(fail(header, PacketError::ChainTooLong));
        }
        if desc.is_write_only() {
            return Err(fail(header, PacketError::WrongDirection { index }));
        }
        let mut off = 0usize;
        let desc_len = usize::try_from(desc.len()).unwrap_or(usize::MAX);
        while off < desc_len {
            let oom = PacketError::OutOfMemory {
                index,
                addr: desc.addr().raw_value(),
            };
            let Some(addr) = u64::try_from(off)
                .ok()
                .and_then(|off| desc.addr().checked_add(off))
            else {
                return Err(fail(header, oom));
            };
            let rest = desc_len - off;
            let n = match header {
                None => {
                    let n = rest.min(HDR_LEN - hdr_got);
                    if mem
                        .read_slice(&mut hdr[hdr_got..hdr_got + n], addr)
                        .is_err()
                    {
                        return Err(fail(header, oom));
                    }
                    hdr_got += n;
                    if hdr_got == HDR_LEN {
                        let h = Header::from_bytes(&hdr);
                        if h.len > MAX_PAYLOAD {
                            let error = PacketError::PayloadTooLong { len: h.len };
                            return Err(fail(Some(h), error));
                        }
                        // h.len <= MAX_PAYLOAD.
                        want = usize::try_from(h.len).unwrap_or(0);
                        data.reserve_exact(want);
                        header = Some(h);
                    }
                    n
                }
                Some(_) => {
                    let n = rest.min(want - data.len());
                    if n == 0 {
                        break;
                    }
                    let start = data.len();
                    data.resize(start + n, 0);
                    if mem.read_slice(&mut data[start..], addr).is_err() {
                        return Err(fail(header, oom));
                    }
                    n
                }
            };
            off += n;
        }
    }
    match header {
        None => Err(fail(None, PacketError::NoHeader { got: hdr_got })),
        Some(h) if data.len() < want => Err(fail(
            Some(h),
            PacketError::Truncated {
                len: h.len,
                got: data.len(),
            },
        )),
        Some(header) => Ok(TxPacket { header, data }),
    }
}

/// The device-writable buffers of a receive chain, checked against guest memory,
/// at most [`HDR_LEN`] + [`MAX_PAYLOAD`] bytes in all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RxBuffer {
    segments: Vec<(GuestAddress, u32)>,
    capacity: u32,
}

impl RxBuffer {
    /// The buffers of a receive chain. Every descriptor must be device-writable;
    /// the whole must hold at least a header.
    pub fn new<I>(descs: I, mem: &GuestMemoryMmap) -> Result<RxBuffer, PacketError>
    where
        I: IntoIterator<Item = Descriptor>,
    {
        // HDR_LEN + MAX_PAYLOAD fits in u32.
        let cap = MAX_PAYLOAD + HDR_LEN as u32;
        let mut segments = Vec::new();
        let mut capacity = 0u32;
        for (index, desc) in descs.into_iter().enumerate() {
            if index >= MAX_CHAIN_DESCRIPTORS {
                return Err(PacketError::ChainTooLong);
            }
            if !desc.is_write_only() {
                return Err(PacketError::WrongDirection { index });
            }
            let len = desc.len().min(cap - capacity);
            if len == 0 {
                continue;
            }
            let in_memory = usize::try_from(len)
                .is_ok_and(|n| mem.check_range(desc.addr(), n, vm_memory::Permissions::Write));
            if !in_memory {
                return Err(PacketError::OutOfMemory {
                    index,
                    addr: desc.addr().raw_value(),
                });
            }
            segments.push((desc.addr(), len));
            capacity += len;
        }
        if (capacity as usize) < HDR_LEN {
            return Err(PacketError::BufferTooSmall { capacity });
        }
        Ok(RxBuffer { segments, capacity })
    }

    /// Most payload bytes a packet in this buffer can carry.
    pub fn max_payload(&self) -> u32 {
        self.capacity.saturating_sub(HDR_LEN as u32)
    }

    /// Writes `header` (its `len` set to `data`'s) and `data`; returns the bytes
    /// written, for the used ring.
    pub fn write(
        &self,
        mem: &GuestMemoryMmap,
        header: &Header,
        data: &[u8],
    ) -> Result<u32, PacketError> {
        let too_small = PacketError::BufferTooSmall {
            capacity: self.capacity,
        };
        let data_len = u32::try_from(data.len()).map_err(|_| too_small.clone())?;
        if data_len > self.max_payload() {
            return Err(too_small);
        }
        let hdr = Header {
            len: data_len,
            ..*header
        }
        .to_bytes();
        let mut sources = [&hdr[..], data].into_iter().filter(|s| !s.is_empty());
        let mut src = sources.next().unwrap_or(&[]);
        for (index, &(addr, len)) in self.segments.iter().enumerate() {
            let mut off = 0usize;
            let len = usize::try_from(len).unwrap_or(0);
            while off < len && !src.is_empty() {
                let n = src.len().min(len - off);
                let at = u64::try_from(off)
                    .ok()
                    .and_then(|off| addr.checked_add(off));
                if at.is_none_or(|at| mem.write_slice(&src[..n], at).is_err()) {
                    return Err(PacketError::OutOfMemory {
                        index,
                        addr: addr.raw_value(),
                    });
                }
                off += n;
                src = &src[n..];
                if src.is_empty() {
                    src = sources.next().unwrap_or(&[]);
                }
            }
        }
        Ok(data_len + HDR_LEN as u32)
    }
}

#[cfg(test)]
#[path = "packet_tests.rs"]
mod tests;
