//! Tests of console save and restore, with virtio-queue's mock driver rings.

use std::io;

use virtio_bindings::bindings::virtio_ring::VRING_DESC_F_WRITE;
use virtio_queue::desc::split::Descriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::super::super::{RX_QUEUE, TX_QUEUE};
use super::*;
use crate::snapshot::activate_params;
use crate::virtio::test_utils::guest_memory;
use crate::virtio::{IrqTrigger, VIRTIO_F_VERSION_1};
use crate::GuestMemoryMmap;

const RX_RING: u64 = 0;
const TX_RING: u64 = 0x1_0000;
const BUF: u64 = 0x10_0000;
const QSIZE: u16 = 16;

fn console() -> Console {
    Console::new(Box::new(io::sink()), EventFd::new(EFD_NONBLOCK).unwrap())
}

fn irq() -> IrqTrigger {
    IrqTrigger::new(EventFd::new(EFD_NONBLOCK).unwrap())
}

/// Posts one descriptor chain at descriptor `index` of `queue`.
fn post(queue: &MockSplitQueue<'_, GuestMemoryMmap>, index: u16, addr: u64, len: u32, w: bool) {
    let flags = if w { VRING_DESC_F_WRITE as u16 } else { 0 };
    let desc = RawDescriptor::from(Descriptor::new(addr, len, flags, 0));
    queue.add_desc_chains(&[desc], index).unwrap();
}

fn json_round_trip(state: &VirtioDeviceState) -> VirtioDeviceState {
    let json = serde_json::to_string(state).unwrap();
    serde_json::from_str(&json).unwrap()
}

#[test]
fn console_restored_delivers_pending_input_at_saved_indices() {
    let mem = guest_memory(0x40_0000);
    let rxq = MockSplitQueue::create(&mem, GuestAddress(RX_RING), QSIZE);
    let txq = MockSplitQueue::create(&mem, GuestAddress(TX_RING), QSIZE);
    let mut source = console();
    source
        .activate(ActivateParams {
            mem: mem.clone(),
            queues: vec![
                rxq.create_queue::<Queue>().unwrap(),
                txq.create_queue::<Queue>().unwrap(),
            ],
            acked_features: VIRTIO_F_VERSION_1,
            irq: irq(),
        })
        .unwrap();
    mem.write_slice(b"$ ", GuestAddress(BUF)).unwrap();
    post(&txq, 0, BUF, 2, false);
    source.process_queue(TX_QUEUE);
    assert_eq!(source.enqueue_input(b"hi"), 2);
    let saved = json_round_trip(&source.save());
    let VirtioDeviceState::Console(state) = &saved else {
        panic!("not a console state");
    };
    assert_eq!(state.pending_input, b"hi");
    assert!(state.listening);
    let mut restored = console();
    let params = activate_params(&saved, &mem, irq()).unwrap();

    restored.restore(&saved, Some(params)).unwrap();

    assert_eq!(restored.save(), saved);
    post(&rxq, 0, BUF + 0x1000, 16, true);
    restored.process_queue(RX_QUEUE);
    assert_eq!(rxq.used().idx().load(), 1);
    assert_eq!(rxq.used().ring().ref_at(0).unwrap().load().len(), 2);
    let mut got = [0u8; 2];
    mem.read_slice(&mut got, GuestAddress(BUF + 0x1000))
        .unwrap();
    assert_eq!(&got, b"hi");
    post(&txq, 1, BUF, 2, false);
    restored.process_queue(TX_QUEUE);
    assert_eq!(txq.used().idx().load(), 2);
}

#[test]
fn console_oversized_pending_input_is_refused() {
    let mut restored = console();
    let state = VirtioDeviceState::Console(ConsoleState {
        queues: Vec::new(),
        acked_features: 0,
        pending_input: vec![b'x'; INPUT_BUFFER_CAPACITY + 1],
        listening: false,
    });

    let err = restored.restore(&state, None).unwrap_err();

    assert!(
        matches!(err, RestoreError::BufferTooLong { len, capacity, .. }
            if len == INPUT_BUFFER_CAPACITY + 1 && capacity == INPUT_BUFFER_CAPACITY),
        "{err}"
    );
    assert_eq!(restored.pending_input_bytes(), 0);
}

#[test]
fn console_live_queues_without_activation_are_refused() {
    let mut source = console();
    let VirtioDeviceState::Console(mut state) = source.save() else {
        panic!("not a console state");
    };
    state.queues = vec![crate::snapshot::QueueSnapshot::of(&Queue::new(256).unwrap()); 2];

    let err = source
        .restore(&VirtioDeviceState::Console(state), None)
        .unwrap_err();

    assert!(
        matches!(err, RestoreError::ActivationMismatch { .. }),
        "{err}"
    );
}
