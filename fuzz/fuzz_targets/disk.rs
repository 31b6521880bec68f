//! cargo-fuzz target: the input as a raw disk: partition tables, LVM and filesystems.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| layerscope::fuzzing::disk(data));
