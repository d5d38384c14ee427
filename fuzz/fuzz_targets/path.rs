//! Fuzz target `path`: `tinygate::http::oracle::check_path` (see there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tinygate_fuzz::http::oracle::check_path(data);
});
