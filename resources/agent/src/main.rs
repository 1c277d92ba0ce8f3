//! `cabin-agent`: run from a guest's init, it serves `cabin exec` and `cabin cp` on
//! AF_VSOCK port 10789. See the library for the protocol and the agent.

use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::from(cabin_agent::agent::main(std::env::args_os().skip(1)))
}
