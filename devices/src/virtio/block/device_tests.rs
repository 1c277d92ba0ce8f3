//! Tests for [`super`] (`device.rs`), kept apart to keep that file short.

use super::*;
use std::path::Path;

use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress};

use crate::virtio::block::test_env::*;
use crate::virtio::block::{
    VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP,
};

#[test]
fn new_missing_file_error_names_path() {
    let cfg = config(Path::new("/nonexistent/cabin-disk.img"), false, None);

    let err = Block::new(&cfg).unwrap_err();

    assert!(matches!(err, BlockError::Open { .. }));
    assert!(
        err.to_string().contains("/nonexistent/cabin-disk.img"),
        "{err}"
    );
}

#[test]
fn new_directory_not_a_disk_error() {
    let dir = std::env::temp_dir();

    let err = Block::new(&config(&dir, true, None)).unwrap_err();

    assert!(matches!(err, BlockError::NotADisk { .. }), "{err}");
}

#[test]
fn new_unaligned_size_rounded_down() {
    let tmp = disk_file(3);
    tmp.as_file().set_len(3 * SECTOR_SIZE + 100).unwrap();

    let block = Block::new(&config(tmp.as_path(), false, None)).unwrap();

    assert_eq!(block.num_sectors(), 3);
}

#[test]
fn new_id_too_long_error() {
    let tmp = disk_file(1);
    let id = "x".repeat(VIRTIO_BLK_ID_BYTES + 1);

    let err = Block::new(&config(tmp.as_path(), false, Some(&id))).unwrap_err();

    assert!(
        matches!(err, BlockError::IdTooLong { len: 21, .. }),
        "{err}"
    );
}

#[test]
fn disk_id_configured_zero_padded() {
    let tmp = disk_file(1);

    let block = Block::new(&config(tmp.as_path(), false, Some("rootfs"))).unwrap();

    let mut expected = [0u8; VIRTIO_BLK_ID_BYTES];
    expected[..6].copy_from_slice(b"rootfs");
    assert_eq!(block.disk_id(), expected);
}

#[test]
fn disk_id_full_length_accepted() {
    let tmp = disk_file(1);
    let id = "y".repeat(VIRTIO_BLK_ID_BYTES);

    let block = Block::new(&config(tmp.as_path(), false, Some(&id))).unwrap();

    assert_eq!(block.disk_id(), [b'y'; VIRTIO_BLK_ID_BYTES]);
}

#[test]
fn disk_id_default_stable_per_file() {
    let a = disk_file(1);
    let b = disk_file(1);

    let first = Block::new(&config(a.as_path(), false, None))
        .unwrap()
        .disk_id();
    let again = Block::new(&config(a.as_path(), true, None))
        .unwrap()
        .disk_id();
    let other = Block::new(&config(b.as_path(), false, None))
        .unwrap()
        .disk_id();

    assert_eq!(first, again);
    assert_ne!(first, other);
    assert_ne!(first, [0u8; VIRTIO_BLK_ID_BYTES]);
    assert!(first.iter().all(|&c| c == 0 || c.is_ascii_graphic()));
}

#[test]
fn default_id_long_keeps_tail() {
    let tmp = disk_file(1);
    let meta = tmp.as_file().metadata().unwrap();

    let id = default_id(&meta);

    let full = format!("{:x}-{:x}", meta.dev(), meta.ino());
    let start = full.len().saturating_sub(VIRTIO_BLK_ID_BYTES);
    assert_eq!(&id[..full.len() - start], &full.as_bytes()[start..]);
}

#[test]
fn device_type_block_one_queue() {
    let tmp = disk_file(1);

    let block = Block::new(&config(tmp.as_path(), false, None)).unwrap();

    assert_eq!(block.device_type(), device_type::BLOCK);
    assert_eq!(block.queue_max_sizes(), &[256]);
}

