//! A software model of the TDX module for the host tests. It is a model,
//! not an emulator: it keeps the state the L1 code depends on (TD memory,
//! which pages are accepted and at what size the host mapped them, the L2's
//! page attributes, vCPU metadata fields) and answers the leaves the L1 uses
//! with the ABI's registers and completion codes, including the errors
//! (operand invalid/busy, size mismatch, already accepted). Its report MAC
//! is SHA-256(model key ‖ REPORTMACSTRUCT bytes 0..224), a stand-in for the
//! CPU's real MAC; its TDREPORT offsets are written here as plain numbers
//! from the ABI spec, independently of `report::offset`. VP.ENTER plays
//! scripted L2 exits: each sets L2 registers and writes L2 memory (only
//! where VM 1 was granted write access; anything else is recorded as a
//! violation) before exiting with the scripted reason.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::vec::Vec;

use sha2::{Digest, Sha256, Sha384};

use super::l2::{L2State, STATE_LEN};
use super::tdcall::{OutOfRange, TdcallArgs, TdxModule, field, leaf, status, vmcall};
use crate::mm::PhysRange;

const PAGE: u64 = 4096;
const CHUNK: u64 = 2 << 20;
const GPA_MASK: u64 = 0x000F_FFFF_FFFF_F000;

fn st(class: u32, details: u32) -> u64 {
    (u64::from(class) << 32) | u64::from(details)
}

/// One scripted L2 exit.
#[derive(Clone, Debug, Default)]
pub struct Exit {
    /// VMX exit reason.
    pub reason: u32,
    /// Exit qualification.
    pub qual: u64,
    /// Instruction length.
    pub instr_len: u32,
    /// Registers the L2 sets before exiting (index, value).
    pub set: Vec<(usize, u64)>,
    /// Memory the L2 writes before exiting.
    pub writes: Vec<(u64, Vec<u8>)>,
    /// Completion class instead of SUCCESS (e.g. PENDING_INTERRUPT).
    pub status: u32,
    /// The L2's CPL at the exit.
    pub cpl: u8,
}

/// The model's state.
pub struct Model {
    /// TD memory, page by page (created on first touch inside `ram`).
    pub mem: BTreeMap<u64, Box<[u8; 4096]>>,
    /// TD memory ranges.
    pub ram: Vec<PhysRange>,
    /// 2 MiB chunks the host mapped with 4 KiB pages.
    pub small_chunks: BTreeSet<u64>,
    /// Chunks accepted as one 2 MiB page.
    pub accepted_2m: BTreeSet<u64>,
    /// 4 KiB pages accepted (in small chunks).
    pub accepted_4k: BTreeSet<u64>,
    /// VM 1's attributes per 4 KiB page.
    pub l2_attrs: BTreeMap<u64, u16>,
    /// TDCS.NUM_L2_VMS.
    pub num_l2_vms: u64,
    /// GPAW TDG.VP.INFO reports.
    pub gpaw: u64,
    /// TD ATTRIBUTES.
    pub attributes: u64,
    /// TDVPS fields written by TDG.VP.WR.
    pub vp_fields: BTreeMap<u64, u64>,
    /// Forced answers: the next call of `leaf` returns this RAX.
    pub inject: VecDeque<(u64, u64)>,
    /// Scripted L2 exits.
    pub exits: VecDeque<Exit>,
    /// Every leaf called, in order.
    pub calls: Vec<u64>,
    /// Port I/O the L1 asked the host for: (port, size, out, value).
    pub io: Vec<(u16, u64, bool, u64)>,
    /// What an IN reads.
    pub io_in_value: u64,
    /// MapGPA requests (gpa, len).
    pub map_gpa: Vec<(u64, u64)>,
    /// ReportFatalError codes.
    pub fatal: Vec<u64>,
    /// MRTD.
    pub mrtd: [u8; 48],
    /// RTMR0..3.
    pub rtmr: [[u8; 48]; 4],
    /// The MAC key.
    pub key: [u8; 32],
    /// Writes a REPORTDATA other than the one given (a broken module).
    pub corrupt_report_data: bool,
    /// The L2 state read at each VP.ENTER.
    pub entries: Vec<L2State>,
    /// L2 writes refused (no VM 1 write access): the GPAs.
    pub l2_violations: Vec<u64>,
    /// GetQuote: the quote the "quoting service" returns (None: IN_FLIGHT
    /// forever).
    pub quote: Option<Vec<u8>>,
}

