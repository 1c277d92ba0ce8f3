//! The API server: Firecracker's HTTP API, for the parts cabin implements, on a Unix
//! socket.
//!
//! One acceptor thread waits for clients; each connection gets its own thread, so a
//! client that connects and never sends, or sends slowly, holds up nobody else, and
//! is dropped when its request does not arrive within [`Limits::request_timeout`].
//! Requests are parsed by `httparse`; a body is read only when its declared length is
//! within [`Limits::max_body_bytes`] (never past it), and only through a
//! `Content-Length`. Each request becomes an [`ApiMessage`] for the VMM thread, which
//! is woken through its eventfd; its [`ApiResponse`] becomes the HTTP answer.
//!
//! (tiny_http was the first choice; version 0.12 drains an unread body on drop through
//! a buffer of the declared size, so a single `Content-Length: 99999999999999` aborts
//! the whole process. Reading the socket ourselves keeps every limit in our hands.)

use std::fmt;
use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use thiserror::Error;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::model::{
    self, Action, ActionType, ConfigChange, InstanceInfo, VmStatePatch, VmStateRequest,
};
use super::{ApiMessage, ApiRequest, ApiResponse};
use crate::seccomp::{SeccompError, ThreadFilter};

mod http;

use http::{read_request, write_reply, Incoming, Reply, READ_CHUNK};

/// How much a client may send and how long cabin waits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest request body; a larger one is refused with 413 without being read.
    pub max_body_bytes: usize,
    /// Largest request line plus headers; more is refused with 431.
    pub max_header_bytes: usize,
    /// Time a client has to send a whole request, counted from when cabin starts
    /// waiting for it; a client silent that long is disconnected.
    pub request_timeout: Duration,
    /// Time the VMM thread has to answer; past it the client gets 503.
    pub reply_timeout: Duration,
    /// Connections served at once; more are answered 503 and closed.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 64 * 1024,
            max_header_bytes: 8 * 1024,
            request_timeout: Duration::from_secs(10),
            reply_timeout: Duration::from_secs(30),
            max_connections: 128,
        }
    }
}

/// Why the API server could not start.
#[derive(Debug, Error)]
pub enum ServerError {
    /// Something already has the socket's path.
    #[error(
        "API socket {0} already exists: remove it if no cabin uses it, or choose another path"
    )]
    SocketExists(PathBuf),
    /// bind() failed (no such directory, no permission, path too long, ...).
    #[error("Cannot create API socket {path}")]
    Bind {
        /// The socket path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The socket could not be made owner-only or non-blocking.
    #[error("Cannot set up API socket {path}")]
    Setup {
        /// The socket path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The eventfd that stops the acceptor could not be created.
    #[error("Cannot create the API server's stop eventfd")]
    StopEvent(#[source] io::Error),
    /// The acceptor thread could not be started.
    #[error("Cannot start the API thread")]
    Thread(#[source] io::Error),
    /// The acceptor thread could not install its seccomp filter.
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
}

/// A running API server. Dropping it stops accepting clients and removes the socket.
pub struct ApiServer {
    path: PathBuf,
    stop: EventFd,
    acceptor: Option<JoinHandle<()>>,
}

impl fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiServer")
            .field("path", &self.path)
            .finish()
    }
}

impl ApiServer {
    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Err(e) = self.stop.write(1) {
            log::error!("Cannot stop the API thread: {e}");
        } else if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        // Remove the path only while it is still a socket (ours, closed above).
        let is_socket = fs::symlink_metadata(&self.path)
            .map(|m| m.file_type().is_socket())
            .unwrap_or(false);
        if is_socket {
            if let Err(e) = fs::remove_file(&self.path) {
                log::warn!("Cannot remove API socket {}: {e}", self.path.display());
            }
        }
    }
}

/// What the connection threads share.
struct Shared {
    to_vmm: Sender<ApiMessage>,
    wake: EventFd,
    limits: Limits,
    connections: AtomicUsize,
}

