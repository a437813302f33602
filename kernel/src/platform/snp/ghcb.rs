//! The GHCB protocol (AMD pub. 56421): the MSR protocol through the GHCB MSR
//! (0xC001_0130) and the GHCB page with its valid bitmap, for the NAE events
//! the SVSM sends (IOIO, MSR, page-state change, guest request, AP creation,
//! RUN_VMPL, termination).
//!
//! The two hardware acts, writing/reading the MSR and VMGEXIT, sit behind
//! [`Hypervisor`]; everything here is plain logic, tested against a model
//! hypervisor. Whatever the hypervisor writes back is read once, checked,
//! and never trusted to be well formed.

use core::fmt;

/// The GHCB MSR.
pub const GHCB_MSR: u32 = 0xC001_0130;
/// Bytes in a GHCB page.
pub const GHCB_SIZE: usize = 4096;

/// GHCBInfo codes of the MSR protocol (bits 11:0 of the MSR).
pub mod msr_info {
    /// SEV information response (hypervisor → guest).
    pub const SEV_INFO_RESPONSE: u64 = 0x001;
    /// SEV information request.
    pub const SEV_INFO_REQUEST: u64 = 0x002;
    /// GHCB GPA registration request.
    pub const REGISTER_REQUEST: u64 = 0x012;
    /// GHCB GPA registration response.
    pub const REGISTER_RESPONSE: u64 = 0x013;
    /// SNP page-state change request.
    pub const PSC_REQUEST: u64 = 0x014;
    /// SNP page-state change response.
    pub const PSC_RESPONSE: u64 = 0x015;
    /// SNP run VMPL request.
    pub const RUN_VMPL_REQUEST: u64 = 0x016;
    /// SNP run VMPL response.
    pub const RUN_VMPL_RESPONSE: u64 = 0x017;
    /// Hypervisor feature support request.
    pub const HV_FEATURES_REQUEST: u64 = 0x080;
    /// Hypervisor feature support response.
    pub const HV_FEATURES_RESPONSE: u64 = 0x081;
    /// Termination request.
    pub const TERMINATE_REQUEST: u64 = 0x100;
}

/// SW_EXITCODE values of the NAE events the SVSM uses.
pub mod exit_code {
    /// CPUID.
    pub const CPUID: u64 = 0x72;
    /// IOIO.
    pub const IOIO: u64 = 0x7B;
    /// RDMSR/WRMSR.
    pub const MSR: u64 = 0x7C;
    /// VMGEXIT itself (as a guest exit code in a VMSA).
    pub const VMGEXIT: u64 = 0x403;
    /// SNP page-state change.
    pub const SNP_PSC: u64 = 0x8000_0010;
    /// SNP guest request.
    pub const SNP_GUEST_REQUEST: u64 = 0x8000_0011;
    /// SNP extended guest request (RAX certificate buffer GPA, RBX pages).
    pub const SNP_EXT_GUEST_REQUEST: u64 = 0x8000_0012;
    /// SNP AP creation.
    pub const SNP_AP_CREATION: u64 = 0x8000_0013;
    /// SNP run VMPL.
    pub const SNP_RUN_VMPL: u64 = 0x8000_0018;
    /// Hypervisor feature support.
    pub const HV_FEATURES: u64 = 0x8000_FFFD;
    /// Termination request.
    pub const TERMINATE: u64 = 0x8000_FFFE;
}

