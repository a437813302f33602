//! The SNP platform's logic end to end against the model machine: the boot
//! vCPU built from the IGVM guest-context page, the RUN_VMPL loop serving a
//! guest call through the real protocol dispatcher, CREATE_VCPU/DELETE_VCPU,
//! the guest's PVALIDATE, attestation through the GHCB guest-request event
//! and the model PSP, and hypervisors that answer with errors or garbage;
//! the certificate table from the extended guest request served to the
//! guest by the attestation protocol, and hosts with no, oversized or bad
//! tables.

extern crate std;

use std::boxed::Box;
use std::cell::RefCell;
use std::rc::Rc;
use std::vec;
use std::vec::Vec;

use super::ghcb::{GhcbError, GhcbPage};
use super::guest_request::{GuestRequestChannel, GuestRequestError};
use super::model::{HvMode, Machine};
use super::psp_model::PspModel;
use super::rmp::perm;
use super::secrets::Vmpck;
use super::svsm::{GhcbTransport, SnpCore, SnpError, SnpGuest};
use super::vc::CpuidTable;
use super::vmsa::{self, Vmsa, VmsaError};
use crate::mm::{PhysAddr, PhysRange};
use crate::platform::{GuestExit, GuestRegisters};
use crate::protocols::fake::EchoTpm;
use crate::protocols::{CallArea, Guest, Svsm, result, take_pending_call};

/// SVSM memory: 1 MiB..3 MiB. Guest RAM: 3 MiB..64 MiB.
const SVSM: (u64, u64) = (0x10_0000, 0x30_0000);
const GUEST: (u64, u64) = (0x30_0000, 0x400_0000);
const GHCB_GPA: u64 = 0x10_0000;
const CONTEXT: u64 = 0x10_5000;
const BOOT_VMSA: u64 = 0x10_7000;
/// The guest's Calling Area (OVMF's SVSM_CAA region).
const CAA: u64 = 0x30_1000;

fn range(a: u64, b: u64) -> PhysRange {
    PhysRange::new(PhysAddr(a), PhysAddr(b))
}

/// A machine after an IGVM launch: the SVSM pages and the guest's first
/// pages assigned and validated (the PSP did it), the guest-context page
/// written, the GHCB page shared.
fn launched() -> Machine {
    let mut m = Machine::new();
    m.launch(SVSM.0 + 0x1000, SVSM.1);
    m.launch(GUEST.0, GUEST.0 + 0x10_0000);
    m.poke(CONTEXT, &vmsa::tests::igvm_guest_context());
    m
}

fn core(m: Machine) -> SnpCore<Machine> {
    let ghcb: &'static mut GhcbPage = Box::leak(Box::default());
    let cpuid = CpuidTable::parse(&super::vc::tests::cpuid_page()).unwrap();
    let mut c = SnpCore::new(
        m,
        ghcb,
        cpuid,
        2,
        range(SVSM.0, SVSM.1),
        vec![range(GUEST.0, GUEST.1)],
    );
    c.register_ghcb(GHCB_GPA).unwrap();
    c.grant_guest(range(GUEST.0, GUEST.0 + 0x10_0000)).unwrap();
    c
}

#[test]
fn boot_vcpu_is_the_igvm_guest_context_at_vmpl2() {
    let mut c = core(launched());
    c.create_boot_vcpu(CONTEXT, BOOT_VMSA, CAA).unwrap();
    let mut page = [0u8; 4096];
    c.hw.peek(BOOT_VMSA, &mut page);
    let v = Vmsa(page);
    let want = Vmsa(vmsa::tests::igvm_guest_context());
    assert_eq!(v.vmpl(), 2);
    assert_eq!(v.cs(), (0xf000, 0xffff_0000));
    assert_eq!(v.get(vmsa::offset::RIP), 0xfff0);
    assert_eq!(v.get(vmsa::offset::RDX), want.get(vmsa::offset::RDX));
    assert_eq!(v.get(vmsa::offset::SEV_FEATURES), vmsa::feature::SNP);
    // Not runnable while the SVSM holds it; otherwise the IGVM page.
    assert_eq!(v.get(vmsa::offset::EFER), 0);
    assert_eq!(v.0[0x0..0xD0], want.0[0x0..0xD0]);
    assert_eq!(v.0[0xD8..], want.0[0xD8..]);
    // A VMSA page for VMPL2 the guest cannot touch, announced to the hypervisor.
    assert!(c.hw.rmp.is_vmsa(BOOT_VMSA));
    assert_eq!(c.hw.rmp.perms(BOOT_VMSA, 2), 0);
    assert_eq!(
        c.hw.hv.vmsas.get(&(0, 2)),
        Some(&(BOOT_VMSA, vmsa::feature::SNP))
    );
    assert_eq!(c.vcpus.len(), 1);
}

