//! The virtio-blk device: backing file, config space, queue processing.

use std::fs::Metadata;
use std::os::fd::RawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::GuestMemoryMmap;
use log::{debug, error, Level};
use virtio_bindings::virtio_blk;
use virtio_queue::{Queue, QueueOwnedT, QueueT};

use super::disk::{open_disk, Disk, Opened, Served};
use super::metrics::BlockMetrics;
use super::Error as BlockError;
use super::{
    CONFIG_BLK_SIZE_OFFSET, CONFIG_CAPACITY_OFFSET, CONFIG_SEG_MAX_OFFSET, CONFIG_SPACE_SIZE,
    QUEUE_SIZE, RATE_LIMITER_EVENT_TOKEN, SECTOR_SIZE, SEG_MAX, VIRTIO_BLK_ID_BYTES,
};
use crate::rate_limiter::{RateLimiter, RateLimiterConfig};
use crate::ratelimit::log_ratelimited;
use crate::snapshot::RestoreError;
use crate::virtio::{
    device_type, ActivateError, ActivateParams, IrqTrigger, VirtioDevice, VirtioDeviceState,
    VIRTIO_F_VERSION_1, VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_VRING,
};

/// What the device does with the driver's flushes (Firecracker's `cache_type`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CacheType {
    /// VIRTIO_BLK_F_FLUSH is not offered, so the driver treats the disk as
    /// write-through and never waits for the host to sync; a flush it sends anyway
    /// completes at once without syncing. Fast, but writes are not durable when
    /// the host crashes.
    #[default]
    Unsafe,
    /// VIRTIO_BLK_F_FLUSH is offered and a flush is an fdatasync of the backing
    /// file: what the guest flushed survives a host crash.
    Writeback,
}

/// How a block device is backed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockConfig {
    /// Regular file or block device holding the disk image.
    pub path: PathBuf,
    /// Open read-only and offer VIRTIO_BLK_F_RO.
    pub read_only: bool,
    /// Serial reported by GET_ID (at most [`VIRTIO_BLK_ID_BYTES`] bytes); by default
    /// one derived from the file's identity.
    pub id: Option<String>,
    /// Whether flushes are offered and honoured.
    pub cache_type: CacheType,
    /// Limits on requests (ops) and data bytes; `None` for no limit (the limits can
    /// still be set later with [`Block::update_rate_limiter`]).
    pub rate_limiter: Option<RateLimiterConfig>,
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
    /// Bumped when `config_space` changes (a new backing file).
    config_generation: u32,
    /// Always there (unlimited by default) so that limits can be set at runtime
    /// without creating a timerfd.
    rate_limiter: RateLimiter,
    active: Option<Active>,
}