#[test]
fn avail_features_read_write_no_ro() {
    let tmp = disk_file(1);

    let features = Block::new(&config(tmp.as_path(), false, None))
        .unwrap()
        .avail_features();

    // BLK_SIZE, SEG_MAX; FLUSH only with the writeback cache.
    let expected = VIRTIO_F_VERSION_1 | (1 << 6) | (1 << 2);
    assert_eq!(features, expected);
}

#[test]
fn avail_features_read_only_ro_offered() {
    let tmp = disk_file(1);

    let features = Block::new(&config(tmp.as_path(), true, None))
        .unwrap()
        .avail_features();

    assert_ne!(features & (1 << virtio_blk::VIRTIO_BLK_F_RO), 0);
    assert_ne!(features & VIRTIO_F_VERSION_1, 0);
}

#[test]
fn read_config_fields_capacity_seg_max_blk_size() {
    let tmp = disk_file(DISK_SECTORS);
    let block = Block::new(&config(tmp.as_path(), false, None)).unwrap();
    let mut capacity = [0u8; 8];
    let mut seg_max = [0u8; 4];
    let mut blk_size = [0u8; 4];
    let mut size_max = [0xaau8; 4];

    block.read_config(0, &mut capacity);
    block.read_config(12, &mut seg_max);
    block.read_config(20, &mut blk_size);
    block.read_config(8, &mut size_max);

    assert_eq!(u64::from_le_bytes(capacity), DISK_SECTORS);
    assert_eq!(u32::from_le_bytes(seg_max), 254);
    assert_eq!(u32::from_le_bytes(blk_size), 512);
    assert_eq!(size_max, [0; 4]);
}

#[test]
fn read_config_byte_access_little_endian() {
    let tmp = disk_file(0x1_02);
    let block = Block::new(&config(tmp.as_path(), false, None)).unwrap();
    let (mut lo, mut hi) = ([0u8; 1], [0u8; 1]);

    block.read_config(0, &mut lo);
    block.read_config(1, &mut hi);

    assert_eq!((lo[0], hi[0]), (0x02, 0x01));
}

#[test]
fn read_config_past_end_zero_filled() {
    let tmp = disk_file(1);
    let block = Block::new(&config(tmp.as_path(), false, None)).unwrap();
    let mut straddle = [0xaau8; 8];
    let mut beyond = [0xaau8; 4];
    let mut huge = [0xaau8; 4];

    block.read_config(20, &mut straddle);
    block.read_config(0x100, &mut beyond);
    block.read_config(u64::MAX, &mut huge);

    assert_eq!(straddle, [0, 2, 0, 0, 0, 0, 0, 0]);
    assert_eq!(beyond, [0; 4]);
    assert_eq!(huge, [0; 4]);
}

#[test]
fn write_config_ignored() {
    let tmp = disk_file(DISK_SECTORS);
    let mut block = Block::new(&config(tmp.as_path(), false, None)).unwrap();
    let mut capacity = [0u8; 8];

    block.write_config(0, &[1, 2, 3, 4, 5, 6, 7, 8]);
    block.read_config(0, &mut capacity);

    assert_eq!(u64::from_le_bytes(capacity), DISK_SECTORS);
}

#[test]
fn activate_two_queues_error() {
    let mem = memory();
    let vq = MockSplitQueue::new(&mem, QUEUE_SIZE);
    let tmp = disk_file(1);
    let mut block = Block::new(&config(tmp.as_path(), false, None)).unwrap();
    let queues = vec![
        vq.create_queue::<Queue>().unwrap(),
        vq.create_queue().unwrap(),
    ];

    let err = block
        .activate(ActivateParams {
            mem: mem.clone(),
            queues,
            acked_features: 0,
            irq: irq(),
        })
        .unwrap_err();

    assert!(matches!(
        err,
        ActivateError::QueueCount {
            expected: 1,
            got: 2
        }
    ));
}

