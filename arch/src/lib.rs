//! x86_64 boot support for cabin: the guest memory map, the Linux zero page, GDT,
//! page tables, boot registers, MP table, CPUID and MSRs.
//!
//! Everything here is pure: it computes values or writes them into guest memory
//! through vm-memory's checked `Bytes` API, and never issues KVM ioctls.

#[cfg(not(target_arch = "x86_64"))]
compile_error!("the arch crate supports x86_64 only");

pub mod acpi;
pub mod boot;
pub mod cpuid;
pub mod gdt;
pub mod interrupts;
pub mod layout;
pub mod mptable;
pub mod msr;
pub mod paging;
pub mod regs;

use vm_memory::GuestAddress;

use crate::layout::{FIRST_ADDR_PAST_32BITS, MMIO_GAP_START};

/// Converts a guest size to a host `usize`; lossless because the crate only builds
/// for x86_64, where `usize` is 64 bits wide.
pub(crate) fn u64_to_usize(value: u64) -> usize {
    const _: () = assert!(usize::BITS == u64::BITS);
    value as usize
}

/// Converts a host `usize` to a guest size; lossless on x86_64 (see [`u64_to_usize`]).
pub(crate) fn usize_to_u64(value: usize) -> u64 {
    const _: () = assert!(usize::BITS == u64::BITS);
    value as u64
}

/// Returns the guest RAM regions, as `(start, size)`, for `mem_size` bytes of memory.
///
/// Memory that fits below [`MMIO_GAP_START`] is one region starting at 0. Larger memory
/// is split around the 32-bit MMIO gap: `[0, MMIO_GAP_START)` and
/// `[4 GiB, 4 GiB + rest)`. A size of 0 yields no region. The caller validates the
/// size; a size so large that the high region would pass the end of the 64-bit address
/// space is cut short at that end.
pub fn arch_memory_regions(mem_size: u64) -> Vec<(GuestAddress, usize)> {
    if mem_size == 0 {
        return Vec::new();
    }
    if mem_size <= MMIO_GAP_START {
        return vec![(GuestAddress(0), u64_to_usize(mem_size))];
    }
    let high_size = mem_size - MMIO_GAP_START;
    // The high region must end at or below u64::MAX + 1.
    let high_size = high_size.min(u64::MAX - FIRST_ADDR_PAST_32BITS + 1);
    vec![
        (GuestAddress(0), u64_to_usize(MMIO_GAP_START)),
        (
            GuestAddress(FIRST_ADDR_PAST_32BITS),
            u64_to_usize(high_size),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    #[test]
    fn arch_memory_regions_small_memory_is_one_region() {
        let regions = arch_memory_regions(128 * MIB);

        assert_eq!(regions, vec![(GuestAddress(0), 128 << 20)]);
    }

    #[test]
    fn arch_memory_regions_exactly_gap_start_is_one_region() {
        let regions = arch_memory_regions(MMIO_GAP_START);

        assert_eq!(
            regions,
            vec![(GuestAddress(0), u64_to_usize(MMIO_GAP_START))]
        );
    }

    #[test]
    fn arch_memory_regions_one_page_past_gap_start_splits_at_gap() {
        let regions = arch_memory_regions(MMIO_GAP_START + 0x1000);

        assert_eq!(
            regions,
            vec![
                (GuestAddress(0), u64_to_usize(MMIO_GAP_START)),
                (GuestAddress(FIRST_ADDR_PAST_32BITS), 0x1000),
            ]
        );
    }

    #[test]
    fn arch_memory_regions_large_memory_keeps_total_size() {
        let regions = arch_memory_regions(8 * GIB);

        assert_eq!(regions.len(), 2);
        assert_eq!(regions[1].0, GuestAddress(FIRST_ADDR_PAST_32BITS));
        let total: u64 = regions.iter().map(|(_, size)| usize_to_u64(*size)).sum();
        assert_eq!(total, 8 * GIB);
    }

    #[test]
    fn arch_memory_regions_no_region_touches_the_gap() {
        for size in [GIB, 3 * GIB, 3 * GIB + 1, 4 * GIB, 64 * GIB] {
            for (start, len) in arch_memory_regions(size) {
                let end = start.0 + usize_to_u64(len);
                assert!(end <= MMIO_GAP_START || start.0 >= FIRST_ADDR_PAST_32BITS);
            }
        }
    }

    #[test]
    fn arch_memory_regions_zero_size_is_empty() {
        assert!(arch_memory_regions(0).is_empty());
    }

    #[test]
    fn arch_memory_regions_huge_size_stays_in_address_space() {
        let regions = arch_memory_regions(u64::MAX);

        let (start, len) = regions[1];
        assert!(start.0.checked_add(usize_to_u64(len) - 1).is_some());
    }
}
