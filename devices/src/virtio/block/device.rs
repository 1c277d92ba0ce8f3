//! The virtio-blk device: backing file, config space, queue processing.

use std::cmp::min;
use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::PathBuf;

use log::{debug, error, warn, Level};
use thiserror::Error;
use virtio_bindings::virtio_blk;
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::{
    Bytes, GuestMemory, GuestMemoryError, GuestMemoryMmap, Permissions, ReadVolatile,
    VolatileMemoryError, WriteVolatile,
};

use super::request::{Rejected, Request, RequestKind};
use super::Error as BlockError;
use super::{
    CONFIG_BLK_SIZE_OFFSET, CONFIG_CAPACITY_OFFSET, CONFIG_SEG_MAX_OFFSET, CONFIG_SPACE_SIZE,
    QUEUE_SIZE, SECTOR_SHIFT, SECTOR_SIZE, SEG_MAX, VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_S_IOERR,
    VIRTIO_BLK_S_OK,
};
use crate::ratelimit::log_ratelimited;
use crate::virtio::{
    device_type, ActivateError, ActivateParams, IrqTrigger, VirtioDevice, VIRTIO_F_VERSION_1,
    VIRTIO_MMIO_INT_VRING,
};

/// How a block device is backed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockConfig {
    /// Regular file or block device holding the disk image.
    pub path: PathBuf,
    /// Open read-only and offer VIRTIO_BLK_F_RO.
    pub read_only: bool,
    /// Serial reported by GET_ID (at most [`VIRTIO_BLK_ID_BYTES`] bytes); by default
    /// one derived from the file's identity.
    pub id: Option<String>,
}

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
struct Disk {
    file: File,
    path: PathBuf,
    read_only: bool,
    num_sectors: u64,
    id: [u8; VIRTIO_BLK_ID_BYTES],
    /// A host I/O error was already logged: later ones go to debug only.
    host_error_logged: bool,
}

/// What the device holds between DRIVER_OK and reset.
#[derive(Debug)]
struct Active {
    mem: GuestMemoryMmap,
    queue: Queue,
    irq: IrqTrigger,
}

/// A virtio-blk device.
#[derive(Debug)]
pub struct Block {
    disk: Disk,
    avail_features: u64,
    acked_features: u64,
    config_space: [u8; CONFIG_SPACE_SIZE],
    active: Option<Active>,
}

impl Block {
    /// Opens the backing file (read-write, or read-only when configured). Its size is
    /// rounded down to whole sectors.
    pub fn new(config: &BlockConfig) -> Result<Block, BlockError> {
        let path = &config.path;
        let file = OpenOptions::new()
            .read(true)
            .write(!config.read_only)
            .open(path)
            .map_err(|source| BlockError::Open {
                path: path.clone(),
                source,
            })?;
        let meta = file.metadata().map_err(|source| BlockError::Stat {
            path: path.clone(),
            source,
        })?;
        let file_type = meta.file_type();
        if !file_type.is_file() && !file_type.is_block_device() {
            return Err(BlockError::NotADisk { path: path.clone() });
        }
        let size = disk_size(&file, &meta).map_err(|source| BlockError::Size {
            path: path.clone(),
            source,
        })?;
        if size % SECTOR_SIZE != 0 {
            warn!(
                "Disk image {} is {size} bytes, not a multiple of {SECTOR_SIZE}; the last {} bytes are not visible to the guest",
                path.display(),
                size % SECTOR_SIZE
            );
        }
        let num_sectors = size >> SECTOR_SHIFT;
        let id = match &config.id {
            Some(id) => padded_id(id).ok_or_else(|| BlockError::IdTooLong {
                path: path.clone(),
                id: id.clone(),
                len: id.len(),
            })?,
            None => default_id(&meta),
        };

        let mut avail_features = VIRTIO_F_VERSION_1
            | feature(virtio_blk::VIRTIO_BLK_F_FLUSH)
            | feature(virtio_blk::VIRTIO_BLK_F_BLK_SIZE)
            | feature(virtio_blk::VIRTIO_BLK_F_SEG_MAX);
        if config.read_only {
            avail_features |= feature(virtio_blk::VIRTIO_BLK_F_RO);
        }

        Ok(Block {
            disk: Disk {
                file,
                path: path.clone(),
                read_only: config.read_only,
                num_sectors,
                id,
                host_error_logged: false,
            },
            avail_features,
            acked_features: 0,
            config_space: config_space(num_sectors),
            active: None,
        })
    }

