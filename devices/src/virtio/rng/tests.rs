//! Tests for [`super`] (`device.rs`), with virtio-queue's mock driver.

use super::*;
use std::sync::atomic::Ordering;

use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::split::Descriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use vm_memory::GuestAddress;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::rate_limiter::TokenBucketConfig;
use crate::virtio::test_utils::{guest_memory, readable_within};

/// 16 MiB of guest memory; the queue at 0, buffers from 1 MiB.
const MEM_SIZE: usize = 0x100_0000;
const BUF_BASE: u64 = 0x10_0000;
const SLOT: u64 = 0x2_0000;
const W: u16 = VRING_DESC_F_WRITE as u16;
const NEXT: u16 = VRING_DESC_F_NEXT as u16;

struct Env<'a> {
    mem: &'a GuestMemoryMmap,
    vq: MockSplitQueue<'a, GuestMemoryMmap>,
    rng: Rng,
    irq: IrqTrigger,
}

impl<'a> Env<'a> {
    fn new(mem: &'a GuestMemoryMmap, limits: Option<RateLimiterConfig>) -> Env<'a> {
        let vq = MockSplitQueue::new(mem, QUEUE_SIZE);
        let mut rng = Rng::new(limits).unwrap();
        let irq = IrqTrigger::new(EventFd::new(EFD_NONBLOCK).unwrap());
        rng.activate(ActivateParams {
            mem: mem.clone(),
            queues: vec![vq.create_queue::<Queue>().unwrap()],
            acked_features: rng.avail_features(),
            irq: irq.clone(),
        })
        .unwrap();
        Env { mem, vq, rng, irq }
    }

    /// A chain at descriptor indices `first..` of (address, length, flags) buffers.
    fn add_chain(&self, first: u16, bufs: &[(u64, u32, u16)]) {
        let descs: Vec<RawDescriptor> = bufs
            .iter()
            .enumerate()
            .map(|(i, &(addr, len, flags))| {
                let last = i + 1 == bufs.len();
                let flags = if last { flags } else { flags | NEXT };
                let next = if last { 0 } else { first + i as u16 + 1 };
                RawDescriptor::from(Descriptor::new(addr, len, flags, next))
            })
            .collect();
        self.vq.add_desc_chains(&descs, first).unwrap();
    }

    /// One writable buffer of `len` bytes in `slot`.
    fn add_request(&self, slot: u64, len: u32) {
        self.add_chain((slot * 4) as u16, &[(buf(slot), len, W)]);
    }

    fn used(&self, i: usize) -> (u32, u32) {
        let elem = self.vq.used().ring().ref_at(i).unwrap().load();
        (elem.id(), elem.len())
    }

    fn used_idx(&self) -> u16 {
        self.vq.used().idx().load()
    }

    fn guest(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        self.mem.read_slice(&mut out, GuestAddress(addr)).unwrap();
        out
    }

    fn fill_guest(&self, addr: u64, byte: u8, len: usize) {
        self.mem
            .write_slice(&vec![byte; len], GuestAddress(addr))
            .unwrap();
    }

    fn fire_timer(&mut self) {
        let fd = self.rng.event_fds()[0].0;
        assert!(readable_within(fd, 5000), "timer never fired");
        self.rng.process_event(RATE_LIMITER_EVENT_TOKEN);
    }
}

fn buf(slot: u64) -> u64 {
    BUF_BASE + slot * SLOT
}

fn ops_limit(size: u64, refill_time_ms: u64) -> RateLimiterConfig {
    RateLimiterConfig {
        bandwidth: None,
        ops: Some(TokenBucketConfig {
            size,
            one_time_burst: 0,
            refill_time_ms,
        }),
    }
}

/// Whether `bytes` look random: not all one value.
fn looks_random(bytes: &[u8]) -> bool {
    bytes.iter().any(|&b| b != bytes[0])
}

#[test]
fn new_device_type_queue_features() {
    let rng = Rng::new(None).unwrap();

    assert_eq!(rng.device_type(), device_type::RNG);
    assert_eq!(rng.queue_max_sizes(), &[QUEUE_SIZE]);
    assert_eq!(rng.avail_features(), VIRTIO_F_VERSION_1);
    assert_eq!(rng.event_fds()[0].1, RATE_LIMITER_EVENT_TOKEN);
}

#[test]
fn read_config_all_zero() {
    let rng = Rng::new(None).unwrap();
    let mut data = [0xffu8; 8];

    rng.read_config(0, &mut data);

    assert_eq!(data, [0; 8]);
}

#[test]
fn process_queue_writable_buffer_filled_and_signalled() {
    let mem = guest_memory(MEM_SIZE);
    let mut env = Env::new(&mem, None);
    env.add_request(0, 256);

    env.rng.process_queue(0);

    assert_eq!(env.used_idx(), 1);
    assert_eq!(env.used(0), (0, 256));
    assert!(looks_random(&env.guest(buf(0), 256)));
    assert_ne!(env.irq.status() & VIRTIO_MMIO_INT_VRING, 0);
    let m = env.rng.metrics();
    assert_eq!(m.entropy_event_count.load(Ordering::Relaxed), 1);
    assert_eq!(m.entropy_bytes.load(Ordering::Relaxed), 256);
}

#[test]
fn process_queue_two_requests_different_bytes() {
    let mem = guest_memory(MEM_SIZE);
    let mut env = Env::new(&mem, None);
    env.add_request(0, 64);
    env.add_request(1, 64);

    env.rng.process_queue(0);

    assert_eq!(env.used_idx(), 2);
    assert_ne!(env.guest(buf(0), 64), env.guest(buf(1), 64));
}

#[test]
fn process_queue_read_only_descriptor_gets_nothing() {
    let mem = guest_memory(MEM_SIZE);
    let mut env = Env::new(&mem, None);
    env.fill_guest(buf(0), 0xaa, 64);
    env.add_chain(0, &[(buf(0), 64, 0)]);

    env.rng.process_queue(0);

    assert_eq!(env.used(0), (0, 0));
    assert_eq!(env.guest(buf(0), 64), vec![0xaa; 64]);
}

#[test]
fn process_queue_mixed_chain_only_writable_filled() {
    let mem = guest_memory(MEM_SIZE);
    let mut env = Env::new(&mem, None);
    env.fill_guest(buf(0), 0xaa, 64);
    env.add_chain(0, &[(buf(0), 64, 0), (buf(1), 32, W), (buf(2), 32, W)]);

    env.rng.process_queue(0);

    assert_eq!(env.used(0), (0, 64));
    assert_eq!(env.guest(buf(0), 64), vec![0xaa; 64]);
}

#[test]
fn process_queue_zero_length_used_zero() {
    let mem = guest_memory(MEM_SIZE);
    let mut env = Env::new(&mem, None);
    env.add_request(0, 0);

    env.rng.process_queue(0);

    assert_eq!(env.used(0), (0, 0));
}

#[test]
fn process_queue_huge_buffer_capped() {
    let mem = guest_memory(MEM_SIZE);
    let mut env = Env::new(&mem, None);
    let cap = MAX_REQUEST_BYTES as usize;
    env.fill_guest(buf(0), 0, cap + 16);
    env.add_chain(0, &[(buf(0), u32::MAX, W)]);

    env.rng.process_queue(0);

    assert_eq!(env.used(0), (0, MAX_REQUEST_BYTES));
    assert_eq!(env.guest(buf(0) + cap as u64, 16), vec![0; 16]);
}

#[test]
fn process_queue_buffer_outside_memory_used_zero() {
    let mem = guest_memory(MEM_SIZE);
    let mut env = Env::new(&mem, None);
    env.add_chain(0, &[(MEM_SIZE as u64 - 8, 64, W)]);
    env.add_chain(1, &[(u64::MAX - 8, 64, W)]);

    env.rng.process_queue(0);

    assert_eq!(env.used_idx(), 2);
    assert_eq!(env.used(0), (0, 0));
    assert_eq!(env.used(1), (1, 0));
    assert_eq!(env.rng.metrics().entropy_bytes.load(Ordering::Relaxed), 0);
}

#[test]
fn process_queue_descriptor_loop_bounded() {
    let mem = guest_memory(MEM_SIZE);
    let mut env = Env::new(&mem, None);
    let looping = Descriptor::new(buf(0), 16, W | NEXT, 0);
    env.vq
        .add_desc_chains(&[RawDescriptor::from(looping)], 0)
        .unwrap();

    env.rng.process_queue(0);

    assert_eq!(env.used_idx(), 1);
    assert!(env.used(0).1 <= MAX_REQUEST_BYTES);
}

#[test]
fn process_queue_over_long_indirect_chain_used_zero() {
    let mem = guest_memory(MEM_SIZE);
    let mut env = Env::new(&mem, None);
    let table = 0x80_0000u64;
    let count = 300u16;
    for i in 0..count {
        let flags = if i + 1 < count { W | NEXT } else { W };
        let desc = Descriptor::new(buf(0), 16, flags, i + 1);
        mem.write_obj(desc, GuestAddress(table + u64::from(i) * 16))
            .unwrap();
    }
    env.add_chain(
        0,
        &[(table, u32::from(count) * 16, VRING_DESC_F_INDIRECT as u16)],
    );

    env.rng.process_queue(0);

    assert_eq!(env.used(0), (0, 0));
}

#[test]
fn process_queue_head_outside_table_needs_reset() {
    let mem = guest_memory(MEM_SIZE);
    let mut env = Env::new(&mem, None);
    env.vq.avail().ring().ref_at(0).unwrap().store(1000);
    env.vq.avail().idx().store(1);

    env.rng.process_queue(0);

    // Not returned to the used ring (virtio-queue would refuse and log it).
    assert_eq!(env.used_idx(), 0);
    assert!(env.irq.needs_reset());
}

#[test]
fn process_queue_broken_avail_index_needs_reset() {
    let mem = guest_memory(MEM_SIZE);
    let mut env = Env::new(&mem, None);
    env.vq.avail().idx().store(1000);

    env.rng.process_queue(0);

    assert_eq!(env.used_idx(), 0);
    assert!(env.irq.needs_reset());
}

#[test]
fn process_queue_after_failure_ignored() {
    let mem = guest_memory(MEM_SIZE);
    let mut env = Env::new(&mem, None);
    env.add_request(0, 16);
    env.irq.fail();

    env.rng.process_queue(0);

    assert_eq!(env.used_idx(), 0);
}

#[test]
fn process_queue_throttled_resumed_by_timer_once() {
    let mem = guest_memory(MEM_SIZE);
    let mut env = Env::new(&mem, Some(ops_limit(1, 30)));
    env.add_request(0, 32);
    env.add_request(1, 32);

    env.rng.process_queue(0);
    assert_eq!(env.used_idx(), 1);
    env.rng.process_queue(0);
    assert_eq!(env.used_idx(), 1, "held back while throttled");
    let m = env.rng.metrics();
    assert_eq!(m.entropy_rate_limiter_throttled.load(Ordering::Relaxed), 1);

    env.fire_timer();

    assert_eq!(env.used_idx(), 2);
    assert_eq!(env.used(1), (4, 32));
    env.rng.process_queue(0);
    assert_eq!(env.used_idx(), 2, "no duplicate");
}

#[test]
fn process_queue_bandwidth_throttled_by_bytes() {
    let mem = guest_memory(MEM_SIZE);
    let limits = RateLimiterConfig {
        bandwidth: Some(TokenBucketConfig {
            size: 100,
            one_time_burst: 0,
            refill_time_ms: 100_000,
        }),
        ops: None,
    };
    let mut env = Env::new(&mem, Some(limits));
    env.add_request(0, 60);
    env.add_request(1, 60);

    env.rng.process_queue(0);

    assert_eq!(env.used_idx(), 1);
}

#[test]
fn update_rate_limiter_unthrottles() {
    let mem = guest_memory(MEM_SIZE);
    let mut env = Env::new(&mem, Some(ops_limit(1, 100_000)));
    env.add_request(0, 32);
    env.add_request(1, 32);
    env.rng.process_queue(0);
    assert_eq!(env.used_idx(), 1);

    env.rng.update_rate_limiter(&RateLimiterConfig::default());
    env.fire_timer();

    assert_eq!(env.used_idx(), 2);
}

#[test]
fn activate_wrong_queue_count_counted() {
    let mem = guest_memory(MEM_SIZE);
    let vq = MockSplitQueue::new(&mem, QUEUE_SIZE);
    let mut rng = Rng::new(None).unwrap();

    let result = rng.activate(ActivateParams {
        mem: mem.clone(),
        queues: vec![
            vq.create_queue::<Queue>().unwrap(),
            vq.create_queue::<Queue>().unwrap(),
        ],
        acked_features: VIRTIO_F_VERSION_1,
        irq: IrqTrigger::new(EventFd::new(EFD_NONBLOCK).unwrap()),
    });

    assert!(matches!(
        result,
        Err(ActivateError::QueueCount {
            expected: 1,
            got: 2
        })
    ));
    assert_eq!(rng.metrics().activate_fails.load(Ordering::Relaxed), 1);
}

#[test]
fn process_queue_after_reset_ignored() {
    let mem = guest_memory(MEM_SIZE);
    let mut env = Env::new(&mem, None);
    env.add_request(0, 32);

    env.rng.reset();
    env.rng.process_queue(0);
    env.rng.process_queue(3);
    env.rng.process_event(9);

    assert_eq!(env.used_idx(), 0);
}

#[test]
fn fill_random_large_buffer_filled() {
    let mut buf = vec![0u8; 1 << 20];

    fill_random(&mut buf).unwrap();

    assert!(looks_random(&buf[(1 << 20) - 64..]));
}
