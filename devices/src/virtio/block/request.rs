//! Parsing of one virtio-blk request chain (virtio 1.2, section 5.2.6).
//!
//! Pure: reads only the request header from guest memory, touches no file and
//! writes nothing. Every guest number is checked before it is used.
//!
//! A chain is: one device-readable header descriptor (type u32, reserved u32,
//! sector u64), then the data descriptors, then a device-writable status
//! descriptor whose last byte receives the status. The status descriptor is checked
//! first, so that any later failure can still be reported to the driver.

use thiserror::Error;
use virtio_bindings::virtio_blk;
use virtio_queue::desc::split::Descriptor;
use vm_memory::{
    Address, Bytes, GuestAddress, GuestMemory, GuestMemoryError, Le32, Le64, Permissions,
};

use super::{
    MAX_CHAIN_DESCRIPTORS, MAX_REQUEST_BYTES, REQUEST_HEADER_SIZE, SECTOR_SHIFT, SECTOR_SIZE,
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_UNSUPP,
};

/// Offset of the `sector` field in the request header.
const HEADER_SECTOR_OFFSET: u64 = 8;

/// Most descriptors read while looking for the end of a chain. virtio-queue already
/// stops loops (a direct chain is at most the queue size, an indirect table at most
/// 2^16 - 1 entries); this bounds any other iterator too.
const CHAIN_WALK_LIMIT: usize = 1 << 17;

/// Why a chain cannot be served. Each maps to a status byte with [`RequestError::status`].
#[derive(Debug, Error)]
pub enum RequestError {
    /// The chain yielded no descriptor at all (e.g. its head is outside the table).
    #[error("Request chain is empty")]
    EmptyChain,
    /// The chain has a single descriptor: no room for both a header and a status.
    #[error("Request chain has no status descriptor")]
    MissingStatus,
    /// The chain stopped at a descriptor that still has VIRTQ_DESC_F_NEXT (a loop
    /// cut at the queue size, a next index past the table, a broken indirect table)
    /// or did not end within `CHAIN_WALK_LIMIT` descriptors.
    #[error("Request chain does not end: a loop, or a next descriptor that does not exist")]
    Unterminated,
    /// The last descriptor is device-readable.
    #[error("Status descriptor is not device-writable")]
    StatusNotWritable,
    /// The last descriptor has length 0.
    #[error("Status descriptor is empty")]
    StatusEmpty,
    /// The status byte is not in guest memory.
    #[error("Status descriptor at {addr:#x} (length {len}) is outside guest memory")]
    StatusOutOfMemory {
        /// Descriptor address.
        addr: u64,
        /// Descriptor length.
        len: u32,
    },
    /// More descriptors than a queue holds.
    #[error("Request chain has {count} descriptors, at most {MAX_CHAIN_DESCRIPTORS} allowed")]
    ChainTooLong {
        /// Descriptors in the chain.
        count: usize,
    },
    /// The header descriptor is device-writable.
    #[error("Request header descriptor is device-writable")]
    HeaderNotReadable,
    /// The header descriptor is shorter than the header.
    #[error("Request header descriptor is {len} bytes, {REQUEST_HEADER_SIZE} needed")]
    HeaderTooShort {
        /// Descriptor length.
        len: u32,
    },
    /// The header cannot be read from guest memory.
    #[error("Cannot read the request header at {addr:#x}")]
    HeaderRead {
        /// Descriptor address.
        addr: u64,
        /// The failure.
        #[source]
        source: GuestMemoryError,
    },
    /// A request type the device does not implement.
    #[error("Unsupported request type {0}")]
    UnsupportedType(u32),
    /// A read, write or GET_ID request without data descriptors.
    #[error("Request has no data descriptor")]
    MissingData,
    /// A data descriptor points the wrong way for the request type.
    #[error("Data descriptor {index} is device-{found}, the request needs device-{needed}")]
    DataWrongDirection {
        /// Position in the chain (the header is 0).
        index: usize,
        /// "readable" or "writable".
        found: &'static str,
        /// "readable" or "writable".
        needed: &'static str,
    },
    /// A data descriptor has length 0.
    #[error("Data descriptor {index} is empty")]
    DataEmpty {
        /// Position in the chain (the header is 0).
        index: usize,
    },
    /// A read or write data descriptor is not a whole number of sectors.
    #[error("Data descriptor {index} is {len} bytes, not a multiple of {SECTOR_SIZE}")]
    DataUnaligned {
        /// Position in the chain (the header is 0).
        index: usize,
        /// Descriptor length.
        len: u32,
    },
    /// A data descriptor is not (entirely) in guest memory.
    #[error("Data descriptor {index} at {addr:#x} (length {len}) is outside guest memory")]
    DataOutOfMemory {
        /// Position in the chain (the header is 0).
        index: usize,
        /// Descriptor address.
        addr: u64,
        /// Descriptor length.
        len: u32,
    },
    /// The data descriptors add up to more than [`MAX_REQUEST_BYTES`].
    #[error("Request data exceeds {MAX_REQUEST_BYTES} bytes")]
    DataTooLong,
    /// `sector + sectors` overflows.
    #[error("Request at sector {sector} for {sectors} sectors overflows")]
    SectorOverflow {
        /// First sector.
        sector: u64,
        /// Sectors requested.
        sectors: u64,
    },
    /// The request reaches past the end of the disk.
    #[error(
        "Request at sector {sector} for {sectors} sectors is beyond the disk's {capacity} sectors"
    )]
    OutOfRange {
        /// First sector.
        sector: u64,
        /// Sectors requested.
        sectors: u64,
        /// Disk capacity in sectors.
        capacity: u64,
    },
}

