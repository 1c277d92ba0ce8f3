//! Tests for the MTU, the rate limiters and the metrics of [`super`] (`device.rs`).

use super::*;
use std::sync::atomic::Ordering;

use crate::rate_limiter::TokenBucketConfig;
use crate::virtio::net::test_utils::*;
use crate::virtio::net::VNET_HDR_LEN;
use crate::virtio::test_utils::readable_within;

/// One op per `refill_time_ms`.
fn one_op_per(refill_time_ms: u64) -> RateLimiterConfig {
    RateLimiterConfig {
        bandwidth: None,
        ops: Some(TokenBucketConfig {
            size: 1,
            one_time_burst: 0,
            refill_time_ms,
        }),
    }
}

/// Waits (bounded) for the timer of `token` and hands its event to the device.
fn fire(net: &mut Net, token: u32) {
    assert!(
        readable_within(event_fd_of(net, token), 5000),
        "timer {token} never fired"
    );
    net.process_event(token);
}

#[test]
fn new_mtu_below_minimum_rejected_before_opening() {
    let config = NetConfig {
        tap: "cbnosuch1".to_string(),
        mtu: Some(MIN_MTU - 1),
        ..NetConfig::default()
    };

    let err = Net::new(&config, 0).unwrap_err();

    assert!(matches!(err, Error::InvalidMtu { mtu: 67, .. }), "{err}");
}

#[test]
fn new_minimum_mtu_accepted() {
    let config = NetConfig {
        tap: "cbnosuch1".to_string(),
        mtu: Some(MIN_MTU),
        ..NetConfig::default()
    };

    let err = Net::new(&config, 0).unwrap_err();

    // Past the MTU check: it fails on the missing TAP.
    assert!(!matches!(err, Error::InvalidMtu { .. }), "{err}");
}

#[test]
fn mtu_set_offered_and_in_config_space() {
    let (mut net, _) = net();

    net.set_mtu(Some(9000));

    assert_ne!(net.avail_features() & features::MTU, 0);
    let mut mtu = [0u8; 2];
    net.read_config(CONFIG_MTU_OFFSET as u64, &mut mtu);
    assert_eq!(u16::from_le_bytes(mtu), 9000);
}

#[test]
fn mtu_unset_not_offered_reads_zero() {
    let (net, _) = net();

    assert_eq!(net.avail_features() & features::MTU, 0);
    let mut mtu = [0xffu8; 2];
    net.read_config(CONFIG_MTU_OFFSET as u64, &mut mtu);
    assert_eq!(mtu, [0, 0]);
}

#[test]
fn tx_throttled_frame_stays_queued_until_timer() {
    let mem = memory();
    let mut driver = Driver::new(&mem);
    let (mut net, tap) = net();
    net.update_rate_limiters(None, Some(one_op_per(30)));
    driver.activate(&mut net);
    let first = frame(60, 1);
    let second = frame(70, 2);
    driver.send(BUF, &first);
    driver.send(BUF + 0x1000, &second);

    net.process_queue(TX_QUEUE);
    assert_eq!(tap.written(), vec![first.clone()]);
    assert_eq!(driver.used(TX_QUEUE), vec![(0, 0)]);
    net.process_queue(TX_QUEUE);
    assert_eq!(tap.written().len(), 1, "held back while throttled");
    let throttled = net
        .metrics()
        .tx_rate_limiter_throttled
        .load(Ordering::Relaxed);
    assert_eq!(throttled, 1);

    fire(&mut net, TX_RATE_LIMITER_EVENT_TOKEN);

    assert_eq!(tap.written(), vec![first, second]);
    assert_eq!(driver.used(TX_QUEUE), vec![(0, 0), (1, 0)]);
}

#[test]
fn tx_bandwidth_counts_frame_without_header() {
    let mem = memory();
    let mut driver = Driver::new(&mem);
    let (mut net, tap) = net();
    let limits = RateLimiterConfig {
        bandwidth: Some(TokenBucketConfig {
            size: 100,
            one_time_burst: 0,
            refill_time_ms: 100_000,
        }),
        ops: None,
    };
    net.update_rate_limiters(None, Some(limits));
    driver.activate(&mut net);
    // 12-byte header + 100 bytes: exactly the bucket.
    driver.send(BUF, &frame(VNET_HDR_LEN + 100, 1));
    driver.send(BUF + 0x1000, &frame(VNET_HDR_LEN + 1, 2));

    net.process_queue(TX_QUEUE);

    assert_eq!(tap.written().len(), 1);
}

