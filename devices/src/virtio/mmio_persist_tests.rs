//! Tests of transport save and restore, with a real virtio-rng device behind the
//! transport and virtio-queue's mock driver rings.

use std::io;
use std::sync::{Arc, Mutex};

use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE as ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER as DRIVER,
    VIRTIO_CONFIG_S_FEATURES_OK as FEATURES_OK,
};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::*;
use crate::bus::BusDevice;
use crate::virtio::console::Console;
use crate::virtio::mmio::regs;
use crate::virtio::rng::{Rng, QUEUE_SIZE};
use crate::virtio::test_utils::guest_memory;
use crate::virtio::{IrqTrigger, VIRTIO_F_VERSION_1};
use crate::GuestMemoryMmap;

/// 16 MiB of guest memory: the mock rings at 0, request buffers from 1 MiB.
const MEM_SIZE: usize = 0x100_0000;
const BUF_BASE: u64 = 0x10_0000;
const BUF_LEN: u32 = 64;
const WRITE: u16 = virtio_bindings::virtio_ring::VRING_DESC_F_WRITE as u16;

struct Machine {
    transport: MmioTransport,
    irq: IrqTrigger,
}

fn machine_with(
    mem: &GuestMemoryMmap,
    device: Arc<Mutex<dyn crate::virtio::VirtioDevice>>,
) -> Machine {
    let irq = IrqTrigger::new(EventFd::new(EFD_NONBLOCK).unwrap());
    let transport = MmioTransport::new(mem.clone(), device, irq.clone()).unwrap();
    Machine { transport, irq }
}

fn rng_machine(mem: &GuestMemoryMmap) -> Machine {
    machine_with(mem, Arc::new(Mutex::new(Rng::new(None).unwrap())))
}

impl Machine {
    fn write(&mut self, offset: u64, value: u32) {
        self.transport.write(offset, &value.to_le_bytes());
    }

    fn read(&mut self, offset: u64) -> u32 {
        let mut data = [0u8; 4];
        self.transport.read(offset, &mut data);
        u32::from_le_bytes(data)
    }

