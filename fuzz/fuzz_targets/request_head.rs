//! Fuzz target `request_head`: `tinygate::http::oracle::check_request_head` (see there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tinygate_fuzz::http::oracle::check_request_head(data);
});
