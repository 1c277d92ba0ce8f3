//! The API server: Firecracker's HTTP API, for the parts cabin implements, on a Unix
//! socket.
//!
//! One thread serves every client. It is created, and confined by its seccomp filter,
//! before it serves anyone, and it never creates another thread: a poll loop watches
//! the listening socket, every connection, a stop eventfd and the eventfd the VMM
//! thread writes when an answer is ready. Connections are non-blocking, so a client
//! that connects and never sends, sends one byte a second, or never reads its answers
//! holds up nobody else; it is dropped when its request does not arrive within
//! [`Limits::request_timeout`] (or an idle connection within [`Limits::idle_timeout`]).
//! (An earlier design ran a thread per connection: several threads alive at once made
//! glibc create malloc arenas lazily, which read sysfs under a filter that forbids it,
//! and killed cabin. One thread created up front has nothing left to do lazily.)
//!
//! Requests are parsed by `httparse`; a body is taken only when its declared length is
//! within [`Limits::max_body_bytes`], and only through a `Content-Length`. Each request
//! becomes an [`ApiMessage`] for the VMM thread, which is woken through its eventfd;
//! its [`ApiResponse`] comes back on a channel and becomes the HTTP answer.
//!
//! (tiny_http was the first choice; version 0.12 drains an unread body on drop through
//! a buffer of the declared size, so a single `Content-Length: 99999999999999` aborts
//! the whole process. Reading the socket ourselves keeps every limit in our hands.)

use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use thiserror::Error;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{ApiMessage, ApiRequest, ApiResponse, Responder};
use crate::metrics::{api_path_key, metrics};
use crate::seccomp::{SeccompError, ThreadFilter};

#[doc(hidden)]
pub mod fuzzing;
mod http;
mod routes;

use http::{format_reply, parse_request, Parsed, Reply, CONTINUE, READ_CHUNK};
use routes::{Dispatch, Route};

