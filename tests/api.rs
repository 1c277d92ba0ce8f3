//! The lifecycle API server and `cabin ctl` against a fake VMM thread (no KVM): the
//! OpenAPI document in docs/ checked against the server, every bad input of issue 5,
//! and `cabin ctl`'s output and exit codes.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vmm::api::model::{self, DeviceUpdate, MAX_VCPUS};
use vmm::api::server::{self, ApiServer, Limits, ServerError};
use vmm::api::state::VmAction;
use vmm::api::{ApiMessage, ApiRequest, ApiResponse, VmState};
use vmm::config::VmConfig;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

const OPENAPI: &str = include_str!("../docs/openapi.json");

/// Answers API messages like the VMM thread would, with the real state machine and
/// the real configuration model, until the server's senders are gone.
fn fake_vmm(requests: Receiver<ApiMessage>) {
    let mut state = VmState::NotStarted;
    let mut config = VmConfig::default();
    let refuse = |message: String| ApiResponse::Error {
        status: 400,
        message,
    };
    fn step(state: &mut VmState, action: VmAction) -> Result<(), String> {
        *state = state.next(action)?;
        Ok(())
    }
    for message in requests {
        let response = match message.request {
            ApiRequest::Describe => ApiResponse::Describe {
                id: "fake-vm".into(),
                state,
            },
            ApiRequest::GetConfig => ApiResponse::Config(Box::new(config.clone())),
            ApiRequest::Configure(change) => match step(&mut state, VmAction::Configure)
                .and_then(|()| model::apply(&mut config, change))
            {
                Ok(()) => ApiResponse::Done,
                Err(message) => refuse(message),
            },
            ApiRequest::Start => {
                step(&mut state, VmAction::Start).map_or_else(refuse, |()| ApiResponse::Done)
            }
            ApiRequest::Pause => {
                step(&mut state, VmAction::Pause).map_or_else(refuse, |()| ApiResponse::Done)
            }
            ApiRequest::Resume => {
                step(&mut state, VmAction::Resume).map_or_else(refuse, |()| ApiResponse::Done)
            }
            ApiRequest::CtrlAltDel => {
                step(&mut state, VmAction::CtrlAltDel).map_or_else(refuse, |()| ApiResponse::Done)
            }
            ApiRequest::Shutdown { .. } => {
                step(&mut state, VmAction::Shutdown).map_or_else(refuse, |()| ApiResponse::Done)
            }
            // The fake writes no files: it checks the state as the VMM thread does.
            ApiRequest::CreateSnapshot(_) => {
                step(&mut state, VmAction::Snapshot).map_or_else(refuse, |()| ApiResponse::Done)
            }
            ApiRequest::LoadSnapshot(_) => {
                step(&mut state, VmAction::Load).map_or_else(refuse, |()| ApiResponse::Done)
            }
            // The fake writes no metrics line: it only refuses, as the VMM thread does,
            // when no metrics file is configured.
            ApiRequest::FlushMetrics => match config.metrics_path {
                Some(_) => ApiResponse::Done,
                None => refuse("Metrics are not configured: PUT /metrics first".into()),
            },
            // The fake has no devices: it checks the patch against the configuration
            // with the real model and records it there, as the VMM thread does after
            // changing the device.
            ApiRequest::Update(update) => {
                match step(&mut state, VmAction::Update)
                    .and_then(|()| update_config(&mut config, update))
                {
                    Ok(()) => ApiResponse::Done,
                    Err(message) => refuse(message),
                }
            }
        };
        let _ = message.reply.send(response);
    }
}

/// What the VMM thread records in its configuration for a device PATCH.
fn update_config(config: &mut VmConfig, update: DeviceUpdate) -> Result<(), String> {
    match update {
        DeviceUpdate::Drive(patch) => {
            let change = model::check_drive_patch(config, &patch)?;
            let disk = &mut config.disks[change.index];
            if let Some(path) = change.path {
                disk.path = path;
            }
            if change.rate_limiter.is_some() {
                disk.rate_limiter = change.rate_limiter;
            }
        }
        DeviceUpdate::Net(patch) => {
            let change = model::check_net_patch(config, &patch)?;
            let net = &mut config.nets[change.index];
            if change.rx.is_some() {
                net.rx_rate_limiter = change.rx;
            }
            if change.tx.is_some() {
                net.tx_rate_limiter = change.tx;
            }
        }
    }
    Ok(())
}

/// A server on a scratch socket with a fake VMM behind it.
struct Fixture {
    dir: PathBuf,
    socket: PathBuf,
    server: Option<ApiServer>,
}

impl Fixture {
    fn new(name: &str) -> Fixture {
        Self::with_limits(name, Limits::default())
    }

    fn with_limits(name: &str, limits: Limits) -> Fixture {
        let dir = common::scratch_dir(&format!("api-{name}"));
        let socket = dir.join("api.sock");
        let (to_vmm, requests) = mpsc::channel();
        thread::spawn(move || fake_vmm(requests));
        let wake = EventFd::new(EFD_NONBLOCK).unwrap();
        let server = server::start_with_limits(&socket, to_vmm, wake, limits).unwrap();
        Fixture {
            dir,
            socket,
            server: Some(server),
        }
    }

    fn file(&self, name: &str) -> String {
        common::write_file(&self.dir, name, b"image")
    }

    fn send(&self, method: &str, path: &str, body: Option<&str>) -> Reply {
        send(&self.socket, method, path, body)
    }

    fn send_json(&self, method: &str, path: &str, body: &Value) -> Reply {
        self.send(method, path, Some(&body.to_string()))
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        drop(self.server.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// An HTTP answer as the test saw it.
#[derive(Debug)]
struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }

    fn fault(&self) -> String {
        self.json()["fault_message"]
            .as_str()
            .unwrap_or_else(|| panic!("no fault_message in {:?}", self.body))
            .to_owned()
    }

    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    }
}

fn connect(socket: &Path) -> UnixStream {
    let stream = UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
}

/// Reads one answer to its end (the requests here ask the server to close). A server
/// that refuses a request without reading all of it resets the connection after its
/// answer, as Unix sockets do when closed with unread data: what came before counts.
fn read_reply(stream: &mut UnixStream) -> Reply {
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && !raw.is_empty() => break,
            Err(e) => panic!("reading the answer: {e}"),
        }
    }
    parse_reply(&raw)
}