impl RequestError {
    /// The status byte the driver gets for this failure.
    pub fn status(&self) -> u8 {
        match self {
            RequestError::UnsupportedType(_) => VIRTIO_BLK_S_UNSUPP,
            _ => VIRTIO_BLK_S_IOERR,
        }
    }
}

/// What the driver asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// VIRTIO_BLK_T_IN: read sectors into the data descriptors.
    In,
    /// VIRTIO_BLK_T_OUT: write the data descriptors to sectors.
    Out,
    /// VIRTIO_BLK_T_FLUSH: make earlier writes durable.
    Flush,
    /// VIRTIO_BLK_T_GET_ID: write the disk id into the data descriptors.
    GetId,
}

/// One data buffer in guest memory, checked to lie entirely within it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Guest-physical start.
    pub addr: GuestAddress,
    /// Length in bytes (non-zero).
    pub len: u32,
}

/// A validated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The operation.
    pub kind: RequestKind,
    /// First sector (reads and writes; 0 otherwise).
    pub sector: u64,
    /// Data buffers in chain order (empty for FLUSH).
    pub data: Vec<Segment>,
    /// Sum of the data buffer lengths, at most [`MAX_REQUEST_BYTES`] for reads and writes.
    pub data_len: u32,
    /// Guest-physical address of the status byte, checked to be in guest memory.
    pub status: GuestAddress,
}

/// A chain that cannot be served, and where to report that.
#[derive(Debug)]
pub struct Rejected {
    /// What is wrong.
    pub error: RequestError,
    /// The status byte, if the chain has a usable one. Without it the chain is
    /// completed with length 0 and nothing is written.
    pub status: Option<GuestAddress>,
}

impl Request {
    /// Parses the descriptors of one chain against a disk of `num_sectors` sectors.
    pub fn parse<M, I>(descs: I, mem: &M, num_sectors: u64) -> Result<Request, Rejected>
    where
        M: GuestMemory + ?Sized,
        I: IntoIterator<Item = Descriptor>,
    {
        let walk = Walk::new(descs);
        let no_status = |error| Rejected {
            error,
            status: None,
        };
        if walk.unterminated {
            return Err(no_status(RequestError::Unterminated));
        }
        let last = match (walk.count, walk.last) {
            (0, _) | (_, None) => return Err(no_status(RequestError::EmptyChain)),
            (1, _) => return Err(no_status(RequestError::MissingStatus)),
            (_, Some(last)) => last,
        };
        let status = status_byte(&last, mem).map_err(no_status)?;

        Self::parse_with_status(&walk, mem, num_sectors, status).map_err(|error| Rejected {
            error,
            status: Some(status),
        })
    }

