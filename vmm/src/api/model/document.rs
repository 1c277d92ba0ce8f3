//! The configuration as a config file holds it: what `GET /vm/config` returns.

use std::path::Path;

use devices::virtio::block::CacheType;

use super::{
    drive_id_of, iface_id_of, limits, observe, BootSource, CacheTypeBody, Drive, Entropy,
    HugePagesBody, IoEngine, MachineConfig, Metrics, NetworkInterface, Serial, VmDocument,
};
use crate::config::{HugePages, VmConfig};

fn path_text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

fn mac_text(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The configuration as a config file holds it (what `GET /vm/config` returns).
pub fn to_document(config: &VmConfig) -> VmDocument {
    let limiter =
        |l: &Option<devices::rate_limiter::RateLimiterConfig>| l.as_ref().map(limits::to_body);
    VmDocument {
        boot_source: config.kernel.as_ref().map(|kernel| BootSource {
            kernel_image_path: path_text(kernel),
            initrd_path: config.initrd.as_deref().map(path_text),
            boot_args: Some(config.cmdline.clone()),
        }),
        machine_config: Some(MachineConfig {
            vcpu_count: config.vcpus,
            mem_size_mib: config.mem_size_mib,
            smt: Some(config.machine.smt),
            track_dirty_pages: Some(config.machine.track_dirty_pages),
            huge_pages: Some(match config.machine.huge_pages {
                HugePages::None => HugePagesBody::None,
                HugePages::Size2M => HugePagesBody::Size2M,
            }),
            cpu_template: None,
        }),
        drives: config
            .disks
            .iter()
            .enumerate()
            .map(|(i, disk)| Drive {
                drive_id: drive_id_of(i, disk),
                path_on_host: path_text(&disk.path),
                is_root_device: disk.root,
                is_read_only: Some(disk.read_only),
                partuuid: disk.partuuid.clone(),
                cache_type: Some(match disk.cache_type {
                    CacheType::Unsafe => CacheTypeBody::Unsafe,
                    CacheType::Writeback => CacheTypeBody::Writeback,
                }),
                io_engine: Some(IoEngine::Sync),
                rate_limiter: limiter(&disk.rate_limiter),
                socket: None,
            })
            .collect(),
        network_interfaces: config
            .nets
            .iter()
            .enumerate()
            .map(|(i, net)| NetworkInterface {
                iface_id: iface_id_of(i, net),
                host_dev_name: net.tap.clone(),
                guest_mac: net.mac.as_ref().map(mac_text),
                mtu: net.mtu,
                rx_rate_limiter: limiter(&net.rx_rate_limiter),
                tx_rate_limiter: limiter(&net.tx_rate_limiter),
            })
            .collect(),
        logger: config.logger.as_ref().map(observe::logger_body),
        metrics: config.metrics_path.as_ref().map(|path| Metrics {
            metrics_path: path_text(path),
        }),
        entropy: config.entropy.as_ref().map(|e| Entropy {
            rate_limiter: limiter(&e.rate_limiter),
        }),
        serial: config.serial_out.as_ref().map(|path| Serial {
            serial_out_path: Some(path_text(path)),
            rate_limiter: None,
        }),
        vsock: config.vsock.as_ref().map(super::vsock::to_body),
    }
}
