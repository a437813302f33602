//! Every check the guest makes of the SVSM, in order.

use sha2::{Digest, Sha256};

use crate::serial::print;
use crate::svsm::{self, Info, Regs};
use crate::tpm_cmd::{self, frame, response_code, unframe};

const CORE: u32 = 0;
const ATTEST: u32 = 1;
const VTPM: u32 = 2;

const SUCCESS: u64 = 0;
const UNSUPPORTED_PROTOCOL: u64 = 0x8000_0001;
const UNSUPPORTED_CALL: u64 = 0x8000_0002;
const INVALID_ADDRESS: u64 = 0x8000_0003;
const INVALID_PARAMETER: u64 = 0x8000_0005;
const INVALID_REQUEST: u64 = 0x8000_0006;

/// Page-aligned scratch pages in guest memory.
#[repr(C, align(4096))]
struct Page([u8; 4096]);

static mut VTPM_BUFFER: Page = Page([0; 4096]);
static mut SCRATCH: [Page; 2] = [Page([0; 4096]), Page([0; 4096])];
/// Attestation pages: request, nonce, manifest, report, certificates.
static mut ATTEST_PAGES: [Page; 5] = [const { Page([0; 4096]) }; 5];

fn vtpm_buffer() -> &'static mut [u8; 4096] {
    // SAFETY: one vCPU, and only `run` (single-threaded) uses the buffer.
    unsafe { &mut (*core::ptr::addr_of_mut!(VTPM_BUFFER)).0 }
}

fn scratch(i: usize) -> &'static mut [u8; 4096] {
    // SAFETY: as for the vTPM buffer.
    unsafe { &mut (*core::ptr::addr_of_mut!(SCRATCH))[i].0 }
}

fn attest_page(i: usize) -> &'static mut [u8; 4096] {
    // SAFETY: as for the vTPM buffer.
    unsafe { &mut (*core::ptr::addr_of_mut!(ATTEST_PAGES))[i].0 }
}

const REQUEST: usize = 0;
const NONCE: usize = 1;
const MANIFEST: usize = 2;
const REPORT: usize = 3;
const CERTS: usize = 4;
/// The vTPM service GUID c476f1eb-0123-45a5-9641-b4e7dde5bfe3, byte form.
const VTPM_GUID: [u8; 16] = [
    0xeb, 0xf1, 0x76, 0xc4, 0x23, 0x01, 0xa5, 0x45, 0x96, 0x41, 0xb4, 0xe7, 0xdd, 0xe5, 0xbf, 0xe3,
];

/// Fills the attestation request page; `service` makes it a single-service request.
fn attest_request(nonce_len: u16, sizes: (u32, u32, u32), service: Option<([u8; 16], u32)>) -> u64 {
    let addr = |i: usize| attest_page(i).as_ptr() as u64;
    let (report, manifest, certs) = (addr(REPORT), addr(MANIFEST), addr(CERTS));
    let nonce = addr(NONCE);
    let r = attest_page(REQUEST);
    r.fill(0);
    r[0..8].copy_from_slice(&report.to_le_bytes());
    r[8..12].copy_from_slice(&sizes.0.to_le_bytes());
    r[0x10..0x18].copy_from_slice(&nonce.to_le_bytes());
    r[0x18..0x1A].copy_from_slice(&nonce_len.to_le_bytes());
    r[0x20..0x28].copy_from_slice(&manifest.to_le_bytes());
    r[0x28..0x2C].copy_from_slice(&sizes.1.to_le_bytes());
    r[0x30..0x38].copy_from_slice(&certs.to_le_bytes());
    r[0x38..0x3C].copy_from_slice(&sizes.2.to_le_bytes());
    if let Some((guid, version)) = service {
        r[0x40..0x50].copy_from_slice(&guid);
        r[0x50..0x54].copy_from_slice(&version.to_le_bytes());
    }
    r.as_ptr() as u64
}

struct Tally {
    passed: u32,
    failed: u32,
}

