#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(broken) = handoff_core::testing::sse_raw(data) {
        panic!("{broken}");
    }
});
