//! Tests of vsock save and restore.

use super::super::super::packet::op;
use super::super::super::test_utils::{guest_header, memory, Harness, GUEST_CID, GUEST_PORT};
use super::super::super::{Vsock, VsockConfig, EVENT_QUEUE};
use super::*;
use crate::snapshot::activate_params;
use crate::virtio::rng::RngState;
use crate::virtio::{VIRTIO_F_VERSION_1, VIRTIO_MMIO_INT_VRING};
use std::io::Read;

fn json_round_trip(state: &VirtioDeviceState) -> VirtioDeviceState {
    let json = serde_json::to_string(state).unwrap();
    serde_json::from_str(&json).unwrap()
}

/// A device with the same CID on another socket, as a restore builds it.
fn fresh(h: &Harness, cid: u64) -> Vsock {
    let mut path = h.uds.clone().into_os_string();
    path.push(".restored");
    Vsock::new(&VsockConfig {
        guest_cid: cid,
        uds_path: path.into(),
    })
    .unwrap()
}

#[test]
fn vsock_saved_state_round_trips_and_restore_sends_transport_reset() {
    let mem = memory();
    let mut h = Harness::new(&mem);
    let (mut stream, req) = h.established();
    h.rx_packets();
    h.post(EVENT_QUEUE, &[(8, true)]);
    let saved = json_round_trip(&h.vsock.save());
    let VirtioDeviceState::Vsock(state) = &saved else {
        panic!("not a vsock state");
    };
    assert_eq!(state.guest_cid, GUEST_CID);
    assert_eq!(state.acked_features, VIRTIO_F_VERSION_1);
    assert_eq!(state.queues.len(), 3);
    // Saving leaves the live connection alone.
    h.send(&guest_header(GUEST_PORT, req.src_port, op::RW), b"still");
    let mut got = [0u8; 5];
    stream.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"still");

    let mut restored = fresh(&h, GUEST_CID);
    h.irq.ack(VIRTIO_MMIO_INT_VRING);
    let params = activate_params(&saved, &mem, h.irq.clone()).unwrap();
    restored.restore(&saved, Some(params)).unwrap();
    drop(std::mem::replace(&mut h.vsock, restored));

    let VirtioDeviceState::Vsock(again) = h.vsock.save() else {
        panic!("not a vsock state");
    };
    assert_eq!(again.guest_cid, GUEST_CID);
    assert_eq!(h.events(), vec![0u32.to_le_bytes().to_vec()]);
    assert_ne!(h.irq.status() & VIRTIO_MMIO_INT_VRING, 0);
    // The restored device knows no connections: the old one gets a RST.
    h.post_rx(1);
    h.send(&guest_header(GUEST_PORT, req.src_port, op::RW), b"lost");
    assert_eq!(h.rx_packets()[0].0.op, op::RST);
}

#[test]
fn vsock_restore_event_waits_for_an_event_buffer() {
    let mem = memory();
    let mut h = Harness::new(&mem);
    let saved = h.vsock.save();
    let mut restored = fresh(&h, GUEST_CID);
    let params = activate_params(&saved, &mem, h.irq.clone()).unwrap();
    restored.restore(&saved, Some(params)).unwrap();
    h.vsock = restored;
    assert!(h.events().is_empty());

    h.post(EVENT_QUEUE, &[(4, true)]);
    h.vsock.process_queue(EVENT_QUEUE);

    assert_eq!(h.events(), vec![vec![0u8; 4]]);
    h.post(EVENT_QUEUE, &[(4, true)]);
    h.vsock.process_queue(EVENT_QUEUE);
    assert!(h.events().is_empty(), "only one reset event");
}

#[test]
fn vsock_restore_not_activated() {
    let mem = memory();
    let h = Harness::inactive(&mem);
    let saved = h.vsock.save();
    let mut restored = fresh(&h, GUEST_CID);

    restored.restore(&saved, None).unwrap();

    assert_eq!(restored.save(), saved);
}

#[test]
fn vsock_restore_other_cid_refused() {
    let mem = memory();
    let h = Harness::new(&mem);
    let saved = h.vsock.save();
    let mut restored = fresh(&h, GUEST_CID + 1);
    let params = activate_params(&saved, &mem, h.irq.clone()).unwrap();

    let err = restored.restore(&saved, Some(params)).unwrap_err();

    assert!(err.to_string().contains("cannot start"), "{err}");
    let chain = format!("{:?}", err);
    assert!(chain.contains("guest CID 3"), "{chain}");
}

#[test]
fn vsock_restore_other_device_type_refused() {
    let mem = memory();
    let h = Harness::inactive(&mem);
    let mut restored = fresh(&h, GUEST_CID);
    let rng = VirtioDeviceState::Rng(RngState {
        queues: Vec::new(),
        acked_features: 0,
    });

    let err = restored.restore(&rng, None).unwrap_err();

    assert!(matches!(err, RestoreError::DeviceType { .. }));
    assert!(err.to_string().contains("vsock"), "{err}");
}

#[test]
fn vsock_restore_queues_without_activation_refused() {
    let mem = memory();
    let h = Harness::new(&mem);
    let saved = h.vsock.save();
    let mut restored = fresh(&h, GUEST_CID);

    let err = restored.restore(&saved, None).unwrap_err();

    assert!(
        matches!(err, RestoreError::ActivationMismatch { .. }),
        "{err}"
    );
}