impl Tally {
    fn check(&mut self, name: &str, ok: bool, detail: core::fmt::Arguments<'_>) {
        if ok {
            self.passed += 1;
            print(format_args!("guest: check {name} ... ok\n"));
        } else {
            self.failed += 1;
            print(format_args!("guest: check {name} ... FAILED: {detail}\n"));
        }
    }
}

fn call(info: &Info, protocol: u32, id: u32, rcx: u64) -> Regs {
    svsm::call(
        info.caa,
        protocol,
        id,
        Regs {
            rcx,
            ..Regs::default()
        },
        true,
    )
}

/// Sends a TPM command through the vTPM protocol; returns RAX.
fn vtpm_send(info: &Info, command: &[u8]) -> u64 {
    let buf = vtpm_buffer();
    frame(command, 0, command.len() as u32, buf);
    call(info, VTPM, 1, buf.as_ptr() as u64).rax
}

/// Runs everything and prints the tally.
pub fn run(info_page: u64) {
    let info = svsm::info(info_page);
    print(format_args!(
        "guest: started; SVSM at {:#x}+{:#x}, calling area {:#x}, max version {}\n",
        info.svsm_base, info.svsm_size, info.caa, info.max_version
    ));
    let mut t = Tally {
        passed: 0,
        failed: 0,
    };
    core_protocol(&info, &mut t);
    vtpm_protocol(&info, &mut t);
    quote(&info, &mut t);
    attestation(&info, &mut t);
    nv_certificates(&info, &mut t);
    bad_inputs(&info, &mut t);
    print(format_args!(
        "guest: result: {} passed, {} failed\n",
        t.passed, t.failed
    ));
    performance(&info);
}

fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads the time-stamp counter.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Round trips timed with the TSC; the host turns ticks into rates with the
/// TSC frequency the SVSM logs.
fn performance(info: &Info) {
    const CALLS: u32 = 2000;
    const COMMANDS: u32 = 200;
    let start = rdtsc();
    for _ in 0..CALLS {
        call(info, CORE, 6, (u64::from(CORE) << 32) | 1);
    }
    let calls = rdtsc() - start;
    let start = rdtsc();
    for _ in 0..COMMANDS {
        vtpm_send(info, tpm_cmd::get_random(32).finish());
    }
    let commands = rdtsc() - start;
    print(format_args!(
        "guest: perf svsm_calls={CALLS} tsc_ticks={calls}\n"
    ));
    print(format_args!(
        "guest: perf vtpm_get_random={COMMANDS} tsc_ticks={commands}\n"
    ));
}

