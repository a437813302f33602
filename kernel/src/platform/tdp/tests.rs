//! Host tests of the tdp platform against the TDX module model.

use std::boxed::Box;
use std::vec;
use std::vec::Vec;

use sha2::{Digest, Sha384, Sha512};

use super::l2::{L2State, REFUSED, gpr};
use super::mem::{self, AcceptStats, L1Memory, MemError};
use super::model::{Exit, Handle, Model, Qgs};
use super::report::{self, ReportError, ReportPage, TdReport};
use super::tdcall::{self, TdxError, VmIndex, attr, field, leaf, status, vmcall};
use super::*;
use crate::boot::pvh::BootInfo;
use crate::mm::{PhysAddr, PhysRange};
use crate::platform::{GuestExit, GuestRegisters, Platform, PlatformError, PlatformReports};
use crate::protocols::fake::EchoTpm;
use crate::protocols::{CallArea, Svsm, protocol, result, take_pending_call};

const MIB: u64 = 1 << 20;

fn r(start: u64, end: u64) -> PhysRange {
    PhysRange::new(PhysAddr(start), PhysAddr(end))
}

// The test TD: RAM 1..8 MiB and 16..48 MiB, firmware in the top 4 MiB
// below 4 GiB. The SVSM keeps 1..4 MiB; the L2 gets the rest.
const RAM: [PhysRange; 2] = [
    PhysRange::new(PhysAddr(MIB), PhysAddr(8 * MIB)),
    PhysRange::new(PhysAddr(16 * MIB), PhysAddr(48 * MIB)),
];
const FW: PhysRange = PhysRange::new(PhysAddr(0xFFC0_0000), PhysAddr(0x1_0000_0000));
const L1: [PhysRange; 1] = [PhysRange::new(PhysAddr(MIB), PhysAddr(4 * MIB))];
const PAGES: L1Pages = L1Pages {
    report: 0x20_0000,
    l2_state: 0x20_1000,
    vapic: 0x20_2000,
    quote: 0x30_0000,
};
/// The GetQuote buffer in the test TD.
const QB: PhysRange = PhysRange::new(PhysAddr(0x30_0000), PhysAddr(0x30_4000));
const SHARED_BIT: u64 = 1 << 47;
const RESET_COPY: u64 = 0x3F_F000;
const CAA: u64 = 4 * MIB;
const ENTRY: u64 = 0xFFFF_FFF0;

fn launch() -> TdpLaunch<'static> {
    TdpLaunch {
        ram: &RAM,
        l1: &L1,
        firmware: FW,
        firmware_entry: ENTRY,
        reset_page_copy: RESET_COPY,
        caa: CAA,
    }
}

/// A model of the test TD as the hypervisor launched it: the SVSM's and
/// the firmware's pages added (accepted), the firmware's last page the
/// stub, the original kept at RESET_COPY.
fn model() -> Model {
    let mut all = RAM.to_vec();
    all.push(FW);
    let mut m = Model::new(&all);
    m.accepted_2m.insert(2 * MIB);
    m.small_chunks.insert(0); // 0..2 MiB: 4K pages, 1..2 MiB accepted
    for p in (MIB..2 * MIB).step_by(4096) {
        m.accepted_4k.insert(p);
    }
    for c in (FW.start.0..FW.end.0).step_by(2 * MIB as usize) {
        m.accepted_2m.insert(c);
    }
    m.poke(FW.end.0 - 4096, &[0xCC; 4096]).unwrap();
    m.poke(RESET_COPY, &[0xAB; 4096]).unwrap();
    m.poke(FW.start.0, b"OVMF").unwrap();
    m
}

fn platform(m: Model) -> (Handle, &'static Tdp<Handle>) {
    let h = Handle::new(m);
    let tdp = Tdp::new(h.clone(), h.clone(), &launch(), PAGES).expect("platform");
    (h, Box::leak(Box::new(tdp)))
}

fn boot_info() -> BootInfo {
    use crate::boot::pvh::{MemoryKind, MemoryRegion};
    BootInfo::from_regions(&[MemoryRegion {
        range: RAM[0],
        kind: MemoryKind::Ram,
    }])
    .unwrap()
}

fn started(m: Model) -> (Handle, &'static Tdp<Handle>, GuestSetup) {
    let (h, tdp) = platform(m);
    let setup = tdp.start_guest(&boot_info()).expect("start_guest");
    (h, tdp, setup)
}

fn tdcall_exit(set: Vec<(usize, u64)>, writes: Vec<(u64, Vec<u8>)>) -> Exit {
    Exit {
        reason: 77,
        instr_len: 4,
        set,
        writes,
        ..Default::default()
    }
}

// ---------------------------------------------------------------- accept

#[test]
fn accept_uses_2m_pages_and_falls_back_to_4k() {
    let mut m = Handle::new(model());
    m.get().small_chunks.insert(18 * MIB);
    let s = mem::accept_range(&mut m, r(16 * MIB, 20 * MIB)).unwrap();
    assert_eq!(
        s,
        AcceptStats {
            accepted_2m: 1,
            accepted_4k: 512,
            already: 0,
            fallbacks: 1,
            busy_retries: 0
        }
    );
    let g = m.get();
    assert!((16 * MIB..20 * MIB).step_by(4096).all(|p| g.is_accepted(p)));
    assert!(!g.is_accepted(20 * MIB));
}

#[test]
fn accept_unaligned_edges_use_4k_pages() {
    let mut m = Handle::new(model());
    let s = mem::accept_range(&mut m, r(20 * MIB - 4096, 22 * MIB + 8192)).unwrap();
    assert_eq!((s.accepted_2m, s.accepted_4k, s.fallbacks), (1, 3, 0));
}

#[test]
fn accept_counts_already_accepted_and_retries_busy() {
    let mut m = Handle::new(model());
    let busy = (u64::from(status::OPERAND_BUSY) << 32) | 1;
    m.get()
        .inject
        .extend([(leaf::MEM_PAGE_ACCEPT, busy), (leaf::MEM_PAGE_ACCEPT, busy)]);
    // 2..4 MiB was accepted at launch (the SVSM's pages).
    let s = mem::accept_range(&mut m, r(2 * MIB, 6 * MIB)).unwrap();
    assert_eq!((s.already, s.accepted_2m, s.busy_retries), (1, 1, 2));
    // A page accepted before keeps its contents (acceptance zeroes).
    m.get().poke(5 * MIB, b"kept").unwrap();
    mem::accept_range(&mut m, r(5 * MIB, 5 * MIB + 4096)).unwrap();
    let mut b = [0u8; 4];
    m.get().peek(5 * MIB, &mut b).unwrap();
    assert_eq!(&b, b"kept");
}

#[test]
fn accept_errors() {
    let mut m = Handle::new(model());
    let busy = (u64::from(status::OPERAND_BUSY) << 32) | 1;
    for _ in 0..=mem::BUSY_RETRIES {
        m.get().inject.push_back((leaf::MEM_PAGE_ACCEPT, busy));
    }
    assert_eq!(
        mem::accept_range(&mut m, r(6 * MIB, 6 * MIB + 4096)),
        Err(MemError::Tdx {
            gpa: 6 * MIB,
            error: TdxError::OperandBusy(1)
        })
    );
    // Outside TD memory: the module's OPERAND_INVALID on RCX.
    assert_eq!(
        mem::accept_range(&mut m, r(10 * MIB, 10 * MIB + 4096)),
        Err(MemError::Tdx {
            gpa: 10 * MIB,
            error: TdxError::OperandInvalid(1)
        })
    );
    assert_eq!(
        mem::accept_range(&mut m, r(6 * MIB + 1, 7 * MIB)),
        Err(MemError::Unaligned(r(6 * MIB + 1, 7 * MIB)))
    );
    assert!(matches!(
        mem::accept_range(&mut m, r(7 * MIB, 7 * MIB)),
        Err(MemError::Unaligned(_))
    ));
    // A status the ABI does not define for this leaf is an error, not a
    // success.
    m.get()
        .inject
        .push_back((leaf::MEM_PAGE_ACCEPT, 0x0000_4242_0000_0000));
    assert_eq!(
        mem::accept_range(&mut m, r(7 * MIB, 7 * MIB + 4096)),
        Err(MemError::Tdx {
            gpa: 7 * MIB,
            error: TdxError::Status(0x0000_4242_0000_0000)
        })
    );
}

// ---------------------------------------------------------------- grants

#[test]
fn grant_refuses_l1_memory_before_any_tdcall() {
    let mut m = Handle::new(model());
    let calls = m.get().calls.len();
    let err = mem::grant_l2(
        &mut m,
        r(3 * MIB, 5 * MIB),
        VmIndex::L2,
        attr::RWX,
        L1Memory(&L1),
    )
    .unwrap_err();
    assert_eq!(
        err,
        MemError::L1Memory {
            asked: r(3 * MIB, 5 * MIB),
            l1: L1[0]
        }
    );
    assert_eq!(m.get().calls.len(), calls);
    assert!(m.get().l2_attrs.is_empty());
}

#[test]
fn grant_falls_back_to_4k_and_checks_the_answer() {
    let mut m = Handle::new(model());
    m.get().small_chunks.insert(16 * MIB);
    let s = mem::grant_l2(
        &mut m,
        r(16 * MIB, 20 * MIB),
        VmIndex::L2,
        attr::RWX,
        L1Memory(&L1),
    )
    .unwrap();
    assert_eq!(s.fallbacks, 1);
    let g = m.get();
    assert!(
        (16 * MIB..20 * MIB)
            .step_by(4096)
            .all(|p| g.l2_attr(p) == attr::RWX)
    );
    drop(g);
    // Read back through ATTR.RD.
    let (_, a) = tdcall::mem_page_attr_rd(&mut m, 17 * MIB).unwrap();
    assert_eq!(a.vm(VmIndex::L2) & attr::RWX, attr::RWX);
    assert_eq!(a.l1(), 0);
    // W without R is refused by the module.
    assert_eq!(
        tdcall::mem_page_attr_wr(
            &mut m,
            20 * MIB,
            tdcall::PageSize::Size4K,
            VmIndex::L2,
            attr::W,
            attr::RWX
        ),
        Err(TdxError::Status(u64::from(status::PAGE_ATTR_INVALID) << 32))
    );
}

