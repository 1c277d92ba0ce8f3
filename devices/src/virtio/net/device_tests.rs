//! Tests for [`super`] (`device.rs`): a mock TAP, and a guest simulated with
//! virtio-queue's `MockSplitQueue`. The real TAP is exercised in `tap_tests.rs`.

use super::*;

use vm_memory::{Bytes, GuestAddress};

use crate::virtio::net::test_utils::*;
use crate::virtio::net::{MAX_FRAME_LEN, RX_FRAMES_PER_PASS};
use crate::virtio::{VIRTIO_MMIO_INT_CONFIG, VIRTIO_MMIO_INT_VRING};

#[test]
fn net_identity_type_and_two_queues() {
    let (net, _) = net();

    assert_eq!(net.device_type(), device_type::NET);
    assert_eq!(net.queue_max_sizes(), &[256, 256]);
    assert_eq!(net.tap_name(), "mocktap");
    assert_eq!(net.mac(), MAC);
}

#[test]
fn avail_features_all_offloads_offered_in_both_directions() {
    let (net, _) = net();

    assert_eq!(
        net.avail_features(),
        VIRTIO_F_VERSION_1
            | features::MAC
            | features::STATUS
            | features::CSUM
            | features::GUEST_CSUM
            | features::HOST_TSO4
            | features::GUEST_TSO4
            | features::HOST_TSO6
            | features::GUEST_TSO6
            | features::HOST_UFO
            | features::GUEST_UFO
    );
}

#[test]
fn avail_features_no_tap_offloads_only_basics() {
    let (net, _) = net_with(0);

    assert_eq!(
        net.avail_features(),
        VIRTIO_F_VERSION_1 | features::MAC | features::STATUS
    );
}

#[test]
fn avail_features_checksum_only_no_segmentation() {
    let (net, _) = net_with(offload::CSUM);

    assert_eq!(
        net.avail_features(),
        VIRTIO_F_VERSION_1
            | features::MAC
            | features::STATUS
            | features::CSUM
            | features::GUEST_CSUM
    );
}

#[test]
fn avail_features_segmentation_without_checksum_not_offered() {
    let (net, _) = net_with(offload::TSO4 | offload::TSO6);

    assert_eq!(net.avail_features() & features::HOST_TSO4, 0);
    assert_eq!(net.avail_features() & features::GUEST_TSO4, 0);
}

#[test]
fn probe_offloads_ufo_refused_left_out_and_reset_to_none() {
    let mut tap = MockTap::new();
    tap.state().supported = offload::CSUM | offload::TSO4 | offload::TSO6;

    let supported = probe_offloads(&mut tap);

    assert_eq!(supported, offload::CSUM | offload::TSO4 | offload::TSO6);
    assert_eq!(tap.state().offloads.last(), Some(&0));
}

#[test]
fn probe_offloads_no_checksum_nothing_else_tried() {
    let mut tap = MockTap::new();
    tap.state().supported = 0;

    let supported = probe_offloads(&mut tap);

    assert_eq!(supported, 0);
    assert_eq!(tap.state().offloads, vec![offload::CSUM, 0]);
}

#[test]
fn read_config_mac_then_link_up_status() {
    let (net, _) = net();

    assert_eq!(
        config(&net),
        [0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 1, 0, 0, 0, 0, 0]
    );
}

#[test]
fn read_config_partial_and_out_of_range_reads() {
    let (net, _) = net();
    let mut status = [0xffu8; 2];
    let mut tail = [0xffu8; 4];
    let mut far = [0xffu8; 4];

    net.read_config(CONFIG_STATUS_OFFSET as u64, &mut status);
    net.read_config(6, &mut tail);
    net.read_config(u64::MAX, &mut far);

    assert_eq!(status, [1, 0]);
    assert_eq!(tail, [1, 0, 0, 0]);
    assert_eq!(far, [0; 4]);
}

