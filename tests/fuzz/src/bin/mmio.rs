//! AFL++ entry point of the `mmio` target (see [`cabin_fuzz::TARGETS`]).

fn main() {
    afl::fuzz!(|data: &[u8]| cabin_fuzz::mmio(data));
}