fn core_protocol(info: &Info, t: &mut Tally) {
    let r = call(info, CORE, 6, (u64::from(CORE) << 32) | 1);
    t.check(
        "query_core_v1",
        r.rax == SUCCESS && r.rcx == (1 << 32) | 1,
        format_args!("{r:x?}"),
    );
    let r = call(info, CORE, 6, (u64::from(VTPM) << 32) | 1);
    t.check(
        "query_vtpm_v1",
        r.rax == SUCCESS && r.rcx == (1 << 32) | 1,
        format_args!("{r:x?}"),
    );
    let r = call(info, CORE, 6, (u64::from(ATTEST) << 32) | 1);
    t.check(
        "query_attest_v1",
        r.rax == SUCCESS && r.rcx == (1 << 32) | 1,
        format_args!("{r:x?}"),
    );
    let r = call(info, CORE, 6, (u64::from(CORE) << 32) | 7);
    t.check(
        "query_core_v7_unsupported",
        r.rax == SUCCESS && r.rcx == 0,
        format_args!("{r:x?}"),
    );
    t.check(
        "call_pending_cleared",
        svsm::call_pending(info.caa) == 0,
        format_args!("still {}", svsm::call_pending(info.caa)),
    );

    // Move the Calling Area to a scratch page and back.
    let new_ca = scratch(0).as_ptr() as u64;
    let r = call(info, CORE, 0, new_ca);
    let moved = r.rax == SUCCESS;
    let back = if moved {
        svsm::call(
            new_ca,
            CORE,
            0,
            Regs {
                rcx: info.caa,
                ..Regs::default()
            },
            true,
        )
        .rax
    } else {
        u64::MAX
    };
    t.check(
        "remap_ca_and_back",
        moved && back == SUCCESS,
        format_args!("{:#x} then {back:#x}", r.rax),
    );

    // PVALIDATE one 4 KiB page of our own memory.
    let req = scratch(1);
    req.fill(0);
    let page = new_ca;
    req[0..2].copy_from_slice(&1u16.to_le_bytes());
    req[8..16].copy_from_slice(&(page | 4).to_le_bytes());
    let r = call(info, CORE, 1, req.as_ptr() as u64);
    let next = u16::from_le_bytes([req[2], req[3]]);
    t.check(
        "pvalidate_one_page",
        r.rax == SUCCESS && next == 1,
        format_args!("{:#x} next {next}", r.rax),
    );

    // One vCPU per guest here: addresses are checked, then the call is refused.
    let (vmsa, caa) = (scratch(0).as_ptr() as u64, scratch(1).as_ptr() as u64);
    let r = svsm::call(
        info.caa,
        CORE,
        2,
        Regs {
            rcx: vmsa,
            rdx: caa,
            r8: 1,
            ..Regs::default()
        },
        true,
    );
    t.check(
        "create_vcpu_unsupported",
        r.rax == UNSUPPORTED_CALL,
        format_args!("{:#x}", r.rax),
    );
    let r = call(info, CORE, 3, vmsa);
    t.check(
        "delete_vcpu_unknown_vmsa",
        r.rax == INVALID_PARAMETER,
        format_args!("{:#x}", r.rax),
    );
    let r = call(info, CORE, 7, 1);
    t.check(
        "configure_vtom_query",
        r.rax == SUCCESS && r.rcx == 0,
        format_args!("{r:x?}"),
    );
    let r = call(info, CORE, 4, 0);
    t.check(
        "deposit_mem_unsupported",
        r.rax == UNSUPPORTED_CALL,
        format_args!("{:#x}", r.rax),
    );
    let r = call(info, CORE, 5, 0);
    t.check(
        "withdraw_mem_unsupported",
        r.rax == UNSUPPORTED_CALL,
        format_args!("{:#x}", r.rax),
    );
}

fn vtpm_protocol(info: &Info, t: &mut Tally) {
    let r = call(info, VTPM, 0, 0);
    t.check(
        "vtpm_query",
        r.rax == SUCCESS && r.rcx & (1 << 8) != 0 && r.rdx == 0,
        format_args!("{r:x?}"),
    );

    // The SVSM started the TPM (and made its EKs) before the guest ran.
    let rax = vtpm_send(info, tpm_cmd::startup_clear().finish());
    let rc = unframe(vtpm_buffer()).and_then(response_code);
    t.check(
        "tpm_already_started",
        rax == SUCCESS && rc == Some(0x100),
        format_args!("rax {rax:#x} rc {rc:x?}"),
    );

    let rax = vtpm_send(info, tpm_cmd::get_random(16).finish());
    let resp = unframe(vtpm_buffer());
    let ok = resp.is_some_and(|r| response_code(r) == Some(0) && r.len() == 10 + 2 + 16);
    t.check(
        "tpm_get_random",
        rax == SUCCESS && ok,
        format_args!("rax {rax:#x} {resp:x?}"),
    );

    let rax = vtpm_send(info, tpm_cmd::get_tpm_property(0x105).finish());
    let rc = unframe(vtpm_buffer()).and_then(response_code);
    t.check(
        "tpm_get_capability",
        rax == SUCCESS && rc == Some(0),
        format_args!("rax {rax:#x} rc {rc:x?}"),
    );

    // Measure our code and constants (not the data we change) into PCR 8,
    // and read it back.
    // SAFETY: the linker script defines both symbols around the read-only
    // part of this image, which nothing writes.
    let image = unsafe {
        unsafe extern "C" {
            static __image_start: u8;
            static __measured_end: u8;
        }
        let start = core::ptr::addr_of!(__image_start);
        let end = core::ptr::addr_of!(__measured_end);
        core::slice::from_raw_parts(start, end as usize - start as usize)
    };
    let measurement: [u8; 32] = Sha256::digest(image).into();
    let rax = vtpm_send(info, tpm_cmd::pcr_extend_sha256(8, &measurement).finish());
    let rc = unframe(vtpm_buffer()).and_then(response_code);
    t.check(
        "tpm_pcr_extend",
        rax == SUCCESS && rc == Some(0),
        format_args!("rax {rax:#x} rc {rc:x?}"),
    );
    let mut h = Sha256::new();
    h.update([0u8; 32]);
    h.update(measurement);
    let expected: [u8; 32] = h.finalize().into();
    let rax = vtpm_send(info, tpm_cmd::pcr_read_sha256(8).finish());
    let resp = unframe(vtpm_buffer());
    let value = resp.and_then(|r| r.get(r.len().saturating_sub(32)..));
    t.check(
        "tpm_pcr_read_matches",
        rax == SUCCESS && value == Some(&expected[..]),
        format_args!("rax {rax:#x} got {value:02x?}"),
    );
    print(format_args!(
        "guest: evidence pcr8_sha256={}\n",
        Hex(&expected)
    ));
    print(format_args!(
        "guest: evidence measurement_sha256={}\n",
        Hex(&measurement)
    ));
}

