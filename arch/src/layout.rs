//! The x86_64 guest-physical memory map, port numbers and interrupt lines.
//!
//! Every guest-physical address, I/O port and IRQ number the VMM uses is defined here
//! and nowhere else. The low megabyte follows the conventions Linux expects from a PC:
//!
//! ```text
//! 0x0000_0500  boot GDT (4 entries), followed by the boot IDT (1 entry)
//! 0x0000_7000  zero page (struct boot_params)
//! 0x0000_8ff0  initial stack pointer (the stack grows down from here)
//! 0x0000_9000  PML4, PDPTE and PDE page tables (one page each)
//! 0x0002_0000  kernel command line
//! 0x0009_fc00  EBDA (empty; RAM in the e820 map ends here)
//! 0x000a_0000  legacy VGA / ROM hole, never RAM in the e820 map:
//! 0x000e_0000    ACPI tables (RSDP first, where Linux scans for it)
//! 0x000f_0000    MP table (floating pointer first, scanned there too)
//! 0x0010_0000  kernel image, then RAM up to the MMIO gap
//! 0xc000_0000  32-bit MMIO gap (virtio-mmio windows, IOAPIC, local APIC, KVM TSS)
//! 0x1_0000_0000  the rest of RAM
//! ```

/// Guest-physical address of the boot GDT (null, code, data and TSS descriptors).
pub const BOOT_GDT_START: u64 = 0x500;

/// Guest-physical address of the boot IDT, a single empty gate right after the GDT.
pub const BOOT_IDT_START: u64 = 0x520;

/// Guest-physical address of the zero page (`struct boot_params`) handed to Linux in RSI.
pub const ZERO_PAGE_START: u64 = 0x7000;

/// Initial RSP and RBP of the boot vCPU; the boot stack grows down from here.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;

/// Guest-physical address of the boot PML4 page table (loaded into CR3).
pub const PML4_START: u64 = 0x9000;

/// Guest-physical address of the boot page-directory-pointer table.
pub const PDPTE_START: u64 = 0xa000;

/// Guest-physical address of the boot page directory (512 entries of 2 MiB pages).
pub const PDE_START: u64 = 0xb000;

/// Guest-physical address of the kernel command line.
pub const CMDLINE_START: u64 = 0x20000;

/// Largest kernel command line, in bytes, including the terminating NUL.
pub const CMDLINE_MAX_SIZE: usize = 2048;

/// Start of the Extended BIOS Data Area, the top 1 KiB of conventional memory.
/// Linux scans it for the MP floating pointer; RAM in the e820 map ends here.
pub const EBDA_START: u64 = 0x9fc00;

/// End of conventional memory and of the EBDA; the legacy VGA / ROM hole starts here.
pub const EBDA_END: u64 = 0xa0000;

/// Guest-physical address of the ACPI tables: the RSDP first (Linux also scans
/// 0xe0000..0x100000 for it, besides reading it from the zero page), then XSDT,
/// FADT, MADT and DSDT. They must end at or below [`ACPI_TABLES_END`].
pub const ACPI_TABLES_START: u64 = 0x000e_0000;

/// End of the ACPI tables' area, and start of the MP table's.
pub const ACPI_TABLES_END: u64 = 0x000f_0000;

/// Guest-physical address of the MP table (floating pointer first, then the
/// configuration table), in the BIOS area Linux scans for it; it must end at or
/// below [`MPTABLE_END`].
pub const MPTABLE_START: u64 = ACPI_TABLES_END;

/// End of the MP table's area: high memory starts here.
pub const MPTABLE_END: u64 = HIMEM_START;

/// Guest-physical address of high memory, where the kernel image is loaded (1 MiB).
pub const HIMEM_START: u64 = 0x0010_0000;

/// Start of the 32-bit MMIO gap: guest-physical addresses from here up to
/// [`MMIO_GAP_END`] are never RAM.
pub const MMIO_GAP_START: u64 = 0xc000_0000;

/// Size of the 32-bit MMIO gap (1 GiB).
pub const MMIO_GAP_SIZE: u64 = 1 << 30;

/// First guest-physical address after the 32-bit MMIO gap.
pub const MMIO_GAP_END: u64 = MMIO_GAP_START + MMIO_GAP_SIZE;

/// The first guest-physical address that does not fit in 32 bits (4 GiB); RAM that does
/// not fit below the MMIO gap continues here.
pub const FIRST_ADDR_PAST_32BITS: u64 = 1 << 32;

/// Start of the window, inside the MMIO gap, where virtio-mmio devices are placed.
pub const VIRTIO_MMIO_START: u64 = 0xd000_0000;

/// Size of the MMIO register window of one virtio-mmio device.
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;

/// Guest-physical address of the IOAPIC registers.
pub const IOAPIC_START: u64 = 0xfec0_0000;

/// Guest-physical address of the local APIC registers (the default xAPIC base).
pub const APIC_START: u64 = 0xfee0_0000;

/// Guest-physical address of the three pages KVM needs for the real-mode TSS on Intel
/// (`KVM_SET_TSS_ADDR`), inside the MMIO gap just below the BIOS ROM area; KVM's
/// identity-map page defaults to the page right below it.
pub const KVM_TSS_ADDRESS: u64 = 0xfffb_d000;

/// Size of the region KVM uses at [`KVM_TSS_ADDRESS`] (three pages).
pub const KVM_TSS_SIZE: u64 = 0x3000;