/// Byte offsets in the GHCB page (GHCB spec, table "GHCB layout").
pub mod offset {
    /// u64 RAX.
    pub const RAX: usize = 0x1F8;
    /// u64 RCX.
    pub const RCX: usize = 0x308;
    /// u64 RDX.
    pub const RDX: usize = 0x310;
    /// u64 RBX.
    pub const RBX: usize = 0x318;
    /// u64 SW_EXITCODE.
    pub const SW_EXITCODE: usize = 0x390;
    /// u64 SW_EXITINFO1.
    pub const SW_EXITINFO1: usize = 0x398;
    /// u64 SW_EXITINFO2.
    pub const SW_EXITINFO2: usize = 0x3A0;
    /// u64 SW_SCRATCH.
    pub const SW_SCRATCH: usize = 0x3A8;
    /// u64 XCR0.
    pub const XCR0: usize = 0x3E8;
    /// 16-byte valid bitmap: bit n = the qword at offset 8n was set.
    pub const VALID_BITMAP: usize = 0x3F0;
    /// The shared buffer.
    pub const SHARED_BUFFER: usize = 0x800;
    /// Its size.
    pub const SHARED_BUFFER_SIZE: usize = 0x7F0;
    /// u16 protocol version.
    pub const PROTOCOL_VERSION: usize = 0xFFA;
    /// u32 GHCB usage (0 = standard).
    pub const USAGE: usize = 0xFFC;
}

/// The GHCB protocol version this SVSM speaks (2: SNP).
pub const PROTOCOL_VERSION: u16 = 2;

/// What went wrong talking to the hypervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GhcbError {
    /// An MSR-protocol answer with the wrong GHCBInfo code or content.
    MsrResponse {
        /// What was asked.
        request: u64,
        /// The whole MSR value that came back.
        response: u64,
    },
    /// The hypervisor refused (a non-zero error code, e.g. in bits 63:32
    /// of a page-state change response).
    Refused(u64),
    /// A NAE event came back with SW_EXITINFO1 not 0 (1 = the hypervisor
    /// asks for an exception in SW_EXITINFO2, 2 = it reports an error).
    Nae {
        /// SW_EXITINFO1.
        info1: u64,
        /// SW_EXITINFO2.
        info2: u64,
    },
    /// The hypervisor did not mark a field it must return as valid.
    NotValid(usize),
    /// The hypervisor's answer in the shared buffer is malformed.
    Garbage(&'static str),
    /// No GHCB page is registered yet.
    NoGhcb,
}

impl fmt::Display for GhcbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MsrResponse { request, response } => write!(
                f,
                "GHCB MSR protocol: request {request:#x} answered by {response:#x}"
            ),
            Self::Refused(code) => write!(f, "hypervisor refused with {code:#x}"),
            Self::Nae { info1, info2 } => write!(
                f,
                "NAE event failed: SW_EXITINFO1 {info1:#x}, SW_EXITINFO2 {info2:#x}"
            ),
            Self::NotValid(o) => write!(f, "hypervisor left GHCB field {o:#x} invalid"),
            Self::Garbage(what) => write!(f, "hypervisor answer is garbage: {what}"),
            Self::NoGhcb => write!(f, "no GHCB registered"),
        }
    }
}

/// A GHCB page: the bytes the guest and the hypervisor share. On hardware
/// this is a shared (C-bit clear) page; in tests an array.
#[repr(C, align(4096))]
#[derive(Clone)]
pub struct GhcbPage(pub [u8; GHCB_SIZE]);

impl Default for GhcbPage {
    fn default() -> Self {
        Self([0; GHCB_SIZE])
    }
}

impl GhcbPage {
    /// Clears the page for a new event: valid bitmap zero, version and
    /// usage set.
    pub fn clear(&mut self) {
        self.0.fill(0);
        self.0[offset::PROTOCOL_VERSION..offset::PROTOCOL_VERSION + 2]
            .copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    }

