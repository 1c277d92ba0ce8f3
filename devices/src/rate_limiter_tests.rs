//! Tests for [`super`] (`rate_limiter.rs`).

use super::*;
use crate::virtio::test_utils::readable_within;

const MS: Duration = Duration::from_millis(1);

fn bucket(size: u64, one_time_burst: u64, refill_time_ms: u64) -> TokenBucketConfig {
    TokenBucketConfig {
        size,
        one_time_burst,
        refill_time_ms,
    }
}

fn limiter(bandwidth: Option<TokenBucketConfig>, ops: Option<TokenBucketConfig>) -> RateLimiter {
    RateLimiter::new(&RateLimiterConfig { bandwidth, ops }).unwrap()
}

#[test]
fn token_bucket_zero_size_or_refill_unlimited() {
    let now = Instant::now();

    assert!(TokenBucket::new(&bucket(0, 10, 100), now).is_none());
    assert!(TokenBucket::new(&bucket(10, 10, 0), now).is_none());
    assert!(TokenBucket::new(&bucket(10, 0, 100), now).is_some());
}

#[test]
fn token_bucket_refill_proportional_to_elapsed_time() {
    let t0 = Instant::now();
    let mut b = TokenBucket::new(&bucket(1000, 0, 1000), t0).unwrap();
    assert_eq!(b.reduce(1000, t0), Reduction::Success);

    b.refill(t0 + 250 * MS);
    assert_eq!(b.budget, 250);
    b.refill(t0 + 500 * MS);
    assert_eq!(b.budget, 500);
    b.refill(t0 + 10_000 * MS);
    assert_eq!(b.budget, 1000, "capped at size");
}

#[test]
fn token_bucket_refill_keeps_fractions_of_tokens() {
    let t0 = Instant::now();
    // One token per 3 ms.
    let mut b = TokenBucket::new(&bucket(10, 0, 30), t0).unwrap();
    assert_eq!(b.reduce(10, t0), Reduction::Success);

    // Refilling every 2 ms must not lose the 2/3 token each call.
    for i in 1..=15u32 {
        b.refill(t0 + 2 * i * MS);
    }

    assert_eq!(b.budget, 10);
}

#[test]
fn token_bucket_one_time_burst_used_once_first() {
    let t0 = Instant::now();
    let mut b = TokenBucket::new(&bucket(100, 50, 1000), t0).unwrap();

    assert_eq!(b.reduce(120, t0), Reduction::Success);
    assert_eq!((b.one_time_burst, b.budget), (0, 30));
    // The burst is never refilled.
    b.refill(t0 + 10_000 * MS);
    assert_eq!((b.one_time_burst, b.budget), (0, 100));
    assert!(matches!(
        b.reduce(101, t0 + 10_000 * MS),
        Reduction::Failure(_) | Reduction::OverConsumption(_)
    ));
}

#[test]
fn token_bucket_insufficient_failure_with_refill_time_nothing_taken() {
    let t0 = Instant::now();
    let mut b = TokenBucket::new(&bucket(100, 10, 1000), t0).unwrap();
    assert_eq!(b.reduce(100, t0), Reduction::Success);
    assert_eq!((b.one_time_burst, b.budget), (0, 10));

    // 40 more needed than the 10 left: 400 ms.
    let result = b.reduce(50, t0);

    assert_eq!(result, Reduction::Failure(400 * MS));
    assert_eq!(b.budget, 10, "a refused request takes nothing");
    assert_eq!(b.reduce(50, t0 + 400 * MS), Reduction::Success);
}

#[test]
fn token_bucket_oversized_request_passes_when_full_then_debt() {
    let t0 = Instant::now();
    let mut b = TokenBucket::new(&bucket(100, 0, 1000), t0).unwrap();
    assert_eq!(b.reduce(50, t0), Reduction::Success);

    // Not full: wait until it is (500 ms).
    assert_eq!(b.reduce(300, t0), Reduction::Failure(500 * MS));
    // Full: passes, owing 200 tokens (2 s).
    let t1 = t0 + 500 * MS;
    assert_eq!(b.reduce(300, t1), Reduction::OverConsumption(2000 * MS));
    // The debt is paid before anything refills.
    b.refill(t1 + 1999 * MS);
    assert_eq!(b.budget, 0);
    assert_eq!(
        b.reduce(1, t1 + 1999 * MS),
        Reduction::Failure(10 * MS + MS)
    );
    assert_eq!(b.reduce(10, t1 + 2100 * MS), Reduction::Success);
}

#[test]
fn token_bucket_huge_numbers_no_overflow() {
    let t0 = Instant::now();
    let mut b = TokenBucket::new(&bucket(u64::MAX, u64::MAX, u64::MAX), t0).unwrap();

    assert_eq!(b.reduce(u64::MAX, t0), Reduction::Success);
    assert_eq!(b.reduce(u64::MAX, t0), Reduction::Success);
    assert!(matches!(b.reduce(u64::MAX, t0), Reduction::Failure(_)));
    b.refill(t0 + 1000 * MS);
    b.replenish(u64::MAX);
    assert_eq!(b.budget, u64::MAX);
}

#[test]
fn rate_limiter_no_buckets_never_blocks() {
    let mut rl = limiter(None, Some(bucket(0, 0, 0)));

    for _ in 0..1000 {
        assert!(rl.consume(u64::MAX, TokenType::Bytes));
        assert!(rl.consume(u64::MAX, TokenType::Ops));
    }

    assert!(!rl.is_blocked());
    assert_eq!(rl.throttled_count(), 0);
}

