//! Rivet: a memory-safe SVSM kernel hosting a TPM 2.0.
//!
//! The kernel is built for `x86_64-unknown-none` and booted by a hypervisor
//! (today: QEMU through the PVH entry). The parts that are plain logic (boot
//! information parsing, the frame allocator) also build on the host, where
//! their unit tests run.
#![cfg_attr(not(test), no_std)]

extern crate alloc;

pub mod boot;
pub mod bytes;
pub mod certs;
#[cfg(target_os = "none")]
pub mod console;
#[cfg(target_os = "none")]
pub mod cpu;
#[cfg(all(target_os = "none", feature = "ktest"))]
pub mod ktest;
pub mod mm;
pub mod platform;
pub mod protocols;
#[cfg(target_os = "none")]
pub mod requests;
#[cfg(target_os = "none")]
pub mod vtpm;

/// Prints a fatal error and ends the VM with the failure code.
#[cfg(target_os = "none")]
#[macro_export]
macro_rules! fatal {
    ($($arg:tt)*) => {{
        $crate::console::enter_fatal();
        $crate::println!("FATAL: {}", format_args!($($arg)*));
        $crate::fatal_exit()
    }};
}

/// Ends the VM with the failure code, through the platform if one is
/// installed.
#[cfg(target_os = "none")]
pub fn fatal_exit() -> ! {
    match (platform::current(), platform::early_exit()) {
        (Some(p), _) => p.terminate(platform::ExitStatus::Failure),
        (None, Some(exit)) => exit(platform::ExitStatus::Failure),
        (None, None) => platform::native::debug_exit(platform::ExitStatus::Failure),
    }
}

#[cfg(all(target_os = "none", not(test)))]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    console::enter_fatal();
    println!("FATAL: kernel panic: {info}");
    fatal_exit()
}
