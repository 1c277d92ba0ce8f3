//! A virtio-mmio block driver written as [`Program`] operations, for hostile guests:
//! it sets a device up the way Linux does, and lets a test lay out any descriptor
//! table, avail ring or request by hand before notifying the device.

#![allow(dead_code)]

use crate::guest::Program;

/// Register offsets (virtio 1.2, 4.2.2).
pub mod reg {
    pub const MAGIC: u64 = 0x000;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    pub const CONFIG: u64 = 0x100;
}

/// Device status bits.
pub const ACKNOWLEDGE: u64 = 1;
pub const DRIVER: u64 = 2;
pub const DRIVER_OK: u64 = 4;
pub const FEATURES_OK: u64 = 8;
pub const NEEDS_RESET: u64 = 0x40;
pub const FAILED: u64 = 0x80;
/// The status of a running device.
pub const RUNNING: u64 = ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK;

/// Descriptor flags.
pub const NEXT: u16 = 1;
pub const WRITE: u16 = 2;
pub const INDIRECT: u16 = 4;

/// virtio-blk request types and status bytes.
pub const T_IN: u32 = 0;
pub const T_OUT: u32 = 1;
pub const S_OK: u64 = 0;
pub const S_IOERR: u64 = 1;
pub const S_UNSUPP: u64 = 2;

/// How many times the guest polls guest RAM for the device's answer (a few seconds
/// on a software hypervisor).
pub const TRIES: u32 = 3_000_000;
/// How many times the guest polls a register (each read is an exit: ~20 us on a
/// software hypervisor, so a few seconds).
pub const REG_TRIES: u32 = 200_000;

/// Where the first virtio-mmio window is (cabin's layout: one 4 KiB window per
/// device, in the order the devices are given).
pub const VIRTIO_MMIO_START: u64 = 0xd000_0000;

/// The 8-byte value a test disk holds at the start of `sector`.
pub fn sector_tag(sector: u64) -> u64 {
    0xc0de_0000_0000_0000 | sector
}

/// A test disk of `sectors` sectors, each starting with its [`sector_tag`].
pub fn disk_image(sectors: u64) -> Vec<u8> {
    let mut image = vec![0u8; sectors as usize * 512];
    for s in 0..sectors {
        let at = s as usize * 512;
        image[at..at + 8].copy_from_slice(&sector_tag(s).to_le_bytes());
    }
    image
}

/// One virtio-blk device as the guest drives it: its window, and 64 KiB of guest
/// RAM at `ram` for its rings, a request header, a status byte and data buffers.
pub struct Blk {
    pub name: &'static str,
    pub base: u64,
    pub ram: u64,
    pub size: u16,
    avail_idx: u16,
}

impl Blk {
    pub fn new(name: &'static str, slot: u64, ram: u64) -> Blk {
        Blk {
            name,
            base: VIRTIO_MMIO_START + slot * 0x1000,
            ram,
            size: 256,
            avail_idx: 0,
        }
    }

    pub fn desc_table(&self) -> u64 {
        self.ram
    }
    pub fn avail(&self) -> u64 {
        self.ram + 0x1000
    }
    pub fn used(&self) -> u64 {
        self.ram + 0x2000
    }
    pub fn header(&self) -> u64 {
        self.ram + 0x3000
    }
    pub fn status_byte(&self) -> u64 {
        self.ram + 0x3800
    }
    /// A spare page (indirect tables and such).
    pub fn scratch(&self) -> u64 {
        self.ram + 0x4000
    }
    /// 32 KiB of data buffers.
    pub fn data(&self) -> u64 {
        self.ram + 0x8000
    }

    /// Writes register `offset` (32 bits).
    pub fn reg(&self, p: &mut Program, offset: u64, value: u64) {
        p.write(self.base + offset, 4, value);
    }

    /// Prints a failure unless the Status register reads `value` under `mask`.
    pub fn expect_status(&self, p: &mut Program, mask: u64, value: u64, what: &str) {
        p.expect(
            self.base + reg::STATUS,
            4,
            mask,
            value,
            REG_TRIES,
            &format!(
                "FAIL {}: {what}: status & {mask:#x} is not {value:#x}\n",
                self.name
            ),
        );
    }

