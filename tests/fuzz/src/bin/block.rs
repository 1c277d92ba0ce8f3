//! AFL++ entry point of the `block` target (see [`cabin_fuzz::TARGETS`]).

fn main() {
    afl::fuzz!(|data: &[u8]| cabin_fuzz::block(data));
}
