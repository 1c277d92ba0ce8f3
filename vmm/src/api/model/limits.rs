//! Firecracker's `RateLimiter` and `TokenBucket` bodies (drives, network interfaces,
//! entropy), and their checks.

use devices::rate_limiter::{RateLimiterConfig, TokenBucketConfig};
use serde::de::Deserializer;
use serde::{Deserialize, Serialize};

use super::named;

/// A token bucket: `size` tokens, refilled from empty in `refill_time` ms, plus
/// `one_time_burst` tokens available once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBucket {
    /// Capacity in tokens (bytes or operations), at least 1.
    #[serde(deserialize_with = "de_size")]
    pub size: u64,
    /// Extra tokens spent before the refilled ones, once.
    #[serde(
        default,
        deserialize_with = "de_one_time_burst",
        skip_serializing_if = "Option::is_none"
    )]
    pub one_time_burst: Option<u64>,
    /// Milliseconds to refill `size` tokens from empty, at least 1.
    #[serde(deserialize_with = "de_refill_time")]
    pub refill_time: u64,
}

/// A rate limiter: a bandwidth bucket (bytes) and an ops bucket (requests or frames);
/// an absent bucket is no limit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimiter {
    /// Bytes.
    #[serde(
        default,
        deserialize_with = "de_bandwidth",
        skip_serializing_if = "Option::is_none"
    )]
    pub bandwidth: Option<TokenBucket>,
    /// Operations.
    #[serde(
        default,
        deserialize_with = "de_ops",
        skip_serializing_if = "Option::is_none"
    )]
    pub ops: Option<TokenBucket>,
}

fn de_size<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    named(d, "size")
}
fn de_one_time_burst<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    named(d, "one_time_burst")
}
fn de_refill_time<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    named(d, "refill_time")
}
fn de_bandwidth<'de, D: Deserializer<'de>>(d: D) -> Result<Option<TokenBucket>, D::Error> {
    named(d, "bandwidth")
}
fn de_ops<'de, D: Deserializer<'de>>(d: D) -> Result<Option<TokenBucket>, D::Error> {
    named(d, "ops")
}

/// Checks a rate limiter given as `field` and turns it into the devices' form; a
/// bucket of size 0 or refill time 0 is refused (leave the bucket out for no limit).
pub fn check_rate_limiter(field: &str, limiter: &RateLimiter) -> Result<RateLimiterConfig, String> {
    let bucket = |name: &str, bucket: &Option<TokenBucket>| -> Result<_, String> {
        let Some(b) = bucket else { return Ok(None) };
        let zero = |what: &str| {
            format!(
                "{field}.{name}.{what} is 0: give a positive value, or leave {name} out for no limit"
            )
        };
        if b.size == 0 {
            return Err(zero("size"));
        }
        if b.refill_time == 0 {
            return Err(zero("refill_time"));
        }
        Ok(Some(TokenBucketConfig {
            size: b.size,
            one_time_burst: b.one_time_burst.unwrap_or(0),
            refill_time_ms: b.refill_time,
        }))
    };
    Ok(RateLimiterConfig {
        bandwidth: bucket("bandwidth", &limiter.bandwidth)?,
        ops: bucket("ops", &limiter.ops)?,
    })
}

/// Checks an optional rate limiter (see [`check_rate_limiter`]).
pub fn check_optional(
    field: &str,
    limiter: Option<&RateLimiter>,
) -> Result<Option<RateLimiterConfig>, String> {
    limiter.map(|l| check_rate_limiter(field, l)).transpose()
}

/// The body form of a device's rate limiter (for `GET /vm/config`).
pub fn to_body(config: &RateLimiterConfig) -> RateLimiter {
    let bucket = |b: &Option<TokenBucketConfig>| {
        b.map(|b| TokenBucket {
            size: b.size,
            one_time_burst: (b.one_time_burst > 0).then_some(b.one_time_burst),
            refill_time: b.refill_time_ms,
        })
    };
    RateLimiter {
        bandwidth: bucket(&config.bandwidth),
        ops: bucket(&config.ops),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_rate_limiter_converts_buckets_and_refuses_zero() {
        let body: RateLimiter = serde_json::from_str(
            r#"{"bandwidth": {"size": 1048576, "refill_time": 100}, "ops": {"size": 10, "one_time_burst": 5, "refill_time": 1000}}"#,
        )
        .unwrap();
        let config = check_rate_limiter("rate_limiter", &body).unwrap();
        assert_eq!(config.bandwidth.unwrap().size, 1 << 20);
        assert_eq!(config.ops.unwrap().one_time_burst, 5);
        assert_eq!(to_body(&config), body);

        let zero: RateLimiter =
            serde_json::from_str(r#"{"ops": {"size": 0, "refill_time": 10}}"#).unwrap();
        let message = check_rate_limiter("tx_rate_limiter", &zero).unwrap_err();
        assert!(
            message.starts_with("tx_rate_limiter.ops.size is 0"),
            "{message}"
        );
        let zero: RateLimiter =
            serde_json::from_str(r#"{"bandwidth": {"size": 1, "refill_time": 0}}"#).unwrap();
        let message = check_rate_limiter("rate_limiter", &zero).unwrap_err();
        assert!(message.contains("bandwidth.refill_time is 0"), "{message}");
    }

    #[test]
    fn rate_limiter_bad_types_name_the_field() {
        let err = serde_json::from_str::<RateLimiter>(
            r#"{"bandwidth": {"size": -1, "refill_time": 10}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("bandwidth: size: invalid value"), "{err}");
        let err = serde_json::from_str::<RateLimiter>(r#"{"ops": {"size": 1}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing field `refill_time`"), "{err}");
    }
}
