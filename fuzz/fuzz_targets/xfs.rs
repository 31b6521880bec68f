//! cargo-fuzz target: the input as a volume holding XFS only (see `filesystem` for all kinds).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| layerscope::fuzzing::xfs(data));
