//! The Linux zero page (`struct boot_params`): setup header, command line, initrd and
//! the e820 memory map around the 32-bit MMIO gap.
//!
//! See the kernel's `Documentation/arch/x86/boot.rst` and `zero-page.rst`.

use linux_loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use vm_memory::{
    Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryError, GuestMemoryRegion,
};

use crate::layout::{
    CMDLINE_MAX_SIZE, EBDA_START, FIRST_ADDR_PAST_32BITS, HIMEM_START, MMIO_GAP_START,
    ZERO_PAGE_START,
};
use crate::{u64_to_usize, usize_to_u64};

/// `boot_flag` value every boot sector carries.
pub const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
/// `header` value of a setup header: "HdrS".
pub const KERNEL_HDR_MAGIC: u32 = 0x5372_6448;
/// `type_of_loader` for a boot loader without an assigned id.
pub const KERNEL_LOADER_OTHER: u8 = 0xff;
/// `kernel_alignment` used when there is no setup header (16 MiB).
pub const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x0100_0000;
/// e820 entry type of usable RAM.
pub const E820_RAM: u32 = 1;
/// Size of a guest page; the initrd starts on a page boundary.
pub const PAGE_SIZE: u64 = 0x1000;

/// Maximum number of e820 entries the zero page holds.
const E820_MAX_ENTRIES: usize = linux_loader::bootparam::E820_MAX_ENTRIES_ZEROPAGE;

/// Guest-physical windows that may hold RAM, as `[start, end)`: conventional memory
/// below the EBDA, high memory below the MMIO gap, and everything past 4 GiB.
const RAM_WINDOWS: [(u128, u128); 3] = [
    (0, EBDA_START as u128),
    (HIMEM_START as u128, MMIO_GAP_START as u128),
    (FIRST_ADDR_PAST_32BITS as u128, u64::MAX as u128 + 1),
];

/// Where the command line, initrd and kernel setup header come from.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct BootConfig {
    /// Guest-physical address of the NUL-terminated kernel command line.
    pub cmdline_addr: GuestAddress,
    /// Size of the command line in bytes, including the terminating NUL.
    pub cmdline_size: usize,
    /// Guest-physical address and size of the initrd, if there is one.
    pub initrd: Option<(GuestAddress, usize)>,
    /// Setup header of a bzImage kernel; `None` for an ELF `vmlinux`.
    pub setup_header: Option<setup_header>,
    /// Guest-physical address of the ACPI RSDP, if there are ACPI tables.
    pub acpi_rsdp: Option<GuestAddress>,
}

/// Errors while writing the zero page or placing the initrd.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line size leaves no room for the terminating NUL.
    #[error("Command line size is 0; it must include the terminating NUL")]
    CmdlineEmpty,
    /// The command line is longer than the kernel accepts.
    #[error("Command line of {size} bytes exceeds the maximum of {max} bytes")]
    CmdlineTooLarge {
        /// Size of the command line, including the NUL.
        size: usize,
        /// Largest accepted size, including the NUL.
        max: usize,
    },
    /// The command line address does not fit the 32-bit `cmd_line_ptr`.
    #[error("Command line address {addr:#x} is not below 4 GiB")]
    CmdlineAddressTooHigh {
        /// Guest-physical address of the command line.
        addr: u64,
    },
    /// The command line is not inside guest memory.
    #[error("Command line at {addr:#x} of {size} bytes is outside guest memory")]
    CmdlineOutsideMemory {
        /// Guest-physical address of the command line.
        addr: u64,
        /// Size of the command line, including the NUL.
        size: usize,
    },
    /// The initrd does not fit the 32-bit `ramdisk_image` and `ramdisk_size`.
    #[error("Initrd at {addr:#x} of {size} bytes does not end below 4 GiB")]
    InitrdNotBelow4G {
        /// Guest-physical address of the initrd.
        addr: u64,
        /// Size of the initrd in bytes.
        size: usize,
    },
    /// The initrd is not inside guest memory.
    #[error("Initrd at {addr:#x} of {size} bytes is outside guest memory")]
    InitrdOutsideMemory {
        /// Guest-physical address of the initrd.
        addr: u64,
        /// Size of the initrd in bytes.
        size: usize,
    },
    /// The initrd does not fit in low memory above the kernel load address.
    #[error("Initrd of {size} bytes does not fit in the {available} bytes of low memory")]
    InitrdTooLarge {
        /// Size of the initrd in bytes.
        size: usize,
        /// Bytes between [`HIMEM_START`] and the end of low memory.
        available: u64,
    },
    /// Guest memory has no region at address 0.
    #[error("Guest memory has no region at address 0")]
    NoLowMemory,
    /// Guest memory is split into more e820 entries than the zero page holds.
    #[error("Memory map of {count} e820 entries exceeds the zero page's {max}")]
    TooManyE820Entries {
        /// Number of entries needed.
        count: usize,
        /// Number of entries the zero page holds.
        max: usize,
    },
    /// The zero page could not be written.
    #[error("Failed to write the zero page at {addr:#x}")]
    WriteZeroPage {
        /// Guest-physical address of the zero page.
        addr: u64,
        /// The guest memory error.
        #[source]
        source: GuestMemoryError,
    },
}

