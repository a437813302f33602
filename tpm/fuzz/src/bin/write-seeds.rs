//! Writes the seed corpus: `write-seeds DIR`. Each seed is a short, valid
//! command sequence (see the library docs for the format) that reaches one
//! command family, so the fuzzer starts past the header checks.

use std::path::PathBuf;

use rivet_tpm_fuzz::{STARTUP_CLEAR, encode, sample_state};

fn cmd(sessions: bool, code: u32, body: &[u8]) -> Vec<u8> {
    let tag: u16 = if sessions { 0x8002 } else { 0x8001 };
    let mut c = tag.to_be_bytes().to_vec();
    c.extend_from_slice(&u32::try_from(body.len() + 10).unwrap().to_be_bytes());
    c.extend_from_slice(&code.to_be_bytes());
    c.extend_from_slice(body);
    c
}

/// Handles, then one empty password session, then parameters.
fn authed(code: u32, handles: &[u32], params: &[u8]) -> Vec<u8> {
    let mut body: Vec<u8> = handles.iter().flat_map(|h| h.to_be_bytes()).collect();
    body.extend_from_slice(&9u32.to_be_bytes());
    body.extend_from_slice(&[0x40, 0, 0, 9, 0, 0, 0, 0, 0]);
    body.extend_from_slice(params);
    cmd(true, code, &body)
}

