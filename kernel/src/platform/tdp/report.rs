//! The TD report: TDG.MR.REPORT with a REPORTDATA the L1 chose, into an
//! L1-private 1024-byte-aligned buffer; the TDREPORT_STRUCT parsed (Intel
//! TDX Module ABI: REPORTMACSTRUCT at 0, TEE_TCB_INFO at 256, TDINFO at 512);
//! and a TD quote through TDG.VP.VMCALL<GetQuote> (TDX GHCI: the host's
//! quoting service has the TDREPORT checked and signed by the quoting
//! enclave). The host's answer is copied out of the shared buffer once and
//! checked to be a v4/v5 TDX quote of exactly that TDREPORT ([`check_quote`])
//! before anyone uses it; its signature is the verifier's to check.
//!
//! Only the L1 asks for reports: an L2 TDCALL for TDG.MR.REPORT is refused
//! by the run loop (`l2.rs`), and the L2 reaches reports only through the
//! SVSM attestation protocol, whose REPORTDATA is the SVSM's
//! SHA-512(nonce ‖ manifest).

use super::tdcall::{self, REPORTDATA_LEN, TDREPORT_LEN, TdxError, TdxModule};

/// Offsets in TDREPORT_STRUCT.
pub mod offset {
    /// REPORTMACSTRUCT.REPORTTYPE (type, subtype, version, reserved).
    pub const REPORT_TYPE: usize = 0;
    /// REPORTMACSTRUCT.CPUSVN (16).
    pub const CPUSVN: usize = 16;
    /// REPORTMACSTRUCT.TEE_TCB_INFO_HASH (48).
    pub const TEE_TCB_INFO_HASH: usize = 32;
    /// REPORTMACSTRUCT.TEE_INFO_HASH (48).
    pub const TEE_INFO_HASH: usize = 80;
    /// REPORTMACSTRUCT.REPORTDATA (64).
    pub const REPORT_DATA: usize = 128;
    /// REPORTMACSTRUCT.MAC (32).
    pub const MAC: usize = 224;
    /// TEE_TCB_INFO (239).
    pub const TEE_TCB_INFO: usize = 256;
    /// TDINFO.ATTRIBUTES (8).
    pub const ATTRIBUTES: usize = 512;
    /// TDINFO.XFAM (8).
    pub const XFAM: usize = 520;
    /// TDINFO.MRTD (48).
    pub const MRTD: usize = 528;
    /// TDINFO.MRCONFIGID (48).
    pub const MRCONFIGID: usize = 576;
    /// TDINFO.MROWNER (48).
    pub const MROWNER: usize = 624;
    /// TDINFO.MROWNERCONFIG (48).
    pub const MROWNERCONFIG: usize = 672;
    /// TDINFO.RTMR[0..4] (48 each).
    pub const RTMR0: usize = 720;
    /// TDINFO.SERVTD_HASH (48).
    pub const SERVTD_HASH: usize = 912;
}

/// REPORTTYPE.TYPE of a TDX report.
pub const REPORT_TYPE_TDX: u8 = 0x81;
/// TEE_TCB_INFO size.
pub const TEE_TCB_INFO_LEN: usize = 239;
/// A SHA-384 measurement.
pub type Measurement = [u8; 48];

/// A parsed TDREPORT_STRUCT (a copy; the raw bytes stay with the caller).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TdReport {
    /// REPORTTYPE.SUBTYPE.
    pub subtype: u8,
    /// REPORTTYPE.VERSION.
    pub version: u8,
    /// CPUSVN.
    pub cpusvn: [u8; 16],
    /// SHA-384 of TEE_TCB_INFO.
    pub tee_tcb_info_hash: Measurement,
    /// SHA-384 of TDINFO.
    pub tee_info_hash: Measurement,
    /// REPORTDATA.
    pub report_data: [u8; 64],
    /// The MAC over REPORTMACSTRUCT (checked only by the CPU and the QE).
    pub mac: [u8; 32],
    /// TEE_TCB_INFO, raw.
    pub tee_tcb_info: [u8; TEE_TCB_INFO_LEN],
    /// TD ATTRIBUTES.
    pub attributes: u64,
    /// XFAM.
    pub xfam: u64,
    /// MRTD: the build-time measurement.
    pub mrtd: Measurement,
    /// MRCONFIGID.
    pub mrconfigid: Measurement,
    /// MROWNER.
    pub mrowner: Measurement,
    /// MROWNERCONFIG.
    pub mrownerconfig: Measurement,
    /// RTMR0..3.
    pub rtmr: [Measurement; 4],
    /// SERVTD_HASH.
    pub servtd_hash: Measurement,
}

