//! Tests for what can be configured or changed at runtime: cache type, rate
//! limits, metrics, a new backing file.

use super::*;
use std::sync::atomic::{AtomicU64, Ordering};

use vmm_sys_util::tempfile::TempFile;

use crate::rate_limiter::TokenBucketConfig;
use crate::virtio::block::test_env::*;
use crate::virtio::block::{VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK};
use crate::virtio::test_utils::readable_within;

const FLUSH: u64 = 1 << virtio_blk::VIRTIO_BLK_F_FLUSH;

fn limits(bandwidth: Option<(u64, u64)>, ops: Option<(u64, u64)>) -> RateLimiterConfig {
    let bucket = |(size, refill_time_ms)| TokenBucketConfig {
        size,
        one_time_burst: 0,
        refill_time_ms,
    };
    RateLimiterConfig {
        bandwidth: bandwidth.map(bucket),
        ops: ops.map(bucket),
    }
}

/// The rate limiter's timerfd, as the VMM gets it.
fn timer_fd(block: &Block) -> RawFd {
    let fds = block.event_fds();
    assert_eq!(fds.len(), 1);
    assert_eq!(fds[0].1, RATE_LIMITER_EVENT_TOKEN);
    fds[0].0
}

/// Waits (bounded) for the timer and hands its event to the device.
fn fire_timer(block: &mut Block) {
    assert!(readable_within(timer_fd(block), 5000), "timer never fired");
    block.process_event(RATE_LIMITER_EVENT_TOKEN);
}

fn counter(block: &Block, pick: impl Fn(&BlockMetrics) -> &AtomicU64) -> u64 {
    pick(&block.metrics()).load(Ordering::Relaxed)
}

#[test]
fn avail_features_cache_type_decides_flush() {
    let tmp = disk_file(1);
    let mut cfg = config(tmp.as_path(), false, None);

    let unsafe_features = Block::new(&cfg).unwrap().avail_features();
    cfg.cache_type = CacheType::Writeback;
    let writeback_features = Block::new(&cfg).unwrap().avail_features();

    assert_eq!(CacheType::default(), CacheType::Unsafe);
    assert_eq!(unsafe_features & FLUSH, 0);
    assert_ne!(writeback_features & FLUSH, 0);
}

#[test]
fn process_queue_flush_writeback_ok_counted() {
    let mem = memory();
    let mut env = Env::with_config(&mem, |c| c.cache_type = CacheType::Writeback);
    env.add_request(0, T_FLUSH, 0, 0);

    env.block.process_queue(0);

    assert_eq!(env.status(0), VIRTIO_BLK_S_OK);
    assert_eq!(counter(&env.block, |m| &m.flush_count), 1);
}

#[test]
fn process_queue_flush_unsafe_ok_anyway() {
    let mem = memory();
    let mut env = Env::new(&mem, false, None);
    env.add_request(0, T_FLUSH, 0, 0);

    env.block.process_queue(0);

    assert_eq!(env.status(0), VIRTIO_BLK_S_OK);
    assert_eq!(env.used(0), (0, 1));
}

#[test]
fn metrics_requests_counted_by_kind() {
    let mem = memory();
    let mut env = Env::new(&mem, false, None);
    env.add_request(0, T_IN, 0, 1024);
    env.add_request(1, T_OUT, 2, 512);
    env.add_request(2, T_FLUSH, 0, 0);
    env.add_request(3, 0xdead, 0, 512);
    env.add_request(4, T_IN, DISK_SECTORS, 512);

    env.block.process_queue(0);

    let m = env.block.metrics();
    let json = serde_json::to_value(&*m).unwrap();
    assert_eq!(json["read_count"], 1);
    assert_eq!(json["read_bytes"], 1024);
    assert_eq!(json["write_count"], 1);
    assert_eq!(json["write_bytes"], 512);
    assert_eq!(json["flush_count"], 1);
    assert_eq!(json["invalid_requests"], 2, "unknown type, out of range");
    assert_eq!(json["io_errors"], 0);
    assert_eq!(json["rate_limiter_throttled"], 0);
}

