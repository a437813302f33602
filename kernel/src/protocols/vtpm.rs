//! The vTPM protocol (protocol 2): the guest's TPM commands in one 4 KiB
//! buffer, little-endian, as Linux's `tpm_svsm` sends them.

use alloc::vec::Vec;

use super::{Guest, GuestRegisters, SvsmError, TpmBackend};

/// Call ids.
pub mod call {
    /// SVSM_VTPM_QUERY.
    pub const QUERY: u32 = 0;
    /// SVSM_VTPM_CMD.
    pub const CMD: u32 = 1;
}

/// MS-simulator platform command TPM_SEND_COMMAND.
pub const TPM_SEND_COMMAND: u32 = 8;
/// The request/response buffer size.
pub const BUFFER_SIZE: usize = 4096;
/// Request header: u32 command, u8 locality, u32 size.
const REQUEST_HEADER: usize = 9;
/// Response header: u32 size.
const RESPONSE_HEADER: usize = 4;

/// Handles one vTPM-protocol call.
pub fn handle(
    tpm: &mut dyn TpmBackend,
    guest: &mut dyn Guest,
    id: u32,
    regs: &mut GuestRegisters,
) -> Result<(), SvsmError> {
    match id {
        call::QUERY => {
            regs.rcx = 1 << TPM_SEND_COMMAND;
            regs.rdx = 0; // no features
            Ok(())
        }
        call::CMD => command(tpm, guest, regs.rcx),
        _ => Err(SvsmError::UNSUPPORTED_CALL),
    }
}

/// SVSM_VTPM_CMD: copy the page once, validate the copy, run, answer.
fn command(tpm: &mut dyn TpmBackend, guest: &mut dyn Guest, gpa: u64) -> Result<(), SvsmError> {
    if gpa == 0 || !guest.is_guest_memory(gpa, BUFFER_SIZE as u64) {
        return Err(SvsmError::INVALID_ADDRESS);
    }
    let mut buffer = alloc::vec![0u8; BUFFER_SIZE];
    guest.read(gpa, &mut buffer)?;
    let response = run(tpm, &buffer)?;
    let mut out = Vec::with_capacity(RESPONSE_HEADER + response.len());
    out.extend_from_slice(&(response.len() as u32).to_le_bytes());
    out.extend_from_slice(&response);
    guest.write(gpa, &out)
}

/// Parses a request (already in SVSM memory) and runs it.
pub fn run(tpm: &mut dyn TpmBackend, request: &[u8]) -> Result<Vec<u8>, SvsmError> {
    let header = request
        .get(..REQUEST_HEADER)
        .ok_or(SvsmError::INVALID_PARAMETER)?;
    let command = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
    let locality = header[4];
    let size = u32::from_le_bytes(header[5..9].try_into().expect("4 bytes")) as usize;
    if command != TPM_SEND_COMMAND || locality != 0 {
        return Err(SvsmError::INVALID_PARAMETER);
    }
    let body = request
        .get(REQUEST_HEADER..)
        .and_then(|b| b.get(..size))
        .filter(|_| size <= BUFFER_SIZE - REQUEST_HEADER)
        .ok_or(SvsmError::INVALID_PARAMETER)?;
    let response = tpm.execute(locality, body);
    if response.len() > BUFFER_SIZE - RESPONSE_HEADER {
        // Never hand back a truncated response.
        return Err(SvsmError::INVALID_REQUEST);
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::super::fake::*;
    use super::super::{Svsm, protocol, result};
    use super::*;

    fn vtpm_call(s: &mut Svsm<EchoTpm>, g: &mut FakeGuest, id: u32, rcx: u64) -> GuestRegisters {
        let mut regs = GuestRegisters {
            rax: (u64::from(protocol::VTPM) << 32) | u64::from(id),
            rcx,
            ..Default::default()
        };
        s.handle(g, &mut regs);
        regs
    }

    fn request(cmd: u32, locality: u8, size: u32, body: &[u8]) -> Vec<u8> {
        let mut r = Vec::new();
        r.extend(cmd.to_le_bytes());
        r.push(locality);
        r.extend(size.to_le_bytes());
        r.extend_from_slice(body);
        r
    }

    #[test]
    fn query_reports_send_command() {
        let mut s = Svsm::new(BASE, Some(EchoTpm));
        let mut g = FakeGuest::new();
        let r = vtpm_call(&mut s, &mut g, call::QUERY, 0);
        assert_eq!((r.rax, r.rcx, r.rdx), (result::SUCCESS, 1 << 8, 0));
        assert_eq!(
            vtpm_call(&mut s, &mut g, 7, 0).rax,
            result::UNSUPPORTED_CALL
        );
    }

    #[test]
    fn command_round_trip_and_bad_requests() {
        let mut s = Svsm::new(BASE, Some(EchoTpm));
        let mut g = FakeGuest::new();
        let page = BASE + 0x4000;
        g.write(page, &request(8, 0, 3, b"abc")).unwrap();
        assert_eq!(
            vtpm_call(&mut s, &mut g, call::CMD, page).rax,
            result::SUCCESS
        );
        let mut out = [0u8; 9];
        g.read(page, &mut out).unwrap();
        assert_eq!(&out, b"\x05\0\0\0\xEE\0abc");

        // Not page aligned is fine if the whole buffer is guest memory.
        g.write(page + 12, &request(8, 0, 1, b"z")).unwrap();
        assert_eq!(
            vtpm_call(&mut s, &mut g, call::CMD, page + 12).rax,
            result::SUCCESS
        );

        for (req, want, why) in [
            (
                request(9, 0, 3, b"abc"),
                result::INVALID_PARAMETER,
                "unknown platform command",
            ),
            (
                request(8, 1, 3, b"abc"),
                result::INVALID_PARAMETER,
                "locality",
            ),
            (
                request(8, 0, 4096, b"abc"),
                result::INVALID_PARAMETER,
                "size beyond the buffer",
            ),
            (
                request(8, 0, 0xFFFF_FFFF, b"abc"),
                result::INVALID_PARAMETER,
                "lying size",
            ),
        ] {
            g.write(page, &req).unwrap();
            assert_eq!(
                vtpm_call(&mut s, &mut g, call::CMD, page).rax,
                want,
                "{why}"
            );
        }
        assert_eq!(
            vtpm_call(&mut s, &mut g, call::CMD, SVSM).rax,
            result::INVALID_ADDRESS
        );
        assert_eq!(
            vtpm_call(&mut s, &mut g, call::CMD, BASE + SIZE - 100).rax,
            result::INVALID_ADDRESS
        );
        assert_eq!(
            vtpm_call(&mut s, &mut g, call::CMD, 0).rax,
            result::INVALID_ADDRESS
        );
    }

    struct Huge;
    impl TpmBackend for Huge {
        fn execute(&mut self, _: u8, _: &[u8]) -> Vec<u8> {
            alloc::vec![0; 5000]
        }
    }

    #[test]
    fn oversized_response_is_refused_not_truncated() {
        assert_eq!(
            run(&mut Huge, &request(8, 0, 0, b"")),
            Err(SvsmError::INVALID_REQUEST)
        );
    }
}
