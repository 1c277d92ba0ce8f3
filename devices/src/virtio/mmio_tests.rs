//! Tests of the virtio-mmio transport.

use super::*;
use crate::virtio::test_utils::{
    guest_memory, DummyDevice, DUMMY_CONFIG_SIZE, DUMMY_DEVICE_TYPE, DUMMY_FEATURE,
    DUMMY_QUEUE_MAX_SIZES,
};
use crate::virtio::VIRTIO_MMIO_INT_VRING;

/// Guest memory of the fixture: 64 KiB at address 0.
const MEM_SIZE: u64 = 0x1_0000;
/// VIRTIO_F_EVENT_IDX as a feature mask.
const EVENT_IDX: u64 = 1 << VIRTIO_RING_F_EVENT_IDX;

/// Ring addresses of one queue.
#[derive(Clone, Copy, Debug)]
struct Rings {
    desc: u64,
    avail: u64,
    used: u64,
}

/// Well-formed rings for queue `index`: one page each, inside [`MEM_SIZE`].
fn rings(index: u32) -> Rings {
    let base = 0x1000 + u64::from(index) * 0x3000;
    Rings {
        desc: base,
        avail: base + 0x1000,
        used: base + 0x2000,
    }
}

struct Fixture {
    transport: MmioTransport,
    device: Arc<Mutex<DummyDevice>>,
    irq: IrqTrigger,
}

fn fixture_with(device: DummyDevice) -> Fixture {
    let device = Arc::new(Mutex::new(device));
    let irq = IrqTrigger::new(EventFd::new(EFD_NONBLOCK).unwrap());
    let mem = guest_memory(usize::try_from(MEM_SIZE).unwrap());
    let transport = MmioTransport::new(mem, device.clone(), irq.clone()).unwrap();
    Fixture {
        transport,
        device,
        irq,
    }
}

fn fixture() -> Fixture {
    fixture_with(DummyDevice::default())
}

impl Fixture {
    fn read(&mut self, offset: u64) -> u32 {
        let mut data = [0u8; 4];
        self.transport.read(offset, &mut data);
        u32::from_le_bytes(data)
    }

    fn write(&mut self, offset: u64, value: u32) {
        self.transport.write(offset, &value.to_le_bytes());
    }

    fn status(&mut self) -> u32 {
        self.read(regs::STATUS)
    }

    fn write_driver_features(&mut self, features: u64) {
        self.write(regs::DRIVER_FEATURES_SEL, FEATURES_SEL_LOW);
        self.write(regs::DRIVER_FEATURES, features as u32);
        self.write(regs::DRIVER_FEATURES_SEL, FEATURES_SEL_HIGH);
        self.write(regs::DRIVER_FEATURES, (features >> 32) as u32);
    }

    /// ACKNOWLEDGE, DRIVER, accept `features`, FEATURES_OK.
    fn negotiate_with(&mut self, features: u64) {
        self.write(regs::STATUS, ACKNOWLEDGE);
        self.write(regs::STATUS, ACKNOWLEDGE | DRIVER);
        self.write_driver_features(features);
        self.write(regs::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
    }

    /// Negotiation accepting everything the device offers.
    fn negotiate(&mut self) {
        self.negotiate_with(u64::MAX);
        assert_eq!(self.status(), ACKNOWLEDGE | DRIVER | FEATURES_OK);
    }

    /// Configures queue `index` and writes QueueReady = 1.
    fn setup_queue(&mut self, index: u32, size: u32, rings: Rings) {
        self.write(regs::QUEUE_SEL, index);
        self.write(regs::QUEUE_NUM, size);
        self.write(regs::QUEUE_DESC_LOW, rings.desc as u32);
        self.write(regs::QUEUE_DESC_HIGH, (rings.desc >> 32) as u32);
        self.write(regs::QUEUE_DRIVER_LOW, rings.avail as u32);
        self.write(regs::QUEUE_DRIVER_HIGH, (rings.avail >> 32) as u32);
        self.write(regs::QUEUE_DEVICE_LOW, rings.used as u32);
        self.write(regs::QUEUE_DEVICE_HIGH, (rings.used >> 32) as u32);
        self.write(regs::QUEUE_READY, QUEUE_READY_ON);
    }

    /// Sets up every queue of the dummy device at its maximum size.
    fn setup_queues(&mut self) {
        for (index, max_size) in (0..).zip(DUMMY_QUEUE_MAX_SIZES) {
            self.setup_queue(index, u32::from(max_size), rings(index));
            assert_eq!(self.queue_ready(index), QUEUE_READY_ON);
        }
    }

    fn queue_ready(&mut self, index: u32) -> u32 {
        self.write(regs::QUEUE_SEL, index);
        self.read(regs::QUEUE_READY)
    }

    fn driver_ok(&mut self) {
        let status = self.status();
        self.write(regs::STATUS, status | DRIVER_OK);
    }

    /// The whole driver initialization sequence.
    fn activate(&mut self) {
        self.negotiate();
        self.setup_queues();
        self.driver_ok();
        assert!(self.transport.is_activated());
    }

    fn dev(&self) -> MutexGuard<'_, DummyDevice> {
        self.device.lock().unwrap()
    }
}

