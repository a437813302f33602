//! The attestation protocol (protocol 1): a hardware report whose
//! REPORT_DATA is SHA-512(nonce ‖ manifest), the manifest listing the
//! services this SVSM attests (today the vTPM, whose manifest version 0 is
//! its EK's TPMT_PUBLIC), and the platform's certificates.
//!
//! Report lengths: on SNP (and native) every report is 0x4A0 bytes, so a
//! guest buffer shorter than that is refused before any report is made. A
//! TDX quote's length is known only once the host's quoting service made it
//! ([`ReportProvider::report_len`] is None): the protocol then makes the
//! report first and compares it with the guest's buffer. A report that was
//! made but not delivered (a buffer too small, an address that is not guest
//! memory) is handed back to the provider ([`ReportProvider::keep`]), which
//! keeps the last one ([`KeptReport`]) and gives it again to the next request
//! with the same REPORT_DATA: asking twice with the same nonce, once to learn
//! the length and once with a buffer that fits, costs one report. A delivered
//! report is not kept, so every successful call carries a report made for it
//! or for the failed call just before with the same nonce and manifest.

use alloc::vec::Vec;
use sha2::{Digest, Sha512};

use super::{Guest, GuestRegisters, SvsmError, TpmBackend};
use crate::bytes::{le_u16, le_u32, le_u64};

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
    /// A signed attestation report carrying `report_data` (for a provider
    /// that keeps reports, the one kept for the same REPORT_DATA, if any).
    fn report(&mut self, report_data: &[u8; 64]) -> Result<Vec<u8>, SvsmError>;
    /// `Some(n)`: every report this provider makes is `n` bytes. `None`: a
    /// report's length is known only once it is made (a TDX quote).
    fn report_len(&self) -> Option<usize>;
    /// The certificates a verifier needs for the report (may be empty).
    fn certificates(&self) -> &[u8];
    /// Takes back `report`, made for `report_data` by a variable-length
    /// provider but not delivered, for the next request with the same
    /// REPORT_DATA. By default it is dropped.
    fn keep(&mut self, report_data: &[u8; 64], report: Vec<u8>) {
        let _ = (report_data, report);
    }
}

/// The one report a variable-length [`ReportProvider`] keeps between calls:
/// the last one made and not delivered, with its REPORT_DATA.
#[derive(Debug, Default)]
pub struct KeptReport {
    kept: Option<([u8; 64], Vec<u8>)>,
}

impl KeptReport {
    /// Takes the kept report if it was made for `report_data`; a report
    /// kept for other REPORT_DATA is dropped either way.
    pub fn take(&mut self, report_data: &[u8; 64]) -> Option<Vec<u8>> {
        match self.kept.take() {
            Some((rd, report)) if rd == *report_data => Some(report),
            _ => None,
        }
    }

    /// Keeps `report` (made for `report_data`) in place of any other.
    pub fn keep(&mut self, report_data: &[u8; 64], report: Vec<u8>) {
        self.kept = Some((*report_data, report));
    }

