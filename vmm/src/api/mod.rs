//! The lifecycle API: an HTTP server on a Unix socket that speaks Firecracker's API
//! for the parts cabin implements, and the messages it exchanges with the VMM thread.
//!
//! The API thread (`server`) parses and validates requests and turns each into an
//! [`ApiRequest`] sent to the VMM thread with a reply channel; the VMM thread answers
//! with an [`ApiResponse`]. Configuration requests are applied to a [`VmConfig`] by
//! the pure [`model::apply`]; lifecycle requests (start, pause, resume, Ctrl-Alt-Del)
//! are handled by the VMM thread, which owns the VM state machine ([`state`]).

pub mod client;
pub mod model;
pub mod server;
pub mod state;

use std::sync::mpsc::Sender;
use std::sync::Arc;

use vmm_sys_util::eventfd::EventFd;

pub use state::VmState;

use crate::config::VmConfig;

/// A request from the API thread to the VMM thread.
#[derive(Debug)]
pub enum ApiRequest {
    /// `GET /`: id, state, version.
    Describe,
    /// A configuration change (`PUT /machine-config`, `/boot-source`, `/drives/{id}`,
    /// `/network-interfaces/{id}`, `/logger`, `/metrics`, `/entropy`, `/serial`,
    /// `PATCH /machine-config`); only valid before the VM starts.
    Configure(model::ConfigChange),
    /// `GET /machine-config`, `GET /vm/config`: the current configuration.
    GetConfig,
    /// `PUT /actions {"action_type": "InstanceStart"}`.
    Start,
    /// `PUT /actions {"action_type": "SendCtrlAltDel"}`.
    CtrlAltDel,
    /// `PUT /actions {"action_type": "FlushMetrics"}`.
    FlushMetrics,
    /// `PUT /actions {"action_type": "Shutdown", "timeout_s": N}`: press the power
    /// button, stop the VM after `timeout` unless the guest powered off.
    Shutdown {
        /// How long the guest gets.
        timeout: std::time::Duration,
    },
    /// `PATCH /drives/{id}`, `PATCH /network-interfaces/{id}`: only on a running VM.
    Update(model::DeviceUpdate),
    /// `PATCH /vm {"state": "Paused"}`.
    Pause,
    /// `PATCH /vm {"state": "Resumed"}`.
    Resume,
    /// `PUT /snapshot/create`: only on a paused VM.
    CreateSnapshot(model::snapshot::SnapshotCreate),
    /// `PUT /snapshot/load`: only before the VM starts.
    LoadSnapshot(model::snapshot::LoadPlan),
}

/// The VMM thread's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiResponse {
    /// 204 No Content.
    Done,
    /// 200 with the instance description.
    Describe {
        /// Instance id.
        id: String,
        /// Current state.
        state: VmState,
    },
    /// 200 with the configuration.
    Config(Box<VmConfig>),
    /// 4xx/5xx with `{"fault_message": ...}`.
    Error {
        /// HTTP status.
        status: u16,
        /// What went wrong, naming the field or the state.
        message: String,
    },
}

/// A request with the channel its answer goes back on.
#[derive(Debug)]
pub struct ApiMessage {
    /// What the client asked.
    pub request: ApiRequest,
    /// Where the VMM thread sends the answer.
    pub reply: Responder,
}

/// The way back to the API thread: a channel for the answer, and the eventfd that
/// wakes the API thread's poll loop once the answer is there.
#[derive(Debug)]
pub struct Responder {
    tx: Sender<ApiResponse>,
    wake: Option<Arc<EventFd>>,
}

impl Responder {
    /// Answers go to `tx`; `wake`, when given, is written after each one.
    pub fn new(tx: Sender<ApiResponse>, wake: Option<Arc<EventFd>>) -> Responder {
        Responder { tx, wake }
    }

    /// Sends the answer and wakes the API thread. Gives the answer back when nobody
    /// waits for it any more (the client hung up or timed out).
    pub fn send(self, response: ApiResponse) -> Result<(), ApiResponse> {
        self.tx.send(response).map_err(|e| e.0)?;
        if let Some(wake) = &self.wake {
            if let Err(e) = wake.write(1) {
                log::error!("Cannot wake the API thread: {e}");
            }
        }
        Ok(())
    }
}