/// Why a report was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportError {
    /// Not exactly 1024 bytes.
    Length(usize),
    /// REPORTTYPE.TYPE is not 0x81 (TDX).
    NotTdx(u8),
    /// The report does not carry the REPORTDATA that was asked for.
    ReportDataMismatch,
    /// The module refused or the buffers were unusable.
    Tdx(TdxError),
    /// GetQuote: the host's answer is not a quote (what is wrong).
    Quote(&'static str),
    /// GetQuote: the host's status code.
    QuoteStatus(u64),
    /// GetQuote: the host has no quoting service (status QGS_UNAVAILABLE).
    NoQuotingService,
    /// GetQuote: the host has too many requests (RETRY) or did not answer
    /// in time (what); asking again later may work.
    QuoteBusy(&'static str),
}

impl From<TdxError> for ReportError {
    fn from(e: TdxError) -> Self {
        Self::Tdx(e)
    }
}

impl core::fmt::Display for ReportError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Length(n) => write!(f, "TDREPORT of {n} bytes, not 1024"),
            Self::NotTdx(t) => write!(f, "REPORTTYPE {t:#x} is not TDX (0x81)"),
            Self::ReportDataMismatch => write!(f, "TDREPORT carries another REPORTDATA"),
            Self::Tdx(e) => write!(f, "{e}"),
            Self::Quote(why) => write!(f, "GetQuote: {why}"),
            Self::QuoteStatus(s) => write!(f, "GetQuote status {s:#x}"),
            Self::NoQuotingService => {
                write!(
                    f,
                    "GetQuote: the host has no quoting service (QGS_UNAVAILABLE)"
                )
            }
            Self::QuoteBusy(why) => write!(f, "GetQuote: {why}"),
        }
    }
}

fn take<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[at..at + N]);
    out
}

impl TdReport {
    /// Parses a TDREPORT_STRUCT.
    pub fn parse(bytes: &[u8]) -> Result<Self, ReportError> {
        if bytes.len() != TDREPORT_LEN {
            return Err(ReportError::Length(bytes.len()));
        }
        if bytes[offset::REPORT_TYPE] != REPORT_TYPE_TDX {
            return Err(ReportError::NotTdx(bytes[offset::REPORT_TYPE]));
        }
        let mut rtmr = [[0u8; 48]; 4];
        for (i, r) in rtmr.iter_mut().enumerate() {
            *r = take(bytes, offset::RTMR0 + 48 * i);
        }
        Ok(Self {
            subtype: bytes[offset::REPORT_TYPE + 1],
            version: bytes[offset::REPORT_TYPE + 2],
            cpusvn: take(bytes, offset::CPUSVN),
            tee_tcb_info_hash: take(bytes, offset::TEE_TCB_INFO_HASH),
            tee_info_hash: take(bytes, offset::TEE_INFO_HASH),
            report_data: take(bytes, offset::REPORT_DATA),
            mac: take(bytes, offset::MAC),
            tee_tcb_info: take(bytes, offset::TEE_TCB_INFO),
            attributes: u64::from_le_bytes(take(bytes, offset::ATTRIBUTES)),
            xfam: u64::from_le_bytes(take(bytes, offset::XFAM)),
            mrtd: take(bytes, offset::MRTD),
            mrconfigid: take(bytes, offset::MRCONFIGID),
            mrowner: take(bytes, offset::MROWNER),
            mrownerconfig: take(bytes, offset::MROWNERCONFIG),
            rtmr,
            servtd_hash: take(bytes, offset::SERVTD_HASH),
        })
    }

    /// Whether the TD is debuggable (ATTRIBUTES.DEBUG, bit 0).
    pub fn debug(&self) -> bool {
        self.attributes & 1 != 0
    }
}

/// The L1-private page TDG.MR.REPORT works on: TDREPORT at offset 0
/// (1024-byte aligned), REPORTDATA at offset 1024 (64-byte aligned).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReportPage(pub u64);

impl ReportPage {
    /// A page-aligned L1 page.
    pub fn new(gpa: u64) -> Option<Self> {
        gpa.is_multiple_of(4096).then_some(Self(gpa))
    }

    fn report_gpa(self) -> u64 {
        self.0
    }

    fn reportdata_gpa(self) -> u64 {
        self.0 + TDREPORT_LEN as u64
    }
}

fn mem_err(e: tdcall::OutOfRange) -> ReportError {
    let _ = e;
    ReportError::Tdx(TdxError::BadArgument("report page is not TD memory"))
}