#[test]
fn write_config_ignored() {
    let (mut net, _) = net();

    net.write_config(0, &[1, 2, 3, 4, 5, 6]);

    assert_eq!(config(&net)[..6], MAC);
}

#[test]
fn default_mac_stable_local_unicast() {
    let mac = default_mac("tap0");

    assert_eq!(mac, default_mac("tap0"));
    assert_eq!(mac[0], 0x52);
    assert_eq!(mac[0] & 0b10, 0b10, "locally administered");
    assert_eq!(mac[0] & 0b01, 0, "unicast");
    assert_ne!(mac, default_mac("tap1"));
}

#[test]
fn default_mac_known_value_unchanged() {
    // Pinned so a change of the derivation (which changes guests' addresses) is
    // noticed.
    assert_eq!(default_mac("tap0"), [0x52, 0x16, 0xd0, 0xac, 0x07, 0xef]);
}

#[test]
fn new_multicast_mac_rejected_before_opening() {
    for mac in [[0x01, 0, 0x5e, 0, 0, 1], [0; 6]] {
        let config = NetConfig {
            tap: "cbnosuch1".to_string(),
            mac: Some(mac),
            ..NetConfig::default()
        };

        let err = Net::new(&config, 0).unwrap_err();

        assert!(matches!(err, Error::InvalidMac { .. }), "{err}");
    }
}

#[test]
fn activate_applies_offloads_for_accepted_guest_features() {
    let mem = memory();
    let driver = Driver::new(&mem);
    let (mut net, tap) = net();
    let acked = VIRTIO_F_VERSION_1 | features::GUEST_CSUM | features::GUEST_TSO4;

    net.activate(driver.params(acked)).unwrap();

    assert_eq!(tap.state().offloads, vec![offload::CSUM | offload::TSO4]);
    assert_eq!(net.acked_features(), acked);
}

#[test]
fn activate_segmentation_without_guest_csum_no_offloads() {
    let mem = memory();
    let driver = Driver::new(&mem);
    let (mut net, tap) = net();

    net.activate(driver.params(VIRTIO_F_VERSION_1 | features::GUEST_TSO4 | features::HOST_TSO4))
        .unwrap();

    assert_eq!(tap.state().offloads, vec![0]);
}

#[test]
fn activate_offloads_refused_falls_back_to_none() {
    let mem = memory();
    let driver = Driver::new(&mem);
    let (mut net, tap) = net();
    tap.state().supported = 0;

    net.activate(driver.params(VIRTIO_F_VERSION_1 | features::GUEST_CSUM))
        .unwrap();

    assert_eq!(tap.state().offloads, vec![offload::CSUM, 0]);
}

#[test]
fn activate_wrong_queue_count_rejected() {
    let mem = memory();
    let driver = Driver::new(&mem);
    let (mut net, _) = net();
    let mut params = driver.params(VIRTIO_F_VERSION_1);
    params.queues.pop();

    let err = net.activate(params).unwrap_err();

    assert!(matches!(
        err,
        ActivateError::QueueCount {
            expected: 2,
            got: 1
        }
    ));
}

#[test]
fn reset_turns_offloads_off_and_forgets_features() {
    let mem = memory();
    let driver = Driver::new(&mem);
    let (mut net, tap) = net();
    net.activate(driver.params(VIRTIO_F_VERSION_1 | features::GUEST_CSUM))
        .unwrap();

    net.reset();

    assert_eq!(tap.state().offloads.last(), Some(&0));
    assert_eq!(net.acked_features(), 0);
}

#[test]
fn event_fds_tap_and_two_rate_limiter_timers() {
    let (net, _) = net();

    let fds = net.event_fds();

    let tokens: Vec<u32> = fds.iter().map(|&(_, token)| token).collect();
    assert_eq!(
        tokens,
        vec![
            TAP_EVENT_TOKEN,
            RX_RATE_LIMITER_EVENT_TOKEN,
            TX_RATE_LIMITER_EVENT_TOKEN
        ]
    );
    assert!(fds[0].0 != fds[1].0 && fds[1].0 != fds[2].0);
}

