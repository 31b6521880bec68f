//! cargo-fuzz target: the input as an image file of any format, with its chain, volumes and filesystems.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| layerscope::fuzzing::image(data));