/// TDG.MR.REPORT with `report_data`: writes REPORTDATA into the private
/// page, asks the module, copies the TDREPORT out once, and checks that it
/// is a TDX report carrying that REPORTDATA.
pub fn get_report(
    m: &mut dyn TdxModule,
    page: ReportPage,
    report_data: &[u8; REPORTDATA_LEN],
) -> Result<[u8; TDREPORT_LEN], ReportError> {
    m.write(page.reportdata_gpa(), report_data)
        .map_err(mem_err)?;
    // Clear the output so a module that writes nothing is caught below.
    m.write(page.report_gpa(), &[0u8; TDREPORT_LEN])
        .map_err(mem_err)?;
    tdcall::mr_report(m, page.report_gpa(), page.reportdata_gpa())?;
    let mut out = [0u8; TDREPORT_LEN];
    m.read(page.report_gpa(), &mut out).map_err(mem_err)?;
    let parsed = TdReport::parse(&out)?;
    if parsed.report_data != *report_data {
        return Err(ReportError::ReportDataMismatch);
    }
    Ok(out)
}

/// GetQuote buffer header (TDX GHCI): u64 version, u64 status, u32 in_len,
/// u32 out_len, then the data (the TDREPORT in, the quote out).
pub mod quote_buf {
    /// Header size.
    pub const HEADER: usize = 24;
    /// The version the TD writes.
    pub const VERSION: u64 = 1;
    /// Status: the quote is in the buffer.
    pub const SUCCESS: u64 = 0;
    /// Status: the host is still working on it.
    pub const IN_FLIGHT: u64 = u64::MAX;
    /// Status: the host failed.
    pub const ERROR: u64 = 0x8000_0000_0000_0000;
    /// Status: no quoting service.
    pub const QGS_UNAVAILABLE: u64 = 0x8000_0000_0000_0001;
    /// Pages of the L1's GetQuote buffer: 16 KiB, twice what Linux's TDX
    /// guest driver uses (a quote with its PCK chain is about 5 KiB).
    pub const PAGES: u64 = 4;
    /// Bytes of the L1's GetQuote buffer.
    pub const LEN: usize = PAGES as usize * 4096;
}

