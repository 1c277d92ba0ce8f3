//! Tests for [`super`] (`frame.rs`): chains built by virtio-queue's `MockSplitQueue`.

use super::*;
use crate::GuestMemoryMmap;
use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::DescriptorChain;
use vm_memory::GuestAddress;

/// Guest memory: 1 MiB at 0. The mock queue sits at 0, buffers from 64 KiB.
const MEM_SIZE: usize = 0x10_0000;
const BUF: u64 = 0x1_0000;
/// Room for one maximum-size frame in a single buffer, below the end of memory.
const BIG_BUF: u64 = 0x8_0000;
const QSIZE: u16 = 16;

fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap()
}

/// A device-readable descriptor (transmit).
fn ro(addr: u64, len: u32) -> RawDescriptor {
    RawDescriptor::from(Descriptor::new(addr, len, 0, 0))
}

/// A device-writable descriptor (receive).
fn wo(addr: u64, len: u32) -> RawDescriptor {
    RawDescriptor::from(Descriptor::new(addr, len, VRING_DESC_F_WRITE as u16, 0))
}

/// The chain the mock driver posts with `descs` linked in order.
fn chain<'a>(
    queue: &'a MockSplitQueue<'a, GuestMemoryMmap>,
    descs: &[RawDescriptor],
) -> DescriptorChain<&'a GuestMemoryMmap> {
    queue.build_desc_chain(descs).unwrap()
}

/// `len` bytes: a 12-byte header of 0xhh then a frame counting up.
fn frame_bytes(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| if i < VNET_HDR_LEN { 0xaa } else { i as u8 })
        .collect()
}

fn read(mem: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    mem.read_slice(&mut buf, GuestAddress(addr)).unwrap();
    buf
}

#[test]
fn read_tx_frame_multi_descriptor_gathered_in_order() {
    let mem = memory();
    let queue = MockSplitQueue::new(&mem, QSIZE);
    let bytes = frame_bytes(12 + 60);
    mem.write_slice(&bytes[..12], GuestAddress(BUF)).unwrap();
    mem.write_slice(&bytes[12..40], GuestAddress(BUF + 0x1000))
        .unwrap();
    mem.write_slice(&bytes[40..], GuestAddress(BUF + 0x3000))
        .unwrap();
    let descs = [ro(BUF, 12), ro(BUF + 0x1000, 28), ro(BUF + 0x3000, 32)];
    let mut out = vec![0xff; 7];

    read_tx_frame(&mem, chain(&queue, &descs), &mut out).unwrap();

    assert_eq!(out, bytes);
}

#[test]
fn read_tx_frame_header_and_frame_in_one_descriptor_ok() {
    let mem = memory();
    let queue = MockSplitQueue::new(&mem, QSIZE);
    let bytes = frame_bytes(12 + 1514);
    mem.write_slice(&bytes, GuestAddress(BUF)).unwrap();
    let mut out = Vec::new();

    read_tx_frame(&mem, chain(&queue, &[ro(BUF, 1526)]), &mut out).unwrap();

    assert_eq!(out, bytes);
}

#[test]
fn read_tx_frame_largest_accepted() {
    let mem = memory();
    let queue = MockSplitQueue::new(&mem, QSIZE);
    let mut out = Vec::new();

    read_tx_frame(
        &mem,
        chain(&queue, &[ro(BIG_BUF, MAX_BUFFER_LEN as u32)]),
        &mut out,
    )
    .unwrap();

    assert_eq!(out.len(), MAX_BUFFER_LEN);
}

#[test]
fn read_tx_frame_header_only_empty() {
    let mem = memory();
    let queue = MockSplitQueue::new(&mem, QSIZE);
    let mut out = Vec::new();

    let err = read_tx_frame(&mem, chain(&queue, &[ro(BUF, 12)]), &mut out).unwrap_err();

    assert!(matches!(err, FrameError::Empty { len: 12 }), "{err}");
    assert!(out.is_empty());
}

