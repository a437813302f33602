//! libFuzzer target: `Tpm::restore` on arbitrary bytes must refuse or
//! accept without panicking, and an accepted blob must run commands and
//! round-trip through `state()`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| rivet_tpm_fuzz::restore(data));
