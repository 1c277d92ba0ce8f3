//! Guest RAM in a snapshot: a flat file of the regions one after another. A full
//! snapshot writes every page (leaving holes for pages that are all zero); a diff
//! snapshot writes only the pages written since the last snapshot, as KVM's
//! dirty log (the guest's writes) and vm-memory's bitmap (the devices') record
//! them. A restore maps the file privately: nothing is read up front, and the
//! guest's writes go to its own copies of the pages.

use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Deref;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use devices::{GuestMemoryMmap, GuestRegionMmap};
use kvm_ioctls::VmFd;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use vm_memory::bitmap::{AtomicBitmap, NewBitmap};
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{Address, Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

/// Snapshots track and write guest RAM in pages of this size.
pub const PAGE_SIZE: usize = 4096;
/// Guest RAM is copied out through a buffer this large.
const CHUNK: usize = 1 << 20;

/// Where each region of guest RAM starts and how long it is, in file order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryLayout {
    /// (guest physical address, length in bytes), in order.
    pub regions: Vec<(u64, u64)>,
}

impl MemoryLayout {
    /// The layout of `mem`.
    pub fn of(mem: &GuestMemoryMmap) -> Self {
        MemoryLayout {
            regions: mem
                .iter()
                .map(|r| (r.start_addr().raw_value(), r.len()))
                .collect(),
        }
    }

    /// Bytes of guest RAM, the memory file's size.
    pub fn total(&self) -> u64 {
        self.regions
            .iter()
            .fold(0u64, |sum, (_, len)| sum.saturating_add(*len))
    }
}

