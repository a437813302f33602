//! The #VC handler's logic (vector 29, SEV-ES/SNP): the SVSM's own CPUID,
//! port I/O and MSR accesses trap here. CPUID is answered from the CPUID
//! page the PSP checked at launch (never from the hypervisor); port I/O is
//! allowed only on the ports the caller names (the console, and the PIT the
//! TSC calibration reads) and goes through the GHCB IOIO event; RDMSR/WRMSR go through the GHCB MSR event. Anything else is
//! refused and the kernel stops.
//!
//! Pure logic over [`Hypervisor`]; the IDT hook is in `snp::mod`.

use super::ghcb::{self, GhcbError, GhcbPage, Hypervisor, exit_code, offset};

/// Entries a CPUID page holds at most (SEV-SNP ABI 56860, CPUID page).
pub const CPUID_MAX_ENTRIES: usize = 64;
const CPUID_HEADER: usize = 16;
const CPUID_ENTRY: usize = 0x30;

/// One CPUID page entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuidEntry {
    /// EAX in (leaf).
    pub leaf: u32,
    /// ECX in (subleaf).
    pub subleaf: u32,
    /// XCR0 in.
    pub xcr0: u64,
    /// XSS in.
    pub xss: u64,
    /// EAX, EBX, ECX, EDX out.
    pub out: [u32; 4],
}

/// The validated private copy of the CPUID page.
#[derive(Clone, Debug)]
pub struct CpuidTable {
    entries: [CpuidEntry; CPUID_MAX_ENTRIES],
    count: usize,
}

/// Why the CPUID page was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuidPageError(pub u32);

/// Leaves whose ECX input selects a subleaf.
fn has_subleaves(leaf: u32) -> bool {
    matches!(
        leaf,
        0x4 | 0x7 | 0xB | 0xD | 0xF | 0x10 | 0x14 | 0x1F | 0x8000_001D | 0x8000_0020
    )
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from(le32(b, at)) | (u64::from(le32(b, at + 4)) << 32)
}

impl CpuidTable {
    /// Copies and checks the page: count at most 64.
    pub fn parse(page: &[u8; 4096]) -> Result<Self, CpuidPageError> {
        let count = le32(page, 0);
        if count as usize > CPUID_MAX_ENTRIES {
            return Err(CpuidPageError(count));
        }
        let mut entries = [CpuidEntry::default(); CPUID_MAX_ENTRIES];
        for (i, e) in entries.iter_mut().enumerate().take(count as usize) {
            let at = CPUID_HEADER + i * CPUID_ENTRY;
            *e = CpuidEntry {
                leaf: le32(page, at),
                subleaf: le32(page, at + 4),
                xcr0: le64(page, at + 8),
                xss: le64(page, at + 0x10),
                out: [
                    le32(page, at + 0x18),
                    le32(page, at + 0x1C),
                    le32(page, at + 0x20),
                    le32(page, at + 0x24),
                ],
            };
        }
        Ok(Self {
            entries,
            count: count as usize,
        })
    }

    /// The answer for (leaf, subleaf) with the current XCR0/XSS (which only
    /// leaf 0xD subleaves 0 and 1 depend on); all zeros for a leaf the page
    /// does not list, as the hardware answers beyond its maximum leaf.
    pub fn lookup(&self, leaf: u32, subleaf: u32, xcr0: u64, xss: u64) -> [u32; 4] {
        let xsave_dependent = leaf == 0xD && subleaf <= 1;
        self.entries[..self.count]
            .iter()
            .find(|e| {
                e.leaf == leaf
                    && (!has_subleaves(leaf) || e.subleaf == subleaf)
                    && (!xsave_dependent || (e.xcr0 == xcr0 && (subleaf == 0 || e.xss == xss)))
            })
            .map_or([0; 4], |e| e.out)
    }

    /// The C-bit position (CPUID 0x8000_001F EBX bits 5:0), if listed.
    pub fn c_bit(&self) -> Option<u8> {
        let ebx = self.lookup(0x8000_001F, 0, 1, 0)[1];
        let pos = (ebx & 0x3F) as u8;
        (pos != 0).then_some(pos)
    }
}

/// The registers a #VC may read and change.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcRegs {
    /// RAX.
    pub rax: u64,
    /// RBX.
    pub rbx: u64,
    /// RCX.
    pub rcx: u64,
    /// RDX.
    pub rdx: u64,
}

