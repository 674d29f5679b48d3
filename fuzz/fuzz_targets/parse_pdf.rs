#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    supportrag_fuzz::parse_document(rag::types::Format::Pdf, data)
});