#[test]
fn rate_limiter_buckets_independent() {
    let mut rl = limiter(Some(bucket(100, 0, 100_000)), None);

    assert!(rl.consume(1_000_000, TokenType::Ops));
    assert!(rl.consume(100, TokenType::Bytes));
    assert!(!rl.consume(1, TokenType::Bytes));
}

#[test]
fn rate_limiter_throttled_blocks_and_counts() {
    let mut rl = limiter(None, Some(bucket(2, 0, 100_000)));
    assert!(rl.consume(2, TokenType::Ops));

    assert!(!rl.consume(1, TokenType::Ops));
    assert!(rl.is_blocked());
    // Blocked: refused even for another bucket, until the timer fires.
    assert!(!rl.consume(1, TokenType::Bytes));
    assert_eq!(rl.throttled_count(), 2);
}

#[test]
fn rate_limiter_manual_replenish_gives_tokens_back() {
    let mut rl = limiter(None, Some(bucket(2, 0, 100_000)));
    assert!(rl.consume(2, TokenType::Ops));

    rl.manual_replenish(1, TokenType::Ops);

    assert!(rl.consume(1, TokenType::Ops));
    assert!(!rl.is_blocked());
}

#[test]
fn rate_limiter_throttled_timer_fires_after_refill_time() {
    // 1 token per 20 ms.
    let mut rl = limiter(None, Some(bucket(1, 0, 20)));
    assert!(rl.consume(1, TokenType::Ops));
    let start = Instant::now();

    assert!(!rl.consume(1, TokenType::Ops));
    assert!(!readable_within(rl.as_raw_fd(), 0), "not before the refill");

    assert!(readable_within(rl.as_raw_fd(), 2000));
    assert!(start.elapsed() >= 15 * MS, "{:?}", start.elapsed());
    rl.event_handler().unwrap();
    assert!(!rl.is_blocked());
    assert!(rl.consume(1, TokenType::Ops));
}

#[test]
fn rate_limiter_event_handler_stale_event_would_block() {
    let mut rl = limiter(None, Some(bucket(1, 0, 100_000)));
    assert!(rl.consume(1, TokenType::Ops));
    assert!(!rl.consume(1, TokenType::Ops));

    let err = rl.event_handler().unwrap_err();

    assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    assert!(rl.is_blocked());
}

#[test]
fn rate_limiter_update_keeps_fd_and_wakes_blocked_device() {
    let mut rl = limiter(None, Some(bucket(1, 0, 100_000)));
    let fd = rl.as_raw_fd();
    assert!(rl.consume(1, TokenType::Ops));
    assert!(!rl.consume(1, TokenType::Ops));

    rl.update(&RateLimiterConfig {
        bandwidth: None,
        ops: Some(bucket(10, 0, 1000)),
    });

    assert_eq!(rl.as_raw_fd(), fd);
    assert!(readable_within(fd, 2000), "re-armed to fire at once");
    rl.event_handler().unwrap();
    for _ in 0..10 {
        assert!(rl.consume(1, TokenType::Ops));
    }
    assert!(!rl.consume(1, TokenType::Ops));
}

#[test]
fn rate_limiter_update_to_unlimited_unlimits() {
    let mut rl = limiter(Some(bucket(1, 0, 100_000)), None);
    assert!(rl.consume(1, TokenType::Bytes));

    rl.update(&RateLimiterConfig::default());

    assert!(rl.consume(u64::MAX, TokenType::Bytes));
}

#[test]
fn rate_limiter_oversized_request_does_not_deadlock() {
    // Size 10 per 10 ms; a 25-token request.
    let mut rl = limiter(Some(bucket(10, 0, 10)), None);

    // Full: it passes at once, and the debt blocks the next request.
    assert!(rl.consume(25, TokenType::Bytes));
    assert!(rl.is_blocked());
    assert!(!rl.consume(25, TokenType::Bytes));
    assert!(readable_within(rl.as_raw_fd(), 2000));
    rl.event_handler().unwrap();

    // Repaid: the bucket refills to full and the next oversized request passes.
    let deadline = Instant::now() + 2000 * MS;
    loop {
        if rl.consume(25, TokenType::Bytes) {
            break;
        }
        assert!(Instant::now() < deadline, "oversized request never passed");
        assert!(readable_within(rl.as_raw_fd(), 2000));
        rl.event_handler().unwrap();
    }
}

#[test]
fn rate_limiter_admit_bytes_refused_op_given_back() {
    let mut rl = limiter(Some(bucket(100, 0, 100_000)), Some(bucket(2, 0, 100_000)));
    assert!(rl.admit(100));

    assert!(!rl.admit(1));

    // The refused request's op came back: one op is still there.
    rl.blocked = false;
    assert!(rl.consume(1, TokenType::Ops));
    assert!(!rl.consume(1, TokenType::Ops));
}

#[test]
fn rate_limiter_admit_zero_bytes_takes_only_an_op() {
    let mut rl = limiter(Some(bucket(1, 0, 100_000)), Some(bucket(10, 0, 100_000)));

    assert!(rl.admit(0));

    assert!(rl.consume(1, TokenType::Bytes));
}
