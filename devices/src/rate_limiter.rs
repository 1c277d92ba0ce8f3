//! Token-bucket rate limiting for device I/O, with Firecracker's semantics.
//!
//! A [`RateLimiter`] holds up to two [`TokenBucket`]s: `bandwidth` (one token per
//! byte) and `ops` (one token per request). A bucket holds at most `size` tokens and
//! refills continuously at `size` tokens per `refill_time_ms`; its `one_time_burst`
//! is an extra allowance spent first and never refilled. A bucket with `size` 0 or
//! `refill_time_ms` 0 does not limit.
//!
//! A device asks [`RateLimiter::consume`] before it executes a request. When a
//! bucket lacks the tokens, the request is refused, the limiter becomes blocked and
//! its timerfd is armed for the moment enough tokens will have refilled. The device
//! leaves the request on its queue and stops; the VMM's event loop watches the
//! timerfd (through the device's `event_fds`), and when it fires the device calls
//! [`RateLimiter::event_handler`] and resumes. Nothing polls.
//!
//! A request larger than a bucket could ever hold is let through once the bucket is
//! full; the tokens it takes beyond what the bucket had become a debt that blocks
//! the limiter until it is refilled, so the average rate still holds and nothing
//! waits forever.
//!
//! The timerfd is created by [`RateLimiter::new`] and never replaced: the VMM
//! thread's seccomp filter does not allow creating descriptors after start.

use crate::set_nonblocking;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use log::Level;
use vmm_sys_util::timerfd::TimerFd;

use crate::ratelimit::log_ratelimited;

/// Shortest time the timer is armed for: a wake-up per millisecond at most, and
/// never the zero duration, which would disarm the timer instead.
const MIN_TIMER_DURATION: Duration = Duration::from_millis(1);
/// Nanoseconds per millisecond.
const NANOS_PER_MILLI: u128 = 1_000_000;

/// Configuration of one token bucket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TokenBucketConfig {
    /// Capacity in tokens; 0 means no limit.
    pub size: u64,
    /// Extra tokens available once, spent before the refilled ones.
    pub one_time_burst: u64,
    /// Milliseconds to refill `size` tokens from empty; 0 means no limit.
    pub refill_time_ms: u64,
}

/// Configuration of a rate limiter: a bucket per token type, `None` for no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RateLimiterConfig {
    /// Bytes.
    pub bandwidth: Option<TokenBucketConfig>,
    /// Operations (requests, frames).
    pub ops: Option<TokenBucketConfig>,
}

/// Which bucket tokens come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenType {
    /// The bandwidth bucket: one token per byte.
    Bytes,
    /// The ops bucket: one token per operation.
    Ops,
}

/// What a bucket said to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reduction {
    /// The tokens were taken.
    Success,
    /// Not enough tokens: the request may pass after this long.
    Failure(Duration),
    /// The request is larger than the bucket can hold: it passed, and the bucket
    /// is in debt for this long.
    OverConsumption(Duration),
}

/// A bucket of tokens refilled continuously at `size` tokens per `refill_time`.
#[derive(Debug, Clone)]
struct TokenBucket {
    /// Capacity, at least 1.
    size: u64,
    /// Refill time of a full bucket in nanoseconds, at least 1.
    refill_ns: u128,
    /// What is left of the one-time burst.
    one_time_burst: u64,
    /// Tokens available, at most `size`.
    budget: u64,
    /// The refill is accounted up to this instant; in the future while in debt.
    last_update: Instant,
}

impl TokenBucket {
    /// A full bucket, or `None` for a configuration that does not limit.
    fn new(config: &TokenBucketConfig, now: Instant) -> Option<TokenBucket> {
        if config.size == 0 || config.refill_time_ms == 0 {
            return None;
        }
        Some(TokenBucket {
            size: config.size,
            refill_ns: u128::from(config.refill_time_ms) * NANOS_PER_MILLI,
            one_time_burst: config.one_time_burst,
            budget: config.size,
            last_update: now,
        })
    }