#[test]
fn metrics_host_side_failure_io_error() {
    let mem = memory();
    let mut env = Env::new(&mem, true, None);
    env.add_request(0, T_OUT, 0, 512);

    env.block.process_queue(0);

    assert_eq!(env.status(0), VIRTIO_BLK_S_IOERR);
    assert_eq!(counter(&env.block, |m| &m.io_errors), 1);
    assert_eq!(counter(&env.block, |m| &m.write_count), 0);
}

#[test]
fn process_queue_ops_throttled_request_resumed_by_timer_once() {
    let mem = memory();
    // One request per 30 ms.
    let mut env = Env::with_config(&mem, |c| c.rate_limiter = Some(limits(None, Some((1, 30)))));
    env.add_request(0, T_IN, 0, 512);
    env.add_request(1, T_IN, 1, 512);

    env.block.process_queue(0);
    assert_eq!(env.used_idx(), 1);
    assert_eq!(env.status(1), 0xff, "held back, untouched");
    assert_eq!(counter(&env.block, |m| &m.rate_limiter_throttled), 1);
    // Notifications while throttled do nothing.
    env.block.process_queue(0);
    assert_eq!(env.used_idx(), 1);

    fire_timer(&mut env.block);

    assert_eq!(env.used_idx(), 2);
    assert_eq!(env.used(1), (8, 513));
    assert_eq!(env.status(1), VIRTIO_BLK_S_OK);
    assert_eq!(env.guest(data(1), 512), env.file(512, 512));
    assert_eq!(counter(&env.block, |m| &m.read_count), 2);
    // Nothing more to do: no duplicate completion.
    env.block.process_queue(0);
    assert_eq!(env.used_idx(), 2);
}

#[test]
fn process_queue_bandwidth_throttled_then_all_complete_in_order() {
    let mem = memory();
    // 1 KiB per 20 ms; three 1 KiB reads.
    let mut env = Env::with_config(&mem, |c| {
        c.rate_limiter = Some(limits(Some((1024, 20)), None));
    });
    for slot in 0..3 {
        env.add_request(slot, T_IN, slot * 2, 1024);
    }

    env.block.process_queue(0);
    assert_eq!(env.used_idx(), 1);
    for _ in 0..2 {
        fire_timer(&mut env.block);
    }

    assert_eq!(env.used_idx(), 3);
    let heads: Vec<u32> = (0..3).map(|i| env.used(i).0).collect();
    assert_eq!(heads, vec![0, 8, 16]);
}

#[test]
fn process_queue_oversized_request_passes_with_full_bucket() {
    let mem = memory();
    // A 4 KiB read against a 1 KiB bucket.
    let mut env = Env::with_config(&mem, |c| {
        c.rate_limiter = Some(limits(Some((1024, 10)), None));
    });
    env.add_request(0, T_IN, 0, 4096);

    env.block.process_queue(0);

    assert_eq!(env.used_idx(), 1);
    assert_eq!(env.status(0), VIRTIO_BLK_S_OK);
}

#[test]
fn update_rate_limiter_unthrottles_blocked_device() {
    let mem = memory();
    // One op per 100 s: the second request would wait that long.
    let mut env = Env::with_config(&mem, |c| {
        c.rate_limiter = Some(limits(None, Some((1, 100_000))));
    });
    let fd = timer_fd(&env.block);
    env.add_request(0, T_IN, 0, 512);
    env.add_request(1, T_IN, 1, 512);
    env.block.process_queue(0);
    assert_eq!(env.used_idx(), 1);

    env.block.update_rate_limiter(&RateLimiterConfig::default());
    fire_timer(&mut env.block);

    assert_eq!(timer_fd(&env.block), fd, "same timerfd");
    assert_eq!(env.used_idx(), 2);
}