    /// Negotiation and queue 0 set up on the mock rings, without DRIVER_OK.
    fn set_up(&mut self, vq: &MockSplitQueue<'_, GuestMemoryMmap>) {
        self.write(regs::STATUS, ACKNOWLEDGE);
        self.write(regs::STATUS, ACKNOWLEDGE | DRIVER);
        self.write(regs::DRIVER_FEATURES_SEL, 1);
        self.write(regs::DRIVER_FEATURES, (VIRTIO_F_VERSION_1 >> 32) as u32);
        self.write(regs::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
        self.write(regs::QUEUE_SEL, 0);
        self.write(regs::QUEUE_NUM, u32::from(QUEUE_SIZE));
        for (low, addr) in [
            (regs::QUEUE_DESC_LOW, vq.desc_table_addr()),
            (regs::QUEUE_DRIVER_LOW, vq.avail_addr()),
            (regs::QUEUE_DEVICE_LOW, vq.used_addr()),
        ] {
            self.write(low, addr.0 as u32);
            self.write(low + 4, (addr.0 >> 32) as u32);
        }
        self.write(regs::QUEUE_READY, 1);
    }

    fn driver_ok(&mut self) {
        self.write(regs::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
        assert!(self.transport.is_activated());
    }
}

/// Posts request `n` (one writable buffer at descriptor `n`) and lets the device
/// serve it.
fn serve_request(machine: &mut Machine, vq: &MockSplitQueue<'_, GuestMemoryMmap>, n: u16) {
    let desc = Descriptor::new(BUF_BASE + u64::from(n) * 0x1000, BUF_LEN, WRITE, 0);
    vq.add_desc_chains(&[RawDescriptor::from(desc)], n).unwrap();
    machine.transport.process_queue(0);
}

/// An activated rng machine that served three requests, and its state.
fn saved_after_three_requests(mem: &GuestMemoryMmap) -> MmioState {
    let vq = MockSplitQueue::new(mem, QUEUE_SIZE);
    saved_after_three_requests_on(mem, &vq)
}

/// [`saved_after_three_requests`] on the driver rings `vq`.
fn saved_after_three_requests_on(
    mem: &GuestMemoryMmap,
    vq: &MockSplitQueue<'_, GuestMemoryMmap>,
) -> MmioState {
    let mut machine = rng_machine(mem);
    machine.set_up(vq);
    machine.driver_ok();
    for n in 0..3 {
        serve_request(&mut machine, vq, n);
    }
    assert_eq!(vq.used().idx().load(), 3);
    machine.transport.save()
}

fn json_round_trip(state: &MmioState) -> MmioState {
    let json = serde_json::to_string(state).unwrap();
    serde_json::from_str(&json).unwrap()
}

#[test]
fn restore_activated_rng_resumes_at_saved_indices() {
    let mem = guest_memory(MEM_SIZE);
    // Guest memory, rings included, is restored before the devices: the same
    // memory and driver rings stand in for it.
    let vq = MockSplitQueue::new(&mem, QUEUE_SIZE);
    let saved = saved_after_three_requests_on(&mem, &vq);
    let loaded = json_round_trip(&saved);
    let mut restored = rng_machine(&mem);

    restored.transport.restore(&loaded).unwrap();

    assert_eq!(restored.transport.save(), saved);
    assert!(restored.transport.is_activated());
    assert_eq!(restored.transport.queue_count(), 1);
    // The mock writes at the avail index it finds in memory: the fourth entry.
    let buf = BUF_BASE + 3 * 0x1000;
    mem.write_slice(&[0u8; BUF_LEN as usize], GuestAddress(buf))
        .unwrap();
    serve_request(&mut restored, &vq, 3);
    assert_eq!(vq.used().idx().load(), 4);
    let elem = vq.used().ring().ref_at(3).unwrap().load();
    assert_eq!((elem.id(), elem.len()), (3, BUF_LEN));
    let mut data = [0u8; BUF_LEN as usize];
    mem.read_slice(&mut data, GuestAddress(buf)).unwrap();
    assert!(data.iter().any(|&b| b != data[0]), "random bytes written");
    let VirtioDeviceState::Rng(rng) = &restored.transport.save().device else {
        panic!("not an rng state");
    };
    assert_eq!((rng.queues[0].next_avail, rng.queues[0].next_used), (4, 4));
}

#[test]
fn restore_configured_but_not_activated_transport_then_driver_ok_starts_device() {
    let mem = guest_memory(MEM_SIZE);
    let vq = MockSplitQueue::new(&mem, QUEUE_SIZE);
    let mut source = rng_machine(&mem);
    source.set_up(&vq);
    let saved = source.transport.save();
    let mut restored = rng_machine(&mem);

    restored
        .transport
        .restore(&json_round_trip(&saved))
        .unwrap();

    assert_eq!(restored.transport.save(), saved);
    assert!(!restored.transport.is_activated());
    restored.driver_ok();
    serve_request(&mut restored, &vq, 0);
    assert_eq!(vq.used().idx().load(), 1);
}

#[test]
fn restore_pending_interrupt_is_signalled_again() {
    let mem = guest_memory(MEM_SIZE);
    let saved = saved_after_three_requests(&mem);
    assert_eq!(saved.interrupt_status, VIRTIO_MMIO_INT_VRING);
    let mut restored = rng_machine(&mem);

    restored.transport.restore(&saved).unwrap();

    assert!(restored.irq.eventfd().read().is_ok());
    assert_eq!(restored.read(regs::INTERRUPT_STATUS), VIRTIO_MMIO_INT_VRING);
}

#[test]
fn restore_needs_reset_shows_in_status() {
    let mem = guest_memory(MEM_SIZE);
    let saved = MmioState {
        needs_reset: true,
        ..saved_after_three_requests(&mem)
    };
    let mut restored = rng_machine(&mem);

    restored.transport.restore(&saved).unwrap();

    assert_ne!(restored.read(regs::STATUS) & NEEDS_RESET, 0);
}

#[test]
fn restore_into_a_used_transport_is_refused() {
    let mem = guest_memory(MEM_SIZE);
    let saved = saved_after_three_requests(&mem);
    let mut restored = rng_machine(&mem);
    restored.transport.restore(&saved).unwrap();

    let err = restored.transport.restore(&saved).unwrap_err();

    assert!(matches!(err, RestoreError::TransportInUse { .. }), "{err}");
}

#[test]
fn restore_wrong_device_type_is_refused() {
    let mem = guest_memory(MEM_SIZE);
    let saved = saved_after_three_requests(&mem);
    let console = Console::new(Box::new(io::sink()), EventFd::new(EFD_NONBLOCK).unwrap());
    let mut restored = machine_with(&mem, Arc::new(Mutex::new(console)));

    let err = restored.transport.restore(&saved).unwrap_err();

    assert!(
        matches!(
            err,
            RestoreError::DeviceType {
                snapshot: "rng",
                here: "console"
            }
        ),
        "{err}"
    );
    assert!(!restored.transport.is_activated());
}

/// Restores `state` into a fresh rng machine; the error, after checking that
/// nothing was applied.
fn refusal(mem: &GuestMemoryMmap, state: &MmioState) -> RestoreError {
    let mut restored = rng_machine(mem);
    let fresh = restored.transport.save();
    let err = restored.transport.restore(state).unwrap_err();
    assert_eq!(
        restored.transport.save(),
        fresh,
        "a refused state changed something"
    );
    assert!(restored.irq.eventfd().read().is_err());
    err
}

#[test]
fn restore_wrong_queue_count_is_refused() {
    let mem = guest_memory(MEM_SIZE);
    let mut state = saved_after_three_requests(&mem);
    state.queues.push(state.queues[0]);
    state.queue_configs.push(state.queue_configs[0]);

    let err = refusal(&mem, &state);

    assert!(
        matches!(
            err,
            RestoreError::QueueCount {
                snapshot: 2,
                here: 1,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn restore_wrong_max_size_is_refused() {
    let mem = guest_memory(MEM_SIZE);
    let mut state = saved_after_three_requests(&mem);
    state.queues[0].max_size = 128;
    state.queues[0].size = 128;

    let err = refusal(&mem, &state);

    assert!(
        matches!(
            err,
            RestoreError::QueueMaxSize {
                index: 0,
                snapshot: 128,
                here: 256
            }
        ),
        "{err}"
    );
}

#[test]
fn restore_live_ring_outside_memory_is_refused() {
    let mem = guest_memory(MEM_SIZE);
    let mut state = saved_after_three_requests(&mem);
    let VirtioDeviceState::Rng(rng) = &mut state.device else {
        panic!("not an rng state");
    };
    rng.queues[0].used_ring = MEM_SIZE as u64 - 0x100;

    let err = refusal(&mem, &state);

    let RestoreError::Queue {
        index: 0,
        problem: source,
    } = &err
    else {
        panic!("{err}");
    };
    assert!(
        matches!(
            **source,
            RestoreError::QueueOutsideMemory {
                ring: "device area",
                ..
            }
        ),
        "{source}"
    );
    assert_eq!(
        err.to_string(),
        "Snapshot's queue 0 refused: The device area at 0xffff00 (2054 bytes) lies outside guest memory"
    );
}

#[test]
fn restore_transport_queue_size_not_power_of_two_is_refused() {
    let mem = guest_memory(MEM_SIZE);
    let mut state = saved_after_three_requests(&mem);
    state.queues[0].size = 100;

    let err = refusal(&mem, &state);

    let RestoreError::Queue {
        index: 0,
        problem: source,
    } = &err
    else {
        panic!("{err}");
    };
    assert!(
        matches!(
            **source,
            RestoreError::QueueSize {
                size: 100,
                max_size: 256
            }
        ),
        "{source}"
    );
}

#[test]
fn restore_features_not_offered_is_refused() {
    let mem = guest_memory(MEM_SIZE);
    let mut state = saved_after_three_requests(&mem);
    state.acked_features |= 1 << 40;

    let err = refusal(&mem, &state);

    assert!(
        matches!(err, RestoreError::FeaturesNotOffered { acked, offered }
            if acked == VIRTIO_F_VERSION_1 | 1 << 40 && offered == VIRTIO_F_VERSION_1),
        "{err}"
    );
}

#[test]
fn restore_device_features_not_offered_is_refused() {
    let mem = guest_memory(MEM_SIZE);
    let mut state = saved_after_three_requests(&mem);
    state.acked_features |= 1 << 5;
    let VirtioDeviceState::Rng(rng) = &mut state.device else {
        panic!("not an rng state");
    };
    rng.acked_features |= 1 << 5;

    let err = refusal(&mem, &state);

    assert!(
        matches!(err, RestoreError::FeaturesNotOffered { .. }),
        "{err}"
    );
}

#[test]
fn restore_inconsistent_activation_is_refused() {
    let mem = guest_memory(MEM_SIZE);
    let saved = saved_after_three_requests(&mem);

    let no_live_queues = MmioState {
        device: VirtioDeviceState::Rng(crate::virtio::rng::RngState {
            queues: Vec::new(),
            acked_features: VIRTIO_F_VERSION_1,
        }),
        ..saved.clone()
    };
    let not_activated = MmioState {
        activated: false,
        ..saved.clone()
    };
    let status_without_driver_ok = MmioState {
        status: ACKNOWLEDGE | DRIVER | FEATURES_OK,
        ..saved.clone()
    };
    let unreachable_status = MmioState {
        status: ACKNOWLEDGE | FEATURES_OK,
        activated: false,
        ..not_activated.clone()
    };

    assert!(matches!(
        refusal(&mem, &no_live_queues),
        RestoreError::ActivationMismatch { .. }
    ));
    assert!(matches!(
        refusal(&mem, &not_activated),
        RestoreError::ActivationMismatch { .. }
    ));
    assert!(matches!(
        refusal(&mem, &status_without_driver_ok),
        RestoreError::Status { .. }
    ));
    assert!(matches!(
        refusal(&mem, &unreachable_status),
        RestoreError::Status { .. }
    ));
}

#[test]
fn restore_unknown_interrupt_bits_are_refused() {
    let mem = guest_memory(MEM_SIZE);
    let state = MmioState {
        interrupt_status: 0x80,
        ..saved_after_three_requests(&mem)
    };

    assert!(matches!(
        refusal(&mem, &state),
        RestoreError::InterruptStatus { status: 0x80, .. }
    ));
}

#[test]
fn restore_hostile_queue_fields_never_panic() {
    let mem = guest_memory(MEM_SIZE);
    let saved = saved_after_three_requests(&mem);
    let values = [
        0,
        1,
        3,
        0xfff,
        0x1000,
        u64::MAX,
        u64::MAX - 1,
        MEM_SIZE as u64,
    ];
    for value in values {
        for field in 0..6 {
            let mut state = saved.clone();
            let VirtioDeviceState::Rng(rng) = &mut state.device else {
                panic!("not an rng state");
            };
            for queue in [&mut state.queues[0], &mut rng.queues[0]] {
                match field {
                    0 => queue.desc_table = value,
                    1 => queue.avail_ring = value,
                    2 => queue.used_ring = value,
                    3 => queue.size = value as u16,
                    4 => queue.max_size = value as u16,
                    _ => {
                        queue.next_avail = value as u16;
                        queue.next_used = value as u16;
                    }
                }
            }
            let vq = MockSplitQueue::new(&mem, QUEUE_SIZE);
            let mut restored = rng_machine(&mem);
            if restored.transport.restore(&state).is_ok() {
                // Whatever was accepted must run without panicking.
                serve_request(&mut restored, &vq, 5);
            }
        }
    }
}
