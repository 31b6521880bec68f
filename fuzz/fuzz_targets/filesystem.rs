//! cargo-fuzz target: the input as a volume holding a filesystem (ext2/3/4, XFS or FAT).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| layerscope::fuzzing::filesystem(data));
