//! tpm2-tools against the TPM server over the MS-simulator protocol, step by
//! step, each step checked. Every scenario runs against the Rivet engine and
//! against the reference TPM (libtpms behind the same server code): the
//! reference run shows the scenario itself expects what a real TPM does.

use rivet_tests::hex;
use rivet_tests::on_both_backends;
use rivet_tests::scenario::{Setup, setup};
use rivet_tests::server::{Backend, TpmServer};
use rivet_tests::tools::{Tpm2, field, pcr};
use sha1::Sha1;
use sha2::{Digest, Sha256};

const TPM_RC_NV_AUTHORIZATION: u32 = 0x149;
const TPM_RC_NV_LOCKED: u32 = 0x148;
const TPM_RC_BAD_AUTH: u32 = 0x9a2;
const TPM_RC_DISABLED: u32 = 0x120;
/// TPM_RC_AUTH_FAIL for session 1 (tpm2-tools authorizes NV reads with an HMAC session).
const TPM_RC_AUTH_FAIL_SESSION_1: u32 = 0x98e;

on_both_backends!(
    random_and_hash,
    pcr_read_extend_event_reset,
    pcr_allocate,
    nv_ordinary_index,
    nv_counter_extend_and_bits,
    nv_locks,
    every_capability_group,
    changeauth_and_clear,
    restart_keeps_nv_and_clock_moves_forward,
    keys_signatures_and_a_pcr_policy,
);

fn random_and_hash(backend: Backend) {
    let Setup {
        tools,
        server: _server,
        state_dir: _dir,
    } = setup(backend);
    let a = tools.ok(&["getrandom", "32", "--hex"]);
    let b = tools.ok(&["getrandom", "32", "--hex"]);
    assert_eq!(a.trim().len(), 64, "32 bytes as hex: {a:?}");
    assert_ne!(a, b, "two draws of 32 random bytes are equal");
    tools.ok(&["getrandom", "16", "-o", "rand.bin"]);
    assert_eq!(tools.read("rand.bin").len(), 16);

    let data = b"the quick brown fox jumps over the lazy dog\n".repeat(20);
    tools.write("data", &data);
    let digest = tools.ok(&["hash", "-g", "sha256", "--hex", "data"]);
    assert_eq!(digest.trim(), hex(&Sha256::digest(&data)));
    let digest = tools.ok(&["hash", "-g", "sha1", "--hex", "data"]);
    assert_eq!(digest.trim(), hex(&Sha1::digest(&data)));
    // A ticket comes back for data that does not start with TPM_GENERATED.
    tools.ok(&[
        "hash",
        "-g",
        "sha256",
        "-o",
        "d.bin",
        "-t",
        "ticket.bin",
        "data",
    ]);
    assert_eq!(tools.read("d.bin"), Sha256::digest(&data).to_vec());
    assert!(!tools.read("ticket.bin").is_empty());
}

fn pcr_read_extend_event_reset(backend: Backend) {
    let Setup {
        tools,
        server: _server,
        state_dir: _dir,
    } = setup(backend);
    let out = tools.ok(&["pcrread", "sha1:0,16+sha256:0,16,23"]);
    for (bank, len) in [("sha1", 20), ("sha256", 32)] {
        assert_eq!(pcr(&out, bank, 16), vec![0; len]);
    }
    assert_eq!(pcr(&out, "sha256", 23), vec![0; 32]);

    let measurement = Sha256::digest(b"measurement");
    tools.ok(&["pcrextend", &format!("16:sha256={}", hex(&measurement))]);
    let want16 = Sha256::digest([[0u8; 32].as_slice(), &measurement].concat());
    let out = tools.ok(&["pcrread", "sha1:16+sha256:16"]);
    assert_eq!(pcr(&out, "sha256", 16), want16.to_vec());
    assert_eq!(
        pcr(&out, "sha1", 16),
        vec![0; 20],
        "only the sha256 bank was extended"
    );

    // PCR_Event hashes the data into every active bank.
    let event = b"an event to measure";
    tools.write("event", event);
    let digests = tools.ok(&["pcrevent", "16", "event"]);
    assert!(digests.contains(&hex(&Sha256::digest(event))), "{digests}");
    assert!(digests.contains(&hex(&Sha1::digest(event))), "{digests}");
    let out = tools.ok(&["pcrread", "sha1:16+sha256:16"]);
    let want256 = Sha256::digest([want16.as_slice(), &Sha256::digest(event)].concat());
    let want1 = Sha1::digest([[0u8; 20].as_slice(), &Sha1::digest(event)].concat());
    assert_eq!(pcr(&out, "sha256", 16), want256.to_vec());
    assert_eq!(pcr(&out, "sha1", 16), want1.to_vec());

    // PCR 16 (debug) is resettable from locality 0; PCR 0 is not.
    tools.ok(&["pcrreset", "16"]);
    let out = tools.ok(&["pcrread", "sha1:16+sha256:16"]);
    assert_eq!(pcr(&out, "sha256", 16), vec![0; 32]);
    assert_eq!(pcr(&out, "sha1", 16), vec![0; 20]);
    tools.fails(&["pcrreset", "0"]);
    tools.ok(&["pcrextend", &format!("0:sha1={}", hex(&Sha1::digest(b"x")))]);
    let out = tools.ok(&["pcrread", "sha1:0"]);
    assert_eq!(
        pcr(&out, "sha1", 0),
        Sha1::digest([[0u8; 20].as_slice(), &Sha1::digest(b"x")].concat()).to_vec()
    );
}