/// Makes an attestation key, reads PCRs 0-9 and quotes them with a nonce;
/// prints everything a verifier needs.
fn quote(info: &Info, t: &mut Tally) {
    let template = tpm_cmd::ak_template();
    let rax = vtpm_send(
        info,
        tpm_cmd::create_primary_endorsement(template.raw()).finish(),
    );
    let resp = unframe(vtpm_buffer());
    let ak = resp
        .filter(|r| response_code(r) == Some(0))
        .and_then(tpm_cmd::parse_create_primary);
    t.check(
        "tpm_create_primary_ak",
        rax == SUCCESS && ak.is_some(),
        format_args!("rax {rax:#x} {resp:x?}"),
    );
    let Some((handle, public)) = ak else { return };
    print(format_args!("guest: evidence ak_public={}\n", Hex(public)));

    for (first, bitmap) in [(0usize, [0xFFu8, 0, 0]), (8, [0, 0x03, 0])] {
        let mut c = tpm_cmd::Command::new(tpm_cmd::ST_NO_SESSIONS, 0x17E);
        c.u32(1).u16(tpm_cmd::ALG_SHA256).u8(3).bytes(&bitmap);
        let rax = vtpm_send(info, c.finish());
        let mut digests: [&[u8]; 8] = [&[]; 8];
        let n = unframe(vtpm_buffer())
            .filter(|r| response_code(r) == Some(0))
            .and_then(|r| tpm_cmd::parse_pcr_read(r, &mut digests));
        let want = bitmap
            .iter()
            .map(|b| b.count_ones() as usize)
            .sum::<usize>();
        let name = if first == 0 {
            "tpm_pcr_read_0_7"
        } else {
            "tpm_pcr_read_8_9"
        };
        t.check(
            name,
            rax == SUCCESS && n == Some(want),
            format_args!("rax {rax:#x} {n:?}"),
        );
        for (i, d) in digests.iter().take(n.unwrap_or(0)).enumerate() {
            print(format_args!(
                "guest: evidence pcr_sha256_{}={}\n",
                first + i,
                Hex(d)
            ));
        }
    }

    let mut nonce = [0u8; 32];
    let seed = rdtsc();
    for (i, b) in nonce.iter_mut().enumerate() {
        *b = (seed >> (8 * (i % 8))) as u8 ^ (i as u8).wrapping_mul(91);
    }
    let rax = vtpm_send(
        info,
        tpm_cmd::quote(handle, &nonce, [0xFF, 0x03, 0]).finish(),
    );
    let resp = unframe(vtpm_buffer());
    let q = resp
        .filter(|r| response_code(r) == Some(0))
        .and_then(tpm_cmd::parse_quote);
    t.check(
        "tpm_quote",
        rax == SUCCESS && q.is_some(),
        format_args!("rax {rax:#x} {resp:x?}"),
    );
    if let Some((attest, signature)) = q {
        print(format_args!(
            "guest: evidence quote_nonce={}\n",
            Hex(&nonce)
        ));
        print(format_args!(
            "guest: evidence quote_attest={}\n",
            Hex(attest)
        ));
        print(format_args!(
            "guest: evidence quote_signature={}\n",
            Hex(signature)
        ));
    }

    const QUOTES: u32 = 10;
    let start = rdtsc();
    for _ in 0..QUOTES {
        vtpm_send(
            info,
            tpm_cmd::quote(handle, &nonce, [0xFF, 0x03, 0]).finish(),
        );
    }
    let ticks = rdtsc() - start;
    print(format_args!(
        "guest: perf vtpm_quote={QUOTES} tsc_ticks={ticks}\n"
    ));
    let rax = vtpm_send(info, tpm_cmd::flush_context(handle).finish());
    let rc = unframe(vtpm_buffer()).and_then(response_code);
    t.check(
        "tpm_flush_ak",
        rax == SUCCESS && rc == Some(0),
        format_args!("{rax:#x} {rc:x?}"),
    );
}

