//! AFL++ entry point of the `config` target (see [`cabin_fuzz::TARGETS`]).

fn main() {
    afl::fuzz!(|data: &[u8]| cabin_fuzz::config(data));
}
