//! Counters of a block device, shared with the VMM for its metrics endpoint.

use std::sync::atomic::AtomicU64;

use serde::Serialize;

/// What a block device did since it was created. The device updates the counters,
/// the VMM reads them through the `Arc` from [`super::Block::metrics`]; serialized
/// (serde) as a JSON object of plain numbers.
#[derive(Debug, Default, Serialize)]
pub struct BlockMetrics {
    /// Read requests completed.
    pub read_count: AtomicU64,
    /// Write requests completed.
    pub write_count: AtomicU64,
    /// Bytes read into the guest.
    pub read_bytes: AtomicU64,
    /// Bytes written from the guest.
    pub write_bytes: AtomicU64,
    /// Flush requests completed.
    pub flush_count: AtomicU64,
    /// Valid requests that failed while executing (IOERR for the guest).
    pub io_errors: AtomicU64,
    /// Chains rejected as malformed or unsupported.
    pub invalid_requests: AtomicU64,
    /// Times a request was held back by the rate limiter.
    pub rate_limiter_throttled: AtomicU64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::add_to_counter as add;

    #[test]
    fn block_metrics_serialize_plain_numbers() {
        let metrics = BlockMetrics::default();
        add(&metrics.read_count, 2);
        add(&metrics.read_bytes, 1024);

        let json = serde_json::to_value(&metrics).unwrap();

        assert_eq!(json["read_count"], 2);
        assert_eq!(json["read_bytes"], 1024);
        assert_eq!(json["rate_limiter_throttled"], 0);
        assert_eq!(json.as_object().unwrap().len(), 8);
    }
}