fn parse_reply(raw: &[u8]) -> Reply {
    let text = String::from_utf8_lossy(raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete answer: {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    Reply {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

fn send_raw(socket: &Path, bytes: &[u8]) -> Reply {
    let mut stream = connect(socket);
    // A server that refuses early may close before the request is written.
    let _ = stream.write_all(bytes);
    read_reply(&mut stream)
}

fn send(socket: &Path, method: &str, path: &str, body: Option<&str>) -> Reply {
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    send_raw(socket, request.as_bytes())
}

// ---------------------------------------------------------------------------------
// A validator for the JSON-schema subset docs/openapi.json uses.

const SCHEMA_KEYWORDS: [&str; 11] = [
    "$ref",
    "type",
    "properties",
    "required",
    "additionalProperties",
    "enum",
    "items",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
];

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference.strip_prefix('#').expect("local $ref");
            resolve(doc, doc.pointer(pointer).expect("$ref target exists"))
        }
        None => schema,
    }
}

fn validate(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let schema = resolve(doc, schema);
    if let Some(kind) = schema.get("type").and_then(Value::as_str) {
        let ok = match kind {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "boolean" => value.is_boolean(),
            other => return Err(format!("{at}: the validator does not know type {other}")),
        };
        if !ok {
            return Err(format!("{at}: {value} is not of type {kind}"));
        }
    }
    if let Some(choices) = schema.get("enum").and_then(Value::as_array) {
        if !choices.contains(value) {
            return Err(format!("{at}: {value} is not one of {choices:?}"));
        }
    }
    if let (Some(min), Some(n)) = (
        schema.get("minimum").and_then(Value::as_i64),
        value.as_i64(),
    ) {
        if n < min {
            return Err(format!("{at}: {n} is below the minimum {min}"));
        }
    }
    if let (Some(max), Some(n)) = (
        schema.get("maximum").and_then(Value::as_i64),
        value.as_i64(),
    ) {
        if n > max {
            return Err(format!("{at}: {n} is above the maximum {max}"));
        }
    }
    if let Some(text) = value.as_str() {
        let len = text.chars().count() as u64;
        if schema
            .get("minLength")
            .and_then(Value::as_u64)
            .is_some_and(|m| len < m)
        {
            return Err(format!("{at}: {text:?} is too short"));
        }
        if schema
            .get("maxLength")
            .and_then(Value::as_u64)
            .is_some_and(|m| len > m)
        {
            return Err(format!("{at}: {text:?} is too long"));
        }
    }
    if let Some(object) = value.as_object() {
        let properties = schema.get("properties").and_then(Value::as_object);
        for name in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = name.as_str().unwrap();
            if !object.contains_key(name) {
                return Err(format!("{at}: required property {name} is missing"));
            }
        }
        for (name, item) in object {
            match properties.and_then(|p| p.get(name)) {
                Some(sub) => validate(doc, sub, item, &format!("{at}.{name}"))?,
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    return Err(format!("{at}: property {name} is not in the schema"))
                }
                None => {}
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (i, item) in array.iter().enumerate() {
            validate(doc, items, item, &format!("{at}[{i}]"))?;
        }
    }
    Ok(())
}

/// Every schema in `value` (recursively) uses only keywords the validator checks.
fn check_keywords(value: &Value, at: &str, bad: &mut Vec<String>) {
    let Some(object) = value.as_object() else {
        return;
    };
    for (key, sub) in object {
        let path = format!("{at}/{key}");
        if key == "schema" || at.ends_with("/schemas") || key == "items" {
            if let Some(schema) = sub.as_object() {
                for keyword in schema.keys() {
                    if !SCHEMA_KEYWORDS.contains(&keyword.as_str()) && keyword != "description" {
                        bad.push(format!("{path}: {keyword}"));
                    }
                }
                if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                    for (name, property) in properties {
                        let property_path = format!("{path}/properties/{name}");
                        check_keywords(&json!({ "schema": property }), &property_path, bad);
                    }
                }
            }
        }
        check_keywords(sub, &path, bad);
    }
}

fn openapi() -> Value {
    serde_json::from_str(OPENAPI).expect("docs/openapi.json is JSON")
}

/// The example body of an operation, with file paths pointing at real files.
fn example_body(doc: &Value, operation: &Value, fixture: &Fixture) -> Option<Value> {
    let media = operation.pointer("/requestBody/content/application~1json")?;
    let schema = &media["schema"];
    let mut example = media["example"].clone();
    validate(doc, schema, &example, "example").expect("the example matches its schema");
    if let Some(object) = example.as_object_mut() {
        for (key, value) in object.iter_mut() {
            if key.ends_with("_path") || key == "path_on_host" {
                *value = Value::String(fixture.file(key));
            }
        }
    }
    Some(example)
}

fn documented_statuses(operation: &Value) -> BTreeSet<u16> {
    operation["responses"]
        .as_object()
        .unwrap()
        .keys()
        .map(|code| code.parse().expect("numeric status"))
        .collect()
}

/// Checks an answer against the operation's documented responses.
fn check_documented(doc: &Value, operation: &Value, reply: &Reply, what: &str) {
    let statuses = documented_statuses(operation);
    assert!(
        statuses.contains(&reply.status),
        "{what}: status {} is not documented ({statuses:?}): {reply:?}",
        reply.status
    );
    let response = resolve(doc, &operation["responses"][reply.status.to_string()]);
    match response.pointer("/content/application~1json/schema") {
        Some(schema) => {
            if let Err(e) = validate(doc, schema, &reply.json(), "body") {
                panic!("{what}: {e}: {}", reply.body);
            }
        }
        None => assert!(
            reply.body.is_empty(),
            "{what}: undocumented body {:?}",
            reply.body
        ),
    }
}

#[test]
fn openapi_schemas_use_only_checked_keywords() {
    let doc = openapi();
    let mut bad = Vec::new();
    check_keywords(&doc, "", &mut bad);
    assert!(bad.is_empty(), "keywords the validator ignores: {bad:?}");
    let max = doc.pointer("/components/schemas/MachineConfiguration/properties/vcpu_count/maximum");
    assert_eq!(
        max,
        Some(&json!(MAX_VCPUS)),
        "vcpu_count maximum matches model::MAX_VCPUS"
    );
}

