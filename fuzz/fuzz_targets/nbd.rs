//! cargo-fuzz target: the input as a hostile NBD server's whole side of a
//! session (handshake and replies), against the client.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| layerscope::fuzzing::nbd_server(data));