    /// The GET_ID answer: the configured id, or the default, zero-padded.
    pub fn disk_id(&self) -> [u8; VIRTIO_BLK_ID_BYTES] {
        self.disk.id
    }

    /// Disk capacity in 512-byte sectors.
    pub fn num_sectors(&self) -> u64 {
        self.disk.num_sectors
    }

    /// Features the driver accepted at the last activation.
    pub fn acked_features(&self) -> u64 {
        self.acked_features
    }
}

fn feature(bit: u32) -> u64 {
    1u64 << bit
}

/// The size in bytes of a regular file or block device.
fn disk_size(file: &File, meta: &Metadata) -> io::Result<u64> {
    if meta.file_type().is_block_device() {
        // st_size is 0 for block devices; their end is where a seek lands.
        let mut file = file;
        file.seek(SeekFrom::End(0))
    } else {
        Ok(meta.len())
    }
}

/// `id` zero-padded to the GET_ID length, or `None` when it does not fit.
fn padded_id(id: &str) -> Option<[u8; VIRTIO_BLK_ID_BYTES]> {
    let bytes = id.as_bytes();
    let mut out = [0u8; VIRTIO_BLK_ID_BYTES];
    out.get_mut(..bytes.len())?.copy_from_slice(bytes);
    Some(out)
}

/// A stable id derived from the file's identity: the device number for a block
/// device, device and inode for a file. Keeps the last bytes if it is too long (the
/// inode varies most).
fn default_id(meta: &Metadata) -> [u8; VIRTIO_BLK_ID_BYTES] {
    let text = if meta.file_type().is_block_device() {
        format!("blk{:x}", meta.rdev())
    } else {
        format!("{:x}-{:x}", meta.dev(), meta.ino())
    };
    let bytes = text.as_bytes();
    let tail = &bytes[bytes.len().saturating_sub(VIRTIO_BLK_ID_BYTES)..];
    let mut out = [0u8; VIRTIO_BLK_ID_BYTES];
    out[..tail.len()].copy_from_slice(tail);
    out
}

/// `struct virtio_blk_config` up to `blk_size`, little-endian.
fn config_space(num_sectors: u64) -> [u8; CONFIG_SPACE_SIZE] {
    let mut config = [0u8; CONFIG_SPACE_SIZE];
    let fields: [(usize, &[u8]); 3] = [
        (CONFIG_CAPACITY_OFFSET, &num_sectors.to_le_bytes()),
        (CONFIG_SEG_MAX_OFFSET, &SEG_MAX.to_le_bytes()),
        // SECTOR_SIZE is 512: it fits.
        (CONFIG_BLK_SIZE_OFFSET, &(SECTOR_SIZE as u32).to_le_bytes()),
    ];
    for (offset, bytes) in fields {
        config[offset..offset + bytes.len()].copy_from_slice(bytes);
    }
    config
}