/// Why a #VC was not handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VcError {
    /// An exit code this handler does not serve.
    Unsupported(u64),
    /// An instruction it does not decode for that exit.
    Decode,
    /// A port outside the allowed ones.
    Port(u16),
    /// The hypervisor failed the event.
    Ghcb(GhcbError),
}

impl core::fmt::Display for VcError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Unsupported(c) => write!(f, "#VC exit code {c:#x} not handled"),
            Self::Decode => write!(f, "#VC: instruction not decoded"),
            Self::Port(p) => write!(f, "#VC: port {p:#x} is not the console's"),
            Self::Ghcb(e) => write!(f, "#VC: {e}"),
        }
    }
}

/// A decoded port access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PortAccess {
    port: u16,
    bytes: u8,
    is_in: bool,
    len: usize,
}

/// IN/OUT with the port in DX or an 8-bit immediate, optional 0x66 prefix.
fn decode_io(insn: &[u8], rdx: u64) -> Option<PortAccess> {
    let (opsize16, rest) = match insn.first()? {
        0x66 => (true, &insn[1..]),
        _ => (false, insn),
    };
    let prefix = usize::from(opsize16);
    let wide = if opsize16 { 2 } else { 4 };
    let (port, bytes, is_in, len) = match *rest.first()? {
        0xE4 => (u16::from(*rest.get(1)?), 1, true, 2),
        0xE5 => (u16::from(*rest.get(1)?), wide, true, 2),
        0xE6 => (u16::from(*rest.get(1)?), 1, false, 2),
        0xE7 => (u16::from(*rest.get(1)?), wide, false, 2),
        0xEC => (rdx as u16, 1, true, 1),
        0xED => (rdx as u16, wide, true, 1),
        0xEE => (rdx as u16, 1, false, 1),
        0xEF => (rdx as u16, wide, false, 1),
        _ => return None,
    };
    Some(PortAccess {
        port,
        bytes,
        is_in,
        len: len + prefix,
    })
}

/// Handles one #VC: `code` is the error code (the exit code), `insn` the
/// bytes at RIP. Returns the instruction length to step over.
pub fn handle(
    hv: &mut impl Hypervisor,
    ghcb_page: &mut GhcbPage,
    cpuid: &CpuidTable,
    allowed_ports: &[core::ops::Range<u16>],
    code: u64,
    insn: &[u8],
    regs: &mut VcRegs,
) -> Result<usize, VcError> {
    match code {
        exit_code::CPUID => {
            if insn.get(..2) != Some(&[0x0F, 0xA2]) {
                return Err(VcError::Decode);
            }
            // XCR0: this kernel enables x87 only (the reset value 1).
            let out = cpuid.lookup(regs.rax as u32, regs.rcx as u32, 1, 0);
            regs.rax = u64::from(out[0]);
            regs.rbx = u64::from(out[1]);
            regs.rcx = u64::from(out[2]);
            regs.rdx = u64::from(out[3]);
            Ok(2)
        }
        exit_code::IOIO => {
            let io = decode_io(insn, regs.rdx).ok_or(VcError::Decode)?;
            if !allowed_ports.iter().any(|r| r.contains(&io.port)) {
                return Err(VcError::Port(io.port));
            }
            let size_bits = match io.bytes {
                1 => 1 << 4,
                2 => 1 << 5,
                _ => 1 << 6,
            };
            // Port, 64-bit address size, operand size, direction.
            let info1 = (u64::from(io.port) << 16) | (1 << 9) | size_bits | u64::from(io.is_in);
            let mask = match io.bytes {
                1 => 0xFF,
                2 => 0xFFFF,
                _ => 0xFFFF_FFFF,
            };
            let rax = regs.rax;
            ghcb::nae(hv, ghcb_page, exit_code::IOIO, info1, 0, |g| {
                if !io.is_in {
                    g.set(offset::RAX, rax & mask);
                }
            })
            .map_err(VcError::Ghcb)?;
            if io.is_in {
                let v = ghcb_page.get_valid(offset::RAX).map_err(VcError::Ghcb)?;
                regs.rax = (regs.rax & !mask) | (v & mask);
            }
            Ok(io.len)
        }
        exit_code::MSR => {
            let write = match insn.get(..2) {
                Some([0x0F, 0x32]) => false,
                Some([0x0F, 0x30]) => true,
                _ => return Err(VcError::Decode),
            };
            let (rax, rcx, rdx) = (regs.rax, regs.rcx, regs.rdx);
            ghcb::nae(hv, ghcb_page, exit_code::MSR, u64::from(write), 0, |g| {
                g.set(offset::RCX, rcx & 0xFFFF_FFFF);
                if write {
                    g.set(offset::RAX, rax & 0xFFFF_FFFF);
                    g.set(offset::RDX, rdx & 0xFFFF_FFFF);
                }
            })
            .map_err(VcError::Ghcb)?;
            if !write {
                let lo = ghcb_page.get_valid(offset::RAX).map_err(VcError::Ghcb)?;
                let hi = ghcb_page.get_valid(offset::RDX).map_err(VcError::Ghcb)?;
                regs.rax = lo & 0xFFFF_FFFF;
                regs.rdx = hi & 0xFFFF_FFFF;
            }
            Ok(2)
        }
        other => Err(VcError::Unsupported(other)),
    }
}

