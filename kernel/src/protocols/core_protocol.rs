//! The core protocol (protocol 0): query protocols, remap the Calling Area,
//! validate pages, and the vCPU/memory calls this platform answers.

use super::{Guest, GuestRegisters, Svsm, SvsmError, TpmBackend};

/// Call ids.
pub mod call {
    /// SVSM_CORE_REMAP_CA.
    pub const REMAP_CA: u32 = 0;
    /// SVSM_CORE_PVALIDATE.
    pub const PVALIDATE: u32 = 1;
    /// SVSM_CORE_CREATE_VCPU.
    pub const CREATE_VCPU: u32 = 2;
    /// SVSM_CORE_DELETE_VCPU.
    pub const DELETE_VCPU: u32 = 3;
    /// SVSM_CORE_DEPOSIT_MEM.
    pub const DEPOSIT_MEM: u32 = 4;
    /// SVSM_CORE_WITHDRAW_MEM.
    pub const WITHDRAW_MEM: u32 = 5;
    /// SVSM_CORE_QUERY_PROTOCOL.
    pub const QUERY_PROTOCOL: u32 = 6;
    /// SVSM_CORE_CONFIGURE_VTOM.
    pub const CONFIGURE_VTOM: u32 = 7;
}

const PAGE: u64 = 4096;
const HUGE_PAGE: u64 = 2 * 1024 * 1024;
/// PVALIDATE request header: u16 entries, u16 next, u32 reserved.
const PVALIDATE_HEADER: u64 = 8;

/// Handles one core-protocol call.
pub fn handle<T: TpmBackend>(
    svsm: &mut Svsm<T>,
    guest: &mut dyn Guest,
    id: u32,
    regs: &mut GuestRegisters,
) -> Result<(), SvsmError> {
    match id {
        call::REMAP_CA => remap_ca(svsm, guest, regs.rcx),
        call::PVALIDATE => pvalidate(guest, regs.rcx),
        call::CREATE_VCPU => create_vcpu(guest, regs),
        call::DELETE_VCPU => delete_vcpu(guest, regs),
        call::DEPOSIT_MEM | call::WITHDRAW_MEM => Err(SvsmError::UNSUPPORTED_CALL),
        call::QUERY_PROTOCOL => {
            let protocol = (regs.rcx >> 32) as u32;
            let version = regs.rcx as u32;
            regs.rcx = match svsm.protocol_versions(protocol) {
                Some((min, max)) if (min..=max).contains(&version) => {
                    (u64::from(max) << 32) | u64::from(min)
                }
                _ => 0,
            };
            Ok(())
        }
        call::CONFIGURE_VTOM => {
            // Query (bit 0): vTOM is not supported here, report 0; any attempt
            // to configure it is an invalid request.
            if regs.rcx & 1 == 1 {
                regs.rcx = 0;
                Ok(())
            } else {
                Err(SvsmError::INVALID_REQUEST)
            }
        }
        _ => Err(SvsmError::UNSUPPORTED_CALL),
    }
}

/// REMAP_CA: the Calling Area (8 bytes) moves to RCX; it is cleared first.
fn remap_ca<T: TpmBackend>(
    svsm: &mut Svsm<T>,
    guest: &mut dyn Guest,
    gpa: u64,
) -> Result<(), SvsmError> {
    if !gpa.is_multiple_of(8) || gpa / PAGE != (gpa + 7) / PAGE {
        return Err(SvsmError::INVALID_PARAMETER);
    }
    if !guest.is_guest_memory(gpa, 8) {
        return Err(SvsmError::INVALID_ADDRESS);
    }
    guest.write(gpa, &[0; 8])?;
    svsm.caa = gpa;
    Ok(())
}

