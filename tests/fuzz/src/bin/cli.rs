//! AFL++ entry point of the `cli` target (see [`cabin_fuzz::TARGETS`]).

fn main() {
    afl::fuzz!(|data: &[u8]| cabin_fuzz::cli(data));
}