#[test]
fn boot_vcpu_refusals() {
    let mut c = core(launched());
    // A 2 MiB aligned VMSA page is refused (erratum).
    assert_eq!(
        c.create_boot_vcpu(CONTEXT, 0x20_0000, CAA),
        Err(SnpError::Placement(0x20_0000))
    );
    // A guest context for the wrong VMPL.
    let mut ctx = vmsa::tests::igvm_guest_context();
    ctx[vmsa::offset::VMPL] = 1;
    c.hw.poke(CONTEXT, &ctx);
    assert_eq!(
        c.create_boot_vcpu(CONTEXT, BOOT_VMSA, CAA),
        Err(SnpError::Vmsa(VmsaError::Vmpl(1)))
    );
    // A VMSA page that is not validated memory.
    c.hw.poke(CONTEXT, &vmsa::tests::igvm_guest_context());
    assert!(matches!(
        c.create_boot_vcpu(CONTEXT, 0x50_1000, CAA),
        Err(SnpError::Memory(_))
    ));
    assert!(!c.hw.rmp.is_vmsa(BOOT_VMSA));
    // The run loop has nothing to run.
    let mut regs = GuestRegisters::default();
    assert_eq!(c.run(&mut regs), Err(SnpError::NoGuest));
}

/// The guest makes one QUERY_PROTOCOL call, checks the answer in its
/// registers on the next run, then halts.
#[test]
fn run_loop_serves_a_guest_call_through_the_dispatcher() {
    let mut m = launched();
    let seen: Rc<RefCell<Vec<(u64, u64)>>> = Rc::default();
    let log = seen.clone();
    let mut step = 0;
    m.guest = Some(Box::new(move |m: &mut Machine, vmsa_gpa: u64| {
        step += 1;
        match step {
            1 => {
                // A VMGEXIT without call_pending: not a call.
                0x403
            }
            2 => {
                m.poke(CAA, &[1]);
                m.poke(vmsa_gpa + vmsa::offset::RAX as u64, &6u64.to_le_bytes());
                m.poke(vmsa_gpa + vmsa::offset::RCX as u64, &1u64.to_le_bytes());
                0x403
            }
            _ => {
                log.borrow_mut().push((
                    m.peek_u64(vmsa_gpa + vmsa::offset::RAX as u64),
                    m.peek_u64(vmsa_gpa + vmsa::offset::RCX as u64),
                ));
                let mut pending = [0u8];
                m.peek(CAA, &mut pending);
                log.borrow_mut().push((u64::from(pending[0]), 0));
                0x78
            }
        }
    }));
    let mut c = core(m);
    c.create_boot_vcpu(CONTEXT, BOOT_VMSA, CAA).unwrap();
    let core = spin::Mutex::new(c);
    let mut guest = SnpGuest { core: &core };
    let mut svsm = Svsm::new(CAA, Some(EchoTpm));
    let mut regs = GuestRegisters::default();
    let (mut calls, mut ignored) = (0, 0);
    let end = loop {
        let exit = core.lock().run(&mut regs).unwrap();
        match exit {
            GuestExit::SvsmCall => match take_pending_call(&mut guest, svsm.caa) {
                CallArea::Pending => {
                    svsm.handle(&mut guest, &mut regs);
                    calls += 1;
                }
                CallArea::NotPending => ignored += 1,
            },
            other => break other,
        }
    };
    assert_eq!(end, GuestExit::Halt);
    assert_eq!((calls, ignored), (1, 1));
    assert_eq!(
        *seen.borrow(),
        [(result::SUCCESS, (1 << 32) | 1), (0, 0)],
        "RAX = SUCCESS and RCX = max<<32|min reached the guest's VMSA; call_pending cleared"
    );
    let c = core.lock();
    assert_eq!(c.hw.runs, 3);
    // After the loop the VMSA is left not runnable.
    assert_eq!(c.hw.peek_u64(BOOT_VMSA + vmsa::offset::EFER as u64), 0);
}

#[test]
fn run_loop_errors_and_exits() {
    let mut m = launched();
    m.guest = Some(Box::new(|_, _| 0x400)); // an NPF the SVSM does not handle
    let mut c = core(m);
    c.create_boot_vcpu(CONTEXT, BOOT_VMSA, CAA).unwrap();
    let mut regs = GuestRegisters::default();
    assert!(matches!(
        c.run(&mut regs),
        Ok(GuestExit::Unhandled { code: 0x400, .. })
    ));
    c.hw.guest = Some(Box::new(|_, _| 0x7F));
    assert_eq!(c.run(&mut regs), Ok(GuestExit::Shutdown));
    // A hypervisor leaving SW_EXITINFO1 unmarked.
    c.hw.hv.mode = HvMode::NotValid;
    c.hw.hv.vmsas.clear();
    assert!(matches!(
        c.run(&mut regs),
        Err(SnpError::Ghcb(GhcbError::NotValid(_)))
    ));
    // A hypervisor that does not know the VMSA fails the event.
    c.hw.hv.mode = HvMode::Normal;
    assert!(matches!(
        c.run(&mut regs),
        Err(SnpError::Ghcb(GhcbError::Nae { info1: 2, .. }))
    ));
    assert_eq!(c.hw.peek_u64(BOOT_VMSA + vmsa::offset::EFER as u64), 0);
}

