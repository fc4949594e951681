//! The peer-message decoder: every shape the cluster crate decodes from a peer or its store
//! (`cluster::fuzzing::peer_message`; the first byte picks the shape).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| cluster::fuzzing::peer_message(data));