    /// Reset, feature negotiation (VERSION_1 only) and FEATURES_OK.
    pub fn negotiate(&mut self, p: &mut Program) {
        self.reg(p, reg::STATUS, 0);
        self.reg(p, reg::STATUS, ACKNOWLEDGE);
        self.reg(p, reg::STATUS, ACKNOWLEDGE | DRIVER);
        self.reg(p, reg::DRIVER_FEATURES_SEL, 1);
        self.reg(p, reg::DRIVER_FEATURES, 1);
        self.reg(p, reg::DRIVER_FEATURES_SEL, 0);
        self.reg(p, reg::DRIVER_FEATURES, 0);
        self.reg(p, reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
        self.expect_status(
            p,
            0xff,
            ACKNOWLEDGE | DRIVER | FEATURES_OK,
            "after FEATURES_OK",
        );
    }

    /// Writes queue 0's size and ring addresses (no checks, no QueueReady).
    pub fn queue_config(&self, p: &mut Program, size: u64, desc: u64, avail: u64, used: u64) {
        self.reg(p, reg::QUEUE_SEL, 0);
        self.reg(p, reg::QUEUE_NUM, size);
        for (low, addr) in [
            (reg::QUEUE_DESC_LOW, desc),
            (reg::QUEUE_DRIVER_LOW, avail),
            (reg::QUEUE_DEVICE_LOW, used),
        ] {
            self.reg(p, low, addr & 0xffff_ffff);
            self.reg(p, low + 4, addr >> 32);
        }
    }

    /// The whole initialization with good rings; checks the device runs.
    pub fn init(&mut self, p: &mut Program) {
        self.negotiate(p);
        self.queue_config(
            p,
            u64::from(self.size),
            self.desc_table(),
            self.avail(),
            self.used(),
        );
        p.write(self.avail(), 8, 0).write(self.used(), 8, 0);
        self.avail_idx = 0;
        self.reg(p, reg::QUEUE_READY, 1);
        self.reg(p, reg::STATUS, RUNNING);
        self.expect_status(p, 0xff, RUNNING, "after DRIVER_OK");
    }

    /// Descriptor `i`: addr, len, flags, next.
    pub fn desc(&self, p: &mut Program, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        desc_at(
            p,
            self.desc_table() + 16 * u64::from(i),
            addr,
            len,
            flags,
            next,
        );
    }

    /// The request header: type and sector.
    pub fn header_for(&self, p: &mut Program, request_type: u32, sector: u64) {
        p.write(self.header(), 8, u64::from(request_type));
        p.write(self.header() + 8, 8, sector);
    }

    /// Puts `head` in the avail ring, publishes it, and notifies the device.
    pub fn submit(&mut self, p: &mut Program, head: u16) {
        let slot = u64::from(self.avail_idx % self.size);
        p.write(self.avail() + 4 + 2 * slot, 2, u64::from(head));
        self.avail_idx = self.avail_idx.wrapping_add(1);
        p.write(self.avail() + 2, 2, u64::from(self.avail_idx));
        self.notify(p);
    }

    /// Sets the avail index to `idx` outright and notifies.
    pub fn publish_index(&mut self, p: &mut Program, idx: u16) {
        self.avail_idx = idx;
        p.write(self.avail() + 2, 2, u64::from(idx));
        self.notify(p);
    }

    pub fn notify(&self, p: &mut Program) {
        self.reg(p, reg::QUEUE_NOTIFY, 0);
    }

    /// Lays out and submits a good one-sector read of `sector` (descriptors 0-2).
    pub fn read_request(&mut self, p: &mut Program, sector: u64) {
        self.header_for(p, T_IN, sector);
        p.write(self.status_byte(), 1, 0xff)
            .write(self.data(), 8, 0);
        self.desc(p, 0, self.header(), 16, NEXT, 1);
        self.desc(p, 1, self.data(), 512, NEXT | WRITE, 2);
        self.desc(p, 2, self.status_byte(), 1, WRITE, 0);
        self.submit(p, 0);
    }

    /// Prints a failure unless the device has used every submitted chain.
    pub fn expect_used(&self, p: &mut Program, what: &str) {
        p.expect(
            self.used() + 2,
            2,
            0xffff,
            u64::from(self.avail_idx),
            TRIES,
            &format!(
                "FAIL {}: {what}: used index is not {}\n",
                self.name, self.avail_idx
            ),
        );
    }

    /// Prints a failure unless the status byte is `value`.
    pub fn expect_status_byte(&self, p: &mut Program, value: u64, what: &str) {
        p.expect(
            self.status_byte(),
            1,
            0xff,
            value,
            1,
            &format!(
                "FAIL {}: {what}: request status is not {value}\n",
                self.name
            ),
        );
    }

    /// A good read of `sector` that must complete with its data.
    pub fn good_read(&mut self, p: &mut Program, sector: u64, what: &str) {
        self.read_request(p, sector);
        self.expect_used(p, what);
        self.expect_status_byte(p, S_OK, what);
        p.expect(
            self.data(),
            8,
            u64::MAX,
            sector_tag(sector),
            1,
            &format!(
                "FAIL {}: {what}: wrong data for sector {sector}\n",
                self.name
            ),
        );
    }
}

/// A descriptor at guest address `at`.
pub fn desc_at(p: &mut Program, at: u64, addr: u64, len: u32, flags: u16, next: u16) {
    p.write(at, 8, addr);
    p.write(
        at + 8,
        8,
        u64::from(len) | (u64::from(flags) << 32) | (u64::from(next) << 48),
    );
}

/// One split virtqueue a test drives by hand: 16 KiB of guest RAM at `ram` (the
/// descriptor table, the avail ring, the used ring, then a data page).
pub struct Vq {
    pub index: u16,
    pub ram: u64,
    pub size: u16,
    pub avail_idx: u16,
}

impl Vq {
    pub fn new(index: u16, ram: u64) -> Vq {
        Vq {
            index,
            ram,
            size: 256,
            avail_idx: 0,
        }
    }
    pub fn avail(&self) -> u64 {
        self.ram + 0x1000
    }
    pub fn used(&self) -> u64 {
        self.ram + 0x2000
    }
    pub fn data(&self) -> u64 {
        self.ram + 0x3000
    }