fn call(
    core: &spin::Mutex<SnpCore<Machine>>,
    id: u32,
    rcx: u64,
    rdx: u64,
    r8: u64,
) -> GuestRegisters {
    let mut guest = SnpGuest { core };
    let mut svsm: Svsm<EchoTpm> = Svsm::new(CAA, None);
    let mut regs = GuestRegisters {
        rax: u64::from(id),
        rcx,
        rdx,
        r8,
        r9: 0,
    };
    svsm.handle(&mut guest, &mut regs);
    regs
}

#[test]
fn create_and_delete_vcpu() {
    let mut c = core(launched());
    c.create_boot_vcpu(CONTEXT, BOOT_VMSA, CAA).unwrap();
    let core = spin::Mutex::new(c);
    let ap_vmsa = GUEST.0 + 0x5000;
    let ap_caa = GUEST.0 + 0x6000;
    let mut ctx = vmsa::tests::igvm_guest_context();
    ctx[vmsa::offset::RIP..vmsa::offset::RIP + 8].copy_from_slice(&0x1234u64.to_le_bytes());
    core.lock().hw.poke(ap_vmsa, &ctx);

    // Refusals first: each leaves the page the guest's.
    let two_mib = 0x40_0000; // guest RAM, 2 MiB aligned
    assert_eq!(
        call(&core, 2, two_mib, ap_caa, 1).rax,
        result::INVALID_PARAMETER
    );
    assert_eq!(
        call(&core, 2, SVSM.0 + 0x1000, ap_caa, 1).rax,
        result::INVALID_ADDRESS
    );
    assert_eq!(
        call(&core, 2, ap_vmsa, ap_vmsa, 1).rax,
        result::INVALID_ADDRESS
    );
    assert_eq!(
        call(&core, 2, ap_vmsa, ap_caa, 0).rax,
        result::INVALID_REQUEST,
        "APIC 0 is the boot vCPU"
    );
    let mut bad = ctx;
    bad[vmsa::offset::VMPL] = 0; // a VMPL0 VMSA: the guest asking for the SVSM's privilege
    core.lock().hw.poke(ap_vmsa, &bad);
    assert_eq!(
        call(&core, 2, ap_vmsa, ap_caa, 1).rax,
        result::INVALID_PARAMETER
    );
    bad = ctx;
    bad[vmsa::offset::SEV_FEATURES] |= vmsa::feature::VTOM as u8;
    core.lock().hw.poke(ap_vmsa, &bad);
    assert_eq!(
        call(&core, 2, ap_vmsa, ap_caa, 1).rax,
        result::INVALID_PARAMETER
    );
    assert!(!core.lock().hw.rmp.is_vmsa(ap_vmsa));
    // A hypervisor failing AP creation: the page goes back to the guest.
    core.lock().hw.poke(ap_vmsa, &ctx);
    core.lock().hw.hv.mode = HvMode::NaeError;
    assert_eq!(
        call(&core, 2, ap_vmsa, ap_caa, 1).rax,
        result::INVALID_REQUEST
    );
    {
        let c = core.lock();
        assert!(!c.hw.rmp.is_vmsa(ap_vmsa));
        assert_eq!(c.hw.rmp.perms(ap_vmsa, 2), perm::ALL);
    }
    core.lock().hw.hv.mode = HvMode::Normal;

    assert_eq!(call(&core, 2, ap_vmsa, ap_caa, 1).rax, result::SUCCESS);
    {
        let c = core.lock();
        assert!(c.hw.rmp.is_vmsa(ap_vmsa));
        assert_eq!(
            c.hw.rmp.perms(ap_vmsa, 2),
            0,
            "the guest can no longer write its VMSA"
        );
        assert_eq!(c.hw.hv.vmsas.get(&(1, 2)).map(|v| v.0), Some(ap_vmsa));
    }
    // The VMSA cannot be created twice, nor used as a buffer or validated
    // through the SVSM, and APIC 1 is taken.
    assert_eq!(
        call(&core, 2, ap_vmsa, ap_caa, 2).rax,
        result::INVALID_PARAMETER
    );
    {
        let mut g = SnpGuest { core: &core };
        let mut b = [0u8; 8];
        assert_eq!(
            g.read(ap_vmsa, &mut b),
            Err(crate::protocols::SvsmError::INVALID_ADDRESS)
        );
        assert_eq!(
            g.write(ap_vmsa + 0x100, &[1]),
            Err(crate::protocols::SvsmError::INVALID_ADDRESS)
        );
        assert_eq!(
            g.pvalidate(ap_vmsa, false, false, false),
            Err(crate::protocols::SvsmError::INVALID_ADDRESS)
        );
    }
    core.lock().hw.poke(GUEST.0 + 0x7000, &ctx);
    assert_eq!(
        call(&core, 2, GUEST.0 + 0x7000, ap_caa, 1).rax,
        result::INVALID_REQUEST
    );

    // DELETE_VCPU: not the boot vCPU's, not an unknown page; then the AP's.
    assert_eq!(call(&core, 3, BOOT_VMSA, 0, 0).rax, result::INVALID_ADDRESS);
    assert_eq!(
        call(&core, 3, GUEST.0 + 0x8000, 0, 0).rax,
        result::INVALID_PARAMETER
    );
    // A hypervisor failing the destroy: the vCPU stays.
    core.lock().hw.hv.mode = HvMode::NaeError;
    assert_eq!(call(&core, 3, ap_vmsa, 0, 0).rax, result::INVALID_REQUEST);
    assert!(core.lock().hw.rmp.is_vmsa(ap_vmsa));
    core.lock().hw.hv.mode = HvMode::Normal;
    assert_eq!(call(&core, 3, ap_vmsa, 0, 0).rax, result::SUCCESS);
    let c = core.lock();
    assert!(!c.hw.rmp.is_vmsa(ap_vmsa));
    assert_eq!(c.hw.rmp.perms(ap_vmsa, 2), perm::ALL);
    assert!(!c.hw.hv.vmsas.contains_key(&(1, 2)));
    assert_eq!(c.vcpus.len(), 1);
}