    /// Whether a report is kept.
    pub fn is_empty(&self) -> bool {
        self.kept.is_none()
    }
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

/// `bytes` is at least the 0x40-byte request (the caller copied that much).
fn parse(bytes: &[u8]) -> Request {
    let u64_at = |o| le_u64(bytes, o);
    let u32_at = |o| le_u32(bytes, o);
    let u16_at = |o| le_u16(bytes, o);
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
    let rd = report_data(&nonce, &manifest);
    let certs_len = provider.certificates().len();
    // A fixed length is checked before any report is made; a variable one
    // only once the report exists.
    let (report_len, made) = match provider.report_len() {
        Some(n) => (n, None),
        None => {
            let report = provider.report(&rd)?;
            (report.len(), Some(report))
        }
    };

    // Tell the guest every length; refuse (with the lengths) if a buffer is short.
    regs.rcx = manifest.len() as u64;
    regs.rdx = certs_len as u64;
    regs.r8 = report_len as u64;
    let want_certs = !(req.certs.0 == 0 && req.certs.1 == 0);
    let refusal = if (req.manifest.1 as usize) < manifest.len()
        || (req.report.1 as usize) < report_len
        || (want_certs && (req.certs.1 as usize) < certs_len)
    {
        Some(SvsmError::INVALID_PARAMETER)
    } else if [(req.manifest.0, manifest.len()), (req.report.0, report_len)]
        .into_iter()
        .any(|(gpa, len)| !guest.is_guest_memory(gpa, len as u64))
        || (want_certs && !guest.is_guest_memory(req.certs.0, certs_len as u64))
    {
        Some(SvsmError::INVALID_ADDRESS)
    } else {
        None
    };
    if let Some(e) = refusal {
        if let Some(report) = made {
            provider.keep(&rd, report);
        }
        return Err(e);
    }

    let report = match made {
        Some(report) => report,
        None => provider.report(&rd)?,
    };
    if report.len() > report_len {
        // A fixed-length provider broke its promise: the buffer was checked
        // for `report_len` bytes only.
        return Err(SvsmError::INVALID_REQUEST);
    }
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
    use core::cell::Cell;
    use std::rc::Rc;
    use std::vec;

    /// A "report": the report data twice over, so the test can see it.
    struct EchoReport;
    impl ReportProvider for EchoReport {
        fn report(&mut self, rd: &[u8; 64]) -> Result<Vec<u8>, SvsmError> {
            Ok([rd.as_slice(), rd.as_slice()].concat())
        }
        fn report_len(&self) -> Option<usize> {
            Some(128)
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

    /// A variable-length "report" (a quote's stand-in): 100 + rd[0] bytes,
    /// counting how many it made, keeping one as the platform's does.
    struct QuoteLike {
        made: Rc<Cell<usize>>,
        kept: KeptReport,
        fail: Option<SvsmError>,
    }
    impl ReportProvider for QuoteLike {
        fn report(&mut self, rd: &[u8; 64]) -> Result<Vec<u8>, SvsmError> {
            if let Some(kept) = self.kept.take(rd) {
                return Ok(kept);
            }
            if let Some(e) = self.fail {
                return Err(e);
            }
            self.made.set(self.made.get() + 1);
            let mut r = vec![self.made.get() as u8; 100 + usize::from(rd[0])];
            r[..64].copy_from_slice(rd);
            Ok(r)
        }
        fn report_len(&self) -> Option<usize> {
            None
        }
        fn certificates(&self) -> &[u8] {
            b"CERTS"
        }
        fn keep(&mut self, rd: &[u8; 64], report: Vec<u8>) {
            self.kept.keep(rd, report);
        }
    }

    fn quote_svsm(fail: Option<SvsmError>) -> (Svsm<EchoTpm>, Rc<Cell<usize>>) {
        let made = Rc::new(Cell::new(0));
        let mut s = Svsm::new(BASE, Some(EchoTpm));
        s.attest = Some(alloc::boxed::Box::new(QuoteLike {
            made: made.clone(),
            kept: KeptReport::default(),
            fail,
        }));
        (s, made)
    }

    fn set_nonce(g: &mut FakeGuest, byte: u8) {
        g.write(NONCE, &[byte; 16]).unwrap();
    }

    #[test]
    fn variable_length_report_is_made_then_compared_and_kept_once() {
        let (mut s, made) = quote_svsm(None);
        let mut g = FakeGuest::new();
        let svc = Some((VTPM_SERVICE_GUID, 0));
        request(&mut g, (16, 4096, 4096), svc);
        let manifest = EchoTpm.service_manifest(0).unwrap();
        let rd = report_data(&[7u8; 16], &manifest);
        let want = 100 + usize::from(rd[0]);
        // Too small, asked three times: one report made, its length told.
        for _ in 0..3 {
            let r = attest(&mut s, &mut g, call::SINGLE_SERVICE, REQ);
            assert_eq!(r.rax, result::INVALID_PARAMETER);
            assert_eq!(
                (r.rcx, r.rdx, r.r8),
                (manifest.len() as u64, 5, want as u64)
            );
        }
        assert_eq!(made.get(), 1);
        // A short manifest buffer also tells the report length, no new report.
        request(&mut g, (4096, 1, 4096), svc);
        let r = attest(&mut s, &mut g, call::SINGLE_SERVICE, REQ);
        assert_eq!((r.rax, r.r8), (result::INVALID_PARAMETER, want as u64));
        assert_eq!(made.get(), 1);
        // A buffer that fits exactly: the kept report is delivered.
        request(&mut g, (want as u32, 4096, 4096), svc);
        let r = attest(&mut s, &mut g, call::SINGLE_SERVICE, REQ);
        assert_eq!((r.rax, r.r8), (result::SUCCESS, want as u64));
        assert_eq!(made.get(), 1);
        let mut got = vec![0u8; want];
        g.read(REPORT, &mut got).unwrap();
        assert_eq!(&got[..64], &rd);
        assert!(got[64..].iter().all(|&b| b == 1), "the first report made");
        // Delivered reports are not kept: the same request makes a new one.
        let r = attest(&mut s, &mut g, call::SINGLE_SERVICE, REQ);
        assert_eq!(r.rax, result::SUCCESS);
        assert_eq!(made.get(), 2);
        g.read(REPORT, &mut got).unwrap();
        assert!(got[64..].iter().all(|&b| b == 2));
    }

    #[test]
    fn kept_report_is_only_for_the_same_report_data() {
        let (mut s, made) = quote_svsm(None);
        let mut g = FakeGuest::new();
        let svc = Some((VTPM_SERVICE_GUID, 0));
        request(&mut g, (1, 4096, 4096), svc);
        assert_eq!(
            attest(&mut s, &mut g, call::SINGLE_SERVICE, REQ).rax,
            result::INVALID_PARAMETER
        );
        // Another nonce: another report, which replaces the kept one.
        set_nonce(&mut g, 8);
        assert_eq!(
            attest(&mut s, &mut g, call::SINGLE_SERVICE, REQ).rax,
            result::INVALID_PARAMETER
        );
        assert_eq!(made.get(), 2);
        request(&mut g, (4096, 4096, 4096), svc); // nonce 7 again
        assert_eq!(
            attest(&mut s, &mut g, call::SINGLE_SERVICE, REQ).rax,
            result::SUCCESS
        );
        assert_eq!(made.get(), 3, "the report for nonce 7 was not kept");
        // A report buffer outside guest memory: kept for the retry.
        request(&mut g, (4096, 4096, 4096), svc);
        g.write(REQ, &SVSM.to_le_bytes()).unwrap();
        assert_eq!(
            attest(&mut s, &mut g, call::SINGLE_SERVICE, REQ).rax,
            result::INVALID_ADDRESS
        );
        assert_eq!(made.get(), 4);
        request(&mut g, (4096, 4096, 4096), svc);
        assert_eq!(
            attest(&mut s, &mut g, call::SINGLE_SERVICE, REQ).rax,
            result::SUCCESS
        );
        assert_eq!(made.get(), 4);
    }

    #[test]
    fn variable_length_provider_errors_reach_the_guest() {
        let (mut s, made) = quote_svsm(Some(SvsmError(result::BUSY)));
        let mut g = FakeGuest::new();
        request(&mut g, (4096, 4096, 4096), Some((VTPM_SERVICE_GUID, 0)));
        let r = attest(&mut s, &mut g, call::SINGLE_SERVICE, REQ);
        assert_eq!(r.rax, result::BUSY);
        assert_eq!(made.get(), 0);
        let mut report = [0u8; 8];
        g.read(REPORT, &mut report).unwrap();
        assert_eq!(report, [0; 8], "nothing written");
    }

    /// A fixed-length provider that counts its reports.
    struct Counted(Rc<Cell<usize>>);
    impl ReportProvider for Counted {
        fn report(&mut self, rd: &[u8; 64]) -> Result<Vec<u8>, SvsmError> {
            self.0.set(self.0.get() + 1);
            Ok(rd.to_vec())
        }
        fn report_len(&self) -> Option<usize> {
            Some(64)
        }
        fn certificates(&self) -> &[u8] {
            b""
        }
    }

    #[test]
    fn fixed_length_short_buffers_make_no_report() {
        let made = Rc::new(Cell::new(0));
        let mut s = Svsm::new(BASE, Some(EchoTpm));
        s.attest = Some(alloc::boxed::Box::new(Counted(made.clone())));
        let mut g = FakeGuest::new();
        for _ in 0..3 {
            request(&mut g, (63, 4096, 4096), None);
            let r = attest(&mut s, &mut g, call::SERVICES, REQ);
            assert_eq!((r.rax, r.r8), (result::INVALID_PARAMETER, 64));
        }
        assert_eq!(made.get(), 0);
        request(&mut g, (64, 4096, 4096), None);
        assert_eq!(
            attest(&mut s, &mut g, call::SERVICES, REQ).rax,
            result::SUCCESS
        );
        assert_eq!(made.get(), 1);
    }

    #[test]
    fn kept_report_take_and_keep() {
        let mut k = KeptReport::default();
        assert!(k.is_empty());
        k.keep(&[1; 64], vec![1, 2, 3]);
        assert_eq!(k.take(&[2; 64]), None);
        assert!(k.is_empty(), "a miss drops the kept report");
        k.keep(&[1; 64], vec![1, 2, 3]);
        assert_eq!(k.take(&[1; 64]), Some(vec![1, 2, 3]));
        assert_eq!(k.take(&[1; 64]), None);
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