    /// Reads the u64 at `at` (a field offset).
    pub fn get(&self, at: usize) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[at..at + 8]);
        u64::from_le_bytes(b)
    }

    /// Writes the u64 at `at` and marks it valid.
    pub fn set(&mut self, at: usize, value: u64) {
        self.0[at..at + 8].copy_from_slice(&value.to_le_bytes());
        let bit = at / 8;
        self.0[offset::VALID_BITMAP + bit / 8] |= 1 << (bit % 8);
    }

    /// Whether the field at `at` is marked valid.
    pub fn is_valid(&self, at: usize) -> bool {
        let bit = at / 8;
        self.0[offset::VALID_BITMAP + bit / 8] & (1 << (bit % 8)) != 0
    }

    /// The field at `at` if the hypervisor marked it valid.
    pub fn get_valid(&self, at: usize) -> Result<u64, GhcbError> {
        if self.is_valid(at) {
            Ok(self.get(at))
        } else {
            Err(GhcbError::NotValid(at))
        }
    }

    /// The shared buffer.
    pub fn shared_buffer(&self) -> &[u8] {
        &self.0[offset::SHARED_BUFFER..offset::SHARED_BUFFER + offset::SHARED_BUFFER_SIZE]
    }

    /// The shared buffer, writable.
    pub fn shared_buffer_mut(&mut self) -> &mut [u8] {
        &mut self.0[offset::SHARED_BUFFER..offset::SHARED_BUFFER + offset::SHARED_BUFFER_SIZE]
    }
}

/// The two hardware acts of the protocol.
pub trait Hypervisor {
    /// Reads the GHCB MSR.
    fn read_msr(&mut self) -> u64;
    /// Writes the GHCB MSR.
    fn write_msr(&mut self, value: u64);
    /// VMGEXIT. `ghcb` is the registered GHCB page (on hardware the
    /// hypervisor reads it by its GPA; a model reads it here).
    fn vmgexit(&mut self, ghcb: &mut GhcbPage);
}

/// One MSR-protocol exchange: writes `request`, VMGEXIT, reads the answer.
/// The caller restores the MSR to the GHCB GPA afterwards if one is in use.
fn msr_exchange(hv: &mut impl Hypervisor, request: u64, scratch: &mut GhcbPage) -> u64 {
    hv.write_msr(request);
    hv.vmgexit(scratch);
    hv.read_msr()
}

/// SEV information: (max, min protocol version, C-bit position).
pub fn sev_info(
    hv: &mut impl Hypervisor,
    scratch: &mut GhcbPage,
) -> Result<(u16, u16, u8), GhcbError> {
    let r = msr_exchange(hv, msr_info::SEV_INFO_REQUEST, scratch);
    if r & 0xFFF != msr_info::SEV_INFO_RESPONSE {
        return Err(GhcbError::MsrResponse {
            request: msr_info::SEV_INFO_REQUEST,
            response: r,
        });
    }
    Ok(((r >> 48) as u16, (r >> 32) as u16, (r >> 24) as u8))
}

/// Registers the GHCB at `gpa` (page aligned) with the hypervisor; the
/// hypervisor must answer with the same GFN.
pub fn register_ghcb(
    hv: &mut impl Hypervisor,
    gpa: u64,
    scratch: &mut GhcbPage,
) -> Result<(), GhcbError> {
    let request = (gpa & !0xFFF) | msr_info::REGISTER_REQUEST;
    let r = msr_exchange(hv, request, scratch);
    if r & 0xFFF != msr_info::REGISTER_RESPONSE || r >> 12 != gpa >> 12 {
        return Err(GhcbError::MsrResponse {
            request,
            response: r,
        });
    }
    Ok(())
}

/// Page-state change operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageState {
    /// Assign the page to the guest (private).
    Private,
    /// Give it back to the hypervisor (shared).
    Shared,
}

impl PageState {
    fn op(self) -> u64 {
        match self {
            Self::Private => 1,
            Self::Shared => 2,
        }
    }
}

/// Changes the state of one 4 KiB page through the MSR protocol.
pub fn page_state_msr(
    hv: &mut impl Hypervisor,
    gpa: u64,
    state: PageState,
    scratch: &mut GhcbPage,
) -> Result<(), GhcbError> {
    let gfn = (gpa >> 12) & ((1 << 40) - 1);
    let request = (state.op() << 52) | (gfn << 12) | msr_info::PSC_REQUEST;
    let r = msr_exchange(hv, request, scratch);
    if r & 0xFFF != msr_info::PSC_RESPONSE {
        return Err(GhcbError::MsrResponse {
            request,
            response: r,
        });
    }
    match r >> 32 {
        0 => Ok(()),
        code => Err(GhcbError::Refused(code)),
    }
}

