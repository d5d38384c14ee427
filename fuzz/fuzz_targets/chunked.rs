//! Fuzz target `chunked`: `tinygate::http::oracle::check_chunked` (see there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tinygate_fuzz::http::oracle::check_chunked(data);
});