/// Returns the e820 RAM entries for guest memory made of `regions` (`(start, size)`,
/// as from [`crate::arch_memory_regions`]): each region clipped to `[0, EBDA_START)`,
/// `[HIMEM_START, MMIO_GAP_START)` and `[4 GiB, ..)`, so the EBDA, the legacy hole
/// below 1 MiB and the MMIO gap are never RAM. Touching entries are merged.
pub fn e820_entries(regions: &[(GuestAddress, usize)]) -> Vec<boot_e820_entry> {
    // u128 keeps `start + size` exact even for a region ending at 2^64.
    let mut ranges: Vec<(u128, u128)> = Vec::new();
    for (start, size) in regions {
        let start = u128::from(start.raw_value());
        let end = start + u128::from(usize_to_u64(*size));
        for (window_start, window_end) in RAM_WINDOWS {
            let clipped_start = start.max(window_start);
            let clipped_end = end.min(window_end);
            if clipped_start < clipped_end {
                ranges.push((clipped_start, clipped_end));
            }
        }
    }
    ranges.sort_unstable();

    let mut merged: Vec<(u128, u128)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }

    merged
        .into_iter()
        .filter_map(|(start, end)| {
            // Every range lies inside a window ending at 2^64 and starts below it, so
            // both the start and the size fit in 64 bits.
            Some(boot_e820_entry {
                addr: u64::try_from(start).ok()?,
                size: u64::try_from(end - start).ok()?,
                r#type: E820_RAM,
            })
        })
        .collect()
}

/// Returns `(start, size)` of every region of `mem`.
fn memory_regions<M: GuestMemoryBackend>(mem: &M) -> Vec<(GuestAddress, usize)> {
    mem.iter()
        .map(|region| (region.start_addr(), u64_to_usize(region.len())))
        .collect()
}

/// Returns the end of low memory: the end of the region at address 0, capped at the
/// start of the MMIO gap.
fn low_memory_end<M: GuestMemoryBackend>(mem: &M) -> Result<u64, Error> {
    let region = mem.find_region(GuestAddress(0)).ok_or(Error::NoLowMemory)?;
    // A region starting at 0 ends at its length, which cannot overflow.
    let end = region.start_addr().raw_value().saturating_add(region.len());
    Ok(end.min(MMIO_GAP_START))
}

