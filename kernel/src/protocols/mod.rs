//! The SVSM protocols (SVSM specification #58019): the call convention, the
//! result codes, and one file per protocol. Everything here is the same on
//! every platform: it sees the guest only through [`Guest`] and the vTPM
//! only through [`TpmBackend`], and is tested on the host with fakes.

pub mod attest;
pub mod core_protocol;
pub mod vtpm;

use alloc::boxed::Box;
use alloc::vec::Vec;

use crate::platform::GuestRegisters;

/// Protocol numbers.
pub mod protocol {
    /// Core protocol.
    pub const CORE: u32 = 0;
    /// Attestation protocol.
    pub const ATTEST: u32 = 1;
    /// vTPM protocol.
    pub const VTPM: u32 = 2;
}

/// Result codes returned in RAX.
pub mod result {
    /// Success.
    pub const SUCCESS: u64 = 0;
    /// The call is incomplete; call again.
    pub const INCOMPLETE: u64 = 0x8000_0000;
    /// Unknown protocol.
    pub const UNSUPPORTED_PROTOCOL: u64 = 0x8000_0001;
    /// Unknown call in a known protocol.
    pub const UNSUPPORTED_CALL: u64 = 0x8000_0002;
    /// An address is not valid for the call.
    pub const INVALID_ADDRESS: u64 = 0x8000_0003;
    /// A structure has an invalid format.
    pub const INVALID_FORMAT: u64 = 0x8000_0004;
    /// A parameter is invalid.
    pub const INVALID_PARAMETER: u64 = 0x8000_0005;
    /// The request is invalid in the current state.
    pub const INVALID_REQUEST: u64 = 0x8000_0006;
    /// Busy.
    pub const BUSY: u64 = 0x8000_0007;
    /// PVALIDATE: the hardware refused the input.
    pub const PVALIDATE_FAIL_INPUT: u64 = 0x8000_1001;
    /// PVALIDATE: page size does not match the RMP.
    pub const PVALIDATE_FAIL_SIZEMISMATCH: u64 = 0x8000_1006;
    /// PVALIDATE: the validated state did not change.
    pub const PVALIDATE_FAIL_UNCHANGED: u64 = 0x8000_1010;
}

/// A call's failure: the result code for RAX.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SvsmError(pub u64);

impl SvsmError {
    /// INVALID_ADDRESS.
    pub const INVALID_ADDRESS: Self = Self(result::INVALID_ADDRESS);
    /// INVALID_PARAMETER.
    pub const INVALID_PARAMETER: Self = Self(result::INVALID_PARAMETER);
    /// INVALID_REQUEST.
    pub const INVALID_REQUEST: Self = Self(result::INVALID_REQUEST);
    /// UNSUPPORTED_CALL.
    pub const UNSUPPORTED_CALL: Self = Self(result::UNSUPPORTED_CALL);
    /// UNSUPPORTED_PROTOCOL.
    pub const UNSUPPORTED_PROTOCOL: Self = Self(result::UNSUPPORTED_PROTOCOL);
}

/// What the protocols may do to the guest. Every access is checked against
/// guest memory by the implementation; a refused one is an error, never a
/// fault.
pub trait Guest {
    /// Whether `[gpa, gpa + len)` is guest memory the guest may name (not
    /// SVSM memory, not beyond the guest's memory).
    fn is_guest_memory(&self, gpa: u64, len: u64) -> bool;

    /// Copies guest memory into SVSM memory.
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), SvsmError>;

    /// Copies SVSM memory into guest memory.
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), SvsmError>;

    /// Validates (`valid`) or invalidates one page of guest memory for the
    /// guest (PVALIDATE on SNP). `huge` selects 2 MiB.
    fn pvalidate(
        &mut self,
        gpa: u64,
        huge: bool,
        valid: bool,
        ignore_cf: bool,
    ) -> Result<(), SvsmError>;

    /// CREATE_VCPU after the address checks: the platform checks the VMSA
    /// the guest handed over and starts the vCPU. Platforms that run one
    /// vCPU refuse.
    fn create_vcpu(&mut self, vmsa: u64, caa: u64, apic_id: u32) -> Result<(), SvsmError> {
        let _ = (vmsa, caa, apic_id);
        Err(SvsmError::UNSUPPORTED_CALL)
    }

    /// DELETE_VCPU after the address checks: the platform stops the vCPU
    /// whose VMSA this is. Platforms that created none refuse.
    fn delete_vcpu(&mut self, vmsa: u64) -> Result<(), SvsmError> {
        let _ = vmsa;
        Err(SvsmError::INVALID_PARAMETER)
    }
}

/// The vTPM the protocol drives.
pub trait TpmBackend {
    /// Runs one TPM command at `locality` and returns the response.
    fn execute(&mut self, locality: u8, command: &[u8]) -> Vec<u8>;

