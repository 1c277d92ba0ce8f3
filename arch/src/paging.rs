//! Boot page tables: an identity map of the first 1 GiB with 2 MiB pages, enough for
//! the kernel's 64-bit entry point, which builds its own tables right away.

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryError};

use crate::layout::{PDE_START, PDPTE_START, PML4_START};

/// Page-table entry bit: the entry is present.
pub const PTE_PRESENT: u64 = 1 << 0;
/// Page-table entry bit: the mapped memory is writable.
pub const PTE_WRITABLE: u64 = 1 << 1;
/// Page-directory entry bit: the entry maps a 2 MiB page instead of a page table.
pub const PTE_PAGE_SIZE: u64 = 1 << 7;

/// Number of entries in one page table.
pub const ENTRIES_PER_TABLE: u64 = 512;
/// Size of one page mapped by a page-directory entry.
pub const HUGE_PAGE_SIZE: u64 = 2 << 20;
/// Size of one page-table entry, in bytes.
const ENTRY_SIZE: u64 = 8;

/// Errors while writing the boot page tables.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The PML4 entry could not be written.
    #[error("Failed to write the PML4 entry at {addr:#x}")]
    WritePml4 {
        /// Guest-physical address of the entry.
        addr: u64,
        /// The guest memory error.
        #[source]
        source: GuestMemoryError,
    },
    /// The PDPTE entry could not be written.
    #[error("Failed to write the PDPTE entry at {addr:#x}")]
    WritePdpte {
        /// Guest-physical address of the entry.
        addr: u64,
        /// The guest memory error.
        #[source]
        source: GuestMemoryError,
    },
    /// A page-directory entry could not be written.
    #[error("Failed to write page-directory entry {index} at {addr:#x}")]
    WritePde {
        /// Index of the entry in the page directory.
        index: u64,
        /// Guest-physical address of the entry.
        addr: u64,
        /// The guest memory error.
        #[source]
        source: GuestMemoryError,
    },
}

/// Writes PML4 -> PDPTE -> PDE tables at [`PML4_START`], [`PDPTE_START`] and
/// [`PDE_START`] that identity-map guest-physical `[0, 1 GiB)` with 2 MiB pages.
pub fn setup_identity_mapping<M: GuestMemoryBackend>(mem: &M) -> Result<(), Error> {
    let table_flags = PTE_PRESENT | PTE_WRITABLE;

    mem.write_obj(PDPTE_START | table_flags, GuestAddress(PML4_START))
        .map_err(|source| Error::WritePml4 {
            addr: PML4_START,
            source,
        })?;
    mem.write_obj(PDE_START | table_flags, GuestAddress(PDPTE_START))
        .map_err(|source| Error::WritePdpte {
            addr: PDPTE_START,
            source,
        })?;

    let page_flags = table_flags | PTE_PAGE_SIZE;
    for index in 0..ENTRIES_PER_TABLE {
        // At most 511 * 8 past PDE_START and 511 * 2 MiB: neither can overflow.
        let addr = PDE_START + index * ENTRY_SIZE;
        let entry = (index * HUGE_PAGE_SIZE) | page_flags;
        mem.write_obj(entry, GuestAddress(addr))
            .map_err(|source| Error::WritePde {
                index,
                addr,
                source,
            })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    fn read_u64(mem: &GuestMemoryMmap, addr: u64) -> u64 {
        mem.read_obj(GuestAddress(addr)).unwrap()
    }

    #[test]
    fn setup_identity_mapping_links_the_tables() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();

        setup_identity_mapping(&mem).unwrap();

        assert_eq!(read_u64(&mem, PML4_START), 0xa003);
        assert_eq!(read_u64(&mem, PDPTE_START), 0xb003);
    }

    #[test]
    fn setup_identity_mapping_maps_first_gib_with_2mib_pages() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();

        setup_identity_mapping(&mem).unwrap();

        assert_eq!(read_u64(&mem, PDE_START), 0x83);
        assert_eq!(read_u64(&mem, PDE_START + 8), 0x20_0083);
        assert_eq!(read_u64(&mem, PDE_START + 511 * 8), 0x3fe0_0083);
        for index in 0..ENTRIES_PER_TABLE {
            let entry = read_u64(&mem, PDE_START + index * 8);
            assert_eq!(entry & !0xfff, index << 21);
        }
    }

    #[test]
    fn setup_identity_mapping_memory_ending_inside_pde_fails() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0xb800)]).unwrap();

        let err = setup_identity_mapping(&mem).unwrap_err();

        assert!(matches!(err, Error::WritePde { index: 256, .. }));
    }

    #[test]
    fn setup_identity_mapping_without_low_memory_fails() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0x10_0000), 0x1000)]).unwrap();

        let err = setup_identity_mapping(&mem).unwrap_err();

        assert!(matches!(err, Error::WritePml4 { addr: 0x9000, .. }));
    }
}
