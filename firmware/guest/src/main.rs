//! Rivet's test guest firmware. The SVSM loads it as its guest (on the native
//! platform: a nested SVM guest) and starts it in long mode with RDI = the
//! SVSM information page. It calls every SVSM protocol call, good and bad,
//! runs a TPM session through the vTPM protocol, prints each result on the
//! serial port, and halts:
//!
//! ```text
//! guest: check <name> ... ok
//! guest: check <name> ... FAILED: <what>
//! guest: result: <passed> passed, <failed> failed
//! ```
#![cfg_attr(target_os = "none", no_std, no_main)]

pub mod tpm_cmd;

#[cfg(target_os = "none")]
mod checks;
#[cfg(target_os = "none")]
mod serial;
#[cfg(target_os = "none")]
mod svsm;

#[cfg(target_os = "none")]
core::arch::global_asm!(
    r#"
    .section .text.entry, "ax"
    .global _start
_start:
    and $-16, %rsp
    call guest_main
1:  hlt
    jmp 1b
"#,
    options(att_syntax)
);

#[cfg(target_os = "none")]
#[unsafe(no_mangle)]
extern "C" fn guest_main(info_page: u64) -> ! {
    checks::run(info_page);
    svsm::halt()
}

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    serial::print(format_args!("guest: panic: {info}\n"));
    svsm::halt()
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!(
        "rivet-firmware-guest runs as the SVSM's guest: build it with --target x86_64-unknown-none"
    );
    std::process::exit(2);
}
