//! AFL++ entry point of the `snapshot` target (see [`cabin_fuzz::TARGETS`]).

fn main() {
    afl::fuzz!(|data: &[u8]| cabin_fuzz::snapshot(data));
}
