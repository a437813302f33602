//! TD memory: accepting ranges (TDG.MEM.PAGE.ACCEPT, 2 MiB pages where the
//! range allows, 4 KiB where the host mapped the range with small pages),
//! granting the L2 access to its memory (TDG.MEM.PAGE.ATTR.WR for VM 1, and
//! never for a page the L1 keeps), and private ↔ shared conversion
//! (TDG.VP.VMCALL<MapGPA>).

use super::tdcall::{self, Accepted, PageSize, TdxError, TdxModule, VmIndex, attr};
use alloc::vec::Vec;

use crate::mm::{LARGE_PAGE_SIZE, PAGE_SIZE, PhysAddr, PhysRange};

/// How often a TDCALL answered TDX_OPERAND_BUSY is tried again before the
/// operation fails (the entry is locked by another vCPU or the host for a
/// short time).
pub const BUSY_RETRIES: u32 = 16;

/// Why a memory operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemError {
    /// The range is not page aligned or empty.
    Unaligned(PhysRange),
    /// The range touches memory the L1 keeps for itself; nothing was done.
    L1Memory {
        /// The range asked for.
        asked: PhysRange,
        /// The L1 range it overlaps.
        l1: PhysRange,
    },
    /// The module refused a page.
    Tdx {
        /// The page's GPA.
        gpa: u64,
        /// What the module said.
        error: TdxError,
    },
}

impl core::fmt::Display for MemError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Unaligned(r) => {
                write!(f, "range {:#x}..{:#x} not page aligned", r.start.0, r.end.0)
            }
            Self::L1Memory { asked, l1 } => write!(
                f,
                "range {:#x}..{:#x} overlaps L1 memory {:#x}..{:#x}",
                asked.start.0, asked.end.0, l1.start.0, l1.end.0
            ),
            Self::Tdx { gpa, error } => write!(f, "page {gpa:#x}: {error}"),
        }
    }
}

/// What an acceptance did, page by page.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AcceptStats {
    /// 2 MiB pages accepted now.
    pub accepted_2m: u64,
    /// 4 KiB pages accepted now.
    pub accepted_4k: u64,
    /// Pages (either size) that were accepted before.
    pub already: u64,
    /// 2 MiB attempts that fell back to 4 KiB (size mismatch).
    pub fallbacks: u64,
    /// TDX_OPERAND_BUSY answers retried.
    pub busy_retries: u64,
}

fn check_range(range: PhysRange) -> Result<(), MemError> {
    if range.is_empty()
        || !range.start.0.is_multiple_of(PAGE_SIZE)
        || !range.end.0.is_multiple_of(PAGE_SIZE)
    {
        return Err(MemError::Unaligned(range));
    }
    Ok(())
}

/// Runs `op` again while the module answers TDX_OPERAND_BUSY.
fn retry_busy<T>(
    stats: &mut AcceptStats,
    gpa: u64,
    mut op: impl FnMut() -> Result<T, TdxError>,
) -> Result<T, MemError> {
    let mut tries = 0;
    loop {
        match op() {
            Err(TdxError::OperandBusy(_)) if tries < BUSY_RETRIES => {
                tries += 1;
                stats.busy_retries += 1;
                core::hint::spin_loop();
            }
            Err(error) => return Err(MemError::Tdx { gpa, error }),
            Ok(v) => return Ok(v),
        }
    }
}

/// Accepts every page of `range` (page aligned): 2 MiB pages where the
/// range holds an aligned 2 MiB block, falling back to 4 KiB pages when the
/// host mapped that block with small pages (TDX_PAGE_SIZE_MISMATCH). Pages
/// accepted before are left alone and counted.
pub fn accept_range(m: &mut dyn TdxModule, range: PhysRange) -> Result<AcceptStats, MemError> {
    check_range(range)?;
    let mut stats = AcceptStats::default();
    let mut gpa = range.start.0;
    while gpa < range.end.0 {
        if gpa.is_multiple_of(LARGE_PAGE_SIZE) && range.end.0 - gpa >= LARGE_PAGE_SIZE {
            match retry_busy(&mut stats, gpa, || {
                tdcall::mem_page_accept(m, gpa, PageSize::Size2M)
            }) {
                Ok(Accepted::Now) => stats.accepted_2m += 1,
                Ok(Accepted::Already) => stats.already += 1,
                Err(MemError::Tdx {
                    error: TdxError::PageSizeMismatch(_),
                    ..
                }) => {
                    stats.fallbacks += 1;
                    accept_4k(m, gpa, gpa + LARGE_PAGE_SIZE, &mut stats)?;
                }
                Err(e) => return Err(e),
            }
            gpa += LARGE_PAGE_SIZE;
        } else {
            let end = (gpa + 1).next_multiple_of(LARGE_PAGE_SIZE).min(range.end.0);
            accept_4k(m, gpa, end, &mut stats)?;
            gpa = end;
        }
    }
    Ok(stats)
}