/// Asks the hypervisor to end the VM (reason set 0 = general, code).
/// Returns only if the hypervisor ignored the request.
pub fn terminate_request(hv: &mut impl Hypervisor, reason: u8, scratch: &mut GhcbPage) {
    let request = (u64::from(reason) << 16) | msr_info::TERMINATE_REQUEST;
    hv.write_msr(request);
    hv.vmgexit(scratch);
}

/// A NAE event through the registered GHCB: `setup` fills the registers it
/// needs, SW_EXITCODE/INFO1/INFO2 are set here, VMGEXIT, then SW_EXITINFO1
/// must be valid and 0.
pub fn nae(
    hv: &mut impl Hypervisor,
    ghcb: &mut GhcbPage,
    code: u64,
    info1: u64,
    info2: u64,
    setup: impl FnOnce(&mut GhcbPage),
) -> Result<(), GhcbError> {
    ghcb.clear();
    setup(ghcb);
    ghcb.set(offset::SW_EXITCODE, code);
    ghcb.set(offset::SW_EXITINFO1, info1);
    ghcb.set(offset::SW_EXITINFO2, info2);
    hv.vmgexit(ghcb);
    let r1 = ghcb.get_valid(offset::SW_EXITINFO1)?;
    if r1 & 0xFFFF_FFFF != 0 {
        let info2 = ghcb.get(offset::SW_EXITINFO2);
        return Err(GhcbError::Nae { info1: r1, info2 });
    }
    Ok(())
}

/// One entry of a GHCB page-state change: GFN, operation, 2 MiB or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PscEntry {
    /// The first page's GPA.
    pub gpa: u64,
    /// The new state.
    pub state: PageState,
    /// Whether the entry is a 2 MiB page.
    pub huge: bool,
}

/// Entries that fit in the shared buffer after the 8-byte header.
pub const PSC_MAX_ENTRIES: usize = 253;

