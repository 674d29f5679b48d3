#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| supportrag_fuzz::incoming_payload(data));