#[test]
fn guest_pvalidate_through_the_core_protocol() {
    let c = core(launched());
    let core = spin::Mutex::new(c);
    let page = GUEST.0 + 0x20_0000;
    let list = GUEST.0 + 0x2000;
    let request = |entry: u64| {
        let mut r = vec![1u8, 0, 0, 0, 0, 0, 0, 0];
        r.extend_from_slice(&entry.to_le_bytes());
        r
    };
    // The hypervisor has not assigned the page: FAIL_INPUT.
    core.lock().hw.poke(list, &request(page | 4));
    assert_eq!(call(&core, 1, list, 0, 0).rax, 0x8000_1001);
    // Assigned (the guest asked the hypervisor for it): validated and granted.
    core.lock().hw.hv.private.insert(page);
    assert_eq!(call(&core, 1, list, 0, 0).rax, result::SUCCESS);
    {
        let c = core.lock();
        assert!(c.hw.rmp.is_validated(page));
        assert_eq!(c.hw.rmp.perms(page, 2), perm::ALL);
    }
    // Again: unchanged, unless the guest says to ignore that.
    core.lock().hw.poke(list, &request(page | 4));
    assert_eq!(
        call(&core, 1, list, 0, 0).rax,
        result::PVALIDATE_FAIL_UNCHANGED
    );
    core.lock().hw.poke(list, &request(page | 4 | 8));
    assert_eq!(call(&core, 1, list, 0, 0).rax, result::SUCCESS);
    // 2 MiB on 4 KiB RMP entries: size mismatch.
    let huge = 0x60_0000;
    for p in (huge..huge + 0x20_0000).step_by(4096) {
        core.lock().hw.hv.private.insert(p);
    }
    core.lock().hw.poke(list, &request(huge | 4 | 1));
    assert_eq!(call(&core, 1, list, 0, 0).rax, 0x8000_1006);
    // Rescinding takes the guest's permissions away.
    core.lock().hw.poke(list, &request(page));
    assert_eq!(call(&core, 1, list, 0, 0).rax, result::SUCCESS);
    let c = core.lock();
    assert!(!c.hw.rmp.is_validated(page));
    assert_eq!(c.hw.rmp.perms(page, 2), 0);
}

#[test]
fn guest_memory_excludes_the_svsm() {
    let c = core(launched());
    let core = spin::Mutex::new(c);
    let mut g = SnpGuest { core: &core };
    assert!(g.is_guest_memory(CAA, 8));
    assert!(!g.is_guest_memory(SVSM.1 - 8, 16));
    assert!(!g.is_guest_memory(GUEST.1 - 8, 16));
    assert!(!g.is_guest_memory(u64::MAX - 4, 8));
    let mut b = [0u8; 8];
    assert_eq!(
        g.read(CONTEXT, &mut b),
        Err(crate::protocols::SvsmError::INVALID_ADDRESS)
    );
    // Guest RAM the guest never validated cannot be read by the SVSM either.
    assert_eq!(
        g.read(GUEST.0 + 0x30_0000, &mut b),
        Err(crate::protocols::SvsmError::INVALID_ADDRESS)
    );
    assert_eq!(g.write(CAA, &[1]), Ok(()));
}

const VMPCK: [[u8; 32]; 4] = [[0x11; 32], [0x22; 32], [0x33; 32], [0x44; 32]];
const SHARED: (u64, u64) = (0x500_0000, 0x500_1000);