/// Failures while writing or mapping a memory file.
#[derive(Debug, Error)]
pub enum MemoryError {
    /// The file could not be created or written.
    #[error("Cannot write the memory file {0}")]
    Write(PathBuf, #[source] io::Error),
    /// The file could not be opened.
    #[error("Cannot open the memory file {0}")]
    Open(PathBuf, #[source] io::Error),
    /// The file's size is not the guest's RAM.
    #[error("The memory file {path} is {found} bytes, but the snapshot's guest has {expected} bytes of RAM: it belongs to another snapshot, or was cut short")]
    Size {
        /// The file.
        path: PathBuf,
        /// Its size.
        found: u64,
        /// The guest's RAM.
        expected: u64,
    },
    /// A diff memory file and a full one are of different guests.
    #[error("The diff memory file {diff} is {diff_size} bytes, but the full memory file {base} is {base_size} bytes: they are not of the same guest (give the memory of a Full snapshot and of a Diff snapshot taken after it)")]
    RebaseSize {
        /// The full memory file.
        base: PathBuf,
        /// Its size.
        base_size: u64,
        /// The diff memory file.
        diff: PathBuf,
        /// Its size.
        diff_size: u64,
    },
    /// The snapshot's layout is not one cabin makes.
    #[error("The snapshot's memory layout is invalid: {0}")]
    Layout(String),
    /// mmap failed.
    #[error("Cannot map the memory file {0}")]
    Map(PathBuf, #[source] io::Error),
    /// Reading guest RAM failed (it cannot, short of a bug).
    #[error("Cannot read guest memory at {0:#x}")]
    Read(u64),
    /// KVM_GET_DIRTY_LOG failed.
    #[error("KVM_GET_DIRTY_LOG failed for memory slot {0}")]
    DirtyLog(u32, #[source] kvm_ioctls::Error),
}

/// Which pages a memory file gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pages {
    /// Every page (all-zero pages as holes).
    All,
    /// Only pages written since the last snapshot, by the guest or by a device.
    Dirty,
}

/// The pages of each region written since the last call, per KVM's log and the
/// devices' bitmap; both are cleared. Without dirty tracking, returns None.
fn take_dirty(
    vm: &VmFd,
    mem: &GuestMemoryMmap,
    tracking: bool,
) -> Result<Option<Vec<Vec<u64>>>, MemoryError> {
    if !tracking {
        return Ok(None);
    }
    let mut out = Vec::new();
    for (slot, region) in mem.iter().enumerate() {
        let slot = u32::try_from(slot).unwrap_or(u32::MAX);
        let len = usize::try_from(region.len()).unwrap_or(usize::MAX);
        let mut log = vm
            .get_dirty_log(slot, len)
            .map_err(|e| MemoryError::DirtyLog(slot, e))?;
        // Both logs have one bit per 4 KiB page, 64 to a word.
        let bitmap: &AtomicBitmap = region.deref().bitmap();
        for (word, devices) in log.iter_mut().zip(bitmap.get_and_reset()) {
            *word |= devices;
        }
        out.push(log);
    }
    Ok(Some(out))
}

/// Writes guest RAM to `path` (created or truncated, then renamed into place, so a
/// VM restored from the file it replaces keeps its pages). Returns the bytes
/// written (pages with data). With dirty tracking on, the logs are cleared either
/// way, so the next diff snapshot holds what changed after this one.
pub fn write_memory(
    vm: &VmFd,
    mem: &GuestMemoryMmap,
    path: &Path,
    pages: Pages,
    tracking: bool,
) -> Result<u64, MemoryError> {
    let dirty = take_dirty(vm, mem, tracking)?;
    let err = |e| MemoryError::Write(path.to_owned(), e);
    let partial = partial_path(path);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&partial)
        .map_err(err)?;
    let layout = MemoryLayout::of(mem);
    file.set_len(layout.total()).map_err(err)?;
    let mut written = 0u64;
    let mut file_offset = 0u64;
    let mut buf = vec![0u8; CHUNK];
    for (index, region) in mem.iter().enumerate() {
        let log = dirty.as_ref().and_then(|d| d.get(index));
        let len = region.len();
        let mut offset = 0u64;
        while offset < len {
            let n = usize::try_from((len - offset).min(CHUNK as u64)).unwrap_or(CHUNK);
            let first_page = usize::try_from(offset).unwrap_or(usize::MAX) / PAGE_SIZE;
            let count = n.div_ceil(PAGE_SIZE);
            if pages == Pages::Dirty
                && !(first_page..first_page + count).any(|p| log.is_some_and(|l| is_set(l, p)))
            {
                // Nothing changed here: not even worth reading.
                offset += n as u64;
                continue;
            }
            let chunk = &mut buf[..n];
            let addr = region.start_addr().unchecked_add(offset);
            mem.read_slice(chunk, addr)
                .map_err(|_| MemoryError::Read(addr.raw_value()))?;
            let keep = |i: usize, page: &[u8]| match pages {
                Pages::All => page.iter().any(|&b| b != 0),
                Pages::Dirty => log.is_some_and(|l| is_set(l, first_page + i)),
            };
            // Consecutive pages to keep go out in one write.
            let mut run: Option<usize> = None;
            for i in 0..=count {
                let kept =
                    i < count && keep(i, &chunk[i * PAGE_SIZE..((i + 1) * PAGE_SIZE).min(n)]);
                match (kept, run) {
                    (true, None) => run = Some(i),
                    (false, Some(start)) => {
                        let bytes = &chunk[start * PAGE_SIZE..(i * PAGE_SIZE).min(n)];
                        let at = file_offset + offset + (start * PAGE_SIZE) as u64;
                        file.write_all_at(bytes, at).map_err(err)?;
                        written += bytes.len() as u64;
                        run = None;
                    }
                    _ => {}
                }
            }
            offset += n as u64;
        }
        file_offset += len;
    }
    file.sync_all().map_err(err)?;
    std::fs::rename(&partial, path).map_err(err)?;
    Ok(written)
}

fn is_set(log: &[u64], page: usize) -> bool {
    log.get(page / 64)
        .is_some_and(|w| w & (1 << (page % 64)) != 0)
}

/// `path` with `.partial` appended: where a file is written before it is renamed.
pub fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// Maps `path` as guest RAM of `layout`, privately: pages are read from the file
/// when the guest first touches them, and its writes stay its own.
pub fn map_memory(path: &Path, layout: &MemoryLayout) -> Result<GuestMemoryMmap, MemoryError> {
    check_layout(layout)?;
    let file = File::open(path).map_err(|e| MemoryError::Open(path.to_owned(), e))?;
    let found = file
        .metadata()
        .map_err(|e| MemoryError::Open(path.to_owned(), e))?
        .len();
    if found != layout.total() {
        return Err(MemoryError::Size {
            path: path.to_owned(),
            found,
            expected: layout.total(),
        });
    }
    let map_err = |e: String| MemoryError::Map(path.to_owned(), io::Error::other(e));
    let mut offset = 0u64;
    let mut regions = Vec::new();
    for &(start, len) in &layout.regions {
        let size = usize::try_from(len).map_err(|e| map_err(e.to_string()))?;
        let file = file
            .try_clone()
            .map_err(|e| MemoryError::Open(path.to_owned(), e))?;
        let region = MmapRegionBuilder::new_with_bitmap(size, AtomicBitmap::with_len(size))
            .with_file_offset(FileOffset::new(file, offset))
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(libc::MAP_PRIVATE | libc::MAP_NORESERVE)
            .build()
            .map_err(|e| map_err(e.to_string()))?;
        let region = GuestRegionMmap::new(region, GuestAddress(start))
            .ok_or_else(|| map_err("a region past the address space".into()))?;
        regions.push(region);
        offset += len;
    }
    GuestMemoryMmap::from_regions(regions).map_err(|e| map_err(e.to_string()))
}

/// A layout is what cabin makes: one or two page-aligned regions in address order,
/// not overlapping, at most 1 TiB in all.
fn check_layout(layout: &MemoryLayout) -> Result<(), MemoryError> {
    const MAX_RAM: u64 = 1 << 40;
    let bad = |why: &str| Err(MemoryError::Layout(why.to_owned()));
    if layout.regions.is_empty() || layout.regions.len() > 2 {
        return bad("it must have one or two regions");
    }
    let page = PAGE_SIZE as u64;
    let mut end = 0u64;
    for &(start, len) in &layout.regions {
        if start % page != 0 || len % page != 0 || len == 0 {
            return bad("a region is not whole pages");
        }
        if start < end {
            return bad("regions overlap or are out of order");
        }
        end = match start.checked_add(len) {
            Some(end) => end,
            None => return bad("a region ends past the address space"),
        };
    }
    if layout.total() > MAX_RAM {
        return bad("more than 1 TiB of RAM");
    }
    Ok(())
}

/// Copies the pages a diff memory file holds (its data, not its holes) onto
/// `base`, a full memory file of the same guest: `base` then holds the memory of
/// the diff snapshot. Returns the bytes copied.
pub fn rebase(base: &Path, diff: &Path) -> Result<u64, MemoryError> {
    fn open_err(p: &Path) -> impl FnOnce(io::Error) -> MemoryError + '_ {
        move |e| MemoryError::Open(p.to_owned(), e)
    }
    let diff_file = File::open(diff).map_err(open_err(diff))?;
    let base_file = OpenOptions::new()
        .write(true)
        .open(base)
        .map_err(open_err(base))?;
    let size = diff_file.metadata().map_err(open_err(diff))?.len();
    let base_size = base_file.metadata().map_err(open_err(base))?.len();
    if size != base_size {
        return Err(MemoryError::RebaseSize {
            base: base.to_owned(),
            base_size,
            diff: diff.to_owned(),
            diff_size: size,
        });
    }
    let mut copied = 0u64;
    let mut buf = vec![0u8; CHUNK];
    for (start, end) in data_extents(&diff_file, size).map_err(open_err(diff))? {
        let mut at = start;
        while at < end {
            let n = usize::try_from((end - at).min(CHUNK as u64)).unwrap_or(CHUNK);
            diff_file
                .read_exact_at(&mut buf[..n], at)
                .map_err(open_err(diff))?;
            base_file
                .write_all_at(&buf[..n], at)
                .map_err(|e| MemoryError::Write(base.to_owned(), e))?;
            at += n as u64;
            copied += n as u64;
        }
    }
    base_file
        .sync_all()
        .map_err(|e| MemoryError::Write(base.to_owned(), e))?;
    Ok(copied)
}

/// The (start, end) byte ranges of `file` that hold data (SEEK_DATA/SEEK_HOLE).
fn data_extents(file: &File, size: u64) -> io::Result<Vec<(u64, u64)>> {
    use std::os::fd::AsRawFd;
    let seek = |offset: u64, whence| -> io::Result<Option<u64>> {
        let offset = i64::try_from(offset).map_err(io::Error::other)?;
        // SAFETY: lseek on a descriptor `file` owns; it only moves the file offset.
        let at = unsafe { libc::lseek(file.as_raw_fd(), offset, whence) };
        if at < 0 {
            let e = io::Error::last_os_error();
            // ENXIO: no data (or hole) at or after the offset.
            return if e.raw_os_error() == Some(libc::ENXIO) {
                Ok(None)
            } else {
                Err(e)
            };
        }
        Ok(Some(u64::try_from(at).map_err(io::Error::other)?))
    };
    let mut extents = Vec::new();
    let mut at = 0u64;
    while at < size {
        let Some(start) = seek(at, libc::SEEK_DATA)? else {
            break;
        };
        let end = seek(start, libc::SEEK_HOLE)?.unwrap_or(size).min(size);
        extents.push((start, end));
        at = end;
    }
    Ok(extents)
}