#[test]
fn start_guest_grants_the_l2_its_memory_and_never_the_l1s() {
    let (h, tdp, setup) = started(model());
    assert_eq!(setup.caa, CAA);
    let g = h.get();
    for l1 in L1 {
        for p in (l1.start.0..l1.end.0).step_by(4096) {
            assert_eq!(g.l2_attr(p), 0, "L1 page {p:#x} granted to the L2");
        }
    }
    for l2 in tdp.l2_memory() {
        for p in (l2.start.0..l2.end.0).step_by(4096) {
            assert_eq!(g.l2_attr(p), attr::RWX, "L2 page {p:#x}");
            assert!(g.is_accepted(p), "L2 page {p:#x} not accepted");
        }
    }
    assert_eq!(
        tdp.l2_memory(),
        [r(4 * MIB, 8 * MIB), r(16 * MIB, 48 * MIB), FW]
    );
    // The firmware kept its contents (accepted at launch) and got its
    // original reset page back.
    let mut b = [0u8; 4096];
    g.peek(FW.end.0 - 4096, &mut b).unwrap();
    assert_eq!(b, [0xAB; 4096]);
    let mut ovmf = [0u8; 4];
    g.peek(FW.start.0, &mut ovmf).unwrap();
    assert_eq!(&ovmf, b"OVMF");
}

#[test]
fn start_guest_sets_up_the_l2_vmcs_and_reset_state() {
    let (h, tdp, _setup) = started(model());
    {
        let g = h.get();
        let f = |enc: u32| g.vp_fields.get(&field::l2_vmcs(1, enc)).copied();
        assert_eq!(f(0x0802), Some(0xF000), "CS selector");
        assert_eq!(f(0x6808), Some(0xFFFF_0000), "CS base");
        assert_eq!(f(0x4802), Some(0xFFFF), "CS limit");
        assert_eq!(f(0x4816), Some(0x9B), "CS access rights");
        assert_eq!(f(0x6800), Some(0x10), "CR0: real mode");
        assert_eq!(f(0x4826), None, "activity state is not the L1's to write");
        assert_eq!(f(0x2012), Some(PAGES.vapic), "virtual-APIC page");
        assert_eq!(f(0x4012), Some(0), "not IA-32e mode");
        // Every L2 TDCALL, TDG.VP.VMCALL included, exits to the L1.
        assert_eq!(g.vp_fields.get(&field::l2_ctls(1)).copied(), Some(0));
        assert_eq!(field::l2_ctls(1), 0xA020_0003_0000_0051);
        assert_eq!(field::NUM_L2_VMS, 0x9010_0001_0000_0005);
    }
    let mut regs = GuestRegisters::default();
    assert_eq!(tdp.run_guest(0, &mut regs), Ok(GuestExit::Halt));
    let first = h.get().entries[0];
    assert_eq!((first.rip, first.rflags), (0xFFF0, 2));
    // A second start is refused.
    assert!(tdp.start_guest(&boot_info()).is_err());
}

// ---------------------------------------------------------------- reports

#[test]
fn report_carries_reportdata_and_parses_at_the_abi_offsets() {
    let mut m = Handle::new(model());
    let rd: [u8; 64] = core::array::from_fn(|i| i as u8 ^ 0x5C);
    let raw = report::get_report(&mut m, ReportPage::new(PAGES.report).unwrap(), &rd).unwrap();
    // The raw bytes at the ABI's offsets, independently of the parser.
    assert_eq!(raw[0], 0x81);
    assert_eq!(&raw[128..192], &rd);
    let g = m.get();
    assert_eq!(&raw[528..576], &g.mrtd);
    for i in 0..4 {
        assert_eq!(&raw[720 + 48 * i..768 + 48 * i], &g.rtmr[i]);
    }
    assert_eq!(g.mac(&raw), raw[224..256]);
    let p = TdReport::parse(&raw).unwrap();
    assert_eq!(p.report_data, rd);
    assert_eq!(p.mrtd, g.mrtd);
    assert_eq!(p.rtmr, g.rtmr);
    assert_eq!(p.mac, g.mac(&raw));
    assert_eq!(
        p.tee_info_hash.as_slice(),
        Sha384::digest(&raw[512..1024]).as_slice()
    );
    assert_eq!(
        p.tee_tcb_info_hash.as_slice(),
        Sha384::digest(&raw[256..495]).as_slice()
    );
    assert!(!p.debug());
    // The REPORTDATA went through the L1 page the platform owns.
    let mut seen = [0u8; 64];
    g.peek(PAGES.report + 1024, &mut seen).unwrap();
    assert_eq!(seen, rd);
}

#[test]
fn parser_reads_a_hand_built_report() {
    let mut b = vec![0u8; 1024];
    b[0] = 0x81;
    b[2] = 1;
    b[128..192].copy_from_slice(&[0x42; 64]);
    b[512] = 1; // DEBUG
    b[528..576].copy_from_slice(&[0x4D; 48]);
    for (i, at) in [720, 768, 816, 864].into_iter().enumerate() {
        b[at..at + 48].copy_from_slice(&[0x10 + i as u8; 48]);
    }
    b[576..624].copy_from_slice(&[0xC1; 48]);
    b[912..960].copy_from_slice(&[0x5E; 48]);
    let p = TdReport::parse(&b).unwrap();
    assert_eq!(p.version, 1);
    assert_eq!(p.report_data, [0x42; 64]);
    assert_eq!(p.mrtd, [0x4D; 48]);
    assert_eq!(p.rtmr, [[0x10; 48], [0x11; 48], [0x12; 48], [0x13; 48]]);
    assert_eq!(p.mrconfigid, [0xC1; 48]);
    assert_eq!(p.servtd_hash, [0x5E; 48]);
    assert!(p.debug());
    b[0] = 0x00; // SGX
    assert_eq!(TdReport::parse(&b), Err(ReportError::NotTdx(0)));
    assert_eq!(TdReport::parse(&b[..1000]), Err(ReportError::Length(1000)));
}

#[test]
fn report_errors_are_errors() {
    let mut m = Handle::new(model());
    let page = ReportPage::new(PAGES.report).unwrap();
    m.get().corrupt_report_data = true;
    assert_eq!(
        report::get_report(&mut m, page, &[1; 64]),
        Err(ReportError::ReportDataMismatch)
    );
    m.get().corrupt_report_data = false;
    m.get().inject.push_back((
        leaf::MR_REPORT,
        (u64::from(status::OPERAND_INVALID) << 32) | 1,
    ));
    assert_eq!(
        report::get_report(&mut m, page, &[1; 64]),
        Err(ReportError::Tdx(TdxError::OperandInvalid(1)))
    );
    // A module that claims success but writes nothing.
    m.get().inject.push_back((leaf::MR_REPORT, 0));
    assert_eq!(
        report::get_report(&mut m, page, &[1; 64]),
        Err(ReportError::NotTdx(0))
    );
    assert!(ReportPage::new(PAGES.report + 64).is_none());
    assert_eq!(
        tdcall::mr_report(&mut m, PAGES.report + 512, PAGES.report + 1024),
        Err(TdxError::BadArgument(
            "TDREPORT or REPORTDATA buffer misaligned"
        ))
    );
    // A page outside TD memory.
    assert!(matches!(
        report::get_report(&mut m, ReportPage(10 * MIB), &[1; 64]),
        Err(ReportError::Tdx(TdxError::BadArgument(_)))
    ));
}

#[test]
fn td_report_carries_the_reportdata() {
    let (h, tdp) = platform(model());
    let out = tdp.td_report(&[9; 64]).unwrap();
    assert_eq!(&out[128..192], &[9; 64]);
    assert_eq!(&out[528..576], &h.get().mrtd);
    assert_eq!(h.get().mac(&out), out[224..256]);
}

/// The quote buffer is private again: every page accepted, none shared or
/// pending, VM 1 without access, the host's copy gone.
fn assert_buffer_private(h: &Handle) {
    let g = h.get();
    for p in (QB.start.0..QB.end.0).step_by(4096) {
        assert!(g.is_accepted(p), "page {p:#x} not accepted");
        assert!(!g.shared.contains(&p), "page {p:#x} still shared");
        assert!(!g.pending.contains(&p), "page {p:#x} pending");
        assert_eq!(g.l2_attr(p), 0, "page {p:#x} reachable by the L2");
    }
    assert!(g.host_mem.keys().all(|p| !QB.contains(PhysAddr(*p))));
    assert_eq!(g.dirty_shares, Vec::<u64>::new(), "shared with contents");
    assert_eq!(
        g.l1_faults,
        Vec::<u64>::new(),
        "private access to a shared page"
    );
}

#[test]
fn platform_report_is_a_quote_of_the_tdreport() {
    let (h, tdp) = platform(model());
    // Secrets left in the buffer's private pages must not reach the host.
    h.get().poke(QB.start.0, &[0x5A; 8192]).unwrap();
    assert_eq!(tdp.attestation_report_len(), None);
    let q = tdp.attestation_report_vec(&[9; 64]).unwrap();
    let g = h.get();
    // The host saw one request on the SHARED alias of the 16 KiB buffer,
    // carrying a TDREPORT with the REPORTDATA and a good MAC.
    assert_eq!(g.quote_requests, [(QB.start.0 | SHARED_BIT, 16384)]);
    let seen: [u8; 1024] = g.quoted_reports[0].clone().try_into().unwrap();
    assert_eq!(&seen[128..192], &[9; 64]);
    assert_eq!(g.mac(&seen), seen[224..256]);
    // The quote: the model's v4 quote of that TDREPORT, read at the
    // format's offsets independently of the checker.
    assert_eq!(q, g.build_quote(&seen, 4000));
    assert_eq!(q.len(), 48 + 584 + 4 + 4000);
    assert_eq!(&q[0..2], &[4, 0]);
    assert_eq!(&q[4..8], &[0x81, 0, 0, 0]);
    assert_eq!(&q[48 + 520..48 + 584], &[9; 64], "REPORTDATA");
    assert_eq!(&q[48 + 136..48 + 184], &g.mrtd, "MRTD");
    // MapGPA to shared and back, each once, over the whole buffer.
    assert_eq!(
        g.map_gpa,
        [(QB.start.0 | SHARED_BIT, 16384), (QB.start.0, 16384)]
    );
    drop(g);
    assert_buffer_private(&h);
    // The private pages came back zeroed (accepted again), not with the
    // secrets.
    let mut b = [0u8; 16];
    h.get().peek(QB.start.0, &mut b).unwrap();
    assert_eq!(b, [0; 16]);
    // Into a slice: the length is the quote's.
    let mut out = vec![0u8; 8192];
    assert_eq!(tdp.attestation_report(&[9; 64], &mut out), Ok(q.len()));
    assert_eq!(
        tdp.attestation_report(&[9; 64], &mut [0u8; 1024]),
        Err(PlatformError::BufferTooSmall(q.len()))
    );
    assert_buffer_private(&h);
}

