//! The kernel image. Everything lives in the library; on the bare-metal
//! target the image's entry is `pvh_entry32` (see `boot::entry`).
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
use rivet_kernel as _;

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "rivet-kernel is a kernel image: build it with --target x86_64-unknown-none and boot it with qemu/run.sh"
    );
    std::process::exit(2);
}