#[test]
fn process_event_inactive_does_not_read() {
    let (mut net, tap) = net();
    tap.push(frame(60, 0));

    net.process_event(TAP_EVENT_TOKEN);

    assert_eq!(tap.state().reads, 0);
    assert!(!watched_readable(&net), "not watched before activation");
}

#[test]
fn tx_multi_descriptor_chain_written_to_tap_as_is() {
    let mem = memory();
    let mut driver = Driver::new(&mem);
    let (mut net, tap) = net();
    driver.activate(&mut net);
    let bytes = frame(12 + 90, 7);
    mem.write_slice(&bytes[..12], GuestAddress(BUF)).unwrap();
    mem.write_slice(&bytes[12..50], GuestAddress(BUF + 0x1000))
        .unwrap();
    mem.write_slice(&bytes[50..], GuestAddress(BUF + 0x2000))
        .unwrap();
    let head = driver.post(
        TX_QUEUE,
        &[ro(BUF, 12), ro(BUF + 0x1000, 38), ro(BUF + 0x2000, 52)],
    );

    net.process_queue(TX_QUEUE);

    assert_eq!(tap.written(), vec![bytes]);
    assert_eq!(driver.used(TX_QUEUE), vec![(u32::from(head), 0)]);
    assert_eq!(
        driver.irq.status() & VIRTIO_MMIO_INT_VRING,
        VIRTIO_MMIO_INT_VRING
    );
    let stats = net.stats();
    assert_eq!((stats.tx_frames, stats.tx_bytes), (1, 90));
}

#[test]
fn tx_malformed_chains_dropped_counted_and_returned() {
    let mem = memory();
    let mut driver = Driver::new(&mem);
    let (mut net, tap) = net();
    driver.activate(&mut net);
    let header_only = driver.post(TX_QUEUE, &[ro(BUF, 12)]);
    let wrong_way = driver.post(TX_QUEUE, &[ro(BUF, 12), wo(BUF + 0x1000, 64)]);
    let oversized = driver.post(
        TX_QUEUE,
        &[ro(BUF, 12), ro(BUF + 0x1000, MAX_FRAME_LEN as u32 + 1)],
    );
    let outside = driver.post(TX_QUEUE, &[ro(MEM_SIZE as u64 - 8, 64)]);

    net.process_queue(TX_QUEUE);

    assert!(tap.written().is_empty());
    let heads: Vec<u32> = driver.used(TX_QUEUE).iter().map(|&(h, _)| h).collect();
    let expected: Vec<u32> = [header_only, wrong_way, oversized, outside]
        .into_iter()
        .map(u32::from)
        .collect();
    assert_eq!(heads, expected);
    assert_eq!(net.stats().tx_malformed, 4);
    assert_eq!(net.stats().tx_frames, 0);
}

#[test]
fn tx_head_past_the_table_needs_reset_nothing_returned() {
    let mem = memory();
    let mut driver = Driver::new(&mem);
    let (mut net, tap) = net();
    driver.activate(&mut net);
    driver.send(BUF, &frame(60, 1));
    driver
        .txq
        .avail()
        .ring()
        .ref_at(0)
        .unwrap()
        .store(u16::MAX.to_le());

    net.process_queue(TX_QUEUE);
    driver.send(BUF, &frame(60, 2));
    net.process_queue(TX_QUEUE);

    assert!(driver.irq.needs_reset());
    assert!(tap.written().is_empty());
    assert!(driver.used(TX_QUEUE).is_empty());
}

#[test]
fn tx_avail_index_jump_needs_reset() {
    let mem = memory();
    let driver = Driver::new(&mem);
    let (mut net, tap) = net();
    driver.activate(&mut net);
    driver.txq.avail().idx().store(0x8000);

    net.process_queue(TX_QUEUE);

    assert!(driver.irq.needs_reset());
    assert!(tap.written().is_empty());
}