#[test]
fn quote_waits_while_the_host_is_in_flight() {
    let (h, tdp) = platform(model());
    h.get().qgs = Qgs::InFlight { looks: 50 };
    let q = tdp.quote(&[1; 64]).unwrap();
    assert_eq!(&q[48 + 520..48 + 584], &[1; 64]);
    assert_buffer_private(&h);
    // A host that never answers: BUSY after the poll budget, buffer private.
    h.get().qgs = Qgs::InFlight { looks: u32::MAX };
    tdp.set_quote_polls(1000);
    assert!(matches!(tdp.quote(&[1; 64]), Err(PlatformError::Busy(_))));
    assert_buffer_private(&h);
    // The host answers the first request late, into the second one's
    // buffer: that quote is of the wrong TDREPORT and refused.
    h.get().qgs = Qgs::Previous;
    assert!(matches!(
        tdp.quote(&[2; 64]),
        Err(PlatformError::Firmware(_))
    ));
    assert_buffer_private(&h);
    // And the platform still quotes afterwards.
    h.get().qgs = Qgs::Quote;
    assert!(tdp.quote(&[3; 64]).is_ok());
}

#[test]
fn quote_errors_from_the_host() {
    let (h, tdp) = platform(model());
    type Expect = fn(&PlatformError) -> bool;
    let cases: Vec<(Qgs, Expect)> = vec![
        (Qgs::Unavailable, |e| {
            matches!(e, PlatformError::Unsupported(_))
        }),
        (Qgs::Status(report::quote_buf::ERROR), |e| {
            *e == PlatformError::Firmware(report::quote_buf::ERROR)
        }),
        (Qgs::Status(0x1234), |e| {
            *e == PlatformError::Firmware(0x1234)
        }),
        (Qgs::Retry, |e| matches!(e, PlatformError::Busy(_))),
    ];
    for (qgs, expect) in cases {
        h.get().qgs = qgs.clone();
        let e = tdp.quote(&[4; 64]).unwrap_err();
        assert!(expect(&e), "{qgs:?}: {e:?}");
        assert_buffer_private(&h);
    }
    // Through the attestation protocol's provider: no quoting service is
    // INVALID_REQUEST, a busy host BUSY.
    use crate::protocols::attest::ReportProvider;
    let mut reports = PlatformReports::new(tdp);
    h.get().qgs = Qgs::Unavailable;
    assert_eq!(
        reports.report(&[4; 64]),
        Err(crate::protocols::SvsmError::INVALID_REQUEST)
    );
    h.get().qgs = Qgs::Retry;
    assert_eq!(
        reports.report(&[4; 64]),
        Err(crate::protocols::SvsmError(result::BUSY))
    );
    assert_eq!(reports.report_len(), None);
}

#[test]
fn quote_garbage_from_a_hostile_host_is_refused() {
    let (h, tdp) = platform(model());
    let rd = [6u8; 64];
    let (good, other_rd) = {
        let g = h.get();
        // The TDREPORT the platform will make: the same fields and MAC.
        let good = g.build_quote(&g.build_report(&rd), 4000);
        (good, g.build_quote(&g.build_report(&[7; 64]), 4000))
    };
    let mut other_td = good.clone();
    other_td[48 + 136] ^= 1; // MRTD
    let mut v3 = good.clone();
    v3[0] = 3;
    let mut sgx = good.clone();
    sgx[4] = 0;
    let raw = |status: u64, out_len: usize, data: &[u8]| Qgs::Raw {
        status,
        out_len: out_len as u32,
        data: data.to_vec(),
    };
    let max = report::quote_buf::LEN - 24;
    let cases = [
        ("no quote", raw(0, 0, &[])),
        ("out_len past the buffer", raw(0, max + 1, &good)),
        ("out_len u32::MAX", raw(0, u32::MAX as usize, &good)),
        ("not a quote", raw(0, 700, &[0x41; 700])),
        ("truncated", raw(0, good.len() - 1, &good)),
        (
            "longer than its signature data",
            raw(0, good.len() + 1, &good),
        ),
        ("another REPORTDATA", raw(0, other_rd.len(), &other_rd)),
        ("another TD", raw(0, other_td.len(), &other_td)),
        ("version 3", raw(0, v3.len(), &v3)),
        ("SGX quote", raw(0, sgx.len(), &sgx)),
        ("header only", raw(0, 48, &good)),
    ];
    for (what, qgs) in cases {
        h.get().qgs = qgs;
        assert!(
            matches!(tdp.quote(&rd), Err(PlatformError::Firmware(_))),
            "{what} accepted"
        );
        assert_buffer_private(&h);
    }
    // The same good quote through the same path is taken.
    h.get().qgs = raw(0, good.len(), &good);
    assert_eq!(tdp.quote(&rd), Ok(good));
}

#[test]
fn quote_check_reads_v4_and_v5() {
    let m = model();
    let rep = m.build_report(&[8; 64]);
    let v4 = m.build_quote(&rep, 300);
    assert_eq!(report::check_quote(&v4, &rep), Ok(()));
    // v5 with a TDX 1.5 body: type 3, size 648 (the v4 body, TEE_TCB_SVN2,
    // MRSERVICETD), then the signature data.
    let mut v5 = v4[..48].to_vec();
    v5[0] = 5;
    v5.extend_from_slice(&3u16.to_le_bytes());
    v5.extend_from_slice(&648u32.to_le_bytes());
    v5.extend_from_slice(&v4[48..632]);
    v5.extend_from_slice(&[0u8; 64]);
    v5.extend_from_slice(&v4[632..]);
    assert_eq!(report::check_quote(&v5, &rep), Ok(()));
    let mut bad = v5.clone();
    bad[50] = 0x40; // size 576 + ... no longer 648
    assert!(report::check_quote(&bad, &rep).is_err());
    let mut bad = v5.clone();
    bad[48] = 2; // TDX 1.0 body type with the 1.5 size
    assert!(report::check_quote(&bad, &rep).is_err());
    // The other REPORTDATA is a mismatch, named as such.
    let other = m.build_report(&[9; 64]);
    assert_eq!(
        report::check_quote(&v4, &other),
        Err(ReportError::ReportDataMismatch)
    );
    for n in [0, 10, 47, 48, 631, 635, 636] {
        assert!(report::check_quote(&v4[..n], &rep).is_err(), "{n} bytes");
    }
    // GetQuote itself refuses unaligned buffers before any VMCALL.
    let mut h = Handle::new(model());
    assert!(matches!(
        tdcall::get_quote(&mut h, (QB.start.0 + 8) | SHARED_BIT, 4096),
        Err(TdxError::BadArgument(_))
    ));
    assert!(matches!(
        tdcall::get_quote(&mut h, QB.start.0 | SHARED_BIT, 100),
        Err(TdxError::BadArgument(_))
    ));
    assert!(h.get().calls.is_empty());
}

#[test]
fn quote_buffer_that_stays_shared_is_never_used_again() {
    let (h, tdp) = platform(model());
    h.get().refuse_private = true;
    assert!(tdp.quote(&[1; 64]).is_err());
    h.get().refuse_private = false;
    let calls = h.get().calls.len();
    assert!(matches!(
        tdp.quote(&[1; 64]),
        Err(PlatformError::Unsupported(_))
    ));
    assert_eq!(h.get().calls.len(), calls, "no TDCALL at all");
}

#[test]
fn the_l2_never_reaches_the_quote_buffer() {
    let (h, tdp, mut setup) = started(model());
    tdp.quote(&[1; 64]).unwrap();
    // No shared EPT for the L2: it cannot reach any shared GPA.
    assert_eq!(h.get().vp_fields.get(&field::l2_ctls(1)).copied(), Some(0));
    // Neither alias of the buffer is granted, accepted again or not.
    let mut svsm = Svsm::new(setup.caa, Some(EchoTpm));
    h.get().exits.push_back(Exit {
        reason: 12, // HLT
        instr_len: 1,
        writes: vec![
            (QB.start.0, vec![1; 8]),
            (QB.start.0 | SHARED_BIT, vec![2; 8]),
            (5 * MIB, vec![3; 8]),
        ],
        ..Default::default()
    });
    let mut regs = GuestRegisters::default();
    serve_once(tdp, &mut setup, &mut svsm, &mut regs);
    assert_eq!(h.get().l2_violations, [QB.start.0, QB.start.0 | SHARED_BIT]);
    // Not through the SVSM either: not guest memory, not grantable.
    let g = setup.memory.as_mut();
    assert!(!g.is_guest_memory(QB.start.0, 8));
    assert_eq!(
        g.pvalidate(QB.start.0, false, true, false),
        Err(crate::protocols::SvsmError::INVALID_ADDRESS)
    );
    let mut m = h.clone();
    assert!(matches!(
        mem::grant_l2(&mut m, QB, VmIndex::L2, attr::RWX, L1Memory(&L1)),
        Err(MemError::L1Memory { .. })
    ));
    // Even a module that re-adds the pages with VM 1 access: the L1
    // revokes it after every quote.
    h.get().readd_l2_attrs = attr::RWX;
    h.get().qgs = Qgs::Unavailable;
    let _ = tdp.quote(&[1; 64]);
    assert_buffer_private(&h);
}

// ---------------------------------------------------------------- run loop

/// The request loop of `requests.rs`, one exit at a time.
fn serve_once(
    tdp: &'static Tdp<Handle>,
    setup: &mut GuestSetup,
    svsm: &mut Svsm<EchoTpm>,
    regs: &mut GuestRegisters,
) -> GuestExit {
    let exit = tdp.run_guest(0, regs).expect("run_guest");
    if exit == GuestExit::SvsmCall
        && take_pending_call(setup.memory.as_mut(), svsm.caa) == CallArea::Pending
    {
        svsm.handle(setup.memory.as_mut(), regs);
    }
    exit
}

fn last_entry(h: &Handle) -> L2State {
    *h.get().entries.last().unwrap()
}