/// Returns the highest page-aligned guest address at which an initrd of
/// `initrd_size` bytes fits in low memory: below the MMIO gap, below the end of the
/// region at address 0 and at or above the kernel load address [`HIMEM_START`].
pub fn initrd_load_addr<M: GuestMemoryBackend>(
    mem: &M,
    initrd_size: usize,
) -> Result<GuestAddress, Error> {
    let end = low_memory_end(mem)?;
    let available = end.saturating_sub(HIMEM_START);
    let size = usize_to_u64(initrd_size);
    if size > available {
        return Err(Error::InitrdTooLarge {
            size: initrd_size,
            available,
        });
    }
    // end - size >= HIMEM_START, which is page aligned, so aligning down stays above it.
    let addr = (end - size) & !(PAGE_SIZE - 1);
    Ok(GuestAddress(addr))
}

/// Checks that `[addr, addr + size)` lies in guest memory.
fn in_memory<M: GuestMemoryBackend>(mem: &M, addr: GuestAddress, size: usize) -> bool {
    size == 0 || GuestMemoryBackend::check_range(mem, addr, size)
}

/// Returns the command line pointer after checking the size and placement.
fn cmdline_ptr<M: GuestMemoryBackend>(mem: &M, cfg: &BootConfig) -> Result<u32, Error> {
    let size = cfg.cmdline_size;
    if size == 0 {
        return Err(Error::CmdlineEmpty);
    }
    if size > CMDLINE_MAX_SIZE {
        return Err(Error::CmdlineTooLarge {
            size,
            max: CMDLINE_MAX_SIZE,
        });
    }
    let addr = cfg.cmdline_addr.raw_value();
    let ptr = u32::try_from(addr).map_err(|_| Error::CmdlineAddressTooHigh { addr })?;
    if !in_memory(mem, cfg.cmdline_addr, size) {
        return Err(Error::CmdlineOutsideMemory { addr, size });
    }
    Ok(ptr)
}

/// Returns `(ramdisk_image, ramdisk_size)` after checking the placement.
fn initrd_fields<M: GuestMemoryBackend>(
    mem: &M,
    addr: GuestAddress,
    size: usize,
) -> Result<(u32, u32), Error> {
    let raw = addr.raw_value();
    let below_4g = raw
        .checked_add(usize_to_u64(size))
        .is_some_and(|end| end <= FIRST_ADDR_PAST_32BITS);
    let (Ok(image), Ok(len), true) = (u32::try_from(raw), u32::try_from(size), below_4g) else {
        return Err(Error::InitrdNotBelow4G { addr: raw, size });
    };
    if !in_memory(mem, addr, size) {
        return Err(Error::InitrdOutsideMemory { addr: raw, size });
    }
    Ok((image, len))
}