/// Page-state change through the GHCB NAE event. The hypervisor processes
/// entries from cur_entry to end_entry and advances cur_entry; a call that
/// makes no progress, moves backwards or leaves cur_entry beyond end_entry
/// is garbage. Returns once every entry is done.
pub fn page_state_change(
    hv: &mut impl Hypervisor,
    ghcb: &mut GhcbPage,
    shared_buffer_gpa: u64,
    entries: &[PscEntry],
) -> Result<(), GhcbError> {
    if entries.is_empty() || entries.len() > PSC_MAX_ENTRIES {
        return Err(GhcbError::Garbage("page-state change: 1..=253 entries"));
    }
    let end = (entries.len() - 1) as u16;
    let mut cur: u16 = 0;
    loop {
        let result = nae(hv, ghcb, exit_code::SNP_PSC, 0, 0, |g| {
            g.set(offset::SW_SCRATCH, shared_buffer_gpa);
            let buf = g.shared_buffer_mut();
            buf[0..2].copy_from_slice(&cur.to_le_bytes());
            buf[2..4].copy_from_slice(&end.to_le_bytes());
            for (i, e) in entries.iter().enumerate() {
                let v = ((e.gpa >> 12) << 12) | (e.state.op() << 52) | (u64::from(e.huge) << 56);
                buf[8 + i * 8..16 + i * 8].copy_from_slice(&v.to_le_bytes());
            }
        });
        // SW_EXITINFO2 carries the error for this event.
        let info2 = ghcb.get(offset::SW_EXITINFO2);
        result?;
        if info2 != 0 {
            return Err(GhcbError::Refused(info2));
        }
        let buf = ghcb.shared_buffer();
        let now = u16::from_le_bytes([buf[0], buf[1]]);
        let now_end = u16::from_le_bytes([buf[2], buf[3]]);
        if now_end != end || now <= cur || now > end + 1 {
            return Err(GhcbError::Garbage("page-state change: cur_entry"));
        }
        if now > end {
            return Ok(());
        }
        cur = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::snp::model::{HvMode, ModelHv};

    #[test]
    fn valid_bitmap_tracks_fields() {
        let mut g = GhcbPage::default();
        g.clear();
        assert!(!g.is_valid(offset::RAX));
        g.set(offset::RAX, 7);
        assert!(g.is_valid(offset::RAX));
        // RAX is qword 63: bit 7 of byte 7 of the bitmap.
        assert_eq!(g.0[offset::VALID_BITMAP + 7], 0x80);
        assert_eq!(
            g.get_valid(offset::RCX),
            Err(GhcbError::NotValid(offset::RCX))
        );
        assert_eq!(
            u16::from_le_bytes([g.0[0xFFA], g.0[0xFFB]]),
            PROTOCOL_VERSION
        );
    }

    #[test]
    fn msr_protocol_against_the_model() {
        let mut hv = ModelHv::new();
        let mut s = GhcbPage::default();
        assert_eq!(sev_info(&mut hv, &mut s).unwrap(), (2, 1, 51));
        register_ghcb(&mut hv, 0x7000, &mut s).unwrap();
        assert_eq!(hv.ghcb_gpa, Some(0x7000));
        page_state_msr(&mut hv, 0x9000, PageState::Private, &mut s).unwrap();
        assert!(hv.private.contains(&0x9000));
        page_state_msr(&mut hv, 0x9000, PageState::Shared, &mut s).unwrap();
        assert!(!hv.private.contains(&0x9000));
        terminate_request(&mut hv, 3, &mut s);
        assert_eq!(hv.terminated, Some(3));
    }

    #[test]
    fn msr_protocol_refusals_and_garbage() {
        let mut s = GhcbPage::default();
        let mut hv = ModelHv::new();
        hv.mode = HvMode::RefusePsc;
        assert_eq!(
            page_state_msr(&mut hv, 0x9000, PageState::Private, &mut s),
            Err(GhcbError::Refused(1))
        );
        hv.mode = HvMode::Garbage;
        assert!(matches!(
            register_ghcb(&mut hv, 0x7000, &mut s),
            Err(GhcbError::MsrResponse { .. })
        ));
        assert!(matches!(
            page_state_msr(&mut hv, 0x9000, PageState::Private, &mut s),
            Err(GhcbError::MsrResponse { .. })
        ));
        assert!(matches!(
            sev_info(&mut hv, &mut s),
            Err(GhcbError::MsrResponse { .. })
        ));
        // Registration answered with another GFN.
        hv.mode = HvMode::WrongGfn;
        assert!(register_ghcb(&mut hv, 0x7000, &mut s).is_err());
    }

    #[test]
    fn ghcb_page_state_change_in_pieces_and_garbage() {
        let mut hv = ModelHv::new();
        hv.psc_per_call = 2; // progress two entries per VMGEXIT
        let mut g = GhcbPage::default();
        let entries: std::vec::Vec<_> = (0..5u64)
            .map(|i| PscEntry {
                gpa: 0x10_0000 + i * 0x1000,
                state: PageState::Private,
                huge: false,
            })
            .collect();
        page_state_change(&mut hv, &mut g, 0x7800, &entries).unwrap();
        assert_eq!(hv.private.len(), 5);
        assert_eq!(hv.exits, 3);

        hv.mode = HvMode::Garbage; // cur_entry never moves
        assert_eq!(
            page_state_change(&mut hv, &mut g, 0x7800, &entries),
            Err(GhcbError::Garbage("page-state change: cur_entry"))
        );
        hv.mode = HvMode::RefusePsc;
        assert_eq!(
            page_state_change(&mut hv, &mut g, 0x7800, &entries),
            Err(GhcbError::Refused(1))
        );
        hv.mode = HvMode::NotValid;
        assert_eq!(
            page_state_change(&mut hv, &mut g, 0x7800, &entries),
            Err(GhcbError::NotValid(offset::SW_EXITINFO1))
        );
        assert!(page_state_change(&mut hv, &mut g, 0x7800, &[]).is_err());
    }
}