fn accept_4k(
    m: &mut dyn TdxModule,
    start: u64,
    end: u64,
    stats: &mut AcceptStats,
) -> Result<(), MemError> {
    let mut gpa = start;
    while gpa < end {
        match retry_busy(stats, gpa, || {
            tdcall::mem_page_accept(m, gpa, PageSize::Size4K)
        })? {
            Accepted::Now => stats.accepted_4k += 1,
            Accepted::Already => stats.already += 1,
        }
        gpa += PAGE_SIZE;
    }
    Ok(())
}

/// The L1's memory: the ranges the L2 must never be granted.
#[derive(Clone, Copy, Debug)]
pub struct L1Memory<'a>(pub &'a [PhysRange]);

impl L1Memory<'_> {
    /// The first L1 range `range` overlaps, if any.
    pub fn overlap(&self, range: &PhysRange) -> Option<PhysRange> {
        self.0.iter().copied().find(|l1| l1.overlaps(range))
    }
}

/// Gives L2 VM `vm` the access `perms` (from [`attr`]) to every page of
/// `range`, 2 MiB at a time where the mapping allows. A range that touches
/// any L1 range is refused before any TDCALL.
pub fn grant_l2(
    m: &mut dyn TdxModule,
    range: PhysRange,
    vm: VmIndex,
    perms: u16,
    l1: L1Memory<'_>,
) -> Result<AcceptStats, MemError> {
    check_range(range)?;
    if let Some(l1range) = l1.overlap(&range) {
        return Err(MemError::L1Memory {
            asked: range,
            l1: l1range,
        });
    }
    let mask = attr::RWX;
    let perms = perms & mask;
    let mut stats = AcceptStats::default();
    let mut gpa = range.start.0;
    while gpa < range.end.0 {
        let big = gpa.is_multiple_of(LARGE_PAGE_SIZE) && range.end.0 - gpa >= LARGE_PAGE_SIZE;
        if big {
            match retry_busy(&mut stats, gpa, || {
                tdcall::mem_page_attr_wr(m, gpa, PageSize::Size2M, vm, perms, mask)
            }) {
                Ok(_) => {
                    gpa += LARGE_PAGE_SIZE;
                    continue;
                }
                Err(MemError::Tdx {
                    error: TdxError::PageSizeMismatch(_),
                    ..
                }) => stats.fallbacks += 1,
                Err(e) => return Err(e),
            }
        }
        let end = if big {
            gpa + LARGE_PAGE_SIZE
        } else {
            (gpa + 1).next_multiple_of(LARGE_PAGE_SIZE).min(range.end.0)
        };
        while gpa < end {
            retry_busy(&mut stats, gpa, || {
                tdcall::mem_page_attr_wr(m, gpa, PageSize::Size4K, vm, perms, mask)
            })?;
            gpa += PAGE_SIZE;
        }
    }
    Ok(stats)
}

/// Takes every access of L2 VM `vm` to the pages of `range` away
/// (TDG.MEM.PAGE.ATTR.WR with no permission, 4 KiB at a time): used on L1
/// pages that came back private (and were accepted again) after being
/// shared, so that whatever attributes the module gives a re-added page,
/// the L2 is never among those who can reach it.
pub fn revoke_l2(m: &mut dyn TdxModule, range: PhysRange, vm: VmIndex) -> Result<(), MemError> {
    check_range(range)?;
    let mut stats = AcceptStats::default();
    let mut gpa = range.start.0;
    while gpa < range.end.0 {
        retry_busy(&mut stats, gpa, || {
            tdcall::mem_page_attr_wr(m, gpa, PageSize::Size4K, vm, 0, attr::RWX)
        })?;
        gpa += PAGE_SIZE;
    }
    Ok(())
}

/// How many MapGPA RETRY answers are followed before giving up.
pub const MAP_GPA_RETRIES: u32 = 64;