/// PVALIDATE: the request is copied once (header and entries), validated,
/// then each entry from `next` on is carried out; `next` is written back.
fn pvalidate(guest: &mut dyn Guest, gpa: u64) -> Result<(), SvsmError> {
    if !gpa.is_multiple_of(8) || !guest.is_guest_memory(gpa, PVALIDATE_HEADER) {
        return Err(SvsmError::INVALID_PARAMETER);
    }
    let mut header = [0u8; PVALIDATE_HEADER as usize];
    guest.read(gpa, &mut header)?;
    let entries = u16::from_le_bytes([header[0], header[1]]);
    let next = u16::from_le_bytes([header[2], header[3]]);
    // The list must end in the page it starts in.
    let room = (PAGE - gpa % PAGE - PVALIDATE_HEADER) / 8;
    if entries == 0 || u64::from(entries) > room || next >= entries {
        return Err(SvsmError::INVALID_PARAMETER);
    }
    let mut raw = [0u8; 8 * 511];
    let list = &mut raw[..usize::from(entries) * 8];
    guest.read(gpa + PVALIDATE_HEADER, list)?;

    let mut done = next;
    let mut outcome = Ok(());
    for i in next..entries {
        let at = usize::from(i) * 8;
        let entry = u64::from_le_bytes(list[at..at + 8].try_into().expect("8 bytes"));
        match pvalidate_one(guest, entry) {
            Ok(()) => done = i + 1,
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
    }
    guest.write(gpa + 2, &done.to_le_bytes())?;
    outcome
}

fn pvalidate_one(guest: &mut dyn Guest, entry: u64) -> Result<(), SvsmError> {
    let size = match entry & 3 {
        0 => PAGE,
        1 => HUGE_PAGE,
        _ => return Err(SvsmError::INVALID_PARAMETER),
    };
    let valid = entry & 4 != 0;
    let ignore_cf = entry & 8 != 0;
    if entry & 0xFF0 != 0 {
        return Err(SvsmError::INVALID_PARAMETER);
    }
    let page = entry & !0xFFF;
    if !page.is_multiple_of(size) {
        return Err(SvsmError::INVALID_PARAMETER);
    }
    if !guest.is_guest_memory(page, size) {
        return Err(SvsmError::INVALID_ADDRESS);
    }
    guest.pvalidate(page, size == HUGE_PAGE, valid, ignore_cf)
}

/// CREATE_VCPU: RCX = VMSA, RDX = Calling Area, R8 = APIC id. The addresses
/// are checked as the specification asks, then the platform checks the VMSA
/// and starts the vCPU (native runs one vCPU and refuses).
fn create_vcpu(guest: &mut dyn Guest, regs: &GuestRegisters) -> Result<(), SvsmError> {
    let (vmsa, caa) = (regs.rcx, regs.rdx);
    for gpa in [vmsa, caa] {
        if gpa % PAGE != 0 || !guest.is_guest_memory(gpa, PAGE) {
            return Err(SvsmError::INVALID_ADDRESS);
        }
    }
    if vmsa == caa {
        return Err(SvsmError::INVALID_ADDRESS);
    }
    let apic_id = u32::try_from(regs.r8).map_err(|_| SvsmError::INVALID_PARAMETER)?;
    guest.create_vcpu(vmsa, caa, apic_id)
}

/// DELETE_VCPU: RCX = a VMSA created by CREATE_VCPU; the platform decides.
fn delete_vcpu(guest: &mut dyn Guest, regs: &GuestRegisters) -> Result<(), SvsmError> {
    if !regs.rcx.is_multiple_of(PAGE) || !guest.is_guest_memory(regs.rcx, PAGE) {
        return Err(SvsmError::INVALID_ADDRESS);
    }
    guest.delete_vcpu(regs.rcx)
}

#[cfg(test)]
mod tests {
    use super::super::fake::*;
    use super::super::{protocol, result};
    use super::*;

    fn call(svsm: &mut Svsm<EchoTpm>, g: &mut FakeGuest, id: u32, rcx: u64) -> GuestRegisters {
        let mut regs = GuestRegisters {
            rax: u64::from(id),
            rcx,
            ..Default::default()
        };
        svsm.handle(g, &mut regs);
        regs
    }

    #[test]
    fn query_protocol_reports_versions() {
        let mut s = Svsm::new(BASE, Some(EchoTpm));
        let mut g = FakeGuest::new();
        let r = call(
            &mut s,
            &mut g,
            call::QUERY_PROTOCOL,
            (u64::from(protocol::CORE) << 32) | 1,
        );
        assert_eq!((r.rax, r.rcx), (result::SUCCESS, (1 << 32) | 1));
        let r = call(
            &mut s,
            &mut g,
            call::QUERY_PROTOCOL,
            (u64::from(protocol::VTPM) << 32) | 1,
        );
        assert_eq!(r.rcx, (1 << 32) | 1);
        let r = call(
            &mut s,
            &mut g,
            call::QUERY_PROTOCOL,
            (u64::from(protocol::CORE) << 32) | 2,
        );
        assert_eq!((r.rax, r.rcx), (result::SUCCESS, 0));
        let r = call(&mut s, &mut g, call::QUERY_PROTOCOL, 77 << 32 | 1);
        assert_eq!((r.rax, r.rcx), (result::SUCCESS, 0));
    }

    #[test]
    fn remap_ca_checks_and_clears() {
        let mut s = Svsm::new(BASE, Some(EchoTpm));
        let mut g = FakeGuest::new();
        g.write(BASE + 0x2000, &[1, 1, 1, 1, 1, 1, 1, 1]).unwrap();
        assert_eq!(
            call(&mut s, &mut g, call::REMAP_CA, BASE + 0x2000).rax,
            result::SUCCESS
        );
        assert_eq!(s.caa, BASE + 0x2000);
        let mut b = [0u8; 8];
        g.read(BASE + 0x2000, &mut b).unwrap();
        assert_eq!(b, [0; 8]);
        assert_eq!(
            call(&mut s, &mut g, call::REMAP_CA, BASE + 0x2004).rax,
            result::INVALID_PARAMETER
        );
        assert_eq!(
            call(&mut s, &mut g, call::REMAP_CA, SVSM).rax,
            result::INVALID_ADDRESS
        );
        assert_eq!(
            call(&mut s, &mut g, call::REMAP_CA, BASE + SIZE).rax,
            result::INVALID_ADDRESS
        );
        assert_eq!(s.caa, BASE + 0x2000, "a refused remap keeps the old area");
    }

    fn pvalidate_request(g: &mut FakeGuest, at: u64, next: u16, entries: &[u64]) {
        let mut req = alloc::vec::Vec::new();
        req.extend((entries.len() as u16).to_le_bytes());
        req.extend(next.to_le_bytes());
        req.extend([0; 4]);
        for e in entries {
            req.extend(e.to_le_bytes());
        }
        g.write(at, &req).unwrap();
    }

    fn next_of(g: &FakeGuest, at: u64) -> u16 {
        let mut b = [0u8; 2];
        g.read(at + 2, &mut b).unwrap();
        u16::from_le_bytes(b)
    }

    #[test]
    fn pvalidate_runs_entries_and_stops_at_a_bad_one() {
        let mut s = Svsm::new(BASE, Some(EchoTpm));
        let mut g = FakeGuest::new();
        let req = BASE + 0x3000;
        let good4k = (BASE + 0x5000) | 4;
        let good2m = BASE | 1 | 4;
        let outside = SVSM | 4;
        pvalidate_request(&mut g, req, 0, &[good4k, good2m, outside, good4k]);
        assert_eq!(
            call(&mut s, &mut g, call::PVALIDATE, req).rax,
            result::INVALID_ADDRESS
        );
        assert_eq!(next_of(&g, req), 2, "next points at the failed entry");
        assert_eq!(
            g.validated,
            [(BASE + 0x5000, false, true), (BASE, true, true)]
        );

        for (bad, why) in [
            ((BASE + 0x1000) | 1, "2 MiB entry not 2 MiB aligned"),
            (BASE | 2, "page size 2"),
            (BASE | 0x10, "reserved bits"),
        ] {
            pvalidate_request(&mut g, req, 0, &[bad]);
            assert_eq!(
                call(&mut s, &mut g, call::PVALIDATE, req).rax,
                result::INVALID_PARAMETER,
                "{why}"
            );
        }
        pvalidate_request(&mut g, req, 1, &[good4k]);
        assert_eq!(
            call(&mut s, &mut g, call::PVALIDATE, req).rax,
            result::INVALID_PARAMETER,
            "next >= entries"
        );
        pvalidate_request(&mut g, req, 0, &[]);
        assert_eq!(
            call(&mut s, &mut g, call::PVALIDATE, req).rax,
            result::INVALID_PARAMETER,
            "no entries"
        );
        assert_eq!(
            call(&mut s, &mut g, call::PVALIDATE, req + 4).rax,
            result::INVALID_PARAMETER,
            "misaligned"
        );
        assert_eq!(
            call(&mut s, &mut g, call::PVALIDATE, SVSM).rax,
            result::INVALID_PARAMETER,
            "SVSM memory"
        );
        // A list that would run past its page.
        let near_end = BASE + 0x4000 - 16;
        pvalidate_request(&mut g, near_end, 0, &[good4k]);
        g.write(near_end, &2u16.to_le_bytes()).unwrap();
        assert_eq!(
            call(&mut s, &mut g, call::PVALIDATE, near_end).rax,
            result::INVALID_PARAMETER,
            "crosses a page"
        );
    }

    #[test]
    fn vcpu_memory_and_vtom_calls() {
        let mut s = Svsm::new(BASE, Some(EchoTpm));
        let mut g = FakeGuest::new();
        let mut regs = GuestRegisters {
            rax: u64::from(call::CREATE_VCPU),
            rcx: BASE + 0x1000,
            rdx: BASE + 0x2000,
            ..Default::default()
        };
        s.handle(&mut g, &mut regs);
        assert_eq!(regs.rax, result::UNSUPPORTED_CALL);
        regs = GuestRegisters {
            rax: u64::from(call::CREATE_VCPU),
            rcx: BASE + 0x1001,
            rdx: BASE + 0x2000,
            ..Default::default()
        };
        s.handle(&mut g, &mut regs);
        assert_eq!(regs.rax, result::INVALID_ADDRESS);
        regs = GuestRegisters {
            rax: u64::from(call::CREATE_VCPU),
            rcx: BASE + 0x1000,
            rdx: BASE + 0x1000,
            ..Default::default()
        };
        s.handle(&mut g, &mut regs);
        assert_eq!(regs.rax, result::INVALID_ADDRESS);
        assert_eq!(
            call(&mut s, &mut g, call::DELETE_VCPU, SVSM).rax,
            result::INVALID_ADDRESS
        );
        assert_eq!(
            call(&mut s, &mut g, call::DELETE_VCPU, BASE).rax,
            result::INVALID_PARAMETER
        );
        assert_eq!(
            call(&mut s, &mut g, call::DEPOSIT_MEM, BASE).rax,
            result::UNSUPPORTED_CALL
        );
        assert_eq!(
            call(&mut s, &mut g, call::WITHDRAW_MEM, BASE).rax,
            result::UNSUPPORTED_CALL
        );
        let r = call(&mut s, &mut g, call::CONFIGURE_VTOM, 1);
        assert_eq!((r.rax, r.rcx), (result::SUCCESS, 0));
        assert_eq!(
            call(&mut s, &mut g, call::CONFIGURE_VTOM, 0).rax,
            result::INVALID_REQUEST
        );
        assert_eq!(call(&mut s, &mut g, 99, 0).rax, result::UNSUPPORTED_CALL);
    }
}
