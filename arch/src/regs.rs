//! Initial register state of the boot vCPU for the 64-bit Linux boot protocol: long
//! mode with paging on, flat segments, RSI pointing at the zero page.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs};
use vm_memory::{GuestAddress, GuestMemoryBackend};

use crate::gdt::{
    self, kvm_segment_from_gdt, BOOT_GDT, BOOT_GDT_LIMIT, BOOT_IDT_LIMIT, CODE64_INDEX, DATA_INDEX,
    TSS_INDEX,
};
use crate::layout::{
    BOOT_GDT_START, BOOT_IDT_START, BOOT_STACK_POINTER, PML4_START, ZERO_PAGE_START,
};
use crate::paging;

/// RFLAGS bit 1 is reserved and always reads as 1; all other flags start cleared.
pub const RFLAGS_RESERVED: u64 = 1 << 1;

/// CR0.PE: protected mode.
pub const CR0_PE: u64 = 1 << 0;
/// CR0.ET: extension type (80387 present), hard-wired to 1 on modern CPUs.
pub const CR0_ET: u64 = 1 << 4;
/// CR0.PG: paging.
pub const CR0_PG: u64 = 1 << 31;
/// CR4.PAE: physical address extension, required for long mode.
pub const CR4_PAE: u64 = 1 << 5;
/// EFER.LME: long mode enable.
pub const EFER_LME: u64 = 1 << 8;
/// EFER.LMA: long mode active.
pub const EFER_LMA: u64 = 1 << 10;

/// x87 FPU control word after FNINIT: all exceptions masked, 64-bit precision.
pub const FPU_CONTROL_WORD: u16 = 0x37f;
/// MXCSR after reset: all SIMD floating-point exceptions masked.
pub const MXCSR_DEFAULT: u32 = 0x1f80;