fn pcr_allocate(backend: Backend) {
    let Setup {
        server,
        tools,
        state_dir: _dir,
    } = setup(backend);
    let banks = tools.ok(&["getcap", "pcrs"]);
    assert!(banks.contains("sha1: [ 0, 1, 2"), "{banks}");
    assert!(banks.contains("sha256: [ 0, 1, 2"), "{banks}");

    // The new allocation takes effect at the next _TPM_Init.
    tools.ok(&["pcrallocate", "sha1:none+sha256:all"]);
    server.power_cycle();
    tools.ok(&["startup", "-c"]);
    let banks = tools.ok(&["getcap", "pcrs"]);
    assert!(
        banks.contains("sha1: [ ]"),
        "sha1 bank still allocated: {banks}"
    );
    assert!(banks.contains("sha256: [ 0, 1, 2"), "{banks}");
    let out = tools.ok(&["pcrread", "sha256:16"]);
    assert_eq!(pcr(&out, "sha256", 16), vec![0; 32]);

    tools.ok(&["pcrallocate", "sha1:all+sha256:all"]);
    server.power_cycle();
    tools.ok(&["startup", "-c"]);
    let banks = tools.ok(&["getcap", "pcrs"]);
    assert!(banks.contains("sha1: [ 0, 1, 2"), "{banks}");
    assert!(banks.contains("sha256: [ 0, 1, 2"), "{banks}");
}

const INDEX: &str = "0x1500016";

fn nv_ordinary_index(backend: Backend) {
    let Setup {
        tools,
        server: _server,
        state_dir: _dir,
    } = setup(backend);
    tools.ok(&[
        "nvdefine",
        INDEX,
        "-C",
        "o",
        "-s",
        "64",
        "-a",
        "ownerread|ownerwrite|authread|authwrite",
        "-p",
        "indexpass",
    ]);
    let public = tools.ok(&["nvreadpublic", INDEX]);
    assert_eq!(field(&public, "size"), "64");
    assert!(field(&public, "friendly").contains("sha256"), "{public}");
    assert!(
        !public.contains("written"),
        "a fresh index is not written: {public}"
    );
    // Reading an unwritten index fails.
    tools.fails(&["nvread", INDEX, "-C", "o", "-s", "4"]);

    let data: Vec<u8> = (0..64).map(|i| i * 3).collect();
    tools.write("data", &data);
    tools.ok(&["nvwrite", INDEX, "-C", "o", "-i", "data"]);
    tools.ok(&["nvread", INDEX, "-C", "o", "-s", "64", "-o", "back"]);
    assert_eq!(tools.read("back"), data);
    // Partial read at an offset, with the index's own auth.
    tools.ok(&[
        "nvread",
        INDEX,
        "-P",
        "indexpass",
        "-s",
        "8",
        "--offset",
        "10",
        "-o",
        "part",
    ]);
    assert_eq!(tools.read("part"), &data[10..18]);
    // A partial write at an offset, up to the last byte.
    tools.write("patch", b"PATCH");
    tools.ok(&[
        "nvwrite",
        INDEX,
        "-P",
        "indexpass",
        "-i",
        "patch",
        "--offset",
        "59",
    ]);
    tools.ok(&["nvread", INDEX, "-C", "o", "-o", "back"]);
    let mut want = data[..59].to_vec();
    want.extend_from_slice(b"PATCH");
    assert_eq!(tools.read("back"), want);
    tools.fails_with(
        TPM_RC_AUTH_FAIL_SESSION_1,
        &["nvread", INDEX, "-P", "wrong", "-s", "8"],
    );
    let public = tools.ok(&["nvreadpublic", INDEX]);
    assert!(public.contains("written"), "{public}");
    let handles = tools.ok(&["getcap", "handles-nv-index"]);
    assert!(handles.contains(INDEX), "{handles}");

    tools.ok(&["nvundefine", INDEX, "-C", "o"]);
    tools.fails(&["nvreadpublic", INDEX]);
    let handles = tools.ok(&["getcap", "handles-nv-index"]);
    assert!(!handles.contains(INDEX), "{handles}");
}