#[test]
fn attestation_report_through_the_ghcb_guest_request() {
    let mut m = launched();
    m.psp = Some(PspModel::new(VMPCK));
    let core = spin::Mutex::new(core(m));
    let transport = GhcbTransport {
        core: &core,
        pages: SHARED,
        backoff: |_| {},
        certs: None,
    };
    let mut ch = GuestRequestChannel::new(transport, Vmpck::new(VMPCK[0])).unwrap();
    let data = [0x5A; 64];
    let report = ch.report(&data, 0).unwrap();
    assert_eq!(&report[0x50..0x90], &data[..]);
    assert_eq!(core.lock().hw.psp.as_ref().unwrap().last_seqno(0), 2);
    // The request went through the shared page, not private memory.
    assert!(core.lock().hw.mem.contains_key(&SHARED.0));
}

#[test]
fn attestation_with_a_hypervisor_answering_garbage() {
    let mut m = launched();
    m.psp = Some(PspModel::new(VMPCK));
    let core = spin::Mutex::new(core(m));
    core.lock().hw.hv.mode = HvMode::Garbage;
    let transport = GhcbTransport {
        core: &core,
        pages: SHARED,
        backoff: |_| {},
        certs: None,
    };
    let mut ch = GuestRequestChannel::new(transport, Vmpck::new(VMPCK[0])).unwrap();
    let err = ch.report(&[1; 64], 0).unwrap_err();
    assert!(!matches!(err, GuestRequestError::Transport(_)), "{err:?}");
    // The channel gives up on the key after a forged answer.
    assert!(ch.is_disabled());
    // Shared pages that are actually private are refused by the transport.
    let transport = GhcbTransport {
        core: &core,
        pages: (GUEST.0, GUEST.0 + 0x1000),
        backoff: |_| {},
        certs: None,
    };
    let mut ch = GuestRequestChannel::new(transport, Vmpck::new(VMPCK[0])).unwrap();
    assert!(ch.report(&[1; 64], 0).is_err());
}

#[test]
fn console_bytes_and_termination() {
    let mut c = core(launched());
    c.port_out8(0x3F8, b'R').unwrap();
    assert_eq!(c.hw.hv.io_log, [(0x3F8, u64::from(b'R'), 1, false)]);
    c.hw.hv.mode = HvMode::NaeError;
    assert!(c.port_out8(0x3F8, b'x').is_err());
    c.terminate(7);
    assert_eq!(c.hw.hv.terminated, Some(7));
}

/// The launch-info page `boot::launch_info`'s tests build, with the CPUID
/// and Calling Area regions OVMF also lists.
fn launch_info_with_caa() -> crate::boot::launch_info::LaunchInfo {
    use crate::boot::launch_info::{
        offset, parse_bytes,
        tests::{LI, snp_page},
    };
    let mut p = snp_page();
    let mut region = |i: usize, gpa: u64, kind: u32| {
        let at = offset::REGIONS + i * 24;
        p[at..at + 8].copy_from_slice(&gpa.to_le_bytes());
        p[at + 8..at + 16].copy_from_slice(&0x1000u64.to_le_bytes());
        p[at + 16..at + 20].copy_from_slice(&kind.to_le_bytes());
    };
    region(2, 0x80_A000, 3);
    region(3, 0x80_B000, 4);
    p[offset::REGION_COUNT..offset::REGION_COUNT + 4].copy_from_slice(&4u32.to_le_bytes());
    parse_bytes(LI, &p).unwrap()
}

fn secrets_page() -> [u8; 4096] {
    let mut p = [0u8; 4096];
    p[0..4].copy_from_slice(&3u32.to_le_bytes());
    for i in 0..4 {
        p[0x20 + 32 * i..0x40 + 32 * i].fill(0x11 * (i as u8 + 1));
    }
    p
}

#[test]
fn guest_launch_from_the_image() {
    let info = launch_info_with_caa();
    let (secrets, cpuid, context) = (
        info.secrets.unwrap(),
        info.cpuid.unwrap(),
        info.guest_context.unwrap(),
    );
    let mut m = launched();
    m.launch(0x80_0000, 0x80_C000); // OVMF's metadata pages
    m.launch(0xffc0_0000, 0x1_0000_0000); // the firmware image
    m.poke(secrets, &secrets_page());
    m.poke(cpuid, &super::vc::tests::cpuid_page());
    m.poke(context, &vmsa::tests::igvm_guest_context());
    let mut c = core(m);

    // VMPCK0 leaves the secrets page for the SVSM's channel.
    let key = c.take_vmpck0(secrets).unwrap();
    assert_eq!(key.bytes(), &[0x11; 32]);
    let mut k = [0u8; 32];
    c.hw.peek(secrets + 0x20, &mut k);
    assert_eq!(k, [0; 32]);

    let caa = c.start_guest(&info, BOOT_VMSA).unwrap();
    assert_eq!(caa, 0x80_B000);
    // The guest's secrets page: VMPCK0 and 1 (below VMPL2) gone, 2 and 3 kept,
    // the SVSM fields filled.
    let mut g = [0u8; 4096];
    c.hw.peek(0x80_9000, &mut g);
    assert_eq!(&g[0..4], &3u32.to_le_bytes());
    assert_eq!(&g[0x20..0x60], &[0u8; 0x40][..]);
    assert_eq!(&g[0x60..0x80], &[0x33u8; 32][..]);
    assert_eq!(&g[0x80..0xA0], &[0x44u8; 32][..]);
    let u64_at = |o: usize| u64::from_le_bytes(g[o..o + 8].try_into().unwrap());
    assert_eq!(u64_at(0x140), SVSM.0);
    assert_eq!(u64_at(0x148), SVSM.1 - SVSM.0);
    assert_eq!(u64_at(0x150), 0x80_B000);
    assert_eq!(&g[0x158..0x15D], &[1, 0, 0, 0, 2]);
    // The CPUID page copied where OVMF looks for it.
    let mut p = [0u8; 4096];
    c.hw.peek(0x80_A000, &mut p);
    assert_eq!(p, super::vc::tests::cpuid_page());
    // VMPL2 may use its firmware and metadata pages, not the SVSM's.
    for page in [0xffc0_0000, 0xffff_f000, 0x80_0000, 0x80_B000] {
        assert_eq!(c.hw.rmp.perms(page, 2), perm::ALL, "{page:#x}");
    }
    assert_eq!(c.hw.rmp.perms(secrets, 2), 0);
    assert_eq!(c.hw.hv.vmsas.get(&(0, 2)).map(|v| v.0), Some(BOOT_VMSA));
}