/// Asks for an attestation (all services, or one service and manifest
/// version), checks the answer's lengths, and prints the manifest and the
/// report as evidence under `names`.
fn attest_and_print(
    info: &Info,
    t: &mut Tally,
    check: &str,
    service: Option<([u8; 16], u32)>,
    names: (&str, &str),
) -> Regs {
    let req = attest_request(32, (4096, 4096, 4096), service);
    let id = if service.is_some() { 1 } else { 0 };
    let r = call(info, ATTEST, id, req);
    let ok = r.rax == SUCCESS && r.r8 == 0x4A0 && r.rcx >= 24 && r.rcx <= 4096;
    t.check(check, ok, format_args!("{r:x?}"));
    if ok {
        print(format_args!(
            "guest: evidence {}={}\n",
            names.0,
            Hex(&attest_page(MANIFEST)[..r.rcx as usize])
        ));
        print(format_args!(
            "guest: evidence {}={}\n",
            names.1,
            Hex(&attest_page(REPORT)[..0x4A0])
        ));
    }
    r
}

fn attestation(info: &Info, t: &mut Tally) {
    // A nonce a verifier could have chosen: here derived from the TSC.
    let nonce = attest_page(NONCE);
    let seed = rdtsc();
    for (i, b) in nonce[..32].iter_mut().enumerate() {
        *b = (seed >> (8 * (i % 8))) as u8 ^ (i as u8).wrapping_mul(37);
    }
    print(format_args!(
        "guest: evidence nonce={}\n",
        Hex(&attest_page(NONCE)[..32])
    ));
    // All services; then the vTPM alone with manifest version 0 (the EK
    // public area) and version 1 (both EKs and both AKs made at boot).
    let r = attest_and_print(
        info,
        t,
        "attest_services",
        None,
        ("services_manifest", "report"),
    );
    print(format_args!("guest: evidence certs_len={}\n", r.rdx));
    attest_and_print(
        info,
        t,
        "attest_single_service_vtpm",
        Some((VTPM_GUID, 0)),
        ("vtpm_manifest", "vtpm_report"),
    );
    attest_and_print(
        info,
        t,
        "attest_single_service_vtpm_v1",
        Some((VTPM_GUID, 1)),
        ("vtpm_manifest_v1", "vtpm_report_v1"),
    );

    let req = attest_request(32, (0x100, 4096, 4096), None);
    let r = svsm::call(
        info.caa,
        ATTEST,
        0,
        Regs {
            rcx: req,
            ..Regs::default()
        },
        true,
    );
    t.check(
        "bad_attest_small_report_buffer_gets_lengths",
        r.rax == INVALID_PARAMETER && r.r8 == 0x4A0 && r.rcx >= 24,
        format_args!("{r:x?}"),
    );
    let req = attest_request(32, (4096, 4096, 4096), Some(([0x55; 16], 0)));
    let r = svsm::call(
        info.caa,
        ATTEST,
        1,
        Regs {
            rcx: req,
            ..Regs::default()
        },
        true,
    );
    t.check(
        "bad_attest_unknown_service",
        r.rax == INVALID_PARAMETER,
        format_args!("{r:x?}"),
    );
    let r = call(info, ATTEST, 1, info.svsm_base);
    t.check(
        "bad_attest_request_in_svsm",
        r.rax == INVALID_ADDRESS,
        format_args!("{r:x?}"),
    );
}

