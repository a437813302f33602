//! libFuzzer target: command sequences into `Tpm::execute`; see the crate
//! docs for the input format. Fails on a panic, a hang (libFuzzer's
//! -timeout), or a malformed response.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rivet_tpm_fuzz::run(data));
