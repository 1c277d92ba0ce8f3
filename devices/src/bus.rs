//! The I/O bus: guest address ranges mapped to devices.
//!
//! The VMM keeps one [`Bus`] for port I/O and one for MMIO. Ranges are fixed
//! before the vCPUs start, so lookups need no bus-wide lock: the map is only
//! read, and each device sits behind its own mutex, taken just for the access.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use log::Level;

use crate::ratelimit::log_ratelimited;

/// Errors from building a [`Bus`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The range to insert has length 0.
    #[error("Bus range at {base:#x} has zero length")]
    ZeroLength {
        /// Start of the rejected range.
        base: u64,
    },
    /// `base + len` does not fit in a `u64`.
    #[error("Bus range at {base:#x} with length {len:#x} overflows the address space")]
    Overflow {
        /// Start of the rejected range.
        base: u64,
        /// Length of the rejected range.
        len: u64,
    },
    /// The range shares at least one address with a range already on the bus.
    #[error("Bus range at {base:#x} with length {len:#x} overlaps a device already on the bus")]
    Overlap {
        /// Start of the rejected range.
        base: u64,
        /// Length of the rejected range.
        len: u64,
    },
}

/// A device that answers guest reads and writes within its range.
pub trait BusDevice: Send {
    /// Handles a guest read of `data.len()` bytes.
    ///
    /// `offset` is relative to the start of the device's range. The bus only
    /// calls this when the whole access lies inside the range, but the width
    /// (`data.len()`, possibly 0) is whatever the guest used: implementations
    /// must not panic on any offset or width.
    fn read(&mut self, offset: u64, data: &mut [u8]);

    /// Handles a guest write of `data`.
    ///
    /// `offset` is relative to the start of the device's range; the same
    /// guarantees and obligations as for [`BusDevice::read`] apply.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// One device's slot on the bus.
#[derive(Clone)]
struct Entry {
    len: u64,
    device: Arc<Mutex<dyn BusDevice>>,
}

/// Address ranges mapped to devices, without overlaps.
///
/// Cloning is cheap and shares the devices.
#[derive(Clone, Default)]
pub struct Bus {
    /// Keyed by the start of each range.
    devices: BTreeMap<u64, Entry>,
}

impl fmt::Debug for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(
                self.devices
                    .iter()
                    .map(|(base, entry)| format!("{base:#x}+{:#x}", entry.len)),
            )
            .finish()
    }
}

impl Bus {
    /// Creates an empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps `device` at `base..base + len`.
    ///
    /// Fails if the range is empty, runs past the end of the address space, or
    /// shares any address with a range already on the bus. Adjacent ranges are
    /// fine.
    pub fn insert(
        &mut self,
        device: Arc<Mutex<dyn BusDevice>>,
        base: u64,
        len: u64,
    ) -> Result<(), Error> {
        if len == 0 {
            return Err(Error::ZeroLength { base });
        }
        let end = base.checked_add(len).ok_or(Error::Overflow { base, len })?;
        // Ranges on the bus are disjoint and sorted, so the one starting last
        // before `end` is the only candidate that can reach into the new range.
        if let Some((&other_base, other)) = self.devices.range(..end).next_back() {
            // `other` was inserted through this function, so its end fits.
            if other_base + other.len > base {
                return Err(Error::Overlap { base, len });
            }
        }
        self.devices.insert(base, Entry { len, device });
        Ok(())
    }

    /// Delivers a guest read at `addr` to the device covering it.
    ///
    /// Returns `false`, leaving `data` untouched, when no device covers all of
    /// `addr..addr + data.len()`; the caller decides what the guest sees
    /// (all ones, as on real buses).
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.resolve(addr, data.len()) {
            Some((offset, device)) => {
                lock(device, addr).read(offset, data);
                true
            }
            None => false,
        }
    }

    /// Delivers a guest write at `addr` to the device covering it.
    ///
    /// Returns `false` when no device covers all of `addr..addr + data.len()`.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.resolve(addr, data.len()) {
            Some((offset, device)) => {
                lock(device, addr).write(offset, data);
                true
            }
            None => false,
        }
    }

    /// Finds the device whose range holds the whole access, and the offset of
    /// `addr` within that range.
    fn resolve(&self, addr: u64, width: usize) -> Option<(u64, &Arc<Mutex<dyn BusDevice>>)> {
        let (&base, entry) = self.devices.range(..=addr).next_back()?;
        let offset = addr - base;
        if offset >= entry.len {
            return None;
        }
        let fits = u64::try_from(width)
            .ok()
            .and_then(|width| offset.checked_add(width))
            .is_some_and(|end| end <= entry.len);
        if !fits {
            log_ratelimited!(
                Level::Debug,
                "Bus access at {addr:#x} of {width} bytes runs past the device at {base:#x}+{:#x}",
                entry.len
            );
            return None;
        }
        Some((offset, &entry.device))
    }
}