fn is_signalled(evt: &EventFd) -> bool {
    evt.read().is_ok()
}

#[test]
fn identification_registers_report_magic_version_and_ids() {
    let mut f = fixture();

    assert_eq!(f.read(regs::MAGIC_VALUE), 0x7472_6976);
    assert_eq!(f.read(regs::VERSION), 2);
    assert_eq!(f.read(regs::DEVICE_ID), DUMMY_DEVICE_TYPE);
    assert_eq!(f.read(regs::VENDOR_ID), VENDOR_ID);
    assert_eq!(f.read(regs::CONFIG_GENERATION), 0);
}

#[test]
fn config_generation_follows_the_device() {
    let mut f = fixture();

    f.dev().config_generation = 7;

    assert_eq!(f.read(regs::CONFIG_GENERATION), 7);
}

#[test]
fn shm_registers_report_no_region() {
    let mut f = fixture();
    f.write(regs::SHM_SEL, 0);

    for offset in [
        regs::SHM_LEN_LOW,
        regs::SHM_LEN_HIGH,
        regs::SHM_BASE_LOW,
        regs::SHM_BASE_HIGH,
    ] {
        assert_eq!(f.read(offset), u32::MAX, "{offset:#x}");
    }
}

#[test]
fn new_invalid_queue_max_size_fails() {
    for max_size in [0, 3, 0x8001] {
        let device = DummyDevice {
            queue_max_sizes: vec![16, max_size],
            ..DummyDevice::default()
        };
        let irq = IrqTrigger::new(EventFd::new(EFD_NONBLOCK).unwrap());

        let result = MmioTransport::new(guest_memory(0x1000), Arc::new(Mutex::new(device)), irq);

        assert!(
            matches!(result, Err(Error::QueueMaxSize { index: 1, max_size: m, .. }) if m == max_size),
            "{max_size}: {result:?}"
        );
    }
}

#[test]
fn device_features_each_select_reports_its_word() {
    let mut f = fixture();
    let offered = VIRTIO_F_VERSION_1 | DUMMY_FEATURE;
    let cases = [
        (FEATURES_SEL_LOW, offered as u32),
        (FEATURES_SEL_HIGH, (offered >> 32) as u32),
        (2, 0),
        (u32::MAX, 0),
    ];

    for (select, expected) in cases {
        f.write(regs::DEVICE_FEATURES_SEL, select);
        assert_eq!(f.read(regs::DEVICE_FEATURES), expected, "select {select}");
    }
}

#[test]
fn driver_features_unoffered_bits_dropped() {
    let mut f = fixture();
    f.write(regs::STATUS, ACKNOWLEDGE);
    f.write(regs::STATUS, ACKNOWLEDGE | DRIVER);

    f.write_driver_features(u64::MAX);

    assert_eq!(
        f.transport.acked_features,
        VIRTIO_F_VERSION_1 | DUMMY_FEATURE
    );
}