#[test]
fn guest_launch_refusals() {
    let mut m = launched();
    m.poke(0x20_2000, &secrets_page());
    let mut c = core(m);
    // The builder's page lists no Calling Area region.
    let page = crate::boot::launch_info::tests::snp_page();
    let info =
        crate::boot::launch_info::parse_bytes(crate::boot::launch_info::tests::LI, &page).unwrap();
    assert_eq!(
        c.start_guest(&info, BOOT_VMSA),
        Err(SnpError::Launch("the firmware names no SVSM Calling Area"))
    );
    // A secrets page of an unknown version gives no key.
    c.hw.poke(0x20_2000, &[9, 0, 0, 0]);
    assert!(matches!(c.take_vmpck0(0x20_2000), Err(SnpError::Launch(_))));
    // Firmware pages the PSP never validated cannot be granted.
    let info = launch_info_with_caa();
    c.hw.poke(0x20_2000, &secrets_page());
    c.hw.launch(0x80_0000, 0x80_C000);
    c.hw.poke(0x20_3000, &super::vc::tests::cpuid_page());
    assert!(matches!(
        c.start_guest(&info, BOOT_VMSA),
        Err(SnpError::Rmp(_))
    ));
}

#[test]
fn guest_ram_leaves_out_the_svsm() {
    let ram = [range(0, 0xA_0000), range(0x10_0000, 0x8000_0000)];
    assert_eq!(
        super::svsm::guest_ram(ram.into_iter(), range(0x10_0000, 0x20_8000)),
        [range(0, 0xA_0000), range(0x20_8000, 0x8000_0000)]
    );
    assert_eq!(
        super::svsm::guest_ram(ram.into_iter(), range(0x100_0000, 0x200_0000)),
        [
            range(0, 0xA_0000),
            range(0x10_0000, 0x100_0000),
            range(0x200_0000, 0x8000_0000)
        ]
    );
}

static BACKOFFS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

#[test]
fn attestation_waits_out_a_busy_hypervisor() {
    let mut m = launched();
    m.psp = Some(PspModel::new(VMPCK));
    let core = spin::Mutex::new(core(m));
    core.lock().hw.hv.mode = HvMode::Busy(3);
    let transport = GhcbTransport {
        core: &core,
        pages: SHARED,
        backoff: |attempt| {
            BACKOFFS.fetch_max(attempt, std::sync::atomic::Ordering::SeqCst);
        },
        certs: None,
    };
    let mut ch = GuestRequestChannel::new(transport, Vmpck::new(VMPCK[0])).unwrap();
    let report = ch.report(&[7; 64], 0).unwrap();
    assert_eq!(&report[0x50..0x90], &[7u8; 64][..]);
    assert_eq!(BACKOFFS.load(std::sync::atomic::Ordering::SeqCst), 3);
}

// The certificate chain through the SNP Extended Guest Request.

use super::certs::{self, Fetched, GUID_ARK, GUID_ASK, GUID_VCEK, TableError};
use super::model::ExtHost;
use crate::platform::snp_report::REPORT_LEN;
use crate::protocols::SvsmError;
use crate::protocols::attest::ReportProvider;

/// The shared certificate buffer (16 pages after the request pages).
const CERT_SHARED: u64 = 0x500_2000;

type HwChannel = GuestRequestChannel<GhcbTransport<'static, Machine>>;