    /// The vTPM service's attestation manifest of `version` (version 0: the
    /// EK's TPMT_PUBLIC), or None if this TPM cannot give it.
    fn service_manifest(&mut self, version: u32) -> Option<Vec<u8>> {
        let _ = version;
        None
    }
}

/// The SVSM's per-guest protocol state.
pub struct Svsm<T: TpmBackend> {
    /// The boot vCPU's Calling Area (a GPA).
    pub caa: u64,
    /// The vTPM, if this SVSM has one.
    pub tpm: Option<T>,
    /// The attestation report provider, if the platform has one.
    pub attest: Option<Box<dyn attest::ReportProvider>>,
}

/// One call, decoded from the registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Call {
    /// Protocol (RAX bits 63:32).
    pub protocol: u32,
    /// Call id (RAX bits 31:0).
    pub id: u32,
}

impl Call {
    /// Decodes RAX.
    pub fn from_rax(rax: u64) -> Self {
        Self {
            protocol: (rax >> 32) as u32,
            id: rax as u32,
        }
    }
}

impl<T: TpmBackend> Svsm<T> {
    /// A fresh SVSM state for a guest whose Calling Area is at `caa`.
    pub fn new(caa: u64, tpm: Option<T>) -> Self {
        Self {
            caa,
            tpm,
            attest: None,
        }
    }

    /// Handles one call: the guest's registers in, its registers out (RAX =
    /// the result code, other registers as the call defines).
    pub fn handle(&mut self, guest: &mut dyn Guest, regs: &mut GuestRegisters) {
        let call = Call::from_rax(regs.rax);
        let outcome = match call.protocol {
            protocol::CORE => core_protocol::handle(self, guest, call.id, regs),
            protocol::ATTEST => match self.attest.as_mut() {
                Some(provider) => attest::handle(
                    provider.as_mut(),
                    self.tpm.as_mut().map(|t| t as &mut dyn TpmBackend),
                    guest,
                    call.id,
                    regs,
                ),
                None => Err(SvsmError::UNSUPPORTED_PROTOCOL),
            },
            protocol::VTPM => match self.tpm.as_mut() {
                Some(tpm) => vtpm::handle(tpm, guest, call.id, regs),
                None => Err(SvsmError::UNSUPPORTED_PROTOCOL),
            },
            _ => Err(SvsmError::UNSUPPORTED_PROTOCOL),
        };
        regs.rax = match outcome {
            Ok(()) => result::SUCCESS,
            Err(SvsmError(code)) => code,
        };
    }

    /// The versions of `protocol` this SVSM serves, (min, max).
    pub fn protocol_versions(&self, protocol: u32) -> Option<(u32, u32)> {
        match protocol {
            protocol::CORE => Some((1, 1)),
            protocol::ATTEST if self.attest.is_some() => Some((1, 1)),
            protocol::VTPM if self.tpm.is_some() => Some((1, 1)),
            _ => None,
        }
    }
}

/// What the request loop does with a guest that exited to the SVSM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallArea {
    /// call_pending was set (and is now clear): handle the call.
    Pending,
    /// call_pending was clear: not a call; resume the guest unchanged.
    NotPending,
}

/// Checks and clears call_pending in the Calling Area at `caa`. A Calling
/// Area the SVSM cannot read or write counts as no call.
pub fn take_pending_call(guest: &mut dyn Guest, caa: u64) -> CallArea {
    let mut pending = [0u8; 1];
    if guest.read(caa, &mut pending).is_err() || pending[0] & 1 == 0 {
        return CallArea::NotPending;
    }
    if guest.write(caa, &[0]).is_err() {
        return CallArea::NotPending;
    }
    CallArea::Pending
}

#[cfg(test)]
pub(crate) mod fake {
    //! A guest made of a byte vector, for the protocol tests.
    use super::*;
    use std::vec;

    pub const BASE: u64 = 0x20_0000;
    pub const SIZE: u64 = 0x40_0000;
    /// SVSM memory the guest must not name.
    pub const SVSM: u64 = 0x8_0000;

    pub struct FakeGuest {
        pub mem: std::cell::RefCell<Vec<u8>>,
        pub validated: Vec<(u64, bool, bool)>,
        /// Every read (gpa, len), in order.
        pub reads: std::cell::RefCell<Vec<(u64, usize)>>,
        /// Simulates another vCPU: every byte read is inverted right after.
        pub hostile: bool,
    }

    impl FakeGuest {
        pub fn new() -> Self {
            Self {
                mem: std::cell::RefCell::new(vec![0; SIZE as usize]),
                validated: Vec::new(),
                reads: std::cell::RefCell::new(Vec::new()),
                hostile: false,
            }
        }

        /// Whether some guest byte was read twice since the last clear.
        pub fn read_twice(&self) -> bool {
            let reads = self.reads.borrow();
            reads.iter().enumerate().any(|(i, a)| {
                reads[..i]
                    .iter()
                    .any(|b| a.0 < b.0 + b.1 as u64 && b.0 < a.0 + a.1 as u64)
            })
        }
    }