#[test]
fn l2_svsm_call_reaches_the_dispatcher() {
    let m = model();
    let (h, tdp, mut setup) = started(m);
    let mut svsm = Svsm::new(setup.caa, Some(EchoTpm));
    // The L2 asks QUERY_PROTOCOL for the vTPM protocol, version 1.
    h.get().exits.push_back(tdcall_exit(
        vec![
            (gpr::RAX, 6),
            (gpr::RCX, (u64::from(protocol::VTPM) << 32) | 1),
            (gpr::RBX, 0x1234),
        ],
        vec![(CAA, vec![1])],
    ));
    let mut regs = GuestRegisters::default();
    assert_eq!(
        serve_once(tdp, &mut setup, &mut svsm, &mut regs),
        GuestExit::SvsmCall
    );
    assert_eq!(regs.rax, result::SUCCESS);
    assert_eq!(regs.rcx, (1 << 32) | 1);
    // Resuming hands the result to the L2 past its TDCALL.
    assert_eq!(
        serve_once(tdp, &mut setup, &mut svsm, &mut regs),
        GuestExit::Halt
    );
    let e = last_entry(&h);
    assert_eq!(e.gprs[gpr::RAX], result::SUCCESS);
    assert_eq!(e.gprs[gpr::RCX], (1 << 32) | 1);
    assert_eq!(e.gprs[gpr::RBX], 0x1234, "other L2 registers kept");
    assert_eq!(e.rip, 0xFFF0 + 4);
    let mut ca = [0u8; 1];
    h.get().peek(CAA, &mut ca).unwrap();
    assert_eq!(ca, [0], "call_pending cleared");
    assert_eq!(h.get().l2_violations, Vec::<u64>::new());
}

#[test]
fn l2_vtpm_command_round_trip() {
    let (h, tdp, mut setup) = started(model());
    let mut svsm = Svsm::new(setup.caa, Some(EchoTpm));
    let page = 20 * MIB;
    // SVSM_VTPM_CMD request: u32 cmd = 8, u8 locality, u32 size, command.
    let mut req = vec![8, 0, 0, 0, 0, 3, 0, 0, 0];
    req.extend_from_slice(b"abc");
    h.get().exits.push_back(tdcall_exit(
        vec![
            (gpr::RAX, (u64::from(protocol::VTPM) << 32) | 1),
            (gpr::RCX, page),
        ],
        vec![(page, req), (CAA, vec![1])],
    ));
    let mut regs = GuestRegisters::default();
    assert_eq!(
        serve_once(tdp, &mut setup, &mut svsm, &mut regs),
        GuestExit::SvsmCall
    );
    assert_eq!(regs.rax, result::SUCCESS);
    // Response: u32 size, then EchoTpm's marker, locality and the command.
    let mut out = [0u8; 9];
    h.get().peek(page, &mut out).unwrap();
    assert_eq!(&out, b"\x05\0\0\0\xEE\0abc");
}

#[test]
fn remap_ca_moves_where_the_loop_looks_for_call_pending() {
    let (h, tdp, mut setup) = started(model());
    let mut svsm = Svsm::new(setup.caa, Some(EchoTpm));
    let new_ca = 6 * MIB;
    let query = (gpr::RCX, (u64::from(protocol::VTPM) << 32) | 1);
    h.get().exits.extend([
        // REMAP_CA to 6 MiB.
        tdcall_exit(
            vec![(gpr::RAX, 0), (gpr::RCX, new_ca)],
            vec![(CAA, vec![1])],
        ),
        // QUERY_PROTOCOL with call_pending in the new area only.
        tdcall_exit(vec![(gpr::RAX, 6), query], vec![(new_ca, vec![1])]),
        // A failed REMAP_CA (to L1 memory) keeps the area.
        tdcall_exit(
            vec![(gpr::RAX, 0), (gpr::RCX, 2 * MIB)],
            vec![(new_ca, vec![1])],
        ),
        tdcall_exit(vec![(gpr::RAX, 6), query], vec![(new_ca, vec![1])]),
    ]);
    let mut regs = GuestRegisters::default();
    for (expect_rax, expect_rcx) in [
        (result::SUCCESS, new_ca),
        (result::SUCCESS, (1 << 32) | 1),
        (result::INVALID_ADDRESS, 2 * MIB),
        (result::SUCCESS, (1 << 32) | 1),
    ] {
        assert_eq!(
            serve_once(tdp, &mut setup, &mut svsm, &mut regs),
            GuestExit::SvsmCall
        );
        assert_eq!((regs.rax, regs.rcx), (expect_rax, expect_rcx));
    }
    assert_eq!(svsm.caa, new_ca);
    assert_eq!(tdp.loop_stats().refused_tdcalls, 0);
}

#[test]
fn l2_attestation_call_gets_a_quote_bound_to_its_nonce() {
    let (h, tdp, mut setup) = started(model());
    let mut svsm = Svsm::new(setup.caa, Some(EchoTpm));
    svsm.attest = Some(Box::new(PlatformReports::new(tdp)));
    let (req, nonce, manifest, report) = (
        5 * MIB,
        5 * MIB + 0x1000,
        5 * MIB + 0x2000,
        5 * MIB + 0x4000,
    );
    let request = |report_size: u32| {
        let mut q = vec![0u8; 0x40];
        q[0..8].copy_from_slice(&report.to_le_bytes());
        q[8..12].copy_from_slice(&report_size.to_le_bytes());
        q[0x10..0x18].copy_from_slice(&nonce.to_le_bytes());
        q[0x18..0x1A].copy_from_slice(&32u16.to_le_bytes());
        q[0x20..0x28].copy_from_slice(&manifest.to_le_bytes());
        q[0x28..0x2C].copy_from_slice(&4096u32.to_le_bytes());
        tdcall_exit(
            vec![
                (gpr::RAX, u64::from(protocol::ATTEST) << 32),
                (gpr::RCX, req),
            ],
            vec![(req, q), (nonce, vec![0x77; 32]), (CAA, vec![1])],
        )
    };
    // Twice with a buffer too small for a quote (the TDREPORT's 1024
    // bytes), then with one that fits: one quote asked of the host.
    let mut regs = GuestRegisters::default();
    let mut quote_len = 0;
    for size in [1024, 1024, 16384] {
        h.get().exits.push_back(request(size));
        serve_once(tdp, &mut setup, &mut svsm, &mut regs);
        let expect = if size == 16384 {
            result::SUCCESS
        } else {
            result::INVALID_PARAMETER
        };
        assert_eq!(regs.rax, expect, "buffer of {size}");
        quote_len = regs.r8 as usize;
        assert_eq!(h.get().quote_requests.len(), 1);
    }
    assert_eq!(quote_len, 48 + 584 + 4 + 4000);
    let g = h.get();
    let mut mf = vec![0u8; regs.rcx as usize];
    g.peek(manifest, &mut mf).unwrap();
    let mut q = vec![0u8; quote_len];
    g.peek(report, &mut q).unwrap();
    let mut hsh = Sha512::new();
    hsh.update([0x77; 32]);
    hsh.update(&mf);
    assert_eq!(&q[48 + 520..48 + 584], hsh.finalize().as_slice());
    assert_eq!(&q[48 + 136..48 + 184], &g.mrtd);
    let tdreport: [u8; 1024] = g.quoted_reports[0].clone().try_into().unwrap();
    assert_eq!(report::check_quote(&q, &tdreport), Ok(()));
    drop(g);
    assert_buffer_private(&h);
}

#[test]
fn l2_is_refused_every_tdcall_that_touches_l1_evidence() {
    let (h, tdp, mut setup) = started(model());
    let mut svsm = Svsm::new(setup.caa, Some(EchoTpm));
    let forbidden = [
        leaf::MR_REPORT,
        leaf::MR_RTMR_EXTEND,
        leaf::VM_RD,
        leaf::VM_WR,
        leaf::VP_RD,
        leaf::VP_WR,
        leaf::VP_ENTER,
        // MEM.PAGE.ACCEPT is made for the L2 on its own memory (below).
        leaf::MEM_PAGE_ATTR_WR,
        leaf::SERVTD_RD,
        leaf::SERVTD_WR,
        leaf::MR_VERIFYREPORT,
        leaf::SYS_RD,
        leaf::VP_VEINFO_GET,
        leaf::VP_INVEPT,
        (1 << 32) | leaf::MR_REPORT, // reserved bits set
        0x1_0004,                    // MR.REPORT, version 1
    ];
    let calls_before = h.get().calls.len();
    for &l in &forbidden {
        h.get().exits.push_back(tdcall_exit(
            vec![(gpr::RAX, l), (gpr::RCX, 5 * MIB), (gpr::RDX, 6 * MIB)],
            vec![],
        ));
    }
    let mut regs = GuestRegisters::default();
    assert_eq!(
        serve_once(tdp, &mut setup, &mut svsm, &mut regs),
        GuestExit::Halt
    );
    let g = h.get();
    // One entry per refused TDCALL, each resuming the L2 with the error.
    let entries = &g.entries[g.entries.len() - forbidden.len()..];
    for (e, &l) in entries.iter().zip(&forbidden) {
        assert_eq!(e.gprs[gpr::RAX], REFUSED, "leaf {l:#x}");
    }
    assert_eq!(REFUSED, 0xC000_0100_0000_0000);
    // The L1 made none of them on the L2's behalf: only VP.ENTERs.
    assert!(g.calls[calls_before..].iter().all(|&c| c == leaf::VP_ENTER));
    drop(g);
    assert_eq!(tdp.loop_stats().refused_tdcalls, forbidden.len() as u64);
}

