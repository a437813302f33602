//! The request loop: run the guest, and whenever it exits with an SVSM call
//! pending in its Calling Area, handle the call and resume it. The same loop
//! serves every platform; only `Platform::run_guest` differs.

use log::{error, info};

use alloc::boxed::Box;

use crate::platform::{
    ExitStatus, GuestExit, GuestRegisters, GuestSetup, Platform, PlatformReports,
};
use crate::protocols::{CallArea, Svsm, TpmBackend, take_pending_call};

/// Serves the guest until it halts (success) or fails (the VM ends).
pub fn run<T: TpmBackend>(platform: &'static dyn Platform, setup: GuestSetup, tpm: Option<T>) -> ! {
    let GuestSetup { caa, mut memory } = setup;
    let mut svsm = Svsm::new(caa, tpm);
    if platform.attestation_certificates().is_some() {
        svsm.attest = Some(Box::new(PlatformReports::new(platform)));
    }
    let mut regs = GuestRegisters::default();
    let (mut calls, mut ignored) = (0u64, 0u64);
    loop {
        match platform.run_guest(0, &mut regs) {
            Ok(GuestExit::SvsmCall) => match take_pending_call(memory.as_mut(), svsm.caa) {
                CallArea::Pending => {
                    svsm.handle(memory.as_mut(), &mut regs);
                    calls += 1;
                }
                CallArea::NotPending => ignored += 1,
            },
            Ok(GuestExit::Halt) => {
                info!(
                    "guest halted after {calls} SVSM calls ({ignored} exits without call_pending)"
                );
                platform.terminate(ExitStatus::Success);
            }
            Ok(GuestExit::Shutdown) => {
                error!("guest shut down (triple fault) after {calls} SVSM calls");
                platform.terminate(ExitStatus::Failure);
            }
            Ok(GuestExit::Unhandled { code, info }) => {
                error!(
                    "ending the guest: exit {code:#x} (info {info:#x}) the SVSM does not handle"
                );
                platform.terminate(ExitStatus::Failure);
            }
            Err(e) => {
                error!("cannot run the guest: {e}");
                platform.terminate(ExitStatus::Failure);
            }
        }
    }
}