#[test]
fn reset_while_throttled_timer_still_unblocks() {
    let mem = memory();
    let mut env = Env::with_config(&mem, |c| c.rate_limiter = Some(limits(None, Some((1, 30)))));
    env.add_request(0, T_IN, 0, 512);
    env.add_request(1, T_IN, 1, 512);
    env.block.process_queue(0);
    assert_eq!(env.used_idx(), 1);

    env.block.reset();
    fire_timer(&mut env.block);

    assert_eq!(env.used_idx(), 1, "inactive: nothing processed");
    assert!(
        !env.block.rate_limiter.is_blocked(),
        "a reactivated device is not held back"
    );
}

#[test]
fn process_event_unknown_token_ignored() {
    let mem = memory();
    let mut env = Env::new(&mem, false, None);
    env.add_request(0, T_IN, 0, 512);

    env.block.process_event(7);

    assert_eq!(env.used_idx(), 0);
}

#[test]
fn process_event_stale_timer_ignored() {
    let mem = memory();
    let mut env = Env::new(&mem, false, None);
    env.add_request(0, T_IN, 0, 512);

    env.block.process_event(RATE_LIMITER_EVENT_TOKEN);

    assert_eq!(
        env.used_idx(),
        0,
        "no expiry read: the queue waits for a kick"
    );
}

#[test]
fn update_backing_file_new_capacity_config_interrupt() {
    let mem = memory();
    let mut env = Env::new(&mem, false, None);
    let bigger = disk_file(DISK_SECTORS * 4);
    let id = env.block.disk_id();

    env.block.update_backing_file(bigger.as_path()).unwrap();

    let mut capacity = [0u8; 8];
    env.block.read_config(0, &mut capacity);
    assert_eq!(u64::from_le_bytes(capacity), DISK_SECTORS * 4);
    assert_eq!(env.block.num_sectors(), DISK_SECTORS * 4);
    assert_ne!(env.irq.status() & VIRTIO_MMIO_INT_CONFIG, 0);
    assert_eq!(env.irq.eventfd().read().unwrap(), 1);
    assert_eq!(env.block.disk_id(), id, "the id stays");
    assert_eq!(
        env.block.config_generation(),
        1,
        "a new configuration generation"
    );
    // Requests go to the new file, including sectors past the old end.
    env.add_request(0, T_IN, DISK_SECTORS * 3, 512);
    env.block.process_queue(0);
    assert_eq!(env.status(0), VIRTIO_BLK_S_OK);
    assert_eq!(
        env.guest(data(0), 512),
        file_bytes(bigger.as_file(), DISK_SECTORS * 3 * 512, 512)
    );
}

#[test]
fn update_backing_file_inactive_no_interrupt() {
    let tmp = disk_file(1);
    let bigger = disk_file(8);
    let mut block = Block::new(&config(tmp.as_path(), false, None)).unwrap();

    block.update_backing_file(bigger.as_path()).unwrap();

    assert_eq!(block.num_sectors(), 8);
}

#[test]
fn update_backing_file_missing_error_unchanged() {
    let mem = memory();
    let mut env = Env::new(&mem, false, None);

    let err = env
        .block
        .update_backing_file(Path::new("/nonexistent/cabin-new.img"))
        .unwrap_err();

    assert!(matches!(err, BlockError::Open { .. }));
    assert_eq!(env.block.num_sectors(), DISK_SECTORS);
    assert_eq!(env.irq.status() & VIRTIO_MMIO_INT_CONFIG, 0);
}

#[test]
fn update_backing_file_read_only_device_opens_read_only() {
    let tmp = disk_file(1);
    let other = TempFile::new().unwrap();
    other.as_file().set_len(4096).unwrap();
    let mut perms = other.as_file().metadata().unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o444);
    std::fs::set_permissions(other.as_path(), perms).unwrap();
    let mut block = Block::new(&config(tmp.as_path(), true, None)).unwrap();

    // A read-only file is fine for a read-only device (even as root, the open is
    // read-only, so it succeeds either way).
    block.update_backing_file(other.as_path()).unwrap();

    assert_eq!(block.num_sectors(), 8);
}
