//! Segment descriptors: the boot GDT, its encoding and its translation into the
//! `kvm_segment` values KVM loads into the segment registers.
//!
//! A descriptor packs base, limit and flags into 64 bits:
//!
//! ```text
//! 63..56 base[31:24] | 55..52 G DB L AVL | 51..48 limit[19:16] | 47..40 P DPL S type
//! 39..16 base[23:0]  | 15..0  limit[15:0]
//! ```

use kvm_bindings::kvm_segment;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryError};

use crate::layout::{BOOT_GDT_START, BOOT_IDT_START};

/// Size of one GDT or IDT entry, in bytes.
const DESCRIPTOR_SIZE: u64 = 8;

/// Flags of a 64-bit code segment: G, L, present, DPL 0, code, execute/read, accessed.
pub const CODE64_FLAGS: u16 = 0xa09b;
/// Flags of a flat data segment: G, DB, present, DPL 0, data, read/write, accessed.
pub const DATA_FLAGS: u16 = 0xc093;
/// Flags of a task state segment: G, present, DPL 0, system, busy 32-bit TSS.
pub const TSS_FLAGS: u16 = 0x808b;
/// Limit of the flat boot segments (in 4 KiB units, i.e. 4 GiB).
pub const FLAT_LIMIT: u32 = 0xfffff;

/// Index of the code segment in [`BOOT_GDT`].
pub const CODE64_INDEX: u8 = 1;
/// Index of the data segment in [`BOOT_GDT`].
pub const DATA_INDEX: u8 = 2;
/// Index of the TSS in [`BOOT_GDT`].
pub const TSS_INDEX: u8 = 3;

/// The boot GDT: null, 64-bit code, data and TSS descriptors.
pub const BOOT_GDT: [u64; 4] = [
    gdt_entry(0, 0, 0),
    gdt_entry(CODE64_FLAGS, 0, FLAT_LIMIT),
    gdt_entry(DATA_FLAGS, 0, FLAT_LIMIT),
    gdt_entry(TSS_FLAGS, 0, FLAT_LIMIT),
];

/// GDTR limit for [`BOOT_GDT`]: its size in bytes minus one.
pub const BOOT_GDT_LIMIT: u16 = (BOOT_GDT.len() as u64 * DESCRIPTOR_SIZE - 1) as u16;

/// The single boot IDT entry: an empty (not present) gate.
pub const BOOT_IDT_ENTRY: u64 = 0;

/// IDTR limit for the one-entry boot IDT.
pub const BOOT_IDT_LIMIT: u16 = (DESCRIPTOR_SIZE - 1) as u16;

/// Largest number of GDT entries that fit between [`BOOT_GDT_START`] and
/// [`BOOT_IDT_START`].
pub const MAX_GDT_ENTRIES: usize = ((BOOT_IDT_START - BOOT_GDT_START) / DESCRIPTOR_SIZE) as usize;

const _: () = assert!(BOOT_GDT.len() <= MAX_GDT_ENTRIES);

/// Errors while writing descriptor tables into guest memory.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The GDT does not fit in front of the IDT.
    #[error("GDT of {count} entries does not fit below the IDT (at most {max})")]
    TooManyEntries {
        /// Number of entries given.
        count: usize,
        /// Number of entries that fit.
        max: usize,
    },
    /// A GDT entry could not be written.
    #[error("Failed to write GDT entry {index} at {addr:#x}")]
    WriteGdtEntry {
        /// Index of the entry in the table.
        index: usize,
        /// Guest-physical address of the entry.
        addr: u64,
        /// The guest memory error.
        #[source]
        source: GuestMemoryError,
    },
    /// The IDT could not be written.
    #[error("Failed to write the IDT at {addr:#x}")]
    WriteIdt {
        /// Guest-physical address of the IDT.
        addr: u64,
        /// The guest memory error.
        #[source]
        source: GuestMemoryError,
    },
}

