//! The management socket's request decoder on arbitrary bytes (one or more frames).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tsem_process::mgmt::wire;

fuzz_target!(|data: &[u8]| {
    let mut reader = data;
    for _ in 0..8 {
        if wire::read_request(&mut reader).is_err() && reader.is_empty() {
            break;
        }
    }
    let _ = wire::Request::from_payload(data);
});