#[cfg(test)]
// One allowed port range, written as a one-element list on purpose.
#[allow(clippy::single_range_in_vec_init)]
pub(crate) mod tests {
    use super::*;
    use crate::platform::snp::model::{HvMode, ModelHv};

    /// A CPUID page with a few leaves, as the PSP would have checked it.
    pub fn cpuid_page() -> [u8; 4096] {
        let mut p = [0u8; 4096];
        let entries: [(u32, u32, u64, [u32; 4]); 4] = [
            (0, 0, 0, [0x10, 0x6874_7541, 0x444D_4163, 0x6974_6E65]),
            (0x7, 0, 0, [0, 0x219c_91a9, 0x0040_069c, 0]),
            (0xD, 0, 1, [0x1, 0, 0x240, 0x340]),
            (0x8000_001F, 0, 0, [0x1_b, 0x133, 0, 0]),
        ];
        p[0..4].copy_from_slice(&(entries.len() as u32).to_le_bytes());
        for (i, (leaf, sub, xcr0, out)) in entries.iter().enumerate() {
            let at = CPUID_HEADER + i * CPUID_ENTRY;
            p[at..at + 4].copy_from_slice(&leaf.to_le_bytes());
            p[at + 4..at + 8].copy_from_slice(&sub.to_le_bytes());
            p[at + 8..at + 16].copy_from_slice(&xcr0.to_le_bytes());
            for (j, r) in out.iter().enumerate() {
                p[at + 0x18 + 4 * j..at + 0x1C + 4 * j].copy_from_slice(&r.to_le_bytes());
            }
        }
        p
    }

    /// One #VC through [`handle`] with [`cpuid_page`]'s table and a fresh
    /// GHCB page.
    fn vc(
        hv: &mut ModelHv,
        ports: &[core::ops::Range<u16>],
        code: u64,
        insn: &[u8],
        regs: &mut VcRegs,
    ) -> Result<usize, VcError> {
        let t = CpuidTable::parse(&cpuid_page()).unwrap();
        handle(hv, &mut GhcbPage::default(), &t, ports, code, insn, regs)
    }

    #[test]
    fn cpuid_comes_from_the_page_not_the_hypervisor() {
        let t = CpuidTable::parse(&cpuid_page()).unwrap();
        let mut hv = ModelHv::new();
        let mut regs = VcRegs {
            rax: 0x8000_001F,
            ..Default::default()
        };
        let len = vc(&mut hv, &[0x3F8..0x400], 0x72, &[0x0F, 0xA2], &mut regs).unwrap();
        assert_eq!(len, 2);
        assert_eq!((regs.rax, regs.rbx), (0x1b, 0x133));
        assert_eq!(t.c_bit(), Some(51));
        assert_eq!(hv.exits, 0, "CPUID never asks the hypervisor");
        // Subleaves matter for leaf 7; XCR0 for leaf 0xD.
        regs = VcRegs {
            rax: 7,
            rcx: 1,
            ..Default::default()
        };
        vc(&mut hv, &[0x3F8..0x400], 0x72, &[0x0F, 0xA2], &mut regs).unwrap();
        assert_eq!(regs, VcRegs::default());
        assert_eq!(t.lookup(0xD, 0, 1, 0), [1, 0, 0x240, 0x340]);
        assert_eq!(t.lookup(0xD, 0, 7, 0), [0; 4]);
        // Leaf 0 ignores ECX.
        assert_eq!(t.lookup(0, 5, 1, 0)[0], 0x10);
        let mut bad = cpuid_page();
        bad[0] = 65;
        assert_eq!(CpuidTable::parse(&bad).err(), Some(CpuidPageError(65)));
    }

