//! Software models of what sits below the SNP code (test builds only): a
//! hypervisor answering the GHCB MSR protocol and NAE events (honestly, or
//! refusing, lying, answering garbage or leaving fields invalid), an RMP with
//! PVALIDATE/RMPADJUST (4 KiB and 2 MiB entries, validated bit, per-VMPL
//! permissions, VMSA pages) and guest memory that is private or shared. A
//! guest is a closure the model calls when the SVSM runs its VMPL.
//!
//! Written from the specifications (GHCB 56421, APM vol. 3 PVALIDATE and
//! RMPADJUST), independently of the code under test.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

use super::ghcb::{GhcbPage, Hypervisor, exit_code, msr_info, offset};
use super::psp_model::PspModel;
use super::rmp::{Rmp, RmpAttrs, rc};
use super::svsm::{Memory, Unreachable};
use super::vmsa;

const PAGE: u64 = 4096;
const HUGE: u64 = 2 * 1024 * 1024;

/// How the model hypervisor behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HvMode {
    /// As the specification says.
    Normal,
    /// Refuses page-state changes (error code 1).
    RefusePsc,
    /// Says a page-state change succeeded without doing it.
    LiePsc,
    /// Answers with wrong codes, unmoved progress, unmarked fields.
    Garbage,
    /// Registers another GFN than asked.
    WrongGfn,
    /// Leaves the whole valid bitmap clear.
    NotValid,
    /// Fails every NAE event asking for a #UD.
    NaeError,
    /// Answers guest requests BUSY (SW_EXITINFO2 = 2 << 32) this many
    /// times, then forwards them.
    Busy(u32),
}

/// The model hypervisor.
pub struct ModelHv {
    msr: u64,
    /// Behaviour.
    pub mode: HvMode,
    /// The registered GHCB.
    pub ghcb_gpa: Option<u64>,
    /// Pages assigned to the guest (4 KiB granularity).
    pub private: BTreeSet<u64>,
    /// 2 MiB RMP entries.
    pub private_huge: BTreeSet<u64>,
    /// Ignore the 2 MiB bit of page-state changes (back everything with
    /// 4 KiB entries).
    pub small_only: bool,
    /// Termination reason, once asked.
    pub terminated: Option<u8>,
    /// VMGEXITs seen.
    pub exits: usize,
    /// Page-state change entries done per exit (0 = all).
    pub psc_per_call: usize,
    /// Port writes/reads: (port, value, size, is_in).
    pub io_log: Vec<(u16, u64, u8, bool)>,
    /// What an IN returns.
    pub io_in_value: u64,
    /// MSR values.
    pub msrs: BTreeMap<u32, u64>,
    /// VMSAs per (APIC ID, VMPL), with their SEV features.
    pub vmsas: BTreeMap<(u32, u8), (u64, u64)>,
}

impl Default for ModelHv {
    fn default() -> Self {
        Self::new()
    }
}

impl ModelHv {
    /// An honest hypervisor.
    pub fn new() -> Self {
        Self {
            msr: 0,
            mode: HvMode::Normal,
            ghcb_gpa: None,
            private: BTreeSet::new(),
            private_huge: BTreeSet::new(),
            small_only: false,
            terminated: None,
            exits: 0,
            psc_per_call: 0,
            io_log: Vec::new(),
            io_in_value: 0,
            msrs: BTreeMap::new(),
            vmsas: BTreeMap::new(),
        }
    }

    fn assign(&mut self, gpa: u64, huge: bool, private: bool) {
        let huge = huge && gpa.is_multiple_of(HUGE);
        let base = gpa & !(HUGE - 1);
        // A 4 KiB change inside a 2 MiB entry splits it first.
        self.private_huge.remove(&base);
        let pages = if huge { HUGE / PAGE } else { 1 };
        // A hypervisor may back a 2 MiB request with 4 KiB RMP entries.
        let huge = huge && !self.small_only;
        for i in 0..pages {
            let p = (gpa & !(PAGE - 1)) + i * PAGE;
            if private {
                self.private.insert(p);
            } else {
                self.private.remove(&p);
            }
        }
        if huge && private {
            self.private_huge.insert(base);
        }
    }

