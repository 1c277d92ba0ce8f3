//! Rate-limited logging for guest-triggered events.
//!
//! A guest can hit an unexpected register millions of times a second; logging
//! each one would flood the host. Each call site of [`log_ratelimited!`] counts
//! its own occurrences and logs the first [`ALWAYS_LOGGED`] of them, then only
//! when the count reaches a power of two, so a storm produces a logarithmic
//! number of lines that still carry the running count.

/// How many occurrences per call site are logged unconditionally.
pub(crate) const ALWAYS_LOGGED: u64 = 10;

/// Whether the `count`-th occurrence (counting from 1) of an event is logged.
pub fn should_log(count: u64) -> bool {
    count <= ALWAYS_LOGGED || count.is_power_of_two()
}

/// Logs at `$level` like `log::log!`, limited per call site by [`should_log`].
/// Exported for the VMM's exit handling (`devices::log_ratelimited!`).
#[macro_export]
macro_rules! log_ratelimited {
    ($level:expr, $($arg:tt)+) => {{
        static COUNT: ::std::sync::atomic::AtomicU64 = ::std::sync::atomic::AtomicU64::new(0);
        let count = COUNT
            .fetch_add(1, ::std::sync::atomic::Ordering::Relaxed)
            .wrapping_add(1);
        if $crate::ratelimit::should_log(count) {
            ::log::log!($level, "{} (occurrence {})", format_args!($($arg)+), count);
        }
    }};
}

pub(crate) use crate::log_ratelimited;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn should_log_first_occurrences_logged() {
        assert!((1..=ALWAYS_LOGGED).all(should_log));
    }

    #[test]
    fn should_log_after_burst_only_powers_of_two() {
        let logged: Vec<u64> = (ALWAYS_LOGGED + 1..=1000)
            .filter(|&n| should_log(n))
            .collect();
        assert_eq!(logged, vec![16, 32, 64, 128, 256, 512]);
    }

    #[test]
    fn should_log_large_power_of_two_logged() {
        assert!(should_log(1 << 63));
        assert!(!should_log((1 << 63) + 1));
    }
}
