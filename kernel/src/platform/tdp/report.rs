//! The TD report: TDG.MR.REPORT with a REPORTDATA the L1 chose, into an
//! L1-private 1024-byte-aligned buffer; the TDREPORT_STRUCT parsed (Intel
//! TDX Module ABI: REPORTMACSTRUCT at 0, TEE_TCB_INFO at 256, TDINFO at 512);
//! and a TD quote through TDG.VP.VMCALL<GetQuote> (TDX GHCI: the host's
//! quoting service signs the report).
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
/// u32 out_len, then the data.
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
}

/// Asks the host's quoting service for a quote of `tdreport` through the
/// shared buffer at `shared_gpa` (its private alias; `buf_len` bytes, already
/// converted to shared) and copies the quote into `out`. `poll` is called
/// while the host reports IN_FLIGHT and returns false to give up.
pub fn get_quote(
    m: &mut dyn TdxModule,
    shared_gpa: u64,
    shared_bit: u64,
    buf_len: usize,
    tdreport: &[u8; TDREPORT_LEN],
    out: &mut [u8],
    mut poll: impl FnMut() -> bool,
) -> Result<usize, ReportError> {
    if buf_len < quote_buf::HEADER + TDREPORT_LEN || !shared_gpa.is_multiple_of(4096) {
        return Err(ReportError::Quote("shared buffer too small or misaligned"));
    }
    let mut header = [0u8; quote_buf::HEADER];
    header[0..8].copy_from_slice(&quote_buf::VERSION.to_le_bytes());
    header[16..20].copy_from_slice(&(TDREPORT_LEN as u32).to_le_bytes());
    let at = shared_gpa | shared_bit;
    m.write(at, &header).map_err(mem_err)?;
    m.write(at + quote_buf::HEADER as u64, tdreport)
        .map_err(mem_err)?;
    tdcall::get_quote(m, at, buf_len as u64)?;
    loop {
        // The host owns the buffer: copy the header once per look.
        m.read(at, &mut header).map_err(mem_err)?;
        let status = u64::from_le_bytes(take(&header, 8));
        match status {
            quote_buf::SUCCESS => break,
            quote_buf::IN_FLIGHT if poll() => continue,
            quote_buf::IN_FLIGHT => return Err(ReportError::Quote("host did not answer in time")),
            other => return Err(ReportError::QuoteStatus(other)),
        }
    }
    let out_len = u32::from_le_bytes(take(&header, 20)) as usize;
    if out_len == 0 || out_len > buf_len - quote_buf::HEADER {
        return Err(ReportError::Quote("quote length outside the buffer"));
    }
    let dst = out
        .get_mut(..out_len)
        .ok_or(ReportError::Quote("quote larger than the output buffer"))?;
    m.read(at + quote_buf::HEADER as u64, dst)
        .map_err(mem_err)?;
    Ok(out_len)
}
