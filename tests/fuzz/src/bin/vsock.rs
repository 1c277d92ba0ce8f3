//! AFL++ entry point of the `vsock` target (see [`cabin_fuzz::TARGETS`]).

fn main() {
    afl::fuzz!(|data: &[u8]| cabin_fuzz::vsock(data));
}