/// The TD's ranges in the tests.
impl Model {
    /// A TD with `ram`, GPAW 48, one L2 VM, every chunk mapped 2 MiB.
    pub fn new(ram: &[PhysRange]) -> Self {
        let mut rtmr = [[0u8; 48]; 4];
        for (i, r) in rtmr.iter_mut().enumerate() {
            *r = [0xA0 + i as u8; 48];
        }
        Self {
            mem: BTreeMap::new(),
            ram: ram.to_vec(),
            small_chunks: BTreeSet::new(),
            accepted_2m: BTreeSet::new(),
            accepted_4k: BTreeSet::new(),
            l2_attrs: BTreeMap::new(),
            num_l2_vms: 1,
            gpaw: 48,
            attributes: 0,
            vp_fields: BTreeMap::new(),
            inject: VecDeque::new(),
            exits: VecDeque::new(),
            calls: Vec::new(),
            io: Vec::new(),
            io_in_value: 0,
            map_gpa: Vec::new(),
            fatal: Vec::new(),
            mrtd: [0x4D; 48],
            rtmr,
            key: [0x5A; 32],
            corrupt_report_data: false,
            entries: Vec::new(),
            l2_violations: Vec::new(),
            quote: None,
        }
    }

    fn strip(&self, gpa: u64) -> u64 {
        gpa & !(1u64 << (self.gpaw - 1))
    }

    fn in_ram(&self, gpa: u64, len: u64) -> bool {
        let Some(end) = gpa.checked_add(len) else {
            return false;
        };
        self.ram.iter().any(|r| r.start.0 <= gpa && end <= r.end.0)
    }

    /// Whether the 4 KiB page at `gpa` is accepted.
    pub fn is_accepted(&self, gpa: u64) -> bool {
        let page = gpa & !(PAGE - 1);
        self.accepted_4k.contains(&page) || self.accepted_2m.contains(&(page & !(CHUNK - 1)))
    }

    /// VM 1's attributes of the page at `gpa`.
    pub fn l2_attr(&self, gpa: u64) -> u16 {
        self.l2_attrs
            .get(&(gpa & !(PAGE - 1)))
            .copied()
            .unwrap_or(0)
    }

    fn page_mut(&mut self, page: u64) -> &mut [u8; 4096] {
        self.mem
            .entry(page)
            .or_insert_with(|| Box::new([0u8; 4096]))
    }

    /// Reads memory (no checks but RAM).
    pub fn peek(&self, gpa: u64, buf: &mut [u8]) -> Result<(), OutOfRange> {
        let gpa = self.strip(gpa);
        if !self.in_ram(gpa, buf.len() as u64) {
            return Err(OutOfRange {
                gpa,
                len: buf.len(),
            });
        }
        for (i, b) in buf.iter_mut().enumerate() {
            let a = gpa + i as u64;
            *b = self
                .mem
                .get(&(a & !(PAGE - 1)))
                .map_or(0, |p| p[(a & (PAGE - 1)) as usize]);
        }
        Ok(())
    }

    /// Writes memory (no checks but RAM).
    pub fn poke(&mut self, gpa: u64, data: &[u8]) -> Result<(), OutOfRange> {
        let gpa = self.strip(gpa);
        if !self.in_ram(gpa, data.len() as u64) {
            return Err(OutOfRange {
                gpa,
                len: data.len(),
            });
        }
        for (i, b) in data.iter().enumerate() {
            let a = gpa + i as u64;
            self.page_mut(a & !(PAGE - 1))[(a & (PAGE - 1)) as usize] = *b;
        }
        Ok(())
    }

    fn zero(&mut self, gpa: u64, len: u64) {
        let mut p = gpa;
        while p < gpa + len {
            self.mem.remove(&p);
            p += PAGE;
        }
    }

    /// Decodes a page-info operand: (gpa, size) or None if malformed.
    fn page_info(&self, rcx: u64) -> Option<(u64, u64)> {
        let level = rcx & 7;
        if rcx & 0xFF8 != 0 || rcx & !(GPA_MASK | 7) != 0 || level > 1 {
            return None;
        }
        let gpa = rcx & GPA_MASK;
        let size = if level == 1 { CHUNK } else { PAGE };
        (gpa.is_multiple_of(size) && self.in_ram(gpa, size)).then_some((gpa, size))
    }