#[test]
fn driver_features_outside_negotiation_ignored() {
    let mut f = fixture();

    // Before DRIVER.
    f.write(regs::STATUS, ACKNOWLEDGE);
    f.write_driver_features(u64::MAX);
    assert_eq!(f.transport.acked_features, 0);

    // After FEATURES_OK.
    f.write(regs::STATUS, ACKNOWLEDGE | DRIVER);
    f.write_driver_features(VIRTIO_F_VERSION_1);
    f.write(regs::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
    f.write_driver_features(u64::MAX);
    assert_eq!(f.transport.acked_features, VIRTIO_F_VERSION_1);
}

#[test]
fn driver_features_invalid_select_ignored() {
    let mut f = fixture();
    f.write(regs::STATUS, ACKNOWLEDGE);
    f.write(regs::STATUS, ACKNOWLEDGE | DRIVER);

    f.write(regs::DRIVER_FEATURES_SEL, 2);
    f.write(regs::DRIVER_FEATURES, u32::MAX);

    assert_eq!(f.transport.acked_features, 0);
}

#[test]
fn features_ok_without_version_1_refused() {
    let mut f = fixture();

    f.negotiate_with(DUMMY_FEATURE);

    assert_eq!(f.status(), ACKNOWLEDGE | DRIVER);
    // The driver may still fix its choice.
    f.write_driver_features(VIRTIO_F_VERSION_1);
    f.write(regs::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
    assert_eq!(f.status(), ACKNOWLEDGE | DRIVER | FEATURES_OK);
}

#[test]
fn status_transition_table_only_next_step_or_failed() {
    const A: u32 = ACKNOWLEDGE;
    const AD: u32 = ACKNOWLEDGE | DRIVER;
    const ADF: u32 = AD | FEATURES_OK;
    const ADFO: u32 = ADF | DRIVER_OK;
    /// Not a status bit of virtio 1.2.
    const UNDEFINED: u32 = 1 << 4;
    let cases = [
        (0, A, true),
        (0, FAILED, true),
        (0, DRIVER, false),
        (0, AD, false),
        (A, A, true),
        (A, AD, true),
        (A, A | FEATURES_OK, false),
        (A, DRIVER, false),
        (AD, A, false),
        (AD, AD | DRIVER_OK, false),
        (AD, ADF, true),
        (AD, AD | FAILED, true),
        (ADF, ADFO, true),
        (ADF, ADFO | UNDEFINED, false),
        (ADF, ADF | UNDEFINED, false),
        (ADFO, ADFO | FAILED, true),
        (ADFO, AD | DRIVER_OK, false),
        (A | FAILED, AD | FAILED, false),
        (FAILED, FAILED, true),
    ];

    for (current, requested, valid) in cases {
        assert_eq!(
            is_valid_status_transition(current, requested),
            valid,
            "{current:#x} -> {requested:#x}"
        );
    }
}

#[test]
fn status_out_of_order_ignored() {
    let mut f = fixture();

    f.write(regs::STATUS, DRIVER);
    assert_eq!(f.status(), 0);
    f.write(regs::STATUS, ACKNOWLEDGE);
    f.write(regs::STATUS, ACKNOWLEDGE | FEATURES_OK);
    assert_eq!(f.status(), ACKNOWLEDGE);
    f.write(regs::STATUS, ACKNOWLEDGE | DRIVER);
    f.write(regs::STATUS, ACKNOWLEDGE | DRIVER | DRIVER_OK);
    assert_eq!(f.status(), ACKNOWLEDGE | DRIVER);
    f.write(regs::STATUS, ACKNOWLEDGE);
    assert_eq!(f.status(), ACKNOWLEDGE | DRIVER);

    assert_eq!(f.dev().activate_calls, 0);
}

#[test]
fn status_failed_accepted_in_any_state_and_blocks_progress() {
    let mut f = fixture();
    f.write(regs::STATUS, ACKNOWLEDGE);
    f.write(regs::STATUS, ACKNOWLEDGE | DRIVER);

    f.write(regs::STATUS, ACKNOWLEDGE | DRIVER | FAILED);
    assert_eq!(f.status(), ACKNOWLEDGE | DRIVER | FAILED);

    f.write_driver_features(VIRTIO_F_VERSION_1);
    f.write(regs::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK | FAILED);
    assert_eq!(f.status(), ACKNOWLEDGE | DRIVER | FAILED);
}

#[test]
fn driver_ok_all_queues_ready_activates_device_with_queues() {
    let mut f = fixture();

    f.activate();

    assert_eq!(f.status(), ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
    let dev = f.dev();
    assert_eq!(dev.activate_calls, 1);
    let params = dev.activation.as_ref().unwrap();
    assert_eq!(params.acked_features, VIRTIO_F_VERSION_1 | DUMMY_FEATURE);
    assert_eq!(params.queues.len(), DUMMY_QUEUE_MAX_SIZES.len());
    for ((index, queue), max_size) in (0..).zip(&params.queues).zip(DUMMY_QUEUE_MAX_SIZES) {
        let expected = rings(index);
        assert!(queue.ready(), "queue {index}");
        assert_eq!(queue.size(), max_size);
        assert_eq!(queue.desc_table(), expected.desc);
        assert_eq!(queue.avail_ring(), expected.avail);
        assert_eq!(queue.used_ring(), expected.used);
        assert!(!queue.event_idx_enabled());
    }
}

#[test]
fn driver_ok_event_idx_accepted_queues_use_event_idx() {
    let mut f = fixture_with(DummyDevice {
        avail_features: VIRTIO_F_VERSION_1 | EVENT_IDX,
        ..DummyDevice::default()
    });

    f.activate();

    let dev = f.dev();
    let params = dev.activation.as_ref().unwrap();
    assert!(params.queues.iter().all(|queue| queue.event_idx_enabled()));
}

#[test]
fn queue_smaller_than_max_accepted() {
    let mut f = fixture();
    f.negotiate();

    f.setup_queue(1, 4, rings(1));

    assert_eq!(f.queue_ready(1), QUEUE_READY_ON);
    assert_eq!(f.transport.queues[1].size(), 4);
}

#[test]
fn queue_num_max_reports_max_and_zero_for_missing_queue() {
    let mut f = fixture();

    for (index, max_size) in (0..).zip(DUMMY_QUEUE_MAX_SIZES) {
        f.write(regs::QUEUE_SEL, index);
        assert_eq!(f.read(regs::QUEUE_NUM_MAX), u32::from(max_size));
    }
    for index in [2, u32::MAX] {
        f.write(regs::QUEUE_SEL, index);
        assert_eq!(f.read(regs::QUEUE_NUM_MAX), 0);
        assert_eq!(f.read(regs::QUEUE_READY), QUEUE_READY_OFF);
    }
}

#[test]
fn queue_ready_invalid_size_refused() {
    // Queue 0 has maximum size 16.
    for size in [0, 3, 12, 32, 0x1_0000, u32::MAX] {
        let mut f = fixture();
        f.negotiate();

        f.setup_queue(0, size, rings(0));

        assert_eq!(f.queue_ready(0), QUEUE_READY_OFF, "size {size}");
    }
}

#[test]
fn queue_ready_rings_outside_memory_refused() {
    let good = rings(0);
    let cases = [
        // The 16-entry descriptor table (256 bytes) runs past the end.
        Rings {
            desc: MEM_SIZE - 0x80,
            ..good
        },
        Rings {
            desc: MEM_SIZE,
            ..good
        },
        Rings {
            desc: 1 << 32,
            ..good
        },
        Rings {
            desc: u64::MAX - 0xf,
            ..good
        },
        // The driver area is 4 + 2 * 16 + 2 = 38 bytes.
        Rings {
            avail: MEM_SIZE - 36,
            ..good
        },
        // The device area is 4 + 8 * 16 + 2 = 134 bytes.
        Rings {
            used: MEM_SIZE - 132,
            ..good
        },
        Rings {
            used: u64::MAX - 0x3,
            ..good
        },
    ];

    for rings in cases {
        let mut f = fixture();
        f.negotiate();

        f.setup_queue(0, 16, rings);

        assert_eq!(f.queue_ready(0), QUEUE_READY_OFF, "{rings:x?}");
    }
}

#[test]
fn queue_ready_rings_ending_at_memory_end_accepted() {
    let mut f = fixture();
    f.negotiate();

    f.setup_queue(
        0,
        16,
        Rings {
            desc: MEM_SIZE - 256,
            avail: MEM_SIZE - 0x200,
            used: MEM_SIZE - 0x400,
        },
    );

    assert_eq!(f.queue_ready(0), QUEUE_READY_ON);
}

#[test]
fn queue_ready_misaligned_rings_refused() {
    let good = rings(0);
    let cases = [
        Rings {
            desc: good.desc + 8,
            ..good
        },
        Rings {
            avail: good.avail + 1,
            ..good
        },
        Rings {
            used: good.used + 2,
            ..good
        },
    ];

    for rings in cases {
        let mut f = fixture();
        f.negotiate();

        f.setup_queue(0, 16, rings);

        assert_eq!(f.queue_ready(0), QUEUE_READY_OFF, "{rings:x?}");
    }
}

#[test]
fn queue_ready_invalid_value_ignored() {
    let mut f = fixture();
    f.negotiate();

    f.setup_queue(0, 16, rings(0));
    f.write(regs::QUEUE_READY, 2);

    assert_eq!(f.queue_ready(0), QUEUE_READY_ON);
}

#[test]
fn queue_setup_before_features_ok_ignored() {
    let mut f = fixture();
    f.write(regs::STATUS, ACKNOWLEDGE);
    f.write(regs::STATUS, ACKNOWLEDGE | DRIVER);

    f.setup_queue(0, 16, rings(0));

    assert_eq!(f.queue_ready(0), QUEUE_READY_OFF);
    assert_eq!(f.transport.queue_configs[0].size, 0);
}

#[test]
fn queue_config_of_ready_queue_ignored() {
    let mut f = fixture();
    f.negotiate();
    f.setup_queue(0, 16, rings(0));

    f.write(regs::QUEUE_NUM, 4);
    f.write(regs::QUEUE_DESC_LOW, 0x8000);

    let config = f.transport.queue_configs[0];
    assert_eq!(config.size, 16);
    assert_eq!(config.desc_table, rings(0).desc);
}

#[test]
fn queue_ready_zero_before_driver_ok_allows_reconfiguration() {
    let mut f = fixture();
    f.negotiate();
    f.setup_queue(0, 16, rings(0));

    f.write(regs::QUEUE_READY, QUEUE_READY_OFF);
    assert_eq!(f.queue_ready(0), QUEUE_READY_OFF);
    f.setup_queue(0, 8, rings(0));

    assert_eq!(f.queue_ready(0), QUEUE_READY_ON);
    assert_eq!(f.transport.queues[0].size(), 8);
}

#[test]
fn queue_registers_after_driver_ok_ignored() {
    let mut f = fixture();
    f.activate();

    f.write(regs::QUEUE_SEL, 0);
    f.write(regs::QUEUE_READY, QUEUE_READY_OFF);
    f.write(regs::QUEUE_NUM, 4);

    assert_eq!(f.queue_ready(0), QUEUE_READY_ON);
    assert_eq!(f.transport.queue_configs[0].size, 16);
}

#[test]
fn driver_ok_with_unready_queue_needs_reset_not_activated() {
    let mut f = fixture();
    f.negotiate();
    f.setup_queue(0, 16, rings(0));

    f.driver_ok();

    assert_eq!(
        f.status(),
        ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK | NEEDS_RESET
    );
    assert!(!f.transport.is_activated());
    assert_eq!(f.dev().activate_calls, 0);
    assert_eq!(f.irq.status(), VIRTIO_MMIO_INT_CONFIG);
    assert!(is_signalled(f.irq.eventfd()));
}

#[test]
fn driver_ok_activation_error_needs_reset() {
    let mut f = fixture_with(DummyDevice {
        fail_activation: true,
        ..DummyDevice::default()
    });
    f.negotiate();
    f.setup_queues();

    f.driver_ok();

    assert_eq!(f.status() & NEEDS_RESET, NEEDS_RESET);
    assert!(!f.transport.is_activated());
    assert_eq!(f.dev().activate_calls, 1);
    assert_eq!(f.irq.status(), VIRTIO_MMIO_INT_CONFIG);
}

#[test]
fn needs_reset_cleared_by_reset_only() {
    let mut f = fixture();
    f.negotiate();
    f.driver_ok();
    let status = f.status();
    assert_eq!(status & NEEDS_RESET, NEEDS_RESET);

    // The driver writing its own view of the status back changes nothing.
    f.write(regs::STATUS, status & !NEEDS_RESET);
    assert_eq!(f.status(), status);

    f.write(regs::STATUS, 0);
    assert_eq!(f.status(), 0);
}

#[test]
fn reset_after_activation_resets_device_and_clears_state() {
    let mut f = fixture();
    f.activate();
    f.irq.trigger(VIRTIO_MMIO_INT_VRING).unwrap();
    f.write(regs::QUEUE_SEL, 1);
    f.write(regs::DEVICE_FEATURES_SEL, 1);

    f.write(regs::STATUS, 0);

    assert_eq!(f.dev().reset_calls, 1);
    assert!(!f.transport.is_activated());
    assert_eq!(f.status(), 0);
    assert_eq!(f.transport.acked_features, 0);
    assert_eq!(f.transport.queue_sel, 0);
    assert_eq!(f.transport.device_features_sel, 0);
    assert_eq!(f.read(regs::INTERRUPT_STATUS), 0);
    for index in 0..2 {
        assert_eq!(f.queue_ready(index), QUEUE_READY_OFF);
        assert_eq!(f.transport.queue_configs[index as usize].size, 0);
    }

    // The driver can start over.
    f.activate();
    assert_eq!(f.dev().activate_calls, 2);
}

#[test]
fn reset_before_activation_leaves_device_alone() {
    let mut f = fixture();
    f.negotiate();

    f.write(regs::STATUS, 0);

    assert_eq!(f.dev().reset_calls, 0);
    assert_eq!(f.status(), 0);
}

#[test]
fn queue_notify_valid_index_signals_that_eventfd() {
    let mut f = fixture();

    f.write(NOTIFY_REG_OFFSET, 1);

    assert!(!is_signalled(&f.transport.queue_evts()[0]));
    assert!(is_signalled(&f.transport.queue_evts()[1]));
}

#[test]
fn queue_notify_invalid_index_signals_nothing() {
    let mut f = fixture();

    f.write(NOTIFY_REG_OFFSET, 2);
    f.write(NOTIFY_REG_OFFSET, u32::MAX);

    assert!(f.transport.queue_evts().iter().all(|e| !is_signalled(e)));
}

#[test]
fn process_queue_before_activation_not_forwarded() {
    let mut f = fixture();
    f.write(NOTIFY_REG_OFFSET, 0);

    f.transport.process_queue(0);

    assert!(f.dev().processed.is_empty());
    assert!(!is_signalled(&f.transport.queue_evts()[0]), "not drained");
}

#[test]
fn device_failure_shows_needs_reset_and_stops_notifications() {
    let mut f = fixture();
    f.activate();
    let running = f.status();

    assert!(f.irq.fail());
    assert!(!f.irq.fail(), "a second failure is not news");
    f.transport.process_queue(0);

    assert_eq!(f.status(), running | NEEDS_RESET);
    assert_ne!(f.irq.status() & VIRTIO_MMIO_INT_CONFIG, 0);
    assert!(f.dev().processed.is_empty());
}

#[test]
fn device_failure_cleared_by_reset() {
    let mut f = fixture();
    f.activate();
    f.irq.fail();

    f.write(regs::STATUS, 0);
    f.activate();
    f.transport.process_queue(0);

    assert_eq!(f.status() & NEEDS_RESET, 0);
    assert_eq!(f.dev().processed, vec![0]);
}

#[test]
fn process_queue_after_activation_forwarded() {
    let mut f = fixture();
    f.activate();
    f.write(NOTIFY_REG_OFFSET, 1);

    f.transport.process_queue(1);
    f.transport.process_queue(0);
    f.transport.process_queue(2);

    assert_eq!(f.dev().processed, vec![1, 0]);
    assert!(!is_signalled(&f.transport.queue_evts()[1]), "not drained");
}

#[test]
fn interrupt_ack_clears_acknowledged_bits() {
    let mut f = fixture();
    f.irq
        .trigger(VIRTIO_MMIO_INT_VRING | VIRTIO_MMIO_INT_CONFIG)
        .unwrap();
    assert_eq!(
        f.read(regs::INTERRUPT_STATUS),
        VIRTIO_MMIO_INT_VRING | VIRTIO_MMIO_INT_CONFIG
    );

    f.write(regs::INTERRUPT_ACK, VIRTIO_MMIO_INT_VRING);

    assert_eq!(f.read(regs::INTERRUPT_STATUS), VIRTIO_MMIO_INT_CONFIG);
}

#[test]
fn config_space_reads_any_width_forwarded() {
    let mut f = fixture();

    for width in 1..=8 {
        let mut data = vec![0xaa; width];
        f.transport.read(regs::CONFIG + 3, &mut data);
        let expected: Vec<u8> = (3..).take(width).collect();
        assert_eq!(data, expected, "width {width}");
    }
}

#[test]
fn config_space_read_past_device_config_zero_filled() {
    let mut f = fixture();
    let last = u64::try_from(DUMMY_CONFIG_SIZE).unwrap() - 1;
    let mut data = [0xaa; 4];

    f.transport.read(regs::CONFIG + last, &mut data);

    assert_eq!(data, [0x0f, 0, 0, 0]);
}

#[test]
fn config_space_access_past_window_ignored() {
    let mut f = fixture();
    let mut data = [0xaa; 4];

    f.transport.read(MMIO_WINDOW_SIZE - 2, &mut data);
    f.transport.write(MMIO_WINDOW_SIZE - 2, &data);
    f.transport.read(u64::MAX, &mut data);

    assert_eq!(data, [0; 4]);
    assert!(f.dev().config_writes.is_empty());
}

#[test]
fn config_space_writes_forwarded_with_config_offset() {
    let mut f = fixture();

    f.transport.write(regs::CONFIG + 5, &[1, 2, 3]);

    assert_eq!(f.dev().config_writes, vec![(5, vec![1, 2, 3])]);
}

#[test]
fn register_access_of_wrong_width_ignored() {
    let mut f = fixture();

    for width in [0, 1, 2, 3, 8] {
        let mut data = vec![0xaa; width];
        f.transport.read(regs::MAGIC_VALUE, &mut data);
        assert!(data.iter().all(|&b| b == 0), "width {width}");

        let mut value = vec![0; width];
        if let Some(first) = value.first_mut() {
            *first = ACKNOWLEDGE as u8;
        }
        f.transport.write(regs::STATUS, &value);
        assert_eq!(f.status(), 0, "width {width}");
    }
}

#[test]
fn read_of_write_only_or_unknown_register_zero() {
    let mut f = fixture();
    f.negotiate();
    f.setup_queue(0, 16, rings(0));

    for offset in [
        regs::QUEUE_NUM,
        regs::QUEUE_DESC_LOW,
        regs::QUEUE_NOTIFY,
        0x2,
        0xc0,
    ] {
        assert_eq!(f.read(offset), 0, "{offset:#x}");
    }
}

#[test]
fn guest_access_any_offset_or_width_never_panics() {
    let patterns = [0x00u8, 0x01, 0x0f, 0xff];
    for setup in 0..3 {
        let mut f = fixture();
        match setup {
            0 => {}
            1 => f.negotiate(),
            _ => f.activate(),
        }
        for offset in (0..0x200).chain([MMIO_WINDOW_SIZE - 1, u64::MAX - 8, u64::MAX]) {
            for width in 0..9 {
                let mut data = vec![0u8; width];
                f.transport.read(offset, &mut data);
                for pattern in patterns {
                    f.transport.write(offset, &vec![pattern; width]);
                }
            }
        }
        f.transport.process_queue(usize::MAX);
    }
}