#[test]
fn l2_tdvmcalls_io_and_cpuid_are_served_the_rest_refused() {
    let (h, tdp, mut setup) = started(model());
    let mut svsm = Svsm::new(setup.caa, Some(EchoTpm));
    h.get().io_in_value = 0x60;
    let vmc = |r11: u64, more: &[(usize, u64)]| {
        let mut set = vec![(gpr::RAX, leaf::VP_VMCALL), (gpr::R10, 0), (gpr::R11, r11)];
        set.extend_from_slice(more);
        tdcall_exit(set, vec![])
    };
    let script = [
        vmc(
            vmcall::IO,
            &[
                (gpr::R12, 1),
                (gpr::R13, 1),
                (gpr::R14, 0x3F8),
                (gpr::R15, u64::from(b'A')),
            ],
        ),
        vmc(
            vmcall::IO,
            &[(gpr::R12, 1), (gpr::R13, 0), (gpr::R14, 0x3FD)],
        ),
        vmc(vmcall::CPUID, &[(gpr::R12, 0x4000_0000), (gpr::R13, 0)]),
        vmc(vmcall::RDMSR, &[(gpr::R12, 0x830)]),
        vmc(vmcall::GET_QUOTE, &[(gpr::R12, 5 * MIB), (gpr::R13, 4096)]),
        vmc(vmcall::MAP_GPA, &[(gpr::R12, 2 * MIB), (gpr::R13, 4096)]),
        vmc(
            vmcall::IO,
            &[(gpr::R12, 3), (gpr::R13, 1), (gpr::R14, 0x3F8)],
        ),
        tdcall_exit(vec![(gpr::RAX, 0), (gpr::R10, 1), (gpr::R11, 30)], vec![]),
    ];
    let n = script.len();
    h.get().exits.extend(script);
    let mut regs = GuestRegisters::default();
    assert_eq!(
        serve_once(tdp, &mut setup, &mut svsm, &mut regs),
        GuestExit::Halt
    );
    let g = h.get();
    let e = &g.entries[g.entries.len() - n..];
    assert_eq!(e[0].gprs[gpr::R10], 0);
    assert_eq!(e[0].gprs[gpr::RAX], 0);
    assert_eq!((e[1].gprs[gpr::R10], e[1].gprs[gpr::R11]), (0, 0x60));
    assert_eq!(
        [e[2].gprs[gpr::R12], e[2].gprs[gpr::R13]],
        [0x4000_1000, 0x2000]
    );
    for (i, what) in [
        (3, "RDMSR of the L1's APIC"),
        (4, "GetQuote"),
        (5, "MapGPA of L1 memory"),
        (6, "bad size"),
        (7, "vendor call"),
    ] {
        assert_eq!(e[i].gprs[gpr::R10], vmcall::INVALID_OPERAND, "{what}");
    }
    // The host saw exactly the console OUT and the IN, nothing else.
    assert_eq!(
        g.io[g.io.len() - 2..],
        [(0x3F8, 1, true, u64::from(b'A')), (0x3FD, 1, false, 0)]
    );
    assert!(g.map_gpa.is_empty());
    assert!(
        g.host_vmcalls.iter().all(|c| c[0] == vmcall::IO),
        "nothing but the port I/O reached the host"
    );
    drop(g);
    assert_eq!(tdp.loop_stats().refused_vmcalls, 5);
}

#[test]
fn l2_instruction_exits() {
    let (h, tdp, mut setup) = started(model());
    let mut svsm = Svsm::new(setup.caa, Some(EchoTpm));
    h.get().io_in_value = 0xFFFF_FF21;
    let exit = |reason: u32, qual: u64, len: u32, set: Vec<(usize, u64)>| Exit {
        reason,
        qual,
        instr_len: len,
        set,
        ..Default::default()
    };
    h.get().exits.extend([
        // OUT DX, AL to COM1.
        exit(30, 0x3F8 << 16, 1, vec![(gpr::RAX, 0xAA42)]),
        // IN AL, 0x61 (port in the qualification, immediate).
        exit(
            30,
            (0x61 << 16) | 8 | 0x40,
            2,
            vec![(gpr::RAX, 0x1234_5600)],
        ),
        // CPUID leaf 1.
        exit(10, 0, 2, vec![(gpr::RAX, 1), (gpr::RCX, 0)]),
        // RDMSR: #GP.
        exit(31, 0, 2, vec![]),
    ]);
    let mut regs = GuestRegisters::default();
    assert_eq!(
        serve_once(tdp, &mut setup, &mut svsm, &mut regs),
        GuestExit::Halt
    );
    let g = h.get();
    let e = &g.entries[g.entries.len() - 4..];
    assert_eq!(
        g.io[g.io.len() - 2..],
        [(0x3F8, 1, true, 0x42), (0x61, 1, false, 0)]
    );
    assert_eq!(e[1].gprs[gpr::RAX], 0x1234_5621, "IN merges the low byte");
    assert_eq!(e[2].gprs[gpr::RAX], 0x1001);
    assert_eq!(e[2].gprs[gpr::RBX], 0x2000);
    assert_eq!(e[2].rip, e[1].rip + 2);
    // #GP(0) queued for the next entry, RIP not advanced.
    let info = g.vp_fields.get(&field::l2_vmcs(1, 0x4016)).copied();
    assert_eq!(info, Some(0x8000_0B0D));
    assert_eq!(e[3].rip, e[2].rip);
    drop(g);

    // TDCALL from user mode, even with call_pending: #GP, no SVSM call.
    // VMCALL: #UD.
    h.get().exits.push_back(Exit {
        cpl: 3,
        ..tdcall_exit(vec![(gpr::RAX, 6)], vec![(CAA, vec![1])])
    });
    h.get().exits.push_back(exit(18, 0, 3, vec![]));
    // Where the L2 stands now: past the HLT (1 byte) that ended the last run.
    let rip = last_entry(&h).rip + 1;
    assert_eq!(tdp.run_guest(0, &mut regs), Ok(GuestExit::Halt));
    let g = h.get();
    let e = &g.entries[g.entries.len() - 2..];
    assert_eq!(e[0].rip, rip, "#GP leaves RIP on the TDCALL");
    assert_eq!(e[1].rip, rip, "#UD leaves RIP on the VMCALL");
    assert_eq!(
        g.vp_fields.get(&field::l2_vmcs(1, 0x4016)).copied(),
        Some(0x8000_0306),
        "#UD queued last"
    );
    drop(g);
    assert_eq!(tdp.loop_stats().gp_injected, 2);
    assert_eq!(tdp.loop_stats().ud_injected, 1);
    let mut ca = [0u8; 1];
    h.get().peek(CAA, &mut ca).unwrap();
    assert_eq!(ca, [1], "call_pending untouched: no SVSM call was made");

    // String I/O, EPT violations, unknown reasons: not handled, not a panic.
    for (reason, qual) in [(30, (0x3F8 << 16) | 0x10), (48, 0x181), (0xFFFF, 7)] {
        h.get().exits.push_back(exit(reason, qual, 1, vec![]));
        assert_eq!(
            tdp.run_guest(0, &mut regs),
            Ok(GuestExit::Unhandled {
                code: u64::from(reason),
                info: qual
            })
        );
    }
    h.get().exits.push_back(exit(2, 0, 0, vec![]));
    assert_eq!(tdp.run_guest(0, &mut regs), Ok(GuestExit::Shutdown));
}

#[test]
fn garbage_from_the_module_is_an_error_not_a_panic() {
    let (h, tdp, _setup) = started(model());
    let mut regs = GuestRegisters::default();
    type Case = Box<dyn Fn(&mut Model)>;
    let cases: Vec<Case> = vec![
        // An undefined warning status.
        Box::new(|m| m.inject.push_back((leaf::VP_ENTER, 0x0000_4242_0000_004D))),
        // An error status.
        Box::new(|m| m.inject.push_back((leaf::VP_ENTER, 0xC000_0100_0000_0002))),
        // A VM-entry failure.
        Box::new(|m| m.inject.push_back((leaf::VP_ENTER, 0x8000_0021))),
        // An L2 TDCALL exit with an impossible instruction length.
        Box::new(|m| {
            m.exits.push_back(Exit {
                reason: 77,
                instr_len: 0,
                ..Default::default()
            })
        }),
        Box::new(|m| {
            m.exits.push_back(Exit {
                reason: 30,
                qual: 0x3F8 << 16,
                instr_len: 99,
                ..Default::default()
            })
        }),
    ];
    for case in &cases {
        case(&mut h.get());
        assert!(
            matches!(tdp.run_guest(0, &mut regs), Err(PlatformError::Firmware(_))),
            "garbage accepted"
        );
    }
    // The host keeps resuming the L1 without entering the L2: still fine.
    h.get().exits.extend((0..3).map(|_| Exit {
        status: status::PENDING_INTERRUPT,
        ..Default::default()
    }));
    assert_eq!(tdp.run_guest(0, &mut regs), Ok(GuestExit::Halt));
    assert_eq!(tdp.loop_stats().resumes, 3);
}

#[test]
fn module_garbage_at_construction() {
    let mut m = model();
    m.gpaw = 7;
    let h = Handle::new(m);
    assert_eq!(
        Tdp::new(h.clone(), h.clone(), &launch(), PAGES).err(),
        Some(PlatformError::Firmware(u64::MAX))
    );
    let mut m = model();
    m.num_l2_vms = 0;
    let h = Handle::new(m);
    assert!(matches!(
        Tdp::new(h.clone(), h, &launch(), PAGES),
        Err(PlatformError::Unsupported(_))
    ));
    let mut m = model();
    m.inject.push_back((leaf::VM_RD, 0xC000_0C00_0000_0000));
    let h = Handle::new(m);
    assert!(matches!(
        Tdp::new(h.clone(), h, &launch(), PAGES),
        Err(PlatformError::Firmware(_))
    ));
}

#[test]
fn layout_checks() {
    let bad = |l: TdpLaunch<'_>, p: L1Pages| {
        let h = Handle::new(model());
        Tdp::new(h.clone(), h, &l, p).err()
    };
    let ok = launch();
    // The Calling Area must be L2 memory.
    assert!(bad(TdpLaunch { caa: 2 * MIB, ..ok }, PAGES).is_some());
    // The SVSM's own pages must be L1 memory.
    assert!(
        bad(
            ok,
            L1Pages {
                report: 5 * MIB,
                ..PAGES
            }
        )
        .is_some()
    );
    assert!(
        bad(
            ok,
            L1Pages {
                vapic: 0x20_2800,
                ..PAGES
            }
        )
        .is_some()
    );
    assert!(
        bad(
            TdpLaunch {
                reset_page_copy: 6 * MIB,
                ..ok
            },
            PAGES
        )
        .is_some()
    );
    // The firmware may not overlap the L1, and its entry lies inside it.
    let l1 = [L1[0], r(0xFFF0_0000, 0xFFF1_0000)];
    assert!(bad(TdpLaunch { l1: &l1, ..ok }, PAGES).is_some());
    assert!(
        bad(
            TdpLaunch {
                firmware_entry: 0x1000,
                ..ok
            },
            PAGES
        )
        .is_some()
    );
    assert!(bad(ok, PAGES).is_none());
}

