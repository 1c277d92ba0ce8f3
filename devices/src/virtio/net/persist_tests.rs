//! Tests of virtio-net save and restore on the mock TAP and driver.

use super::super::super::test_utils::{
    config, frame, memory, net, Driver, MockTap, ALL_OFFLOADS, BUF, MAC,
};
use super::super::super::{CONFIG_MAC_OFFSET, CONFIG_MTU_OFFSET, TX_QUEUE};
use super::*;
use crate::snapshot::activate_params;

const OTHER_MAC: [u8; MAC_LEN] = [0x52, 0, 0, 0, 0, 0x99];

fn json_round_trip(state: &VirtioDeviceState) -> VirtioDeviceState {
    let json = serde_json::to_string(state).unwrap();
    serde_json::from_str(&json).unwrap()
}

/// A device on another TAP, configured with another MAC, as a restore builds it.
fn other_net() -> (Net, MockTap) {
    let tap = MockTap::new();
    let net = Net::with_backend(Box::new(tap.clone()), ALL_OFFLOADS, OTHER_MAC, 4).unwrap();
    (net, tap)
}

#[test]
fn net_restored_keeps_snapshot_mac_and_mtu_and_resumes_transmit() {
    let mem = memory();
    let mut driver = Driver::new(&mem);
    let (mut source, _source_tap) = net();
    source.set_mtu(Some(1400));
    driver.activate(&mut source);
    driver.send(BUF, &frame(60, 1));
    source.process_queue(TX_QUEUE);
    assert_eq!(driver.used(TX_QUEUE).len(), 1);
    let saved = json_round_trip(&source.save());
    let (mut restored, tap) = other_net();
    let params = activate_params(&saved, &mem, driver.irq.clone()).unwrap();

    restored.restore(&saved, Some(params)).unwrap();

    assert_eq!(restored.save(), saved);
    let config = config(&restored);
    assert_eq!(config[CONFIG_MAC_OFFSET..CONFIG_MAC_OFFSET + MAC_LEN], MAC);
    assert_eq!(
        config[CONFIG_MTU_OFFSET..CONFIG_MTU_OFFSET + 2],
        1400u16.to_le_bytes()
    );
    let sent = frame(80, 2);
    driver.send(BUF + 0x1000, &sent);
    restored.process_queue(TX_QUEUE);
    assert_eq!(driver.used(TX_QUEUE).len(), 2);
    assert_eq!(tap.written(), vec![sent]);
}

#[test]
fn net_multicast_mac_is_refused() {
    let (mut source, _tap) = net();
    let VirtioDeviceState::Net(mut state) = source.save() else {
        panic!("not a net state");
    };
    state.mac = [0x01, 0, 0x5e, 0, 0, 1];

    let err = source
        .restore(&VirtioDeviceState::Net(state), None)
        .unwrap_err();

    assert!(matches!(err, RestoreError::Mac { .. }), "{err}");
    assert_eq!(config(&source)[..MAC_LEN], MAC);
}

#[test]
fn net_too_small_mtu_is_refused() {
    let (mut source, _tap) = net();
    let VirtioDeviceState::Net(mut state) = source.save() else {
        panic!("not a net state");
    };
    state.mtu = Some(MIN_MTU - 1);

    let err = source
        .restore(&VirtioDeviceState::Net(state), None)
        .unwrap_err();

    assert!(matches!(err, RestoreError::Mtu { .. }), "{err}");
}