/// Writes the zero page at [`ZERO_PAGE_START`]: the bzImage setup header (or a minimal
/// one for an ELF kernel), loader type, command line, initrd and the e820 map of `mem`.
pub fn configure_system<M: GuestMemoryBackend>(mem: &M, cfg: &BootConfig) -> Result<(), Error> {
    let cmd_line_ptr = cmdline_ptr(mem, cfg)?;
    let mut params = boot_params::default();

    match cfg.setup_header {
        Some(header) => params.hdr = header,
        None => {
            params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
            params.hdr.header = KERNEL_HDR_MAGIC;
            params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT_BYTES;
        }
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.cmd_line_ptr = cmd_line_ptr;
    // The header field counts the characters, without the NUL; the size is at most
    // CMDLINE_MAX_SIZE, so it fits.
    params.hdr.cmdline_size = u32::try_from(cfg.cmdline_size - 1).unwrap_or(u32::MAX);

    if let Some((addr, size)) = cfg.initrd {
        let (image, len) = initrd_fields(mem, addr, size)?;
        params.hdr.ramdisk_image = image;
        params.hdr.ramdisk_size = len;
    }

    if let Some(rsdp) = cfg.acpi_rsdp {
        params.acpi_rsdp_addr = rsdp.raw_value();
    }

    let entries = e820_entries(&memory_regions(mem));
    if entries.len() > E820_MAX_ENTRIES {
        return Err(Error::TooManyE820Entries {
            count: entries.len(),
            max: E820_MAX_ENTRIES,
        });
    }
    for (slot, entry) in params.e820_table.iter_mut().zip(&entries) {
        *slot = *entry;
    }
    // At most E820_MAX_ENTRIES (128), checked above.
    params.e820_entries = u8::try_from(entries.len()).unwrap_or(u8::MAX);

    mem.write_obj(params, GuestAddress(ZERO_PAGE_START))
        .map_err(|source| Error::WriteZeroPage {
            addr: ZERO_PAGE_START,
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch_memory_regions;
    use vm_memory::GuestMemoryMmap;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    fn ram(addr: u64, size: u64) -> boot_e820_entry {
        boot_e820_entry {
            addr,
            size,
            r#type: E820_RAM,
        }
    }

    fn memory(size: u64) -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&arch_memory_regions(size)).unwrap()
    }

    fn elf_config() -> BootConfig {
        BootConfig {
            cmdline_addr: GuestAddress(crate::layout::CMDLINE_START),
            cmdline_size: 12,
            ..Default::default()
        }
    }

    fn read_zero_page(mem: &GuestMemoryMmap) -> boot_params {
        mem.read_obj(GuestAddress(ZERO_PAGE_START)).unwrap()
    }

    #[test]
    fn e820_entries_small_memory_skips_ebda_and_legacy_hole() {
        let entries = e820_entries(&arch_memory_regions(128 * MIB));

        assert_eq!(
            entries,
            vec![
                ram(0, EBDA_START),
                ram(HIMEM_START, 128 * MIB - HIMEM_START)
            ]
        );
    }

    #[test]
    fn e820_entries_memory_ending_at_gap_has_no_high_entry() {
        let entries = e820_entries(&arch_memory_regions(MMIO_GAP_START));

        assert_eq!(
            entries,
            vec![
                ram(0, EBDA_START),
                ram(HIMEM_START, MMIO_GAP_START - HIMEM_START)
            ]
        );
    }

    #[test]
    fn e820_entries_memory_crossing_gap_resumes_at_4g() {
        let entries = e820_entries(&arch_memory_regions(4 * GIB));

        assert_eq!(
            entries,
            vec![
                ram(0, EBDA_START),
                ram(HIMEM_START, MMIO_GAP_START - HIMEM_START),
                ram(FIRST_ADDR_PAST_32BITS, GIB),
            ]
        );
    }

    #[test]
    fn e820_entries_never_cover_the_gap() {
        for size in [GIB, 3 * GIB - 1, 3 * GIB, 3 * GIB + 1, 16 * GIB] {
            for entry in e820_entries(&arch_memory_regions(size)) {
                let (addr, len) = (entry.addr, entry.size);
                let end = addr + len;
                assert!(end <= MMIO_GAP_START || addr >= FIRST_ADDR_PAST_32BITS);
            }
        }
    }

    #[test]
    fn e820_entries_memory_below_ebda_is_one_entry() {
        let entries = e820_entries(&[(GuestAddress(0), 0x8_0000)]);

        assert_eq!(entries, vec![ram(0, 0x8_0000)]);
    }

    #[test]
    fn e820_entries_touching_regions_are_merged() {
        let regions = [
            (GuestAddress(0), 0x4000_0000),
            (GuestAddress(0x4000_0000), 0x4000_0000),
        ];

        let entries = e820_entries(&regions);

        assert_eq!(
            entries,
            vec![
                ram(0, EBDA_START),
                ram(HIMEM_START, 0x8000_0000 - HIMEM_START)
            ]
        );
    }

    #[test]
    fn e820_entries_region_ending_at_2_pow_64_is_kept() {
        let start = u64::MAX - 0xfff;

        let entries = e820_entries(&[(GuestAddress(start), 0x1000)]);

        assert_eq!(entries, vec![ram(start, 0x1000)]);
    }

    #[test]
    fn configure_system_elf_kernel_writes_minimal_header() {
        let mem = memory(64 * MIB);

        configure_system(&mem, &elf_config()).unwrap();

        let params = read_zero_page(&mem);
        assert_eq!({ params.hdr.boot_flag }, 0xaa55);
        assert_eq!({ params.hdr.header }, 0x5372_6448);
        assert_eq!({ params.hdr.kernel_alignment }, 0x0100_0000);
        assert_eq!({ params.hdr.type_of_loader }, 0xff);
        assert_eq!({ params.hdr.cmd_line_ptr }, 0x20000);
        assert_eq!({ params.hdr.cmdline_size }, 11);
        assert_eq!({ params.hdr.ramdisk_image }, 0);
        assert_eq!({ params.hdr.ramdisk_size }, 0);
    }

    #[test]
    fn configure_system_bzimage_keeps_setup_header() {
        let mem = memory(64 * MIB);
        let header = setup_header {
            version: 0x020f,
            header: KERNEL_HDR_MAGIC,
            boot_flag: KERNEL_BOOT_FLAG_MAGIC,
            kernel_alignment: 0x20_0000,
            type_of_loader: 0,
            ..Default::default()
        };
        let cfg = BootConfig {
            setup_header: Some(header),
            ..elf_config()
        };

        configure_system(&mem, &cfg).unwrap();

        let params = read_zero_page(&mem);
        assert_eq!({ params.hdr.version }, 0x020f);
        assert_eq!({ params.hdr.kernel_alignment }, 0x20_0000);
        assert_eq!({ params.hdr.type_of_loader }, 0xff);
        assert_eq!({ params.hdr.cmd_line_ptr }, 0x20000);
    }

    #[test]
    fn configure_system_initrd_sets_ramdisk_fields() {
        let mem = memory(64 * MIB);
        let cfg = BootConfig {
            initrd: Some((GuestAddress(0x300_0000), 0x10_0000)),
            ..elf_config()
        };

        configure_system(&mem, &cfg).unwrap();

        let params = read_zero_page(&mem);
        assert_eq!({ params.hdr.ramdisk_image }, 0x300_0000);
        assert_eq!({ params.hdr.ramdisk_size }, 0x10_0000);
    }

    #[test]
    fn configure_system_writes_e820_map() {
        let mem = memory(64 * MIB);

        configure_system(&mem, &elf_config()).unwrap();

        let params = read_zero_page(&mem);
        assert_eq!(params.e820_entries, 2);
        assert_eq!(params.e820_table[0], ram(0, EBDA_START));
        assert_eq!(
            params.e820_table[1],
            ram(HIMEM_START, 64 * MIB - HIMEM_START)
        );
        assert_eq!(params.e820_table[2], boot_e820_entry::default());
    }

    #[test]
    fn configure_system_memory_crossing_gap_writes_three_entries() {
        let mem = memory(MMIO_GAP_START + 2 * MIB);

        configure_system(&mem, &elf_config()).unwrap();

        let params = read_zero_page(&mem);
        assert_eq!(params.e820_entries, 3);
        assert_eq!(params.e820_table[2], ram(FIRST_ADDR_PAST_32BITS, 2 * MIB));
    }

    #[test]
    fn configure_system_empty_cmdline_fails() {
        let mem = memory(64 * MIB);
        let cfg = BootConfig {
            cmdline_size: 0,
            ..elf_config()
        };

        let err = configure_system(&mem, &cfg).unwrap_err();

        assert!(matches!(err, Error::CmdlineEmpty));
    }

    #[test]
    fn configure_system_cmdline_too_large_fails() {
        let mem = memory(64 * MIB);
        let cfg = BootConfig {
            cmdline_size: CMDLINE_MAX_SIZE + 1,
            ..elf_config()
        };

        let err = configure_system(&mem, &cfg).unwrap_err();

        assert!(matches!(
            err,
            Error::CmdlineTooLarge {
                size: 2049,
                max: 2048
            }
        ));
    }

    #[test]
    fn configure_system_cmdline_above_4g_fails() {
        let mem = memory(64 * MIB);
        let cfg = BootConfig {
            cmdline_addr: GuestAddress(FIRST_ADDR_PAST_32BITS),
            ..elf_config()
        };

        let err = configure_system(&mem, &cfg).unwrap_err();

        assert!(matches!(err, Error::CmdlineAddressTooHigh { .. }));
    }

    #[test]
    fn configure_system_cmdline_outside_memory_fails() {
        let mem = memory(64 * MIB);
        let cfg = BootConfig {
            cmdline_addr: GuestAddress(64 * MIB - 4),
            ..elf_config()
        };

        let err = configure_system(&mem, &cfg).unwrap_err();

        assert!(matches!(err, Error::CmdlineOutsideMemory { size: 12, .. }));
    }

    #[test]
    fn configure_system_initrd_outside_memory_fails() {
        let mem = memory(64 * MIB);
        let cfg = BootConfig {
            initrd: Some((GuestAddress(63 * MIB), 2 * MIB as usize)),
            ..elf_config()
        };

        let err = configure_system(&mem, &cfg).unwrap_err();

        assert!(matches!(err, Error::InitrdOutsideMemory { .. }));
    }

    #[test]
    fn configure_system_initrd_above_4g_fails() {
        let mem = memory(64 * MIB);
        let cfg = BootConfig {
            initrd: Some((GuestAddress(FIRST_ADDR_PAST_32BITS - 0x1000), 0x2000)),
            ..elf_config()
        };

        let err = configure_system(&mem, &cfg).unwrap_err();

        assert!(matches!(err, Error::InitrdNotBelow4G { size: 0x2000, .. }));
    }

    #[test]
    fn configure_system_zero_page_outside_memory_fails() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[
            (GuestAddress(0), 0x1000),
            (GuestAddress(0x20000), 0x1000),
        ])
        .unwrap();

        let err = configure_system(&mem, &elf_config()).unwrap_err();

        assert!(matches!(err, Error::WriteZeroPage { addr: 0x7000, .. }));
    }

    #[test]
    fn initrd_load_addr_small_memory_places_at_top() {
        let mem = memory(64 * MIB);

        let addr = initrd_load_addr(&mem, 0x10_0000).unwrap();

        assert_eq!(addr, GuestAddress(63 * MIB));
    }

    #[test]
    fn initrd_load_addr_unaligned_size_rounds_down_to_page() {
        let mem = memory(64 * MIB);

        let addr = initrd_load_addr(&mem, 0x10_0001).unwrap();

        assert_eq!(addr, GuestAddress(63 * MIB - PAGE_SIZE));
    }

    #[test]
    fn initrd_load_addr_memory_crossing_gap_stays_below_gap() {
        let mem = memory(MMIO_GAP_START + GIB);

        let addr = initrd_load_addr(&mem, 0x10_0000).unwrap();

        assert_eq!(addr, GuestAddress(MMIO_GAP_START - MIB));
    }

    #[test]
    fn initrd_load_addr_exact_fit_starts_at_himem() {
        let mem = memory(64 * MIB);

        let addr = initrd_load_addr(&mem, u64_to_usize(63 * MIB)).unwrap();

        assert_eq!(addr, GuestAddress(HIMEM_START));
    }

    #[test]
    fn initrd_load_addr_too_large_fails() {
        let mem = memory(64 * MIB);

        let err = initrd_load_addr(&mem, u64_to_usize(63 * MIB) + 1).unwrap_err();

        assert!(matches!(
            err,
            Error::InitrdTooLarge { size, available }
                if size == u64_to_usize(63 * MIB) + 1 && available == 63 * MIB
        ));
    }

    #[test]
    fn initrd_load_addr_without_low_memory_fails() {
        let mem =
            GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(HIMEM_START), 0x1000)]).unwrap();

        let err = initrd_load_addr(&mem, 0x1000).unwrap_err();

        assert!(matches!(err, Error::NoLowMemory));
    }

    #[test]
    fn error_messages_name_the_values() {
        let err = Error::InitrdTooLarge {
            size: 10,
            available: 5,
        };

        assert_eq!(
            err.to_string(),
            "Initrd of 10 bytes does not fit in the 5 bytes of low memory"
        );
    }
}
