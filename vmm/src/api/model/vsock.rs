//! `PUT /vsock` (and the config file's `vsock` key): a virtio-vsock device whose
//! host side is a Unix socket (Firecracker's hybrid backend), and its checks.

use std::path::PathBuf;

use serde::de::Deserializer;
use serde::{Deserialize, Serialize};

use super::{check_output_path, named};
use crate::config::VsockConfig;

/// The lowest context id a guest may have: 0 and 1 are reserved, 2 is the host.
pub const MIN_GUEST_CID: u32 = 3;

/// The longest socket path (`sun_path` holds 108 bytes with the final NUL).
const MAX_UDS_PATH: usize = 107;

/// `PUT /vsock`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vsock {
    /// The guest's context id (3 or more).
    #[serde(deserialize_with = "de_guest_cid")]
    pub guest_cid: u32,
    /// The host side: the Unix socket host processes connect to (and the prefix of
    /// `<uds_path>_<port>`, where guest-initiated connections go).
    #[serde(deserialize_with = "de_uds_path")]
    pub uds_path: String,
    /// Firecracker's former device id; accepted and ignored.
    #[serde(
        default,
        deserialize_with = "de_vsock_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub vsock_id: Option<String>,
}

fn de_guest_cid<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    named(d, "guest_cid")
}

fn de_uds_path<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    named(d, "uds_path")
}

fn de_vsock_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    named(d, "vsock_id")
}

/// Checks a context id and a socket path as `PUT /vsock`, the config file and
/// `--vsock` give them. The path is made absolute (against cabin's working
/// directory), so `GET /vm/config` tells clients such as `cabin exec` where it is.
pub fn check_vsock(guest_cid: u32, uds_path: &str) -> Result<VsockConfig, String> {
    if guest_cid < MIN_GUEST_CID || guest_cid == u32::MAX {
        return Err(format!(
            "guest_cid {guest_cid} is reserved (0 and 1 are, 2 is the host, {} means any): give {MIN_GUEST_CID} or more",
            u32::MAX
        ));
    }
    let path = check_output_path("uds_path", uds_path)?;
    let uds_path =
        std::path::absolute(&path).map_err(|e| format!("uds_path {}: {e}", path.display()))?;
    let len = uds_path.as_os_str().len();
    if len > MAX_UDS_PATH {
        return Err(format!(
            "uds_path {} is {len} bytes long, more than a Unix socket address holds ({MAX_UDS_PATH}): choose a shorter path",
            uds_path.display()
        ));
    }
    Ok(VsockConfig {
        guest_cid,
        uds_path,
    })
}

/// The body `GET /vm/config` shows for `config`.
pub fn to_body(config: &VsockConfig) -> Vsock {
    Vsock {
        guest_cid: config.guest_cid,
        uds_path: config.uds_path.to_string_lossy().into_owned(),
        vsock_id: None,
    }
}

/// `vsock_override` of `PUT /snapshot/load`: the restored device listens here
/// instead (each clone of one snapshot needs its own socket).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VsockOverride {
    /// The Unix socket the restored device listens on.
    pub uds_path: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_vsock_refuses_reserved_cids_and_missing_directories() {
        for cid in [0, 1, 2, u32::MAX] {
            let err = check_vsock(cid, "v.sock").unwrap_err();
            assert!(
                err.contains(&format!("guest_cid {cid} is reserved")),
                "{err}"
            );
        }
        let err = check_vsock(3, "/nonexistent/dir/v.sock").unwrap_err();
        assert!(
            err.contains("directory /nonexistent/dir does not exist"),
            "{err}"
        );
        assert!(check_vsock(3, "")
            .unwrap_err()
            .contains("uds_path is empty"));
        let long = format!("/tmp/{}", "a".repeat(120));
        assert!(check_vsock(3, &long)
            .unwrap_err()
            .contains("choose a shorter path"));
        let config = check_vsock(3, "v.sock").unwrap();
        assert!(config.uds_path.is_absolute(), "{config:?}");
        assert!(config.uds_path.ends_with("v.sock"));
    }

    #[test]
    fn vsock_body_names_bad_fields() {
        let err = serde_json::from_str::<Vsock>(r#"{"guest_cid": -1, "uds_path": "v"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("guest_cid"), "{err}");
        let err = serde_json::from_str::<Vsock>(r#"{"guest_cid": 3, "uds_path": "v", "x": 1}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `x`"), "{err}");
        let body: Vsock =
            serde_json::from_str(r#"{"vsock_id": "vsock0", "guest_cid": 3, "uds_path": "v"}"#)
                .unwrap();
        assert_eq!(body.vsock_id.as_deref(), Some("vsock0"));
    }
}