impl Disk {
    /// Serves one chain and returns the used length (bytes written to guest memory).
    fn complete<I>(&mut self, descs: I, mem: &GuestMemoryMmap) -> u32
    where
        I: IntoIterator<Item = virtio_queue::desc::split::Descriptor>,
    {
        let (status_addr, status, written) = match Request::parse(descs, mem, self.num_sectors) {
            Err(Rejected {
                error,
                status: None,
            }) => {
                log_ratelimited!(
                    Level::Warn,
                    "virtio-blk {}: dropping request without usable status: {error}",
                    self.path.display()
                );
                return 0;
            }
            Err(Rejected {
                error,
                status: Some(addr),
            }) => {
                log_ratelimited!(
                    Level::Warn,
                    "virtio-blk {}: rejecting request: {error}",
                    self.path.display()
                );
                (addr, error.status(), 0)
            }
            Ok(request) => match self.execute(&request, mem) {
                Ok(written) => (request.status, VIRTIO_BLK_S_OK, written),
                Err(e) => {
                    self.log_execute_error(&e);
                    (request.status, VIRTIO_BLK_S_IOERR, 0)
                }
            },
        };
        match mem.write_obj(status, status_addr) {
            Ok(()) => written.saturating_add(1),
            Err(e) => {
                log_ratelimited!(
                    Level::Warn,
                    "virtio-blk {}: cannot write status: {e}",
                    self.path.display()
                );
                written
            }
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

    /// fdatasync. A read-only disk has nothing to flush; firmware (OVMF) flushes
    /// read-only disks anyway, so that succeeds.
    fn flush(&mut self) -> Result<u32, ExecuteError> {
        if !self.read_only {
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

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        device_type::BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn avail_features(&self) -> u64 {
        self.avail_features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        crate::virtio::read_config_space(&self.config_space, offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        log_ratelimited!(
            Level::Warn,
            "virtio-blk {}: ignoring write of {} bytes to read-only config space at {offset:#x}",
            self.disk.path.display(),
            data.len()
        );
    }

    fn activate(&mut self, params: ActivateParams) -> Result<(), ActivateError> {
        let ActivateParams {
            mem,
            queues,
            acked_features,
            irq,
        } = params;
        let got = queues.len();
        let Ok([queue]) = <[Queue; 1]>::try_from(queues) else {
            return Err(ActivateError::QueueCount { expected: 1, got });
        };
        if !queue.ready() {
            return Err(ActivateError::QueueNotReady(0));
        }
        self.acked_features = acked_features;
        self.active = Some(Active { mem, queue, irq });
        Ok(())
    }

    fn reset(&mut self) {
        self.active = None;
        self.acked_features = 0;
    }

    fn process_queue(&mut self, index: usize) {
        if index != 0 {
            log_ratelimited!(
                Level::Warn,
                "virtio-blk {}: notification for nonexistent queue {index}",
                self.disk.path.display()
            );
            return;
        }
        let Some(active) = self.active.as_mut() else {
            log_ratelimited!(
                Level::Warn,
                "virtio-blk {}: queue notification before activation",
                self.disk.path.display()
            );
            return;
        };
        let Active { mem, queue, irq } = active;
        if process_chains(&mut self.disk, mem, queue) == 0 {
            return;
        }
        match queue.needs_notification(mem) {
            Ok(false) => {}
            Ok(true) => {
                if let Err(e) = irq.trigger(VIRTIO_MMIO_INT_VRING) {
                    log_ratelimited!(
                        Level::Error,
                        "virtio-blk {}: cannot raise the interrupt: {e}",
                        self.disk.path.display()
                    );
                }
            }
            Err(e) => log_ratelimited!(
                Level::Warn,
                "virtio-blk {}: cannot read the used event: {e}",
                self.disk.path.display()
            ),
        }
    }
}

/// Completes every available chain, with driver notifications off meanwhile, and
/// returns how many went to the used ring.
fn process_chains(disk: &mut Disk, mem: &GuestMemoryMmap, queue: &mut Queue) -> usize {
    let mut used = 0usize;
    loop {
        if let Err(e) = queue.disable_notification(mem) {
            log_ratelimited!(
                Level::Warn,
                "virtio-blk {}: cannot disable notifications: {e}",
                disk.path.display()
            );
        }
        let mut this_pass = 0usize;
        while let Some(chain) = next_chain(queue, mem, disk) {
            let head = chain.head_index();
            let len = disk.complete(chain, mem);
            if let Err(e) = queue.add_used(mem, head, len) {
                log_ratelimited!(
                    Level::Warn,
                    "virtio-blk {}: cannot complete chain {head}: {e}",
                    disk.path.display()
                );
            }
            this_pass = this_pass.saturating_add(1);
        }
        used = used.saturating_add(this_pass);
        match queue.enable_notification(mem) {
            // New chains arrived while notifications were off. If this pass found
            // none, the avail ring is broken (e.g. an index jump beyond the queue
            // size): stop instead of spinning.
            Ok(true) if this_pass > 0 => continue,
            Ok(_) => break,
            Err(e) => {
                log_ratelimited!(
                    Level::Warn,
                    "virtio-blk {}: cannot enable notifications: {e}",
                    disk.path.display()
                );
                break;
            }
        }
    }
    used
}

/// The next available chain. Like `pop_descriptor_chain`, but a broken avail ring
/// (an index more than a queue ahead) is logged rate-limited: the guest controls it.
fn next_chain<'m>(
    queue: &mut Queue,
    mem: &'m GuestMemoryMmap,
    disk: &Disk,
) -> Option<DescriptorChain<&'m GuestMemoryMmap>> {
    match queue.iter(mem) {
        Ok(mut chains) => chains.next(),
        Err(e) => {
            log_ratelimited!(
                Level::Warn,
                "virtio-blk {}: cannot read the avail ring: {e}",
                disk.path.display()
            );
            None
        }
    }
}

#[cfg(test)]
#[path = "device_tests.rs"]
mod tests;
