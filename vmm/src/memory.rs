//! Guest RAM: anonymous mappings aligned to 2 MiB and advised for transparent huge
//! pages, so that KVM can map guest memory with large pages (a guest-physical 2 MiB
//! page lines up with a host 2 MiB page only when the host address is 2 MiB aligned).

use std::io;
use std::ptr::null_mut;

use thiserror::Error;
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{GuestAddress, GuestMemoryMmap, GuestRegionMmap};

/// Alignment of every guest RAM mapping: the x86_64 large page size.
pub const GUEST_RAM_ALIGN: usize = 2 << 20;

/// Failures while mapping guest RAM.
#[derive(Debug, Error)]
pub enum MemoryError {
    /// The host refused the mapping.
    #[error("Cannot map {0} bytes of guest memory")]
    Mmap(usize, #[source] io::Error),
    /// A size too large to align.
    #[error("Guest memory region of {0} bytes is too large")]
    TooLarge(usize),
    /// vm-memory refused the region.
    #[error("Cannot describe guest memory region at {0:#x}")]
    Region(u64),
    /// vm-memory refused the region list (overlap, order).
    #[error("Cannot assemble guest memory")]
    Regions(#[source] vm_memory::GuestRegionCollectionError),
}

/// Maps `size` bytes of private anonymous memory at a 2 MiB-aligned address.
///
/// The mapping is never unmapped: guest RAM lives as long as the cabin process (a
/// process runs at most one VM), and vm-memory's regions built on it do not own it.
fn map_aligned(size: usize) -> Result<*mut u8, MemoryError> {
    let padded = size
        .checked_add(GUEST_RAM_ALIGN)
        .ok_or(MemoryError::TooLarge(size))?;
    // SAFETY: a fresh private anonymous mapping at an address the kernel picks
    // (no MAP_FIXED); it aliases nothing in this process.
    let raw = unsafe {
        libc::mmap(
            null_mut(),
            padded,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if raw == libc::MAP_FAILED {
        return Err(MemoryError::Mmap(size, io::Error::last_os_error()));
    }
    let start = raw as usize;
    let aligned = start.next_multiple_of(GUEST_RAM_ALIGN);
    let head = aligned - start;
    let tail = padded - head - size;
    // SAFETY: [start, start + head) and [aligned + size, start + padded) lie inside the
    // mapping just created and outside the part kept; nothing references them.
    unsafe {
        if head > 0 {
            libc::munmap(raw, head);
        }
        if tail > 0 {
            libc::munmap((aligned + size) as *mut libc::c_void, tail);
        }
        // Advice only: without THP support the guest still runs, on 4 KiB pages.
        libc::madvise(aligned as *mut libc::c_void, size, libc::MADV_HUGEPAGE);
    }
    Ok(aligned as *mut u8)
}

/// Creates guest RAM for `regions` (guest address, size), each 2 MiB aligned on the host.
pub fn create_guest_memory(
    regions: &[(GuestAddress, usize)],
) -> Result<GuestMemoryMmap, MemoryError> {
    let mut guest_regions = Vec::with_capacity(regions.len());
    for &(addr, size) in regions {
        let host = map_aligned(size)?;
        // SAFETY: `host` starts a live mapping of at least `size` bytes made by
        // map_aligned, never unmapped, and used for nothing but this region.
        let builder = unsafe { MmapRegionBuilder::new(size).with_raw_mmap_pointer(host) };
        let mapping = builder
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE)
            .build()
            .map_err(|e| MemoryError::Mmap(size, io::Error::other(e.to_string())))?;
        guest_regions.push(GuestRegionMmap::new(mapping, addr).ok_or(MemoryError::Region(addr.0))?);
    }
    GuestMemoryMmap::from_regions(guest_regions).map_err(MemoryError::Regions)
}

#[cfg(test)]
mod tests {
    use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryRegion};

    use super::*;

    #[test]
    fn create_guest_memory_regions_are_2mib_aligned_and_usable() {
        let regions = [(GuestAddress(0), 8 << 20), (GuestAddress(1 << 32), 6 << 20)];
        let mem = create_guest_memory(&regions).unwrap();
        for region in mem.iter() {
            let host = mem.get_host_address(region.start_addr()).unwrap() as usize;
            assert_eq!(host % GUEST_RAM_ALIGN, 0);
        }
        mem.write_obj(0xdead_beef_u32, GuestAddress((1 << 32) + 4096))
            .unwrap();
        assert_eq!(
            mem.read_obj::<u32>(GuestAddress((1 << 32) + 4096)).unwrap(),
            0xdead_beef
        );
        assert!(mem.read_obj::<u32>(GuestAddress(8 << 20)).is_err());
    }
}