#[test]
fn rx_throttled_frame_pending_tap_unwatched_until_timer() {
    let mem = memory();
    let mut driver = Driver::new(&mem);
    let (mut net, tap) = net();
    net.update_rate_limiters(Some(one_op_per(30)), None);
    driver.post(RX_QUEUE, &[wo(BUF, 2048)]);
    driver.post(RX_QUEUE, &[wo(BUF + 0x1000, 2048)]);
    driver.activate(&mut net);
    tap.push(frame(100, 1));
    tap.push(frame(80, 2));

    net.process_event(TAP_EVENT_TOKEN);
    assert_eq!(driver.used(RX_QUEUE), vec![(0, 100)]);
    assert!(!watched_readable(&net), "the loop must not spin on the TAP");
    net.process_queue(RX_QUEUE);
    assert_eq!(driver.used(RX_QUEUE).len(), 1, "held back while throttled");
    let throttled = net
        .metrics()
        .rx_rate_limiter_throttled
        .load(Ordering::Relaxed);
    assert_eq!(throttled, 1);

    fire(&mut net, RX_RATE_LIMITER_EVENT_TOKEN);

    assert_eq!(driver.used(RX_QUEUE), vec![(0, 100), (1, 80)]);
    assert_eq!(driver.read(BUF + 0x1000, 80), as_received(frame(80, 2)));
    assert!(tap.state().rx.is_empty());
    tap.push(frame(60, 3));
    assert!(watched_readable(&net), "drained: the TAP is watched again");
}

#[test]
fn rx_pending_frame_admitted_once_across_buffer_wait() {
    let mem = memory();
    let mut driver = Driver::new(&mem);
    let (mut net, tap) = net();
    // One frame per 100 s: charging the pending frame twice would stall it.
    net.update_rate_limiters(Some(one_op_per(100_000)), None);
    driver.activate(&mut net);
    tap.push(frame(100, 1));
    net.process_event(TAP_EVENT_TOKEN);
    assert!(driver.used(RX_QUEUE).is_empty());

    driver.post(RX_QUEUE, &[wo(BUF, 2048)]);
    net.process_queue(RX_QUEUE);

    assert_eq!(driver.used(RX_QUEUE), vec![(0, 100)]);
    let throttled = net
        .metrics()
        .rx_rate_limiter_throttled
        .load(Ordering::Relaxed);
    assert_eq!(throttled, 0);
}

#[test]
fn update_rate_limiters_lifts_tx_limit_keeps_rx() {
    let mem = memory();
    let mut driver = Driver::new(&mem);
    let (mut net, tap) = net();
    net.update_rate_limiters(Some(one_op_per(100_000)), Some(one_op_per(100_000)));
    driver.activate(&mut net);
    for i in 0..3u64 {
        driver.send(BUF + i * 0x1000, &frame(60, i as u8));
    }
    net.process_queue(TX_QUEUE);
    assert_eq!(tap.written().len(), 1);

    net.update_rate_limiters(None, Some(RateLimiterConfig::default()));
    fire(&mut net, TX_RATE_LIMITER_EVENT_TOKEN);

    assert_eq!(tap.written().len(), 3);
    // The receive limit is untouched: one frame, then throttled.
    driver.post(RX_QUEUE, &[wo(BUF + 0x8000, 2048)]);
    driver.post(RX_QUEUE, &[wo(BUF + 0x9000, 2048)]);
    tap.push(frame(60, 1));
    tap.push(frame(60, 2));
    net.process_event(TAP_EVENT_TOKEN);
    assert_eq!(driver.used(RX_QUEUE).len(), 1);
}

#[test]
fn reset_while_rx_throttled_pending_frame_dropped() {
    let mem = memory();
    let mut driver = Driver::new(&mem);
    let (mut net, tap) = net();
    net.update_rate_limiters(Some(one_op_per(100_000)), None);
    driver.post(RX_QUEUE, &[wo(BUF, 2048)]);
    driver.post(RX_QUEUE, &[wo(BUF + 0x1000, 2048)]);
    driver.activate(&mut net);
    tap.push(frame(100, 1));
    tap.push(frame(80, 2));
    net.process_event(TAP_EVENT_TOKEN);

    net.reset();

    assert_eq!(net.stats().rx_dropped, 1);
    assert!(!watched_readable(&net));
}

#[test]
fn metrics_match_stats_and_serialize() {
    let mem = memory();
    let mut driver = Driver::new(&mem);
    let (mut net, tap) = net();
    driver.activate(&mut net);
    driver.send(BUF, &frame(VNET_HDR_LEN + 50, 1));
    net.process_queue(TX_QUEUE);
    driver.post(RX_QUEUE, &[wo(BUF + 0x1000, 2048)]);
    tap.push(frame(VNET_HDR_LEN + 30, 2));
    net.process_event(TAP_EVENT_TOKEN);

    let json = serde_json::to_value(&*net.metrics()).unwrap();

    assert_eq!(json["tx_packets"], 1);
    assert_eq!(json["tx_bytes"], 50);
    assert_eq!(json["rx_packets"], 1);
    assert_eq!(json["rx_bytes"], 30);
    assert_eq!(json["rx_drops"], 0);
    let stats = net.stats();
    assert_eq!((stats.tx_frames, stats.tx_bytes), (1, 50));
    assert_eq!((stats.rx_frames, stats.rx_bytes), (1, 30));
}