    impl Guest for FakeGuest {
        fn is_guest_memory(&self, gpa: u64, len: u64) -> bool {
            gpa >= BASE && gpa.checked_add(len).is_some_and(|e| e <= BASE + SIZE)
        }
        fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), SvsmError> {
            if !self.is_guest_memory(gpa, buf.len() as u64) {
                return Err(SvsmError::INVALID_ADDRESS);
            }
            let o = (gpa - BASE) as usize;
            let mut mem = self.mem.borrow_mut();
            buf.copy_from_slice(&mem[o..o + buf.len()]);
            self.reads.borrow_mut().push((gpa, buf.len()));
            if self.hostile {
                // The other vCPU changes what was just read.
                mem[o..o + buf.len()].iter_mut().for_each(|b| *b ^= 0xFF);
            }
            Ok(())
        }
        fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), SvsmError> {
            if !self.is_guest_memory(gpa, data.len() as u64) {
                return Err(SvsmError::INVALID_ADDRESS);
            }
            let o = (gpa - BASE) as usize;
            self.mem.borrow_mut()[o..o + data.len()].copy_from_slice(data);
            Ok(())
        }
        fn pvalidate(
            &mut self,
            gpa: u64,
            huge: bool,
            valid: bool,
            _ignore_cf: bool,
        ) -> Result<(), SvsmError> {
            self.validated.push((gpa, huge, valid));
            Ok(())
        }
    }

    /// Echoes the command back with a marker.
    pub struct EchoTpm;

    impl TpmBackend for EchoTpm {
        fn execute(&mut self, locality: u8, command: &[u8]) -> Vec<u8> {
            let mut r = vec![0xEE, locality];
            r.extend_from_slice(command);
            r
        }
        fn service_manifest(&mut self, version: u32) -> Option<Vec<u8>> {
            (version == 0).then(|| b"EK TPMT_PUBLIC".to_vec())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::*;
    use super::*;

    #[test]
    fn unknown_protocol_is_unsupported() {
        let mut svsm = Svsm::new(BASE, Some(EchoTpm));
        let mut g = FakeGuest::new();
        let mut regs = GuestRegisters {
            rax: (9 << 32) | 1,
            ..Default::default()
        };
        svsm.handle(&mut g, &mut regs);
        assert_eq!(regs.rax, result::UNSUPPORTED_PROTOCOL);
        let mut no_tpm: Svsm<EchoTpm> = Svsm::new(BASE, None);
        regs.rax = u64::from(protocol::VTPM) << 32;
        no_tpm.handle(&mut g, &mut regs);
        assert_eq!(regs.rax, result::UNSUPPORTED_PROTOCOL);
    }

    /// Every guest structure is copied into SVSM memory once and then used
    /// from the copy: with another vCPU inverting each byte as soon as it is
    /// read, the calls still behave as for the first snapshot.
    #[test]
    fn guest_memory_is_read_once_per_call() {
        let mut s = Svsm::new(BASE, Some(EchoTpm));
        let mut g = FakeGuest::new();
        // vTPM command: the echo must be of the command as first read.
        let page = BASE + 0x4000;
        let mut req = vec![8, 0, 0, 0, 0, 3, 0, 0, 0];
        req.extend_from_slice(b"abc");
        g.write(page, &req).unwrap();
        g.hostile = true;
        let mut regs = GuestRegisters {
            rax: (u64::from(protocol::VTPM) << 32) | 1,
            rcx: page,
            ..Default::default()
        };
        s.handle(&mut g, &mut regs);
        assert_eq!(regs.rax, result::SUCCESS);
        assert!(!g.read_twice());
        g.hostile = false;
        let mut out = [0u8; 9];
        g.read(page, &mut out).unwrap();
        assert_eq!(&out, b"\x05\0\0\0\xEE\0abc");

        // PVALIDATE: header and entries once each.
        g.reads.borrow_mut().clear();
        let list = BASE + 0x6000;
        let mut r = vec![1, 0, 0, 0, 0, 0, 0, 0];
        r.extend_from_slice(&((BASE + 0x5000) | 4).to_le_bytes());
        g.write(list, &r).unwrap();
        g.hostile = true;
        regs = GuestRegisters {
            rax: 1,
            rcx: list,
            ..Default::default()
        };
        s.handle(&mut g, &mut regs);
        assert_eq!(regs.rax, result::SUCCESS);
        assert_eq!(g.validated, [(BASE + 0x5000, false, true)]);
        assert!(!g.read_twice());
    }

    #[test]
    fn call_pending_is_taken_once() {
        let mut g = FakeGuest::new();
        assert_eq!(take_pending_call(&mut g, BASE), CallArea::NotPending);
        g.write(BASE, &[1]).unwrap();
        assert_eq!(take_pending_call(&mut g, BASE), CallArea::Pending);
        assert_eq!(take_pending_call(&mut g, BASE), CallArea::NotPending);
        assert_eq!(take_pending_call(&mut g, SVSM), CallArea::NotPending);
    }
}