/// Starts serving the API on a new Unix socket at `path` with the default [`Limits`].
/// Requests go to the VMM thread through `to_vmm`, each followed by `wake.write(1)`.
/// With `seccomp`, the acceptor thread installs that filter before it serves anyone
/// (the connection threads it spawns inherit it).
pub fn start(
    path: &Path,
    to_vmm: Sender<ApiMessage>,
    wake: EventFd,
    seccomp: Option<ThreadFilter>,
) -> Result<ApiServer, ServerError> {
    start_confined(path, to_vmm, wake, Limits::default(), seccomp)
}

/// [`start`] with other limits (tests use short timeouts) and no seccomp filter.
pub fn start_with_limits(
    path: &Path,
    to_vmm: Sender<ApiMessage>,
    wake: EventFd,
    limits: Limits,
) -> Result<ApiServer, ServerError> {
    start_confined(path, to_vmm, wake, limits, None)
}

/// [`start`] with other limits and an optional seccomp filter.
fn start_confined(
    path: &Path,
    to_vmm: Sender<ApiMessage>,
    wake: EventFd,
    limits: Limits,
    seccomp: Option<ThreadFilter>,
) -> Result<ApiServer, ServerError> {
    if fs::symlink_metadata(path).is_ok() {
        return Err(ServerError::SocketExists(path.to_owned()));
    }
    let listener = bind_listening(path)?;
    let server = launch(path, listener, to_vmm, wake, limits, seccomp);
    if server.is_err() {
        let _ = fs::remove_file(path);
    }
    server
}

/// Binds a listening, owner-only socket and only then makes it appear at `path`, so
/// that a client that sees the path can connect (std's bind() creates the file before
/// it calls listen(), and a script polling for the file could see ECONNREFUSED).
/// The socket is bound under a temporary name in the same directory and hard-linked
/// into place, which fails instead of replacing anything that appeared at `path`.
fn bind_listening(path: &Path) -> Result<UnixListener, ServerError> {
    let bind_error = |source: io::Error| match source.kind() {
        io::ErrorKind::AddrInUse => ServerError::SocketExists(path.to_owned()),
        _ => ServerError::Bind {
            path: path.to_owned(),
            source,
        },
    };
    let temporary = path.with_file_name(format!(".cabin-api-{}.sock", std::process::id()));
    let _ = fs::remove_file(&temporary);
    let listener = match UnixListener::bind(&temporary) {
        Ok(listener) => listener,
        // The temporary name is too long for sun_path, or the directory is not
        // there: bind the final path directly and let its error speak.
        Err(_) => return UnixListener::bind(path).map_err(bind_error),
    };
    let placed = fs::set_permissions(&temporary, fs::Permissions::from_mode(0o600))
        .and_then(|()| fs::hard_link(&temporary, path));
    let _ = fs::remove_file(&temporary);
    match placed {
        Ok(()) => Ok(listener),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            Err(ServerError::SocketExists(path.to_owned()))
        }
        Err(source) => Err(bind_error(source)),
    }
}

/// Makes the bound socket owner-only and starts the acceptor thread on it; returns
/// once the thread has installed its seccomp filter (or failed to).
fn launch(
    path: &Path,
    listener: UnixListener,
    to_vmm: Sender<ApiMessage>,
    wake: EventFd,
    limits: Limits,
    seccomp: Option<ThreadFilter>,
) -> Result<ApiServer, ServerError> {
    let setup = |source| ServerError::Setup {
        path: path.to_owned(),
        source,
    };
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(setup)?;
    listener.set_nonblocking(true).map_err(setup)?;
    let stop = EventFd::new(EFD_NONBLOCK).map_err(ServerError::StopEvent)?;
    let thread_stop = stop.try_clone().map_err(ServerError::StopEvent)?;
    let shared = Arc::new(Shared {
        to_vmm,
        wake,
        limits,
        connections: AtomicUsize::new(0),
    });
    let (confined_tx, confined) = mpsc::sync_channel(1);
    let acceptor = thread::Builder::new()
        .name("cabin-api".into())
        .spawn(move || {
            let result = seccomp.as_ref().map_or(Ok(()), ThreadFilter::apply);
            let ok = result.is_ok();
            let _ = confined_tx.send(result);
            if ok {
                accept_loop(&listener, &thread_stop, &shared);
            }
        })
        .map_err(ServerError::Thread)?;
    // The thread always sends before it ends; a closed channel means it panicked.
    let confined = confined.recv().unwrap_or(Ok(()));
    if let Err(e) = confined {
        let _ = acceptor.join();
        return Err(ServerError::Seccomp(e));
    }
    Ok(ApiServer {
        path: path.to_owned(),
        stop,
        acceptor: Some(acceptor),
    })
}