/// Encodes a segment descriptor from its flags (access byte in bits 7..0, G/DB/L/AVL
/// in bits 15..12), base and 20-bit limit.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    let flags = flags as u64;
    let base = base as u64;
    let limit = limit as u64;
    ((base & 0xff00_0000) << 32)
        | ((flags & 0xf0ff) << 40)
        | ((limit & 0x000f_0000) << 32)
        | ((base & 0x00ff_ffff) << 16)
        | (limit & 0x0000_ffff)
}

/// Returns `width` (at most 8) bits of `entry` starting at bit `shift`.
fn bits_u8(entry: u64, shift: u32, width: u32) -> u8 {
    debug_assert!(width <= 8);
    // Masked to at most 8 bits, so the cast keeps every bit.
    ((entry >> shift) & ((1 << width) - 1)) as u8
}

/// Returns the base address encoded in a descriptor.
fn descriptor_base(entry: u64) -> u32 {
    // Both parts are masked into the low 32 bits.
    (((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000)) as u32
}

/// Returns the limit of a descriptor in bytes, scaled by the granularity bit.
fn descriptor_limit(entry: u64) -> u32 {
    // Masked into the low 20 bits.
    let raw = ((entry & 0xffff) | ((entry >> 32) & 0x000f_0000)) as u32;
    if bits_u8(entry, 55, 1) == 1 {
        (raw << 12) | 0xfff
    } else {
        raw
    }
}

/// Decodes GDT `entry`, found at index `table_index` of the GDT, into the segment
/// register value KVM expects. The limit is expanded to bytes when G is set.
pub fn kvm_segment_from_gdt(entry: u64, table_index: u8) -> kvm_segment {
    let present = bits_u8(entry, 47, 1);
    kvm_segment {
        base: u64::from(descriptor_base(entry)),
        limit: descriptor_limit(entry),
        selector: u16::from(table_index) * DESCRIPTOR_SIZE as u16,
        type_: bits_u8(entry, 40, 4),
        present,
        dpl: bits_u8(entry, 45, 2),
        db: bits_u8(entry, 54, 1),
        s: bits_u8(entry, 44, 1),
        l: bits_u8(entry, 53, 1),
        g: bits_u8(entry, 55, 1),
        avl: bits_u8(entry, 52, 1),
        unusable: u8::from(present == 0),
        padding: 0,
    }
}

/// Writes `table` into guest memory at [`BOOT_GDT_START`].
pub fn write_gdt<M: GuestMemoryBackend>(mem: &M, table: &[u64]) -> Result<(), Error> {
    if table.len() > MAX_GDT_ENTRIES {
        return Err(Error::TooManyEntries {
            count: table.len(),
            max: MAX_GDT_ENTRIES,
        });
    }
    let mut addr = BOOT_GDT_START;
    for (index, entry) in table.iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(addr))
            .map_err(|source| Error::WriteGdtEntry {
                index,
                addr,
                source,
            })?;
        // In bounds: at most MAX_GDT_ENTRIES entries end at BOOT_IDT_START.
        addr += DESCRIPTOR_SIZE;
    }
    Ok(())
}

