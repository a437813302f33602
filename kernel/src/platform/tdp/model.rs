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
//!
//! Shared memory: MapGPA with the SHARED bit takes pages away from the TD
//! (their private contents are gone, a 2 MiB page around them is split, VM
//! 1's attributes are dropped) and backs their shared alias with host memory
//! (which starts out as host garbage, 0xEE); the L1 reaches that only through
//! `read_shared`/`write_shared`, and its private view of a shared page, or
//! of a page that came back private and was not accepted again, fails. The
//! "host" answers GetQuote as QEMU does (version 1, in_len inside the buffer,
//! 4 KiB alignment, the buffer shared) with a behaviour the test picks
//! ([`Qgs`]): a v4 quote of the TDREPORT it was given (if the model's MAC
//! over it is right), no quoting service, an error status, IN_FLIGHT for a
//! number of looks, RETRY, or raw bytes of a hostile host's choosing.
//!
//! The host also answers the L2 requests the L1 forwards: it records every
//! TDG.VP.VMCALL it receives (`host_vmcalls`), emulates MMIO (records it,
//! reads return `mmio_value` unmasked) and the MSRs in `msrs`, can convert
//! only part of a MapGPA and answer RETRY, and can be told to fail the next
//! call of a sub-function with a chosen R10 and garbage in R11.

use std::boxed::Box;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::vec;
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

