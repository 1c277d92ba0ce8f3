//! Entry points for cabin's fuzz targets (`tests/fuzz`): the server's HTTP framing and
//! its endpoints' body handling are private to it, so the targets reach them here,
//! called the way a connection calls them. Not an API: nothing else uses this.

use super::http::{format_reply, parse_request, Parsed, Reply, READ_CHUNK};
use super::routes::{self, Dispatch, Route};
use super::Limits;
use crate::api::model::{self, ConfigChange, DeviceUpdate};
use crate::api::ApiRequest;
use crate::cli::{parse_disk, parse_net};
use crate::config::VmConfig;

/// The drive and interface ids of [`base_config`], which the `api` target's paths use.
pub const DRIVE_ID: &str = "rootfs";
/// See [`DRIVE_ID`].
pub const IFACE_ID: &str = "eth0";

/// A configuration with one drive and one interface, so that patches find them.
pub fn base_config() -> VmConfig {
    let mut config = VmConfig::default();
    if let Ok(disk) = parse_disk(&format!("path=/dev/null,id={DRIVE_ID}")) {
        config.disks.push(disk);
    }
    if let Ok(mut net) = parse_net("tap=tap0") {
        net.id = Some(IFACE_ID.to_owned());
        config.nets.push(net);
    }
    config
}

/// One connection's bytes: the first byte sets how many arrive per read (1 to
/// 4096), the rest is what the client sends. Every whole request is routed and its
/// body checked and applied to a configuration as the VMM thread would (before the
/// VM starts; patches as on a running VM), and every reply is formatted.
pub fn http(data: &[u8]) {
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let chunk = (usize::from(chunk) * 16 + 1).min(READ_CHUNK);
    let limits = Limits::default();
    let mut config = base_config();
    let mut input = Vec::new();
    let mut continued = false;
    for piece in stream.chunks(chunk) {
        input.extend_from_slice(piece);
        loop {
            match parse_request(&mut input, &limits, &mut continued) {
                Parsed::Incomplete { .. } => break,
                Parsed::Refuse(reply) => {
                    format_reply(&reply.closing());
                    return;
                }
                Parsed::Request(request) => {
                    let dispatched = routes::route(&request.method, &request.target)
                        .and_then(|route| routes::dispatch(&route, &request.body));
                    format_reply(&serve(&mut config, dispatched));
                    if request.close {
                        return;
                    }
                }
            }
        }
    }
}

/// The endpoints that take a body, for the `api` target's first byte.
fn body_route(selector: u8) -> Route {
    const COUNT: u8 = 14;
    match selector % COUNT {
        0 => Route::PutMachineConfig,
        1 => Route::PatchMachineConfig,
        2 => Route::PutBootSource,
        3 => Route::PutDrive(DRIVE_ID.to_owned()),
        4 => Route::PatchDrive(DRIVE_ID.to_owned()),
        5 => Route::PutNetworkInterface(IFACE_ID.to_owned()),
        6 => Route::PatchNetworkInterface(IFACE_ID.to_owned()),
        7 => Route::PutLogger,
        8 => Route::PutMetrics,
        9 => Route::PutEntropy,
        10 => Route::PutSerial,
        11 => Route::PutActions,
        12 => Route::PatchVm,
        _ => Route::PutVsock,
    }
}

/// One request body: the first byte picks the endpoint (PUT /machine-config, PATCH
/// /drives/rootfs, PUT /actions, ...), the rest is the JSON body, deserialized,
/// checked and applied as the server and the VMM thread do.
pub fn api(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let mut config = base_config();
    let dispatched = routes::dispatch(&body_route(selector), body);
    format_reply(&serve(&mut config, dispatched));
}

/// What the VMM thread does with a configuration request or a device patch, short
/// of touching a VM; the reply the client would get.
fn serve(config: &mut VmConfig, dispatched: Result<Dispatch, Reply>) -> Reply {
    let request = match dispatched {
        Err(reply) | Ok(Dispatch::Answer(reply)) => return reply,
        Ok(Dispatch::Vmm(request)) => request,
    };
    let result = match request {
        ApiRequest::Configure(change) => apply(config, change),
        ApiRequest::Update(DeviceUpdate::Drive(patch)) => {
            model::check_drive_patch(config, &patch).map(drop)
        }
        ApiRequest::Update(DeviceUpdate::Net(patch)) => {
            model::check_net_patch(config, &patch).map(drop)
        }
        ApiRequest::GetConfig => {
            return Reply::json(200, &model::to_document(config));
        }
        _ => Ok(()),
    };
    match result {
        Ok(()) => Reply::no_content(),
        Err(message) => Reply::fault(400, message),
    }
}

fn apply(config: &mut VmConfig, change: ConfigChange) -> Result<(), String> {
    model::apply(config, change)?;
    // The document GET /vm/config returns must be writable for whatever was accepted.
    serde_json::to_string(&model::to_document(config))
        .map(drop)
        .map_err(|e| e.to_string())
}