/// Hex to bytes; whitespace is ignored.
fn hexb(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// LoadExternal parameters: inPrivate, inPublic, hierarchy TPM_RH_NULL.
fn load_external(sensitive: &[u8], public: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    for part in [sensitive, public] {
        b.extend_from_slice(&u16::try_from(part.len()).unwrap().to_be_bytes());
        b.extend_from_slice(part);
    }
    b.extend_from_slice(&0x4000_0007u32.to_be_bytes());
    b
}

const OWNER: u32 = 0x4000_0001;
const LOCKOUT: u32 = 0x4000_000A;
const PLATFORM: u32 = 0x4000_000C;
const NV: u32 = 0x0150_0016;

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let nv_public = hexb("000e01500016000b0006000600000020"); // size 14: index, sha256, attrs, no policy, 32 bytes
    let mut nv_define = hexb("0000");
    nv_define.extend_from_slice(&nv_public);
    let ecc_template = hexb("00180023000b00040072000000100018000b0003001000000000");
    let mut create_primary = hexb("000400000000");
    create_primary.extend_from_slice(&ecc_template);
    create_primary.extend_from_slice(&hexb("000000000000"));
    // TPMT_PUBLIC of a P-256 ECDSA verification key (OpenSSL-made test key).
    let mut ecc_public = hexb("0023000b00040040000000100018000b00030010");
    ecc_public.extend_from_slice(&hexb(
        "00207be579e2aaf11a90b991e258ba45b1aed9215a81a89089dcb4173be373d19f57\
         002020b1d7436e4ff3ac403ee869b26a09ac2203c817209367453429772ecf26bfbc",
    ));
    let verify_body = {
        let mut b = 0x8000_0000u32.to_be_bytes().to_vec();
        b.extend_from_slice(&hexb(
            "0020af2bdbe1aa9b6ec1e2ade1d694f41fc71a831d0268e9891562113d8a62add1bf00180 00b\
             002006abb2dd449a03ff11faecc96ba221b16c95497d8b86871dbf8f61b03c974066\
             0020406c3b3af982003d659a26ef192d803036ba01f7da2ae693039059d71734df97",
        ));
        b
    };
    // Keyed-hash and AES keys with their sensitive parts (unique left empty:
    // the fuzzer only needs the shape).
    let hmac_sensitive = hexb("00080000000411111111000461626364");
    let hmac_public = hexb("0008000b0004004000000005000b0000");
    let aes_sensitive = hexb("0025000000041111111100102b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b");
    let aes_public = hexb("0025000b000600400000000600800043 0000");
    let pcr_sel = hexb("00000002000403ffffff000b03ffffff");
    vec![
        ("startup-only", encode(1, &[(0, STARTUP_CLEAR.to_vec())])),
        (
            "getrandom",
            encode(0, &[(0, cmd(false, 0x17B, &hexb("0020")))]),
        ),
        (
            "selftest",
            encode(
                0,
                &[(0, cmd(false, 0x143, &[1])), (0, cmd(false, 0x17C, &[]))],
            ),
        ),
        ("pcr-read", encode(0, &[(0, cmd(false, 0x17E, &pcr_sel))])),
        (
            "pcr-extend-event-reset",
            encode(
                0,
                &[
                    (
                        0,
                        authed(
                            0x182,
                            &[16],
                            &hexb(
                                "00000001000b0101010101010101010101010101010101010101010101010101010101010101",
                            ),
                        ),
                    ),
                    (0, authed(0x13C, &[16], &hexb("0003616263"))),
                    (0, authed(0x13D, &[16], &[])),
                    (3, authed(0x13D, &[20], &[])),
                ],
            ),
        ),
        (
            "pcr-allocate",
            encode(
                2,
                &[
                    (0, authed(0x12B, &[PLATFORM], &hexb("00000001000b03ffffff"))),
                    (0, cmd(false, 0x145, &[0, 0])),
                ],
            ),
        ),
        (
            "hash",
            encode(
                0,
                &[(0, cmd(false, 0x17D, &hexb("0003616263000b40000001")))],
            ),
        ),
        (
            "hash-sequence",
            encode(
                0,
                &[
                    (0, cmd(false, 0x186, &hexb("0000000b"))),
                    (0, authed(0x15C, &[0x8000_0000], &hexb("0003616263"))),
                    (0, authed(0x13E, &[0x8000_0000], &hexb("000040000007"))),
                ],
            ),
        ),
        (
            "getcap",
            encode(
                0,
                &[
                    (0, cmd(false, 0x17A, &hexb("000000060000010000000040"))),
                    (0, cmd(false, 0x17A, &hexb("000000000000000000000080"))),
                    (0, cmd(false, 0x17A, &hexb("000000020000011f00000100"))),
                    (0, cmd(false, 0x17A, &hexb("000000010000000000000040"))),
                    (0, cmd(false, 0x17A, &hexb("000000050000000000000001"))),
                    (0, cmd(false, 0x17A, &hexb("000000070000000000000020"))),
                    (0, cmd(false, 0x17A, &hexb("000000080000000000000010"))),
                ],
            ),
        ),
        (
            "nv",
            encode(
                0,
                &[
                    (0, authed(0x12A, &[OWNER], &nv_define)),
                    (0, authed(0x137, &[OWNER, NV], &hexb("0004616263640000"))),
                    (0, authed(0x14E, &[OWNER, NV], &hexb("00040000"))),
                    (0, cmd(false, 0x169, &NV.to_be_bytes())),
                    (0, authed(0x138, &[OWNER, NV], &[])),
                    (0, authed(0x122, &[OWNER, NV], &[])),
                ],
            ),
        ),
        (
            "hierarchy",
            encode(
                0,
                &[
                    (0, authed(0x129, &[OWNER], &hexb("000470617373"))),
                    (0, authed(0x127, &[LOCKOUT], &[1])),
                    (0, authed(0x127, &[PLATFORM], &[0])),
                    (0, authed(0x126, &[LOCKOUT], &[])),
                    (0, authed(0x121, &[PLATFORM], &hexb("4000000b00"))),
                ],
            ),
        ),
        (
            "create-primary-ecc",
            encode(
                0,
                &[
                    (0, authed(0x131, &[OWNER], &create_primary)),
                    (0, cmd(false, 0x165, &0x8000_0000u32.to_be_bytes())),
                ],
            ),
        ),
        (
            "clock-shutdown-resume",
            encode(
                2,
                &[
                    (0, cmd(false, 0x181, &[])),
                    (0, cmd(false, 0x145, &[0, 1])),
                    // flags bit 1: the power cycle falls here, halfway.
                    (0, cmd(false, 0x144, &[0, 1])),
                    (0, cmd(false, 0x17B, &[0, 8])),
                ],
            ),
        ),
        (
            "external-ecc-verify",
            encode(
                0,
                &[
                    (0, cmd(false, 0x167, &load_external(&[], &ecc_public))),
                    (0, cmd(false, 0x173, &0x8000_0000u32.to_be_bytes())),
                    (0, cmd(false, 0x177, &verify_body)),
                ],
            ),
        ),
        (
            "external-hmac",
            encode(
                0,
                &[
                    (
                        0,
                        cmd(false, 0x167, &load_external(&hmac_sensitive, &hmac_public)),
                    ),
                    (0, authed(0x155, &[0x8000_0000], &hexb("000461626364000b"))),
                ],
            ),
        ),
        (
            "external-aes",
            encode(
                0,
                &[
                    (
                        0,
                        cmd(false, 0x167, &load_external(&aes_sensitive, &aes_public)),
                    ),
                    (
                        0,
                        authed(
                            0x193,
                            &[0x8000_0000],
                            &hexb("00054242424242000043001007070707070707070707070707070707"),
                        ),
                    ),
                ],
            ),
        ),
        (
            "primary-sign",
            encode(
                0,
                &[
                    (0, authed(0x131, &[OWNER], &create_primary)),
                    (
                        0,
                        authed(
                            0x15D,
                            &[0x8000_0000],
                            &hexb(
                                "0020af2bdbe1aa9b6ec1e2ade1d694f41fc71a831d0268e9891562113d8a62add1bf\
                                 0010 8024 40000007 0000",
                            ),
                        ),
                    ),
                    (0, cmd(false, 0x173, &0x8000_0000u32.to_be_bytes())),
                ],
            ),
        ),
        (
            "testparms-stir",
            encode(
                0,
                &[
                    (0, cmd(false, 0x18A, &hexb("00230010001000030010"))),
                    (0, cmd(false, 0x146, &hexb("0004deadbeef"))),
                ],
            ),
        ),
    ]
}

/// Writes DIR/execute/* (command sequences) and DIR/restore/* (state blobs).
fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).expect("usage: write-seeds DIR"));
    let execute = dir.join("execute");
    std::fs::create_dir_all(&execute).unwrap();
    for (name, seed) in seeds() {
        std::fs::write(execute.join(name), seed).unwrap();
    }
    let restore = dir.join("restore");
    std::fs::create_dir_all(&restore).unwrap();
    std::fs::write(restore.join("after-nv"), sample_state()).unwrap();
}
