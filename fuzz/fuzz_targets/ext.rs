//! cargo-fuzz target: the input as a volume holding ext2/3/4 only (see `filesystem` for all kinds).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| layerscope::fuzzing::ext(data));