/// A machine with the model PSP and a host answering extended requests as
/// `ext`, and the channel the `Snp` platform builds over it.
fn ext_setup(ext: ExtHost) -> (&'static spin::Mutex<SnpCore<Machine>>, HwChannel) {
    let mut m = launched();
    m.psp = Some(PspModel::new(VMPCK));
    m.ext = ext;
    let core: &'static spin::Mutex<SnpCore<Machine>> =
        Box::leak(Box::new(spin::Mutex::new(core(m))));
    let transport = GhcbTransport {
        core,
        pages: SHARED,
        backoff: |_| {},
        certs: Some((CERT_SHARED, certs::MAX_PAGES)),
    };
    let ch = GuestRequestChannel::new(transport, Vmpck::new(VMPCK[0])).unwrap();
    (core, ch)
}

fn psp_seqno(core: &spin::Mutex<SnpCore<Machine>>) -> u64 {
    core.lock().hw.psp.as_ref().unwrap().last_seqno(0)
}

/// A VCEK chain of realistic sizes (the bytes are stand-ins).
fn chain() -> Vec<u8> {
    certs::tests::table(&[
        (GUID_VCEK, &[0xC1; 1360]),
        (GUID_ASK, &[0xA5; 1650]),
        (GUID_ARK, &[0xA7; 1660]),
    ])
}

/// The channel still makes reports in step with the PSP.
fn still_works(core: &spin::Mutex<SnpCore<Machine>>, ch: &mut HwChannel) {
    let before = psp_seqno(core);
    let report = ch.report(&[0x3C; 64], 0).unwrap();
    assert_eq!(&report[0x50..0x90], &[0x3C; 64][..]);
    assert_eq!(psp_seqno(core), before + 2);
    assert_eq!(ch.last_seqno(), before + 2);
}

/// What the `Snp` platform serves: reports from the channel, the fetched table.
struct SnpReports {
    ch: HwChannel,
    certs: Vec<u8>,
}

impl ReportProvider for SnpReports {
    fn report(&mut self, report_data: &[u8; 64]) -> Result<Vec<u8>, SvsmError> {
        self.ch
            .report(report_data, 0)
            .map(|r| r.to_vec())
            .map_err(|_| SvsmError::INVALID_REQUEST)
    }
    fn report_len(&self) -> Option<usize> {
        Some(REPORT_LEN)
    }
    fn certificates(&self) -> &[u8] {
        &self.certs
    }
}

#[test]
fn the_hosts_certificates_reach_the_guest_through_the_attestation_protocol() {
    let (core, mut ch) = ext_setup(ExtHost::Certs(chain()));
    let (table, how) = certs::fetch(&mut ch);
    assert_eq!(how, Fetched::Table(3));
    assert_eq!(table, chain());
    // One extended request, four pages offered, at the shared buffer; its
    // report took sequence numbers 1 and 2.
    assert_eq!(core.lock().hw.ext_requests, [(CERT_SHARED, 4)]);
    assert_eq!(psp_seqno(core), 2);

    // SVSM_ATTEST_SERVICES from the guest, through the real dispatcher.
    const REQ: u64 = GUEST.0 + 0x4000;
    const NONCE: u64 = GUEST.0 + 0x5000;
    const MANIFEST: u64 = GUEST.0 + 0x6000;
    const REPORT: u64 = GUEST.0 + 0x7000;
    const CERTS: u64 = GUEST.0 + 0x8000;
    let mut r = [0u8; 0x40];
    r[0..8].copy_from_slice(&REPORT.to_le_bytes());
    r[8..12].copy_from_slice(&4096u32.to_le_bytes());
    r[0x10..0x18].copy_from_slice(&NONCE.to_le_bytes());
    r[0x18..0x1A].copy_from_slice(&16u16.to_le_bytes());
    r[0x20..0x28].copy_from_slice(&MANIFEST.to_le_bytes());
    r[0x28..0x2C].copy_from_slice(&4096u32.to_le_bytes());
    r[0x30..0x38].copy_from_slice(&CERTS.to_le_bytes());
    r[0x38..0x3C].copy_from_slice(&(3 * 4096u32).to_le_bytes());
    {
        let mut c = core.lock();
        c.hw.poke(REQ, &r);
        c.hw.poke(NONCE, &[9; 16]);
    }
    let mut guest = SnpGuest { core };
    let mut svsm: Svsm<EchoTpm> = Svsm::new(CAA, None);
    svsm.attest = Some(Box::new(SnpReports {
        ch,
        certs: table.clone(),
    }));
    let mut regs = GuestRegisters {
        rax: 1 << 32, // protocol 1 (attestation), call 0 (SERVICES)
        rcx: REQ,
        ..Default::default()
    };
    svsm.handle(&mut guest, &mut regs);
    assert_eq!(regs.rax, result::SUCCESS);
    assert_eq!(
        regs.rdx,
        table.len() as u64,
        "RDX = the certificates' length"
    );
    assert_eq!(regs.r8, REPORT_LEN as u64);
    let c = core.lock();
    let mut got = vec![0u8; table.len()];
    c.hw.peek(CERTS, &mut got);
    assert_eq!(got, table);
    assert_eq!(certs::validate(&got), Ok(table.clone()));
    // The report came from the PSP through the same channel, next in line.
    assert_eq!(c.hw.psp.as_ref().unwrap().last_seqno(0), 4);
}