fn nv_counter_extend_and_bits(backend: Backend) {
    let Setup {
        tools,
        server: _server,
        state_dir: _dir,
    } = setup(backend);
    let read_u64 = |index: &str| {
        tools.ok(&["nvread", index, "-C", "o", "-s", "8", "-o", "v"]);
        u64::from_be_bytes(tools.read("v").try_into().unwrap())
    };

    let counter = "0x1500020";
    tools.ok(&[
        "nvdefine",
        counter,
        "-C",
        "o",
        "-s",
        "8",
        "-a",
        "nt=counter|ownerread|ownerwrite",
    ]);
    tools.ok(&["nvincrement", counter, "-C", "o"]);
    let first = read_u64(counter);
    tools.ok(&["nvincrement", counter, "-C", "o"]);
    tools.ok(&["nvincrement", counter, "-C", "o"]);
    assert_eq!(read_u64(counter), first + 2);

    let bits = "0x1500021";
    tools.ok(&[
        "nvdefine",
        bits,
        "-C",
        "o",
        "-s",
        "8",
        "-a",
        "nt=bits|ownerread|ownerwrite",
    ]);
    tools.ok(&["nvsetbits", bits, "-C", "o", "-i", "0x1"]);
    tools.ok(&["nvsetbits", bits, "-C", "o", "-i", "0x8000000000000004"]);
    assert_eq!(read_u64(bits), 0x8000_0000_0000_0005);

    let extend = "0x1500022";
    tools.ok(&[
        "nvdefine",
        extend,
        "-C",
        "o",
        "-s",
        "32",
        "-g",
        "sha256",
        "-a",
        "nt=extend|ownerread|ownerwrite",
    ]);
    tools.write("m1", b"first");
    tools.write("m2", b"second");
    tools.ok(&["nvextend", extend, "-C", "o", "-i", "m1"]);
    tools.ok(&["nvextend", extend, "-C", "o", "-i", "m2"]);
    tools.ok(&["nvread", extend, "-C", "o", "-s", "32", "-o", "v"]);
    let after1 = Sha256::digest([[0u8; 32].as_slice(), b"first"].concat());
    let after2 = Sha256::digest([after1.as_slice(), b"second"].concat());
    assert_eq!(tools.read("v"), after2.to_vec());
    // Ordinary writes to special index types are refused.
    tools.write("eight", &[1; 8]);
    tools.fails(&["nvwrite", counter, "-C", "o", "-i", "eight"]);

    for index in [counter, bits, extend] {
        tools.ok(&["nvundefine", index, "-C", "o"]);
    }
}

fn nv_locks(backend: Backend) {
    let Setup {
        server,
        tools,
        state_dir: _dir,
    } = setup(backend);
    let index = "0x1500030";
    tools.ok(&[
        "nvdefine",
        index,
        "-C",
        "o",
        "-s",
        "16",
        "-a",
        "ownerread|ownerwrite|read_stclear|writedefine",
    ]);
    tools.write("data", b"0123456789abcdef");
    tools.ok(&["nvwrite", index, "-C", "o", "-i", "data"]);

    tools.ok(&["nvreadlock", index, "-C", "o"]);
    tools.fails_with(TPM_RC_NV_LOCKED, &["nvread", index, "-C", "o", "-s", "16"]);
    let public = tools.ok(&["nvreadpublic", index]);
    assert!(public.contains("readlocked"), "{public}");

    tools.ok(&["nvwritelock", index, "-C", "o"]);
    tools.fails_with(
        TPM_RC_NV_LOCKED,
        &["nvwrite", index, "-C", "o", "-i", "data"],
    );

    // read_stclear lifts at the next Startup(CLEAR); writedefine never does.
    tools.ok(&["shutdown", "-c"]);
    server.power_cycle();
    tools.ok(&["startup", "-c"]);
    tools.ok(&["nvread", index, "-C", "o", "-s", "16", "-o", "back"]);
    assert_eq!(tools.read("back"), b"0123456789abcdef");
    tools.fails_with(
        TPM_RC_NV_LOCKED,
        &["nvwrite", index, "-C", "o", "-i", "data"],
    );
    // An index without ownerwrite refuses owner writes.
    let other = "0x1500031";
    tools.ok(&[
        "nvdefine",
        other,
        "-C",
        "o",
        "-s",
        "4",
        "-a",
        "ownerread|authwrite",
    ]);
    tools.write("four", b"abcd");
    tools.fails_with(
        TPM_RC_NV_AUTHORIZATION,
        &["nvwrite", other, "-C", "o", "-i", "four"],
    );
    tools.ok(&["nvwrite", other, "-i", "four"]);
    tools.ok(&["nvundefine", other, "-C", "o"]);
    tools.ok(&["nvundefine", index, "-C", "o"]);
}