/// Number of input pins of the (in-kernel) IOAPIC, which is also the number of GSIs
/// routed to it.
pub const IOAPIC_NUM_PINS: u32 = 24;

/// First IOAPIC GSI handed out to virtio-mmio devices.
pub const IRQ_BASE: u32 = 5;

/// Last IOAPIC GSI (inclusive) handed out to virtio-mmio devices.
pub const IRQ_MAX: u32 = 23;

/// I/O port base of the first serial port (COM1).
pub const SERIAL_COM1_PORT: u16 = 0x3f8;

/// Number of I/O ports decoded by a 16550 serial port.
pub const SERIAL_COM1_PORT_LEN: u16 = 8;

/// IOAPIC GSI (ISA IRQ) of the first serial port (COM1).
pub const SERIAL_COM1_IRQ: u32 = 4;

/// IOAPIC GSI (ISA IRQ) of the i8042 keyboard controller.
pub const I8042_IRQ: u32 = 1;

/// First I/O port of the i8042 keyboard controller (data port 0x60).
pub const I8042_PORT: u16 = 0x60;

/// Number of I/O ports covered by the i8042, 0x60..=0x64 (data and command/status).
pub const I8042_PORT_LEN: u16 = 5;

/// First I/O port of the ACPI power-management device: the FADT's sleep control
/// register (write `SLP_TYP << 2 | SLP_EN` to enter a sleep state; S5 powers off).
pub const ACPI_PM_PORT: u16 = 0x600;

/// Number of I/O ports of the ACPI power-management device: sleep control, sleep
/// status and the generic event device's event register.
pub const ACPI_PM_PORT_LEN: u16 = 3;

/// First I/O port of PCI configuration mechanism #1 (CONFIG_ADDRESS, then
/// CONFIG_DATA at 0xcfc): an empty bus with only a host bridge.
pub const PCI_CONFIG_PORT: u16 = 0xcf8;

/// IOAPIC GSI of the ACPI generic event device (GED), which signals the power
/// button; ISA IRQ 3 (COM2's, unused here).
pub const ACPI_GED_IRQ: u32 = 3;

/// Largest number of vCPUs: xAPIC ids are 8 bits, 0xff is the broadcast id and one
/// more id is taken by the IOAPIC in the MP table.
pub const MAX_SUPPORTED_CPUS: u8 = 254;

// The boot structures of the low megabyte must not overlap each other.
const _: () = assert!(BOOT_GDT_START + 4 * 8 <= BOOT_IDT_START);
const _: () = assert!(BOOT_IDT_START + 8 <= ZERO_PAGE_START);
const _: () = assert!(ZERO_PAGE_START + 0x1000 <= BOOT_STACK_POINTER);
const _: () = assert!(BOOT_STACK_POINTER < PML4_START);
const _: () = assert!(PML4_START + 0x1000 <= PDPTE_START);
const _: () = assert!(PDPTE_START + 0x1000 <= PDE_START);
const _: () = assert!(PDE_START + 0x1000 <= CMDLINE_START);
const _: () = assert!(CMDLINE_START + CMDLINE_MAX_SIZE as u64 <= EBDA_START);
const _: () = assert!(EBDA_START < EBDA_END && EBDA_END <= ACPI_TABLES_START);
const _: () = assert!(ACPI_TABLES_START < ACPI_TABLES_END && MPTABLE_START < MPTABLE_END);
const _: () = assert!(MPTABLE_END <= HIMEM_START);
// The gap ends exactly at 4 GiB and holds the virtio window and both APICs.
const _: () = assert!(MMIO_GAP_END == FIRST_ADDR_PAST_32BITS);
const _: () = assert!(MMIO_GAP_START <= VIRTIO_MMIO_START);
const _: () =
    assert!(VIRTIO_MMIO_START + (IRQ_MAX - IRQ_BASE + 1) as u64 * VIRTIO_MMIO_SIZE <= IOAPIC_START);
const _: () = assert!(IOAPIC_START < APIC_START && APIC_START < MMIO_GAP_END);
// KVM's TSS pages (and the identity-map page below them) sit in the gap, clear of
// the APICs and the virtio window.
const _: () = assert!(KVM_TSS_ADDRESS - 0x1000 >= APIC_START + 0x1000);
const _: () = assert!(KVM_TSS_ADDRESS + KVM_TSS_SIZE <= MMIO_GAP_END);
// Device interrupts are IOAPIC pins that do not clash with the legacy devices.
const _: () = assert!(IRQ_BASE <= IRQ_MAX && IRQ_MAX < IOAPIC_NUM_PINS);
const _: () = assert!(SERIAL_COM1_IRQ < IRQ_BASE && I8042_IRQ < IRQ_BASE);
const _: () = assert!(SERIAL_COM1_IRQ != I8042_IRQ);
const _: () = assert!(ACPI_GED_IRQ < IRQ_BASE);
const _: () = assert!(ACPI_GED_IRQ != SERIAL_COM1_IRQ && ACPI_GED_IRQ != I8042_IRQ);
// The power-management ports clash with neither the serial port nor the i8042.
const _: () = assert!(ACPI_PM_PORT > SERIAL_COM1_PORT + SERIAL_COM1_PORT_LEN);
const _: () = assert!(PCI_CONFIG_PORT > ACPI_PM_PORT + ACPI_PM_PORT_LEN);
