//! PVALIDATE and RMPADJUST (AMD APM vol. 3): the two RMP instructions the
//! SVSM executes at VMPL0, behind [`Rmp`], and the logic around them:
//! validating a range for the SVSM (page-state change to private first,
//! 2 MiB where possible, 4 KiB after a size mismatch), and granting pages or
//! making VMSAs for a lower VMPL.

use super::ghcb::{self, GhcbError, GhcbPage, Hypervisor, PageState, PscEntry};
use crate::mm::{LARGE_PAGE_SIZE, PAGE_SIZE, PhysRange};

/// Return codes of PVALIDATE and RMPADJUST (EAX).
pub mod rc {
    /// Success.
    pub const SUCCESS: u32 = 0;
    /// Bad input (address, size, or the page is not the guest's).
    pub const FAIL_INPUT: u32 = 1;
    /// RMPADJUST: the current VMPL lacks permission, or the target VMPL is
    /// not below it.
    pub const FAIL_PERMISSION: u32 = 2;
    /// The page size does not match the RMP entry.
    pub const FAIL_SIZEMISMATCH: u32 = 6;
}

/// RMPADJUST permission bits (RDX bits 15:8).
pub mod perm {
    /// Read.
    pub const READ: u8 = 1;
    /// Write.
    pub const WRITE: u8 = 2;
    /// Execute at CPL 3.
    pub const USER_EXEC: u8 = 4;
    /// Execute at CPL 0..2.
    pub const SUPERVISOR_EXEC: u8 = 8;
    /// Everything.
    pub const ALL: u8 = READ | WRITE | USER_EXEC | SUPERVISOR_EXEC;
}

/// RDX of RMPADJUST: target VMPL (7:0), permissions (15:8), VMSA (16).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RmpAttrs {
    /// The VMPL whose permissions change (1..=3).
    pub vmpl: u8,
    /// Its new permission mask.
    pub perms: u8,
    /// Whether the page becomes (true) or stops being a VMSA.
    pub vmsa: bool,
}

impl RmpAttrs {
    /// The RDX value.
    pub fn encode(self) -> u64 {
        u64::from(self.vmpl) | (u64::from(self.perms) << 8) | (u64::from(self.vmsa) << 16)
    }
}

/// The two instructions. Addresses are guest-physical; the hardware
/// implementation maps them (identity, C-bit set) to the linear address the
/// instruction takes.
pub trait Rmp {
    /// PVALIDATE: returns EAX and the carry flag (set = the validated state
    /// was already what was asked, nothing changed).
    fn pvalidate(&mut self, gpa: u64, huge: bool, validate: bool) -> (u32, bool);
    /// RMPADJUST: returns EAX.
    fn rmpadjust(&mut self, gpa: u64, huge: bool, attrs: RmpAttrs) -> u32;
}

/// Why memory could not be validated, invalidated or granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RmpError {
    /// Unaligned or empty range.
    Range,
    /// PVALIDATE failed at this page with this code.
    Pvalidate {
        /// The page.
        gpa: u64,
        /// EAX.
        code: u32,
    },
    /// PVALIDATE left the page unchanged (it was already in that state:
    /// the hypervisor may be replaying a page; never accepted).
    Unchanged {
        /// The page.
        gpa: u64,
    },
    /// RMPADJUST failed.
    Rmpadjust {
        /// The page.
        gpa: u64,
        /// EAX.
        code: u32,
    },
    /// The hypervisor refused or garbled the page-state change.
    PageState(GhcbError),
}

impl core::fmt::Display for RmpError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Range => write!(f, "range not page aligned or empty"),
            Self::Pvalidate { gpa, code } => write!(f, "PVALIDATE {gpa:#x} failed: {code}"),
            Self::Unchanged { gpa } => write!(f, "PVALIDATE {gpa:#x} changed nothing"),
            Self::Rmpadjust { gpa, code } => write!(f, "RMPADJUST {gpa:#x} failed: {code}"),
            Self::PageState(e) => write!(f, "page-state change: {e}"),
        }
    }
}