#[test]
fn a_buffer_too_small_is_resent_plain_then_retried_with_the_pages_asked_for() {
    // 6 pages of certificates: more than the 4 offered first.
    let big = certs::tests::table(&[(GUID_VCEK, &[0x5A; 5 * 4096]), (GUID_ARK, &[1; 100])]);
    let (core, mut ch) = ext_setup(ExtHost::Certs(big.clone()));
    let (table, how) = certs::fetch(&mut ch);
    assert_eq!(how, Fetched::Table(2));
    assert_eq!(table, big);
    assert_eq!(
        core.lock().hw.ext_requests,
        [(CERT_SHARED, 4), (CERT_SHARED, 6)]
    );
    // The refused message went out again as a plain request (same
    // sequence number), then the retry took the next: the PSP saw 1 and 3.
    assert_eq!(psp_seqno(core), 4);
    assert!(!ch.is_disabled());
    still_works(core, &mut ch);
}

#[test]
fn hosts_without_a_usable_table_give_an_empty_chain_and_keep_the_channel() {
    let cases: Vec<(ExtHost, Fetched, usize)> = vec![
        // (host, outcome, extended requests made)
        (ExtHost::Unsupported, Fetched::NotServed, 1),
        (ExtHost::Certs(Vec::new()), Fetched::Empty, 1),
        (ExtHost::Certs(vec![0; 24]), Fetched::Empty, 1),
        (ExtHost::WantPages(1 << 40), Fetched::BadSize(1 << 40), 1),
        (ExtHost::WantPages(17), Fetched::BadSize(17), 1),
        (ExtHost::WantPages(3), Fetched::BadSize(3), 1),
        // Asks for 6, then for 6 again when given 6.
        (ExtHost::WantPages(6), Fetched::BadSize(6), 2),
        (ExtHost::InvalidLenNoRbx, Fetched::NotServed, 1),
    ];
    for (host, want, exts) in cases {
        let label = format!("{host:?}");
        let (core, mut ch) = ext_setup(host);
        let (table, how) = certs::fetch(&mut ch);
        assert_eq!(how, want, "{label}");
        assert!(table.is_empty(), "{label}");
        assert_eq!(core.lock().hw.ext_requests.len(), exts, "{label}");
        assert_eq!(psp_seqno(core), 2 * exts as u64, "{label}");
        still_works(core, &mut ch);
    }
}

#[test]
fn bad_tables_from_the_host_give_an_empty_chain_and_keep_the_channel() {
    let good = chain();
    let entry = |t: &mut Vec<u8>, i: usize, off: u32, len: u32| {
        t[i * 24 + 16..i * 24 + 20].copy_from_slice(&off.to_le_bytes());
        t[i * 24 + 20..i * 24 + 24].copy_from_slice(&len.to_le_bytes());
    };
    let mut overlapping = good.clone();
    entry(&mut overlapping, 1, 96 + 1000, 1650);
    let mut truncated = good.clone();
    entry(&mut truncated, 2, 0x3F00, 0x200);
    let mut unterminated = vec![0u8; 4 * 4096];
    for (i, e) in unterminated.chunks_exact_mut(24).enumerate() {
        e.fill((i % 250) as u8 + 1);
    }
    let cases = [
        (overlapping, Fetched::Invalid(TableError::Overlap(0))),
        (truncated, Fetched::Invalid(TableError::OutOfBounds(2))),
        (unterminated, Fetched::Invalid(TableError::Unterminated)),
    ];
    for (blob, want) in cases {
        let (core, mut ch) = ext_setup(ExtHost::Certs(blob));
        let (table, how) = certs::fetch(&mut ch);
        assert_eq!(how, want);
        assert!(table.is_empty());
        assert_eq!(psp_seqno(core), 2);
        still_works(core, &mut ch);
    }
}

#[test]
fn a_hostile_report_part_wipes_the_key_as_any_guest_request_does() {
    let (core, mut ch) = ext_setup(ExtHost::Certs(chain()));
    core.lock().hw.hv.mode = HvMode::Garbage;
    let (table, how) = certs::fetch(&mut ch);
    assert!(table.is_empty());
    assert!(
        matches!(how, Fetched::Request(GuestRequestError::BadResponse(_))),
        "{how:?}"
    );
    assert!(ch.is_disabled());
    assert_eq!(ch.report(&[1; 64], 0), Err(GuestRequestError::Disabled));
}

#[test]
fn a_busy_host_gets_the_same_extended_request_again() {
    let (core, mut ch) = ext_setup(ExtHost::Certs(chain()));
    core.lock().hw.hv.mode = HvMode::Busy(2);
    let (table, how) = certs::fetch(&mut ch);
    assert_eq!(how, Fetched::Table(3));
    assert_eq!(table, chain());
    assert_eq!(core.lock().hw.ext_requests.len(), 3);
    assert_eq!(psp_seqno(core), 2);
}
