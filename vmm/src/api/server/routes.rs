//! The API's endpoints: which path and method is which [`Route`], what each asks the
//! VMM thread ([`dispatch`]), and how its answer becomes an HTTP reply ([`to_reply`]).

use serde::de::DeserializeOwned;

use super::http::Reply;
use crate::api::model::{
    self, Action, ActionType, ConfigChange, DeviceUpdate, InstanceInfo, VmStatePatch,
    VmStateRequest,
};
use crate::api::{ApiRequest, ApiResponse};

/// The endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Route {
    Describe,
    GetVersion,
    GetMachineConfig,
    PutMachineConfig,
    PatchMachineConfig,
    PutBootSource,
    PutDrive(String),
    PatchDrive(String),
    PutNetworkInterface(String),
    PatchNetworkInterface(String),
    PutLogger,
    PutMetrics,
    PutEntropy,
    PutSerial,
    PutVsock,
    PutActions,
    PatchVm,
    GetVmConfig,
    CreateSnapshot,
    LoadSnapshot,
    /// A Firecracker endpoint cabin does not implement: 400 naming the feature.
    Unsupported(&'static str),
}

/// Firecracker's endpoints cabin does not implement, each with the feature it is.
const UNSUPPORTED: [(&str, &str); 6] = [
    ("/balloon", "The balloon device"),
    ("/balloon/statistics", "The balloon device"),
    ("/mmds", "MMDS (the microVM metadata service)"),
    ("/mmds/config", "MMDS (the microVM metadata service)"),
    ("/cpu-config", "CPU configuration (cpu-config)"),
    ("/hotplug/memory", "Memory hotplug"),
];

/// Finds the endpoint for `method` and `target`: 404 for an unknown path, 405 (with
/// the methods it has) for a known path and another method.
pub(super) fn route(method: &str, target: &str) -> Result<Route, Reply> {
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    let by_method = |allow: &'static str, found: Option<Route>| {
        found.ok_or_else(|| {
            let mut reply = Reply::fault(
                405,
                format!("{method} is not allowed on {path}: use {allow}"),
            );
            reply.allow = Some(allow);
            reply
        })
    };
    let id_after = |prefix: &str| {
        path.strip_prefix(prefix)
            .filter(|id| !id.is_empty() && !id.contains('/'))
            .map(str::to_owned)
    };
    let put = |route: Route| by_method("PUT", (method == "PUT").then_some(route));
    let put_patch = |put: Route, patch: Route| {
        by_method(
            "PUT, PATCH",
            match method {
                "PUT" => Some(put),
                "PATCH" => Some(patch),
                _ => None,
            },
        )
    };
    match path {
        "/" => by_method("GET", (method == "GET").then_some(Route::Describe)),
        "/version" => by_method("GET", (method == "GET").then_some(Route::GetVersion)),
        "/machine-config" => by_method(
            "GET, PUT, PATCH",
            match method {
                "GET" => Some(Route::GetMachineConfig),
                "PUT" => Some(Route::PutMachineConfig),
                "PATCH" => Some(Route::PatchMachineConfig),
                _ => None,
            },
        ),
        "/boot-source" => put(Route::PutBootSource),
        "/logger" => put(Route::PutLogger),
        "/metrics" => put(Route::PutMetrics),
        "/entropy" => put(Route::PutEntropy),
        "/serial" => put(Route::PutSerial),
        "/vsock" => put(Route::PutVsock),
        "/actions" => put(Route::PutActions),
        "/vm" => by_method("PATCH", (method == "PATCH").then_some(Route::PatchVm)),
        "/vm/config" => by_method("GET", (method == "GET").then_some(Route::GetVmConfig)),
        "/snapshot/create" => put(Route::CreateSnapshot),
        "/snapshot/load" => put(Route::LoadSnapshot),
        _ => {
            if let Some(id) = id_after("/drives/") {
                put_patch(Route::PutDrive(id.clone()), Route::PatchDrive(id))
            } else if let Some(id) = id_after("/network-interfaces/") {
                put_patch(
                    Route::PutNetworkInterface(id.clone()),
                    Route::PatchNetworkInterface(id),
                )
            } else if let Some((_, feature)) = UNSUPPORTED.iter().find(|(p, _)| *p == path) {
                Ok(Route::Unsupported(feature))
            } else if id_after("/pmem/").is_some() {
                Ok(Route::Unsupported("The pmem device"))
            } else {
                Err(Reply::fault(404, format!("No such resource: {path}")))
            }
        }
    }
}