#[test]
fn tx_link_down_dropped_counted_then_resumes() {
    let mem = memory();
    let mut driver = Driver::new(&mem);
    let (mut net, tap) = net();
    driver.activate(&mut net);
    tap.set_write_error(Some(libc::EIO));
    driver.send(BUF, &frame(60, 1));
    driver.send(BUF + 0x1000, &frame(60, 2));

    net.process_queue(TX_QUEUE);

    assert_eq!(net.stats().tx_dropped, 2);
    assert!(net.link_up(), "a down link is not a gone TAP");
    tap.set_write_error(None);
    driver.send(BUF + 0x2000, &frame(60, 3));
    net.process_queue(TX_QUEUE);
    assert_eq!(tap.written(), vec![frame(60, 3)]);
    assert_eq!(driver.used(TX_QUEUE).len(), 3);
}

#[test]
fn tx_frame_refused_dropped_tap_kept() {
    let mem = memory();
    let mut driver = Driver::new(&mem);
    let (mut net, tap) = net();
    driver.activate(&mut net);
    tap.set_write_error(Some(libc::EINVAL));
    driver.send(BUF, &frame(60, 1));

    net.process_queue(TX_QUEUE);

    assert_eq!(net.stats().tx_dropped, 1);
    assert!(net.link_up());
}

#[test]
fn rx_frame_split_over_chain_with_num_buffers_one() {
    let mem = memory();
    let mut driver = Driver::new(&mem);
    let (mut net, tap) = net();
    let head = driver.post(RX_QUEUE, &[wo(BUF, 12), wo(BUF + 0x1000, 1514)]);
    driver.activate(&mut net);
    let bytes = frame(12 + 200, 5);
    tap.push(bytes.clone());
    assert!(watched_readable(&net));

    net.process_event(TAP_EVENT_TOKEN);

    assert_eq!(driver.used(RX_QUEUE), vec![(u32::from(head), 212)]);
    let mut received = driver.read(BUF, 12);
    received.extend(driver.read(BUF + 0x1000, 200));
    assert_eq!(received, as_received(bytes));
    assert_eq!(
        driver.irq.status() & VIRTIO_MMIO_INT_VRING,
        VIRTIO_MMIO_INT_VRING
    );
    assert_eq!((net.stats().rx_frames, net.stats().rx_bytes), (1, 200));
    assert!(!watched_readable(&net), "TAP drained");
}

#[test]
fn rx_frames_queued_before_activation_delivered_on_activation() {
    let mem = memory();
    let mut driver = Driver::new(&mem);
    let (mut net, tap) = net();
    driver.post(RX_QUEUE, &[wo(BUF, 2048)]);
    tap.push(frame(100, 0));

    driver.activate(&mut net);

    assert_eq!(driver.used(RX_QUEUE), vec![(0, 100)]);
}

#[test]
fn rx_no_buffers_frame_pending_tap_unwatched_until_buffers_arrive() {
    let mem = memory();
    let mut driver = Driver::new(&mem);
    let (mut net, tap) = net();
    driver.activate(&mut net);
    tap.push(frame(100, 1));
    tap.push(frame(80, 2));

    net.process_event(TAP_EVENT_TOKEN);

    // One frame read ahead and kept; the TAP still has one, but is not watched.
    assert_eq!(tap.state().rx.len(), 1);
    assert!(!watched_readable(&net));
    assert_eq!(net.stats().rx_dropped, 0);
    // A spurious event changes nothing.
    net.process_event(TAP_EVENT_TOKEN);
    assert_eq!(tap.state().rx.len(), 1);

    driver.post(RX_QUEUE, &[wo(BUF, 2048)]);
    driver.post(RX_QUEUE, &[wo(BUF + 0x1000, 2048)]);
    net.process_queue(RX_QUEUE);

    assert_eq!(driver.used(RX_QUEUE), vec![(0, 100), (1, 80)]);
    assert_eq!(driver.read(BUF, 100), as_received(frame(100, 1)));
    assert_eq!(driver.read(BUF + 0x1000, 80), as_received(frame(80, 2)));
    assert_eq!(net.stats().rx_frames, 2);
    // Drained and watched again: the next frame wakes the VMM.
    assert!(!watched_readable(&net));
    tap.push(frame(60, 3));
    assert!(watched_readable(&net));
}

