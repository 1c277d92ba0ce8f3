//! An empty PCI bus: configuration mechanism #1 (the address register at 0xcf8,
//! the data window at 0xcfc) with only a host bridge at 00:00.0.
//!
//! cabin has no PCI devices, but a guest kernel built with PCI (which Linux's ACPI
//! needs) probes for a configuration mechanism and, finding none, reports "PCI:
//! Fatal: No config space access function found". With this bridge its probe
//! succeeds (it looks for a host bridge to trust the mechanism) and its scan of
//! bus 0 finds nothing else. Every other function reads as absent (all ones);
//! writes to the configuration space are ignored.

use log::Level;

use crate::bus::BusDevice;
use crate::ratelimit::log_ratelimited;

/// Offset of the CONFIG_ADDRESS register in the device's ports.
const ADDRESS: u64 = 0;
/// Offset of the CONFIG_DATA window.
const DATA: u64 = 4;
/// Number of ports: CONFIG_ADDRESS (4) and CONFIG_DATA (4).
pub const PORT_LEN: u64 = 8;
/// CONFIG_ADDRESS enable bit.
const ENABLE: u32 = 1 << 31;
/// The host bridge's identity: Red Hat's vendor id for virtual devices and its
/// host-bridge device id.
const VENDOR_ID: u16 = 0x1b36;
const DEVICE_ID: u16 = 0x0008;
/// Class code: bridge (0x06), host bridge (0x00), programming interface 0.
const CLASS_HOST_BRIDGE: [u8; 3] = [0x00, 0x00, 0x06];

/// The configuration address register and the host bridge's read-only header.
#[derive(Debug)]
pub struct PciHostBridge {
    address: u32,
    header: [u8; 64],
}

impl Default for PciHostBridge {
    fn default() -> Self {
        let mut header = [0u8; 64];
        header[0..2].copy_from_slice(&VENDOR_ID.to_le_bytes());
        header[2..4].copy_from_slice(&DEVICE_ID.to_le_bytes());
        // Revision 0, then the class code (bytes 9..12); header type 0 (one function).
        header[9..12].copy_from_slice(&CLASS_HOST_BRIDGE);
        PciHostBridge { address: 0, header }
    }
}

impl PciHostBridge {
    /// A bus with only the host bridge.
    pub fn new() -> Self {
        Self::default()
    }

    /// The byte of configuration space the address register and `offset` into the
    /// data window select, or `None` when no function is there.
    fn config_byte(&self, offset: u64) -> Option<u8> {
        if self.address & ENABLE == 0 {
            return None;
        }
        // Bus (23:16), device (15:11), function (10:8): only 00:00.0 exists.
        if self.address & 0x00ff_ff00 != 0 {
            return Some(0xff);
        }
        let register = usize::try_from((self.address & 0xfc) as u64 + offset).ok()?;
        Some(self.header.get(register).copied().unwrap_or(0))
    }
}

impl BusDevice for PciHostBridge {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match (offset, data.len()) {
            (ADDRESS, 4) => data.copy_from_slice(&self.address.to_le_bytes()),
            (DATA..=7, 1 | 2 | 4) if offset - DATA + data.len() as u64 <= 4 => {
                for (i, byte) in data.iter_mut().enumerate() {
                    *byte = self.config_byte(offset - DATA + i as u64).unwrap_or(0xff);
                }
            }
            _ => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match (offset, data) {
            (ADDRESS, &[a, b, c, d]) => self.address = u32::from_le_bytes([a, b, c, d]),
            // Configuration space is read-only; byte writes to 0xcf8..0xcfb select
            // the mechanism on old chipsets and mean nothing here.
            (ADDRESS..=7, _) => {}
            _ => log_ratelimited!(
                Level::Debug,
                "PCI configuration write at offset {offset:#x} of {} bytes ignored",
                data.len()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn select(bus: &mut PciHostBridge, address: u32) {
        bus.write(ADDRESS, &address.to_le_bytes());
    }

    fn read32(bus: &mut PciHostBridge, offset: u64) -> u32 {
        let mut data = [0u8; 4];
        bus.read(offset, &mut data);
        u32::from_le_bytes(data)
    }

    #[test]
    fn the_address_register_reads_back_what_was_written() {
        let mut bus = PciHostBridge::new();
        select(&mut bus, 0x8000_0000);
        assert_eq!(read32(&mut bus, ADDRESS), 0x8000_0000);
        // A byte write (the mechanism #2 probe) changes nothing.
        bus.write(3, &[0x01]);
        assert_eq!(read32(&mut bus, ADDRESS), 0x8000_0000);
    }

    #[test]
    fn function_00_0_is_a_host_bridge() {
        let mut bus = PciHostBridge::new();
        select(&mut bus, ENABLE);
        assert_eq!(read32(&mut bus, DATA), 0x0008_1b36);
        select(&mut bus, ENABLE | 0x08);
        assert_eq!(read32(&mut bus, DATA) >> 8, 0x06_0000, "class: host bridge");
        let mut word = [0u8; 2];
        select(&mut bus, ENABLE | 0x0c);
        bus.read(DATA + 2, &mut word);
        assert_eq!(word[0], 0, "header type 0, one function");
        select(&mut bus, ENABLE | 0xfc);
        assert_eq!(
            read32(&mut bus, DATA),
            0,
            "registers past the header read 0"
        );
    }

    #[test]
    fn every_other_function_and_disabled_accesses_read_all_ones() {
        let mut bus = PciHostBridge::new();
        for address in [ENABLE | 1 << 11, ENABLE | 1 << 8, ENABLE | 1 << 16, 0] {
            select(&mut bus, address);
            assert_eq!(read32(&mut bus, DATA), u32::MAX, "{address:#x}");
        }
    }

    #[test]
    fn odd_accesses_never_panic() {
        let mut bus = PciHostBridge::new();
        select(&mut bus, u32::MAX);
        for offset in 0..=9 {
            for len in [1usize, 2, 3, 4, 8] {
                let mut data = vec![0u8; len];
                bus.read(offset, &mut data);
                bus.write(offset, &data);
            }
        }
        bus.read(u64::MAX, &mut [0u8; 4]);
        bus.write(u64::MAX, &[0u8; 4]);
    }
}