/// Errors while preparing the special registers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The GDT could not be written.
    #[error("Failed to write the boot GDT")]
    WriteGdt(#[source] gdt::Error),
    /// The IDT could not be written.
    #[error("Failed to write the boot IDT")]
    WriteIdt(#[source] gdt::Error),
    /// The page tables could not be written.
    #[error("Failed to set up the boot page tables")]
    PageTables(#[source] paging::Error),
}

/// General-purpose registers for entering a 64-bit kernel at `entry`: RIP = entry,
/// RSP = RBP = [`BOOT_STACK_POINTER`], RSI = [`ZERO_PAGE_START`].
pub fn boot_regs(entry: GuestAddress) -> kvm_regs {
    kvm_regs {
        rip: entry.0,
        rsp: BOOT_STACK_POINTER,
        rbp: BOOT_STACK_POINTER,
        rsi: ZERO_PAGE_START,
        rflags: RFLAGS_RESERVED,
        ..Default::default()
    }
}

/// Writes the boot GDT, IDT and page tables into `mem` and points `sregs` (as read
/// back from the vCPU) at them: flat 64-bit segments, CR3 = [`PML4_START`], paging
/// and long mode enabled.
pub fn setup_sregs<M: GuestMemoryBackend>(mem: &M, sregs: &mut kvm_sregs) -> Result<(), Error> {
    gdt::write_gdt(mem, &BOOT_GDT).map_err(Error::WriteGdt)?;
    gdt::write_idt(mem).map_err(Error::WriteIdt)?;
    paging::setup_identity_mapping(mem).map_err(Error::PageTables)?;

    let code = kvm_segment_from_gdt(BOOT_GDT[usize::from(CODE64_INDEX)], CODE64_INDEX);
    let data = kvm_segment_from_gdt(BOOT_GDT[usize::from(DATA_INDEX)], DATA_INDEX);
    let tss = kvm_segment_from_gdt(BOOT_GDT[usize::from(TSS_INDEX)], TSS_INDEX);

    sregs.gdt.base = BOOT_GDT_START;
    sregs.gdt.limit = BOOT_GDT_LIMIT;
    sregs.idt.base = BOOT_IDT_START;
    sregs.idt.limit = BOOT_IDT_LIMIT;

    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;

    sregs.cr3 = PML4_START;
    sregs.cr4 |= CR4_PAE;
    sregs.cr0 |= CR0_PE | CR0_ET | CR0_PG;
    sregs.efer |= EFER_LME | EFER_LMA;
    Ok(())
}

/// FPU state after FNINIT with SSE exceptions masked.
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: FPU_CONTROL_WORD,
        mxcsr: MXCSR_DEFAULT,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemoryMmap};

    fn test_memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap()
    }

    #[test]
    fn boot_regs_entry_point_sets_64bit_boot_protocol_registers() {
        let regs = boot_regs(GuestAddress(0x100_0000));

        assert_eq!(regs.rip, 0x100_0000);
        assert_eq!(regs.rsp, 0x8ff0);
        assert_eq!(regs.rbp, 0x8ff0);
        assert_eq!(regs.rsi, 0x7000);
        assert_eq!(regs.rflags, 0x2);
        assert_eq!((regs.rax, regs.rbx, regs.rdi), (0, 0, 0));
    }

    #[test]
    fn setup_sregs_default_sregs_enters_long_mode() {
        let mem = test_memory();
        let mut sregs = kvm_sregs::default();

        setup_sregs(&mem, &mut sregs).unwrap();

        assert_eq!(sregs.cr3, 0x9000);
        assert_eq!(sregs.cr4 & CR4_PAE, CR4_PAE);
        assert_eq!(sregs.cr0 & 0x8000_0011, 0x8000_0011);
        assert_eq!(sregs.efer & 0x500, 0x500);
    }

    #[test]
    fn setup_sregs_existing_bits_are_kept() {
        let mem = test_memory();
        let mut sregs = kvm_sregs {
            cr0: 1 << 16,
            cr4: 1 << 7,
            efer: 1,
            ..Default::default()
        };

        setup_sregs(&mem, &mut sregs).unwrap();

        assert_eq!(sregs.cr0 & (1 << 16), 1 << 16);
        assert_eq!(sregs.cr4 & (1 << 7), 1 << 7);
        assert_eq!(sregs.efer & 1, 1);
    }

    #[test]
    fn setup_sregs_segments_come_from_the_gdt() {
        let mem = test_memory();
        let mut sregs = kvm_sregs::default();

        setup_sregs(&mem, &mut sregs).unwrap();

        assert_eq!(sregs.cs.selector, 0x8);
        assert_eq!(sregs.cs.l, 1);
        for seg in [sregs.ds, sregs.es, sregs.fs, sregs.gs, sregs.ss] {
            assert_eq!(seg.selector, 0x10);
            assert_eq!(seg.type_, 0x3);
        }
        assert_eq!(sregs.tr.selector, 0x18);
        assert_eq!(sregs.tr.type_, 0xb);
    }

    #[test]
    fn setup_sregs_descriptor_tables_are_in_memory() {
        let mem = test_memory();
        let mut sregs = kvm_sregs::default();

        setup_sregs(&mem, &mut sregs).unwrap();

        assert_eq!((sregs.gdt.base, sregs.gdt.limit), (0x500, 31));
        assert_eq!((sregs.idt.base, sregs.idt.limit), (0x520, 7));
        let code: u64 = mem.read_obj(GuestAddress(0x508)).unwrap();
        assert_eq!(code, BOOT_GDT[1]);
        let idt: u64 = mem.read_obj(GuestAddress(0x520)).unwrap();
        assert_eq!(idt, 0);
        let pml4: u64 = mem.read_obj(GuestAddress(PML4_START)).unwrap();
        assert_eq!(pml4, 0xa003);
    }

    #[test]
    fn setup_sregs_memory_without_page_tables_fails() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
        let mut sregs = kvm_sregs::default();

        let err = setup_sregs(&mem, &mut sregs).unwrap_err();

        assert!(matches!(err, Error::PageTables(_)));
    }

    #[test]
    fn boot_fpu_sets_control_words() {
        let fpu = boot_fpu();

        assert_eq!(fpu.fcw, 0x37f);
        assert_eq!(fpu.mxcsr, 0x1f80);
        assert_eq!(fpu.fsw, 0);
    }
}