/// Locks a device, recovering from poisoning.
///
/// A panic on another vCPU while it held this device must not take down every
/// vCPU that touches the device afterwards; the device state is whatever that
/// access left behind, which is no worse than what a hostile guest can cause.
fn lock(device: &Mutex<dyn BusDevice>, addr: u64) -> MutexGuard<'_, dyn BusDevice + 'static> {
    match device.lock() {
        Ok(guard) => guard,
        Err(poisoned) => {
            log_ratelimited!(
                Level::Warn,
                "Device at {addr:#x} was poisoned by an earlier panic; using it anyway"
            );
            poisoned.into_inner()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the last access and answers reads with `offset + i` per byte.
    #[derive(Default)]
    struct Recorder {
        last_write: Option<(u64, Vec<u8>)>,
        reads: usize,
    }

    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            self.reads += 1;
            for (i, byte) in data.iter_mut().enumerate() {
                *byte = (offset as u8).wrapping_add(i as u8);
            }
        }

        fn write(&mut self, offset: u64, data: &[u8]) {
            self.last_write = Some((offset, data.to_vec()));
        }
    }

    struct Panicker;

    impl BusDevice for Panicker {
        fn read(&mut self, _offset: u64, _data: &mut [u8]) {
            panic!("device bug");
        }

        fn write(&mut self, _offset: u64, _data: &[u8]) {}
    }

    fn recorder() -> Arc<Mutex<Recorder>> {
        Arc::new(Mutex::new(Recorder::default()))
    }

    #[test]
    fn insert_disjoint_ranges_ok() {
        let mut bus = Bus::new();
        assert_eq!(bus.insert(recorder(), 0x100, 0x10), Ok(()));
        assert_eq!(bus.insert(recorder(), 0x1000, 0x10), Ok(()));
        assert_eq!(bus.insert(recorder(), 0x0, 0x10), Ok(()));
    }

    #[test]
    fn insert_adjacent_ranges_ok() {
        let mut bus = Bus::new();
        bus.insert(recorder(), 0x100, 0x10).unwrap();
        assert_eq!(bus.insert(recorder(), 0x110, 0x10), Ok(()));
        assert_eq!(bus.insert(recorder(), 0xf0, 0x10), Ok(()));
    }

    #[test]
    fn insert_overlapping_ranges_rejected() {
        let mut bus = Bus::new();
        bus.insert(recorder(), 0x100, 0x10).unwrap();
        let cases = [
            (0x100, 0x10), // identical
            (0xff, 0x2),   // covers the first byte
            (0x10f, 0x10), // covers the last byte
            (0x104, 0x1),  // inside
            (0x0, 0x1000), // encloses
        ];
        for (base, len) in cases {
            assert_eq!(
                bus.insert(recorder(), base, len),
                Err(Error::Overlap { base, len }),
                "{base:#x}+{len:#x}"
            );
        }
    }

    #[test]
    fn insert_zero_length_rejected() {
        let mut bus = Bus::new();
        assert_eq!(
            bus.insert(recorder(), 0x100, 0),
            Err(Error::ZeroLength { base: 0x100 })
        );
    }

    #[test]
    fn insert_end_past_address_space_rejected() {
        let mut bus = Bus::new();
        assert_eq!(
            bus.insert(recorder(), u64::MAX, 1),
            Err(Error::Overflow {
                base: u64::MAX,
                len: 1
            })
        );
        assert_eq!(
            bus.insert(recorder(), 1, u64::MAX),
            Err(Error::Overflow {
                base: 1,
                len: u64::MAX
            })
        );
    }

    #[test]
    fn insert_range_ending_at_top_of_address_space_ok() {
        let mut bus = Bus::new();
        assert_eq!(bus.insert(recorder(), u64::MAX - 1, 1), Ok(()));
        let mut data = [0u8; 1];
        assert!(bus.read(u64::MAX - 1, &mut data));
        assert!(!bus.read(u64::MAX, &mut data));
    }

    #[test]
    fn read_first_and_last_byte_delivered_with_offset() {
        let mut bus = Bus::new();
        let dev = recorder();
        bus.insert(dev.clone(), 0x3f8, 8).unwrap();
        let mut data = [0u8; 1];

        assert!(bus.read(0x3f8, &mut data));
        assert_eq!(data, [0]);
        assert!(bus.read(0x3ff, &mut data));
        assert_eq!(data, [7]);
        assert_eq!(dev.lock().unwrap().reads, 2);
    }

    #[test]
    fn write_inside_range_delivered_with_offset() {
        let mut bus = Bus::new();
        let dev = recorder();
        bus.insert(dev.clone(), 0xd000_0000, 0x1000).unwrap();

        assert!(bus.write(0xd000_0070, &[1, 2, 3, 4]));

        assert_eq!(
            dev.lock().unwrap().last_write,
            Some((0x70, vec![1, 2, 3, 4]))
        );
    }

    #[test]
    fn access_outside_every_range_unhandled() {
        let mut bus = Bus::new();
        let dev = recorder();
        bus.insert(dev.clone(), 0x100, 0x10).unwrap();
        let mut data = [0xaau8; 2];

        assert!(!bus.read(0xff, &mut data));
        assert!(!bus.read(0x110, &mut data));
        assert!(!bus.read(0, &mut data));
        assert!(!bus.read(u64::MAX, &mut data));
        assert!(!bus.write(0x110, &data));

        assert_eq!(data, [0xaa, 0xaa], "unhandled read must not touch data");
        assert_eq!(dev.lock().unwrap().reads, 0);
        assert!(dev.lock().unwrap().last_write.is_none());
    }

    #[test]
    fn access_on_empty_bus_unhandled() {
        let bus = Bus::new();
        let mut data = [0u8; 4];
        assert!(!bus.read(0x60, &mut data));
        assert!(!bus.write(0x60, &data));
    }

    #[test]
    fn access_straddling_range_end_unhandled() {
        let mut bus = Bus::new();
        let dev = recorder();
        bus.insert(dev.clone(), 0x100, 0x10).unwrap();
        bus.insert(recorder(), 0x110, 0x10).unwrap();
        let mut data = [0u8; 4];

        assert!(!bus.read(0x10e, &mut data));
        assert!(!bus.write(0x10d, &data));

        assert_eq!(dev.lock().unwrap().reads, 0);
        assert!(dev.lock().unwrap().last_write.is_none());
    }

    #[test]
    fn access_ending_exactly_at_range_end_delivered() {
        let mut bus = Bus::new();
        bus.insert(recorder(), 0x100, 0x10).unwrap();
        let mut data = [0u8; 4];
        assert!(bus.read(0x10c, &mut data));
        assert_eq!(data, [0xc, 0xd, 0xe, 0xf]);
    }

    #[test]
    fn access_of_huge_width_near_top_unhandled() {
        let mut bus = Bus::new();
        bus.insert(recorder(), u64::MAX - 8, 8).unwrap();
        let mut data = [0u8; 16];
        assert!(!bus.read(u64::MAX - 4, &mut data));
    }

    #[test]
    fn access_of_zero_width_inside_range_delivered() {
        let mut bus = Bus::new();
        let dev = recorder();
        bus.insert(dev.clone(), 0x100, 0x10).unwrap();
        assert!(bus.read(0x10f, &mut []));
        assert!(!bus.read(0x110, &mut []));
        assert_eq!(dev.lock().unwrap().reads, 1);
    }

    #[test]
    fn access_to_poisoned_device_still_delivered() {
        let mut bus = Bus::new();
        let dev: Arc<Mutex<dyn BusDevice>> = Arc::new(Mutex::new(Panicker));
        bus.insert(dev.clone(), 0x100, 1).unwrap();
        let poisoner = bus.clone();
        let joined = std::thread::spawn(move || {
            let mut data = [0u8; 1];
            poisoner.read(0x100, &mut data);
        })
        .join();
        assert!(joined.is_err());
        assert!(dev.is_poisoned());

        assert!(bus.write(0x100, &[1]));
    }
}