    fn msr_protocol(&mut self) {
        let req = self.msr;
        let garbage = self.mode == HvMode::Garbage;
        self.msr = match req & 0xFFF {
            msr_info::SEV_INFO_REQUEST if garbage => 0xFFF,
            msr_info::SEV_INFO_REQUEST => {
                (2 << 48) | (1 << 32) | (51 << 24) | msr_info::SEV_INFO_RESPONSE
            }
            msr_info::REGISTER_REQUEST => {
                let gfn = req >> 12;
                match self.mode {
                    HvMode::Garbage => 0,
                    HvMode::WrongGfn => ((gfn + 1) << 12) | msr_info::REGISTER_RESPONSE,
                    _ => {
                        self.ghcb_gpa = Some(gfn << 12);
                        (gfn << 12) | msr_info::REGISTER_RESPONSE
                    }
                }
            }
            msr_info::PSC_REQUEST => {
                let op = (req >> 52) & 0xF;
                let gpa = ((req >> 12) & ((1 << 40) - 1)) << 12;
                match self.mode {
                    HvMode::Garbage => 0x999,
                    HvMode::RefusePsc => (1 << 32) | msr_info::PSC_RESPONSE,
                    HvMode::LiePsc => msr_info::PSC_RESPONSE,
                    _ if op == 1 || op == 2 => {
                        self.assign(gpa, false, op == 1);
                        msr_info::PSC_RESPONSE
                    }
                    _ => (2 << 32) | msr_info::PSC_RESPONSE,
                }
            }
            msr_info::TERMINATE_REQUEST => {
                self.terminated = Some((req >> 16) as u8);
                req
            }
            _ => 0,
        };
    }

    /// Starts an answer: clears the valid bitmap, sets SW_EXITINFO1/2.
    fn answer(g: &mut GhcbPage, info1: u64, info2: u64) {
        g.0[offset::VALID_BITMAP..offset::VALID_BITMAP + 16].fill(0);
        g.set(offset::SW_EXITINFO1, info1);
        g.set(offset::SW_EXITINFO2, info2);
    }

