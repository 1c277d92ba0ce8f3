//! Tests of the API and config-file model.

use super::*;

pub(super) fn base() -> VmConfig {
    VmConfig {
        vcpus: 1,
        mem_size_mib: 128,
        ..VmConfig::default()
    }
}

/// A scratch directory with a few files, removed on drop.
pub(super) struct Scratch(pub(super) PathBuf);

impl Scratch {
    pub(super) fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("cabin-model-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    pub(super) fn file(&self, name: &str) -> String {
        let path = self.0.join(name);
        fs::write(&path, b"data").unwrap();
        path.to_str().unwrap().to_owned()
    }

    pub(super) fn missing(&self, name: &str) -> String {
        self.0.join(name).to_str().unwrap().to_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn drive(id: &str, path: &str, root: bool) -> Drive {
    Drive {
        drive_id: id.into(),
        path_on_host: path.into(),
        is_root_device: root,
        ..Drive::default()
    }
}

fn nic(id: &str, tap: &str, mac: Option<&str>) -> NetworkInterface {
    NetworkInterface {
        iface_id: id.into(),
        host_dev_name: tap.into(),
        guest_mac: mac.map(String::from),
        ..NetworkInterface::default()
    }
}

fn machine(vcpu_count: u32, mem_size_mib: u64) -> ConfigChange {
    ConfigChange::Machine(MachineConfig {
        vcpu_count,
        mem_size_mib,
        ..MachineConfig::default()
    })
}

#[test]
fn machine_config_parses_firecracker_body() {
    let body = r#"{"vcpu_count": 2, "mem_size_mib": 256, "smt": false}"#;
    let parsed: MachineConfig = serde_json::from_str(body).unwrap();
    assert_eq!(
        parsed,
        MachineConfig {
            vcpu_count: 2,
            mem_size_mib: 256,
            smt: Some(false),
            ..MachineConfig::default()
        }
    );
}

#[test]
fn machine_config_unknown_field_is_named() {
    let err = serde_json::from_str::<MachineConfig>(r#"{"vcpus": 2, "mem_size_mib": 1}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `vcpus`"), "{err}");
}

#[test]
fn machine_config_missing_field_is_named() {
    let err = serde_json::from_str::<MachineConfig>(r#"{"vcpu_count": 2}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing field `mem_size_mib`"), "{err}");
}

#[test]
fn machine_config_wrong_type_is_named_once_with_position() {
    let err = serde_json::from_str::<MachineConfig>(r#"{"vcpu_count": "2", "mem_size_mib": 1}"#)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("vcpu_count: invalid type: string \"2\""),
        "{err}"
    );
    assert_eq!(err.matches(" at line ").count(), 1, "{err}");
    let err = serde_json::from_str::<MachineConfig>(r#"{"vcpu_count": -1, "mem_size_mib": 1}"#)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("vcpu_count: invalid value: integer `-1`"),
        "{err}"
    );
}

#[test]
fn action_unknown_variant_is_named() {
    let err = serde_json::from_str::<Action>(r#"{"action_type": "Reboot"}"#)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("action_type: unknown variant `Reboot`"),
        "{err}"
    );
    let ok: Action = serde_json::from_str(r#"{"action_type": "SendCtrlAltDel"}"#).unwrap();
    assert_eq!(ok.action_type, ActionType::SendCtrlAltDel);
}

#[test]
fn shutdown_takes_an_optional_bounded_timeout() {
    let parse = |body: &str| serde_json::from_str::<Action>(body).unwrap();
    let secs = |body: &str| parse(body).shutdown_timeout().map(|d| d.as_secs());
    assert_eq!(
        secs(r#"{"action_type": "Shutdown"}"#),
        Ok(SHUTDOWN_TIMEOUT_S)
    );
    assert_eq!(
        secs(r#"{"action_type": "Shutdown", "timeout_s": 5}"#),
        Ok(5)
    );
    let zero = secs(r#"{"action_type": "Shutdown", "timeout_s": 0}"#).unwrap_err();
    assert!(zero.starts_with("timeout_s: 0 is out of range"), "{zero}");
    let other = secs(r#"{"action_type": "SendCtrlAltDel", "timeout_s": 5}"#).unwrap_err();
    assert!(other.contains("only the Shutdown action"), "{other}");
    let err = serde_json::from_str::<Action>(r#"{"action_type": "Shutdown", "timeout_s": -1}"#)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("timeout_s: invalid value"), "{err}");
    assert_eq!(
        serde_json::to_string(&Action::new(ActionType::FlushMetrics)).unwrap(),
        r#"{"action_type":"FlushMetrics"}"#
    );
}

#[test]
fn vm_state_patch_parses_both_states() {
    let p: VmStatePatch = serde_json::from_str(r#"{"state": "Paused"}"#).unwrap();
    assert_eq!(p.state, VmStateRequest::Paused);
    let p: VmStatePatch = serde_json::from_str(r#"{"state": "Resumed"}"#).unwrap();
    assert_eq!(p.state, VmStateRequest::Resumed);
    assert!(serde_json::from_str::<VmStatePatch>(r#"{"state": "Running"}"#).is_err());
}

#[test]
fn without_position_strips_only_a_real_position() {
    assert_eq!(without_position("bad at line 1 column 20"), "bad");
    assert_eq!(
        without_position("bad at line x column 2"),
        "bad at line x column 2"
    );
    assert_eq!(without_position("plain"), "plain");
}

#[test]
fn apply_machine_sets_vcpus_and_memory() {
    let mut config = base();
    apply(&mut config, machine(4, 512)).unwrap();
    assert_eq!((config.vcpus, config.mem_size_mib), (4, 512));
}

#[test]
fn apply_machine_out_of_range_names_field() {
    let mut config = base();
    let cases = [
        (machine(0, 128), "vcpu_count 0"),
        (machine(MAX_VCPUS + 1, 128), "vcpu_count"),
        (machine(1, 0), "mem_size_mib 0"),
        (machine(1, MIN_MEM_MIB - 1), "mem_size_mib"),
    ];
    for (change, field) in cases {
        let err = apply(&mut config, change).unwrap_err();
        assert!(err.starts_with(field), "{err}");
    }
    let smt = ConfigChange::Machine(MachineConfig {
        vcpu_count: 3,
        mem_size_mib: 128,
        smt: Some(true),
        ..MachineConfig::default()
    });
    assert!(apply(&mut config, smt)
        .unwrap_err()
        .starts_with("smt true with vcpu_count 3"));
    assert_eq!(config, base(), "a refused change leaves the config alone");
}

#[test]
fn apply_machine_max_vcpus_is_accepted() {
    let mut config = base();
    apply(&mut config, machine(MAX_VCPUS, 128)).unwrap();
    assert_eq!(config.vcpus, MAX_VCPUS);
}

#[test]
fn apply_boot_sets_files_and_keeps_cmdline_without_boot_args() {
    let dir = Scratch::new("boot");
    let (kernel, initrd) = (dir.file("vmlinux"), dir.file("initrd"));
    let mut config = base();
    let boot = BootSource {
        kernel_image_path: kernel.clone(),
        initrd_path: Some(initrd.clone()),
        boot_args: None,
    };
    apply(&mut config, ConfigChange::Boot(boot)).unwrap();
    assert_eq!(config.kernel, Some(PathBuf::from(&kernel)));
    assert_eq!(config.initrd, Some(PathBuf::from(&initrd)));
    assert_eq!(config.cmdline, crate::config::DEFAULT_CMDLINE);
    let boot = BootSource {
        kernel_image_path: kernel,
        initrd_path: None,
        boot_args: Some("console=ttyS0 quiet".into()),
    };
    apply(&mut config, ConfigChange::Boot(boot)).unwrap();
    assert_eq!(config.initrd, None);
    assert_eq!(config.cmdline, "console=ttyS0 quiet");
}

#[test]
fn apply_boot_missing_files_name_field_and_path() {
    let dir = Scratch::new("bootmissing");
    let kernel = dir.file("vmlinux");
    let mut config = base();
    let boot = BootSource {
        kernel_image_path: dir.missing("nope"),
        initrd_path: None,
        boot_args: None,
    };
    let err = apply(&mut config, ConfigChange::Boot(boot)).unwrap_err();
    assert_eq!(
        err,
        format!("kernel_image_path {} does not exist", dir.missing("nope"))
    );
    let boot = BootSource {
        kernel_image_path: kernel,
        initrd_path: Some(dir.missing("initrd")),
        boot_args: None,
    };
    let err = apply(&mut config, ConfigChange::Boot(boot)).unwrap_err();
    assert!(err.starts_with("initrd_path"), "{err}");
    let boot = BootSource {
        kernel_image_path: dir.0.to_str().unwrap().into(),
        initrd_path: None,
        boot_args: None,
    };
    let err = apply(&mut config, ConfigChange::Boot(boot)).unwrap_err();
    assert!(err.ends_with("is not a regular file"), "{err}");
    assert_eq!(config, base());
}

#[test]
fn apply_drive_replaces_by_id_and_moves_root_first() {
    let dir = Scratch::new("drives");
    let (a, b, c) = (dir.file("a.img"), dir.file("b.img"), dir.file("c.img"));
    let mut config = base();
    apply(&mut config, ConfigChange::Drive(drive("data", &a, false))).unwrap();
    apply(&mut config, ConfigChange::Drive(drive("logs", &b, false))).unwrap();
    let mut replaced = drive("data", &c, false);
    replaced.is_read_only = Some(true);
    apply(&mut config, ConfigChange::Drive(replaced)).unwrap();
    assert_eq!(config.disks.len(), 2);
    assert_eq!(config.disks[0].path, PathBuf::from(&c));
    assert!(config.disks[0].read_only);
    apply(&mut config, ConfigChange::Drive(drive("logs", &b, true))).unwrap();
    let ids: Vec<_> = config.disks.iter().map(|d| d.id.clone().unwrap()).collect();
    assert_eq!(ids, ["logs", "data"]);
    apply(&mut config, ConfigChange::Drive(drive("rootfs", &a, true))).unwrap();
    assert_eq!(config.disks[0].id.as_deref(), Some("rootfs"));
    assert_eq!(config.disks.len(), 3);
}

#[test]
fn apply_drive_bad_values_name_field() {
    let dir = Scratch::new("baddrive");
    let a = dir.file("a.img");
    let mut config = base();
    let long = "x".repeat(DISK_ID_MAX_LEN + 1);
    let err = apply(&mut config, ConfigChange::Drive(drive(&long, &a, false))).unwrap_err();
    assert!(
        err.starts_with("drive_id") && err.contains("longer than 20"),
        "{err}"
    );
    let err = apply(&mut config, ConfigChange::Drive(drive("", &a, false))).unwrap_err();
    assert_eq!(err, "drive_id is empty");
    let missing = dir.missing("b.img");
    let err = apply(
        &mut config,
        ConfigChange::Drive(drive("d", &missing, false)),
    )
    .unwrap_err();
    assert_eq!(err, format!("path_on_host {missing} does not exist"));
    assert!(config.disks.is_empty());
}

#[test]
fn apply_net_replaces_by_id_and_checks_mac() {
    let mut config = base();
    apply(&mut config, ConfigChange::Net(nic("eth0", "tap0", None))).unwrap();
    apply(&mut config, ConfigChange::Net(nic("eth1", "tap1", None))).unwrap();
    let with_mac = nic("eth0", "tap9", Some("52:54:00:ab:cd:ef"));
    apply(&mut config, ConfigChange::Net(with_mac)).unwrap();
    assert_eq!(config.nets.len(), 2);
    assert_eq!(config.nets[0].tap, "tap9");
    assert_eq!(config.nets[0].mac, Some([0x52, 0x54, 0, 0xab, 0xcd, 0xef]));
    let bad = nic("eth2", "tap2", Some("52:54:00"));
    let err = apply(&mut config, ConfigChange::Net(bad)).unwrap_err();
    assert!(err.starts_with("guest_mac '52:54:00'"), "{err}");
    let bad = nic("eth2", "a-name-far-too-long", None);
    let err = apply(&mut config, ConfigChange::Net(bad)).unwrap_err();
    assert!(err.starts_with("host_dev_name"), "{err}");
    assert_eq!(config.nets.len(), 2);
}

#[test]
fn apply_net_replaces_command_line_interface_by_its_shown_id() {
    let mut config = base();
    config.nets.push(NetConfig {
        id: None,
        tap: "tap0".into(),
        ..NetConfig::default()
    });
    assert_eq!(to_document(&config).network_interfaces[0].iface_id, "eth0");
    apply(&mut config, ConfigChange::Net(nic("eth0", "tap5", None))).unwrap();
    assert_eq!(config.nets.len(), 1);
    assert_eq!(config.nets[0].tap, "tap5");
}

#[test]
fn to_document_round_trips_through_load() {
    let dir = Scratch::new("roundtrip");
    let mut config = base();
    config.kernel = Some(PathBuf::from(dir.file("vmlinux")));
    config.initrd = Some(PathBuf::from(dir.file("initrd")));
    config.cmdline = "console=ttyS0 reboot=k".into();
    config.vcpus = 2;
    config.mem_size_mib = 256;
    config.disks.push(DiskConfig {
        path: PathBuf::from(dir.file("root.img")),
        read_only: true,
        id: Some("rootfs".into()),
        root: true,
        ..DiskConfig::default()
    });
    config.nets.push(NetConfig {
        id: Some("net0".into()),
        tap: "tap0".into(),
        mac: Some([0x52, 0x54, 0, 1, 2, 3]),
        ..NetConfig::default()
    });
    let json = serde_json::to_string_pretty(&to_document(&config)).unwrap();
    let file = dir.0.join("vm.json");
    fs::write(&file, &json).unwrap();
    let loaded = load_config_file(&file, base()).unwrap();
    assert_eq!(loaded, config, "{json}");
}

#[test]
fn to_document_uses_firecracker_names() {
    let mut config = base();
    config.kernel = Some(PathBuf::from("/k"));
    let value = serde_json::to_value(to_document(&config)).unwrap();
    assert_eq!(value["boot-source"]["kernel_image_path"], "/k");
    assert_eq!(value["machine-config"]["vcpu_count"], 1);
    assert_eq!(value["machine-config"]["smt"], false);
    assert_eq!(value["drives"], serde_json::json!([]));
    assert_eq!(value["network-interfaces"], serde_json::json!([]));
}