/// One PVALIDATE, its outcome as a result.
pub fn pvalidate_one(
    rmp: &mut impl Rmp,
    gpa: u64,
    huge: bool,
    validate: bool,
) -> Result<(), RmpError> {
    match rmp.pvalidate(gpa, huge, validate) {
        (rc::SUCCESS, false) => Ok(()),
        (rc::SUCCESS, true) => Err(RmpError::Unchanged { gpa }),
        (code, _) => Err(RmpError::Pvalidate { gpa, code }),
    }
}

/// PVALIDATE of a 2 MiB page, or of its 512 small pages when the RMP holds
/// it as small pages (FAIL_SIZEMISMATCH).
fn pvalidate_huge_or_split(rmp: &mut impl Rmp, gpa: u64, validate: bool) -> Result<(), RmpError> {
    match pvalidate_one(rmp, gpa, true, validate) {
        Err(RmpError::Pvalidate {
            code: rc::FAIL_SIZEMISMATCH,
            ..
        }) => {
            for page in (gpa..gpa + LARGE_PAGE_SIZE).step_by(PAGE_SIZE as usize) {
                pvalidate_one(rmp, page, false, validate)?;
            }
            Ok(())
        }
        other => other,
    }
}

/// The range as 2 MiB pieces where aligned and whole, 4 KiB elsewhere.
fn pieces(range: PhysRange) -> impl Iterator<Item = (u64, bool)> {
    let (mut at, end) = (range.start.0, range.end.0);
    core::iter::from_fn(move || {
        if at >= end {
            return None;
        }
        let huge = at.is_multiple_of(LARGE_PAGE_SIZE) && end - at >= LARGE_PAGE_SIZE;
        let piece = (at, huge);
        at += if huge { LARGE_PAGE_SIZE } else { PAGE_SIZE };
        Some(piece)
    })
}

fn check(range: PhysRange) -> Result<(), RmpError> {
    if range.is_empty()
        || !range.start.0.is_multiple_of(PAGE_SIZE)
        || !range.end.0.is_multiple_of(PAGE_SIZE)
    {
        return Err(RmpError::Range);
    }
    Ok(())
}