#[test]
fn activate_queue_not_ready_error() {
    let mem = memory();
    let vq = MockSplitQueue::new(&mem, QUEUE_SIZE);
    let tmp = disk_file(1);
    let mut block = Block::new(&config(tmp.as_path(), false, None)).unwrap();
    let mut queue: Queue = vq.create_queue().unwrap();
    queue.set_ready(false);

    let err = block
        .activate(ActivateParams {
            mem: mem.clone(),
            queues: vec![queue],
            acked_features: 0,
            irq: irq(),
        })
        .unwrap_err();

    assert!(matches!(err, ActivateError::QueueNotReady(0)));
}

#[test]
fn process_queue_read_file_data_in_guest() {
    let mem = memory();
    let mut env = Env::new(&mem, false, None);
    env.add_request(0, T_IN, 3, 1024);

    env.block.process_queue(0);

    assert_eq!(env.status(0), VIRTIO_BLK_S_OK);
    assert_eq!(env.used_idx(), 1);
    assert_eq!(env.used(0), (0, 1025));
    assert_eq!(env.guest(data(0), 1024), env.file(3 * 512, 1024));
    assert_ne!(env.irq.status() & VIRTIO_MMIO_INT_VRING, 0);
}

#[test]
fn process_queue_write_data_in_file() {
    let mem = memory();
    let mut env = Env::new(&mem, false, None);
    let pattern: Vec<u8> = (0..1536u32).map(|i| (i % 251) as u8).collect();
    env.fill_guest(data(0), &pattern);
    env.add_request(0, T_OUT, 5, 1536);

    env.block.process_queue(0);

    assert_eq!(env.status(0), VIRTIO_BLK_S_OK);
    assert_eq!(env.used(0), (0, 1));
    assert_eq!(env.file(5 * 512, 1536), pattern);
    // The sector before is untouched.
    let before = env.file(4 * 512, 512);
    assert!(before
        .iter()
        .enumerate()
        .all(|(i, &b)| b == (4 * 7 + i) as u8));
}

#[test]
fn process_queue_write_then_read_round_trips() {
    let mem = memory();
    let mut env = Env::new(&mem, false, None);
    let pattern = vec![0x5au8; 2048];
    env.fill_guest(data(0), &pattern);
    env.add_request(0, T_OUT, DISK_SECTORS - 4, 2048);
    env.add_request(1, T_IN, DISK_SECTORS - 4, 2048);

    env.block.process_queue(0);

    assert_eq!(env.used_idx(), 2);
    assert_eq!(
        (env.status(0), env.status(1)),
        (VIRTIO_BLK_S_OK, VIRTIO_BLK_S_OK)
    );
    assert_eq!(env.guest(data(1), 2048), pattern);
}

#[test]
fn process_queue_multi_segment_read_in_order() {
    let mem = memory();
    let mut env = Env::new(&mem, false, None);
    env.write_header(0, T_IN, 2);
    env.add_chain(
        0,
        &[
            (header(0), 16, false),
            (data(1), 512, true),
            (data(0), 1024, true),
            (status(0), 1, true),
        ],
    );

    env.block.process_queue(0);

    assert_eq!(env.status(0), VIRTIO_BLK_S_OK);
    assert_eq!(env.used(0), (0, 1537));
    assert_eq!(env.guest(data(1), 512), env.file(1024, 512));
    assert_eq!(env.guest(data(0), 1024), env.file(1536, 1024));
}

#[test]
fn process_queue_flush_ok() {
    let mem = memory();
    let mut env = Env::new(&mem, false, None);
    env.add_request(0, T_FLUSH, 0, 0);

    env.block.process_queue(0);

    assert_eq!(env.status(0), VIRTIO_BLK_S_OK);
    assert_eq!(env.used(0), (0, 1));
}

#[test]
fn process_queue_flush_read_only_ok() {
    let mem = memory();
    let mut env = Env::new(&mem, true, None);
    env.add_request(0, T_FLUSH, 0, 0);

    env.block.process_queue(0);

    assert_eq!(env.status(0), VIRTIO_BLK_S_OK);
}