    /// Adds the tokens refilled between `last_update` and `now`. Only whole tokens
    /// are added, and `last_update` advances by just the time they took, so no
    /// fraction of a token is lost between calls.
    fn refill(&mut self, now: Instant) {
        let Some(elapsed) = now.checked_duration_since(self.last_update) else {
            return; // In debt until last_update.
        };
        let elapsed_ns = elapsed.as_nanos();
        let size = u128::from(self.size);
        let tokens = elapsed_ns.saturating_mul(size) / self.refill_ns;
        let room = u128::from(self.size - self.budget);
        if tokens >= room {
            self.budget = self.size;
            self.last_update = now;
            return;
        }
        // tokens < room <= size: fits in u64. The time it took is at most elapsed.
        self.budget += u64::try_from(tokens).unwrap_or(0);
        let used_ns = tokens.saturating_mul(self.refill_ns).div_ceil(size);
        self.last_update += duration_from_nanos(used_ns);
    }

    /// How long from `now` until `budget` reaches `tokens` (at most `size`).
    fn time_until(&self, tokens: u64, now: Instant) -> Duration {
        let missing = tokens.saturating_sub(self.budget);
        let ns = u128::from(missing)
            .saturating_mul(self.refill_ns)
            .div_ceil(u128::from(self.size));
        // The refill is accounted up to last_update; anything after counts from there.
        let ready = self
            .last_update
            .checked_add(duration_from_nanos(ns))
            .unwrap_or(self.last_update);
        ready.saturating_duration_since(now)
    }

    /// Takes `tokens`, one-time burst first.
    fn reduce(&mut self, tokens: u64, now: Instant) -> Reduction {
        self.refill(now);
        let from_burst = tokens.min(self.one_time_burst);
        let rest = tokens - from_burst;
        if rest <= self.budget {
            self.one_time_burst -= from_burst;
            self.budget -= rest;
            return Reduction::Success;
        }
        if rest <= self.size {
            return Reduction::Failure(self.time_until(rest, now));
        }
        if self.budget < self.size {
            // Waiting helps until the bucket is full; then the request passes.
            return Reduction::Failure(self.time_until(self.size, now));
        }
        // Full, and still too small: let it pass and owe the rest.
        let debt = rest - self.budget;
        self.one_time_burst -= from_burst;
        self.budget = 0;
        let debt_ns = u128::from(debt)
            .saturating_mul(self.refill_ns)
            .div_ceil(u128::from(self.size));
        let debt_time = duration_from_nanos(debt_ns);
        self.last_update = now.checked_add(debt_time).unwrap_or(now);
        Reduction::OverConsumption(debt_time)
    }

    /// Gives tokens back (a request that failed after consuming), up to `size`.
    fn replenish(&mut self, tokens: u64) {
        self.budget = self.budget.saturating_add(tokens).min(self.size);
    }
}

/// `ns` as a Duration, saturating at `u64::MAX` nanoseconds (584 years).
fn duration_from_nanos(ns: u128) -> Duration {
    Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
}

/// Up to two token buckets and the timerfd that ends a throttling.
#[derive(Debug)]
pub struct RateLimiter {
    bandwidth: Option<TokenBucket>,
    ops: Option<TokenBucket>,
    timer: TimerFd,
    /// Refused since the timer was armed; cleared by [`RateLimiter::event_handler`].
    blocked: bool,
    throttled: u64,
}

impl RateLimiter {
    /// A limiter with full buckets, and its timerfd (nonblocking, disarmed).
    pub fn new(config: &RateLimiterConfig) -> io::Result<RateLimiter> {
        let timer = TimerFd::new().map_err(io::Error::from)?;
        set_nonblocking(timer.as_raw_fd())?;
        let now = Instant::now();
        Ok(RateLimiter {
            bandwidth: config.bandwidth.and_then(|c| TokenBucket::new(&c, now)),
            ops: config.ops.and_then(|c| TokenBucket::new(&c, now)),
            timer,
            blocked: false,
            throttled: 0,
        })
    }

    /// Takes `tokens` of `kind`. `false`: the request must wait; the limiter is
    /// blocked and its timer armed for when it may be retried. A blocked limiter
    /// refuses everything until [`RateLimiter::event_handler`] runs.
    pub fn consume(&mut self, tokens: u64, kind: TokenType) -> bool {
        self.consume_at(tokens, kind, Instant::now())
    }