    fn parse_with_status<M>(
        walk: &Walk,
        mem: &M,
        num_sectors: u64,
        status: GuestAddress,
    ) -> Result<Request, RequestError>
    where
        M: GuestMemory + ?Sized,
    {
        if walk.count > MAX_CHAIN_DESCRIPTORS {
            return Err(RequestError::ChainTooLong { count: walk.count });
        }
        // count <= MAX_CHAIN_DESCRIPTORS, so `kept` holds the whole chain; count >= 2.
        let (header, rest) = walk.kept.split_first().ok_or(RequestError::MissingStatus)?;
        let (_status, data) = rest.split_last().ok_or(RequestError::MissingStatus)?;
        let (request_type, sector) = read_header(header, mem)?;

        let (kind, data_len, data) = match request_type {
            virtio_blk::VIRTIO_BLK_T_IN => {
                let (len, segs) = data_segments(data, mem, Direction::DeviceWritable, true)?;
                check_range(sector, len, num_sectors)?;
                (RequestKind::In, len, segs)
            }
            virtio_blk::VIRTIO_BLK_T_OUT => {
                let (len, segs) = data_segments(data, mem, Direction::DeviceReadable, true)?;
                check_range(sector, len, num_sectors)?;
                (RequestKind::Out, len, segs)
            }
            // A flush carries no data; descriptors the driver added anyway are ignored.
            virtio_blk::VIRTIO_BLK_T_FLUSH => (RequestKind::Flush, 0, Vec::new()),
            virtio_blk::VIRTIO_BLK_T_GET_ID => {
                let (len, segs) = data_segments(data, mem, Direction::DeviceWritable, false)?;
                (RequestKind::GetId, len, segs)
            }
            other => return Err(RequestError::UnsupportedType(other)),
        };
        let sector = match kind {
            RequestKind::In | RequestKind::Out => sector,
            RequestKind::Flush | RequestKind::GetId => 0,
        };
        Ok(Request {
            kind,
            sector,
            data,
            data_len,
            status,
        })
    }
}

/// The descriptors of a chain: the first [`MAX_CHAIN_DESCRIPTORS`] kept, the last
/// remembered, all counted.
struct Walk {
    kept: Vec<Descriptor>,
    last: Option<Descriptor>,
    count: usize,
    unterminated: bool,
}

impl Walk {
    fn new<I: IntoIterator<Item = Descriptor>>(descs: I) -> Walk {
        let mut walk = Walk {
            kept: Vec::new(),
            last: None,
            count: 0,
            unterminated: false,
        };
        let mut iter = descs.into_iter();
        for desc in iter.by_ref().take(CHAIN_WALK_LIMIT) {
            if walk.kept.len() < MAX_CHAIN_DESCRIPTORS {
                walk.kept.push(desc);
            }
            walk.last = Some(desc);
            walk.count += 1;
        }
        // virtio-queue ends a chain silently where it cannot go on; the last
        // descriptor then still points to a next one.
        walk.unterminated = (walk.count == CHAIN_WALK_LIMIT && iter.next().is_some())
            || walk.last.is_some_and(|desc| desc.has_next());
        walk
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    DeviceReadable,
    DeviceWritable,
}

impl Direction {
    fn of(desc: &Descriptor) -> Direction {
        if desc.is_write_only() {
            Direction::DeviceWritable
        } else {
            Direction::DeviceReadable
        }
    }

    fn name(self) -> &'static str {
        match self {
            Direction::DeviceReadable => "readable",
            Direction::DeviceWritable => "writable",
        }
    }

    fn permissions(self) -> Permissions {
        match self {
            // The device reads what the driver made device-readable.
            Direction::DeviceReadable => Permissions::Read,
            Direction::DeviceWritable => Permissions::Write,
        }
    }
}

/// Whether `[addr, addr + len)` lies entirely in guest memory.
fn in_memory<M: GuestMemory + ?Sized>(
    mem: &M,
    addr: GuestAddress,
    len: u32,
    access: Permissions,
) -> bool {
    usize::try_from(len).is_ok_and(|len| len > 0 && mem.check_range(addr, len, access))
}