fn every_capability_group(backend: Backend) {
    let Setup {
        tools,
        server: _server,
        state_dir: _dir,
    } = setup(backend);
    let groups = tools.ok(&["getcap", "-l"]);
    let groups: Vec<&str> = groups
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- "))
        .collect();
    assert!(groups.len() >= 13, "{groups:?}");
    // Something in each group to see.
    tools.ok(&[
        "nvdefine",
        "0x1500040",
        "-C",
        "o",
        "-s",
        "4",
        "-a",
        "ownerread|ownerwrite",
    ]);
    tools.ok(&["createprimary", "-C", "o", "-G", "ecc", "-c", "primary.ctx"]);
    tools.ok(&["evictcontrol", "-C", "o", "-c", "primary.ctx", "0x81000001"]);
    let expect: &[(&str, &[&str])] = &[
        (
            "algorithms",
            &["sha256:", "sha1:", "rsa:", "ecc:", "aes:", "hmac:"],
        ),
        (
            "commands",
            &[
                "TPM2_CC_Startup",
                "TPM2_CC_PCR_Extend",
                "TPM2_CC_GetCapability",
                "TPM2_CC_NV_Read",
            ],
        ),
        ("pcrs", &["sha1:", "sha256:"]),
        (
            "properties-fixed",
            &[
                "TPM2_PT_FAMILY_INDICATOR",
                "value: \"2.0\"",
                "TPM2_PT_PCR_COUNT",
                "TPM2_PT_MAX_COMMAND_SIZE",
            ],
        ),
        (
            "properties-variable",
            &[
                "TPM2_PT_PERMANENT",
                "TPM2_PT_STARTUP_CLEAR",
                "TPM2_PT_HR_NV_INDEX",
            ],
        ),
        ("ecc-curves", &["TPM2_ECC_NIST_P256"]),
        ("handles-transient", &[]),
        ("handles-persistent", &["0x81000001"]),
        (
            "handles-permanent",
            &["0x40000001", "0x4000000C", "0x4000000B", "0x4000000A"],
        ),
        ("handles-pcr", &["0x0", "0x17"]),
        ("handles-nv-index", &["0x1500040"]),
        ("handles-loaded-session", &[]),
        ("handles-saved-session", &[]),
    ];
    for group in &groups {
        let out = tools.ok(&["getcap", group]);
        let want = expect
            .iter()
            .find(|(g, _)| g == group)
            .unwrap_or_else(|| panic!("no expectation for capability group {group}"))
            .1;
        for w in want {
            assert!(out.contains(w), "getcap {group}: no {w:?} in\n{out}");
        }
    }
    let pcr_count = tools.ok(&["getcap", "properties-fixed"]);
    let pcr_count = pcr_count.split("TPM2_PT_PCR_COUNT:").nth(1).unwrap();
    assert_eq!(field(pcr_count, "raw"), "0x18");
    let handles = tools.ok(&["getcap", "handles-pcr"]);
    assert_eq!(handles.lines().count(), 24, "{handles}");
    tools.ok(&["evictcontrol", "-C", "o", "-c", "0x81000001"]);
    tools.ok(&["nvundefine", "0x1500040", "-C", "o"]);
}