#[test]
fn guest_view_and_pvalidate() {
    let (h, tdp, mut setup) = started(model());
    let g = setup.memory.as_mut();
    assert!(g.is_guest_memory(5 * MIB, 4096));
    assert!(!g.is_guest_memory(2 * MIB, 8), "L1 memory");
    assert!(!g.is_guest_memory(8 * MIB - 4, 8), "past the end");
    assert_eq!(
        g.read(PAGES.report, &mut [0u8; 8]),
        Err(crate::protocols::SvsmError::INVALID_ADDRESS)
    );
    assert_eq!(
        g.write(3 * MIB, b"x"),
        Err(crate::protocols::SvsmError::INVALID_ADDRESS)
    );
    // Validation accepts and grants; L1 pages are refused; invalidation too.
    h.get().l2_attrs.remove(&(6 * MIB));
    g.pvalidate(6 * MIB, false, true, false).unwrap();
    assert_eq!(h.get().l2_attr(6 * MIB), attr::RWX);
    assert_eq!(
        g.pvalidate(2 * MIB, true, true, false),
        Err(crate::protocols::SvsmError::INVALID_ADDRESS)
    );
    assert_eq!(
        g.pvalidate(6 * MIB, false, false, false),
        Err(crate::protocols::SvsmError::INVALID_REQUEST)
    );
    // Invalidating: L1 pages go shared through MapGPA, L2 pages are refused.
    assert!(tdp.invalidate_pages(r(5 * MIB, 5 * MIB + 4096)).is_err());
    tdp.invalidate_pages(r(3 * MIB, 3 * MIB + 4096)).unwrap();
    assert_eq!(h.get().map_gpa.last(), Some(&((3 * MIB) | (1 << 47), 4096)));
}

#[test]
fn console_goes_through_tdvmcall_io() {
    let (h, tdp) = platform(model());
    tdp.console_write(b"hi");
    let g = h.get();
    assert_eq!(
        g.io[g.io.len() - 2..],
        [
            (COM1, 1, true, u64::from(b'h')),
            (COM1, 1, true, u64::from(b'i'))
        ]
    );
    assert_eq!(tdp.kind(), crate::platform::PlatformKind::Tdp);
}

#[test]
fn subtract_ranges() {
    let mut out = [r(0, 0); 4];
    let n = mem::subtract(r(0, 100), &[r(10, 20), r(15, 30), r(90, 200)], &mut out);
    assert_eq!(&out[..n], &[r(0, 10), r(30, 90)]);
    let n = mem::subtract(r(0, 100), &[r(0, 100)], &mut out);
    assert_eq!(n, 0);
    let n = mem::subtract(r(50, 60), &[], &mut out);
    assert_eq!(&out[..n], &[r(50, 60)]);
}

#[test]
fn vp_info_decoding() {
    let mut h = Handle::new(model());
    let info = tdcall::vp_info(&mut h).unwrap();
    assert_eq!((info.gpaw, info.shared_bit()), (48, 1 << 47));
    h.get().gpaw = 52;
    assert_eq!(tdcall::vp_info(&mut h).unwrap().shared_bit(), 1 << 51);
}

// ------------------------------------------------- forwarded TDG.VP.VMCALLs

/// An L2 TDG.VP.VMCALL of sub-function `r11` with more registers.
fn vmc(r11: u64, more: &[(usize, u64)]) -> Exit {
    let mut set = vec![(gpr::RAX, leaf::VP_VMCALL), (gpr::R10, 0), (gpr::R11, r11)];
    set.extend_from_slice(more);
    tdcall_exit(set, vec![])
}

/// Plays `script` (then the model's HLT) and returns the L2's registers at
/// the entry after each exit, and the host's VMCALLs made meanwhile.
fn play(
    h: &Handle,
    tdp: &'static Tdp<Handle>,
    setup: &mut GuestSetup,
    script: Vec<Exit>,
) -> (Vec<L2State>, Vec<[u64; 5]>) {
    let mut svsm = Svsm::new(setup.caa, Some(EchoTpm));
    let n = script.len();
    let host_before = h.get().host_vmcalls.len();
    h.get().exits.extend(script);
    let mut regs = GuestRegisters::default();
    assert_eq!(
        serve_once(tdp, setup, &mut svsm, &mut regs),
        GuestExit::Halt,
        "the L2 resumed after every request"
    );
    let g = h.get();
    (
        g.entries[g.entries.len() - n..].to_vec(),
        g.host_vmcalls[host_before..].to_vec(),
    )
}

const MMIO_READ: u64 = vmcall::MMIO_READ;
const MMIO_WRITE: u64 = vmcall::MMIO_WRITE;

fn mmio(size: u64, dir: u64, gpa: u64, value: u64) -> Exit {
    vmc(
        vmcall::MMIO,
        &[
            (gpr::R12, size),
            (gpr::R13, dir),
            (gpr::R14, gpa),
            (gpr::R15, value),
            (gpr::R11, vmcall::MMIO),
        ],
    )
}

#[test]
fn l2_mmio_is_forwarded_for_devices_only() {
    let (h, tdp, mut setup) = started(model());
    h.get().mmio_value = 0x1122_3344_5566_7788;
    let script = vec![
        // The local APIC's version register, the HPET, a shared page.
        mmio(4, MMIO_READ, 0xFEE0_0030, 0),
        mmio(8, MMIO_WRITE, 0xFED0_0010, 0xDEAD_BEEF_0000_0001),
        mmio(2, MMIO_WRITE, SHARED_BIT | (5 * MIB), 0x1_2345),
        mmio(1, MMIO_READ, 0xB000_0000, 0),
        // Refused: L1 memory at either alias (the report page, the
        // GetQuote buffer), private L2 RAM, the firmware, garbage sizes,
        // a direction that is neither, across a page, beyond GPAW.
        mmio(4, MMIO_READ, PAGES.report, 0),
        mmio(4, MMIO_WRITE, SHARED_BIT | PAGES.quote, 7),
        mmio(4, MMIO_WRITE, 5 * MIB, 7),
        mmio(8, MMIO_READ, FW.start.0, 0),
        mmio(3, MMIO_READ, 0xFEE0_0030, 0),
        mmio(16, MMIO_READ, 0xFEE0_0030, 0),
        mmio(0, MMIO_READ, 0xFEE0_0030, 0),
        mmio(4, 2, 0xFEE0_0030, 0),
        mmio(4, MMIO_READ, 0xFEE0_0FFE, 0),
        mmio(4, MMIO_READ, 1 << 48, 0),
        mmio(4, MMIO_READ, u64::MAX - 1, 0),
    ];
    let (e, host) = play(&h, tdp, &mut setup, script);
    assert_eq!(
        (e[0].gprs[gpr::R10], e[0].gprs[gpr::R11]),
        (0, 0x5566_7788),
        "a 4-byte read gets 4 bytes"
    );
    assert_eq!(e[1].gprs[gpr::R10], 0);
    assert_eq!(e[2].gprs[gpr::R10], 0);
    assert_eq!((e[3].gprs[gpr::R10], e[3].gprs[gpr::R11]), (0, 0x88));
    for (i, x) in e.iter().enumerate().skip(4) {
        assert_eq!(x.gprs[gpr::R10], vmcall::INVALID_OPERAND, "request {i}");
        assert_eq!(x.gprs[gpr::R11], vmcall::MMIO, "request {i}: R11 kept");
        assert_eq!(x.gprs[gpr::RAX], 0, "the TDCALL itself succeeds");
    }
    assert_eq!(
        h.get().mmio,
        [
            (0xFEE0_0030, 4, false, 0),
            (0xFED0_0010, 8, true, 0xDEAD_BEEF_0000_0001),
            (SHARED_BIT | (5 * MIB), 2, true, 0x2345),
            (0xB000_0000, 1, false, 0),
        ],
        "the host saw the device accesses only, values masked to the size"
    );
    assert_eq!(host.len(), 4);
    let stats = tdp.loop_stats();
    assert_eq!(stats.mmio_forwarded, 4);
    assert_eq!(stats.refused_vmcalls, 11);
    assert!(h.get().l1_faults.is_empty());
}

#[test]
fn host_errors_reach_the_l2_as_the_host_said() {
    let (h, tdp, mut setup) = started(model());
    h.get().vmcall_errors.extend([
        (vmcall::MMIO, vmcall::INVALID_OPERAND),
        (vmcall::MMIO, 0x8000_0000_0000_0042),
        (vmcall::WRMSR, vmcall::RETRY),
        (vmcall::MAP_GPA, vmcall::GPA_INUSE),
    ]);
    let script = [
        mmio(4, MMIO_READ, 0xFEE0_0030, 0),
        mmio(4, MMIO_WRITE, 0xFEE0_0030, 1),
        vmc(vmcall::WRMSR, &[(gpr::R12, 0x48), (gpr::R13, 1)]),
        vmc(
            vmcall::MAP_GPA,
            &[(gpr::R12, SHARED_BIT | (6 * MIB)), (gpr::R13, 4096)],
        ),
        vmc(vmcall::RDMSR, &[(gpr::R12, 0x179)]),
    ];
    let (e, _) = play(&h, tdp, &mut setup, script[..4].to_vec());
    assert_eq!(
        (e[0].gprs[gpr::R10], e[0].gprs[gpr::R11]),
        (vmcall::INVALID_OPERAND, 0),
        "status passed, the host's garbage R11 not"
    );
    assert_eq!(e[1].gprs[gpr::R10], 0x8000_0000_0000_0042);
    assert_eq!(e[2].gprs[gpr::R10], vmcall::RETRY);
    assert_eq!(e[3].gprs[gpr::R10], vmcall::GPA_INUSE);
    assert!(
        tdp.l2_shared().is_empty(),
        "a refused MapGPA shares nothing"
    );
    // The module fails the L1's own TDG.VP.VMCALL.
    h.get().inject.push_back((leaf::VP_VMCALL, st_invalid()));
    let (e, _) = play(&h, tdp, &mut setup, script[4..].to_vec());
    assert_eq!(
        (e[0].gprs[gpr::R10], e[0].gprs[gpr::R11]),
        (vmcall::INVALID_OPERAND, 0)
    );
    assert_eq!(tdp.loop_stats().host_errors, 5);
}

fn st_invalid() -> u64 {
    u64::from(status::OPERAND_INVALID) << 32
}