    fn accept(&mut self, a: &mut TdcallArgs) -> u64 {
        let Some((gpa, size)) = self.page_info(a.rcx) else {
            return st(status::OPERAND_INVALID, 1);
        };
        let chunk = gpa & !(CHUNK - 1);
        if size == CHUNK {
            if self.small_chunks.contains(&chunk) {
                return st(status::PAGE_SIZE_MISMATCH, 1);
            }
            if self.accepted_2m.contains(&chunk) {
                return st(status::PAGE_ALREADY_ACCEPTED, 1);
            }
            self.accepted_2m.insert(chunk);
            self.zero(chunk, CHUNK);
            return 0;
        }
        if !self.small_chunks.contains(&chunk) {
            if self.accepted_2m.contains(&chunk) {
                // A guest-accessible 2 MiB leaf above the 4 KiB request.
                return st(status::PAGE_ALREADY_ACCEPTED, 1);
            }
            // A pending 2 MiB leaf: the module exits to the host, which
            // demotes the page; the TDCALL then runs again.
            self.small_chunks.insert(chunk);
        }
        if !self.accepted_4k.insert(gpa) {
            return st(status::PAGE_ALREADY_ACCEPTED, 0);
        }
        self.zero(gpa, PAGE);
        0
    }

    fn attr_wr(&mut self, a: &mut TdcallArgs) -> u64 {
        let vm1 = |x: u64| (x >> 16) as u16;
        // VM 0 (the L1) and VMs that do not exist must be all zero.
        let allowed = (1..=self.num_l2_vms).fold(0u64, |acc, vm| acc | 0xFFFF << (16 * vm));
        if a.rdx & !allowed != 0 {
            return st(status::OPERAND_INVALID, 2);
        }
        if a.r8 & !allowed != 0 {
            return st(status::OPERAND_INVALID, 8);
        }
        let new = vm1(a.rdx);
        if new != 0 && new & 0x8000 == 0 {
            return st(status::OPERAND_INVALID, 2);
        }
        let mask = vm1(a.r8) & 0x7FFF;
        let Some((gpa, size)) = self.page_info(a.rcx) else {
            return st(status::OPERAND_INVALID, 1);
        };
        let chunk = gpa & !(CHUNK - 1);
        if size == CHUNK && self.small_chunks.contains(&chunk) {
            return st(status::PAGE_SIZE_MISMATCH, 0);
        }
        if size == PAGE && !self.small_chunks.contains(&chunk) {
            // The host demotes the 2 MiB mapping (EPT violation TD exit).
            self.small_chunks.insert(chunk);
        }
        let mut after = 0;
        let mut p = gpa;
        while p < gpa + size {
            let old = self.l2_attr(p);
            let v = (old & !mask) | (new & mask & 0x7FFF);
            if v & 2 != 0 && v & 1 == 0 {
                // Writable but not readable.
                return st(status::PAGE_ATTR_INVALID, 0);
            }
            self.l2_attrs.insert(p, v);
            after = v;
            p += PAGE;
        }
        a.rdx = u64::from(after | 0x8000) << 16;
        0
    }

    fn report(&mut self, a: &mut TdcallArgs) -> u64 {
        if !a.rcx.is_multiple_of(1024) {
            return st(status::OPERAND_INVALID, 1);
        }
        if !a.rdx.is_multiple_of(64) {
            return st(status::OPERAND_INVALID, 2);
        }
        if a.r8 != 0 {
            return st(status::OPERAND_INVALID, 8);
        }
        let mut rd = [0u8; 64];
        if self.peek(a.rdx, &mut rd).is_err() {
            return st(status::OPERAND_INVALID, 2);
        }
        if self.corrupt_report_data {
            rd[0] ^= 1;
        }
        let r = self.build_report(&rd);
        if self.poke(a.rcx, &r).is_err() {
            return st(status::OPERAND_INVALID, 1);
        }
        0
    }

    /// A TDREPORT_STRUCT for `rd`, laid out from the ABI's offsets.
    pub fn build_report(&self, rd: &[u8; 64]) -> [u8; 1024] {
        let mut r = [0u8; 1024];
        r[0] = 0x81; // TDX
        r[1] = 0; // subtype
        r[2] = 0; // version (no service TDs)
        r[16..32].copy_from_slice(&[0x11; 16]); // CPUSVN
        let mut tcb = [0u8; 239];
        tcb[0] = 0x01;
        tcb[8..24].copy_from_slice(&[0x22; 16]);
        tcb[24..72].copy_from_slice(&[0x33; 48]); // MRSEAM
        r[256..495].copy_from_slice(&tcb);
        r[32..80].copy_from_slice(&Sha384::digest(tcb));
        r[512..520].copy_from_slice(&self.attributes.to_le_bytes());
        r[520..528].copy_from_slice(&0xE7u64.to_le_bytes()); // XFAM
        r[528..576].copy_from_slice(&self.mrtd);
        r[576..624].copy_from_slice(&[0xC1; 48]); // MRCONFIGID
        r[624..672].copy_from_slice(&[0xC2; 48]); // MROWNER
        r[672..720].copy_from_slice(&[0xC3; 48]); // MROWNERCONFIG
        for i in 0..4 {
            r[720 + 48 * i..768 + 48 * i].copy_from_slice(&self.rtmr[i]);
        }
        r[912..960].copy_from_slice(&[0x5E; 48]); // SERVTD_HASH
        let info_hash = Sha384::digest(&r[512..1024]);
        r[80..128].copy_from_slice(&info_hash);
        r[128..192].copy_from_slice(rd);
        let mac = self.mac(&r);
        r[224..256].copy_from_slice(&mac);
        r
    }

