//! The attestation protocol (protocol 1): a hardware report whose
//! REPORT_DATA is SHA-512(nonce ‖ manifest), the manifest listing the
//! services this SVSM attests (today the vTPM, whose manifest version 0 is
//! its EK's TPMT_PUBLIC), and the platform's certificates.

use alloc::vec::Vec;
use sha2::{Digest, Sha512};

use super::{Guest, GuestRegisters, SvsmError, TpmBackend};

/// Call ids.
pub mod call {
    /// SVSM_ATTEST_SERVICES.
    pub const SERVICES: u32 = 0;
    /// SVSM_ATTEST_SINGLE_SERVICE.
    pub const SINGLE_SERVICE: u32 = 1;
}

/// A GUID in its byte (mixed-endian) form.
pub type Guid = [u8; 16];

/// Builds the byte form of a GUID from its textual fields.
pub const fn guid(a: u32, b: u16, c: u16, d: [u8; 8]) -> Guid {
    let a = a.to_le_bytes();
    let b = b.to_le_bytes();
    let c = c.to_le_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6],
        d[7],
    ]
}

/// The services manifest's GUID, 63849ebb-3d92-4670-a1ff-58f9c94b87bb.
pub const SERVICES_MANIFEST_GUID: Guid = guid(
    0x6384_9ebb,
    0x3d92,
    0x4670,
    [0xa1, 0xff, 0x58, 0xf9, 0xc9, 0x4b, 0x87, 0xbb],
);
/// The vTPM service's GUID, c476f1eb-0123-45a5-9641-b4e7dde5bfe3.
pub const VTPM_SERVICE_GUID: Guid = guid(
    0xc476_f1eb,
    0x0123,
    0x45a5,
    [0x96, 0x41, 0xb4, 0xe7, 0xdd, 0xe5, 0xbf, 0xe3],
);

/// Request sizes.
const SERVICES_REQUEST: usize = 0x40;
const SINGLE_SERVICE_REQUEST: usize = 0x54;
/// Largest nonce accepted (one page).
pub const MAX_NONCE: usize = 4096;

/// What the attestation protocol needs from the platform.
pub trait ReportProvider {
    /// A signed attestation report carrying `report_data`.
    fn report(&mut self, report_data: &[u8; 64]) -> Result<Vec<u8>, SvsmError>;
    /// Length of every report this provider makes.
    fn report_len(&self) -> usize;
    /// The certificates a verifier needs for the report (may be empty).
    fn certificates(&self) -> &[u8];
}

/// The guest's request, copied once into SVSM memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Request {
    report: (u64, u32),
    nonce: (u64, u16),
    manifest: (u64, u32),
    certs: (u64, u32),
    service: Option<(Guid, u32)>,
}

fn parse(bytes: &[u8]) -> Request {
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().expect("8 bytes"));
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().expect("4 bytes"));
    let u16_at = |o: usize| u16::from_le_bytes(bytes[o..o + 2].try_into().expect("2 bytes"));
    Request {
        report: (u64_at(0x00), u32_at(0x08)),
        nonce: (u64_at(0x10), u16_at(0x18)),
        manifest: (u64_at(0x20), u32_at(0x28)),
        certs: (u64_at(0x30), u32_at(0x38)),
        service: (bytes.len() >= SINGLE_SERVICE_REQUEST).then(|| {
            let mut g = [0u8; 16];
            g.copy_from_slice(&bytes[0x40..0x50]);
            (g, u32_at(0x50))
        }),
    }
}