#[test]
fn l2_msrs_are_forwarded_unless_denied() {
    let (h, tdp, mut setup) = started(model());
    h.get().msrs.extend([(0x179, 0x0C09), (0x1B, 0xFEE0_0D00)]);
    let rd = |i: u64| vmc(vmcall::RDMSR, &[(gpr::R12, i)]);
    let wr = |i: u64, v: u64| vmc(vmcall::WRMSR, &[(gpr::R12, i), (gpr::R13, v)]);
    let script = vec![
        rd(0x179),
        wr(0x48, 1),
        rd(0x48),
        rd(0x1B),
        rd(0x3A), // not emulated by this host: its error
        // Denied: the L1's APIC (an INIT IPI; reads too), its timer,
        // paravirtual MSRs naming GPAs the host writes, the vCPU's APIC
        // mode, memory types, system-call entry, a 64-bit index.
        wr(0x830, 0x4500),
        rd(0x830),
        rd(0x6E0),
        wr(0x6E0, 1),
        wr(0x4B56_4D01, PAGES.report | 1),
        wr(0x4000_0001, PAGES.report | 1),
        rd(0x4000_0000),
        wr(0x1B, 0),
        wr(0x2FF, 0),
        wr(0x277, 0),
        wr(0xC000_0082, 0x1000),
        wr(0x10, 0),
        rd(1 << 32 | 0x179),
    ];
    let (e, host) = play(&h, tdp, &mut setup, script);
    assert_eq!((e[0].gprs[gpr::R10], e[0].gprs[gpr::R11]), (0, 0x0C09));
    assert_eq!(e[1].gprs[gpr::R10], 0);
    assert_eq!((e[2].gprs[gpr::R10], e[2].gprs[gpr::R11]), (0, 1));
    assert_eq!((e[3].gprs[gpr::R10], e[3].gprs[gpr::R11]), (0, 0xFEE0_0D00));
    assert_eq!(
        (e[4].gprs[gpr::R10], e[4].gprs[gpr::R11]),
        (vmcall::INVALID_OPERAND, 0)
    );
    for (i, x) in e.iter().enumerate().skip(5) {
        assert_eq!(x.gprs[gpr::R10], vmcall::INVALID_OPERAND, "request {i}");
    }
    assert_eq!(
        host.iter().map(|c| (c[0], c[1])).collect::<Vec<_>>(),
        [
            (vmcall::RDMSR, 0x179),
            (vmcall::WRMSR, 0x48),
            (vmcall::RDMSR, 0x48),
            (vmcall::RDMSR, 0x1B),
            (vmcall::RDMSR, 0x3A),
        ],
        "no denied MSR reached the host"
    );
    assert_eq!(h.get().msrs.get(&0x48), Some(&1));
    assert_eq!(h.get().msrs.len(), 3, "no denied write landed");
    let stats = tdp.loop_stats();
    assert_eq!(stats.msr_forwarded, 5);
    assert_eq!(stats.refused_vmcalls, 13);
}

#[test]
fn msr_deny_list() {
    use super::forward::msr_denied;
    for (i, w) in [
        (0x800, false),
        (0x830, true),
        (0x8FF, true),
        (0x6E0, false),
        (0x11, true),
        (0x4B56_4D00, false),
        (0x4000_0073, true),
        (0x1B, true),
        (0x10, true),
        (0x3B, true),
        (0x200, true),
        (0x2FF, true),
        (0x277, true),
        (0xFE, true),
        (0x174, true),
        (0xC000_0080, true),
        (0xC000_0103, true),
    ] {
        assert!(msr_denied(i, w).is_some(), "{i:#x} write={w}");
    }
    for (i, w) in [
        (0x1B, false),
        (0x10, false),
        (0x48, true),
        (0x179, false),
        (0x7FF, true),
        (0x900, true),
        (0xC000_0104, true),
    ] {
        assert!(msr_denied(i, w).is_none(), "{i:#x} write={w}");
    }
}

fn map(gpa: u64, len: u64) -> Exit {
    vmc(vmcall::MAP_GPA, &[(gpr::R12, gpa), (gpr::R13, len)])
}

#[test]
fn l2_map_gpa_converts_its_own_memory_only() {
    let (h, tdp, mut setup) = started(model());
    let at = 5 * MIB;
    h.get().poke(at, &[0x77; 16]).unwrap();
    // To shared: forwarded as given, the pages remembered.
    let (e, host) = play(&h, tdp, &mut setup, vec![map(SHARED_BIT | at, 0x2000)]);
    assert_eq!(e[0].gprs[gpr::R10], vmcall::SUCCESS);
    assert_eq!(host, [[vmcall::MAP_GPA, SHARED_BIT | at, 0x2000, 0, 0]]);
    assert_eq!(tdp.l2_shared(), [r(at, at + 0x2000)]);
    assert!(h.get().shared.contains(&at) && h.get().shared.contains(&(at + 0x1000)));
    // The SVSM no longer touches them privately.
    let mut buf = [0u8; 16];
    assert_eq!(
        setup.memory.read(at + 0x1000, &mut buf),
        Err(crate::protocols::SvsmError::INVALID_ADDRESS)
    );
    assert_eq!(
        setup.memory.write(at, &[1]),
        Err(crate::protocols::SvsmError::INVALID_ADDRESS)
    );
    assert!(!setup.memory.is_guest_memory(at, 1));
    assert!(setup.memory.is_guest_memory(at + 0x2000, 1));
    assert!(h.get().l1_faults.is_empty());

    // Back to private: the L1 accepts the pages (zeroed) and grants them to
    // the L2 before it runs again.
    let (e, _) = play(&h, tdp, &mut setup, vec![map(at, 0x2000)]);
    assert_eq!(e[0].gprs[gpr::R10], vmcall::SUCCESS);
    assert!(tdp.l2_shared().is_empty());
    {
        let g = h.get();
        for p in [at, at + 0x1000] {
            assert!(!g.pending.contains(&p) && !g.shared.contains(&p), "{p:#x}");
            assert!(g.accepted_4k.contains(&p), "{p:#x} accepted again");
            assert_eq!(g.l2_attrs.get(&p).copied(), Some(attr::RWX), "{p:#x}");
        }
    }
    setup.memory.read(at, &mut buf).unwrap();
    assert_eq!(buf, [0; 16], "the module zeroed the re-accepted page");
    // The L2 can write it again.
    h.get()
        .exits
        .push_back(tdcall_exit(vec![(gpr::RAX, 1)], vec![(at, vec![5])]));
    let _ = play(&h, tdp, &mut setup, vec![]);
    assert!(h.get().l2_violations.is_empty());
    assert!(h.get().l1_faults.is_empty());

    // Refused before the host: L1 memory (either alias), the GetQuote
    // buffer, a range reaching into the L1, the hole between RAM ranges,
    // unaligned, empty, beyond the GPA width, wrapping.
    let before = h.get().map_gpa.len();
    let script = vec![
        map(2 * MIB, 0x1000),
        map(SHARED_BIT | (2 * MIB), 0x1000),
        map(SHARED_BIT | QB.start.0, QB.len()),
        map(SHARED_BIT | (4 * MIB - 0x1000), 0x2000),
        map(SHARED_BIT | (8 * MIB), 0x1000),
        map(SHARED_BIT | (7 * MIB), 2 * MIB),
        map(SHARED_BIT | at | 1, 0x1000),
        map(SHARED_BIT | at, 0x1001),
        map(SHARED_BIT | at, 0),
        map(1 << 48 | at, 0x1000),
        map(SHARED_BIT | at, !0xFFF),
    ];
    let (e, host) = play(&h, tdp, &mut setup, script);
    let want = [
        vmcall::INVALID_OPERAND,
        vmcall::INVALID_OPERAND,
        vmcall::INVALID_OPERAND,
        vmcall::INVALID_OPERAND,
        vmcall::INVALID_OPERAND,
        vmcall::INVALID_OPERAND,
        vmcall::ALIGN_ERROR,
        vmcall::ALIGN_ERROR,
        vmcall::INVALID_OPERAND,
        vmcall::INVALID_OPERAND,
        vmcall::INVALID_OPERAND,
    ];
    for (i, (x, w)) in e.iter().zip(want).enumerate() {
        assert_eq!(x.gprs[gpr::R10], w, "request {i}");
    }
    assert!(host.is_empty(), "no refused MapGPA reached the host");
    assert_eq!(h.get().map_gpa.len(), before);
    assert!(tdp.l2_shared().is_empty());
    let g = h.get();
    for p in (QB.start.0..QB.end.0).step_by(4096).chain([2 * MIB]) {
        assert!(g.is_accepted(p) && !g.shared.contains(&p), "{p:#x}");
    }
    // The L2's own page went out with its contents: its choice.
    assert_eq!(g.dirty_shares, [at]);
}

#[test]
fn l2_map_gpa_retry_and_a_shared_calling_area() {
    let (h, tdp, mut setup) = started(model());
    let at = 6 * MIB;
    // A host that converts one page per call: RETRY with R11 where to go on.
    h.get().map_gpa_max_pages = Some(1);
    let (e, _) = play(
        &h,
        tdp,
        &mut setup,
        vec![
            map(SHARED_BIT | at, 0x3000),
            map(SHARED_BIT | (at + 0x1000), 0x2000),
        ],
    );
    assert_eq!(
        (e[0].gprs[gpr::R10], e[0].gprs[gpr::R11]),
        (vmcall::RETRY, SHARED_BIT | (at + 0x1000))
    );
    assert_eq!(
        (e[1].gprs[gpr::R10], e[1].gprs[gpr::R11]),
        (vmcall::RETRY, SHARED_BIT | (at + 0x2000))
    );
    assert_eq!(tdp.l2_shared(), [r(at, at + 0x2000)]);
    h.get().map_gpa_max_pages = None;
    // Half of it back to private, from the middle: the set splits.
    let (e, _) = play(&h, tdp, &mut setup, vec![map(at + 0x1000, 0x1000)]);
    assert_eq!(e[0].gprs[gpr::R10], vmcall::SUCCESS);
    assert_eq!(tdp.l2_shared(), [r(at, at + 0x1000)]);

    // The L2 shares its Calling Area page: a TDCALL with call_pending
    // "set" is no SVSM call (the L1 does not read the page privately), and
    // the module leaf it names is refused.
    let (e, _) = play(&h, tdp, &mut setup, vec![map(SHARED_BIT | CAA, 0x1000)]);
    assert_eq!(e[0].gprs[gpr::R10], vmcall::SUCCESS);
    let (e, _) = play(
        &h,
        tdp,
        &mut setup,
        vec![tdcall_exit(vec![(gpr::RAX, leaf::MR_REPORT)], vec![])],
    );
    assert_eq!(e[0].gprs[gpr::RAX], REFUSED);
    assert!(h.get().l1_faults.is_empty(), "{:?}", h.get().l1_faults);

    // A module that cannot accept the pages again: they stay shared to the
    // L1, and the L2 hears of it.
    h.get()
        .inject
        .push_back((leaf::MEM_PAGE_ACCEPT, st_invalid()));
    h.get()
        .inject
        .push_back((leaf::MEM_PAGE_ACCEPT, st_invalid()));
    let (e, _) = play(&h, tdp, &mut setup, vec![map(at, 0x1000)]);
    assert_eq!(e[0].gprs[gpr::R10], vmcall::INVALID_OPERAND);
    assert!(tdp.l2_shared().contains(&r(at, at + 0x1000)));
    let mut buf = [0u8; 1];
    assert!(setup.memory.read(at, &mut buf).is_err());
    assert!(h.get().l1_faults.is_empty());
}