#[test]
fn process_queue_get_id_configured_id_returned() {
    let mem = memory();
    let mut env = Env::new(&mem, false, Some("cabin-root"));
    env.fill_guest(data(0), &[0xee; 20]);
    env.add_request(0, T_GET_ID, 0, 20);

    env.block.process_queue(0);

    assert_eq!(env.status(0), VIRTIO_BLK_S_OK);
    assert_eq!(env.used(0), (0, 21));
    let mut expected = vec![0u8; 20];
    expected[..10].copy_from_slice(b"cabin-root");
    assert_eq!(env.guest(data(0), 20), expected);
}

#[test]
fn process_queue_get_id_default_id_returned() {
    let mem = memory();
    let mut env = Env::new(&mem, false, None);
    env.add_request(0, T_GET_ID, 0, 20);

    env.block.process_queue(0);

    assert_eq!(env.status(0), VIRTIO_BLK_S_OK);
    assert_eq!(env.guest(data(0), 20), env.block.disk_id().to_vec());
}

#[test]
fn process_queue_get_id_short_buffer_truncated() {
    let mem = memory();
    let mut env = Env::new(&mem, false, Some("abcdefgh"));
    env.fill_guest(data(0), &[0xee; 8]);
    env.add_request(0, T_GET_ID, 0, 4);

    env.block.process_queue(0);

    assert_eq!(env.used(0), (0, 5));
    assert_eq!(env.guest(data(0), 8), b"abcd\xee\xee\xee\xee".to_vec());
}

#[test]
fn process_queue_read_only_write_ioerr_file_unchanged() {
    let mem = memory();
    let mut env = Env::new(&mem, true, None);
    let original = env.file(0, 512);
    env.fill_guest(data(0), &[0x11; 512]);
    env.add_request(0, T_OUT, 0, 512);

    env.block.process_queue(0);

    assert_eq!(env.status(0), VIRTIO_BLK_S_IOERR);
    assert_eq!(env.used(0), (0, 1));
    assert_eq!(env.file(0, 512), original);
}

#[test]
fn process_queue_truncated_file_read_ioerr_then_recovers() {
    let mem = memory();
    let mut env = Env::new(&mem, false, None);
    env.tmp.as_file().set_len(4 * SECTOR_SIZE).unwrap();
    env.add_request(0, T_IN, 3, 1024);
    env.add_request(1, T_IN, 8, 512);
    env.add_request(2, T_IN, 0, 512);

    env.block.process_queue(0);

    assert_eq!(env.used_idx(), 3);
    assert_eq!(env.status(0), VIRTIO_BLK_S_IOERR);
    assert_eq!(env.status(1), VIRTIO_BLK_S_IOERR);
    assert_eq!(env.status(2), VIRTIO_BLK_S_OK);
    assert_eq!(env.used(0).1, 1);
    assert!(env.block.disk.host_error_logged);
}

#[test]
fn process_queue_sector_past_end_ioerr() {
    let mem = memory();
    let mut env = Env::new(&mem, false, None);
    env.add_request(0, T_OUT, DISK_SECTORS, 512);

    env.block.process_queue(0);

    assert_eq!(env.status(0), VIRTIO_BLK_S_IOERR);
    let len = env.tmp.as_file().metadata().unwrap().len();
    assert_eq!(len, DISK_SECTORS * SECTOR_SIZE);
}

#[test]
fn process_queue_unknown_type_unsupp() {
    let mem = memory();
    let mut env = Env::new(&mem, false, None);
    env.add_request(0, virtio_blk::VIRTIO_BLK_T_WRITE_ZEROES, 0, 16);

    env.block.process_queue(0);

    assert_eq!(env.status(0), VIRTIO_BLK_S_UNSUPP);
    assert_eq!(env.used(0), (0, 1));
}