fn changeauth_and_clear(backend: Backend) {
    let Setup {
        tools,
        server: _server,
        state_dir: _dir,
    } = setup(backend);
    tools.ok(&["changeauth", "-c", "owner", "ownerpass"]);
    tools.ok(&["changeauth", "-c", "endorsement", "endorsepass"]);
    tools.ok(&["changeauth", "-c", "lockout", "lockpass"]);
    // The old (empty) owner auth no longer works, the new one does.
    tools.fails_with(
        TPM_RC_BAD_AUTH,
        &[
            "nvdefine",
            INDEX,
            "-C",
            "o",
            "-s",
            "8",
            "-a",
            "ownerread|ownerwrite",
        ],
    );
    tools.ok(&[
        "nvdefine",
        INDEX,
        "-C",
        "o",
        "-P",
        "ownerpass",
        "-s",
        "8",
        "-a",
        "ownerread|ownerwrite",
    ]);
    // Change it again, from the current value.
    tools.ok(&["changeauth", "-c", "owner", "-p", "ownerpass", "ownerpass2"]);
    tools.ok(&["nvreadpublic", INDEX]);

    // Clear with the lockout auth: owner objects and auth values go.
    tools.ok(&["clear", "lockpass"]);
    tools.fails(&["nvreadpublic", INDEX]);
    tools.ok(&[
        "nvdefine",
        INDEX,
        "-C",
        "o",
        "-s",
        "8",
        "-a",
        "ownerread|ownerwrite",
    ]);
    tools.ok(&["changeauth", "-c", "lockout", "lockpass2"]);
    // Clear can also be disabled and re-enabled.
    tools.ok(&["clearcontrol", "-C", "l", "-P", "lockpass2", "s"]);
    tools.fails_with(TPM_RC_DISABLED, &["clear", "lockpass2"]);
    tools.ok(&["clearcontrol", "-C", "p", "c"]);
    tools.ok(&["clear", "-c", "p"]);
    tools.fails(&["nvreadpublic", INDEX]);
}

fn read_clock(tools: &Tpm2) -> u64 {
    field(&tools.ok(&["readclock"]), "clock").parse().unwrap()
}

fn restart_keeps_nv_and_clock_moves_forward(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("tpm.state");
    let server = TpmServer::start(backend, &state);
    let tools = Tpm2::new(server.tcti());
    tools.ok(&["startup", "-c"]);
    tools.ok(&[
        "nvdefine",
        INDEX,
        "-C",
        "o",
        "-s",
        "32",
        "-a",
        "ownerread|ownerwrite",
    ]);
    tools.write("data", b"survives a restart of the server");
    tools.ok(&["nvwrite", INDEX, "-C", "o", "-i", "data"]);
    tools.ok(&["changeauth", "-c", "owner", "persisted"]);
    std::thread::sleep(std::time::Duration::from_millis(50));
    let clock_before = read_clock(&tools);
    tools.ok(&["shutdown", "-c"]);
    let (status, err) = server.terminate();
    assert!(
        status.success(),
        "server exit on SIGTERM: {status}, stderr {err}"
    );

    let server = TpmServer::start(backend, &state);
    let tools = Tpm2::new(server.tcti());
    tools.ok(&["startup", "-c"]);
    tools.ok(&[
        "nvread",
        INDEX,
        "-C",
        "o",
        "-P",
        "persisted",
        "-s",
        "32",
        "-o",
        "back",
    ]);
    assert_eq!(tools.read("back"), b"survives a restart of the server");
    let clock_after = read_clock(&tools);
    assert!(
        clock_after > clock_before,
        "clock went from {clock_before} to {clock_after}"
    );
    let variable = tools.ok(&["getcap", "properties-variable"]);
    assert!(variable.contains("TPM2_PT_HR_NV_INDEX"), "{variable}");
    drop(server);

    // And once more, without an orderly TPM shutdown, stopped over the
    // protocol's STOP: NV written before the stop is still there.
    let mut server = TpmServer::start(backend, &state);
    let tools = Tpm2::new(server.tcti());
    tools.ok(&["startup", "-c"]);
    tools.write("data2", b"written just before STOP");
    tools.ok(&[
        "nvwrite",
        INDEX,
        "-C",
        "o",
        "-P",
        "persisted",
        "-i",
        "data2",
    ]);
    stop_over_protocol(server.port);
    let (status, err) = server.wait_exit();
    assert!(
        status.success(),
        "server exit on STOP: {status}, stderr {err}"
    );
    let server = TpmServer::start(backend, &state);
    let tools = Tpm2::new(server.tcti());
    tools.ok(&["startup", "-c"]);
    tools.ok(&[
        "nvread",
        INDEX,
        "-C",
        "o",
        "-P",
        "persisted",
        "-s",
        "24",
        "-o",
        "back",
    ]);
    assert_eq!(tools.read("back"), b"written just before STOP");
}