/// The TD quote as far as the SVSM checks it (Intel TDX DCAP Quoting
/// Library API, quote formats v4 and v5): a 48-byte header, the TD quote
/// body, then u32 signature-data length and the signature data (ECDSA
/// signature, attestation key, QE certification data with the PCK chain).
pub mod quote {
    /// Header size.
    pub const HEADER: usize = 48;
    /// Header: u16 version (4 or 5).
    pub const VERSION: usize = 0;
    /// Header: u32 TEE type.
    pub const TEE_TYPE: usize = 4;
    /// TEE type of a TD quote.
    pub const TEE_TYPE_TDX: u32 = 0x81;
    /// v4: the body's size (TDX 1.0 body).
    pub const BODY_V4_LEN: usize = 584;
    /// v5: body type 2 (TDX 1.0 body, 584 bytes) or 3 (TDX 1.5 body, 648
    /// bytes: TEE_TCB_SVN2 and MRSERVICETD added), u16 at 48, then its u32
    /// size at 50 and the body at 54.
    pub const BODY_V5_TDX15_LEN: usize = 648;
    /// Offsets in the body (both versions).
    pub mod body {
        /// TEE_TCB_SVN (16), MRSEAM, MRSIGNERSEAM, SEAMATTRIBUTES: 0..120.
        pub const TEE_TCB_SVN: usize = 0;
        /// TDATTRIBUTES (8).
        pub const TD_ATTRIBUTES: usize = 120;
        /// XFAM (8).
        pub const XFAM: usize = 128;
        /// MRTD (48).
        pub const MRTD: usize = 136;
        /// RTMR0..3 (48 each).
        pub const RTMR0: usize = 328;
        /// REPORTDATA (64).
        pub const REPORT_DATA: usize = 520;
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Checks that `q` (a private copy of the host's answer) is a TD quote of
/// `tdreport`: version 4 or 5, TEE type TDX, a body of the size its version
/// says, signature data that ends exactly where the answer does, and a body
/// that carries the TDREPORT's REPORTDATA and its TDINFO (TD attributes,
/// XFAM, MRTD, MRCONFIGID, MROWNER, MROWNERCONFIG, RTMR0..3, which the v4
/// body holds in the TDREPORT's order). A quote of another TD, of another
/// request (a late answer to an earlier one) or of nothing is refused.
pub fn check_quote(q: &[u8], tdreport: &[u8; TDREPORT_LEN]) -> Result<(), ReportError> {
    let bad = ReportError::Quote;
    if q.len() < quote::HEADER {
        return Err(bad("shorter than a quote header"));
    }
    if u32_at(q, quote::TEE_TYPE) != Some(quote::TEE_TYPE_TDX) {
        return Err(bad("TEE type is not TDX"));
    }
    let (body_at, body_len) = match u16_at(q, quote::VERSION) {
        Some(4) => (quote::HEADER, quote::BODY_V4_LEN),
        Some(5) => {
            let size = u32_at(q, quote::HEADER + 2).map(|n| n as usize);
            match (u16_at(q, quote::HEADER), size) {
                (Some(2), Some(quote::BODY_V4_LEN)) => (quote::HEADER + 6, quote::BODY_V4_LEN),
                (Some(3), Some(quote::BODY_V5_TDX15_LEN)) => {
                    (quote::HEADER + 6, quote::BODY_V5_TDX15_LEN)
                }
                _ => return Err(bad("v5 body type and size do not match")),
            }
        }
        _ => return Err(bad("quote version is neither 4 nor 5")),
    };
    let sig_at = body_at + body_len;
    let sig_len = u32_at(q, sig_at).ok_or(bad("shorter than its body"))? as usize;
    if sig_len == 0 || sig_at + 4 + sig_len != q.len() {
        return Err(bad("signature data does not end the quote"));
    }
    let body = &q[body_at..body_at + body_len];
    let td_info = &tdreport[offset::ATTRIBUTES..offset::SERVTD_HASH];
    if body[quote::body::TD_ATTRIBUTES..quote::body::REPORT_DATA] != *td_info {
        return Err(bad("quote body is not this TD's (TDINFO differs)"));
    }
    let rd = &tdreport[offset::REPORT_DATA..offset::REPORT_DATA + REPORTDATA_LEN];
    if body[quote::body::REPORT_DATA..quote::body::REPORT_DATA + REPORTDATA_LEN] != *rd {
        return Err(ReportError::ReportDataMismatch);
    }
    Ok(())
}

/// The L1's GetQuote buffer: `len` bytes at `gpa` (L1 pages, page
/// aligned, converted to shared by the caller), reached through their
/// SHARED alias (`gpa | shared_bit`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuoteBuffer {
    /// First page (without the SHARED bit).
    pub gpa: u64,
    /// Bytes (a multiple of 4 KiB).
    pub len: usize,
    /// The TD's SHARED bit (TDG.VP.INFO).
    pub shared_bit: u64,
}

/// Asks the host's quoting service for a quote of `tdreport` through the
/// shared buffer `buf`: writes the whole buffer (header, TDREPORT, zeros, so
/// nothing the host left there is taken for an answer), makes the GetQuote
/// call, reads the header while the status says IN_FLIGHT and `poll`
/// returns true, then copies the quote out once, checks it
/// ([`check_quote`]) and returns it.
pub fn get_quote(
    m: &mut dyn TdxModule,
    buf: QuoteBuffer,
    tdreport: &[u8; TDREPORT_LEN],
    mut poll: impl FnMut() -> bool,
) -> Result<alloc::vec::Vec<u8>, ReportError> {
    if buf.len < quote_buf::HEADER + TDREPORT_LEN
        || !buf.len.is_multiple_of(4096)
        || !buf.gpa.is_multiple_of(4096)
    {
        return Err(ReportError::Quote("shared buffer too small or misaligned"));
    }
    let shared_err = |_| ReportError::Quote("shared buffer not reachable");
    let mut msg = alloc::vec![0u8; buf.len];
    msg[0..8].copy_from_slice(&quote_buf::VERSION.to_le_bytes());
    msg[16..20].copy_from_slice(&(TDREPORT_LEN as u32).to_le_bytes());
    msg[quote_buf::HEADER..quote_buf::HEADER + TDREPORT_LEN].copy_from_slice(tdreport);
    m.write_shared(buf.gpa, &msg).map_err(shared_err)?;
    match tdcall::get_quote(m, buf.gpa | buf.shared_bit, buf.len as u64) {
        Err(TdxError::Vmcall(tdcall::vmcall::RETRY)) => {
            return Err(ReportError::QuoteBusy(
                "the host has too many quote requests (RETRY)",
            ));
        }
        other => other?,
    }
    let mut header = [0u8; quote_buf::HEADER];
    loop {
        // The host owns the buffer: one copy of the header per look, and
        // the status and length used come from the same copy.
        m.read_shared(buf.gpa, &mut header).map_err(shared_err)?;
        match u64::from_le_bytes(take(&header, 8)) {
            quote_buf::SUCCESS => break,
            quote_buf::IN_FLIGHT if poll() => continue,
            quote_buf::IN_FLIGHT => {
                return Err(ReportError::QuoteBusy(
                    "the host did not answer in time (IN_FLIGHT)",
                ));
            }
            quote_buf::QGS_UNAVAILABLE => return Err(ReportError::NoQuotingService),
            other => return Err(ReportError::QuoteStatus(other)),
        }
    }
    let out_len = u32::from_le_bytes(take(&header, 20)) as usize;
    if out_len == 0 || out_len > buf.len - quote_buf::HEADER {
        return Err(ReportError::Quote("quote length outside the buffer"));
    }
    let mut q = alloc::vec![0u8; out_len];
    m.read_shared(buf.gpa + quote_buf::HEADER as u64, &mut q)
        .map_err(shared_err)?;
    check_quote(&q, tdreport)?;
    Ok(q)
}