#[test]
fn process_queue_odd_length_ioerr() {
    let mem = memory();
    let mut env = Env::new(&mem, false, None);
    env.add_request(0, T_IN, 0, 100);

    env.block.process_queue(0);

    assert_eq!(env.status(0), VIRTIO_BLK_S_IOERR);
}

#[test]
fn process_queue_missing_status_needs_reset() {
    let mem = memory();
    let mut env = Env::new(&mem, false, None);
    env.write_header(0, T_IN, 0);
    env.fill_guest(data(0), &[0xee; 512]);
    env.add_chain(0, &[(header(0), 16, false), (data(0), 512, false)]);

    env.block.process_queue(0);

    // Nothing can carry an error back: the device fails instead of completing it.
    assert_eq!(env.used_idx(), 0);
    assert_eq!(env.guest(data(0), 512), vec![0xee; 512]);
    assert!(env.irq.needs_reset());
    assert_eq!(env.irq.status(), VIRTIO_MMIO_INT_CONFIG);
}

#[test]
fn process_queue_status_outside_memory_used_len_zero() {
    let mem = memory();
    let mut env = Env::new(&mem, false, None);
    env.write_header(0, T_FLUSH, 0);
    env.add_chain(0, &[(header(0), 16, false), (MEM_SIZE as u64, 1, true)]);

    env.block.process_queue(0);

    assert_eq!(env.used_idx(), 0);
    assert!(env.irq.needs_reset());
}

#[test]
fn process_queue_data_outside_memory_ioerr() {
    let mem = memory();
    let mut env = Env::new(&mem, false, None);
    env.write_header(0, T_IN, 0);
    let straddling = (MEM_SIZE as u64 - 512, 1024, true);
    env.add_chain(
        0,
        &[(header(0), 16, false), straddling, (status(0), 1, true)],
    );

    env.block.process_queue(0);

    assert_eq!(env.status(0), VIRTIO_BLK_S_IOERR);
    assert_eq!(env.used(0), (0, 1));
}

#[test]
fn process_queue_header_outside_memory_ioerr() {
    let mem = memory();
    let mut env = Env::new(&mem, false, None);
    env.write_header(0, T_IN, 0);
    env.add_chain(0, &[(u64::MAX - 8, 16, false), (status(0), 1, true)]);

    env.block.process_queue(0);

    assert_eq!(env.status(0), VIRTIO_BLK_S_IOERR);
}

#[test]
fn process_queue_looping_chain_needs_reset() {
    // A descriptor whose `next` is itself: virtio-queue stops after queue-size
    // descriptors, the last still pointing to a next one.
    let mem = memory();
    let mut env = Env::new(&mem, false, None);
    env.write_header(0, T_IN, 0);
    let looping = Descriptor::new(header(0), 16, VRING_DESC_F_NEXT as u16, 0);
    env.vq
        .add_desc_chains(&[RawDescriptor::from(looping)], 0)
        .unwrap();

    env.block.process_queue(0);

    assert_eq!(env.used_idx(), 0);
    assert!(env.irq.needs_reset());
}

#[test]
fn process_queue_looping_writable_chain_needs_reset() {
    // The same loop through a writable descriptor: the cut chain must not pass for
    // a request with a status byte.
    let mem = memory();
    let mut env = Env::new(&mem, false, None);
    let looping = Descriptor::new(
        status(0),
        1,
        (VRING_DESC_F_NEXT | VRING_DESC_F_WRITE) as u16,
        0,
    );
    env.vq
        .add_desc_chains(&[RawDescriptor::from(looping)], 0)
        .unwrap();

    env.block.process_queue(0);

    assert_eq!(env.used_idx(), 0);
    assert!(env.irq.needs_reset());
}

#[test]
fn process_queue_head_out_of_range_needs_reset() {
    let mem = memory();
    let mut env = Env::new(&mem, false, None);
    env.add_request(0, T_FLUSH, 0, 0);
    env.vq
        .avail()
        .ring()
        .ref_at(0)
        .unwrap()
        .store(u16::MAX.to_le());

    env.block.process_queue(0);

    assert_eq!(env.used_idx(), 0);
    assert!(env.irq.needs_reset());
}