/// The services manifest for `services` (GUID, data).
pub fn services_manifest(services: &[(Guid, Vec<u8>)]) -> Vec<u8> {
    let header = 16 + 4 + 4;
    let table = 24 * services.len();
    let total = header + table + services.iter().map(|s| s.1.len()).sum::<usize>();
    let mut m = Vec::with_capacity(total);
    m.extend_from_slice(&SERVICES_MANIFEST_GUID);
    m.extend_from_slice(&(total as u32).to_le_bytes());
    m.extend_from_slice(&(services.len() as u32).to_le_bytes());
    let mut offset = header + table;
    for (g, data) in services {
        m.extend_from_slice(g);
        m.extend_from_slice(&(offset as u32).to_le_bytes());
        m.extend_from_slice(&(data.len() as u32).to_le_bytes());
        offset += data.len();
    }
    for (_, data) in services {
        m.extend_from_slice(data);
    }
    m
}

/// REPORT_DATA for a nonce and a manifest.
pub fn report_data(nonce: &[u8], manifest: &[u8]) -> [u8; 64] {
    let mut h = Sha512::new();
    h.update(nonce);
    h.update(manifest);
    h.finalize().into()
}

/// Handles one attestation-protocol call.
pub fn handle(
    provider: &mut dyn ReportProvider,
    tpm: Option<&mut dyn TpmBackend>,
    guest: &mut dyn Guest,
    id: u32,
    regs: &mut GuestRegisters,
) -> Result<(), SvsmError> {
    let size = match id {
        call::SERVICES => SERVICES_REQUEST,
        call::SINGLE_SERVICE => SINGLE_SERVICE_REQUEST,
        _ => return Err(SvsmError::UNSUPPORTED_CALL),
    };
    if !guest.is_guest_memory(regs.rcx, size as u64) {
        return Err(SvsmError::INVALID_ADDRESS);
    }
    let mut raw = [0u8; SINGLE_SERVICE_REQUEST];
    guest.read(regs.rcx, &mut raw[..size])?;
    let req = parse(&raw[..size]);

    let nonce_len = usize::from(req.nonce.1);
    if nonce_len > MAX_NONCE {
        return Err(SvsmError::INVALID_PARAMETER);
    }
    let mut nonce = alloc::vec![0u8; nonce_len];
    if nonce_len > 0 {
        guest.read(req.nonce.0, &mut nonce)?;
    }

    let manifest = match (req.service, tpm) {
        (None, Some(tpm)) => {
            let services: Vec<(Guid, Vec<u8>)> = tpm
                .service_manifest(0)
                .map(|m| (VTPM_SERVICE_GUID, m))
                .into_iter()
                .collect();
            services_manifest(&services)
        }
        (None, None) => services_manifest(&[]),
        (Some((g, version)), Some(tpm)) if g == VTPM_SERVICE_GUID => tpm
            .service_manifest(version)
            .ok_or(SvsmError::INVALID_PARAMETER)?,
        (Some(_), _) => return Err(SvsmError::INVALID_PARAMETER),
    };
    let certs = provider.certificates();
    let report_len = provider.report_len();

    // Tell the guest every length; refuse (with the lengths) if a buffer is short.
    regs.rcx = manifest.len() as u64;
    regs.rdx = certs.len() as u64;
    regs.r8 = report_len as u64;
    let want_certs = !(req.certs.0 == 0 && req.certs.1 == 0);
    if (req.manifest.1 as usize) < manifest.len()
        || (req.report.1 as usize) < report_len
        || (want_certs && (req.certs.1 as usize) < certs.len())
    {
        return Err(SvsmError::INVALID_PARAMETER);
    }
    for (gpa, len) in [(req.manifest.0, manifest.len()), (req.report.0, report_len)] {
        if !guest.is_guest_memory(gpa, len as u64) {
            return Err(SvsmError::INVALID_ADDRESS);
        }
    }
    if want_certs && !guest.is_guest_memory(req.certs.0, certs.len() as u64) {
        return Err(SvsmError::INVALID_ADDRESS);
    }

    let report = provider.report(&report_data(&nonce, &manifest))?;
    let certs = provider.certificates();
    guest.write(req.manifest.0, &manifest)?;
    guest.write(req.report.0, &report)?;
    if want_certs {
        guest.write(req.certs.0, certs)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::fake::*;
    use super::super::{Svsm, protocol, result};
    use super::*;
    use std::vec;

    /// A "report": the report data twice over, so the test can see it.
    struct EchoReport;
    impl ReportProvider for EchoReport {
        fn report(&mut self, rd: &[u8; 64]) -> Result<Vec<u8>, SvsmError> {
            Ok([rd.as_slice(), rd.as_slice()].concat())
        }
        fn report_len(&self) -> usize {
            128
        }
        fn certificates(&self) -> &[u8] {
            b"CERTS"
        }
    }

    const REQ: u64 = BASE + 0x1000;
    const NONCE: u64 = BASE + 0x2000;
    const MANIFEST: u64 = BASE + 0x3000;
    const REPORT: u64 = BASE + 0x4000;
    const CERTS: u64 = BASE + 0x5000;

    fn request(g: &mut FakeGuest, sizes: (u32, u32, u32), service: Option<(Guid, u32)>) {
        let mut r = vec![0u8; 0x54];
        r[0..8].copy_from_slice(&REPORT.to_le_bytes());
        r[8..12].copy_from_slice(&sizes.0.to_le_bytes());
        r[0x10..0x18].copy_from_slice(&NONCE.to_le_bytes());
        r[0x18..0x1A].copy_from_slice(&16u16.to_le_bytes());
        r[0x20..0x28].copy_from_slice(&MANIFEST.to_le_bytes());
        r[0x28..0x2C].copy_from_slice(&sizes.1.to_le_bytes());
        r[0x30..0x38].copy_from_slice(&CERTS.to_le_bytes());
        r[0x38..0x3C].copy_from_slice(&sizes.2.to_le_bytes());
        if let Some((guid, ver)) = service {
            r[0x40..0x50].copy_from_slice(&guid);
            r[0x50..0x54].copy_from_slice(&ver.to_le_bytes());
        }
        g.write(REQ, &r).unwrap();
        g.write(NONCE, &[7u8; 16]).unwrap();
    }

    fn svsm() -> Svsm<EchoTpm> {
        let mut s = Svsm::new(BASE, Some(EchoTpm));
        s.attest = Some(alloc::boxed::Box::new(EchoReport));
        s
    }

    fn attest(s: &mut Svsm<EchoTpm>, g: &mut FakeGuest, id: u32, rcx: u64) -> GuestRegisters {
        let mut regs = GuestRegisters {
            rax: (u64::from(protocol::ATTEST) << 32) | u64::from(id),
            rcx,
            ..Default::default()
        };
        s.handle(g, &mut regs);
        regs
    }

    #[test]
    fn guids_have_the_spec_byte_order() {
        assert_eq!(SERVICES_MANIFEST_GUID[..4], [0xbb, 0x9e, 0x84, 0x63]);
        assert_eq!(
            VTPM_SERVICE_GUID[..8],
            [0xeb, 0xf1, 0x76, 0xc4, 0x23, 0x01, 0xa5, 0x45]
        );
        assert_eq!(
            VTPM_SERVICE_GUID[8..],
            [0x96, 0x41, 0xb4, 0xe7, 0xdd, 0xe5, 0xbf, 0xe3]
        );
    }

    #[test]
    fn services_manifest_layout() {
        let m = services_manifest(&[(VTPM_SERVICE_GUID, b"EKPUB".to_vec())]);
        assert_eq!(&m[..16], &SERVICES_MANIFEST_GUID);
        assert_eq!(
            u32::from_le_bytes(m[16..20].try_into().unwrap()) as usize,
            m.len()
        );
        assert_eq!(u32::from_le_bytes(m[20..24].try_into().unwrap()), 1);
        assert_eq!(&m[24..40], &VTPM_SERVICE_GUID);
        let off = u32::from_le_bytes(m[40..44].try_into().unwrap()) as usize;
        let len = u32::from_le_bytes(m[44..48].try_into().unwrap()) as usize;
        assert_eq!(&m[off..off + len], b"EKPUB");
    }

    #[test]
    fn single_service_binds_nonce_and_manifest() {
        let mut s = svsm();
        let mut g = FakeGuest::new();
        request(&mut g, (4096, 4096, 4096), Some((VTPM_SERVICE_GUID, 0)));
        let r = attest(&mut s, &mut g, call::SINGLE_SERVICE, REQ);
        assert_eq!(r.rax, result::SUCCESS);
        let manifest = EchoTpm.service_manifest(0).unwrap();
        assert_eq!((r.rcx, r.rdx, r.r8), (manifest.len() as u64, 5, 128));
        let mut got = vec![0u8; manifest.len()];
        g.read(MANIFEST, &mut got).unwrap();
        assert_eq!(got, manifest);
        let mut report = [0u8; 64];
        g.read(REPORT, &mut report).unwrap();
        assert_eq!(report, report_data(&[7u8; 16], &manifest));
        let mut certs = [0u8; 5];
        g.read(CERTS, &mut certs).unwrap();
        assert_eq!(&certs, b"CERTS");
    }

    #[test]
    fn services_lists_the_vtpm() {
        let mut s = svsm();
        let mut g = FakeGuest::new();
        request(&mut g, (4096, 4096, 4096), None);
        let r = attest(&mut s, &mut g, call::SERVICES, REQ);
        assert_eq!(r.rax, result::SUCCESS);
        let mut m = vec![0u8; r.rcx as usize];
        g.read(MANIFEST, &mut m).unwrap();
        assert_eq!(
            m,
            services_manifest(&[(VTPM_SERVICE_GUID, EchoTpm.service_manifest(0).unwrap())])
        );
    }

    #[test]
    fn short_buffers_get_the_lengths() {
        let mut s = svsm();
        let mut g = FakeGuest::new();
        for sizes in [(4096, 1, 4096), (10, 4096, 4096), (4096, 4096, 2)] {
            request(&mut g, sizes, Some((VTPM_SERVICE_GUID, 0)));
            let r = attest(&mut s, &mut g, call::SINGLE_SERVICE, REQ);
            assert_eq!(r.rax, result::INVALID_PARAMETER, "{sizes:?}");
            assert_eq!((r.rdx, r.r8), (5, 128));
            assert!(r.rcx > 0);
        }
    }

    #[test]
    fn bad_requests() {
        let mut s = svsm();
        let mut g = FakeGuest::new();
        request(&mut g, (4096, 4096, 4096), Some(([9; 16], 0)));
        assert_eq!(
            attest(&mut s, &mut g, call::SINGLE_SERVICE, REQ).rax,
            result::INVALID_PARAMETER
        );
        request(&mut g, (4096, 4096, 4096), Some((VTPM_SERVICE_GUID, 99)));
        assert_eq!(
            attest(&mut s, &mut g, call::SINGLE_SERVICE, REQ).rax,
            result::INVALID_PARAMETER
        );
        assert_eq!(
            attest(&mut s, &mut g, call::SERVICES, SVSM).rax,
            result::INVALID_ADDRESS
        );
        assert_eq!(attest(&mut s, &mut g, 5, REQ).rax, result::UNSUPPORTED_CALL);
        // A report buffer outside guest memory.
        request(&mut g, (4096, 4096, 4096), None);
        g.write(REQ, &SVSM.to_le_bytes()).unwrap();
        assert_eq!(
            attest(&mut s, &mut g, call::SERVICES, REQ).rax,
            result::INVALID_ADDRESS
        );
        let mut no_attest: Svsm<EchoTpm> = Svsm::new(BASE, Some(EchoTpm));
        assert_eq!(
            attest(&mut no_attest, &mut g, call::SERVICES, REQ).rax,
            result::UNSUPPORTED_PROTOCOL
        );
    }
}
