#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    bascule_init::fuzzing::control_requests(data);
});