fn parse_body<T: DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, Reply> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Reply::fault(400, format!("{what} needs a JSON body")));
    }
    serde_json::from_slice(body)
        .map_err(|e| Reply::fault(400, format!("Invalid body for {what}: {e}")))
}

/// What to do with a routed request.
#[derive(Debug)]
pub(super) enum Dispatch {
    /// Ask the VMM thread.
    Vmm(ApiRequest),
    /// Answer at once, without the VMM thread.
    Answer(Reply),
}

/// Turns a routed request into what the VMM thread is asked, or the answer itself;
/// a body cabin refuses is the error.
pub(super) fn dispatch(route: &Route, body: &[u8]) -> Result<Dispatch, Reply> {
    let mismatch = |field: &str, body_id: &str, path_id: &str| {
        let message =
            format!("{field} '{body_id}' in the body differs from '{path_id}' in the path");
        Reply::fault(400, message)
    };
    let configure = |change| Ok(Dispatch::Vmm(ApiRequest::Configure(change)));
    let ask = |request| Ok(Dispatch::Vmm(request));
    match route {
        Route::GetVersion => Ok(Dispatch::Answer(Reply::json(
            200,
            &model::VersionInfo {
                firecracker_version: env!("CARGO_PKG_VERSION").to_owned(),
            },
        ))),
        Route::Unsupported(feature) => Err(Reply::fault(
            400,
            format!("{feature} is not supported by cabin yet"),
        )),
        Route::Describe => ask(ApiRequest::Describe),
        Route::GetMachineConfig | Route::GetVmConfig => ask(ApiRequest::GetConfig),
        Route::CreateSnapshot => ask(ApiRequest::CreateSnapshot(parse_body(
            "PUT /snapshot/create",
            body,
        )?)),
        Route::LoadSnapshot => {
            let load: model::snapshot::SnapshotLoad = parse_body("PUT /snapshot/load", body)?;
            ask(ApiRequest::LoadSnapshot(
                load.plan().map_err(|message| Reply::fault(400, message))?,
            ))
        }
        Route::PutMachineConfig => configure(ConfigChange::Machine(parse_body(
            "PUT /machine-config",
            body,
        )?)),
        Route::PatchMachineConfig => configure(ConfigChange::MachinePatch(parse_body(
            "PATCH /machine-config",
            body,
        )?)),
        Route::PutBootSource => {
            configure(ConfigChange::Boot(parse_body("PUT /boot-source", body)?))
        }
        Route::PutLogger => configure(ConfigChange::Logger(parse_body("PUT /logger", body)?)),
        Route::PutMetrics => configure(ConfigChange::Metrics(parse_body("PUT /metrics", body)?)),
        Route::PutEntropy => configure(ConfigChange::Entropy(parse_body("PUT /entropy", body)?)),
        Route::PutSerial => configure(ConfigChange::Serial(parse_body("PUT /serial", body)?)),
        Route::PutVsock => configure(ConfigChange::Vsock(parse_body("PUT /vsock", body)?)),
        Route::PutDrive(id) => {
            let drive: model::Drive = parse_body(&format!("PUT /drives/{id}"), body)?;
            if drive.drive_id != *id {
                return Err(mismatch("drive_id", &drive.drive_id, id));
            }
            configure(ConfigChange::Drive(drive))
        }
        Route::PatchDrive(id) => {
            let patch: model::DrivePatch = parse_body(&format!("PATCH /drives/{id}"), body)?;
            if patch.drive_id != *id {
                return Err(mismatch("drive_id", &patch.drive_id, id));
            }
            ask(ApiRequest::Update(DeviceUpdate::Drive(patch)))
        }
        Route::PutNetworkInterface(id) => {
            let what = format!("PUT /network-interfaces/{id}");
            let net: model::NetworkInterface = parse_body(&what, body)?;
            if net.iface_id != *id {
                return Err(mismatch("iface_id", &net.iface_id, id));
            }
            configure(ConfigChange::Net(net))
        }
        Route::PatchNetworkInterface(id) => {
            let what = format!("PATCH /network-interfaces/{id}");
            let patch: model::NetworkInterfacePatch = parse_body(&what, body)?;
            if patch.iface_id != *id {
                return Err(mismatch("iface_id", &patch.iface_id, id));
            }
            ask(ApiRequest::Update(DeviceUpdate::Net(patch)))
        }
        Route::PutActions => {
            let action: Action = parse_body("PUT /actions", body)?;
            // A timeout on another action is refused, not ignored.
            let timeout = action
                .shutdown_timeout()
                .map_err(|message| Reply::fault(400, message));
            ask(match action.action_type {
                ActionType::InstanceStart if action.timeout_s.is_none() => ApiRequest::Start,
                ActionType::SendCtrlAltDel if action.timeout_s.is_none() => ApiRequest::CtrlAltDel,
                ActionType::FlushMetrics if action.timeout_s.is_none() => ApiRequest::FlushMetrics,
                _ => ApiRequest::Shutdown { timeout: timeout? },
            })
        }
        Route::PatchVm => {
            let patch: VmStatePatch = parse_body("PATCH /vm", body)?;
            ask(match patch.state {
                VmStateRequest::Paused => ApiRequest::Pause,
                VmStateRequest::Resumed => ApiRequest::Resume,
            })
        }
    }
}

