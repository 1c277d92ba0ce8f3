//! Counters of a vsock device, shared with the VMM for its metrics endpoint.

use std::sync::atomic::AtomicU64;

use serde::Serialize;

/// What a vsock device did since it was created; serialized (serde) as a JSON
/// object of plain numbers.
#[derive(Debug, Default, Serialize)]
pub struct VsockMetrics {
    /// Activations that failed.
    pub activate_fails: AtomicU64,
    /// Packets put on the rxq (host to guest), control packets included.
    pub rx_packets: AtomicU64,
    /// Payload bytes given to the guest.
    pub rx_bytes: AtomicU64,
    /// Packets taken from the txq (guest to host), malformed ones included.
    pub tx_packets: AtomicU64,
    /// Payload bytes taken from the guest.
    pub tx_bytes: AtomicU64,
    /// Connections established or started.
    pub conns_added: AtomicU64,
    /// Connections that ended (any way).
    pub conns_killed: AtomicU64,
    /// Connections refused: no host listener, too many connections, a bad or late
    /// `CONNECT` line, the device not running.
    pub conns_refused: AtomicU64,
    /// Connections reset because the host process at the other end of their stream
    /// went away (closed its end or was killed) while the device was not reading the
    /// stream or had bytes waiting for it.
    pub host_hangups: AtomicU64,
    /// Closing connections reset because the guest or host did not finish in time.
    pub conns_timed_out: AtomicU64,
    /// Guest packets that were malformed or broke the protocol.
    pub malformed_packets: AtomicU64,
    /// RST packets queued for the guest.
    pub rst_sent: AtomicU64,
    /// Receive chains that could not hold a packet (completed empty).
    pub rx_bad_buffers: AtomicU64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::add_to_counter;

    #[test]
    fn vsock_metrics_serialize_plain_numbers() {
        let metrics = VsockMetrics::default();
        add_to_counter(&metrics.rx_bytes, 64);

        let json = serde_json::to_value(&metrics).unwrap();

        assert_eq!(json["rx_bytes"], 64);
        assert_eq!(json["rst_sent"], 0);
        assert_eq!(json.as_object().unwrap().len(), 13);
    }
}