/// How page-state changes reach the hypervisor.
pub enum PscChannel<'a> {
    /// The MSR protocol, one 4 KiB page per exit (before a GHCB exists).
    Msr(&'a mut GhcbPage),
    /// The registered GHCB (its page and the GPA of its shared buffer).
    Ghcb(&'a mut GhcbPage, u64),
}

fn page_state(
    hv: &mut impl Hypervisor,
    channel: &mut PscChannel<'_>,
    range: PhysRange,
    state: PageState,
) -> Result<(), RmpError> {
    match channel {
        PscChannel::Msr(scratch) => {
            for page in (range.start.0..range.end.0).step_by(PAGE_SIZE as usize) {
                ghcb::page_state_msr(hv, page, state, scratch).map_err(RmpError::PageState)?;
            }
            Ok(())
        }
        PscChannel::Ghcb(page, buffer_gpa) => {
            let mut batch = [PscEntry {
                gpa: 0,
                state,
                huge: false,
            }; ghcb::PSC_MAX_ENTRIES];
            let mut n = 0;
            for (gpa, huge) in pieces(range) {
                batch[n] = PscEntry { gpa, state, huge };
                n += 1;
                if n == batch.len() {
                    ghcb::page_state_change(hv, page, *buffer_gpa, &batch[..n])
                        .map_err(RmpError::PageState)?;
                    n = 0;
                }
            }
            if n > 0 {
                ghcb::page_state_change(hv, page, *buffer_gpa, &batch[..n])
                    .map_err(RmpError::PageState)?;
            }
            Ok(())
        }
    }
}

/// Makes `range` private, validated memory of this VMPL: page-state change
/// to private, then PVALIDATE (2 MiB where possible). Nothing is used
/// unless every page validated.
pub fn validate_range<H: Hypervisor + Rmp>(
    hw: &mut H,
    channel: &mut PscChannel<'_>,
    range: PhysRange,
) -> Result<(), RmpError> {
    check(range)?;
    page_state(hw, channel, range, PageState::Private)?;
    pvalidate_range(hw, range, true)
}

/// The reverse: rescind validation, then give the pages to the hypervisor.
pub fn invalidate_range<H: Hypervisor + Rmp>(
    hw: &mut H,
    channel: &mut PscChannel<'_>,
    range: PhysRange,
) -> Result<(), RmpError> {
    check(range)?;
    pvalidate_range(hw, range, false)?;
    page_state(hw, channel, range, PageState::Shared)
}

/// PVALIDATE (`validate`) or rescinds every page of `range`, 2 MiB pages
/// where the range allows them.
fn pvalidate_range(rmp: &mut impl Rmp, range: PhysRange, validate: bool) -> Result<(), RmpError> {
    for (gpa, huge) in pieces(range) {
        if huge {
            pvalidate_huge_or_split(rmp, gpa, validate)?;
        } else {
            pvalidate_one(rmp, gpa, false, validate)?;
        }
    }
    Ok(())
}

/// Gives `vmpl` the permissions `perms` on every page of `range`.
pub fn grant(rmp: &mut impl Rmp, range: PhysRange, vmpl: u8, perms: u8) -> Result<(), RmpError> {
    check(range)?;
    let attrs = RmpAttrs {
        vmpl,
        perms,
        vmsa: false,
    };
    for (gpa, huge) in pieces(range) {
        match rmp.rmpadjust(gpa, huge, attrs) {
            rc::SUCCESS => {}
            rc::FAIL_SIZEMISMATCH if huge => {
                for page in (gpa..gpa + LARGE_PAGE_SIZE).step_by(PAGE_SIZE as usize) {
                    match rmp.rmpadjust(page, false, attrs) {
                        rc::SUCCESS => {}
                        code => return Err(RmpError::Rmpadjust { gpa: page, code }),
                    }
                }
            }
            code => return Err(RmpError::Rmpadjust { gpa, code }),
        }
    }
    Ok(())
}

/// Turns the 4 KiB page at `gpa` into a VMSA for `vmpl` (no permissions
/// for that VMPL on it), or (`vmsa` false) back into a plain page with
/// `perms` for `vmpl`.
pub fn set_vmsa(
    rmp: &mut impl Rmp,
    gpa: u64,
    vmpl: u8,
    vmsa: bool,
    perms: u8,
) -> Result<(), RmpError> {
    let attrs = RmpAttrs {
        vmpl,
        perms: if vmsa { 0 } else { perms },
        vmsa,
    };
    match rmp.rmpadjust(gpa, false, attrs) {
        rc::SUCCESS => Ok(()),
        code => Err(RmpError::Rmpadjust { gpa, code }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mm::PhysAddr;
    use crate::platform::snp::model::{HvMode, Machine};

    fn r(a: u64, b: u64) -> PhysRange {
        PhysRange::new(PhysAddr(a), PhysAddr(b))
    }

    #[test]
    fn validates_huge_pages_where_it_can() {
        let mut m = Machine::new();
        let mut g = GhcbPage::default();
        // 0x1ff000..0x401000: one small page, one huge page, one small page.
        validate_range(
            &mut m,
            &mut PscChannel::Ghcb(&mut g, 0x7800),
            r(0x1F_F000, 0x40_1000),
        )
        .unwrap();
        assert_eq!(m.rmp.validated_pages(), 514);
        assert_eq!(m.rmp.pvalidates, 3);
        assert!(m.rmp.is_validated(0x20_0000) && m.rmp.is_validated(0x40_0000));
        assert!(!m.rmp.is_validated(0x1F_E000));
    }

    #[test]
    fn size_mismatch_falls_back_to_small_pages() {
        let mut m = Machine::new();
        m.hv.small_only = true; // the hypervisor backs everything with 4 KiB entries
        let mut g = GhcbPage::default();
        validate_range(
            &mut m,
            &mut PscChannel::Ghcb(&mut g, 0x7800),
            r(0x20_0000, 0x40_0000),
        )
        .unwrap();
        assert_eq!(m.rmp.validated_pages(), 512);
        assert_eq!(m.rmp.pvalidates, 1 + 512);
    }

    #[test]
    fn pvalidate_failures_are_errors() {
        let mut m = Machine::new();
        let mut s = GhcbPage::default();
        // A page validated twice: the second PVALIDATE changes nothing.
        validate_range(&mut m, &mut PscChannel::Msr(&mut s), r(0x5000, 0x6000)).unwrap();
        m.hv.mode = HvMode::Normal;
        assert_eq!(
            pvalidate_one(&mut m, 0x5000, false, true),
            Err(RmpError::Unchanged { gpa: 0x5000 })
        );
        // The hypervisor claims success but never assigns the page.
        m.hv.mode = HvMode::LiePsc;
        assert_eq!(
            validate_range(&mut m, &mut PscChannel::Msr(&mut s), r(0x8000, 0x9000)),
            Err(RmpError::Pvalidate {
                gpa: 0x8000,
                code: rc::FAIL_INPUT
            })
        );
        // The hypervisor refuses: nothing is validated.
        m.hv.mode = HvMode::RefusePsc;
        let before = m.rmp.pvalidates;
        assert!(matches!(
            validate_range(&mut m, &mut PscChannel::Msr(&mut s), r(0xA000, 0xB000)),
            Err(RmpError::PageState(GhcbError::Refused(_)))
        ));
        assert_eq!(m.rmp.pvalidates, before);
        assert_eq!(
            validate_range(&mut m, &mut PscChannel::Msr(&mut s), r(0xA000, 0xA800)),
            Err(RmpError::Range)
        );
    }

    #[test]
    fn invalidate_gives_pages_back() {
        let mut m = Machine::new();
        let mut s = GhcbPage::default();
        validate_range(
            &mut m,
            &mut PscChannel::Msr(&mut s),
            r(0x20_0000, 0x40_0000),
        )
        .unwrap();
        invalidate_range(
            &mut m,
            &mut PscChannel::Msr(&mut s),
            r(0x20_0000, 0x40_0000),
        )
        .unwrap();
        assert_eq!(m.rmp.validated_pages(), 0);
        assert!(!m.hv.private.contains(&0x20_0000));
    }

    #[test]
    fn grants_and_vmsa_pages() {
        let mut m = Machine::new();
        let mut s = GhcbPage::default();
        validate_range(
            &mut m,
            &mut PscChannel::Msr(&mut s),
            r(0x20_0000, 0x40_0000),
        )
        .unwrap();
        grant(&mut m, r(0x20_0000, 0x40_0000), 2, perm::ALL).unwrap();
        assert_eq!(m.rmp.perms(0x3F_F000, 2), perm::ALL);
        set_vmsa(&mut m, 0x20_1000, 2, true, 0).unwrap();
        assert!(m.rmp.is_vmsa(0x20_1000));
        assert_eq!(m.rmp.perms(0x20_1000, 2), 0);
        // VMPL0 cannot be a target; a page not validated cannot be adjusted.
        assert_eq!(
            grant(&mut m, r(0x20_0000, 0x20_1000), 0, perm::ALL),
            Err(RmpError::Rmpadjust {
                gpa: 0x20_0000,
                code: rc::FAIL_PERMISSION
            })
        );
        assert_eq!(
            set_vmsa(&mut m, 0x90_0000, 2, true, 0),
            Err(RmpError::Rmpadjust {
                gpa: 0x90_0000,
                code: rc::FAIL_INPUT
            })
        );
    }
}