/// Waits for clients or the stop event; one thread per client.
fn accept_loop(listener: &UnixListener, stop: &EventFd, shared: &Arc<Shared>) {
    loop {
        let mut fds = [
            libc::pollfd {
                fd: listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: stop.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is an array of two initialized pollfd that lives across the
        // call, and its length is what is passed; poll only writes `revents`.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if ready < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            log::error!("API server stops: poll failed: {err}");
            return;
        }
        if fds[1].revents != 0 {
            return;
        }
        match listener.accept() {
            Ok((stream, _)) => admit(stream, shared),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // Out of file descriptors, most likely: keep serving the others.
                log::warn!("API server cannot accept a client: {e}");
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Counts a connection while its thread runs.
struct ConnectionSlot(Arc<Shared>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::SeqCst);
    }
}

fn admit(mut stream: UnixStream, shared: &Arc<Shared>) {
    let busy = shared.connections.fetch_add(1, Ordering::SeqCst) >= shared.limits.max_connections;
    let slot = ConnectionSlot(Arc::clone(shared));
    if busy {
        let reply = Reply::fault(503, "Too many API clients at once: try again").closing();
        let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
        let _ = write_reply(&mut stream, &reply);
        return;
    }
    let spawned = thread::Builder::new()
        .name("cabin-api-conn".into())
        .spawn(move || {
            serve_connection(stream, &slot.0);
            drop(slot);
        });
    if let Err(e) = spawned {
        log::warn!("API server cannot start a thread for a client: {e}");
    }
}

fn serve_connection(mut stream: UnixStream, shared: &Shared) {
    let limits = shared.limits;
    if stream.set_nonblocking(false).is_err()
        || stream
            .set_write_timeout(Some(limits.request_timeout))
            .is_err()
    {
        return;
    }
    let mut buf = Vec::with_capacity(READ_CHUNK);
    loop {
        let deadline = Instant::now() + limits.request_timeout;
        let (reply, close) = match read_request(&mut stream, &mut buf, &limits, deadline) {
            Incoming::Gone => return,
            Incoming::Refuse(reply) => (reply.closing(), true),
            Incoming::Request(request) => {
                log::debug!("API request {} {}", request.method, request.target);
                let reply = handle(shared, &request.method, &request.target, &request.body);
                let close = request.close || reply.close;
                let reply = if close { reply.closing() } else { reply };
                (reply, close)
            }
        };
        if write_reply(&mut stream, &reply).is_err() || close {
            let _ = stream.shutdown(std::net::Shutdown::Write);
            return;
        }
    }
}

/// The endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Route {
    Describe,
    GetMachineConfig,
    PutMachineConfig,
    PutBootSource,
    PutDrive(String),
    PutNetworkInterface(String),
    PutActions,
    PatchVm,
    GetVmConfig,
}

/// Finds the endpoint for `method` and `target`: 404 for an unknown path, 405 (with
/// the methods it has) for a known path and another method.
fn route(method: &str, target: &str) -> Result<Route, Reply> {
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
    match path {
        "/" => by_method("GET", (method == "GET").then_some(Route::Describe)),
        "/machine-config" => by_method(
            "GET, PUT",
            match method {
                "GET" => Some(Route::GetMachineConfig),
                "PUT" => Some(Route::PutMachineConfig),
                _ => None,
            },
        ),
        "/boot-source" => by_method("PUT", (method == "PUT").then_some(Route::PutBootSource)),
        "/actions" => by_method("PUT", (method == "PUT").then_some(Route::PutActions)),
        "/vm" => by_method("PATCH", (method == "PATCH").then_some(Route::PatchVm)),
        "/vm/config" => by_method("GET", (method == "GET").then_some(Route::GetVmConfig)),
        _ => {
            if let Some(id) = id_after("/drives/") {
                by_method("PUT", (method == "PUT").then_some(Route::PutDrive(id)))
            } else if let Some(id) = id_after("/network-interfaces/") {
                by_method(
                    "PUT",
                    (method == "PUT").then_some(Route::PutNetworkInterface(id)),
                )
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

/// Turns a routed request into what the VMM thread is asked.
fn to_api_request(route: &Route, body: &[u8]) -> Result<ApiRequest, Reply> {
    let mismatch = |field: &str, body_id: &str, path_id: &str| {
        let message =
            format!("{field} '{body_id}' in the body differs from '{path_id}' in the path");
        Reply::fault(400, message)
    };
    Ok(match route {
        Route::Describe => ApiRequest::Describe,
        Route::GetMachineConfig | Route::GetVmConfig => ApiRequest::GetConfig,
        Route::PutMachineConfig => ApiRequest::Configure(ConfigChange::Machine(parse_body(
            "PUT /machine-config",
            body,
        )?)),
        Route::PutBootSource => {
            ApiRequest::Configure(ConfigChange::Boot(parse_body("PUT /boot-source", body)?))
        }
        Route::PutDrive(id) => {
            let drive: model::Drive = parse_body(&format!("PUT /drives/{id}"), body)?;
            if drive.drive_id != *id {
                return Err(mismatch("drive_id", &drive.drive_id, id));
            }
            ApiRequest::Configure(ConfigChange::Drive(drive))
        }
        Route::PutNetworkInterface(id) => {
            let what = format!("PUT /network-interfaces/{id}");
            let net: model::NetworkInterface = parse_body(&what, body)?;
            if net.iface_id != *id {
                return Err(mismatch("iface_id", &net.iface_id, id));
            }
            ApiRequest::Configure(ConfigChange::Net(net))
        }
        Route::PutActions => {
            let action: Action = parse_body("PUT /actions", body)?;
            match action.action_type {
                ActionType::InstanceStart => ApiRequest::Start,
                ActionType::SendCtrlAltDel => ApiRequest::CtrlAltDel,
            }
        }
        Route::PatchVm => {
            let patch: VmStatePatch = parse_body("PATCH /vm", body)?;
            match patch.state {
                VmStateRequest::Paused => ApiRequest::Pause,
                VmStateRequest::Resumed => ApiRequest::Resume,
            }
        }
    })
}

/// Turns the VMM thread's answer into the HTTP reply for `route`.
fn to_reply(route: &Route, response: ApiResponse) -> Reply {
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
        (
            Route::PutMachineConfig
            | Route::PutBootSource
            | Route::PutDrive(_)
            | Route::PutNetworkInterface(_)
            | Route::PutActions
            | Route::PatchVm,
            ApiResponse::Done,
        ) => Reply::no_content(),
        _ => unexpected(),
    }
}

/// Sends `request` to the VMM thread, wakes it, and waits (bounded) for its answer.
fn exchange(shared: &Shared, request: ApiRequest) -> Result<ApiResponse, Reply> {
    let (reply_tx, reply_rx) = mpsc::channel();
    let message = ApiMessage {
        request,
        reply: reply_tx,
    };
    if shared.to_vmm.send(message).is_err() {
        return Err(Reply::fault(
            503,
            "The VMM thread has stopped: cabin is exiting",
        ));
    }
    if let Err(e) = shared.wake.write(1) {
        log::error!("Cannot wake the VMM thread for an API request: {e}");
    }
    let timeout = shared.limits.reply_timeout;
    reply_rx.recv_timeout(timeout).map_err(|e| match e {
        RecvTimeoutError::Timeout => Reply::fault(
            503,
            format!(
                "The VMM thread did not answer within {} s",
                timeout.as_secs_f64()
            ),
        ),
        RecvTimeoutError::Disconnected => {
            Reply::fault(503, "The VMM thread dropped the request: cabin is exiting")
        }
    })
}

/// Answers one request: route, parse, ask the VMM thread, turn its answer into a reply.
fn handle(shared: &Shared, method: &str, target: &str, body: &[u8]) -> Reply {
    let answer = route(method, target).and_then(|route| {
        let request = to_api_request(&route, body)?;
        let response = exchange(shared, request)?;
        Ok(to_reply(&route, response))
    });
    answer.unwrap_or_else(|reply| reply)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::VmState;
    use crate::config::{ConsoleKind, VmConfig, DEFAULT_CMDLINE};
    use std::sync::mpsc::Receiver;

    fn limits() -> Limits {
        Limits {
            request_timeout: Duration::from_millis(500),
            reply_timeout: Duration::from_millis(500),
            ..Limits::default()
        }
    }

    fn config() -> VmConfig {
        VmConfig {
            kernel: None,
            initrd: None,
            cmdline: DEFAULT_CMDLINE.to_owned(),
            vcpus: 2,
            mem_size_mib: 256,
            disks: Vec::new(),
            console: ConsoleKind::Serial,
            nets: Vec::new(),
        }
    }

    fn shared() -> (Shared, Receiver<ApiMessage>) {
        let (to_vmm, from_api) = mpsc::channel();
        let shared = Shared {
            to_vmm,
            wake: EventFd::new(EFD_NONBLOCK).unwrap(),
            limits: limits(),
            connections: AtomicUsize::new(0),
        };
        (shared, from_api)
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
        assert_eq!(reply.allow, Some("GET, PUT"));
        assert!(fault_of(&reply).contains("DELETE is not allowed on /machine-config"));
        assert_eq!(route("GET", "/actions").unwrap_err().status, 405);
        assert_eq!(route("POST", "/drives/x").unwrap_err().status, 405);
    }

    #[test]
    fn to_api_request_parses_bodies() {
        let request = to_api_request(&Route::PutActions, br#"{"action_type":"InstanceStart"}"#);
        assert!(matches!(request, Ok(ApiRequest::Start)));
        let request = to_api_request(&Route::PatchVm, br#"{"state":"Resumed"}"#);
        assert!(matches!(request, Ok(ApiRequest::Resume)));
        let body = br#"{"vcpu_count":2,"mem_size_mib":256}"#;
        let request = to_api_request(&Route::PutMachineConfig, body);
        assert!(matches!(
            request,
            Ok(ApiRequest::Configure(ConfigChange::Machine(_)))
        ));
    }

    #[test]
    fn to_api_request_bad_bodies_are_400_naming_the_field() {
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
            let reply = to_api_request(&route, body).unwrap_err();
            assert_eq!(reply.status, 400);
            assert!(
                fault_of(&reply).contains(expected),
                "{expected:?} in {}",
                fault_of(&reply)
            );
        }
    }

    #[test]
    fn to_api_request_path_id_must_match_body() {
        let body = br#"{"drive_id":"b","path_on_host":"/x","is_root_device":false}"#;
        let reply = to_api_request(&Route::PutDrive("a".into()), body).unwrap_err();
        assert_eq!(reply.status, 400);
        assert_eq!(
            fault_of(&reply),
            "drive_id 'b' in the body differs from 'a' in the path"
        );
        let body = br#"{"iface_id":"eth1","host_dev_name":"tap0"}"#;
        let reply = to_api_request(&Route::PutNetworkInterface("eth0".into()), body).unwrap_err();
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
            serde_json::json!({"vcpu_count": 2, "mem_size_mib": 256, "smt": false})
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

    #[test]
    fn handle_sends_to_vmm_and_wakes_it() {
        let (shared, from_api) = shared();
        let vmm = thread::spawn(move || {
            let message = from_api.recv().unwrap();
            assert!(matches!(message.request, ApiRequest::Pause));
            message
                .reply
                .send(ApiResponse::Error {
                    status: 400,
                    message: "Pausing is not allowed while the VM is Not started".into(),
                })
                .unwrap();
        });
        let reply = handle(&shared, "PATCH", "/vm", br#"{"state":"Paused"}"#);
        vmm.join().unwrap();
        assert_eq!(reply.status, 400);
        assert_eq!(shared.wake.read().unwrap(), 1);
    }

    #[test]
    fn handle_silent_vmm_is_503_and_stopped_vmm_too() {
        let (shared, from_api) = shared();
        let reply = handle(&shared, "GET", "/", b"");
        assert_eq!(reply.status, 503);
        assert!(
            fault_of(&reply).contains("did not answer"),
            "{}",
            fault_of(&reply)
        );
        drop(from_api);
        let reply = handle(&shared, "GET", "/", b"");
        assert_eq!(reply.status, 503);
        assert!(fault_of(&reply).contains("stopped"));
    }
}