    fn nae(&mut self, g: &mut GhcbPage) {
        let (Ok(code), Ok(info1)) = (
            g.get_valid(offset::SW_EXITCODE),
            g.get_valid(offset::SW_EXITINFO1),
        ) else {
            Self::answer(g, 2, 1);
            return;
        };
        let info2 = g.get(offset::SW_EXITINFO2);
        if self.mode == HvMode::NaeError {
            Self::answer(g, 1, 0x8000_0306);
            return;
        }
        let garbage = self.mode == HvMode::Garbage;
        match code {
            exit_code::IOIO => {
                let port = (info1 >> 16) as u16;
                let size = ((info1 >> 4) & 7) as u8;
                let bytes = match size {
                    1 => 1,
                    2 => 2,
                    _ => 4,
                };
                if info1 & 1 == 1 {
                    self.io_log.push((port, self.io_in_value, bytes, true));
                    Self::answer(g, 0, 0);
                    if !garbage {
                        g.set(offset::RAX, self.io_in_value);
                    }
                } else {
                    let v = g.get_valid(offset::RAX);
                    match v {
                        Ok(v) => {
                            self.io_log.push((port, v, bytes, false));
                            Self::answer(g, 0, 0);
                        }
                        Err(_) => Self::answer(g, 2, 1),
                    }
                }
            }
            exit_code::MSR => {
                let Ok(rcx) = g.get_valid(offset::RCX) else {
                    return Self::answer(g, 2, 1);
                };
                if info1 == 1 {
                    let v = (g.get(offset::RDX) << 32) | g.get(offset::RAX);
                    self.msrs.insert(rcx as u32, v);
                    Self::answer(g, 0, 0);
                } else {
                    let v = self.msrs.get(&(rcx as u32)).copied().unwrap_or(0);
                    Self::answer(g, 0, 0);
                    if !garbage {
                        g.set(offset::RAX, v & 0xFFFF_FFFF);
                        g.set(offset::RDX, v >> 32);
                    }
                }
            }
            exit_code::SNP_PSC => {
                if self.mode == HvMode::RefusePsc {
                    return Self::answer(g, 0, 1);
                }
                let buf = g.shared_buffer();
                let cur = u16::from_le_bytes([buf[0], buf[1]]);
                let end = u16::from_le_bytes([buf[2], buf[3]]);
                let mut done = cur;
                if !garbage && self.mode != HvMode::LiePsc {
                    let mut n = 0;
                    while done <= end && (self.psc_per_call == 0 || n < self.psc_per_call) {
                        let at = 8 + usize::from(done) * 8;
                        let mut e = [0u8; 8];
                        e.copy_from_slice(&g.shared_buffer()[at..at + 8]);
                        let e = u64::from_le_bytes(e);
                        let gpa = ((e >> 12) & ((1 << 40) - 1)) << 12;
                        let op = (e >> 52) & 0xF;
                        self.assign(gpa, (e >> 56) & 1 == 1, op == 1);
                        done += 1;
                        n += 1;
                    }
                } else if self.mode == HvMode::LiePsc {
                    done = end + 1;
                }
                g.shared_buffer_mut()[0..2].copy_from_slice(&done.to_le_bytes());
                Self::answer(g, 0, 0);
            }
            exit_code::SNP_AP_CREATION => {
                let Ok(features) = g.get_valid(offset::RAX) else {
                    return Self::answer(g, 2, 1);
                };
                let apic = (info1 >> 32) as u32;
                let vmpl = ((info1 >> 16) & 0xF) as u8;
                match info1 & 0xFFFF {
                    1 => {
                        self.vmsas.insert((apic, vmpl), (info2, features));
                    }
                    2 => {
                        self.vmsas.remove(&(apic, vmpl));
                    }
                    _ => return Self::answer(g, 2, 1),
                }
                Self::answer(g, 0, 0);
            }
            exit_code::TERMINATE => {
                self.terminated = Some(0xFF);
                Self::answer(g, 0, 0);
            }
            _ => Self::answer(g, 2, 2),
        }
        if self.mode == HvMode::NotValid {
            g.0[offset::VALID_BITMAP..offset::VALID_BITMAP + 16].fill(0);
        }
    }
}

impl Hypervisor for ModelHv {
    fn read_msr(&mut self) -> u64 {
        self.msr
    }

    fn write_msr(&mut self, value: u64) {
        self.msr = value;
    }

    fn vmgexit(&mut self, ghcb: &mut GhcbPage) {
        self.exits += 1;
        if self.msr & 0xFFF == 0 {
            self.nae(ghcb);
        } else {
            self.msr_protocol();
        }
    }
}

/// The model RMP's VMPL0-visible state.
#[derive(Default)]
pub struct ModelRmp {
    /// Validated 4 KiB pages.
    pub validated: BTreeSet<u64>,
    /// Permissions per (page, VMPL).
    pub perm: BTreeMap<(u64, u8), u8>,
    /// VMSA pages.
    pub vmsa: BTreeSet<u64>,
    /// PVALIDATEs executed.
    pub pvalidates: usize,
}

impl ModelRmp {
    /// How many pages are validated.
    pub fn validated_pages(&self) -> usize {
        self.validated.len()
    }
    /// Whether `gpa`'s page is validated.
    pub fn is_validated(&self, gpa: u64) -> bool {
        self.validated.contains(&(gpa & !(PAGE - 1)))
    }
    /// `vmpl`'s permissions on `gpa`.
    pub fn perms(&self, gpa: u64, vmpl: u8) -> u8 {
        self.perm
            .get(&(gpa & !(PAGE - 1), vmpl))
            .copied()
            .unwrap_or(0)
    }
    /// Whether `gpa` is a VMSA page.
    pub fn is_vmsa(&self, gpa: u64) -> bool {
        self.vmsa.contains(&gpa)
    }
}

/// A guest: called with the machine and its VMSA's GPA when the SVSM runs
/// it; returns the exit code the VMSA records.
pub type GuestFn = Box<dyn FnMut(&mut Machine, u64) -> u64>;