    fn consume_at(&mut self, tokens: u64, kind: TokenType, now: Instant) -> bool {
        if self.blocked {
            self.throttled = self.throttled.saturating_add(1);
            return false;
        }
        let Some(bucket) = self.bucket_mut(kind) else {
            return true;
        };
        match bucket.reduce(tokens, now) {
            Reduction::Success => true,
            Reduction::OverConsumption(debt) => {
                // This request passes; the next ones wait for the debt.
                self.block_for(debt);
                true
            }
            Reduction::Failure(wait) => {
                self.throttled = self.throttled.saturating_add(1);
                self.block_for(wait);
                false
            }
        }
    }

    /// Takes what one request costs: an op, and `bytes` bandwidth tokens (none
    /// taken when it is 0). All or nothing: if the bytes are refused the op is
    /// given back. `false`: throttled, as for [`RateLimiter::consume`].
    pub fn admit(&mut self, bytes: u64) -> bool {
        if !self.consume(1, TokenType::Ops) {
            return false;
        }
        if bytes > 0 && !self.consume(bytes, TokenType::Bytes) {
            self.manual_replenish(1, TokenType::Ops);
            return false;
        }
        true
    }

    /// Returns `tokens` of `kind` taken for a request that was not carried out
    /// (e.g. its bandwidth was refused after its op was taken).
    pub fn manual_replenish(&mut self, tokens: u64, kind: TokenType) {
        if let Some(bucket) = self.bucket_mut(kind) {
            bucket.replenish(tokens);
        }
    }

    /// Whether requests are refused until the timer fires.
    pub fn is_blocked(&self) -> bool {
        self.blocked
    }

    /// The timerfd the event loop watches: readable when the throttling ends.
    pub fn as_raw_fd(&self) -> RawFd {
        self.timer.as_raw_fd()
    }

    /// The timerfd is readable: reads it and unblocks. A read that finds the timer
    /// not expired (a stale event) leaves the limiter as it was and fails with
    /// `WouldBlock`.
    pub fn event_handler(&mut self) -> io::Result<()> {
        loop {
            match self.timer.wait().map_err(io::Error::from) {
                Ok(_) => {
                    self.blocked = false;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// What a device does when its limiter's timerfd is readable: true when the
    /// limiter is unblocked and the throttled queue may be processed again; false
    /// for a stale event (the timer was re-armed after it was reported: wait for
    /// it) or a timer that cannot be read (logged, rate-limited, naming `device`).
    pub fn timer_expired(&mut self, device: &dyn fmt::Display) -> bool {
        match self.event_handler() {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(e) => {
                log_ratelimited!(
                    Level::Error,
                    "{device}: cannot read a rate limiter timer: {e}"
                );
                false
            }
        }
    }

    /// Replaces both buckets with full ones from `config` (`None`: no limit), as
    /// PATCH does; the timerfd stays. A blocked limiter gets its timer re-armed to
    /// fire at once, so the device retries under the new limits.
    pub fn update(&mut self, config: &RateLimiterConfig) {
        let now = Instant::now();
        self.bandwidth = config.bandwidth.and_then(|c| TokenBucket::new(&c, now));
        self.ops = config.ops.and_then(|c| TokenBucket::new(&c, now));
        if self.blocked {
            self.arm(Duration::from_nanos(1));
        }
    }

    /// How many times a request was refused.
    pub fn throttled_count(&self) -> u64 {
        self.throttled
    }

    fn bucket_mut(&mut self, kind: TokenType) -> Option<&mut TokenBucket> {
        match kind {
            TokenType::Bytes => self.bandwidth.as_mut(),
            TokenType::Ops => self.ops.as_mut(),
        }
    }

    fn block_for(&mut self, wait: Duration) {
        self.blocked = true;
        self.arm(wait.max(MIN_TIMER_DURATION));
    }

    fn arm(&mut self, after: Duration) {
        if let Err(e) = self.timer.reset(after, None) {
            // timerfd_settime fails only on invalid arguments; unblocking now is the
            // only way not to stall the device for good.
            log::error!("Cannot arm the rate limiter timer for {after:?}: {e}");
            self.blocked = false;
        }
    }
}

#[cfg(test)]
#[path = "rate_limiter_tests.rs"]
mod tests;