#[test]
fn rx_frame_too_big_dropped_counted_chain_kept_for_next() {
    let mem = memory();
    let mut driver = Driver::new(&mem);
    let (mut net, tap) = net();
    let head = driver.post(RX_QUEUE, &[wo(BUF, 12), wo(BUF + 0x1000, 100)]);
    driver.activate(&mut net);
    tap.push(frame(12 + 101, 1));
    tap.push(frame(12 + 50, 2));

    net.process_event(TAP_EVENT_TOKEN);

    assert_eq!(driver.used(RX_QUEUE), vec![(u32::from(head), 62)]);
    assert_eq!(net.stats().rx_dropped, 1);
    assert_eq!(net.stats().rx_frames, 1);
}

#[test]
fn rx_malformed_chain_returned_unused_frame_goes_to_next() {
    let mem = memory();
    let mut driver = Driver::new(&mem);
    let (mut net, tap) = net();
    let bad = driver.post(RX_QUEUE, &[wo(BUF, 12), ro(BUF + 0x1000, 2048)]);
    let good = driver.post(RX_QUEUE, &[wo(BUF + 0x2000, 2048)]);
    driver.activate(&mut net);
    tap.push(frame(64, 9));

    net.process_event(TAP_EVENT_TOKEN);

    assert_eq!(
        driver.used(RX_QUEUE),
        vec![(u32::from(bad), 0), (u32::from(good), 64)]
    );
    assert_eq!(driver.read(BUF + 0x2000, 64), as_received(frame(64, 9)));
    assert_eq!(net.stats().rx_malformed, 1);
}

#[test]
fn rx_short_read_dropped_next_frame_delivered() {
    let mem = memory();
    let mut driver = Driver::new(&mem);
    let (mut net, tap) = net();
    driver.post(RX_QUEUE, &[wo(BUF, 2048)]);
    driver.activate(&mut net);
    tap.push(vec![0; 12]);
    tap.push(frame(60, 4));

    net.process_event(TAP_EVENT_TOKEN);

    assert_eq!(driver.used(RX_QUEUE), vec![(0, 60)]);
    assert_eq!(net.stats().rx_dropped, 1);
}

#[test]
fn rx_without_guest_csum_header_flags_cleared() {
    let mem = memory();
    let mut driver = Driver::new(&mem);
    let (mut net, tap) = net();
    driver.post(RX_QUEUE, &[wo(BUF, 2048)]);
    driver.activate(&mut net);
    let mut bytes = frame(60, 0);
    bytes[0] = 2; // VIRTIO_NET_HDR_F_DATA_VALID
    tap.push(bytes);

    net.process_event(TAP_EVENT_TOKEN);

    assert_eq!(driver.read(BUF, 1), vec![0]);
}

#[test]
fn rx_with_guest_csum_header_flags_kept() {
    let mem = memory();
    let mut driver = Driver::new(&mem);
    let (mut net, tap) = net();
    driver.post(RX_QUEUE, &[wo(BUF, 2048)]);
    net.activate(driver.params(VIRTIO_F_VERSION_1 | features::GUEST_CSUM))
        .unwrap();
    let mut bytes = frame(60, 0);
    bytes[0] = 1; // VIRTIO_NET_HDR_F_NEEDS_CSUM
    tap.push(bytes);

    net.process_event(TAP_EVENT_TOKEN);

    assert_eq!(driver.read(BUF, 1), vec![1]);
}