/// Turns the VMM thread's answer into the HTTP reply for `route`.
pub(super) fn to_reply(route: &Route, response: ApiResponse) -> Reply {
    let unexpected = || {
        Reply::fault(
            500,
            "Internal error: the VMM thread gave an unexpected answer",
        )
    };
    match (route, response) {
        (_, ApiResponse::Error { status, message }) => {
            let status = if (400..=599).contains(&status) {
                status
            } else {
                500
            };
            Reply::fault(status, message)
        }
        (Route::Describe, ApiResponse::Describe { id, state }) => Reply::json(
            200,
            &InstanceInfo {
                id,
                state: state.to_string(),
                vmm_version: env!("CARGO_PKG_VERSION").to_owned(),
                app_name: model::APP_NAME.to_owned(),
            },
        ),
        (Route::GetMachineConfig, ApiResponse::Config(config)) => {
            match model::to_document(&config).machine_config {
                Some(machine) => Reply::json(200, &machine),
                None => unexpected(),
            }
        }
        (Route::GetVmConfig, ApiResponse::Config(config)) => {
            Reply::json(200, &model::to_document(&config))
        }
        (Route::Describe | Route::GetVersion | Route::GetMachineConfig | Route::GetVmConfig, _) => {
            unexpected()
        }
        (_, ApiResponse::Done) => Reply::no_content(),
        _ => unexpected(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::VmState;
    use crate::config::VmConfig;

    fn config() -> VmConfig {
        VmConfig {
            vcpus: 2,
            mem_size_mib: 256,
            ..VmConfig::default()
        }
    }

    fn dispatch_vmm(route: &Route, body: &[u8]) -> Result<ApiRequest, Reply> {
        match dispatch(route, body)? {
            Dispatch::Vmm(request) => Ok(request),
            Dispatch::Answer(reply) => Err(reply),
        }
    }

    fn fault_of(reply: &Reply) -> String {
        let body: serde_json::Value = serde_json::from_str(reply.body.as_deref().unwrap()).unwrap();
        body["fault_message"].as_str().unwrap().to_owned()
    }

    #[test]
    fn route_known_paths_map_to_endpoints() {
        let cases = [
            ("GET", "/", Route::Describe),
            ("GET", "/machine-config", Route::GetMachineConfig),
            ("PUT", "/machine-config", Route::PutMachineConfig),
            ("PUT", "/boot-source", Route::PutBootSource),
            ("PUT", "/drives/rootfs", Route::PutDrive("rootfs".into())),
            (
                "PUT",
                "/network-interfaces/eth0",
                Route::PutNetworkInterface("eth0".into()),
            ),
            ("PUT", "/actions", Route::PutActions),
            ("PATCH", "/vm", Route::PatchVm),
            ("GET", "/vm/config", Route::GetVmConfig),
            ("GET", "/version", Route::GetVersion),
            ("GET", "/?pretty", Route::Describe),
        ];
        for (method, path, expected) in cases {
            assert_eq!(route(method, path), Ok(expected), "{method} {path}");
        }
    }

    #[test]
    fn route_unknown_path_is_404_and_wrong_method_405() {
        for path in [
            "/nope",
            "/drives/",
            "/drives/a/b",
            "/vm/config/x",
            "/machine-config/",
        ] {
            assert_eq!(route("GET", path).unwrap_err().status, 404, "{path}");
        }
        let reply = route("DELETE", "/machine-config").unwrap_err();
        assert_eq!(reply.status, 405);
        assert_eq!(reply.allow, Some("GET, PUT, PATCH"));
        assert!(fault_of(&reply).contains("DELETE is not allowed on /machine-config"));
        assert_eq!(route("GET", "/actions").unwrap_err().status, 405);
        assert_eq!(route("POST", "/drives/x").unwrap_err().status, 405);
    }

    #[test]
    fn dispatch_parses_bodies() {
        let request = dispatch_vmm(&Route::PutActions, br#"{"action_type":"InstanceStart"}"#);
        assert!(matches!(request, Ok(ApiRequest::Start)));
        let request = dispatch_vmm(&Route::PatchVm, br#"{"state":"Resumed"}"#);
        assert!(matches!(request, Ok(ApiRequest::Resume)));
        let body = br#"{"vcpu_count":2,"mem_size_mib":256}"#;
        let request = dispatch_vmm(&Route::PutMachineConfig, body);
        assert!(matches!(
            request,
            Ok(ApiRequest::Configure(ConfigChange::Machine(_)))
        ));
    }

    #[test]
    fn dispatch_bad_bodies_are_400_naming_the_field() {
        let cases: [(Route, &[u8], &str); 6] = [
            (Route::PutMachineConfig, b"{", "EOF while parsing"),
            (
                Route::PutMachineConfig,
                br#"{"vcpu_count":1}"#,
                "missing field `mem_size_mib`",
            ),
            (
                Route::PutMachineConfig,
                br#"{"vcpu_count":1,"mem_size_mib":64,"cpu":1}"#,
                "unknown field `cpu`",
            ),
            (
                Route::PutMachineConfig,
                br#"{"vcpu_count":"1","mem_size_mib":64}"#,
                "vcpu_count: invalid type: string",
            ),
            (
                Route::PutActions,
                br#"{"action_type":"Reboot"}"#,
                "action_type: unknown variant `Reboot`",
            ),
            (Route::PatchVm, b"", "PATCH /vm needs a JSON body"),
        ];
        for (route, body, expected) in cases {
            let reply = dispatch_vmm(&route, body).unwrap_err();
            assert_eq!(reply.status, 400);
            assert!(
                fault_of(&reply).contains(expected),
                "{expected:?} in {}",
                fault_of(&reply)
            );
        }
    }

    #[test]
    fn dispatch_path_id_must_match_body() {
        let body = br#"{"drive_id":"b","path_on_host":"/x","is_root_device":false}"#;
        let reply = dispatch_vmm(&Route::PutDrive("a".into()), body).unwrap_err();
        assert_eq!(reply.status, 400);
        assert_eq!(
            fault_of(&reply),
            "drive_id 'b' in the body differs from 'a' in the path"
        );
        let body = br#"{"iface_id":"eth1","host_dev_name":"tap0"}"#;
        let reply = dispatch_vmm(&Route::PutNetworkInterface("eth0".into()), body).unwrap_err();
        assert!(fault_of(&reply).starts_with("iface_id 'eth1'"));
    }

    #[test]
    fn to_reply_maps_answers() {
        let reply = to_reply(
            &Route::Describe,
            ApiResponse::Describe {
                id: "vm1".into(),
                state: VmState::NotStarted,
            },
        );
        assert_eq!(reply.status, 200);
        let info: InstanceInfo = serde_json::from_str(reply.body.as_deref().unwrap()).unwrap();
        assert_eq!(info.state, "Not started");
        assert_eq!(info.app_name, "cabin");
        assert_eq!(info.vmm_version, env!("CARGO_PKG_VERSION"));

        let reply = to_reply(
            &Route::GetMachineConfig,
            ApiResponse::Config(Box::new(config())),
        );
        let machine: serde_json::Value =
            serde_json::from_str(reply.body.as_deref().unwrap()).unwrap();
        assert_eq!(
            machine,
            serde_json::json!({"vcpu_count": 2, "mem_size_mib": 256, "smt": false,
                "track_dirty_pages": false, "huge_pages": "None"})
        );

        assert_eq!(
            to_reply(&Route::PatchVm, ApiResponse::Done),
            Reply::no_content()
        );
        let error = ApiResponse::Error {
            status: 400,
            message: "Pausing is not allowed while the VM is Not started".into(),
        };
        let reply = to_reply(&Route::PatchVm, error);
        assert_eq!(reply.status, 400);
        assert_eq!(
            fault_of(&reply),
            "Pausing is not allowed while the VM is Not started"
        );
        assert_eq!(to_reply(&Route::Describe, ApiResponse::Done).status, 500);
    }
}