/// Writes the one-entry boot IDT into guest memory at [`BOOT_IDT_START`].
pub fn write_idt<M: GuestMemoryBackend>(mem: &M) -> Result<(), Error> {
    mem.write_obj(BOOT_IDT_ENTRY, GuestAddress(BOOT_IDT_START))
        .map_err(|source| Error::WriteIdt {
            addr: BOOT_IDT_START,
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    fn test_memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap()
    }

    #[test]
    fn gdt_entry_null_is_zero() {
        assert_eq!(gdt_entry(0, 0, 0), 0);
    }

    #[test]
    fn gdt_entry_boot_segments_match_known_encodings() {
        assert_eq!(BOOT_GDT[1], 0x00af_9b00_0000_ffff);
        assert_eq!(BOOT_GDT[2], 0x00cf_9300_0000_ffff);
        assert_eq!(BOOT_GDT[3], 0x008f_8b00_0000_ffff);
    }

    #[test]
    fn gdt_entry_base_and_limit_split_across_fields() {
        let entry = gdt_entry(0x0093, 0x1234_5678, 0xa_bcde);

        assert_eq!(entry, 0x120a_9334_5678_bcde);
    }

    #[test]
    fn kvm_segment_from_gdt_code64_is_long_mode_code() {
        let seg = kvm_segment_from_gdt(BOOT_GDT[1], CODE64_INDEX);

        assert_eq!(seg.selector, 0x8);
        assert_eq!(seg.base, 0);
        assert_eq!(seg.limit, 0xffff_ffff);
        assert_eq!(seg.type_, 0xb);
        assert_eq!((seg.present, seg.dpl, seg.s), (1, 0, 1));
        assert_eq!((seg.l, seg.db, seg.g, seg.avl), (1, 0, 1, 0));
        assert_eq!(seg.unusable, 0);
    }

    #[test]
    fn kvm_segment_from_gdt_data_is_flat_read_write() {
        let seg = kvm_segment_from_gdt(BOOT_GDT[2], DATA_INDEX);

        assert_eq!(seg.selector, 0x10);
        assert_eq!(seg.type_, 0x3);
        assert_eq!((seg.l, seg.db, seg.g, seg.s), (0, 1, 1, 1));
        assert_eq!(seg.limit, 0xffff_ffff);
    }

    #[test]
    fn kvm_segment_from_gdt_tss_is_busy_system_segment() {
        let seg = kvm_segment_from_gdt(BOOT_GDT[3], TSS_INDEX);

        assert_eq!(seg.selector, 0x18);
        assert_eq!(seg.type_, 0xb);
        assert_eq!((seg.s, seg.present), (0, 1));
    }

    #[test]
    fn kvm_segment_from_gdt_byte_granular_keeps_limit() {
        let seg = kvm_segment_from_gdt(gdt_entry(0x0093, 0xdead_beef, 0x1_2345), 5);

        assert_eq!(seg.base, 0xdead_beef);
        assert_eq!(seg.limit, 0x1_2345);
        assert_eq!(seg.g, 0);
        assert_eq!(seg.selector, 0x28);
    }

    #[test]
    fn kvm_segment_from_gdt_null_is_unusable() {
        let seg = kvm_segment_from_gdt(BOOT_GDT[0], 0);

        assert_eq!(seg.present, 0);
        assert_eq!(seg.unusable, 1);
    }

    #[test]
    fn write_gdt_boot_table_reads_back() {
        let mem = test_memory();

        write_gdt(&mem, &BOOT_GDT).unwrap();

        for (index, entry) in BOOT_GDT.iter().enumerate() {
            let addr = GuestAddress(BOOT_GDT_START + index as u64 * 8);
            assert_eq!(mem.read_obj::<u64>(addr).unwrap(), *entry);
        }
    }

    #[test]
    fn write_gdt_too_many_entries_fails() {
        let mem = test_memory();
        let table = [0u64; MAX_GDT_ENTRIES + 1];

        let err = write_gdt(&mem, &table).unwrap_err();

        assert!(matches!(err, Error::TooManyEntries { count: 5, max: 4 }));
    }

    #[test]
    fn write_gdt_without_low_memory_fails() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0x10_0000), 0x1000)]).unwrap();

        let err = write_gdt(&mem, &BOOT_GDT).unwrap_err();

        assert!(matches!(err, Error::WriteGdtEntry { index: 0, .. }));
    }

    #[test]
    fn write_idt_writes_empty_gate() {
        let mem = test_memory();
        mem.write_obj(u64::MAX, GuestAddress(BOOT_IDT_START))
            .unwrap();

        write_idt(&mem).unwrap();

        assert_eq!(
            mem.read_obj::<u64>(GuestAddress(BOOT_IDT_START)).unwrap(),
            0
        );
    }
}