#[test]
fn openapi_every_documented_operation_answers_as_documented() {
    let doc = openapi();
    let paths = doc["paths"].as_object().unwrap();
    assert_eq!(paths.len(), 16);
    let mut operations = 0;
    for (template, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            let method = method.to_ascii_uppercase();
            let fixture = Fixture::new("openapi");
            let body = example_body(&doc, operation, &fixture);
            // The path parameter is the body's id, as the server requires.
            let mut path = template.clone();
            for param in operation["parameters"].as_array().into_iter().flatten() {
                let name = param["name"].as_str().unwrap();
                let id = body.as_ref().unwrap()[name].as_str().unwrap().to_owned();
                path = path.replace(&format!("{{{name}}}"), &id);
            }
            // Operations on a running VM: the device they change is put first (with
            // its own documented example), then the VM is started.
            let start = json!({"action_type": "InstanceStart"});
            match operation["operationId"].as_str().unwrap() {
                "patchVm" => {
                    assert_eq!(fixture.send_json("PUT", "/actions", &start).status, 204);
                }
                "createSnapshot" => {
                    assert_eq!(fixture.send_json("PUT", "/actions", &start).status, 204);
                    let pause = json!({"state": "Paused"});
                    assert_eq!(fixture.send_json("PATCH", "/vm", &pause).status, 204);
                }
                "patchGuestDriveByID" | "patchGuestNetworkInterfaceByID" => {
                    let device = example_body(&doc, &item["put"], &fixture).unwrap();
                    let reply = fixture.send_json("PUT", &path, &device);
                    assert_eq!(reply.status, 204, "PUT {path} before PATCH: {reply:?}");
                    // Before InstanceStart a device cannot be changed.
                    let early = fixture.send_json(&method, &path, body.as_ref().unwrap());
                    assert_eq!(early.status, 400, "{method} {path} before start");
                    check_documented(&doc, operation, &early, &format!("{method} {path}"));
                    assert_eq!(fixture.send_json("PUT", "/actions", &start).status, 204);
                }
                _ => {}
            }
            operations += 1;
            let what = format!("{method} {path}");
            let reply = fixture.send(
                &method,
                &path,
                body.as_ref().map(Value::to_string).as_deref(),
            );
            check_documented(&doc, operation, &reply, &what);
            assert!(
                reply.status < 300,
                "{what}: the example is accepted: {reply:?}"
            );
            if body.is_some() {
                let reply = fixture.send(&method, &path, Some(r#"{"bogus": 1}"#));
                assert_eq!(reply.status, 400, "{what} with a bogus body");
                check_documented(&doc, operation, &reply, &format!("{what} (bogus body)"));
            }
        }
    }
    assert_eq!(operations, 20);
}

#[test]
fn openapi_undocumented_methods_are_405_with_the_documented_allow() {
    let doc = openapi();
    let fixture = Fixture::new("allow");
    for (template, item) in doc["paths"].as_object().unwrap() {
        let path = template
            .replace("{drive_id}", "rootfs")
            .replace("{iface_id}", "eth0");
        let documented: BTreeSet<String> = item
            .as_object()
            .unwrap()
            .keys()
            .map(|m| m.to_ascii_uppercase())
            .collect();
        for method in ["GET", "PUT", "PATCH", "POST", "DELETE"] {
            if documented.contains(method) {
                continue;
            }
            let reply = fixture.send(method, &path, None);
            assert_eq!(reply.status, 405, "{method} {path}: {reply:?}");
            validate(
                &doc,
                &json!({"$ref": "#/components/schemas/Error"}),
                &reply.json(),
                "body",
            )
            .unwrap();
            let allow: BTreeSet<String> = reply
                .header("Allow")
                .expect("Allow header")
                .split(',')
                .map(|m| m.trim().to_owned())
                .collect();
            assert_eq!(allow, documented, "{path}");
        }
    }
}

#[test]
fn describe_reports_state_and_version() {
    let fixture = Fixture::new("describe");
    let reply = fixture.send("GET", "/", None);
    assert_eq!(reply.status, 200);
    let info = reply.json();
    assert_eq!(info["state"], "Not started");
    assert_eq!(info["app_name"], "cabin");
    assert_eq!(info["vmm_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(info["id"], "fake-vm");
    assert_eq!(
        reply.header("Content-Type").as_deref(),
        Some("application/json")
    );
}

#[test]
fn configuration_round_trips_through_get_vm_config() {
    let fixture = Fixture::new("config");
    let kernel = fixture.file("vmlinux");
    let image = fixture.file("rootfs.img");
    let path_in_dir = |name: &str| fixture.dir.join(name).to_str().unwrap().to_owned();
    let (log, metrics, serial, uds) = (
        path_in_dir("cabin.log"),
        path_in_dir("metrics.json"),
        path_in_dir("serial.out"),
        path_in_dir("v.sock"),
    );
    let puts = [
        (
            "/machine-config",
            json!({"vcpu_count": 2, "mem_size_mib": 256}),
        ),
        (
            "/boot-source",
            json!({"kernel_image_path": kernel, "boot_args": "console=ttyS0"}),
        ),
        (
            "/drives/rootfs",
            json!({"drive_id": "rootfs", "path_on_host": image, "is_root_device": true}),
        ),
        (
            "/network-interfaces/eth0",
            json!({"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "52:54:00:00:00:01",
                "mtu": 9000, "rx_rate_limiter": {"ops": {"size": 100, "refill_time": 10}}}),
        ),
        (
            "/drives/data",
            json!({"drive_id": "data", "path_on_host": image, "is_root_device": false,
                "cache_type": "Writeback", "io_engine": "Sync",
                "rate_limiter": {"bandwidth": {"size": 4096, "one_time_burst": 8192, "refill_time": 100}}}),
        ),
        (
            "/logger",
            json!({"log_path": log, "level": "Debug", "show_level": true}),
        ),
        ("/metrics", json!({"metrics_path": metrics})),
        (
            "/entropy",
            json!({"rate_limiter": {"bandwidth": {"size": 1024, "refill_time": 100}}}),
        ),
        ("/serial", json!({"serial_out_path": serial})),
        (
            "/vsock",
            json!({"vsock_id": "vsock0", "guest_cid": 7, "uds_path": uds}),
        ),
    ];
    for (path, body) in &puts {
        let reply = fixture.send_json("PUT", path, body);
        assert_eq!(reply.status, 204, "{path}: {reply:?}");
        assert!(reply.body.is_empty());
    }
    let machine = fixture.send("GET", "/machine-config", None).json();
    assert_eq!(
        machine,
        json!({"vcpu_count": 2, "mem_size_mib": 256, "smt": false,
            "track_dirty_pages": false, "huge_pages": "None"})
    );
    let patch = json!({"smt": true, "huge_pages": "2M", "track_dirty_pages": true});
    let reply = fixture.send_json("PATCH", "/machine-config", &patch);
    assert_eq!(reply.status, 204, "{reply:?}");
    let machine = fixture.send("GET", "/machine-config", None).json();
    assert_eq!(
        machine,
        json!({"vcpu_count": 2, "mem_size_mib": 256, "smt": true,
            "track_dirty_pages": true, "huge_pages": "2M"})
    );
    let document = fixture.send("GET", "/vm/config", None).json();
    let doc = openapi();
    let schema = json!({"$ref": "#/components/schemas/FullVmConfiguration"});
    validate(&doc, &schema, &document, "config").unwrap();
    assert_eq!(document["boot-source"]["kernel_image_path"], kernel);
    assert_eq!(document["boot-source"]["boot_args"], "console=ttyS0");
    assert_eq!(document["drives"][0]["drive_id"], "rootfs");
    assert_eq!(document["drives"][0]["is_root_device"], true);
    assert_eq!(
        document["network-interfaces"][0]["guest_mac"],
        "52:54:00:00:00:01"
    );
    assert_eq!(document["network-interfaces"][0]["mtu"], 9000);
    assert_eq!(
        document["network-interfaces"][0]["rx_rate_limiter"],
        json!({"ops": {"size": 100, "refill_time": 10}})
    );
    assert_eq!(document["drives"][1]["drive_id"], "data");
    assert_eq!(document["drives"][1]["cache_type"], "Writeback");
    assert_eq!(document["drives"][1]["io_engine"], "Sync");
    assert_eq!(
        document["drives"][1]["rate_limiter"],
        json!({"bandwidth": {"size": 4096, "one_time_burst": 8192, "refill_time": 100}})
    );
    assert_eq!(
        document["logger"],
        json!({"log_path": log, "level": "Debug", "show_level": true, "show_log_origin": false})
    );
    assert_eq!(document["metrics"], json!({"metrics_path": metrics}));
    assert_eq!(
        document["entropy"],
        json!({"rate_limiter": {"bandwidth": {"size": 1024, "refill_time": 100}}})
    );
    assert_eq!(document["serial"], json!({"serial_out_path": serial}));
    assert_eq!(document["vsock"], json!({"guest_cid": 7, "uds_path": uds}));
    // What GET /vm/config returns is a config file cabin loads.
    let file = fixture.dir.join("vm.json");
    std::fs::write(&file, document.to_string()).unwrap();
    let base = VmConfig {
        cmdline: String::new(),
        ..VmConfig::default()
    };
    let loaded = model::load_config_file(&file, base).unwrap();
    assert_eq!(loaded.vcpus, 2);
    assert_eq!(loaded.disks.len(), 2);
    assert!(loaded.machine.smt && loaded.machine.track_dirty_pages);
    assert_eq!(loaded.nets[0].mtu, Some(9000));
    assert_eq!(loaded.metrics_path.as_deref(), Some(Path::new(&metrics)));
    assert_eq!(loaded.serial_out.as_deref(), Some(Path::new(&serial)));
    assert!(loaded.entropy.is_some() && loaded.logger.is_some());
    let vsock = loaded.vsock.unwrap();
    assert_eq!((vsock.guest_cid, vsock.uds_path), (7, PathBuf::from(&uds)));
}

#[test]
fn bad_bodies_are_400_naming_the_field() {
    let fixture = Fixture::new("badbody");
    let cases = [
        (
            "PUT",
            "/machine-config",
            r#"{"vcpu_count": 2,"#,
            "EOF while parsing",
        ),
        (
            "PUT",
            "/machine-config",
            r#"{"vcpu_count": 2 "mem_size_mib": 1}"#,
            "expected `,` or `}`",
        ),
        (
            "PUT",
            "/machine-config",
            r#"{"vcpu_count": 2, "mem_size_mib": 256, "cpu": 2}"#,
            "unknown field `cpu`",
        ),
        (
            "PUT",
            "/machine-config",
            r#"{"vcpu_count": 2}"#,
            "missing field `mem_size_mib`",
        ),
        (
            "PUT",
            "/machine-config",
            r#"{"vcpu_count": "two", "mem_size_mib": 256}"#,
            "vcpu_count: invalid type: string \"two\"",
        ),
        (
            "PUT",
            "/machine-config",
            r#"{"vcpu_count": 0, "mem_size_mib": 256}"#,
            "vcpu_count 0",
        ),
        (
            "PUT",
            "/machine-config",
            r#"{"vcpu_count": 1, "mem_size_mib": 0}"#,
            "mem_size_mib 0",
        ),
        (
            "PUT",
            "/boot-source",
            r#"{"kernel_image_path": "/nonexistent/vmlinux"}"#,
            "kernel_image_path /nonexistent/vmlinux does not exist",
        ),
        (
            "PUT",
            "/boot-source",
            r#"{"boot_args": "x"}"#,
            "missing field `kernel_image_path`",
        ),
        (
            "PUT",
            "/drives/a",
            r#"{"drive_id": "a", "path_on_host": "/x", "is_root_device": "yes"}"#,
            "is_root_device: invalid type",
        ),
        (
            "PUT",
            "/actions",
            r#"{"action_type": "Reboot"}"#,
            "action_type: unknown variant `Reboot`",
        ),
        (
            "PATCH",
            "/vm",
            r#"{"state": "Running"}"#,
            "state: unknown variant `Running`",
        ),
        ("PATCH", "/vm", "", "needs a JSON body"),
        ("PATCH", "/vm", "[]", "expected struct VmStatePatch"),
    ];
    for (method, path, body, expected) in cases {
        let reply = fixture.send(method, path, Some(body));
        assert_eq!(reply.status, 400, "{method} {path} {body}: {reply:?}");
        let fault = reply.fault();
        assert!(fault.contains(expected), "{expected:?} not in {fault:?}");
    }
    // The server still answers.
    assert_eq!(fixture.send("GET", "/", None).status, 200);
}

#[test]
fn bad_new_fields_are_400_naming_the_field_and_change_nothing() {
    let fixture = Fixture::new("newfields");
    let image = fixture.file("rootfs.img");
    let dir = fixture.dir.to_str().unwrap().to_owned();
    let before = fixture.send("GET", "/vm/config", None).json();
    let machine = |extra: Value| {
        let mut body = json!({"vcpu_count": 2, "mem_size_mib": 256});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let drive = |extra: Value| {
        let mut body = json!({"drive_id": "rootfs", "path_on_host": image, "is_root_device": true});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let net = |extra: Value| {
        let mut body = json!({"iface_id": "eth0", "host_dev_name": "tap0"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let missing_dir = format!("{dir}/missing");
    let cases: Vec<(&str, &str, Value, String)> = vec![
        // machine-config
        (
            "PUT",
            "/machine-config",
            machine(json!({"track_dirty_pages": "yes"})),
            "track_dirty_pages: invalid type: string \"yes\"".into(),
        ),
        (
            "PATCH",
            "/machine-config",
            json!({"track_dirty_pages": 1}),
            "track_dirty_pages: invalid type: integer `1`".into(),
        ),
        (
            "PUT",
            "/machine-config",
            machine(json!({"huge_pages": 2})),
            "PUT /machine-config: huge_pages: ".into(),
        ),
        (
            "PUT",
            "/machine-config",
            machine(json!({"huge_pages": "1G"})),
            "huge_pages: unknown variant `1G`".into(),
        ),
        (
            "PATCH",
            "/machine-config",
            json!({"huge_pages": "2M", "mem_size_mib": 255}),
            "mem_size_mib 255 is not a whole number of 2 MiB huge pages".into(),
        ),
        (
            "PUT",
            "/machine-config",
            machine(json!({"cpu_template": "T2"})),
            "cpu_template T2 is not supported".into(),
        ),
        (
            "PATCH",
            "/machine-config",
            json!({"cpu_template": 2}),
            "cpu_template: invalid type: integer `2`".into(),
        ),
        (
            "PUT",
            "/machine-config",
            json!({"vcpu_count": 3, "mem_size_mib": 256, "smt": true}),
            "smt true with vcpu_count 3".into(),
        ),
        (
            "PATCH",
            "/machine-config",
            json!({"vcpu_count": 3, "smt": true}),
            "smt true with vcpu_count 3".into(),
        ),
        (
            "PATCH",
            "/machine-config",
            json!({"smt": "on"}),
            "smt: invalid type: string \"on\"".into(),
        ),
        // drives
        (
            "PUT",
            "/drives/rootfs",
            drive(json!({"cache_type": 1})),
            "PUT /drives/rootfs: cache_type: ".into(),
        ),
        (
            "PUT",
            "/drives/rootfs",
            drive(json!({"cache_type": "Fast"})),
            "cache_type: unknown variant `Fast`".into(),
        ),
        (
            "PUT",
            "/drives/rootfs",
            drive(json!({"io_engine": true})),
            "PUT /drives/rootfs: io_engine: ".into(),
        ),
        (
            "PUT",
            "/drives/rootfs",
            drive(json!({"io_engine": "Async"})),
            "io_engine Async is not supported".into(),
        ),
        (
            "PUT",
            "/drives/rootfs",
            drive(json!({"rate_limiter": {"bandwidth": {"size": -1, "refill_time": 100}}})),
            "rate_limiter: bandwidth: size: invalid value: integer `-1`".into(),
        ),
        (
            "PUT",
            "/drives/rootfs",
            drive(json!({"rate_limiter": {"ops": {"size": 0, "refill_time": 100}}})),
            "rate_limiter.ops.size is 0".into(),
        ),
        (
            "PUT",
            "/drives/rootfs",
            drive(json!({"rate_limiter": {"bandwidth": {"size": 10, "refill_time": 0}}})),
            "rate_limiter.bandwidth.refill_time is 0".into(),
        ),
        (
            "PUT",
            "/drives/rootfs",
            drive(json!({"rate_limiter": {"ops": {"size": 10}}})),
            "rate_limiter: ops: missing field `refill_time`".into(),
        ),
        (
            "PUT",
            "/drives/rootfs",
            drive(json!({"socket": "/run/vhost.sock"})),
            "socket: vhost-user drives are not supported".into(),
        ),
        (
            "PUT",
            "/drives/rootfs",
            drive(json!({"partuuid": "not-a-uuid"})),
            "partuuid 'not-a-uuid' is not a partition UUID".into(),
        ),
        (
            "PATCH",
            "/drives/rootfs",
            json!({"drive_id": "rootfs", "rate_limiter": {"ops": {"size": -1, "refill_time": 1}}}),
            "rate_limiter: ops: size: invalid value: integer `-1`".into(),
        ),
        // network interfaces
        (
            "PUT",
            "/network-interfaces/eth0",
            net(json!({"mtu": "1500"})),
            "mtu: invalid type: string \"1500\"".into(),
        ),
        (
            "PUT",
            "/network-interfaces/eth0",
            net(json!({"mtu": 70000})),
            "mtu: invalid value: integer `70000`".into(),
        ),
        (
            "PUT",
            "/network-interfaces/eth0",
            net(json!({"mtu": 60})),
            "mtu 60 is too small".into(),
        ),
        (
            "PUT",
            "/network-interfaces/eth0",
            net(json!({"rx_rate_limiter": {"ops": {"size": -5, "refill_time": 10}}})),
            "rx_rate_limiter: ops: size: invalid value: integer `-5`".into(),
        ),
        (
            "PUT",
            "/network-interfaces/eth0",
            net(json!({"rx_rate_limiter": {"bandwidth": {"size": 0, "refill_time": 10}}})),
            "rx_rate_limiter.bandwidth.size is 0".into(),
        ),
        (
            "PUT",
            "/network-interfaces/eth0",
            net(json!({"rx_rate_limiter": {"ops": {"size": 5, "refill_time": 0}}})),
            "rx_rate_limiter.ops.refill_time is 0".into(),
        ),
        (
            "PUT",
            "/network-interfaces/eth0",
            net(json!({"tx_rate_limiter": {"ops": {"size": 0, "refill_time": 10}}})),
            "tx_rate_limiter.ops.size is 0".into(),
        ),
        (
            "PATCH",
            "/network-interfaces/eth0",
            json!({"iface_id": "eth0", "tx_rate_limiter": {"bandwidth": {"size": "1", "refill_time": 1}}}),
            "tx_rate_limiter: bandwidth: size: invalid type".into(),
        ),
        // logger, metrics, entropy, serial
        (
            "PUT",
            "/logger",
            json!({"show_level": "yes"}),
            "show_level: invalid type: string \"yes\"".into(),
        ),
        (
            "PUT",
            "/logger",
            json!({"show_log_origin": 1}),
            "show_log_origin: invalid type: integer `1`".into(),
        ),
        (
            "PUT",
            "/logger",
            json!({"level": 3}),
            "PUT /logger: level: invalid type: integer `3`".into(),
        ),
        ("PUT", "/logger", json!({"level": "Loud"}), "level: ".into()),
        (
            "PUT",
            "/logger",
            json!({"log_path": format!("{missing_dir}/cabin.log")}),
            format!("log_path {missing_dir}/cabin.log: directory {missing_dir} does not exist"),
        ),
        (
            "PUT",
            "/metrics",
            json!({"metrics_path": dir}),
            format!("metrics_path {dir} is a directory"),
        ),
        (
            "PUT",
            "/metrics",
            json!({"metrics_path": 7}),
            "metrics_path: invalid type: integer `7`".into(),
        ),
        (
            "PUT",
            "/metrics",
            json!({}),
            "missing field `metrics_path`".into(),
        ),
        (
            "PUT",
            "/entropy",
            json!({"rate_limiter": {"ops": {"size": 1, "refill_time": 0}}}),
            "rate_limiter.ops.refill_time is 0".into(),
        ),
        (
            "PUT",
            "/serial",
            json!({"rate_limiter": {"ops": {"size": 1, "refill_time": 1}}}),
            "rate_limiter on the serial console is not supported".into(),
        ),
        (
            "PUT",
            "/vsock",
            json!({"guest_cid": 2, "uds_path": "v.sock"}),
            "guest_cid 2 is reserved".into(),
        ),
        (
            "PUT",
            "/vsock",
            json!({"guest_cid": 3, "uds_path": format!("{missing_dir}/v.sock")}),
            format!("uds_path {missing_dir}/v.sock: directory {missing_dir} does not exist"),
        ),
        (
            "PUT",
            "/vsock",
            json!({"guest_cid": 3}),
            "missing field `uds_path`".into(),
        ),
        (
            "PUT",
            "/vsock",
            json!({"guest_cid": 3, "uds_path": "v.sock", "port": 1}),
            "unknown field `port`".into(),
        ),
        (
            "PUT",
            "/serial",
            json!({"serial_out_path": format!("{missing_dir}/serial.out")}),
            format!(
                "serial_out_path {missing_dir}/serial.out: directory {missing_dir} does not exist"
            ),
        ),
    ];
    for (method, path, body, expected) in &cases {
        let reply = fixture.send_json(method, path, body);
        assert_eq!(reply.status, 400, "{method} {path} {body}: {reply:?}");
        let fault = reply.fault();
        assert!(
            fault.contains(expected.as_str()),
            "{method} {path} {body}: {expected:?} not in {fault:?}"
        );
    }
    // Nothing was changed, and the server still answers.
    assert_eq!(fixture.send("GET", "/vm/config", None).json(), before);
    assert!(!fixture.dir.join("missing").exists());
    assert_eq!(fixture.send("GET", "/", None).status, 200);
}

#[test]
fn level_names_are_firecrackers_and_refused_ones_name_level() {
    let fixture = Fixture::new("levels");
    for level in ["Error", "Warning", "Info", "Debug", "Trace", "Off"] {
        let reply = fixture.send_json("PUT", "/logger", &json!({"level": level}));
        assert_eq!(reply.status, 204, "{level}: {reply:?}");
        assert_eq!(
            fixture.send("GET", "/vm/config", None).json()["logger"]["level"],
            level
        );
    }
    let reply = fixture.send_json("PUT", "/logger", &json!({"level": "Verbose"}));
    assert_eq!(reply.status, 400);
    let fault = reply.fault();
    assert!(
        fault.contains("level: ") && fault.contains("Verbose"),
        "{fault}"
    );
}

#[test]
fn device_patches_need_a_running_vm_and_a_known_device() {
    let fixture = Fixture::new("patch");
    let image = fixture.file("rootfs.img");
    let grown = fixture.file("grown.img");
    let drive = json!({"drive_id": "rootfs", "path_on_host": image, "is_root_device": true});
    assert_eq!(
        fixture.send_json("PUT", "/drives/rootfs", &drive).status,
        204
    );
    let net = json!({"iface_id": "eth0", "host_dev_name": "tap0"});
    assert_eq!(
        fixture
            .send_json("PUT", "/network-interfaces/eth0", &net)
            .status,
        204
    );
    let limiter = json!({"ops": {"size": 10, "refill_time": 100}});
    let patch = json!({"drive_id": "rootfs", "path_on_host": grown, "rate_limiter": limiter});
    let reply = fixture.send_json("PATCH", "/drives/rootfs", &patch);
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.fault(),
        "Changing a device of the running VM is not allowed while the VM is Not started"
    );
    let start = json!({"action_type": "InstanceStart"});
    assert_eq!(fixture.send_json("PUT", "/actions", &start).status, 204);
    let cases = [
        (
            "/drives/other",
            json!({"drive_id": "other", "rate_limiter": limiter}),
            "drive_id 'other' is not a drive of this VM",
        ),
        (
            "/drives/rootfs",
            json!({"drive_id": "rootfs"}),
            "needs path_on_host or rate_limiter",
        ),
        (
            "/drives/rootfs",
            json!({"drive_id": "rootfs", "rate_limiter": {"ops": {"size": 0, "refill_time": 1}}}),
            "rate_limiter.ops.size is 0",
        ),
        (
            "/drives/rootfs",
            json!({"drive_id": "elsewhere", "rate_limiter": limiter}),
            "drive_id 'elsewhere' in the body differs from 'rootfs' in the path",
        ),
        (
            "/network-interfaces/eth1",
            json!({"iface_id": "eth1", "rx_rate_limiter": limiter}),
            "iface_id 'eth1' is not a network interface of this VM",
        ),
        (
            "/network-interfaces/eth0",
            json!({"iface_id": "eth0", "rx_rate_limiter": {"bandwidth": {"size": 1, "refill_time": 0}}}),
            "rx_rate_limiter.bandwidth.refill_time is 0",
        ),
    ];
    for (path, body, expected) in &cases {
        let reply = fixture.send_json("PATCH", path, body);
        assert_eq!(reply.status, 400, "PATCH {path} {body}: {reply:?}");
        assert!(reply.fault().contains(expected), "{reply:?}");
    }
    let reply = fixture.send_json("PATCH", "/drives/rootfs", &patch);
    assert_eq!(reply.status, 204, "{reply:?}");
    let patch = json!({"iface_id": "eth0", "tx_rate_limiter": limiter});
    let reply = fixture.send_json("PATCH", "/network-interfaces/eth0", &patch);
    assert_eq!(reply.status, 204, "{reply:?}");
    let document = fixture.send("GET", "/vm/config", None).json();
    assert_eq!(document["drives"][0]["path_on_host"], grown);
    assert_eq!(document["drives"][0]["rate_limiter"], limiter);
    assert_eq!(
        document["network-interfaces"][0]["tx_rate_limiter"],
        limiter
    );
    assert!(document["network-interfaces"][0]
        .get("rx_rate_limiter")
        .is_none());
    // Configuration is over once the VM runs.
    let reply = fixture.send_json("PATCH", "/machine-config", &json!({"vcpu_count": 2}));
    assert_eq!(reply.status, 400);
    assert!(
        reply.fault().contains("while the VM is Running"),
        "{reply:?}"
    );
}

#[test]
fn flush_metrics_needs_metrics_configured() {
    let fixture = Fixture::new("flush");
    let flush = json!({"action_type": "FlushMetrics"});
    let reply = fixture.send_json("PUT", "/actions", &flush);
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.fault(),
        "Metrics are not configured: PUT /metrics first"
    );
    let metrics = fixture.dir.join("metrics.json");
    let body = json!({"metrics_path": metrics.to_str().unwrap()});
    assert_eq!(fixture.send_json("PUT", "/metrics", &body).status, 204);
    let reply = fixture.send_json("PUT", "/actions", &flush);
    assert_eq!(reply.status, 204, "{reply:?}");
    assert!(reply.body.is_empty());
}

#[test]
fn unsupported_firecracker_endpoints_are_400_naming_the_feature() {
    let fixture = Fixture::new("unsupported");
    let doc = openapi();
    let description = doc["info"]["description"].as_str().unwrap();
    let cases = [
        ("PUT", "/balloon", "The balloon device"),
        ("GET", "/balloon", "The balloon device"),
        ("PATCH", "/balloon/statistics", "The balloon device"),
        ("PUT", "/mmds", "MMDS (the microVM metadata service)"),
        ("GET", "/mmds", "MMDS (the microVM metadata service)"),
        ("PUT", "/mmds/config", "MMDS (the microVM metadata service)"),
        ("PUT", "/cpu-config", "CPU configuration (cpu-config)"),
        ("PUT", "/pmem/pmem0", "The pmem device"),
        ("PUT", "/hotplug/memory", "Memory hotplug"),
    ];
    for (method, path, feature) in cases {
        let reply = fixture.send(method, path, Some(r#"{"guest_cid": 3}"#));
        assert_eq!(reply.status, 400, "{method} {path}: {reply:?}");
        assert_eq!(
            reply.fault(),
            format!("{feature} is not supported by cabin yet"),
            "{method} {path}"
        );
        // The document says so, and does not list them as operations.
        let documented = path.replace("pmem0", "{id}");
        assert!(
            description.contains(&documented),
            "{documented} in the info"
        );
        assert!(doc["paths"].get(path).is_none(), "{path}");
    }
    assert_eq!(fixture.send("GET", "/", None).status, 200);
}

#[test]
fn version_is_the_crate_version_in_firecrackers_field() {
    let fixture = Fixture::new("version");
    let reply = fixture.send("GET", "/version", None);
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.json(),
        json!({"firecracker_version": env!("CARGO_PKG_VERSION")})
    );
    assert_eq!(
        reply.header("Content-Type").as_deref(),
        Some("application/json")
    );
    let reply = fixture.send("PUT", "/version", Some("{}"));
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("Allow").as_deref(), Some("GET"));
}

#[test]
fn lifecycle_refusals_name_the_state() {
    let fixture = Fixture::new("lifecycle");
    let pause = json!({"state": "Paused"});
    let resume = json!({"state": "Resumed"});
    let start = json!({"action_type": "InstanceStart"});
    let reply = fixture.send_json("PATCH", "/vm", &pause);
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.fault(),
        "Pausing is not allowed while the VM is Not started"
    );
    let shutdown = json!({"action_type": "Shutdown", "timeout_s": 5});
    let reply = fixture.send_json("PUT", "/actions", &shutdown);
    assert_eq!(
        (reply.status, reply.fault()),
        (
            400,
            "Shutdown is not allowed while the VM is Not started".to_owned()
        )
    );
    // A timeout belongs to Shutdown only, and is bounded.
    let timed_start = json!({"action_type": "InstanceStart", "timeout_s": 5});
    let reply = fixture.send_json("PUT", "/actions", &timed_start);
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.fault(),
        "timeout_s: only the Shutdown action takes a timeout, not InstanceStart"
    );
    let forever = json!({"action_type": "Shutdown", "timeout_s": 0});
    let reply = fixture.send_json("PUT", "/actions", &forever);
    assert_eq!(
        reply.fault(),
        "timeout_s: 0 is out of range: give 1 to 86400 seconds"
    );
    assert_eq!(fixture.send_json("PUT", "/actions", &start).status, 204);
    let reply = fixture.send_json("PUT", "/actions", &start);
    assert_eq!(
        reply.fault(),
        "InstanceStart is not allowed while the VM is Running"
    );
    let reply = fixture.send_json("PATCH", "/vm", &resume);
    assert_eq!(
        reply.fault(),
        "Resuming is not allowed while the VM is Running"
    );
    let machine = json!({"vcpu_count": 1, "mem_size_mib": 128});
    let reply = fixture.send_json("PUT", "/machine-config", &machine);
    assert_eq!(reply.status, 400);
    assert!(
        reply.fault().contains("while the VM is Running"),
        "{reply:?}"
    );
    assert_eq!(fixture.send_json("PATCH", "/vm", &pause).status, 204);
    assert_eq!(fixture.send("GET", "/", None).json()["state"], "Paused");
    assert_eq!(fixture.send_json("PATCH", "/vm", &resume).status, 204);
    assert_eq!(fixture.send("GET", "/", None).json()["state"], "Running");
}

#[test]
fn drive_path_id_must_match_body() {
    let fixture = Fixture::new("driveid");
    let image = fixture.file("a.img");
    let body = json!({"drive_id": "b", "path_on_host": image, "is_root_device": false});
    let reply = fixture.send_json("PUT", "/drives/a", &body);
    assert_eq!(reply.status, 400);
    assert_eq!(
        reply.fault(),
        "drive_id 'b' in the body differs from 'a' in the path"
    );
}

#[test]
fn unknown_path_is_404_and_wrong_method_405() {
    let fixture = Fixture::new("routes");
    for path in [
        "/nope",
        "/drives",
        "/drives/",
        "/vm/config/x",
        "/balloon/x",
        "/snapshot",
        "/pmem/",
    ] {
        let reply = fixture.send("GET", path, None);
        assert_eq!(reply.status, 404, "{path}");
        assert!(reply.fault().contains(path), "{reply:?}");
    }
    let reply = fixture.send("POST", "/actions", Some("{}"));
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("Allow").as_deref(), Some("PUT"));
    assert_eq!(reply.fault(), "POST is not allowed on /actions: use PUT");
    let reply = fixture.send("DELETE", "/machine-config", None);
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("Allow").as_deref(), Some("GET, PUT, PATCH"));
    let reply = fixture.send("GET", "/drives/rootfs", None);
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("Allow").as_deref(), Some("PUT, PATCH"));
}

#[test]
fn malformed_http_is_400_and_the_server_keeps_serving() {
    let fixture = Fixture::new("badhttp");
    for raw in [
        &b"NOT HTTP AT ALL\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header\r\n\r\n",
    ] {
        let reply = send_raw(&fixture.socket, raw);
        assert_eq!(reply.status, 400, "{}", String::from_utf8_lossy(raw));
        reply.fault();
    }
    let reply = send_raw(
        &fixture.socket,
        b"PUT /vm HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    );
    assert_eq!(reply.status, 501);
    assert_eq!(fixture.send("GET", "/", None).status, 200);
}

#[test]
fn one_mib_body_is_413_without_being_read() {
    let fixture = Fixture::new("large");
    let mut stream = connect(&fixture.socket);
    let head = format!(
        "PUT /machine-config HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        1 << 20
    );
    stream.write_all(head.as_bytes()).unwrap();
    // The answer comes before (and without) the body: the server never reads it.
    let reply = read_reply(&mut stream);
    assert_eq!(reply.status, 413);
    assert!(reply.fault().contains("1048576 bytes"), "{reply:?}");
    assert_eq!(reply.header("Connection").as_deref(), Some("close"));
    // A client that sends the body anyway gets the same answer and a closed socket.
    let mut stream = connect(&fixture.socket);
    let writer = {
        let mut stream = stream.try_clone().unwrap();
        let head = head.clone();
        thread::spawn(move || {
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&vec![b' '; 1 << 20]);
        })
    };
    assert_eq!(read_reply(&mut stream).status, 413);
    writer.join().unwrap();
    assert_eq!(fixture.send("GET", "/", None).status, 200);
}

#[test]
fn absurd_content_length_is_413_and_the_server_survives() {
    let fixture = Fixture::new("absurd");
    let reply = send_raw(
        &fixture.socket,
        b"PUT /machine-config HTTP/1.1\r\nContent-Length: 99999999999999\r\n\r\n{\"vcpu\"",
    );
    assert_eq!(reply.status, 413);
    let reply = send_raw(
        &fixture.socket,
        b"PUT /vm HTTP/1.1\r\nContent-Length: 999999999999999999999999\r\n\r\n",
    );
    assert_eq!(reply.status, 400, "a length beyond usize is invalid");
    assert_eq!(fixture.send("GET", "/", None).status, 200);
}

#[test]
fn oversized_head_is_431() {
    let fixture = Fixture::new("head");
    let mut raw = b"GET / HTTP/1.1\r\nX-Filler: ".to_vec();
    raw.extend(std::iter::repeat_n(b'a', 16 * 1024));
    raw.extend_from_slice(b"\r\n\r\n");
    let mut stream = connect(&fixture.socket);
    let _ = stream.write_all(&raw);
    assert_eq!(read_reply(&mut stream).status, 431);
    assert_eq!(fixture.send("GET", "/", None).status, 200);
}

fn short_timeouts() -> Limits {
    Limits {
        request_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(1),
        ..Limits::default()
    }
}

#[test]
fn silent_client_does_not_block_others_and_is_dropped() {
    let limits = Limits {
        idle_timeout: Duration::from_secs(2),
        ..Limits::default()
    };
    let fixture = Fixture::with_limits("silent", limits);
    let mut silent = connect(&fixture.socket);
    let started = Instant::now();
    assert_eq!(fixture.send("GET", "/", None).status, 200);
    if started.elapsed() < limits.request_timeout {
        // Served while the silent client still holds its connection.
        silent.set_nonblocking(true).unwrap();
        let err = silent.read(&mut [0u8; 1]).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
        silent.set_nonblocking(false).unwrap();
    }
    // The silent client is disconnected, without an answer, after idle_timeout.
    let mut rest = Vec::new();
    silent.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{rest:?}");
    assert!(started.elapsed() >= limits.idle_timeout);
}

#[test]
fn slow_client_does_not_block_others_and_gets_408() {
    let fixture = Fixture::with_limits("slow", short_timeouts());
    let mut slow = connect(&fixture.socket);
    slow.write_all(b"PUT /vm HTTP/1.1\r\nContent-Length: 20\r\n\r\n{\"sta")
        .unwrap();
    let writer = {
        let mut slow = slow.try_clone().unwrap();
        thread::spawn(move || {
            for byte in b"te\": \"Paused\"" {
                thread::sleep(Duration::from_millis(200));
                if slow.write_all(&[*byte]).is_err() {
                    return;
                }
            }
        })
    };
    assert_eq!(fixture.send("GET", "/", None).status, 200);
    let reply = read_reply(&mut slow);
    assert_eq!(reply.status, 408);
    writer.join().unwrap();
}

#[test]
fn fifty_concurrent_clients_are_all_answered() {
    let fixture = Fixture::new("fifty");
    let clients: Vec<_> = (0..50)
        .map(|i| {
            let socket = fixture.socket.clone();
            thread::spawn(move || {
                if i % 2 == 0 {
                    send(&socket, "GET", "/", None).status
                } else {
                    send(&socket, "PATCH", "/vm", Some(r#"{"state": "Paused"}"#)).status
                }
            })
        })
        .collect();
    let statuses: Vec<u16> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let ok = statuses.iter().filter(|&&s| s == 200).count();
    let refused = statuses.iter().filter(|&&s| s == 400).count();
    assert_eq!((ok, refused), (25, 25), "{statuses:?}");
    assert_eq!(fixture.send("GET", "/", None).status, 200);
}

#[test]
fn too_many_busy_connections_are_answered_503() {
    let limits = Limits {
        max_connections: 2,
        ..short_timeouts()
    };
    let fixture = Fixture::with_limits("cap", limits);
    // Two clients in the middle of a request: neither can be closed to make room.
    let mut a = connect(&fixture.socket);
    let mut b = connect(&fixture.socket);
    a.write_all(b"GET / HTTP/1.1\r\nHost").unwrap();
    b.write_all(b"GET / HTTP/1.1\r\nHost").unwrap();
    thread::sleep(Duration::from_millis(100));
    let reply = fixture.send("GET", "/", None);
    assert_eq!(reply.status, 503);
    assert!(reply.fault().contains("Too many"), "{reply:?}");
    // Once their requests time out, clients are served again.
    let deadline = Instant::now() + Duration::from_secs(20);
    while fixture.send("GET", "/", None).status != 200 {
        assert!(
            Instant::now() < deadline,
            "still refused after the slow clients timed out"
        );
        thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn idle_connections_make_room_for_new_clients() {
    let limits = Limits {
        max_connections: 2,
        ..Limits::default()
    };
    let fixture = Fixture::with_limits("room", limits);
    // Two idle keep-alive connections (or clients gone without a word) fill the
    // server; the next client takes the place of the one idle the longest.
    let mut oldest = connect(&fixture.socket);
    let _newer = connect(&fixture.socket);
    thread::sleep(Duration::from_millis(100));
    assert_eq!(fixture.send("GET", "/", None).status, 200);
    let mut rest = Vec::new();
    oldest.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{rest:?}");
}

#[test]
fn keep_alive_serves_several_requests_on_one_connection() {
    let fixture = Fixture::new("keepalive");
    let mut stream = connect(&fixture.socket);
    let two = b"GET / HTTP/1.1\r\n\r\nGET /machine-config HTTP/1.1\r\nConnection: close\r\n\r\n";
    stream.write_all(two).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");
    assert!(text.contains("\"mem_size_mib\":128"), "{text}");
}

#[test]
fn existing_socket_path_is_refused_with_one_clear_line() {
    let fixture = Fixture::new("exists");
    let (to_vmm, _requests) = mpsc::channel();
    let wake = EventFd::new(EFD_NONBLOCK).unwrap();
    let err = server::start(
        &fixture.socket,
        to_vmm.clone(),
        wake.try_clone().unwrap(),
        None,
    )
    .unwrap_err();
    assert!(matches!(err, ServerError::SocketExists(_)));
    assert_eq!(
        err.to_string(),
        format!(
            "API socket {} already exists: remove it if no cabin uses it, or choose another path",
            fixture.socket.display()
        )
    );
    // The running server is untouched.
    assert_eq!(fixture.send("GET", "/", None).status, 200);
    let stale = fixture.dir.join("stale.sock");
    std::fs::write(&stale, b"").unwrap();
    let err = server::start(&stale, to_vmm, wake, None).unwrap_err();
    assert!(matches!(err, ServerError::SocketExists(_)));
}

#[test]
fn dropping_the_server_removes_the_socket() {
    let mut fixture = Fixture::new("drop");
    assert!(fixture.socket.exists());
    drop(fixture.server.take());
    assert!(!fixture.socket.exists());
    assert!(UnixStream::connect(&fixture.socket).is_err());
}

#[test]
fn socket_is_private_to_its_owner_and_appears_only_when_listening() {
    use std::os::unix::fs::PermissionsExt;
    let fixture = Fixture::new("mode");
    let mode = std::fs::metadata(&fixture.socket)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // The socket is bound under a temporary name and linked into place: nothing else
    // is left in the directory, and the path accepts connections as soon as it exists.
    let names: Vec<_> = std::fs::read_dir(&fixture.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [fixture.socket.file_name().unwrap()]);
    assert!(UnixStream::connect(&fixture.socket).is_ok());
}

// ---------------------------------------------------------------------------------
// cabin ctl, the real binary, against the fake.

fn ctl(socket: &Path, action: &str) -> (i32, String, String) {
    let output = Command::new(common::cabin_bin())
        .args(["ctl", "--api-sock"])
        .arg(socket)
        .arg(action)
        .output()
        .expect("cannot run cabin ctl");
    (
        output.status.code().expect("exit code"),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn ctl_drives_the_lifecycle_with_exit_codes() {
    let fixture = Fixture::new("ctl");
    let (code, out, err) = ctl(&fixture.socket, "status");
    assert_eq!(code, 0, "{err}");
    let info: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(info["state"], "Not started");

    let (code, out, err) = ctl(&fixture.socket, "pause");
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert_eq!(
        err,
        "cabin ctl: Pausing is not allowed while the VM is Not started\n"
    );

    assert_eq!(ctl(&fixture.socket, "start").0, 0);
    let (code, err) = {
        let (code, _, err) = ctl(&fixture.socket, "start");
        (code, err)
    };
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "cabin ctl: InstanceStart is not allowed while the VM is Running\n"
    );
    assert_eq!(ctl(&fixture.socket, "pause").0, 0);
    let (_, out, _) = ctl(&fixture.socket, "status");
    assert!(out.contains("\"Paused\""), "{out}");
    assert_eq!(ctl(&fixture.socket, "resume").0, 0);
    assert_eq!(ctl(&fixture.socket, "ctrl-alt-del").0, 0);

    let (code, out, _) = ctl(&fixture.socket, "config");
    assert_eq!(code, 0);
    let document: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(document["machine-config"]["vcpu_count"], 1);
    let doc = openapi();
    let schema = json!({"$ref": "#/components/schemas/FullVmConfiguration"});
    validate(&doc, &schema, &document, "config").unwrap();
}

#[test]
fn ctl_without_cabin_exits_3_with_a_hint() {
    let dir = common::scratch_dir("api-ctl-missing");
    let socket = dir.join("nobody.sock");
    let (code, out, err) = ctl(&socket, "status");
    assert_eq!(code, 3);
    assert!(out.is_empty());
    let path = socket.display();
    assert!(
        err.starts_with(&format!("cabin ctl: cannot reach cabin at {path}: ")),
        "{err}"
    );
    assert!(
        err.ends_with(&format!("; is it running with --api-sock {path}?\n")),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_stalled_vmm_gets_503_after_its_timeout_and_snapshots_get_longer() {
    let dir = common::scratch_dir("api-stalled");
    let socket = dir.join("api.sock");
    // Requests reach a VMM thread that never answers.
    let (to_vmm, _requests) = mpsc::channel();
    let limits = Limits {
        reply_timeout: Duration::from_secs(1),
        snapshot_reply_timeout: Duration::from_secs(3),
        ..Limits::default()
    };
    let wake = EventFd::new(EFD_NONBLOCK).unwrap();
    let _server = server::start_with_limits(&socket, to_vmm, wake, limits).unwrap();

    let started = Instant::now();
    let reply = send(&socket, "GET", "/", None);
    assert_eq!(reply.status, 503, "{reply:?}");
    assert!(reply.fault().contains("within 1 s"), "{reply:?}");
    assert!(started.elapsed() < limits.snapshot_reply_timeout);

    let started = Instant::now();
    let body = r#"{"snapshot_path": "/tmp/s", "mem_file_path": "/tmp/m"}"#;
    let reply = send(&socket, "PUT", "/snapshot/create", Some(body));
    assert_eq!(reply.status, 503, "{reply:?}");
    assert!(reply.fault().contains("within 3 s"), "{reply:?}");
    assert!(started.elapsed() >= limits.snapshot_reply_timeout);
}