/// The certificates the SVSM wrote into NV at boot: the EK certificates at
/// the EK Credential Profile's indices, the AK certificates and the binding
/// certificate (which carries the report) at Rivet's. Each is read as a TPM
/// client would (NV_ReadPublic, then NV_Read in chunks) and printed.
const NV_CERTS: [(&str, u32); 5] = [
    ("ek_cert_rsa", 0x01C0_0002),
    ("ek_cert_ecc", 0x01C0_000A),
    ("ak_cert_ecc", 0x0152_5601),
    ("ak_cert_rsa", 0x0152_5602),
    ("binding_cert", 0x0152_5600),
];
/// PPWRITE|WRITEDEFINE|PPREAD|OWNERREAD|AUTHREAD|NO_DA|PLATFORMCREATE, and
/// WRITTEN|WRITELOCKED once provisioned.
const NV_CERT_ATTRIBUTES: u32 = 0x4207_2001 | 0x2000_0800;
/// Largest certificate (MAX_NV_INDEX_SIZE) and NV_Read chunk.
const NV_CERT_MAX: usize = 2048;
const NV_CHUNK: usize = 1024;

static mut NV_DATA: [u8; NV_CERT_MAX] = [0; NV_CERT_MAX];

fn nv_data() -> &'static mut [u8; NV_CERT_MAX] {
    // SAFETY: as for the vTPM buffer.
    unsafe { &mut *core::ptr::addr_of_mut!(NV_DATA) }
}

/// The length a DER SEQUENCE header at the start of `b` says it has, header included.
fn der_sequence_len(b: &[u8]) -> Option<usize> {
    match b {
        [0x30, 0x82, hi, lo, ..] => Some(4 + (usize::from(*hi) << 8 | usize::from(*lo))),
        [0x30, 0x81, n, ..] => Some(3 + usize::from(*n)),
        _ => None,
    }
}

/// Reads one NV index: `Err` says what failed.
fn read_nv(info: &Info, index: u32) -> Result<&'static [u8], &'static str> {
    let rax = vtpm_send(info, tpm_cmd::nv_read_public(index).finish());
    let resp = unframe(vtpm_buffer()).filter(|r| response_code(r) == Some(0));
    let (attributes, size) = resp
        .and_then(tpm_cmd::parse_nv_read_public)
        .filter(|_| rax == SUCCESS)
        .ok_or("NV_ReadPublic failed")?;
    if attributes != NV_CERT_ATTRIBUTES {
        return Err("unexpected NV attributes");
    }
    let size = usize::from(size);
    if size > NV_CERT_MAX {
        return Err("index larger than MAX_NV_INDEX_SIZE");
    }
    let data = nv_data();
    let mut at = 0;
    while at < size {
        let n = (size - at).min(NV_CHUNK);
        let rax = vtpm_send(info, tpm_cmd::nv_read(index, n as u16, at as u16).finish());
        let chunk = unframe(vtpm_buffer())
            .filter(|r| rax == SUCCESS && response_code(r) == Some(0))
            .and_then(tpm_cmd::parse_nv_read)
            .filter(|c| c.len() == n)
            .ok_or("NV_Read failed")?;
        data[at..at + n].copy_from_slice(chunk);
        at += n;
    }
    let data = &data[..size];
    if der_sequence_len(data) != Some(size) {
        return Err("not one DER certificate");
    }
    Ok(data)
}