#[test]
fn process_queue_after_failure_ignored_until_reset() {
    let mem = memory();
    let mut env = Env::new(&mem, false, None);
    env.vq.avail().idx().store(1000);
    env.block.process_queue(0);
    assert!(env.irq.needs_reset());
    env.vq.avail().idx().store(0);
    env.add_request(0, T_FLUSH, 0, 0);

    env.block.process_queue(0);

    assert_eq!(env.used_idx(), 0);
}

#[test]
fn process_queue_over_long_indirect_chain_ioerr() {
    // An indirect table of 300 writable descriptors: longer than the queue.
    let mem = memory();
    let mut env = Env::new(&mem, false, None);
    env.write_header(0, T_IN, 0);
    let table = 0x80_0000u64;
    let count = 300u16;
    for i in 0..count {
        let next = if i + 1 < count {
            VRING_DESC_F_NEXT as u16
        } else {
            0
        };
        let desc = Descriptor::new(status(0), 1, VRING_DESC_F_WRITE as u16 | next, i + 1);
        let addr = GuestAddress(table + u64::from(i) * 16);
        mem.write_obj(RawDescriptor::from(desc), addr).unwrap();
    }
    let head = Descriptor::new(
        table,
        u32::from(count) * 16,
        VRING_DESC_F_INDIRECT as u16,
        0,
    );
    env.vq
        .add_desc_chains(&[RawDescriptor::from(head)], 0)
        .unwrap();

    env.block.process_queue(0);

    assert_eq!(env.used(0), (0, 1));
    assert_eq!(env.status(0), VIRTIO_BLK_S_IOERR);
}

#[test]
fn process_queue_many_chains_all_completed_one_interrupt() {
    let mem = memory();
    let mut env = Env::new(&mem, false, None);
    for slot in 0..8 {
        env.add_request(slot, T_IN, slot, 512);
    }

    env.block.process_queue(0);

    assert_eq!(env.used_idx(), 8);
    for slot in 0..8u64 {
        assert_eq!(env.status(slot), VIRTIO_BLK_S_OK);
        assert_eq!(env.used(slot as usize), ((slot * 8) as u32, 513));
    }
    assert_eq!(env.irq.eventfd().read().unwrap(), 1);
}

#[test]
fn process_queue_nothing_available_no_interrupt() {
    let mem = memory();
    let mut env = Env::new(&mem, false, None);

    env.block.process_queue(0);

    assert_eq!(env.irq.status(), 0);
    assert!(env.irq.eventfd().read().is_err());
}

#[test]
fn process_queue_broken_avail_index_needs_reset() {
    let mem = memory();
    let mut env = Env::new(&mem, false, None);
    env.vq.avail().idx().store(1000);

    env.block.process_queue(0);

    assert_eq!(env.used_idx(), 0);
    assert!(env.irq.needs_reset());
    assert_eq!(env.irq.status(), VIRTIO_MMIO_INT_CONFIG);
}

#[test]
fn process_queue_before_activate_ignored() {
    let tmp = disk_file(DISK_SECTORS);
    let mut block = Block::new(&config(tmp.as_path(), false, None)).unwrap();

    block.process_queue(0);

    assert!(block.active.is_none());
}

#[test]
fn process_queue_after_reset_ignored() {
    let mem = memory();
    let mut env = Env::new(&mem, false, None);
    env.add_request(0, T_FLUSH, 0, 0);

    env.block.reset();
    env.block.process_queue(0);

    assert_eq!(env.used_idx(), 0);
    assert_eq!(env.block.acked_features(), 0);
}

#[test]
fn process_queue_wrong_index_ignored() {
    let mem = memory();
    let mut env = Env::new(&mem, false, None);
    env.add_request(0, T_FLUSH, 0, 0);

    env.block.process_queue(1);

    assert_eq!(env.used_idx(), 0);
}