impl Block {
    /// Opens the backing file (read-write, or read-only when configured). Its size is
    /// rounded down to whole sectors. Creates the rate limiter's timerfd.
    pub fn new(config: &BlockConfig) -> Result<Block, BlockError> {
        let path = &config.path;
        let Opened {
            file,
            meta,
            num_sectors,
        } = open_disk(path, config.read_only)?;
        let id = match &config.id {
            Some(id) => padded_id(id).ok_or_else(|| BlockError::IdTooLong {
                path: path.clone(),
                id: id.clone(),
                len: id.len(),
            })?,
            None => default_id(&meta),
        };
        let rate_limiter =
            RateLimiter::new(&config.rate_limiter.unwrap_or_default()).map_err(|source| {
                BlockError::RateLimiter {
                    path: path.clone(),
                    source,
                }
            })?;

        let mut avail_features = VIRTIO_F_VERSION_1
            | feature(virtio_blk::VIRTIO_BLK_F_BLK_SIZE)
            | feature(virtio_blk::VIRTIO_BLK_F_SEG_MAX);
        if config.cache_type == CacheType::Writeback {
            avail_features |= feature(virtio_blk::VIRTIO_BLK_F_FLUSH);
        }
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
                cache_type: config.cache_type,
                host_error_logged: false,
                metrics: Arc::new(BlockMetrics::default()),
            },
            avail_features,
            acked_features: 0,
            config_space: config_space(num_sectors),
            config_generation: 0,
            rate_limiter,
            active: None,
        })
    }

    /// Switches to another backing file (PATCH /drives): opened and checked like
    /// in [`Block::new`] (read-only if the device is), its size becomes the
    /// capacity, and an activated device raises the configuration-change interrupt
    /// so the driver reads it. The disk id stays. On error nothing changes.
    pub fn update_backing_file(&mut self, path: &Path) -> Result<(), BlockError> {
        let path = path.to_path_buf();
        let Opened {
            file, num_sectors, ..
        } = open_disk(&path, self.disk.read_only)?;
        debug!(
            "virtio-blk {}: backing file now {} ({num_sectors} sectors)",
            self.disk.path.display(),
            path.display()
        );
        self.disk.file = file;
        self.disk.path = path;
        self.disk.num_sectors = num_sectors;
        self.disk.host_error_logged = false;
        self.config_space = config_space(num_sectors);
        self.config_generation = self.config_generation.wrapping_add(1);
        if let Some(active) = &self.active {
            if let Err(e) = active.irq.trigger(VIRTIO_MMIO_INT_CONFIG) {
                error!(
                    "virtio-blk {}: cannot signal the capacity change: {e}",
                    self.disk.path.display()
                );
            }
        }
        Ok(())
    }

    /// Replaces the rate limits (PATCH /drives); `None` buckets do not limit.
    pub fn update_rate_limiter(&mut self, config: &RateLimiterConfig) {
        self.rate_limiter.update(config);
    }

    /// The device's counters, shared.
    pub fn metrics(&self) -> Arc<BlockMetrics> {
        Arc::clone(&self.disk.metrics)
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

impl VirtioDevice for Block {
    fn save(&self) -> VirtioDeviceState {
        VirtioDeviceState::Block(self.save_state())
    }

    fn restore(
        &mut self,
        state: &VirtioDeviceState,
        activate: Option<ActivateParams>,
    ) -> Result<(), RestoreError> {
        self.restore_state(state, activate)
    }

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

    fn config_generation(&self) -> u32 {
        self.config_generation
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
        if self.active.is_none() {
            log_ratelimited!(
                Level::Warn,
                "virtio-blk {}: queue notification before activation",
                self.disk.path.display()
            );
            return;
        }
        self.process();
    }

    fn event_fds(&self) -> Vec<(RawFd, u32)> {
        vec![(self.rate_limiter.as_raw_fd(), RATE_LIMITER_EVENT_TOKEN)]
    }

    fn process_event(&mut self, token: u32) {
        if token != RATE_LIMITER_EVENT_TOKEN {
            log_ratelimited!(
                Level::Warn,
                "virtio-blk {}: event for unknown token {token}, ignored",
                self.disk.path.display()
            );
            return;
        }
        let path = self.disk.path.display();
        if self
            .rate_limiter
            .timer_expired(&format_args!("virtio-blk {path}"))
        {
            self.process();
        }
    }
}

impl Block {
    /// Serves the queue unless the rate limiter holds it back (its timer resumes
    /// it), and interrupts the driver if it wants to know. A queue the driver broke
    /// marks the device failed (DEVICE_NEEDS_RESET) with one log line; it then
    /// stays idle until the driver resets it.
    fn process(&mut self) {
        if self.rate_limiter.is_blocked() {
            return;
        }
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let Active { mem, queue, irq } = active;
        if irq.needs_reset() {
            return;
        }
        let Pass { used, broken } =
            process_chains(&mut self.disk, mem, queue, &mut self.rate_limiter);
        if let Some(reason) = broken {
            if irq.fail() {
                log_ratelimited!(
                    Level::Warn,
                    "virtio-blk {}: the driver broke the request queue ({reason}); the device needs a reset",
                    self.disk.path.display()
                );
            }
        }
        if used == 0 {
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

/// What one run over the queue did.
struct Pass {
    /// Chains that went to the used ring.
    used: usize,
    /// Why the queue is broken, if the driver broke it.
    broken: Option<String>,
}

/// Completes every available chain, with driver notifications off meanwhile. A
/// chain the rate limiter holds back is put back on the queue and processing stops
/// (notifications stay off: the limiter's timer resumes it). A broken avail ring or
/// chain stops processing too, and is reported in [`Pass::broken`].
fn process_chains(
    disk: &mut Disk,
    mem: &GuestMemoryMmap,
    queue: &mut Queue,
    limiter: &mut RateLimiter,
) -> Pass {
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
        loop {
            let chain = match queue.iter(mem) {
                Ok(mut chains) => chains.next(),
                Err(e) => {
                    let broken = Some(format!("avail ring: {e}"));
                    return Pass {
                        used: used.saturating_add(this_pass),
                        broken,
                    };
                }
            };
            let Some(chain) = chain else {
                break;
            };
            let head = chain.head_index();
            let len = match disk.serve(chain, mem, limiter) {
                Served::Done(len) => len,
                Served::Throttled => {
                    queue.go_to_previous_position();
                    return Pass {
                        used: used.saturating_add(this_pass),
                        broken: None,
                    };
                }
                Served::Broken(e) => {
                    let broken = Some(format!("chain {head}: {e}"));
                    return Pass {
                        used: used.saturating_add(this_pass),
                        broken,
                    };
                }
            };
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
            // New chains arrived while notifications were off.
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
    Pass { used, broken: None }
}

#[path = "persist.rs"]
mod persist;
pub use persist::BlockState;

#[cfg(test)]
#[path = "device_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "device_runtime_tests.rs"]
mod runtime_tests;