/// How the model hypervisor answers the SNP Extended Guest Request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExtHost {
    /// Does not know the event (fails it, asking for a #UD).
    Unsupported,
    /// Writes these bytes at the start of the certificate buffer; a buffer
    /// of fewer pages than they need is refused with INVALID_LEN and the
    /// page count in RBX, without passing the request on.
    Certs(Vec<u8>),
    /// Always refuses the buffer as too small, asking for this many pages.
    WantPages(u64),
    /// Says INVALID_LEN without marking RBX valid.
    InvalidLenNoRbx,
}

/// Hypervisor, RMP, memory and a guest.
pub struct Machine {
    /// The hypervisor.
    pub hv: ModelHv,
    /// The RMP.
    pub rmp: ModelRmp,
    /// Page contents (private and shared alike, by GPA).
    pub mem: BTreeMap<u64, Box<[u8; 4096]>>,
    /// The PSP behind SNP_GUEST_REQUEST.
    pub psp: Option<PspModel>,
    /// The guest run by SNP_RUN_VMPL.
    pub guest: Option<GuestFn>,
    /// RUN_VMPL exits seen.
    pub runs: usize,
    /// The extended guest request's behaviour.
    pub ext: ExtHost,
    /// Every extended guest request: (RAX, RBX) as the SVSM gave them.
    pub ext_requests: Vec<(u64, u64)>,
}

impl Default for Machine {
    fn default() -> Self {
        Self::new()
    }
}

impl Machine {
    /// An honest machine with nothing assigned.
    pub fn new() -> Self {
        Self {
            hv: ModelHv::new(),
            rmp: ModelRmp::default(),
            mem: BTreeMap::new(),
            psp: None,
            guest: None,
            runs: 0,
            ext: ExtHost::Unsupported,
            ext_requests: Vec::new(),
        }
    }

    /// What the PSP does for image pages at launch: assigned and validated.
    pub fn launch(&mut self, start: u64, end: u64) {
        for p in (start..end).step_by(PAGE as usize) {
            self.hv.private.insert(p);
            self.rmp.validated.insert(p);
        }
    }