fn nv_certificates(info: &Info, t: &mut Tally) {
    for (name, index) in NV_CERTS {
        let mut check = [0u8; 32];
        let label = b"nv_read_";
        check[..label.len()].copy_from_slice(label);
        check[label.len()..label.len() + name.len()].copy_from_slice(name.as_bytes());
        let check = core::str::from_utf8(&check[..label.len() + name.len()]).unwrap_or("nv_read");
        match read_nv(info, index) {
            Ok(cert) => {
                t.check(check, true, format_args!(""));
                print(format_args!("guest: evidence {name}={}\n", Hex(cert)));
            }
            Err(why) => t.check(check, false, format_args!("index {index:#010x}: {why}")),
        }
    }
}

fn bad_inputs(info: &Info, t: &mut Tally) {
    let svsm_mem = info.svsm_base;
    let beyond = 0x1_0000_0000; // past all guest memory
    let expect = |t: &mut Tally, name: &str, got: u64, want: u64| {
        t.check(
            name,
            got == want,
            format_args!("got {got:#x}, want {want:#x}"),
        )
    };

    expect(
        t,
        "bad_unknown_protocol",
        call(info, 9, 0, 0).rax,
        UNSUPPORTED_PROTOCOL,
    );
    expect(
        t,
        "bad_unknown_core_call",
        call(info, CORE, 99, 0).rax,
        UNSUPPORTED_CALL,
    );
    expect(
        t,
        "bad_unknown_vtpm_call",
        call(info, VTPM, 7, 0).rax,
        UNSUPPORTED_CALL,
    );
    expect(
        t,
        "bad_configure_vtom",
        call(info, CORE, 7, 0).rax,
        INVALID_REQUEST,
    );

    let r = svsm::call(
        info.caa,
        CORE,
        2,
        Regs {
            rcx: svsm_mem,
            rdx: scratch(1).as_ptr() as u64,
            ..Regs::default()
        },
        true,
    );
    expect(t, "bad_create_vcpu_vmsa_in_svsm", r.rax, INVALID_ADDRESS);
    let r = svsm::call(
        info.caa,
        CORE,
        2,
        Regs {
            rcx: scratch(0).as_ptr() as u64 + 8,
            rdx: scratch(1).as_ptr() as u64,
            ..Regs::default()
        },
        true,
    );
    expect(t, "bad_create_vcpu_misaligned", r.rax, INVALID_ADDRESS);
    expect(
        t,
        "bad_remap_ca_misaligned",
        call(info, CORE, 0, info.caa + 4).rax,
        INVALID_PARAMETER,
    );
    expect(
        t,
        "bad_remap_ca_svsm_memory",
        call(info, CORE, 0, svsm_mem).rax,
        INVALID_ADDRESS,
    );
    expect(
        t,
        "bad_remap_ca_beyond_memory",
        call(info, CORE, 0, beyond).rax,
        INVALID_ADDRESS,
    );

    let req = scratch(1);
    expect(
        t,
        "bad_pvalidate_request_in_svsm",
        call(info, CORE, 1, svsm_mem).rax,
        INVALID_PARAMETER,
    );
    expect(
        t,
        "bad_pvalidate_request_misaligned",
        call(info, CORE, 1, req.as_ptr() as u64 + 4).rax,
        INVALID_PARAMETER,
    );
    req.fill(0);
    req[0..2].copy_from_slice(&2u16.to_le_bytes());
    req[8..16].copy_from_slice(&((scratch(0).as_ptr() as u64) | 4).to_le_bytes());
    req[16..24].copy_from_slice(&(svsm_mem | 4).to_le_bytes());
    let r = call(info, CORE, 1, req.as_ptr() as u64);
    let next = u16::from_le_bytes([req[2], req[3]]);
    t.check(
        "bad_pvalidate_svsm_page",
        r.rax == INVALID_ADDRESS && next == 1,
        format_args!("{:#x} next {next}", r.rax),
    );
    req[0..4].copy_from_slice(&[1, 0, 0, 0]);
    req[8..16].copy_from_slice(&(((scratch(0).as_ptr() as u64) + 0x1000) | 1 | 4).to_le_bytes());
    expect(
        t,
        "bad_pvalidate_2m_misaligned",
        call(info, CORE, 1, req.as_ptr() as u64).rax,
        INVALID_PARAMETER,
    );
    let tail = req.as_ptr() as u64 + 4096 - 16;
    let tail_bytes = &mut req[4096 - 16..];
    tail_bytes.fill(0);
    tail_bytes[0] = 2; // two entries but room for one
    expect(
        t,
        "bad_pvalidate_crosses_page",
        call(info, CORE, 1, tail).rax,
        INVALID_PARAMETER,
    );

    let r = svsm::call(
        info.caa,
        CORE,
        6,
        Regs {
            rcx: 1,
            ..Regs::default()
        },
        false,
    );
    t.check(
        "bad_call_without_call_pending_ignored",
        r.rax == (u64::from(CORE) << 32) | 6 && r.rcx == 1,
        format_args!("{r:x?}"),
    );

    expect(
        t,
        "bad_vtpm_buffer_in_svsm",
        call(info, VTPM, 1, svsm_mem).rax,
        INVALID_ADDRESS,
    );
    expect(
        t,
        "bad_vtpm_buffer_beyond_memory",
        call(info, VTPM, 1, beyond).rax,
        INVALID_ADDRESS,
    );
    let buf = vtpm_buffer();
    let get_random = *tpm_cmd::get_random(8)
        .finish()
        .first_chunk::<12>()
        .unwrap_or(&[0; 12]);
    frame(&get_random, 0, 5000, buf);
    expect(
        t,
        "bad_vtpm_size_beyond_buffer",
        call(info, VTPM, 1, buf.as_ptr() as u64).rax,
        INVALID_PARAMETER,
    );
    frame(&get_random, 3, 12, buf);
    expect(
        t,
        "bad_vtpm_locality",
        call(info, VTPM, 1, buf.as_ptr() as u64).rax,
        INVALID_PARAMETER,
    );
    buf[0] = 7;
    buf[4] = 0;
    expect(
        t,
        "bad_vtpm_platform_command",
        call(info, VTPM, 1, buf.as_ptr() as u64).rax,
        INVALID_PARAMETER,
    );
    // A size field that says less than the command holds: the TPM sees a
    // truncated command and answers with an error code.
    frame(&get_random, 0, 11, buf);
    let rax = call(info, VTPM, 1, buf.as_ptr() as u64).rax;
    let rc = unframe(buf).and_then(response_code);
    t.check(
        "bad_vtpm_lying_size_gets_tpm_error",
        rax == SUCCESS && rc.is_some_and(|rc| rc != 0),
        format_args!("rax {rax:#x} rc {rc:x?}"),
    );
    let garbage = [0xA5u8; 64];
    frame(&garbage, 0, 64, buf);
    let rax = call(info, VTPM, 1, buf.as_ptr() as u64).rax;
    let rc = unframe(buf).and_then(response_code);
    t.check(
        "bad_vtpm_garbage_gets_tpm_error",
        rax == SUCCESS && rc.is_some_and(|rc| rc != 0),
        format_args!("rax {rax:#x} rc {rc:x?}"),
    );
    // Still serving afterwards.
    let rax = vtpm_send(info, tpm_cmd::get_random(4).finish());
    let rc = unframe(vtpm_buffer()).and_then(response_code);
    t.check(
        "still_serving_after_bad_input",
        rax == SUCCESS && rc == Some(0),
        format_args!("{rax:#x} {rc:x?}"),
    );
}

struct Hex<'a>(&'a [u8]);

impl core::fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}