/// How much a client may send and how long cabin waits.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest request body; a larger one is refused with 413 without being read.
    pub max_body_bytes: usize,
    /// Largest request line plus headers; more is refused with 431.
    pub max_header_bytes: usize,
    /// Time a client has to send a whole request once its first byte arrived; a
    /// request still incomplete after it is answered 408 and the connection closed.
    pub request_timeout: Duration,
    /// Time a connection may stay open without a request in progress (a client that
    /// connects and never sends, or a pooled keep-alive connection left unused); it
    /// is then closed without a word, as HTTP allows.
    pub idle_timeout: Duration,
    /// Time the VMM thread has to answer; past it the client gets 503.
    pub reply_timeout: Duration,
    /// The same for `/snapshot/create` and `/snapshot/load`, which write or map
    /// guest RAM (a snapshot of a large guest takes longer than any other call).
    pub snapshot_reply_timeout: Duration,
    /// Connections open at once. At the limit a new client takes the place of the
    /// connection idle the longest; when none is idle it is answered 503 and closed.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 64 * 1024,
            max_header_bytes: 8 * 1024,
            request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            reply_timeout: Duration::from_secs(30),
            snapshot_reply_timeout: Duration::from_secs(30 * 60),
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
    /// The API thread could not be started.
    #[error("Cannot start the API thread")]
    Thread(#[source] io::Error),
    /// The API thread could not install its seccomp filter.
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

/// What the API thread needs besides its sockets.
struct Shared {
    /// Requests to the VMM thread ...
    to_vmm: Sender<ApiMessage>,
    /// ... which is woken by a write here.
    wake: EventFd,
    /// Written by the VMM thread once an answer is on its way back.
    answered: Arc<EventFd>,
    limits: Limits,
}

/// Starts serving the API on a new Unix socket at `path` with the default [`Limits`].
/// Requests go to the VMM thread through `to_vmm`, each followed by `wake.write(1)`.
/// With `seccomp`, the API thread installs that filter before it serves anyone.
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

/// Makes the bound socket owner-only and starts the API thread on it; returns once
/// the thread has installed its seccomp filter (or failed to).
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
    let answered = Arc::new(EventFd::new(EFD_NONBLOCK).map_err(ServerError::StopEvent)?);
    let shared = Shared {
        to_vmm,
        wake,
        answered,
        limits,
    };
    let (confined_tx, confined) = mpsc::sync_channel(1);
    let acceptor = thread::Builder::new()
        .name("cabin-api".into())
        .spawn(move || {
            // Everything the loop allocates up front, before the filter: its buffers
            // and this thread's malloc arena.
            let mut server = Server::new(listener, thread_stop, shared);
            let result = seccomp.as_ref().map_or(Ok(()), ThreadFilter::apply);
            let ok = result.is_ok();
            let _ = confined_tx.send(result);
            if ok {
                server.run();
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

/// Most connections accepted in one pass of the loop, so a flood of connects cannot
/// starve the clients already connected.
const ACCEPT_BATCH: usize = 64;
/// A connection stops taking new requests while this many bytes of answers wait to
/// be written (a client that pipelines requests and never reads).
const MAX_PENDING_OUTPUT: usize = 64 * 1024;

/// What a connection is doing.
enum ConnState {
    /// Waiting for (the rest of) a request.
    Reading,
    /// A request is with the VMM thread.
    Waiting(Pending),
    /// Writing what is left, then closing.
    Closing,
}

/// A request the VMM thread has not answered yet.
struct Pending {
    route: Route,
    /// `PUT /drives/rootfs`, for the log line.
    what: String,
    /// The endpoint's key in the metrics.
    key: &'static str,
    answer: Receiver<ApiResponse>,
    /// Close the connection after this answer.
    close: bool,
    since: Instant,
}

impl Pending {
    /// How long the VMM thread has to answer this request.
    fn reply_timeout(&self, limits: &Limits) -> Duration {
        match self.route {
            Route::CreateSnapshot | Route::LoadSnapshot => limits.snapshot_reply_timeout,
            _ => limits.reply_timeout,
        }
    }
}

/// One client.
struct Connection {
    stream: UnixStream,
    state: ConnState,
    /// Bytes received and not yet taken as a request.
    input: Vec<u8>,
    /// Answer bytes not yet written.
    output: Vec<u8>,
    /// `100 Continue` was sent for the request in progress.
    continued: bool,
    /// The client shut its side: serve what arrived, then close.
    eof: bool,
    /// When the first byte of the request in progress arrived.
    request_since: Option<Instant>,
    /// Last time anything happened on this connection.
    active_at: Instant,
    /// When `output` became non-empty.
    writing_since: Option<Instant>,
    /// Closed for good: removed at the end of the pass.
    done: bool,
}

impl Connection {
    fn new(stream: UnixStream, now: Instant) -> Connection {
        Connection {
            stream,
            state: ConnState::Reading,
            input: Vec::new(),
            output: Vec::new(),
            continued: false,
            eof: false,
            request_since: None,
            active_at: now,
            writing_since: None,
            done: false,
        }
    }

    /// The poll events this connection waits for. It reads only while its buffers
    /// have room: a client that pipelines requests without reading the answers is
    /// left to wait, not buffered without bound.
    fn interest(&self, limits: &Limits) -> libc::c_short {
        let mut events = 0;
        if !self.output.is_empty() {
            events |= libc::POLLOUT;
        }
        let room = self.output.len() < MAX_PENDING_OUTPUT
            && self.input.len() < limits.max_header_bytes + limits.max_body_bytes;
        if matches!(self.state, ConnState::Reading) && !self.eof && room {
            events |= libc::POLLIN;
        }
        events
    }

    /// Between requests: nothing received of the next one, nothing left to write.
    fn is_idle(&self) -> bool {
        matches!(self.state, ConnState::Reading) && self.input.is_empty() && self.output.is_empty()
    }

    /// When this connection must be looked at even if nothing happens on it.
    fn deadline(&self, limits: &Limits) -> Instant {
        let mut deadline = match &self.state {
            ConnState::Waiting(pending) => pending.since + pending.reply_timeout(limits),
            ConnState::Reading => match self.request_since {
                Some(since) => since + limits.request_timeout,
                None => self.active_at + limits.idle_timeout,
            },
            ConnState::Closing => self.active_at + limits.request_timeout,
        };
        if let Some(since) = self.writing_since {
            deadline = deadline.min(since + limits.request_timeout);
        }
        deadline
    }

    /// Queues `reply` and writes what the socket takes now.
    fn answer(&mut self, reply: &Reply, now: Instant) {
        if reply.close {
            self.state = ConnState::Closing;
        }
        self.output.extend_from_slice(&format_reply(reply));
        self.writing_since.get_or_insert(now);
        self.active_at = now;
        self.flush(now);
    }

    /// Writes as much of `output` as the socket takes; closes when all of it is out
    /// and the connection is closing.
    fn flush(&mut self, now: Instant) {
        while !self.output.is_empty() {
            match (&self.stream).write(&self.output) {
                Ok(0) => {
                    self.done = true;
                    return;
                }
                Ok(n) => {
                    self.output.drain(..n);
                    self.active_at = now;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.done = true;
                    return;
                }
            }
        }
        self.writing_since = None;
        let finished = matches!(self.state, ConnState::Closing)
            || (self.eof && matches!(self.state, ConnState::Reading) && self.input.is_empty());
        if finished {
            let _ = self.stream.shutdown(std::net::Shutdown::Write);
            self.done = true;
        }
    }

    /// Reads what has arrived (one chunk: the loop comes back while more is there).
    fn receive(&mut self, now: Instant) {
        let mut chunk = [0u8; READ_CHUNK];
        match (&self.stream).read(&mut chunk) {
            Ok(0) => {
                self.eof = true;
                if self.input.is_empty() && self.output.is_empty() {
                    self.done = true;
                }
            }
            Ok(n) => {
                if self.input.is_empty() {
                    self.request_since = Some(now);
                }
                self.input.extend_from_slice(&chunk[..n]);
                self.active_at = now;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(_) => self.done = true,
        }
    }
}

/// The API thread's state: the listening socket, its connections, and the way to
/// the VMM thread.
struct Server {
    listener: UnixListener,
    stop: EventFd,
    shared: Shared,
    connections: Vec<Connection>,
    pollfds: Vec<libc::pollfd>,
}

/// Index of the first connection in the poll set (after the listener, the stop
/// eventfd and the answer eventfd).
const FIRST_CONNECTION: usize = 3;

impl Server {
    fn new(listener: UnixListener, stop: EventFd, shared: Shared) -> Server {
        let capacity = shared.limits.max_connections + FIRST_CONNECTION;
        Server {
            listener,
            stop,
            connections: Vec::with_capacity(shared.limits.max_connections),
            pollfds: Vec::with_capacity(capacity),
            shared,
        }
    }

    /// Serves until the stop eventfd is written.
    fn run(&mut self) {
        loop {
            let now = Instant::now();
            self.fill_pollfds();
            let timeout = self
                .connections
                .iter()
                .map(|c| c.deadline(&self.shared.limits))
                .min()
                .map_or(-1, |deadline| poll_timeout_ms(deadline, now));
            // SAFETY: `pollfds` holds initialized pollfd entries and its length is what
            // is passed; poll writes only their `revents` while the call lasts.
            let ready = unsafe {
                libc::poll(
                    self.pollfds.as_mut_ptr(),
                    self.pollfds.len() as libc::nfds_t,
                    timeout,
                )
            };
            if ready < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                log::error!("API server stops: poll failed: {err}");
                return;
            }
            if self.pollfds[1].revents != 0 {
                return;
            }
            let now = Instant::now();
            if self.pollfds[2].revents != 0 {
                let _ = self.shared.answered.read();
            }
            self.collect_answers(now);
            self.serve_connections(now);
            if self.pollfds[0].revents != 0 {
                self.accept_clients(now);
            }
            self.expire(now);
            self.connections.retain(|c| !c.done);
        }
    }

    fn fill_pollfds(&mut self) {
        let entry = |fd, events| libc::pollfd {
            fd,
            events,
            revents: 0,
        };
        self.pollfds.clear();
        self.pollfds
            .push(entry(self.listener.as_raw_fd(), libc::POLLIN));
        self.pollfds
            .push(entry(self.stop.as_raw_fd(), libc::POLLIN));
        self.pollfds
            .push(entry(self.shared.answered.as_raw_fd(), libc::POLLIN));
        for conn in &self.connections {
            self.pollfds.push(entry(
                conn.stream.as_raw_fd(),
                conn.interest(&self.shared.limits),
            ));
        }
    }

    fn accept_clients(&mut self, now: Instant) {
        for _ in 0..ACCEPT_BATCH {
            let stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of file descriptors, most likely: serve the others a while.
                    log::warn!("API server cannot accept a client: {e}");
                    thread::sleep(Duration::from_millis(50));
                    return;
                }
            };
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            let mut conn = Connection::new(stream, now);
            if !self.make_room() {
                let reply = Reply::fault(503, "Too many API clients at once: try again").closing();
                conn.answer(&reply, now);
                continue;
            }
            self.connections.push(conn);
        }
    }

    /// Whether a new connection fits. At the limit, the connection idle the longest
    /// (no request in progress, nothing left to write: an unused keep-alive
    /// connection, or one whose client left without poll having said so yet) is
    /// closed to make room, as HTTP allows; only when every connection is busy is
    /// there no room.
    fn make_room(&mut self) -> bool {
        self.connections.retain(|c| !c.done);
        if self.connections.len() < self.shared.limits.max_connections {
            return true;
        }
        let idle = self
            .connections
            .iter()
            .enumerate()
            .filter(|(_, c)| c.is_idle())
            .min_by_key(|(_, c)| c.active_at)
            .map(|(index, _)| index);
        match idle {
            Some(index) => {
                self.connections.swap_remove(index);
                true
            }
            None => false,
        }
    }

    /// Reads, writes and starts requests on every connection poll found ready.
    fn serve_connections(&mut self, now: Instant) {
        for index in 0..self.connections.len() {
            let revents = self
                .pollfds
                .get(FIRST_CONNECTION + index)
                .map_or(0, |p| p.revents);
            let conn = &mut self.connections[index];
            if revents & libc::POLLOUT != 0 {
                conn.flush(now);
            }
            if revents & libc::POLLIN != 0 {
                conn.receive(now);
            } else if revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
                // Gone for good: nobody would read an answer.
                conn.done = true;
            }
            self.start_requests(index, now);
        }
    }

    /// Takes the requests a connection has received, one at a time: each goes to
    /// the VMM thread (or is answered here), and the next waits for its answer.
    fn start_requests(&mut self, index: usize, now: Instant) {
        loop {
            let limits = self.shared.limits;
            let conn = &mut self.connections[index];
            if conn.done
                || !matches!(conn.state, ConnState::Reading)
                || conn.output.len() >= MAX_PENDING_OUTPUT
            {
                return;
            }
            let request = match parse_request(&mut conn.input, &limits, &mut conn.continued) {
                Parsed::Incomplete { send_continue } => {
                    if send_continue {
                        conn.output.extend_from_slice(CONTINUE);
                        conn.writing_since.get_or_insert(now);
                        conn.flush(now);
                    }
                    // Half a request and no more to come, or nothing left to say.
                    if conn.eof && (!conn.input.is_empty() || conn.output.is_empty()) {
                        conn.done = true;
                    }
                    return;
                }
                Parsed::Refuse(reply) => {
                    log::info!("API request refused: {}", fault_text(&reply));
                    metrics().api_request("other", true);
                    conn.answer(&reply.closing(), now);
                    return;
                }
                Parsed::Request(request) => request,
            };
            conn.request_since = (!conn.input.is_empty()).then_some(now);
            let what = format!("{} {}", request.method, request.target);
            let key = api_path_key(&request.target);
            let close = request.close;
            let dispatched = routes::route(&request.method, &request.target).and_then(|route| {
                routes::dispatch(&route, &request.body).map(|dispatch| (route, dispatch))
            });
            let reply = match dispatched {
                Err(reply) | Ok((_, Dispatch::Answer(reply))) => reply,
                Ok((route, Dispatch::Vmm(request))) => match self.forward(request) {
                    Ok(answer) => {
                        self.connections[index].state = ConnState::Waiting(Pending {
                            route,
                            what,
                            key,
                            answer,
                            close,
                            since: now,
                        });
                        continue;
                    }
                    Err(reply) => reply,
                },
            };
            self.finish(index, &what, key, reply, close, now);
        }
    }

    /// Hands a request to the VMM thread; its answer arrives on the receiver.
    fn forward(&self, request: ApiRequest) -> Result<Receiver<ApiResponse>, Reply> {
        let (tx, answer) = mpsc::channel();
        let message = ApiMessage {
            request,
            reply: Responder::new(tx, Some(Arc::clone(&self.shared.answered))),
        };
        if self.shared.to_vmm.send(message).is_err() {
            return Err(Reply::fault(
                503,
                "The VMM thread has stopped: cabin is exiting",
            ));
        }
        if let Err(e) = self.shared.wake.write(1) {
            log::error!("Cannot wake the VMM thread for an API request: {e}");
        }
        Ok(answer)
    }

    /// Logs, counts and sends the answer to one request.
    fn finish(
        &mut self,
        index: usize,
        what: &str,
        key: &'static str,
        reply: Reply,
        close: bool,
        now: Instant,
    ) {
        let failed = reply.status >= 400;
        metrics().api_request(key, failed);
        if failed {
            log::info!("API {what}: {} {}", reply.status, fault_text(&reply));
        } else {
            log::info!("API {what}: {}", reply.status);
        }
        let conn = &mut self.connections[index];
        let close = close || reply.close || conn.eof;
        let reply = if close { reply.closing() } else { reply };
        if !close {
            conn.state = ConnState::Reading;
        }
        conn.answer(&reply, now);
    }

    /// Turns the VMM thread's answers into replies.
    fn collect_answers(&mut self, now: Instant) {
        for index in 0..self.connections.len() {
            let ConnState::Waiting(pending) = &self.connections[index].state else {
                continue;
            };
            let reply = match pending.answer.try_recv() {
                Ok(response) => routes::to_reply(&pending.route, response),
                Err(TryRecvError::Empty) => continue,
                Err(TryRecvError::Disconnected) => {
                    Reply::fault(503, "The VMM thread dropped the request: cabin is exiting")
                }
            };
            let ConnState::Waiting(pending) =
                std::mem::replace(&mut self.connections[index].state, ConnState::Reading)
            else {
                continue;
            };
            self.finish(index, &pending.what, pending.key, reply, pending.close, now);
            self.start_requests(index, now);
        }
    }

    /// Ends what has waited too long: a request that does not arrive (408), an idle
    /// connection (closed), an answer the VMM thread does not give (503), a client
    /// that does not read its answers (closed).
    fn expire(&mut self, now: Instant) {
        let limits = self.shared.limits;
        for index in 0..self.connections.len() {
            let conn = &mut self.connections[index];
            if conn.done || conn.deadline(&limits) > now {
                continue;
            }
            if conn
                .writing_since
                .is_some_and(|since| since + limits.request_timeout <= now)
            {
                conn.done = true;
                continue;
            }
            match std::mem::replace(&mut conn.state, ConnState::Reading) {
                ConnState::Waiting(pending) => {
                    let message = format!(
                        "The VMM thread did not answer within {} s",
                        pending.reply_timeout(&limits).as_secs_f64()
                    );
                    let reply = Reply::fault(503, message);
                    self.finish(index, &pending.what, pending.key, reply, true, now);
                }
                ConnState::Reading if conn.request_since.is_some() => {
                    let reply = Reply::fault(408, "The request did not arrive in time");
                    conn.answer(&reply.closing(), now);
                }
                ConnState::Reading | ConnState::Closing => conn.done = true,
            }
        }
    }
}

/// Milliseconds from `now` to `deadline` for poll, rounded up, at least 0.
fn poll_timeout_ms(deadline: Instant, now: Instant) -> libc::c_int {
    let left = deadline.saturating_duration_since(now);
    let ms = left.as_micros().div_ceil(1000);
    libc::c_int::try_from(ms).unwrap_or(libc::c_int::MAX)
}

/// The `fault_message` of a reply, for the log.
fn fault_text(reply: &Reply) -> String {
    reply
        .body
        .as_deref()
        .and_then(|body| serde_json::from_str::<serde_json::Value>(body).ok())
        .and_then(|v| v["fault_message"].as_str().map(str::to_owned))
        .unwrap_or_default()
}