/// The status goes in the last byte of the last descriptor (the chain's last byte).
fn status_byte<M: GuestMemory + ?Sized>(
    desc: &Descriptor,
    mem: &M,
) -> Result<GuestAddress, RequestError> {
    if !desc.is_write_only() {
        return Err(RequestError::StatusNotWritable);
    }
    let len = desc.len();
    let out_of_memory = || RequestError::StatusOutOfMemory {
        addr: desc.addr().raw_value(),
        len,
    };
    let offset = len.checked_sub(1).ok_or(RequestError::StatusEmpty)?;
    let addr = desc
        .addr()
        .checked_add(u64::from(offset))
        .ok_or_else(out_of_memory)?;
    if !in_memory(mem, addr, 1, Permissions::Write) {
        return Err(out_of_memory());
    }
    Ok(addr)
}

/// Reads (type, sector) from the header descriptor.
fn read_header<M: GuestMemory + ?Sized>(
    desc: &Descriptor,
    mem: &M,
) -> Result<(u32, u64), RequestError> {
    if desc.is_write_only() {
        return Err(RequestError::HeaderNotReadable);
    }
    if desc.len() < REQUEST_HEADER_SIZE {
        return Err(RequestError::HeaderTooShort { len: desc.len() });
    }
    let addr = desc.addr();
    let read_error = |source| RequestError::HeaderRead {
        addr: addr.raw_value(),
        source,
    };
    let request_type: Le32 = mem.read_obj(addr).map_err(read_error)?;
    let sector_addr = addr
        .checked_add(HEADER_SECTOR_OFFSET)
        .ok_or(GuestMemoryError::GuestAddressOverflow)
        .map_err(read_error)?;
    let sector: Le64 = mem.read_obj(sector_addr).map_err(read_error)?;
    Ok((request_type.into(), sector.into()))
}

/// Checks the data descriptors (chain positions 1..) and returns their total length.
/// `sectors`: each length must be a whole number of sectors and the total is capped.
fn data_segments<M: GuestMemory + ?Sized>(
    data: &[Descriptor],
    mem: &M,
    needed: Direction,
    sectors: bool,
) -> Result<(u32, Vec<Segment>), RequestError> {
    if data.is_empty() {
        return Err(RequestError::MissingData);
    }
    let mut total: u32 = 0;
    let mut segments = Vec::with_capacity(data.len());
    for (i, desc) in data.iter().enumerate() {
        // Position in the chain: the header is 0. i < MAX_CHAIN_DESCRIPTORS.
        let index = i.saturating_add(1);
        let found = Direction::of(desc);
        if found != needed {
            return Err(RequestError::DataWrongDirection {
                index,
                found: found.name(),
                needed: needed.name(),
            });
        }
        let len = desc.len();
        if len == 0 {
            return Err(RequestError::DataEmpty { index });
        }
        if sectors && u64::from(len) % SECTOR_SIZE != 0 {
            return Err(RequestError::DataUnaligned { index, len });
        }
        if !in_memory(mem, desc.addr(), len, needed.permissions()) {
            return Err(RequestError::DataOutOfMemory {
                index,
                addr: desc.addr().raw_value(),
                len,
            });
        }
        total = total
            .checked_add(len)
            .filter(|&t| !sectors || t <= MAX_REQUEST_BYTES)
            .ok_or(RequestError::DataTooLong)?;
        segments.push(Segment {
            addr: desc.addr(),
            len,
        });
    }
    Ok((total, segments))
}

/// Checks that `len` bytes from `sector` lie within a disk of `capacity` sectors.
fn check_range(sector: u64, len: u32, capacity: u64) -> Result<(), RequestError> {
    let sectors = u64::from(len) >> SECTOR_SHIFT;
    let end = sector
        .checked_add(sectors)
        .ok_or(RequestError::SectorOverflow { sector, sectors })?;
    if end > capacity {
        return Err(RequestError::OutOfRange {
            sector,
            sectors,
            capacity,
        });
    }
    Ok(())
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
