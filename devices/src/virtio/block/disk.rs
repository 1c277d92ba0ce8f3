//! The backing file of a block device and the execution of requests against it.

use std::cmp::min;
use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::GuestMemoryMmap;
use log::{debug, error, warn, Level};
use thiserror::Error;
use vm_memory::{
    Bytes, GuestMemory, GuestMemoryError, Permissions, ReadVolatile, VolatileMemoryError,
    WriteVolatile,
};

use super::device::CacheType;
use super::metrics::BlockMetrics;
use super::request::{Rejected, Request, RequestError, RequestKind};
use super::Error as BlockError;
use super::{SECTOR_SHIFT, SECTOR_SIZE, VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK};
use crate::rate_limiter::RateLimiter;
use crate::ratelimit::log_ratelimited;
use crate::virtio::add_to_counter;

/// Why a validated request failed on the host side.
#[derive(Debug, Error)]
pub enum ExecuteError {
    /// The request's byte offset does not fit in a u64.
    #[error("Sector {0} is beyond any file offset")]
    Offset(u64),
    /// Seeking the backing file failed.
    #[error("Cannot seek to offset {offset}")]
    Seek {
        /// Byte offset.
        offset: u64,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// Reading the backing file failed or ended early (a file that shrank).
    #[error("Cannot read {len} bytes at offset {offset}")]
    Read {
        /// Byte offset of the failed segment.
        offset: u64,
        /// Segment length.
        len: usize,
        /// The failure.
        #[source]
        source: VolatileMemoryError,
    },
    /// Writing the backing file failed (EIO, ENOSPC, ...).
    #[error("Cannot write {len} bytes at offset {offset}")]
    Write {
        /// Byte offset of the failed segment.
        offset: u64,
        /// Segment length.
        len: usize,
        /// The failure.
        #[source]
        source: VolatileMemoryError,
    },
    /// fdatasync failed.
    #[error("Cannot flush")]
    Flush(#[source] io::Error),
    /// A data buffer in guest memory could not be accessed.
    #[error("Cannot access guest memory")]
    GuestMemory(#[source] GuestMemoryError),
    /// A write request on a read-only disk.
    #[error("Write request on a read-only disk")]
    ReadOnly,
}

impl ExecuteError {
    /// Whether the guest caused this (as opposed to the host's file or disk).
    fn is_guest_error(&self) -> bool {
        matches!(
            self,
            ExecuteError::ReadOnly | ExecuteError::GuestMemory(_) | ExecuteError::Offset(_)
        )
    }
}

/// The backing file and everything requests are executed against.
#[derive(Debug)]
pub(super) struct Disk {
    pub(super) file: File,
    pub(super) path: PathBuf,
    pub(super) read_only: bool,
    pub(super) num_sectors: u64,
    pub(super) id: [u8; VIRTIO_BLK_ID_BYTES],
    pub(super) cache_type: CacheType,
    /// A host I/O error was already logged: later ones go to debug only.
    pub(super) host_error_logged: bool,
    pub(super) metrics: Arc<BlockMetrics>,
}

/// An opened and checked backing file.
pub(super) struct Opened {
    pub(super) file: File,
    pub(super) meta: Metadata,
    pub(super) num_sectors: u64,
}

/// What became of an available chain.
pub(super) enum Served {
    /// Completed with this used length.
    Done(u32),
    /// Held back by the rate limiter: it must stay on the queue.
    Throttled,
    /// The chain is malformed beyond a status the driver could read (empty, a loop,
    /// no writable status byte): the device needs a reset.
    Broken(RequestError),
}

/// Opens `path` (read-write unless `read_only`) and checks it is a disk.
pub(super) fn open_disk(path: &Path, read_only: bool) -> Result<Opened, BlockError> {
    let file = OpenOptions::new()
        .read(true)
        .write(!read_only)
        .open(path)
        .map_err(|source| BlockError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    let meta = file.metadata().map_err(|source| BlockError::Stat {
        path: path.to_path_buf(),
        source,
    })?;
    let file_type = meta.file_type();
    if !file_type.is_file() && !file_type.is_block_device() {
        return Err(BlockError::NotADisk {
            path: path.to_path_buf(),
        });
    }
    let size = disk_size(&file, &meta).map_err(|source| BlockError::Size {
        path: path.to_path_buf(),
        source,
    })?;
    if size % SECTOR_SIZE != 0 {
        warn!(
            "Disk image {} is {size} bytes, not a multiple of {SECTOR_SIZE}; the last {} bytes are not visible to the guest",
            path.display(),
            size % SECTOR_SIZE
        );
    }
    Ok(Opened {
        file,
        meta,
        num_sectors: size >> SECTOR_SHIFT,
    })
}

/// The size in bytes of a regular file or block device.
pub(super) fn disk_size(file: &File, meta: &Metadata) -> io::Result<u64> {
    if meta.file_type().is_block_device() {
        // st_size is 0 for block devices; their end is where a seek lands.
        let mut file = file;
        file.seek(SeekFrom::End(0))
    } else {
        Ok(meta.len())
    }
}

impl Disk {
    /// Serves one chain once the rate limiter admits it (an op, plus the data bytes
    /// of a read or write); returns the used length (bytes written to guest memory).
    /// A malformed chain costs an op too, so garbage is no way around the limit.
    pub(super) fn serve<I>(
        &mut self,
        descs: I,
        mem: &GuestMemoryMmap,
        limiter: &mut RateLimiter,
    ) -> Served
    where
        I: IntoIterator<Item = virtio_queue::desc::split::Descriptor>,
    {
        let parsed = Request::parse(descs, mem, self.num_sectors);
        let bytes = match &parsed {
            Ok(request) if matches!(request.kind, RequestKind::In | RequestKind::Out) => {
                u64::from(request.data_len)
            }
            _ => 0,
        };
        if !limiter.admit(bytes) {
            add_to_counter(&self.metrics.rate_limiter_throttled, 1);
            return Served::Throttled;
        }
        let (status_addr, status, written) = match parsed {
            Err(Rejected {
                error,
                status: None,
            }) => {
                // Nothing can tell the driver this request failed, and the chain may
                // not even have a valid head: the queue is broken.
                add_to_counter(&self.metrics.invalid_requests, 1);
                return Served::Broken(error);
            }
            Err(Rejected {
                error,
                status: Some(addr),
            }) => {
                add_to_counter(&self.metrics.invalid_requests, 1);
                log_ratelimited!(
                    Level::Warn,
                    "virtio-blk {}: rejecting request: {error}",
                    self.path.display()
                );
                (addr, error.status(), 0)
            }
            Ok(request) => match self.execute(&request, mem) {
                Ok(written) => {
                    self.count_success(&request);
                    (request.status, VIRTIO_BLK_S_OK, written)
                }
                Err(e) => {
                    add_to_counter(&self.metrics.io_errors, 1);
                    self.log_execute_error(&e);
                    (request.status, VIRTIO_BLK_S_IOERR, 0)
                }
            },
        };
        Served::Done(match mem.write_obj(status, status_addr) {
            Ok(()) => written.saturating_add(1),
            Err(e) => {
                log_ratelimited!(
                    Level::Warn,
                    "virtio-blk {}: cannot write status: {e}",
                    self.path.display()
                );
                written
            }
        })
    }

    fn count_success(&self, request: &Request) {
        let m = &self.metrics;
        let bytes = u64::from(request.data_len);
        match request.kind {
            RequestKind::In => {
                add_to_counter(&m.read_count, 1);
                add_to_counter(&m.read_bytes, bytes);
            }
            RequestKind::Out => {
                add_to_counter(&m.write_count, 1);
                add_to_counter(&m.write_bytes, bytes);
            }
            RequestKind::Flush => add_to_counter(&m.flush_count, 1),
            RequestKind::GetId => {}
        }
    }

    fn log_execute_error(&mut self, e: &ExecuteError) {
        if e.is_guest_error() {
            log_ratelimited!(
                Level::Warn,
                "virtio-blk {}: request failed: {e}",
                self.path.display()
            );
        } else if !self.host_error_logged {
            self.host_error_logged = true;
            error!(
                "virtio-blk {}: I/O error, the guest gets IOERR (further errors are not logged): {}",
                self.path.display(),
                error_chain(e)
            );
        } else {
            debug!(
                "virtio-blk {}: I/O error: {}",
                self.path.display(),
                error_chain(e)
            );
        }
    }

    /// Executes a validated request; returns the data bytes written to guest memory.
    fn execute(&mut self, request: &Request, mem: &GuestMemoryMmap) -> Result<u32, ExecuteError> {
        match request.kind {
            RequestKind::In => self.read(request, mem),
            RequestKind::Out => self.write(request, mem),
            RequestKind::Flush => self.flush(),
            RequestKind::GetId => self.get_id(request, mem),
        }
    }

    fn seek_to(&mut self, sector: u64) -> Result<u64, ExecuteError> {
        let offset = sector
            .checked_mul(SECTOR_SIZE)
            .ok_or(ExecuteError::Offset(sector))?;
        self.file
            .seek(SeekFrom::Start(offset))
            .map_err(|source| ExecuteError::Seek { offset, source })?;
        Ok(offset)
    }

    /// Reads the sectors straight into guest memory, segment by segment.
    fn read(&mut self, request: &Request, mem: &GuestMemoryMmap) -> Result<u32, ExecuteError> {
        let mut offset = self.seek_to(request.sector)?;
        for seg in &request.data {
            let len = segment_len(seg.len);
            let slices = mem
                .get_slices(seg.addr, len, Permissions::Write)
                .map_err(ExecuteError::GuestMemory)?;
            for slice in slices {
                let mut slice = slice.map_err(ExecuteError::GuestMemory)?;
                let len = slice.len();
                self.file
                    .read_exact_volatile(&mut slice)
                    .map_err(|source| ExecuteError::Read {
                        offset,
                        len,
                        source,
                    })?;
                offset = offset.saturating_add(len as u64);
            }
        }
        Ok(request.data_len)
    }

    /// Writes guest memory straight to the file, segment by segment.
    fn write(&mut self, request: &Request, mem: &GuestMemoryMmap) -> Result<u32, ExecuteError> {
        if self.read_only {
            return Err(ExecuteError::ReadOnly);
        }
        let mut offset = self.seek_to(request.sector)?;
        for seg in &request.data {
            let len = segment_len(seg.len);
            let slices = mem
                .get_slices(seg.addr, len, Permissions::Read)
                .map_err(ExecuteError::GuestMemory)?;
            for slice in slices {
                let slice = slice.map_err(ExecuteError::GuestMemory)?;
                let len = slice.len();
                self.file
                    .write_all_volatile(&slice)
                    .map_err(|source| ExecuteError::Write {
                        offset,
                        len,
                        source,
                    })?;
                offset = offset.saturating_add(len as u64);
            }
        }
        Ok(0)
    }

    /// fdatasync with [`CacheType::Writeback`]. With [`CacheType::Unsafe`] the
    /// driver was not offered flushes: one it sends anyway succeeds without a sync.
    /// A read-only disk has nothing to flush; firmware (OVMF) flushes read-only
    /// disks anyway, so that succeeds.
    fn flush(&mut self) -> Result<u32, ExecuteError> {
        if !self.read_only && self.cache_type == CacheType::Writeback {
            self.file.sync_data().map_err(ExecuteError::Flush)?;
        }
        Ok(0)
    }

    /// Writes up to [`VIRTIO_BLK_ID_BYTES`] of the id across the data buffers.
    fn get_id(&mut self, request: &Request, mem: &GuestMemoryMmap) -> Result<u32, ExecuteError> {
        let mut rest = &self.id[..];
        let mut written: u32 = 0;
        for seg in &request.data {
            if rest.is_empty() {
                break;
            }
            let (now, later) = rest.split_at(min(segment_len(seg.len), rest.len()));
            mem.write_slice(now, seg.addr)
                .map_err(ExecuteError::GuestMemory)?;
            // now.len() <= VIRTIO_BLK_ID_BYTES.
            written = written.saturating_add(u32::try_from(now.len()).unwrap_or(u32::MAX));
            rest = later;
        }
        Ok(written)
    }
}

/// A descriptor length as usize (u32 always fits on the 64-bit hosts cabin runs on;
/// saturating keeps it a checked conversion).
fn segment_len(len: u32) -> usize {
    usize::try_from(len).unwrap_or(usize::MAX)
}

/// `e` and its sources on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