#[test]
fn read_tx_frame_shorter_than_header_empty() {
    let mem = memory();
    let queue = MockSplitQueue::new(&mem, QSIZE);
    let mut out = Vec::new();

    let err =
        read_tx_frame(&mem, chain(&queue, &[ro(BUF, 4), ro(BUF + 8, 0)]), &mut out).unwrap_err();

    assert!(matches!(err, FrameError::Empty { len: 4 }), "{err}");
}

#[test]
fn read_tx_frame_oversized_too_long() {
    let mem = memory();
    let queue = MockSplitQueue::new(&mem, QSIZE);
    let descs = [ro(BIG_BUF, MAX_BUFFER_LEN as u32), ro(BUF, 1)];
    let mut out = Vec::new();

    let err = read_tx_frame(&mem, chain(&queue, &descs), &mut out).unwrap_err();

    assert!(matches!(err, FrameError::TooLong { len } if len == MAX_BUFFER_LEN as u64 + 1));
}

#[test]
fn read_tx_frame_huge_lengths_too_long_without_allocating() {
    let mem = memory();
    let queue = MockSplitQueue::new(&mem, QSIZE);
    let descs = [ro(BUF, u32::MAX / 2), ro(BUF, u32::MAX / 2)];
    let mut out = Vec::new();

    let err = read_tx_frame(&mem, chain(&queue, &descs), &mut out).unwrap_err();

    assert!(matches!(err, FrameError::TooLong { .. }), "{err}");
    assert!(out.capacity() < MAX_BUFFER_LEN);
}

#[test]
fn read_tx_frame_writable_descriptor_wrong_direction() {
    let mem = memory();
    let queue = MockSplitQueue::new(&mem, QSIZE);
    let descs = [ro(BUF, 12), wo(BUF + 0x1000, 64)];
    let mut out = Vec::new();

    let err = read_tx_frame(&mem, chain(&queue, &descs), &mut out).unwrap_err();

    assert!(
        matches!(
            err,
            FrameError::WrongDirection {
                position: 1,
                found: "writable"
            }
        ),
        "{err}"
    );
}

#[test]
fn read_tx_frame_outside_memory_guest_memory_error() {
    let mem = memory();
    let queue = MockSplitQueue::new(&mem, QSIZE);
    let descs = [ro(BUF, 12), ro(MEM_SIZE as u64 - 16, 64)];
    let mut out = Vec::new();

    let err = read_tx_frame(&mem, chain(&queue, &descs), &mut out).unwrap_err();

    assert!(matches!(err, FrameError::GuestMemory { .. }), "{err}");
}

#[test]
fn read_tx_frame_too_many_descriptors_rejected() {
    let mem = memory();
    let descs = vec![Descriptor::new(BUF, 1, 0, 0); MAX_CHAIN_DESCRIPTORS + 1];
    let mut out = Vec::new();

    let err = read_tx_frame(&mem, descs, &mut out).unwrap_err();

    assert!(matches!(err, FrameError::TooManyDescriptors), "{err}");
}

#[test]
fn write_rx_frame_single_descriptor_written() {
    let mem = memory();
    let queue = MockSplitQueue::new(&mem, QSIZE);
    let bytes = frame_bytes(12 + 100);

    let used = write_rx_frame(&mem, chain(&queue, &[wo(BUF, 1526)]), &bytes).unwrap();

    assert_eq!(used, 112);
    assert_eq!(read(&mem, BUF, 112), bytes);
}

#[test]
fn write_rx_frame_split_over_descriptors_in_order() {
    let mem = memory();
    let queue = MockSplitQueue::new(&mem, QSIZE);
    // The Linux driver's big-packet layout: the header alone, then page-sized pieces.
    let descs = [
        wo(BUF, 12),
        wo(BUF + 0x1000, 100),
        wo(BUF + 0x2000, 100),
        wo(BUF + 0x3000, 100),
    ];
    let bytes = frame_bytes(12 + 150);

    let used = write_rx_frame(&mem, chain(&queue, &descs), &bytes).unwrap();

    assert_eq!(used, 162);
    assert_eq!(read(&mem, BUF, 12), bytes[..12]);
    assert_eq!(read(&mem, BUF + 0x1000, 100), bytes[12..112]);
    assert_eq!(read(&mem, BUF + 0x2000, 50), bytes[112..]);
    assert_eq!(read(&mem, BUF + 0x2000 + 50, 50), vec![0; 50], "untouched");
    assert_eq!(read(&mem, BUF + 0x3000, 100), vec![0; 100], "untouched");
}

