#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bascule_api::fuzzing::frame_decoder(data));