/// How the host answers GetQuote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Qgs {
    /// A v4 quote of the TDREPORT in the buffer (status ERROR if its MAC
    /// is wrong).
    Quote,
    /// IN_FLIGHT for `looks` reads of the buffer header, then as `Quote`.
    InFlight {
        /// Header reads before the answer appears (u32::MAX: never).
        looks: u32,
    },
    /// Status QGS_UNAVAILABLE (QEMU without a quote-generation socket).
    Unavailable,
    /// This status, no quote.
    Status(u64),
    /// R10 = RETRY: too many requests in flight.
    Retry,
    /// A hostile host: this status, this out_len, these bytes after the
    /// header (as many as fit).
    Raw {
        /// Status.
        status: u64,
        /// out_len.
        out_len: u32,
        /// Data.
        data: Vec<u8>,
    },
    /// A valid quote of the TDREPORT of the previous request (a late answer).
    Previous,
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
    /// How GetQuote is answered.
    pub qgs: Qgs,
    /// GetQuote requests the host accepted: (GPA with the SHARED bit, len).
    pub quote_requests: Vec<(u64, u64)>,
    /// The TDREPORTs the host was given, in order.
    pub quoted_reports: Vec<Vec<u8>>,
    /// A GetQuote answer still to be written: (buffer GPA, looks left).
    pending_quote: Option<(u64, u32)>,
    /// Pages converted to shared (private GPAs).
    pub shared: BTreeSet<u64>,
    /// Pages converted back to private and not accepted again.
    pub pending: BTreeSet<u64>,
    /// The host's memory behind shared pages.
    pub host_mem: BTreeMap<u64, Box<[u8; 4096]>>,
    /// L1 private accesses that hit a shared or pending page (a #VE on
    /// hardware).
    pub l1_faults: Vec<u64>,
    /// Pages converted to shared while their private contents were not all
    /// zero.
    pub dirty_shares: Vec<u64>,
    /// MapGPA back to private fails (R10 = INVALID_OPERAND).
    pub refuse_private: bool,
    /// VM 1's attributes of a page accepted after it came back private.
    pub readd_l2_attrs: u16,
    /// Every TDG.VP.VMCALL the host received: R11..R15.
    pub host_vmcalls: Vec<[u64; 5]>,
    /// Forced answers: the next VMCALL of this sub-function gets this R10
    /// (and garbage in R11) and does nothing.
    pub vmcall_errors: VecDeque<(u64, u64)>,
    /// MMIO the host emulated: (GPA, size, write, value).
    pub mmio: Vec<(u64, u64, bool, u64)>,
    /// What an MMIO read returns in R11 (all 64 bits).
    pub mmio_value: u64,
    /// The MSRs the host emulates for the TD (RDMSR of another one fails).
    pub msrs: BTreeMap<u32, u64>,
    /// MapGPA converts at most this many pages per call, then answers RETRY.
    pub map_gpa_max_pages: Option<u64>,
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
            qgs: Qgs::Quote,
            quote_requests: Vec::new(),
            quoted_reports: Vec::new(),
            pending_quote: None,
            shared: BTreeSet::new(),
            pending: BTreeSet::new(),
            host_mem: BTreeMap::new(),
            l1_faults: Vec::new(),
            dirty_shares: Vec::new(),
            refuse_private: false,
            readd_l2_attrs: 0,
            host_vmcalls: Vec::new(),
            vmcall_errors: VecDeque::new(),
            mmio: Vec::new(),
            mmio_value: 0,
            msrs: BTreeMap::new(),
            map_gpa_max_pages: None,
        }
    }

    fn shared_bit(&self) -> u64 {
        1u64 << (self.gpaw - 1)
    }

    /// Whether the L1's private view may touch `[gpa, gpa + len)`.
    fn private_ok(&mut self, gpa: u64, len: usize) -> bool {
        let first = gpa & !(PAGE - 1);
        let last = (gpa + len.max(1) as u64 - 1) & !(PAGE - 1);
        let bad = (first..=last)
            .step_by(PAGE as usize)
            .find(|p| self.shared.contains(p) || self.pending.contains(p));
        if let Some(p) = bad {
            self.l1_faults.push(p);
        }
        bad.is_none()
    }

    /// Reads host memory behind a shared page (no checks but sharing).
    pub fn host_peek(&self, gpa: u64, buf: &mut [u8]) -> Result<(), OutOfRange> {
        let gpa = self.strip(gpa);
        for (i, b) in buf.iter_mut().enumerate() {
            let a = gpa + i as u64;
            let page = a & !(PAGE - 1);
            if !self.shared.contains(&page) {
                return Err(OutOfRange {
                    gpa,
                    len: buf.len(),
                });
            }
            *b = self
                .host_mem
                .get(&page)
                .map_or(0xEE, |p| p[(a & (PAGE - 1)) as usize]);
        }
        Ok(())
    }

    /// Writes host memory behind a shared page.
    pub fn host_poke(&mut self, gpa: u64, data: &[u8]) -> Result<(), OutOfRange> {
        let gpa = self.strip(gpa);
        let first = gpa & !(PAGE - 1);
        let last = (gpa + data.len().max(1) as u64 - 1) & !(PAGE - 1);
        if !(first..=last)
            .step_by(PAGE as usize)
            .all(|p| self.shared.contains(&p))
        {
            return Err(OutOfRange {
                gpa,
                len: data.len(),
            });
        }
        for (i, b) in data.iter().enumerate() {
            let a = gpa + i as u64;
            self.host_mem
                .entry(a & !(PAGE - 1))
                .or_insert_with(|| Box::new([0xEE; 4096]))[(a & (PAGE - 1)) as usize] = *b;
        }
        Ok(())
    }

    /// MapGPA: converts `[gpa, gpa + len)` to shared or back to private.
    fn map_gpa(&mut self, a: &mut TdcallArgs) {
        let bit = self.shared_bit();
        let to_shared = a.r12 & bit != 0;
        let gpa = a.r12 & !bit;
        let len = a.r13;
        if !gpa.is_multiple_of(PAGE) || !len.is_multiple_of(PAGE) {
            a.r10 = vmcall::ALIGN_ERROR;
            return;
        }
        if len == 0 || !self.in_ram(gpa, len) || (!to_shared && self.refuse_private) {
            a.r10 = vmcall::INVALID_OPERAND;
            return;
        }
        let len = match self.map_gpa_max_pages {
            Some(n) if n * PAGE < len => {
                a.r10 = vmcall::RETRY;
                a.r11 = a.r12 + n * PAGE;
                n * PAGE
            }
            _ => len,
        };
        for p in (gpa..gpa + len).step_by(PAGE as usize) {
            if to_shared {
                let chunk = p & !(CHUNK - 1);
                if self.accepted_2m.remove(&chunk) {
                    // The host splits the 2 MiB page around it.
                    self.small_chunks.insert(chunk);
                    self.accepted_4k
                        .extend((chunk..chunk + CHUNK).step_by(PAGE as usize));
                }
                self.accepted_4k.remove(&p);
                if self.mem.get(&p).is_some_and(|c| c.iter().any(|&b| b != 0)) {
                    self.dirty_shares.push(p);
                }
                self.mem.remove(&p);
                self.l2_attrs.remove(&p);
                self.pending.remove(&p);
                if self.shared.insert(p) {
                    self.host_mem.remove(&p);
                }
            } else if self.shared.remove(&p) {
                self.host_mem.remove(&p);
                self.pending.insert(p);
                self.small_chunks.insert(p & !(CHUNK - 1));
            }
        }
    }

    /// The v4 quote the model's "quoting enclave" makes of `r`, laid out
    /// from the DCAP quote format with plain numbers: header (version 4,
    /// ECDSA-P256 key, TEE type 0x81, Intel's QE vendor id), the body from
    /// the TDREPORT, then signature data of `sig_len` bytes.
    pub fn build_quote(&self, r: &[u8; 1024], sig_len: usize) -> Vec<u8> {
        let mut q = vec![0u8; 48];
        q[0..2].copy_from_slice(&4u16.to_le_bytes());
        q[2..4].copy_from_slice(&2u16.to_le_bytes());
        q[4..8].copy_from_slice(&0x81u32.to_le_bytes());
        q[12..28].copy_from_slice(&[
            0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9, 0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f,
            0x06, 0x07,
        ]);
        q.extend_from_slice(&r[264..384]); // TEE_TCB_SVN, MRSEAM, MRSIGNERSEAM, SEAM attributes
        q.extend_from_slice(&r[512..520]); // TD attributes
        q.extend_from_slice(&r[520..528]); // XFAM
        q.extend_from_slice(&r[528..576]); // MRTD
        q.extend_from_slice(&r[576..624]); // MRCONFIGID
        q.extend_from_slice(&r[624..672]); // MROWNER
        q.extend_from_slice(&r[672..720]); // MROWNERCONFIG
        q.extend_from_slice(&r[720..912]); // RTMR0..3
        q.extend_from_slice(&r[128..192]); // REPORTDATA
        assert_eq!(q.len(), 48 + 584);
        q.extend_from_slice(&(sig_len as u32).to_le_bytes());
        let sig = Sha256::digest(&q[..632]);
        q.extend((0..sig_len).map(|i| sig[i % 32] ^ (i / 32) as u8));
        q
    }

    /// The host's side of GetQuote, as QEMU checks it.
    fn get_quote(&mut self, a: &mut TdcallArgs) {
        let (at, len) = (a.r12, a.r13);
        let bit = self.shared_bit();
        if len == 0 {
            a.r10 = vmcall::INVALID_OPERAND;
            return;
        }
        if !at.is_multiple_of(PAGE) || !len.is_multiple_of(PAGE) {
            a.r10 = vmcall::ALIGN_ERROR;
            return;
        }
        let mut hdr = [0u8; 24];
        if at & bit == 0 || self.host_peek(at, &mut hdr).is_err() {
            // Not shared memory: the host cannot read it.
            a.r10 = vmcall::INVALID_OPERAND;
            return;
        }
        let in_len = u64::from(u32::from_le_bytes(hdr[16..20].try_into().unwrap()));
        if u64::from_le_bytes(hdr[0..8].try_into().unwrap()) != 1 || in_len > len - 24 {
            a.r10 = vmcall::INVALID_OPERAND;
            return;
        }
        if self.qgs == Qgs::Retry {
            a.r10 = vmcall::RETRY;
            return;
        }
        self.quote_requests.push((at, len));
        let mut input = vec![0u8; in_len as usize];
        let _ = self.host_peek(at + 24, &mut input);
        self.quoted_reports.push(input);
        let status = match &self.qgs {
            Qgs::Unavailable => Some(0x8000_0000_0000_0001),
            Qgs::Status(s) => Some(*s),
            Qgs::InFlight { looks } => {
                self.pending_quote = Some((at, *looks));
                Some(u64::MAX)
            }
            _ => None,
        };
        match status {
            Some(s) => {
                hdr[8..16].copy_from_slice(&s.to_le_bytes());
                let _ = self.host_poke(at, &hdr);
            }
            None => self.answer_quote(at, len),
        }
    }

    /// Writes the answer of a GetQuote request on the buffer at `at`.
    fn answer_quote(&mut self, at: u64, len: u64) {
        let mut hdr = [0u8; 24];
        let _ = self.host_peek(at, &mut hdr);
        let input = self.quoted_reports.last().cloned().unwrap_or_default();
        let (status, out) = match &self.qgs.clone() {
            Qgs::Raw {
                status,
                out_len,
                data,
            } => {
                let _ = self.host_poke(at + 24, &data[..data.len().min(len as usize - 24)]);
                hdr[8..16].copy_from_slice(&status.to_le_bytes());
                hdr[20..24].copy_from_slice(&out_len.to_le_bytes());
                let _ = self.host_poke(at, &hdr);
                return;
            }
            Qgs::Previous => {
                let n = self.quoted_reports.len();
                match n.checked_sub(2).map(|i| self.quoted_reports[i].clone()) {
                    Some(prev) if prev.len() == 1024 => {
                        let r: [u8; 1024] = prev.try_into().unwrap();
                        (0, Some(self.build_quote(&r, 4000)))
                    }
                    _ => (0x8000_0000_0000_0000, None),
                }
            }
            _ => match <[u8; 1024]>::try_from(input.as_slice()) {
                Ok(r) if self.mac(&r) == r[224..256] => (0, Some(self.build_quote(&r, 4000))),
                _ => (0x8000_0000_0000_0000, None),
            },
        };
        let mut status: u64 = status;
        if let Some(q) = out {
            if q.len() as u64 <= len - 24 {
                let _ = self.host_poke(at + 24, &q);
                hdr[20..24].copy_from_slice(&(q.len() as u32).to_le_bytes());
            } else {
                status = 0x8000_0000_0000_0000;
            }
        }
        hdr[8..16].copy_from_slice(&status.to_le_bytes());
        let _ = self.host_poke(at, &hdr);
    }

    /// One look at shared memory: a pending answer comes closer.
    fn tick_quote(&mut self) {
        if let Some((at, looks)) = self.pending_quote {
            if looks == u32::MAX {
                return;
            }
            if looks == 0 {
                self.pending_quote = None;
                let len = self.quote_requests.last().map_or(4096, |r| r.1);
                self.answer_quote(at, len);
            } else {
                self.pending_quote = Some((at, looks - 1));
            }
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
        if self.pending.remove(&gpa) && self.readd_l2_attrs != 0 {
            self.l2_attrs.insert(gpa, self.readd_l2_attrs);
        }
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
        let bit = self.shared_bit();
        let shared_ept = self
            .vp_fields
            .get(&field::l2_ctls(vm as u8))
            .is_some_and(|c| c & 1 != 0);
        for (gpa, data) in &exit.writes {
            // A shared GPA goes through the TD's shared EPT, which the L2
            // uses only with L2_CTLS bit 0; a private one needs VM 1 write
            // access to an accepted page.
            let ok = if gpa & bit != 0 {
                shared_ept && self.host_peek(*gpa, &mut vec![0u8; data.len()]).is_ok()
            } else {
                (0..data.len() as u64)
                    .all(|o| self.l2_attr(gpa + o) & 2 != 0 && self.is_accepted(gpa + o))
            };
            if !ok {
                self.l2_violations.push(*gpa);
            } else if gpa & bit != 0 {
                let _ = self.host_poke(*gpa, data);
            } else {
                let _ = self.poke(*gpa, data);
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
        self.host_vmcalls.push([a.r11, a.r12, a.r13, a.r14, a.r15]);
        if let Some(i) = self.vmcall_errors.iter().position(|(f, _)| *f == a.r11) {
            let (_, code) = self.vmcall_errors.remove(i).unwrap();
            a.r10 = code;
            // A hostile host also leaves garbage in R11.
            a.r11 = 0xBAD0_BAD0_BAD0_BAD0;
            return 0;
        }
        a.r10 = vmcall::SUCCESS;
        match a.r11 {
            vmcall::MMIO => {
                let write = a.r13 == vmcall::MMIO_WRITE;
                self.mmio.push((a.r14, a.r12, write, a.r15));
                if !matches!(a.r12, 1 | 2 | 4 | 8) || a.r13 > 1 {
                    a.r10 = vmcall::INVALID_OPERAND;
                } else if !write {
                    // The full register, whatever the size: the L1 masks.
                    a.r11 = self.mmio_value;
                }
            }
            vmcall::RDMSR => match u32::try_from(a.r12).ok().and_then(|i| self.msrs.get(&i)) {
                Some(v) => a.r11 = *v,
                None => a.r10 = vmcall::INVALID_OPERAND,
            },
            vmcall::WRMSR => match u32::try_from(a.r12) {
                Ok(i) => {
                    self.msrs.insert(i, a.r13);
                }
                Err(_) => a.r10 = vmcall::INVALID_OPERAND,
            },
            vmcall::IO => {
                let out = a.r13 == 1;
                self.io.push((a.r14 as u16, a.r12, out, a.r15));
                if !out {
                    a.r11 = self.io_in_value;
                }
            }
            vmcall::MAP_GPA => {
                self.map_gpa.push((a.r12, a.r13));
                self.map_gpa(a);
            }
            vmcall::REPORT_FATAL_ERROR => self.fatal.push(a.r12),
            vmcall::HLT => {}
            vmcall::GET_QUOTE => self.get_quote(a),
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
        let mut m = self.0.lock();
        if gpa & m.shared_bit() != 0 || !m.private_ok(gpa, buf.len()) {
            return Err(OutOfRange {
                gpa,
                len: buf.len(),
            });
        }
        m.peek(gpa, buf)
    }

    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), OutOfRange> {
        let mut m = self.0.lock();
        if gpa & m.shared_bit() != 0 || !m.private_ok(gpa, data.len()) {
            return Err(OutOfRange {
                gpa,
                len: data.len(),
            });
        }
        m.poke(gpa, data)
    }

    fn read_shared(&self, gpa: u64, buf: &mut [u8]) -> Result<(), OutOfRange> {
        let mut m = self.0.lock();
        m.tick_quote();
        m.host_peek(gpa, buf)
    }

    fn write_shared(&mut self, gpa: u64, data: &[u8]) -> Result<(), OutOfRange> {
        self.0.lock().host_poke(gpa, data)
    }
}