#[test]
fn l2_vmcalls_that_touch_l1_evidence_never_reach_the_host() {
    let (h, tdp, mut setup) = started(model());
    let script = vec![
        vmc(
            vmcall::GET_QUOTE,
            &[(gpr::R12, SHARED_BIT | (5 * MIB)), (gpr::R13, 4096)],
        ),
        vmc(vmcall::REPORT_FATAL_ERROR, &[(gpr::R12, 1)]),
        vmc(vmcall::SETUP_EVENT_NOTIFY, &[(gpr::R12, 0x20)]),
        vmc(0x10000, &[]),
        vmc(0x10005, &[]),
        vmc(54, &[]),
        vmc(0x1234_5678, &[]),
        vmc(u64::MAX, &[]),
    ];
    let n = script.len();
    let (e, host) = play(&h, tdp, &mut setup, script);
    for (i, x) in e.iter().enumerate() {
        assert_eq!(x.gprs[gpr::R10], vmcall::INVALID_OPERAND, "request {i}");
        assert_eq!(x.gprs[gpr::RAX], 0);
    }
    assert!(host.is_empty());
    assert!(h.get().fatal.is_empty() && h.get().quote_requests.is_empty());
    assert_eq!(tdp.loop_stats().refused_vmcalls, n as u64);
}

#[test]
fn page_set() {
    let mut s = mem::PageSet::default();
    s.insert(r(0x3000, 0x5000));
    s.insert(r(0x1000, 0x2000));
    s.insert(r(0x2000, 0x3000));
    assert_eq!(s.ranges(), [r(0x1000, 0x5000)], "adjacent ranges merge");
    s.insert(r(0x8000, 0x9000));
    s.remove(r(0x2000, 0x3000));
    assert_eq!(
        s.ranges(),
        [r(0x1000, 0x2000), r(0x3000, 0x5000), r(0x8000, 0x9000)]
    );
    assert!(s.overlaps(0x4FFF, 1));
    assert!(!s.overlaps(0x5000, 0x3000));
    assert!(s.overlaps(u64::MAX, 2), "a wrapping range overlaps");
    s.remove(r(0, 0x10000));
    assert!(s.is_empty());
}

fn accept(gpa: u64, level: u64) -> Exit {
    tdcall_exit(
        vec![(gpr::RAX, leaf::MEM_PAGE_ACCEPT), (gpr::RCX, gpa | level)],
        vec![],
    )
}

fn accepts_made(h: &Handle) -> usize {
    h.get()
        .calls
        .iter()
        .filter(|&&c| c == leaf::MEM_PAGE_ACCEPT)
        .count()
}

#[test]
fn l2_page_accept_is_made_for_it_on_its_own_memory() {
    let (h, tdp, mut setup) = started(model());
    let already = |level: u64| (u64::from(status::PAGE_ALREADY_ACCEPTED) << 32) | level;
    // Its memory was accepted at start: "already accepted", as OVMF expects
    // for a page accepted twice.
    let (e, _) = play(
        &h,
        tdp,
        &mut setup,
        vec![accept(5 * MIB, 0), accept(4 * MIB, 1), accept(16 * MIB, 1)],
    );
    assert_eq!(e[0].gprs[gpr::RAX], already(0));
    assert_eq!(e[1].gprs[gpr::RAX], already(1));
    assert_eq!(e[2].gprs[gpr::RAX], already(1));
    // A chunk split by a MapGPA round trip: 2 MiB is a size mismatch, the
    // 4 KiB pages are accepted (by the L1, after the MapGPA).
    let at = 6 * MIB;
    let (e, _) = play(
        &h,
        tdp,
        &mut setup,
        vec![
            map(SHARED_BIT | at, 0x1000),
            map(at, 0x1000),
            accept(at, 1),
            accept(at, 0),
        ],
    );
    assert_eq!(e[0].gprs[gpr::R10], 0);
    assert_eq!(e[1].gprs[gpr::R10], 0);
    assert_eq!(
        e[2].gprs[gpr::RAX] >> 32,
        u64::from(status::PAGE_SIZE_MISMATCH)
    );
    assert_eq!(e[3].gprs[gpr::RAX], already(0));
    // A page the host removed and added again: accepted now and granted.
    let p = at + 0x3000;
    {
        let mut g = h.get();
        g.accepted_4k.remove(&p);
        g.pending.insert(p);
        g.l2_attrs.remove(&p);
    }
    let (e, _) = play(&h, tdp, &mut setup, vec![accept(p, 0)]);
    assert_eq!(e[0].gprs[gpr::RAX], 0);
    assert!(h.get().is_accepted(p));
    assert_eq!(h.get().l2_attr(p), attr::RWX);
    assert_eq!(tdp.loop_stats().accepts_served, 6);

    // Refused before any TDCALL: L1 pages, the GetQuote buffer, a page the
    // L2 made shared, the hole between RAM ranges, a 2 MiB page reaching
    // into the L1, bad levels, misaligned, reserved bits, GPA above 51 bits.
    let (e, _) = play(
        &h,
        tdp,
        &mut setup,
        vec![map(SHARED_BIT | (7 * MIB), 0x1000)],
    );
    assert_eq!(e[0].gprs[gpr::R10], 0);
    let made = accepts_made(&h);
    let script = vec![
        accept(PAGES.report, 0),
        accept(QB.start.0, 0),
        accept(7 * MIB, 0),
        accept(8 * MIB, 0),
        accept(2 * MIB, 1),
        accept(5 * MIB, 2),
        accept(5 * MIB, 7),
        accept(5 * MIB, 1),
        accept((5 * MIB) | 0x8, 0),
        accept((1 << 52) | (5 * MIB), 0),
    ];
    let n = script.len();
    let (e, host) = play(&h, tdp, &mut setup, script);
    for (i, x) in e.iter().enumerate() {
        assert_eq!(
            x.gprs[gpr::RAX],
            (u64::from(status::OPERAND_INVALID) << 32) | 1,
            "request {i}"
        );
    }
    assert_eq!(accepts_made(&h), made, "the L1 accepted nothing for them");
    assert!(host.is_empty());
    assert_eq!(tdp.loop_stats().accepts_served, 6);
    assert_eq!(tdp.loop_stats().refused_tdcalls, n as u64);
    assert!(h.get().l1_faults.is_empty());
}

#[test]
fn l2_msr_instructions_go_through_the_filter() {
    let (h, tdp, mut setup) = started(model());
    h.get().msrs.insert(0x179, 0x1_0000_0C09);
    let exit = |reason: u32, set: Vec<(usize, u64)>| Exit {
        reason,
        instr_len: 2,
        set,
        ..Default::default()
    };
    let script = vec![
        exit(
            31,
            vec![
                (gpr::RCX, 0x179),
                (gpr::RAX, u64::MAX),
                (gpr::RDX, u64::MAX),
            ],
        ),
        exit(
            32,
            vec![
                (gpr::RCX, 0x48),
                (gpr::RAX, 0xFFFF_FFFF_0000_0001),
                (gpr::RDX, 2),
            ],
        ),
        // Denied: an INIT IPI through the L1's APIC, the L1's timer.
        exit(
            32,
            vec![(gpr::RCX, 0x830), (gpr::RAX, 0x4500), (gpr::RDX, 0)],
        ),
        exit(31, vec![(gpr::RCX, 0x6E0)]),
    ];
    let rip = ENTRY & 0xFFFF; // the reset state's IP: nothing ran yet
    let (e, host) = play(&h, tdp, &mut setup, script);
    assert_eq!((e[0].gprs[gpr::RAX], e[0].gprs[gpr::RDX]), (0xC09, 1));
    assert_eq!(e[0].rip, rip + 2);
    assert_eq!(e[1].rip, rip + 4);
    assert_eq!(h.get().msrs.get(&0x48), Some(&0x2_0000_0001));
    assert_eq!(e[2].rip, e[1].rip, "#GP leaves RIP on the WRMSR");
    assert_eq!(e[3].rip, e[1].rip);
    assert_eq!(
        h.get().vp_fields.get(&field::l2_vmcs(1, 0x4016)).copied(),
        Some(0x8000_0B0D)
    );
    assert_eq!(
        host.iter().map(|c| (c[0], c[1])).collect::<Vec<_>>(),
        [(vmcall::RDMSR, 0x179), (vmcall::WRMSR, 0x48)]
    );
    assert_eq!(tdp.loop_stats().gp_injected, 2);
}

#[test]
fn l2_shared_ranges_are_capped() {
    use super::forward::MAX_SHARED_RANGES;
    let (h, tdp, mut setup) = started(model());
    // Every other page of 16..48 MiB: as many disjoint ranges as allowed.
    let page = |i: usize| 16 * MIB + 2 * 4096 * i as u64;
    let script = (0..MAX_SHARED_RANGES)
        .map(|i| map(SHARED_BIT | page(i), 0x1000))
        .collect();
    let (e, _) = play(&h, tdp, &mut setup, script);
    assert!(e.iter().all(|x| x.gprs[gpr::R10] == vmcall::SUCCESS));
    assert_eq!(tdp.l2_shared().len(), MAX_SHARED_RANGES);
    // One more, either way, is refused before the host.
    let (e, host) = play(
        &h,
        tdp,
        &mut setup,
        vec![
            map(SHARED_BIT | page(MAX_SHARED_RANGES), 0x1000),
            map(page(0), 0x1000),
        ],
    );
    assert!(
        e.iter()
            .all(|x| x.gprs[gpr::R10] == vmcall::INVALID_OPERAND)
    );
    assert!(host.is_empty());
    assert_eq!(tdp.l2_shared().len(), MAX_SHARED_RANGES);
}
