//! Tests of block device save and restore.

use vmm_sys_util::tempfile::TempFile;

use super::super::super::test_env::{
    config, data, disk_file, file_bytes, irq, memory, Env, DISK_SECTORS, T_IN,
};
use super::super::super::SECTOR_SIZE;
use super::*;
use crate::snapshot::activate_params;
use crate::virtio::rng::RngState;

fn json_round_trip(state: &VirtioDeviceState) -> VirtioDeviceState {
    let json = serde_json::to_string(state).unwrap();
    serde_json::from_str(&json).unwrap()
}

fn block_on(tmp: &TempFile, read_only: bool) -> Block {
    Block::new(&config(tmp.as_path(), read_only, None)).unwrap()
}

#[test]
fn block_restored_resumes_at_saved_indices_with_right_data() {
    let mem = memory();
    let mut env = Env::new(&mem, false, None);
    for slot in 0..2 {
        env.add_request(slot, T_IN, slot, SECTOR_SIZE as u32);
        env.block.process_queue(0);
    }
    assert_eq!(env.used_idx(), 2);
    let saved = json_round_trip(&env.block.save());
    let mut restored = block_on(&env.tmp, false);
    let params = activate_params(&saved, &mem, irq()).unwrap();

    restored.restore(&saved, Some(params)).unwrap();

    assert_eq!(restored.save(), saved);
    env.add_request(2, T_IN, 5, SECTOR_SIZE as u32);
    restored.process_queue(0);
    assert_eq!(env.used_idx(), 3);
    assert_eq!(env.used(2).0, 16);
    assert_eq!(env.status(2), 0);
    assert_eq!(
        env.guest(data(2), SECTOR_SIZE as usize),
        file_bytes(env.tmp.as_file(), 5 * SECTOR_SIZE, SECTOR_SIZE as usize)
    );
}

#[test]
fn block_not_activated_state_round_trips() {
    let tmp = disk_file(DISK_SECTORS);
    let source = block_on(&tmp, true);
    let saved = json_round_trip(&source.save());
    let mut restored = block_on(&tmp, true);

    restored.restore(&saved, None).unwrap();

    assert_eq!(restored.save(), saved);
    let VirtioDeviceState::Block(state) = saved else {
        panic!("not a block state");
    };
    assert!(state.queues.is_empty());
    assert!(state.read_only);
    assert_eq!(state.num_sectors, DISK_SECTORS);
}

#[test]
fn block_disk_size_changed_is_refused_naming_the_path() {
    let tmp = disk_file(DISK_SECTORS);
    let saved = block_on(&tmp, false).save();
    let bigger = disk_file(DISK_SECTORS * 2);
    let mut restored = block_on(&bigger, false);

    let err = restored.restore(&saved, None).unwrap_err();

    assert!(
        matches!(&err, RestoreError::DiskSize { path, here: 32, snapshot: 16 }
            if path == bigger.as_path()),
        "{err}"
    );
    assert!(err
        .to_string()
        .contains(&bigger.as_path().display().to_string()));
}

#[test]
fn block_read_only_mode_changed_is_refused() {
    let tmp = disk_file(DISK_SECTORS);
    let saved = block_on(&tmp, false).save();
    let mut restored = block_on(&tmp, true);

    let err = restored.restore(&saved, None).unwrap_err();

    assert!(
        matches!(
            err,
            RestoreError::DiskReadOnly {
                here: "read-only",
                snapshot: "read-write",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn block_other_device_state_is_refused() {
    let tmp = disk_file(DISK_SECTORS);
    let mut restored = block_on(&tmp, false);
    let state = VirtioDeviceState::Rng(RngState {
        queues: Vec::new(),
        acked_features: 0,
    });

    let err = restored.restore(&state, None).unwrap_err();

    assert!(
        matches!(
            err,
            RestoreError::DeviceType {
                snapshot: "rng",
                here: "block"
            }
        ),
        "{err}"
    );
}

#[test]
fn block_features_not_offered_are_refused() {
    let tmp = disk_file(DISK_SECTORS);
    let mut restored = block_on(&tmp, false);
    let VirtioDeviceState::Block(mut state) = restored.save() else {
        panic!("not a block state");
    };
    state.acked_features = 1 << 9;

    let err = restored
        .restore(&VirtioDeviceState::Block(state), None)
        .unwrap_err();

    assert!(
        matches!(err, RestoreError::FeaturesNotOffered { .. }),
        "{err}"
    );
}