    /// Descriptor `i`: addr, len, flags, next.
    pub fn desc(&self, p: &mut Program, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        desc_at(p, self.ram + 16 * u64::from(i), addr, len, flags, next);
    }

    /// Puts `head` in the avail ring, publishes it, and notifies the device at `base`.
    pub fn submit(&mut self, p: &mut Program, base: u64, head: u16) {
        let slot = u64::from(self.avail_idx % self.size);
        p.write(self.avail() + 4 + 2 * slot, 2, u64::from(head));
        self.avail_idx = self.avail_idx.wrapping_add(1);
        p.write(self.avail() + 2, 2, u64::from(self.avail_idx));
        p.write(base + reg::QUEUE_NOTIFY, 4, u64::from(self.index));
    }

    /// Prints a failure unless the device has used every submitted chain.
    pub fn expect_used(&self, p: &mut Program, what: &str) {
        p.expect(
            self.used() + 2,
            2,
            0xffff,
            u64::from(self.avail_idx),
            TRIES,
            &format!(
                "FAIL queue {}: {what}: used index is not {}\n",
                self.index, self.avail_idx
            ),
        );
    }
}

/// Resets the device at `base` and sets it up with `queues` (features: VERSION_1
/// only); prints a failure unless it then runs.
pub fn init_device(p: &mut Program, base: u64, queues: &mut [Vq]) {
    let w = |p: &mut Program, offset: u64, value: u64| {
        p.write(base + offset, 4, value);
    };
    w(p, reg::STATUS, 0);
    w(p, reg::STATUS, ACKNOWLEDGE);
    w(p, reg::STATUS, ACKNOWLEDGE | DRIVER);
    w(p, reg::DRIVER_FEATURES_SEL, 1);
    w(p, reg::DRIVER_FEATURES, 1);
    w(p, reg::DRIVER_FEATURES_SEL, 0);
    w(p, reg::DRIVER_FEATURES, 0);
    w(p, reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
    for q in queues.iter_mut() {
        w(p, reg::QUEUE_SEL, u64::from(q.index));
        w(p, reg::QUEUE_NUM, u64::from(q.size));
        for (low, addr) in [
            (reg::QUEUE_DESC_LOW, q.ram),
            (reg::QUEUE_DRIVER_LOW, q.avail()),
            (reg::QUEUE_DEVICE_LOW, q.used()),
        ] {
            w(p, low, addr & 0xffff_ffff);
            w(p, low + 4, addr >> 32);
        }
        p.write(q.avail(), 8, 0).write(q.used(), 8, 0);
        q.avail_idx = 0;
        w(p, reg::QUEUE_READY, 1);
    }
    w(p, reg::STATUS, RUNNING);
    p.expect(
        base + reg::STATUS,
        4,
        0xff,
        RUNNING,
        REG_TRIES,
        &format!("FAIL device at {base:#x} does not run\n"),
    );
}