    /// Puts bytes in memory regardless of state (the loader or the guest).
    pub fn poke(&mut self, gpa: u64, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            let a = gpa + i as u64;
            self.mem
                .entry(a & !(PAGE - 1))
                .or_insert_with(|| Box::new([0; 4096]))[(a % PAGE) as usize] = *b;
        }
    }

    /// Reads bytes regardless of state.
    pub fn peek(&self, gpa: u64, buf: &mut [u8]) {
        for (i, b) in buf.iter_mut().enumerate() {
            let a = gpa + i as u64;
            *b = self
                .mem
                .get(&(a & !(PAGE - 1)))
                .map_or(0, |p| p[(a % PAGE) as usize]);
        }
    }

    /// A u64 regardless of state.
    pub fn peek_u64(&self, gpa: u64) -> u64 {
        let mut b = [0u8; 8];
        self.peek(gpa, &mut b);
        u64::from_le_bytes(b)
    }

    fn entry(&self, gpa: u64) -> Option<bool> {
        if self.hv.private_huge.contains(&(gpa & !(HUGE - 1))) {
            Some(true)
        } else if self.hv.private.contains(&(gpa & !(PAGE - 1))) {
            Some(false)
        } else {
            None
        }
    }

    fn pages(gpa: u64, huge: bool) -> impl Iterator<Item = u64> {
        let n = if huge { HUGE / PAGE } else { 1 };
        (0..n).map(move |i| gpa + i * PAGE)
    }

    fn reconcile(&mut self) {
        let private = &self.hv.private;
        self.rmp.validated.retain(|p| private.contains(p));
        self.rmp.perm.retain(|(p, _), _| private.contains(p));
        self.rmp.vmsa.retain(|p| private.contains(p));
    }

    fn private_ok(&self, gpa: u64, len: usize) -> bool {
        let end = gpa + len as u64;
        (gpa & !(PAGE - 1)..end)
            .step_by(PAGE as usize)
            .all(|p| self.rmp.is_validated(p))
    }

    fn shared_ok(&self, gpa: u64, len: usize) -> bool {
        let end = gpa + len as u64;
        (gpa & !(PAGE - 1)..end)
            .step_by(PAGE as usize)
            .all(|p| self.entry(p).is_none())
    }

    fn run_vmpl(&mut self, g: &mut GhcbPage) {
        let vmpl = g.get(offset::SW_EXITINFO1) as u8;
        let Some(&(vmsa_gpa, _)) = self.hv.vmsas.get(&(0, vmpl)) else {
            return ModelHv::answer(g, 2, 0x10);
        };
        let efer = self.peek_u64(vmsa_gpa + vmsa::offset::EFER as u64);
        if !self.rmp.is_vmsa(vmsa_gpa) || efer & vmsa::EFER_SVME == 0 {
            return ModelHv::answer(g, 2, 0x11);
        }
        self.runs += 1;
        let mut guest = self.guest.take();
        let code = guest.as_mut().map_or(0x78, |f| f(self, vmsa_gpa));
        self.guest = guest;
        self.poke(
            vmsa_gpa + vmsa::offset::GUEST_EXIT_CODE as u64,
            &code.to_le_bytes(),
        );
        ModelHv::answer(g, 0, 0);
    }

    fn guest_request(&mut self, g: &mut GhcbPage) {
        let (req_gpa, rsp_gpa) = (g.get(offset::SW_EXITINFO1), g.get(offset::SW_EXITINFO2));
        if !self.shared_ok(req_gpa, 4096) || !self.shared_ok(rsp_gpa, 4096) {
            return ModelHv::answer(g, 2, 0x12);
        }
        if let HvMode::Busy(n) = self.hv.mode {
            self.hv.mode = if n > 1 {
                HvMode::Busy(n - 1)
            } else {
                HvMode::Normal
            };
            return ModelHv::answer(g, 0, 2 << 32);
        }
        let mut req = [0u8; 4096];
        self.peek(req_gpa, &mut req);
        let mut rsp = [0u8; 4096];
        if self.hv.mode == HvMode::Garbage {
            for (i, b) in rsp.iter_mut().enumerate() {
                *b = (i as u8).wrapping_mul(31).wrapping_add(7);
            }
            self.poke(rsp_gpa, &rsp);
            return ModelHv::answer(g, 0, 0);
        }
        let result = match self.psp.as_mut() {
            Some(psp) => psp.guest_request(&req, &mut rsp),
            None => Err(0x16),
        };
        match result {
            Ok(()) => {
                self.poke(rsp_gpa, &rsp);
                ModelHv::answer(g, 0, 0);
            }
            Err(fw) => ModelHv::answer(g, 0, u64::from(fw)),
        }
    }
}

impl Machine {
    fn ext_guest_request(&mut self, g: &mut GhcbPage) {
        let (Ok(gpa), Ok(pages)) = (g.get_valid(offset::RAX), g.get_valid(offset::RBX)) else {
            return ModelHv::answer(g, 2, 0x13);
        };
        self.ext_requests.push((gpa, pages));
        let (need, always) = match &self.ext {
            ExtHost::Unsupported => return ModelHv::answer(g, 1, 0x8000_0306),
            ExtHost::Certs(blob) => ((blob.len() as u64).div_ceil(PAGE).max(1), false),
            ExtHost::WantPages(n) => (*n, true),
            ExtHost::InvalidLenNoRbx => return ModelHv::answer(g, 0, 1 << 32),
        };
        if always || pages < need {
            ModelHv::answer(g, 0, 1 << 32);
            g.set(offset::RBX, need);
            return;
        }
        if !gpa.is_multiple_of(PAGE) || !self.shared_ok(gpa, (pages * PAGE) as usize) {
            return ModelHv::answer(g, 2, 0x14);
        }
        self.guest_request(g);
        if g.get(offset::SW_EXITINFO2) == 0
            && let ExtHost::Certs(blob) = &self.ext
        {
            let blob = blob.clone();
            self.poke(gpa, &blob);
        }
    }
}

