//! Arbitrary bytes as a control-protocol request line: decoding must never panic, and
//! whatever decodes must encode back to an equal request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portd_rules::proto::{decode_request, Request};

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = decode_request(data) {
        let again = serde_json::to_vec(&req).expect("encode");
        let back: Request = serde_json::from_slice(&again).expect("re-decode");
        assert_eq!(back, req);
    }
});
