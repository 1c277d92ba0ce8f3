//! Local APIC setup: wire LINT0 to the legacy PIC (ExtINT) and LINT1 to NMI, the
//! virtual-wire configuration a PC BIOS leaves behind.

use std::os::raw::c_char;

use kvm_bindings::kvm_lapic_state;

/// Offset of the LVT LINT0 register in the local APIC register page.
pub const APIC_LVT0: usize = 0x350;
/// Offset of the LVT LINT1 register in the local APIC register page.
pub const APIC_LVT1: usize = 0x360;

/// LVT delivery mode field (bits 10:8).
const DELIVERY_MODE_MASK: u32 = 0x700;
/// Position of the delivery mode field in an LVT register.
const DELIVERY_MODE_SHIFT: u32 = 8;
/// LVT delivery mode: non-maskable interrupt.
pub const APIC_MODE_NMI: u32 = 0b100;
/// LVT delivery mode: external interrupt (the 8259 PIC supplies the vector).
pub const APIC_MODE_EXTINT: u32 = 0b111;

/// Size of one local APIC register, in bytes.
const REGISTER_SIZE: usize = 4;

const _: () = assert!(APIC_LVT0 + REGISTER_SIZE <= std::mem::size_of::<kvm_lapic_state>());
const _: () = assert!(APIC_LVT1 + REGISTER_SIZE <= std::mem::size_of::<kvm_lapic_state>());

/// Reads the 32-bit register at `offset` (a constant checked against the page size).
fn read_register(lapic: &kvm_lapic_state, offset: usize) -> u32 {
    let mut bytes = [0u8; REGISTER_SIZE];
    for (byte, reg) in bytes
        .iter_mut()
        .zip(&lapic.regs[offset..offset + REGISTER_SIZE])
    {
        *byte = reg.to_ne_bytes()[0];
    }
    u32::from_le_bytes(bytes)
}

/// Writes the 32-bit register at `offset` (a constant checked against the page size).
fn write_register(lapic: &mut kvm_lapic_state, offset: usize, value: u32) {
    for (reg, byte) in lapic.regs[offset..offset + REGISTER_SIZE]
        .iter_mut()
        .zip(value.to_le_bytes())
    {
        *reg = c_char::from_ne_bytes([byte]);
    }
}

/// Returns `register` with its delivery mode replaced by `mode`.
fn with_delivery_mode(register: u32, mode: u32) -> u32 {
    (register & !DELIVERY_MODE_MASK) | ((mode << DELIVERY_MODE_SHIFT) & DELIVERY_MODE_MASK)
}

/// Configures LVT LINT0 as ExtINT and LINT1 as NMI in `lapic` (as read from the
/// vCPU), keeping every other bit of both registers.
pub fn set_lint(lapic: &mut kvm_lapic_state) {
    let lvt0 = read_register(lapic, APIC_LVT0);
    write_register(lapic, APIC_LVT0, with_delivery_mode(lvt0, APIC_MODE_EXTINT));
    let lvt1 = read_register(lapic, APIC_LVT1);
    write_register(lapic, APIC_LVT1, with_delivery_mode(lvt1, APIC_MODE_NMI));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_lint_zeroed_state_sets_delivery_modes() {
        let mut lapic = kvm_lapic_state::default();

        set_lint(&mut lapic);

        assert_eq!(read_register(&lapic, APIC_LVT0), 0x700);
        assert_eq!(read_register(&lapic, APIC_LVT1), 0x400);
    }

    #[test]
    fn set_lint_masked_registers_keep_other_bits() {
        let mut lapic = kvm_lapic_state::default();
        // Reset value of an LVT register: masked (bit 16), fixed delivery, vector 0.
        write_register(&mut lapic, APIC_LVT0, 0x0001_0000);
        write_register(&mut lapic, APIC_LVT1, 0x0001_0234);

        set_lint(&mut lapic);

        assert_eq!(read_register(&lapic, APIC_LVT0), 0x0001_0700);
        assert_eq!(read_register(&lapic, APIC_LVT1), 0x0001_0434);
    }

    #[test]
    fn set_lint_other_registers_are_untouched() {
        let mut lapic = kvm_lapic_state::default();

        set_lint(&mut lapic);

        assert_eq!(read_register(&lapic, 0x340), 0);
        assert_eq!(read_register(&lapic, 0x370), 0);
    }

    #[test]
    fn set_lint_registers_are_little_endian() {
        let mut lapic = kvm_lapic_state::default();

        set_lint(&mut lapic);

        assert_eq!(lapic.regs[APIC_LVT0 + 1], 0x07);
        assert_eq!(lapic.regs[APIC_LVT1 + 1], 0x04);
        assert_eq!(lapic.regs[APIC_LVT0], 0);
    }
}
