//! The test bench shared by the block device tests: a temp-file disk, guest
//! memory and the driver's side of the queue (virtio-queue's mock).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::GuestMemoryMmap;
use virtio_bindings::virtio_blk;
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{Address, Bytes, GuestAddress, Le32, Le64};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::tempfile::TempFile;

use super::{Block, BlockConfig, QUEUE_SIZE, SECTOR_SIZE};
use crate::virtio::{ActivateParams, IrqTrigger, VirtioDevice};

/// Guest memory: 16 MiB at 0. The mock queue sits at 0; buffers from 1 MiB.
pub(crate) const MEM_SIZE: usize = 0x100_0000;
pub(crate) const DISK_SECTORS: u64 = 16;
/// Each request slot gets its own header, data and status buffers.
pub(crate) const HEADER_BASE: u64 = 0x10_0000;
pub(crate) const DATA_BASE: u64 = 0x20_0000;
pub(crate) const STATUS_BASE: u64 = 0x30_0000;
pub(crate) const SLOT: u64 = 0x1_0000;

pub(crate) const T_IN: u32 = virtio_blk::VIRTIO_BLK_T_IN;
pub(crate) const T_OUT: u32 = virtio_blk::VIRTIO_BLK_T_OUT;
pub(crate) const T_FLUSH: u32 = virtio_blk::VIRTIO_BLK_T_FLUSH;
pub(crate) const T_GET_ID: u32 = virtio_blk::VIRTIO_BLK_T_GET_ID;

pub(crate) fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap()
}

pub(crate) fn header(slot: u64) -> u64 {
    HEADER_BASE + slot * SLOT
}

pub(crate) fn data(slot: u64) -> u64 {
    DATA_BASE + slot * SLOT
}

pub(crate) fn status(slot: u64) -> u64 {
    STATUS_BASE + slot * SLOT
}

/// A temp file of `sectors` sectors; byte i of sector s is (s * 7 + i) as u8.
pub(crate) fn disk_file(sectors: u64) -> TempFile {
    let tmp = TempFile::new().unwrap();
    let bytes: Vec<u8> = (0..sectors * SECTOR_SIZE)
        .map(|i| ((i / SECTOR_SIZE) * 7 + i % SECTOR_SIZE) as u8)
        .collect();
    tmp.as_file().write_all_at(&bytes, 0).unwrap();
    tmp
}

pub(crate) fn config(path: &Path, read_only: bool, id: Option<&str>) -> BlockConfig {
    BlockConfig {
        path: path.to_path_buf(),
        read_only,
        id: id.map(str::to_owned),
        ..BlockConfig::default()
    }
}

pub(crate) fn irq() -> IrqTrigger {
    IrqTrigger::new(EventFd::new(EFD_NONBLOCK).unwrap())
}

pub(crate) fn file_bytes(file: &File, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, offset).unwrap();
    buf
}

/// (address, length, device-writable)
pub(crate) type Buf = (u64, u32, bool);

/// An activated device over a [`DISK_SECTORS`]-sector temp file, with the driver's
/// side of its queue.
pub(crate) struct Env<'a> {
    pub(crate) mem: &'a GuestMemoryMmap,
    pub(crate) vq: MockSplitQueue<'a, GuestMemoryMmap>,
    pub(crate) tmp: TempFile,
    pub(crate) block: Block,
    pub(crate) irq: IrqTrigger,
}

impl<'a> Env<'a> {
    pub(crate) fn new(mem: &'a GuestMemoryMmap, read_only: bool, id: Option<&str>) -> Env<'a> {
        Env::with_config(mem, |cfg| {
            cfg.read_only = read_only;
            cfg.id = id.map(str::to_owned);
        })
    }

    /// Like [`Env::new`] for a read-write disk, with `adjust` applied to its config.
    pub(crate) fn with_config(
        mem: &'a GuestMemoryMmap,
        adjust: impl FnOnce(&mut BlockConfig),
    ) -> Env<'a> {
        let vq = MockSplitQueue::new(mem, QUEUE_SIZE);
        let tmp = disk_file(DISK_SECTORS);
        let mut cfg = config(tmp.as_path(), false, None);
        adjust(&mut cfg);
        let mut block = Block::new(&cfg).unwrap();
        let irq = irq();
        block
            .activate(ActivateParams {
                mem: mem.clone(),
                queues: vec![vq.create_queue::<Queue>().unwrap()],
                acked_features: block.avail_features(),
                irq: irq.clone(),
            })
            .unwrap();
        Env {
            mem,
            vq,
            tmp,
            block,
            irq,
        }
    }

    /// Puts a chain at descriptor indices `first..` and makes it available.
    pub(crate) fn add_chain(&self, first: u16, bufs: &[Buf]) {
        let descs: Vec<RawDescriptor> = bufs
            .iter()
            .enumerate()
            .map(|(i, &(addr, len, writable))| {
                let last = i + 1 == bufs.len();
                let mut flags = if writable {
                    VRING_DESC_F_WRITE as u16
                } else {
                    0
                };
                if !last {
                    flags |= VRING_DESC_F_NEXT as u16;
                }
                let next = if last { 0 } else { first + i as u16 + 1 };
                RawDescriptor::from(Descriptor::new(addr, len, flags, next))
            })
            .collect();
        self.vq.add_desc_chains(&descs, first).unwrap();
    }

    /// Writes the request header of `slot`, and presets its status byte to 0xff.
    pub(crate) fn write_header(&self, slot: u64, request_type: u32, sector: u64) {
        let addr = GuestAddress(header(slot));
        self.mem.write_obj(Le32::from(request_type), addr).unwrap();
        self.mem
            .write_obj(Le64::from(sector), addr.unchecked_add(8))
            .unwrap();
        self.mem
            .write_obj(0xffu8, GuestAddress(status(slot)))
            .unwrap();
    }

    /// A well-formed chain in `slot` (descriptors from slot * 8): header, one data
    /// buffer of `len` bytes (none if 0), status.
    pub(crate) fn add_request(&self, slot: u64, request_type: u32, sector: u64, len: u32) {
        self.write_header(slot, request_type, sector);
        let mut bufs = vec![(header(slot), 16, false)];
        if len > 0 {
            bufs.push((data(slot), len, request_type != T_OUT));
        }
        bufs.push((status(slot), 1, true));
        self.add_chain((slot * 8) as u16, &bufs);
    }

    pub(crate) fn status(&self, slot: u64) -> u8 {
        self.mem.read_obj(GuestAddress(status(slot))).unwrap()
    }

    /// (head index, len) of used ring entry `i`.
    pub(crate) fn used(&self, i: usize) -> (u32, u32) {
        let elem = self.vq.used().ring().ref_at(i).unwrap().load();
        (elem.id(), elem.len())
    }

    pub(crate) fn used_idx(&self) -> u16 {
        self.vq.used().idx().load()
    }

    pub(crate) fn guest(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        self.mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
        buf
    }

    pub(crate) fn fill_guest(&self, addr: u64, bytes: &[u8]) {
        self.mem.write_slice(bytes, GuestAddress(addr)).unwrap();
    }

    pub(crate) fn file(&self, offset: u64, len: usize) -> Vec<u8> {
        file_bytes(self.tmp.as_file(), offset, len)
    }
}