#[test]
fn rx_flood_stops_after_budget_and_stays_watched() {
    let mem = memory();
    let mut driver = Driver::new(&mem);
    let (mut net, tap) = net();
    // A chain too small for every frame: each is read and dropped, none is kept.
    driver.post(RX_QUEUE, &[wo(BUF, 20)]);
    driver.activate(&mut net);
    for _ in 0..RX_FRAMES_PER_PASS + 5 {
        tap.push(frame(100, 0));
    }

    net.process_event(TAP_EVENT_TOKEN);

    assert_eq!(net.stats().rx_dropped, RX_FRAMES_PER_PASS as u64);
    assert!(watched_readable(&net), "the rest waits for the next event");
    net.process_event(TAP_EVENT_TOKEN);
    assert_eq!(net.stats().rx_dropped, RX_FRAMES_PER_PASS as u64 + 5);
    assert!(!watched_readable(&net));
}

#[test]
fn tap_gone_on_read_link_down_unwatched_and_unused() {
    let mem = memory();
    let mut driver = Driver::new(&mem);
    let (mut net, tap) = net();
    driver.activate(&mut net);
    tap.set_read_error(Some(libc::EBADFD));
    assert!(watched_readable(&net));

    net.process_event(TAP_EVENT_TOKEN);

    assert!(!net.link_up());
    assert_eq!(
        config(&net)[CONFIG_STATUS_OFFSET..CONFIG_STATUS_OFFSET + 2],
        [0, 0]
    );
    assert_eq!(
        driver.irq.status() & VIRTIO_MMIO_INT_CONFIG,
        VIRTIO_MMIO_INT_CONFIG
    );
    assert!(!watched_readable(&net), "a failed TAP is no longer watched");
    let reads = tap.state().reads;
    net.process_event(TAP_EVENT_TOKEN);
    driver.post(RX_QUEUE, &[wo(BUF, 2048)]);
    net.process_queue(RX_QUEUE);
    assert_eq!(tap.state().reads, reads, "no more reads");
    // Transmit chains are still returned, and counted as dropped.
    tap.set_write_error(None);
    driver.send(BUF + 0x1000, &frame(60, 1));
    net.process_queue(TX_QUEUE);
    assert!(tap.written().is_empty());
    assert_eq!(driver.used(TX_QUEUE).len(), 1);
    assert_eq!(net.stats().tx_dropped, 1);
}

#[test]
fn tap_gone_on_write_pending_frame_dropped() {
    let mem = memory();
    let mut driver = Driver::new(&mem);
    let (mut net, tap) = net();
    driver.activate(&mut net);
    tap.push(frame(60, 0));
    net.process_event(TAP_EVENT_TOKEN);
    tap.set_write_error(Some(libc::EBADFD));
    driver.send(BUF, &frame(60, 1));

    net.process_queue(TX_QUEUE);

    assert!(!net.link_up());
    let stats = net.stats();
    assert_eq!((stats.tx_dropped, stats.rx_dropped), (1, 1));
    assert!(!watched_readable(&net));
}

#[test]
fn reset_drops_pending_frame_and_unwatches() {
    let mem = memory();
    let driver = Driver::new(&mem);
    let (mut net, tap) = net();
    driver.activate(&mut net);
    tap.push(frame(60, 0));
    tap.push(frame(60, 1));
    net.process_event(TAP_EVENT_TOKEN);

    net.reset();

    assert_eq!(net.stats().rx_dropped, 1);
    assert!(!watched_readable(&net));
    net.process_event(TAP_EVENT_TOKEN);
    assert_eq!(tap.state().rx.len(), 1, "not read while reset");
}

#[test]
fn process_queue_unknown_or_inactive_ignored() {
    let mem = memory();
    let driver = Driver::new(&mem);
    let (mut net, _) = net();

    net.process_queue(TX_QUEUE);
    driver.activate(&mut net);
    net.process_queue(7);
    net.process_event(42);

    assert_eq!(net.stats(), NetStats::default());
}