fn stop_over_protocol(port: u16) {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.write_all(&21u32.to_be_bytes()).unwrap();
}

fn keys_signatures_and_a_pcr_policy(backend: Backend) {
    let Setup {
        tools: bare,
        server: _server,
        state_dir: _dir,
    } = setup(backend);
    // Without a resource manager, objects a tool loads stay loaded: flush
    // the transient objects after every step, as a resource manager would.
    let tools = Flushing(&bare);
    tools.ok(&["createprimary", "-C", "o", "-G", "ecc", "-c", "primary.ctx"]);

    // A signing key: sign, verify, and a tampered message fails.
    tools.ok(&[
        "create",
        "-C",
        "primary.ctx",
        "-G",
        "ecc",
        "-u",
        "key.pub",
        "-r",
        "key.priv",
    ]);
    tools.ok(&[
        "load",
        "-C",
        "primary.ctx",
        "-u",
        "key.pub",
        "-r",
        "key.priv",
        "-c",
        "key.ctx",
    ]);
    tools.write("message", b"signed by the TPM");
    tools.ok(&[
        "sign", "-c", "key.ctx", "-g", "sha256", "-o", "sig", "message",
    ]);
    tools.ok(&[
        "verifysignature",
        "-c",
        "key.ctx",
        "-g",
        "sha256",
        "-m",
        "message",
        "-s",
        "sig",
    ]);
    tools.write("message", b"signed by the TPM!");
    tools.fails(&[
        "verifysignature",
        "-c",
        "key.ctx",
        "-g",
        "sha256",
        "-m",
        "message",
        "-s",
        "sig",
    ]);
    let public = tools.ok(&["readpublic", "-c", "key.ctx"]);
    assert!(
        public.contains("ecc") && public.contains("sign"),
        "{public}"
    );

    // The primary made persistent, then used by its handle.
    tools.ok(&["evictcontrol", "-C", "o", "-c", "primary.ctx", "0x81000010"]);
    let persistent = tools.ok(&["getcap", "handles-persistent"]);
    assert!(persistent.contains("0x81000010"), "{persistent}");
    tools.ok(&["readpublic", "-c", "0x81000010"]);

    // A secret sealed to PCR 16: unsealed while PCR 16 holds, refused after.
    tools.ok(&[
        "pcrextend",
        &format!("16:sha256={}", hex(&Sha256::digest(b"boot stage"))),
    ]);
    tools.ok(&["pcrread", "-o", "pcr.bin", "sha256:16"]);
    tools.ok(&[
        "createpolicy",
        "--policy-pcr",
        "-l",
        "sha256:16",
        "-f",
        "pcr.bin",
        "-L",
        "pcr.policy",
    ]);
    tools.write("secret", b"sealed to PCR 16");
    tools.ok(&[
        "create",
        "-C",
        "0x81000010",
        "-L",
        "pcr.policy",
        "-a",
        "fixedtpm|fixedparent",
        "-i",
        "secret",
        "-u",
        "seal.pub",
        "-r",
        "seal.priv",
    ]);
    tools.ok(&[
        "load",
        "-C",
        "0x81000010",
        "-u",
        "seal.pub",
        "-r",
        "seal.priv",
        "-c",
        "seal.ctx",
    ]);
    let secret = tools.ok(&["unseal", "-c", "seal.ctx", "-p", "pcr:sha256:16"]);
    assert_eq!(secret, "sealed to PCR 16");
    tools.ok(&[
        "pcrextend",
        &format!("16:sha256={}", hex(&Sha256::digest(b"something else"))),
    ]);
    tools.fails(&["unseal", "-c", "seal.ctx", "-p", "pcr:sha256:16"]);
    tools.ok(&["evictcontrol", "-C", "o", "-c", "0x81000010"]);
    let persistent = tools.ok(&["getcap", "handles-persistent"]);
    assert!(!persistent.contains("0x81000010"), "{persistent}");
}

/// tpm2-tools over mssim with the transient objects flushed after each run.
struct Flushing<'a>(&'a Tpm2);

impl Flushing<'_> {
    fn ok(&self, args: &[&str]) -> String {
        let out = self.0.ok(args);
        self.0.ok(&["flushcontext", "-t"]);
        out
    }
    fn fails(&self, args: &[&str]) {
        self.0.fails(args);
        self.0.ok(&["flushcontext", "-t"]);
    }
    fn write(&self, name: &str, bytes: &[u8]) {
        self.0.write(name, bytes);
    }
}
