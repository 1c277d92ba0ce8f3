//! cabin-agent: the guest side of `cabin exec` and `cabin cp`.
//!
//! The library holds the wire protocol both sides share ([`protocol`], re-exported
//! at the top) and the agent itself ([`agent`]); the `cabin-agent` binary only
//! calls [`agent::main`]. The agent lives in the library so that cabin's tests can
//! run exactly the code the binary runs without a guest (see `tests/agent.rs`).

pub mod agent;
pub mod protocol;

pub use protocol::*;