    /// The model's MAC over REPORTMACSTRUCT bytes 0..224.
    pub fn mac(&self, report: &[u8; 1024]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.key);
        h.update(&report[..224]);
        h.finalize().into()
    }

    fn vp_enter(&mut self, a: &mut TdcallArgs) -> u64 {
        let vm = (a.rcx >> 52) & 3;
        if a.rcx & !(3 << 52 | 3) != 0 || vm == 0 || vm > self.num_l2_vms {
            return st(status::OPERAND_INVALID, 1);
        }
        let mut buf = [0u8; STATE_LEN];
        if !a.rdx.is_multiple_of(256) || self.peek(a.rdx, &mut buf).is_err() {
            return st(status::OPERAND_INVALID, 2);
        }
        let vapic = field::l2_vmcs(vm as u8, super::l2::vmcs::VIRTUAL_APIC_PAGE);
        if self.vp_fields.get(&vapic).copied().unwrap_or(0) == 0 {
            return st(status::OPERAND_INVALID, 170);
        }
        let mut state = L2State::from_bytes(&buf);
        self.entries.push(state);
        let exit = self.exits.pop_front().unwrap_or(Exit {
            reason: 12, // HLT
            instr_len: 1,
            ..Default::default()
        });
        if exit.status != status::SUCCESS {
            return st(exit.status, 0);
        }
        for (i, v) in &exit.set {
            state.gprs[*i] = *v;
        }
        for (gpa, data) in &exit.writes {
            let ok = (0..data.len() as u64)
                .all(|o| self.l2_attr(gpa + o) & 2 != 0 && self.is_accepted(gpa + o));
            if ok {
                let _ = self.poke(*gpa, data);
            } else {
                self.l2_violations.push(*gpa);
            }
        }
        let _ = self.poke(a.rdx, &state.to_bytes());
        a.rcx = exit.qual;
        a.rdx = 0;
        a.r8 = 0;
        a.r9 = 0;
        a.r10 = 0;
        a.r11 = u64::from(exit.instr_len) << 32;
        a.r12 = u64::from(exit.cpl);
        u64::from(exit.reason)
    }

    fn vmcall(&mut self, a: &mut TdcallArgs) -> u64 {
        if a.rcx & vmcall::PASS_R10_R15 != vmcall::PASS_R10_R15 {
            return st(status::OPERAND_INVALID, 1);
        }
        if a.r10 != 0 {
            a.r10 = vmcall::INVALID_OPERAND;
            return 0;
        }
        a.r10 = vmcall::SUCCESS;
        match a.r11 {
            vmcall::IO => {
                let out = a.r13 == 1;
                self.io.push((a.r14 as u16, a.r12, out, a.r15));
                if !out {
                    a.r11 = self.io_in_value;
                }
            }
            vmcall::MAP_GPA => self.map_gpa.push((a.r12, a.r13)),
            vmcall::REPORT_FATAL_ERROR => self.fatal.push(a.r12),
            vmcall::HLT => {}
            vmcall::GET_QUOTE => {
                let at = a.r12;
                let mut hdr = [0u8; 24];
                if self.peek(at, &mut hdr).is_err() || a.r13 < 24 {
                    a.r10 = vmcall::INVALID_OPERAND;
                    return 0;
                }
                match self.quote.clone() {
                    Some(q) => {
                        hdr[8..16].copy_from_slice(&0u64.to_le_bytes());
                        hdr[20..24].copy_from_slice(&(q.len() as u32).to_le_bytes());
                        let _ = self.poke(at + 24, &q);
                    }
                    None => hdr[8..16].copy_from_slice(&u64::MAX.to_le_bytes()),
                }
                let _ = self.poke(at, &hdr);
            }
            _ => a.r10 = vmcall::INVALID_OPERAND,
        }
        0
    }

    fn answer(&mut self, a: &mut TdcallArgs, rax: u64) -> u64 {
        a.rax = rax;
        rax
    }

    /// L2 VMCS writes the module refuses: read-only fields, and masks
    /// with bits the L1 may not write (the fields with partial masks).
    fn check_vmcs_write(id: u64, mask: u64) -> Option<u64> {
        use super::l2::vmcs;
        let class = (id >> 56) & 0x3F;
        if class != 36 {
            return None;
        }
        let enc = id as u32;
        let read_only = [0x4000, 0x400C, vmcs::ACTIVITY_STATE, 0x2000, 0x2002];
        if read_only.contains(&enc) {
            return Some(st(status::METADATA_FIELD_NOT_WRITABLE, 0));
        }
        let allowed = match enc {
            vmcs::CR0 => vmcs::CR0_WRITABLE,
            vmcs::CR4 => vmcs::CR4_WRITABLE,
            vmcs::EFER => vmcs::EFER_WRITABLE,
            vmcs::ENTRY_CONTROLS => vmcs::ENTRY_IA32E_MODE,
            vmcs::VIRTUAL_APIC_PAGE => !0xFFF,
            _ => u64::MAX,
        };
        (mask & !allowed != 0).then(|| st(0xC000_0C0A, 0)) // METADATA_WR_MASK_NOT_VALID
    }

    fn tdcall(&mut self, a: &mut TdcallArgs) -> u64 {
        let leaf_no = a.rax & 0xFFFF;
        self.calls.push(leaf_no);
        if let Some(i) = self.inject.iter().position(|(l, _)| *l == leaf_no) {
            let (_, rax) = self.inject.remove(i).unwrap();
            a.rax = rax;
            return rax;
        }
        let rax = if a.rax >> 16 != 0 {
            st(status::OPERAND_INVALID, 0)
        } else {
            match leaf_no {
                leaf::VP_VMCALL => self.vmcall(a),
                leaf::VP_INFO => {
                    a.rcx = self.gpaw;
                    a.rdx = self.attributes;
                    a.r8 = (1 << 32) | 1;
                    a.r9 = 0;
                    0
                }
                leaf::MEM_PAGE_ACCEPT => self.accept(a),
                leaf::MEM_PAGE_ATTR_WR => self.attr_wr(a),
                leaf::MEM_PAGE_ATTR_RD => match self.page_info(a.rcx) {
                    Some((gpa, _)) => {
                        a.rdx = u64::from(self.l2_attr(gpa) | 0x8000) << 16;
                        0
                    }
                    None => st(status::OPERAND_INVALID, 1),
                },
                leaf::VM_RD if a.rdx == field::NUM_L2_VMS => {
                    a.r8 = self.num_l2_vms;
                    0
                }
                leaf::VM_RD => st(status::METADATA_FIELD_ID_INCORRECT, 0),
                leaf::VM_WR => st(status::METADATA_FIELD_NOT_WRITABLE, 0),
                leaf::VP_WR => {
                    // WRITE_MASK_VALID is a flag, not part of the field.
                    let id = a.rdx & !field::WRITE_MASK_VALID;
                    if let Some(rc) = Self::check_vmcs_write(id, a.r9) {
                        return self.answer(a, rc);
                    }
                    let old = self.vp_fields.get(&id).copied().unwrap_or(0);
                    self.vp_fields.insert(id, (old & !a.r9) | (a.r8 & a.r9));
                    a.r8 = old;
                    0
                }
                leaf::VP_RD => {
                    a.r8 = self.vp_fields.get(&a.rdx).copied().unwrap_or(0);
                    0
                }
                leaf::MR_REPORT => self.report(a),
                leaf::VP_ENTER => self.vp_enter(a),
                _ => st(status::OPERAND_INVALID, 0),
            }
        };
        a.rax = rax;
        rax
    }
}

/// A shareable handle on one model, as the platform's `TdxModule`.
#[derive(Clone)]
pub struct Handle(pub Arc<spin::Mutex<Model>>);

impl Handle {
    /// A handle on a fresh model.
    pub fn new(model: Model) -> Self {
        Self(Arc::new(spin::Mutex::new(model)))
    }

    /// Locks the model.
    pub fn get(&self) -> spin::MutexGuard<'_, Model> {
        self.0.lock()
    }
}

impl TdxModule for Handle {
    fn tdcall(&mut self, args: &mut TdcallArgs) -> u64 {
        self.0.lock().tdcall(args)
    }

    fn cpuid(&mut self, leaf: u32, subleaf: u32) -> [u32; 4] {
        [leaf ^ 0x1000, subleaf ^ 0x2000, 0x6C65_746E, 0x4965_6E69]
    }

    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), OutOfRange> {
        self.0.lock().peek(gpa, buf)
    }

    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), OutOfRange> {
        self.0.lock().poke(gpa, data)
    }
}