impl Hypervisor for Machine {
    fn read_msr(&mut self) -> u64 {
        self.hv.read_msr()
    }

    fn write_msr(&mut self, value: u64) {
        self.hv.write_msr(value);
    }

    fn vmgexit(&mut self, ghcb: &mut GhcbPage) {
        let msr = self.hv.read_msr();
        let code = ghcb.get(offset::SW_EXITCODE);
        if msr & 0xFFF == 0
            && ghcb.is_valid(offset::SW_EXITCODE)
            && self.hv.mode != HvMode::NaeError
        {
            let handled = match code {
                exit_code::SNP_RUN_VMPL => {
                    self.run_vmpl(ghcb);
                    true
                }
                exit_code::SNP_GUEST_REQUEST => {
                    self.guest_request(ghcb);
                    true
                }
                exit_code::SNP_EXT_GUEST_REQUEST => {
                    self.ext_guest_request(ghcb);
                    true
                }
                _ => false,
            };
            if handled {
                self.hv.exits += 1;
                if self.hv.mode == HvMode::NotValid {
                    ghcb.0[offset::VALID_BITMAP..offset::VALID_BITMAP + 16].fill(0);
                }
                return;
            }
        }
        self.hv.vmgexit(ghcb);
        self.reconcile();
    }
}

impl Rmp for Machine {
    fn pvalidate(&mut self, gpa: u64, huge: bool, validate: bool) -> (u32, bool) {
        self.rmp.pvalidates += 1;
        let Some(entry_huge) = self.entry(gpa) else {
            return (rc::FAIL_INPUT, false);
        };
        if huge && !gpa.is_multiple_of(HUGE) {
            return (rc::FAIL_INPUT, false);
        }
        if huge != entry_huge {
            return (rc::FAIL_SIZEMISMATCH, false);
        }
        if Self::pages(gpa, huge).all(|p| self.rmp.validated.contains(&p) == validate) {
            return (rc::SUCCESS, true);
        }
        for p in Self::pages(gpa, huge) {
            if validate {
                self.rmp.validated.insert(p);
            } else {
                self.rmp.validated.remove(&p);
                self.rmp.perm.retain(|(q, _), _| *q != p);
            }
        }
        (rc::SUCCESS, false)
    }

    fn rmpadjust(&mut self, gpa: u64, huge: bool, attrs: RmpAttrs) -> u32 {
        if attrs.vmpl == 0 || attrs.vmpl > 3 {
            return rc::FAIL_PERMISSION;
        }
        let Some(entry_huge) = self.entry(gpa) else {
            return rc::FAIL_INPUT;
        };
        if !self.rmp.is_validated(gpa) || (attrs.vmsa && huge) {
            return rc::FAIL_INPUT;
        }
        if huge != entry_huge {
            return rc::FAIL_SIZEMISMATCH;
        }
        for p in Self::pages(gpa, huge) {
            self.rmp.perm.insert((p, attrs.vmpl), attrs.perms);
            if attrs.vmsa {
                self.rmp.vmsa.insert(p);
            } else {
                self.rmp.vmsa.remove(&p);
            }
        }
        rc::SUCCESS
    }
}

impl Memory for Machine {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), Unreachable> {
        if !self.private_ok(gpa, buf.len()) {
            return Err(Unreachable(gpa));
        }
        self.peek(gpa, buf);
        Ok(())
    }

    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), Unreachable> {
        if !self.private_ok(gpa, data.len()) {
            return Err(Unreachable(gpa));
        }
        self.poke(gpa, data);
        Ok(())
    }

    fn read_shared(&self, gpa: u64, buf: &mut [u8]) -> Result<(), Unreachable> {
        if !self.shared_ok(gpa, buf.len()) {
            return Err(Unreachable(gpa));
        }
        self.peek(gpa, buf);
        Ok(())
    }

    fn write_shared(&mut self, gpa: u64, data: &[u8]) -> Result<(), Unreachable> {
        if !self.shared_ok(gpa, data.len()) {
            return Err(Unreachable(gpa));
        }
        self.poke(gpa, data);
        Ok(())
    }
}