    #[test]
    fn console_port_io_goes_through_the_ghcb() {
        let mut hv = ModelHv::new();
        hv.ghcb_gpa = Some(0x7000);
        // out dx, al with DX = 0x3F8.
        let mut regs = VcRegs {
            rax: 0x1234_5641,
            rdx: 0x3F8,
            ..Default::default()
        };
        assert_eq!(
            vc(&mut hv, &[0x3F8..0x400], 0x7B, &[0xEE], &mut regs),
            Ok(1)
        );
        assert_eq!(hv.io_log, [(0x3F8, 0x41, 1, false)]);
        // in al, dx from the line status register.
        hv.io_in_value = 0x60;
        regs.rdx = 0x3FD;
        assert_eq!(
            vc(&mut hv, &[0x3F8..0x400], 0x7B, &[0xEC], &mut regs),
            Ok(1)
        );
        assert_eq!(regs.rax, 0x1234_5660);
        // A 16-bit out with an operand-size prefix; an 8-bit immediate port.
        regs.rax = 0xBEEF;
        regs.rdx = 0x3F9;
        assert_eq!(
            vc(&mut hv, &[0x3F8..0x400], 0x7B, &[0x66, 0xEF], &mut regs),
            Ok(2)
        );
        assert_eq!(hv.io_log.last(), Some(&(0x3F9, 0xBEEF, 2, false)));
        assert_eq!(
            vc(&mut hv, &[0xF0..0x100], 0x7B, &[0xE6, 0xF4], &mut regs),
            Ok(2)
        );
        assert_eq!(hv.io_log.last(), Some(&(0xF4, 0xEF, 1, false)));
        // Several allowed ranges (the console and the PIT).
        regs.rdx = 0x43;
        assert_eq!(
            vc(
                &mut hv,
                &[0x3F8..0x400, 0x42..0x44],
                0x7B,
                &[0xEE],
                &mut regs
            ),
            Ok(1)
        );
        assert_eq!(hv.io_log.last().map(|e| e.0), Some(0x43));
        // Any other port is refused before the hypervisor hears of it.
        let exits = hv.exits;
        regs.rdx = 0xCF8;
        assert_eq!(
            vc(&mut hv, &[0x3F8..0x400], 0x7B, &[0xEF], &mut regs),
            Err(VcError::Port(0xCF8))
        );
        assert_eq!(hv.exits, exits);
        assert_eq!(
            vc(&mut hv, &[0x3F8..0x400], 0x7B, &[0x6E], &mut regs),
            Err(VcError::Decode)
        );
    }

    #[test]
    fn msrs_go_through_the_ghcb() {
        let mut hv = ModelHv::new();
        let mut regs = VcRegs {
            rax: 0x5678,
            rcx: 0x277,
            rdx: 0x1234,
            ..Default::default()
        };
        vc(&mut hv, &[0..0], 0x7C, &[0x0F, 0x30], &mut regs).unwrap();
        assert_eq!(hv.msrs.get(&0x277), Some(&0x1234_0000_5678));
        regs = VcRegs {
            rcx: 0x277,
            ..Default::default()
        };
        vc(&mut hv, &[0..0], 0x7C, &[0x0F, 0x32], &mut regs).unwrap();
        assert_eq!((regs.rax, regs.rdx), (0x5678, 0x1234));
        assert_eq!(
            vc(&mut hv, &[0..0], 0x400, &[0x90], &mut regs),
            Err(VcError::Unsupported(0x400))
        );
    }

    #[test]
    fn garbage_from_the_hypervisor_is_refused() {
        let mut hv = ModelHv::new();
        hv.mode = HvMode::Garbage; // answers without marking RAX/RDX valid
        let mut regs = VcRegs {
            rcx: 0x277,
            ..Default::default()
        };
        assert_eq!(
            vc(&mut hv, &[0..0], 0x7C, &[0x0F, 0x32], &mut regs),
            Err(VcError::Ghcb(GhcbError::NotValid(offset::RAX)))
        );
        regs.rdx = 0x3FD;
        assert_eq!(
            vc(&mut hv, &[0x3F8..0x400], 0x7B, &[0xEC], &mut regs),
            Err(VcError::Ghcb(GhcbError::NotValid(offset::RAX)))
        );
        hv.mode = HvMode::NaeError;
        assert_eq!(
            vc(&mut hv, &[0x3F8..0x400], 0x7B, &[0xEC], &mut regs),
            Err(VcError::Ghcb(GhcbError::Nae {
                info1: 1,
                info2: 0x8000_0306
            }))
        );
    }
}
