//! What a PATCH to a running VM's drive or network interface asks, checked against
//! the configuration before the VMM thread touches the device.

use std::path::PathBuf;

use super::{check_file, drive_id_of, iface_id_of, limits, DrivePatch, NetworkInterfacePatch};
use crate::config::VmConfig;

/// What a `PATCH /drives/{id}` asks of the running VM, checked against `config`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriveUpdate {
    /// Index of the drive (and its device) in `config.disks`.
    pub index: usize,
    /// The new backing file, if any.
    pub path: Option<PathBuf>,
    /// The new limits, if any.
    pub rate_limiter: Option<devices::rate_limiter::RateLimiterConfig>,
}

/// Checks a drive patch: the drive exists, the new file exists.
pub fn check_drive_patch(config: &VmConfig, patch: &DrivePatch) -> Result<DriveUpdate, String> {
    let index = (0..config.disks.len())
        .find(|&i| drive_id_of(i, &config.disks[i]) == patch.drive_id)
        .ok_or_else(|| format!("drive_id '{}' is not a drive of this VM", patch.drive_id))?;
    let path = match &patch.path_on_host {
        Some(path) => Some(check_file("path_on_host", path, true)?),
        None => None,
    };
    let rate_limiter = limits::check_optional("rate_limiter", patch.rate_limiter.as_ref())?;
    if path.is_none() && rate_limiter.is_none() {
        return Err("PATCH /drives needs path_on_host or rate_limiter".into());
    }
    Ok(DriveUpdate {
        index,
        path,
        rate_limiter,
    })
}

/// What a `PATCH /network-interfaces/{id}` asks of the running VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetUpdate {
    /// Index of the interface (and its device) in `config.nets`.
    pub index: usize,
    /// The new receive limits (`None`: unchanged).
    pub rx: Option<devices::rate_limiter::RateLimiterConfig>,
    /// The new transmit limits (`None`: unchanged).
    pub tx: Option<devices::rate_limiter::RateLimiterConfig>,
}

/// Checks a network interface patch: the interface exists.
pub fn check_net_patch(
    config: &VmConfig,
    patch: &NetworkInterfacePatch,
) -> Result<NetUpdate, String> {
    let index = (0..config.nets.len())
        .find(|&i| iface_id_of(i, &config.nets[i]) == patch.iface_id)
        .ok_or_else(|| {
            format!(
                "iface_id '{}' is not a network interface of this VM",
                patch.iface_id
            )
        })?;
    Ok(NetUpdate {
        index,
        rx: limits::check_optional("rx_rate_limiter", patch.rx_rate_limiter.as_ref())?,
        tx: limits::check_optional("tx_rate_limiter", patch.tx_rate_limiter.as_ref())?,
    })
}