#[test]
fn write_rx_frame_exact_fit_ok() {
    let mem = memory();
    let queue = MockSplitQueue::new(&mem, QSIZE);
    let bytes = frame_bytes(64);

    let used = write_rx_frame(
        &mem,
        chain(&queue, &[wo(BUF, 32), wo(BUF + 0x100, 32)]),
        &bytes,
    )
    .unwrap();

    assert_eq!(used, 64);
}

#[test]
fn write_rx_frame_too_big_does_not_fit_nothing_written() {
    let mem = memory();
    let queue = MockSplitQueue::new(&mem, QSIZE);
    let bytes = frame_bytes(12 + 1515);

    let err = write_rx_frame(
        &mem,
        chain(&queue, &[wo(BUF, 12), wo(BUF + 0x1000, 1514)]),
        &bytes,
    )
    .unwrap_err();

    assert!(
        matches!(
            err,
            FrameError::DoesNotFit {
                frame: 1527,
                capacity: 1526
            }
        ),
        "{err}"
    );
    assert_eq!(read(&mem, BUF, 12), vec![0; 12]);
}

#[test]
fn write_rx_frame_readable_descriptor_wrong_direction_nothing_written() {
    let mem = memory();
    let queue = MockSplitQueue::new(&mem, QSIZE);
    let bytes = frame_bytes(64);

    let err = write_rx_frame(
        &mem,
        chain(&queue, &[wo(BUF, 1000), ro(BUF + 0x1000, 1000)]),
        &bytes,
    )
    .unwrap_err();

    assert!(
        matches!(
            err,
            FrameError::WrongDirection {
                position: 1,
                found: "readable"
            }
        ),
        "{err}"
    );
    assert_eq!(read(&mem, BUF, 64), vec![0; 64]);
}

#[test]
fn write_rx_frame_outside_memory_guest_memory_error() {
    let mem = memory();
    let queue = MockSplitQueue::new(&mem, QSIZE);
    let bytes = frame_bytes(64);

    let err =
        write_rx_frame(&mem, chain(&queue, &[wo(MEM_SIZE as u64 - 8, 64)]), &bytes).unwrap_err();

    assert!(matches!(err, FrameError::GuestMemory { .. }), "{err}");
}

#[test]
fn write_rx_frame_too_many_descriptors_rejected() {
    let mem = memory();
    let descs =
        vec![Descriptor::new(BUF, 1, VRING_DESC_F_WRITE as u16, 0); MAX_CHAIN_DESCRIPTORS + 1];

    let err = write_rx_frame(&mem, descs, &frame_bytes(64)).unwrap_err();

    assert!(matches!(err, FrameError::TooManyDescriptors), "{err}");
}

#[test]
fn complete_rx_header_sets_num_buffers_keeps_flags_with_guest_csum() {
    let mut bytes = frame_bytes(64);

    complete_rx_header(&mut bytes, true);

    assert_eq!(bytes[NUM_BUFFERS_OFFSET..NUM_BUFFERS_OFFSET + 2], [1, 0]);
    assert_eq!(bytes[0], 0xaa);
    assert_eq!(bytes[12..], frame_bytes(64)[12..]);
}

#[test]
fn complete_rx_header_without_guest_csum_clears_flags() {
    let mut bytes = frame_bytes(64);

    complete_rx_header(&mut bytes, false);

    assert_eq!(bytes[0], 0);
    assert_eq!(bytes[1], 0xaa, "gso_type untouched");
    assert_eq!(bytes[NUM_BUFFERS_OFFSET..NUM_BUFFERS_OFFSET + 2], [1, 0]);
}

#[test]
fn complete_rx_header_short_buffer_untouched() {
    let mut bytes = vec![0xaa; 8];

    complete_rx_header(&mut bytes, false);

    assert_eq!(bytes, vec![0xaa; 8]);
}