/// Converts `range` to shared (`shared`) or back to private through
/// TDG.VP.VMCALL<MapGPA>; `shared_bit` comes from TDG.VP.INFO. Private
/// pages come back pending and are accepted again here.
pub fn convert(
    m: &mut dyn TdxModule,
    range: PhysRange,
    shared: bool,
    shared_bit: u64,
) -> Result<(), MemError> {
    check_range(range)?;
    let tag = if shared { shared_bit } else { 0 };
    let mut gpa = range.start.0;
    let mut retries = 0;
    while gpa < range.end.0 {
        let done = tdcall::map_gpa(m, gpa | tag, range.end.0 - gpa)
            .map_err(|error| MemError::Tdx { gpa, error })?
            & !shared_bit;
        if done <= gpa {
            return Err(MemError::Tdx {
                gpa,
                error: TdxError::Malformed("MapGPA made no progress"),
            });
        }
        if done < range.end.0 {
            retries += 1;
            if retries > MAP_GPA_RETRIES {
                return Err(MemError::Tdx {
                    gpa: done,
                    error: TdxError::Vmcall(tdcall::vmcall::RETRY),
                });
            }
        }
        gpa = done;
    }
    if !shared {
        accept_range(m, range)?;
    }
    Ok(())
}

/// A set of pages kept as sorted, disjoint, non-adjacent ranges: the L2
/// pages the L2 converted to shared, which the L1 must never touch through
/// their private alias (on hardware that is an EPT-violation #VE in the L1).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PageSet {
    ranges: Vec<PhysRange>,
}

impl PageSet {
    /// The ranges, in order.
    pub fn ranges(&self) -> &[PhysRange] {
        &self.ranges
    }

    /// How many disjoint ranges the set holds.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Whether any byte of `[gpa, gpa + len)` is in the set (a range that
    /// wraps counts as overlapping).
    pub fn overlaps(&self, gpa: u64, len: u64) -> bool {
        let Some(end) = gpa.checked_add(len.max(1)) else {
            return true;
        };
        self.ranges.iter().any(|r| r.start.0 < end && gpa < r.end.0)
    }

    /// Adds `range` (merged with its neighbours).
    pub fn insert(&mut self, range: PhysRange) {
        if range.is_empty() {
            return;
        }
        let (mut start, mut end) = (range.start.0, range.end.0);
        self.ranges.retain(|r| {
            let touches = r.start.0 <= end && start <= r.end.0;
            if touches {
                start = start.min(r.start.0);
                end = end.max(r.end.0);
            }
            !touches
        });
        let at = self.ranges.partition_point(|r| r.start.0 < start);
        self.ranges
            .insert(at, PhysRange::new(PhysAddr(start), PhysAddr(end)));
    }

    /// Takes `range` out (splitting a range it falls inside).
    pub fn remove(&mut self, range: PhysRange) {
        if range.is_empty() {
            return;
        }
        let mut out = Vec::with_capacity(self.ranges.len() + 1);
        for r in &self.ranges {
            if !r.overlaps(&range) {
                out.push(*r);
                continue;
            }
            if r.start.0 < range.start.0 {
                out.push(PhysRange::new(r.start, range.start));
            }
            if range.end.0 < r.end.0 {
                out.push(PhysRange::new(range.end, r.end));
            }
        }
        self.ranges = out;
    }
}

/// `range` minus every range in `holes`, written into `out`; returns how
/// many pieces. Pieces beyond `out`'s length are dropped (and reported by a
/// count larger than `out.len()`).
pub fn subtract(range: PhysRange, holes: &[PhysRange], out: &mut [PhysRange]) -> usize {
    let mut pieces = 0;
    let mut start = range.start.0;
    loop {
        // The first hole at or after `start` that overlaps what is left.
        let next = holes
            .iter()
            .filter(|h| !h.is_empty() && h.end.0 > start && h.start.0 < range.end.0)
            .min_by_key(|h| h.start.0);
        let piece_end = match next {
            Some(h) => h.start.0.max(start),
            None => range.end.0,
        };
        if piece_end > start {
            if let Some(slot) = out.get_mut(pieces) {
                *slot = PhysRange::new(PhysAddr(start), PhysAddr(piece_end));
            }
            pieces += 1;
        }
        match next {
            Some(h) => start = h.end.0.max(start),
            None => return pieces,
        }
        if start >= range.end.0 {
            return pieces;
        }
    }
}
