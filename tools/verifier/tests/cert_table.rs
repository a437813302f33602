//! `snp.cert_table`: the certificate table as the guest receives it. Tables
//! built from the real certificates in tests/data/snp verify exactly like
//! the same certificates given as `vek`/`chain`; every malformed table is
//! refused with its reason; random and mutated tables never panic.

mod common;
use common::*;
use rivet_verifier::cert::parse_certs;
use rivet_verifier::cert_table::{
    self, ENTRY_LEN, GUID_ARK, GUID_ASK, GUID_VCEK, GUID_VLEK, Kind, MAX_ENTRIES, TableError,
};
use rivet_verifier::evidence::SnpEvidence;
use rivet_verifier::{Appraisal, Evidence, Policy, Status, appraise};
use serde_json::json;
use uuid::{Uuid, uuid};

const GOSEV_REPORT: &[u8] = include_bytes!("data/snp/milan_gosev_report.bin");
const GOSEV_VCEK: &[u8] = include_bytes!("data/snp/milan_gosev_vcek.der");
const VIRTEE_REPORT: &[u8] = include_bytes!("data/snp/milan_virtee_report.bin");
const VIRTEE_VCEK: &[u8] = include_bytes!("data/snp/milan_virtee_vcek.der");
const VLEK_REPORT: &[u8] = include_bytes!("data/snp/milan_vlek_report.bin");
const VLEK: &[u8] = include_bytes!("data/snp/milan_vlek.der");
const ASK_ARK_MILAN: &[u8] = include_bytes!("data/snp/ask_ark_milan.pem");
const ASVK_ARK_MILAN: &[u8] = include_bytes!("data/snp/asvk_ark_milan.pem");
const ASK_ARK_GENOA: &[u8] = include_bytes!("data/snp/ask_ark_genoa.pem");

/// virtee/sev's GUID for a CRL entry: not one this verifier uses.
const GUID_CRL: Uuid = uuid!("92f81bc3-5811-4d3d-97ff-d19f88dc67ea");

/// (ASK or ASVK DER, ARK DER) from a KDS cert_chain PEM (ASK first).
fn split_chain(pem: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let c = parse_certs(pem).unwrap();
    assert_eq!(c.len(), 2);
    (c[0].der.clone(), c[1].der.clone())
}

fn separate(report: &[u8], vek: &[u8], chain: &[u8]) -> Evidence {
    evidence(json!({ "snp": { "report": hexs(report), "vek": hexs(vek), "chain": [hexs(chain)] } }))
}

fn tabled(report: &[u8], table: &[u8]) -> Evidence {
    evidence(json!({ "snp": { "report": hexs(report), "cert_table": hexs(table) } }))
}

/// The table a host would send: leaf, ASK/ASVK, ARK.
fn table_of(leaf: Uuid, vek: &[u8], chain: &[u8]) -> Vec<u8> {
    let (ask, ark) = split_chain(chain);
    cert_table::build(&[(leaf, vek), (GUID_ASK, &ask), (GUID_ARK, &ark)])
}

/// Same checks (name, status, run, reason), same verdict, same claims but
/// the table's own entry list.
fn assert_same(a: &Appraisal, b: &Appraisal) {
    assert_eq!(a.checks, b.checks);
    assert_eq!(a.status, b.status);
    assert_eq!(a.unusable, b.unusable);
    let mut bc = b.claims.clone();
    assert!(
        bc.remove("snp.cert_table").is_some(),
        "table claim recorded"
    );
    assert_eq!(a.claims, bc);
}

fn permissive(now: &str) -> Policy {
    let mut p = Policy::from_json(r#"{"allow_debug": true, "allowed_vmpls": [0, 1]}"#).unwrap();
    p.now = Some(rivet_verifier::parse_time(now).unwrap());
    p
}

const HW_CHECKS: [&str; 5] = [
    "snp.endorsement_chain",
    "snp.report_signature",
    "snp.signing_key",
    "snp.tcb_extensions",
    "snp.hardware_root",
];

/// Report, leaf GUID, leaf, KDS chain, now, whether the hardware checks pass.
type Case<'a> = (&'a [u8], Uuid, &'a [u8], &'a [u8], &'a str, bool);

#[test]
fn real_tables_verify_exactly_like_separate_fields() {
    let cases: [Case; 6] = [
        (
            GOSEV_REPORT,
            GUID_VCEK,
            GOSEV_VCEK,
            ASK_ARK_MILAN,
            "2026-01-01T00:00:00Z",
            true,
        ),
        (
            VIRTEE_REPORT,
            GUID_VCEK,
            VIRTEE_VCEK,
            ASK_ARK_MILAN,
            "2026-01-01T00:00:00Z",
            true,
        ),
        // The ASVK travels under the ASK GUID.
        (
            VLEK_REPORT,
            GUID_VLEK,
            VLEK,
            ASVK_ARK_MILAN,
            "2025-06-01T00:00:00Z",
            true,
        ),
        // Failures must match too: expired VLEK, wrong product, wrong chip.
        (
            VLEK_REPORT,
            GUID_VLEK,
            VLEK,
            ASVK_ARK_MILAN,
            "2026-01-01T00:00:00Z",
            false,
        ),
        (
            GOSEV_REPORT,
            GUID_VCEK,
            GOSEV_VCEK,
            ASK_ARK_GENOA,
            "2026-01-01T00:00:00Z",
            false,
        ),
        (
            GOSEV_REPORT,
            GUID_VCEK,
            VIRTEE_VCEK,
            ASK_ARK_MILAN,
            "2026-01-01T00:00:00Z",
            false,
        ),
    ];
    for (i, (report, leaf, vek, chain, now, good)) in cases.into_iter().enumerate() {
        for policy in [policy_at(now), permissive(now)] {
            let a = appraise(&separate(report, vek, chain), &policy);
            let t = table_of(leaf, vek, chain);
            let b = appraise(&tabled(report, &t), &policy);
            assert_same(&a, &b);
            if good {
                for c in HW_CHECKS {
                    assert_pass(&b, c);
                }
            } else {
                assert_eq!(b.status, Status::Contraindicated, "case {i}");
                assert!(
                    HW_CHECKS
                        .iter()
                        .any(|c| check(&b, c).0 == Status::Contraindicated),
                    "case {i}: a hardware check fails"
                );
            }
        }
    }
    // The VLEK case names its leaf.
    let t = table_of(GUID_VLEK, VLEK, ASVK_ARK_MILAN);
    let b = appraise(
        &tabled(VLEK_REPORT, &t),
        &permissive("2025-06-01T00:00:00Z"),
    );
    assert_none_failed(&b);
    assert_eq!(
        b.claims["snp.cert_table"],
        json!([
            format!("VLEK ({} bytes)", VLEK.len()),
            format!("ASK ({} bytes)", split_chain(ASVK_ARK_MILAN).0.len()),
            format!("ARK ({} bytes)", split_chain(ASVK_ARK_MILAN).1.len()),
        ])
    );
}

#[test]
fn a_spread_out_padded_table_with_an_unknown_entry_verifies_the_same() {
    // Data in reverse order at the end of a 4-page buffer, gaps between, a
    // CRL-like entry the verifier ignores with a note.
    let (ask, ark) = split_chain(ASK_ARK_MILAN);
    let datas: [(Uuid, &[u8]); 4] = [
        (GUID_ARK, &ark),
        (GUID_CRL, b"not a certificate"),
        (GUID_VCEK, GOSEV_VCEK),
        (GUID_ASK, &ask),
    ];
    let mut buf = vec![0u8; 4 * 4096];
    let mut at = buf.len();
    for (i, (g, d)) in datas.iter().enumerate() {
        at -= d.len() + 7;
        buf[at..at + d.len()].copy_from_slice(d);
        let e = &mut buf[i * ENTRY_LEN..(i + 1) * ENTRY_LEN];
        e[..16].copy_from_slice(g.as_bytes());
        e[16..20].copy_from_slice(&(at as u32).to_le_bytes());
        e[20..24].copy_from_slice(&(d.len() as u32).to_le_bytes());
    }
    let policy = policy_at("2026-01-01T00:00:00Z");
    let a = appraise(&separate(GOSEV_REPORT, GOSEV_VCEK, ASK_ARK_MILAN), &policy);
    let b = appraise(&tabled(GOSEV_REPORT, &buf), &policy);
    assert_same(&a, &b);
    assert_pass(&b, "snp.endorsement_chain");
    let notes = b.claims["snp.cert_table"].to_string();
    assert!(
        notes.contains("92f81bc3-5811-4d3d-97ff-d19f88dc67ea (17 bytes): unknown GUID, ignored"),
        "{notes}"
    );
    let t = cert_table::parse(&buf).unwrap();
    assert_eq!(t.unknown().count(), 1);
    assert_eq!(t.vek.as_ref().map(|v| v.0), Some(Kind::Vcek));
}

#[test]
fn guid_byte_order_matters() {
    // The same table with the mixed-endian (EFI_GUID) encoding of each GUID
    // has no known entry: no VEK, so the chain check is not run.
    let swap = |g: Uuid| Uuid::from_bytes(g.to_bytes_le());
    let (ask, ark) = split_chain(ASK_ARK_MILAN);
    let t = cert_table::build(&[
        (swap(GUID_VCEK), GOSEV_VCEK),
        (swap(GUID_ASK), &ask),
        (swap(GUID_ARK), &ark),
    ]);
    let b = appraise(
        &tabled(GOSEV_REPORT, &t),
        &policy_at("2026-01-01T00:00:00Z"),
    );
    let c = b.check("snp.endorsement_chain").unwrap();
    assert!(!c.run, "{}", c.reason);
    assert!(c.reason.contains("no VCEK or VLEK entry"), "{}", c.reason);
    assert_eq!(cert_table::parse(&t).unwrap().unknown().count(), 3);
    // The table a host writes: the VCEK GUID's bytes are its text in order.
    assert_eq!(
        &good()[..16],
        &hex::decode("63da758de6644564adc5f4b93be8accd").unwrap()[..]
    );
    assert_eq!(
        &t[..4],
        &[0x8d, 0x75, 0xda, 0x63],
        "the mixed-endian form differs"
    );
}

#[test]
fn a_leaf_filed_under_the_wrong_guid_is_refused() {
    let t = table_of(GUID_VLEK, GOSEV_VCEK, ASK_ARK_MILAN);
    let b = appraise(
        &tabled(GOSEV_REPORT, &t),
        &policy_at("2026-01-01T00:00:00Z"),
    );
    assert_pass(&b, "snp.endorsement_chain");
    assert_pass(&b, "snp.report_signature");
    assert_fail(&b, "snp.signing_key", "files the leaf as Vlek");
    let t = table_of(GUID_VCEK, VLEK, ASVK_ARK_MILAN);
    let b = appraise(&tabled(VLEK_REPORT, &t), &policy_at("2025-06-01T00:00:00Z"));
    assert_fail(&b, "snp.signing_key", "files the leaf as Vcek");
}

#[test]
fn partial_and_empty_tables() {
    let now = policy_at("2026-01-01T00:00:00Z");
    // Empty table (only the terminator, in a zero page): nothing to check.
    let b = appraise(&tabled(GOSEV_REPORT, &[0; 4096]), &now);
    let c = b.check("snp.endorsement_chain").unwrap();
    assert!(!c.run && c.reason.contains("no VCEK or VLEK entry"));
    assert_eq!(b.claims["snp.cert_table"], json!([]));
    // Leaf only: same as `vek` without `chain`.
    let t = cert_table::build(&[(GUID_VCEK, GOSEV_VCEK)]);
    let a = appraise(
        &evidence(json!({ "snp": { "report": hexs(GOSEV_REPORT), "vek": hexs(GOSEV_VCEK) } })),
        &now,
    );
    let b = appraise(&tabled(GOSEV_REPORT, &t), &now);
    assert_same(&a, &b);
    assert_fail(&b, "snp.endorsement_chain", "needs an ASK/ASVK");
}

/// A valid table of the real Milan VCEK chain, and a way to rewrite an entry.
fn good() -> Vec<u8> {
    table_of(GUID_VCEK, GOSEV_VCEK, ASK_ARK_MILAN)
}

fn set(t: &mut [u8], i: usize, g: Uuid, off: u32, len: u32) {
    let e = &mut t[i * ENTRY_LEN..(i + 1) * ENTRY_LEN];
    e[..16].copy_from_slice(g.as_bytes());
    e[16..20].copy_from_slice(&off.to_le_bytes());
    e[20..24].copy_from_slice(&len.to_le_bytes());
}

fn field(t: &[u8], i: usize, at: usize) -> u32 {
    let s = i * ENTRY_LEN + at;
    u32::from_le_bytes(t[s..s + 4].try_into().unwrap())
}

#[test]
fn malformed_tables_are_refused_with_their_reason() {
    let g = good();
    let (o0, l0) = (field(&g, 0, 16), field(&g, 0, 20));
    let (o1, l1) = (field(&g, 1, 16), field(&g, 1, 20));
    let (o2, l2) = (field(&g, 2, 16), field(&g, 2, 20));
    let n = g.len();
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut t = g.clone();
        f(&mut t);
        t
    };
    let cases: Vec<(&str, Vec<u8>, TableError, &str)> = vec![
        (
            "data past the end",
            g[..n - 1].to_vec(),
            TableError::OutOfBounds {
                index: 2,
                label: "entry 2 (ARK)".into(),
                offset: o2,
                length: l2,
                buffer: n - 1,
            },
            "entry 2 (ARK) lies outside the buffer",
        ),
        (
            "offset near u32::MAX",
            with(&|t| set(t, 0, GUID_VCEK, u32::MAX, l0)),
            TableError::OutOfBounds {
                index: 0,
                label: "entry 0 (VCEK)".into(),
                offset: u32::MAX,
                length: l0,
                buffer: n,
            },
            "lies outside the buffer",
        ),
        (
            "length u32::MAX",
            with(&|t| set(t, 1, GUID_ASK, o1, u32::MAX)),
            TableError::OutOfBounds {
                index: 1,
                label: "entry 1 (ASK)".into(),
                offset: o1,
                length: u32::MAX,
                buffer: n,
            },
            "entry 1 (ASK) lies outside the buffer",
        ),
        (
            "data inside the table",
            with(&|t| set(t, 2, GUID_ARK, 8, l2)),
            TableError::InsideTable {
                index: 2,
                label: "entry 2 (ARK)".into(),
                offset: 8,
                table_end: 4 * ENTRY_LEN,
            },
            "starts inside the table",
        ),
        (
            "overlapping entries",
            with(&|t| set(t, 1, GUID_ASK, o0 + l0 - 1, l1)),
            TableError::Overlap {
                index: 1,
                other: 0,
                label: "entry 1 (ASK)".into(),
            },
            "entry 1 (ASK) overlaps entry 0",
        ),
        (
            "no terminator",
            // The terminator overwritten by a fourth entry, and the buffer
            // ending right after it.
            {
                let mut t = g[..4 * ENTRY_LEN].to_vec();
                set(&mut t, 3, GUID_CRL, 0, 1);
                t
            },
            TableError::Unterminated {
                entries: 4,
                buffer: 4 * ENTRY_LEN,
            },
            "no terminating all-zero entry",
        ),
        (
            "buffer ends inside the table",
            g[..ENTRY_LEN + 5].to_vec(),
            TableError::Unterminated {
                entries: 1,
                buffer: ENTRY_LEN + 5,
            },
            "no terminating all-zero entry",
        ),
        (
            "duplicate GUID",
            with(&|t| set(t, 2, GUID_ASK, o2, l2)),
            TableError::Duplicate {
                index: 2,
                first: 1,
                label: "entry 2 (ASK)".into(),
            },
            "entry 2 (ASK) repeats the GUID of entry 1",
        ),
        (
            "duplicate unknown GUID",
            {
                let (ask, ark) = split_chain(ASK_ARK_MILAN);
                cert_table::build(&[
                    (GUID_VCEK, GOSEV_VCEK),
                    (GUID_CRL, b"a"),
                    (GUID_ASK, &ask),
                    (GUID_CRL, b"b"),
                    (GUID_ARK, &ark),
                ])
            },
            TableError::Duplicate {
                index: 3,
                first: 1,
                label: "entry 3 (92f81bc3-5811-4d3d-97ff-d19f88dc67ea)".into(),
            },
            "repeats the GUID of entry 1",
        ),
        (
            "zero length",
            with(&|t| set(t, 1, GUID_ASK, o1, 0)),
            TableError::EmptyEntry {
                index: 1,
                label: "entry 1 (ASK)".into(),
            },
            "entry 1 (ASK) has length 0",
        ),
        (
            "zero GUID with an offset",
            with(&|t| set(t, 3, Uuid::nil(), 5, 0)),
            TableError::BadTerminator { index: 3 },
            "entry 3 has a zero GUID",
        ),
        (
            "VCEK and VLEK",
            {
                let (ask, ark) = split_chain(ASK_ARK_MILAN);
                cert_table::build(&[
                    (GUID_VCEK, GOSEV_VCEK),
                    (GUID_VLEK, VLEK),
                    (GUID_ASK, &ask),
                    (GUID_ARK, &ark),
                ])
            },
            TableError::VcekAndVlek,
            "both a VCEK and a VLEK",
        ),
        (
            "too many entries",
            {
                let many: Vec<(Uuid, &[u8])> = (0..=MAX_ENTRIES as u128)
                    .map(|i| (Uuid::from_u128(i + 1), &b"x"[..]))
                    .collect();
                cert_table::build(&many)
            },
            TableError::TooManyEntries,
            "more than 64 entries",
        ),
    ];
    let policy = policy_at("2026-01-01T00:00:00Z");
    for (what, buf, want, reason) in cases {
        assert_eq!(cert_table::parse(&buf), Err(want.clone()), "{what}");
        let a = appraise(&tabled(GOSEV_REPORT, &buf), &policy);
        assert_fail(&a, "snp.endorsement_chain", reason);
        assert!(
            check(&a, "snp.endorsement_chain")
                .1
                .starts_with("certificate table: "),
            "{what}"
        );
        // No key: the signature is not checked, never passed.
        assert!(!a.check("snp.report_signature").unwrap().run, "{what}");
        assert!(!a.claims.contains_key("snp.cert_table"), "{what}");
    }
    // MAX_ENTRIES entries are still fine.
    let enough: Vec<(Uuid, &[u8])> = (0..MAX_ENTRIES as u128)
        .map(|i| (Uuid::from_u128(i + 1), &b"x"[..]))
        .collect();
    assert_eq!(
        cert_table::parse(&cert_table::build(&enough)).map(|t| t.entries.len()),
        Ok(MAX_ENTRIES)
    );
}

#[test]
fn a_table_with_separate_fields_is_refused_as_ambiguous() {
    let t = good();
    for extra in [
        json!({ "vek": hexs(GOSEV_VCEK) }),
        json!({ "chain": [hexs(ASK_ARK_MILAN)] }),
        json!({ "simulated_vcek_public_key": "04" }),
    ] {
        let mut snp = json!({ "report": hexs(GOSEV_REPORT), "cert_table": hexs(&t) });
        for (k, v) in extra.as_object().unwrap() {
            snp[k] = v.clone();
        }
        let e = Evidence::from_json(&json!({ "snp": snp }).to_string(), None).unwrap_err();
        assert!(e.contains("ambiguous"), "{e}");
    }
    // Built in code, past the parser: the appraisal refuses it too.
    let ev = Evidence {
        snp: Some(SnpEvidence {
            report: GOSEV_REPORT.to_vec(),
            vek: Some(GOSEV_VCEK.to_vec()),
            cert_table: Some(t),
            ..SnpEvidence::default()
        }),
        ..Evidence::default()
    };
    let a = appraise(&ev, &policy_at("2026-01-01T00:00:00Z"));
    assert_fail(&a, "snp.endorsement_chain", "ambiguous");
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn random_and_mutated_tables_never_panic() {
    let mut r = Rng(0x0ddc_0ffe_e15b_ad5e);
    let g = good();
    let guids = [
        GUID_VCEK,
        GUID_VLEK,
        GUID_ASK,
        GUID_ARK,
        GUID_CRL,
        Uuid::nil(),
    ];
    let policy = policy_at("2026-01-01T00:00:00Z");
    let (mut parsed, mut refused) = (0, 0);
    for round in 0..4000 {
        let buf = match round % 3 {
            // Random entries over a small buffer.
            0 => {
                let mut b = vec![0u8; r.below(700)];
                for i in 0..r.below(6) {
                    if (i + 1) * ENTRY_LEN > b.len() {
                        break;
                    }
                    let gu = guids[r.below(guids.len())];
                    let off = r.below(800) as u32;
                    let len = r.below(400) as u32;
                    set(&mut b, i, gu, off, len);
                }
                b
            }
            // The real table with a few bytes of its entries changed.
            1 => {
                let mut b = g.clone();
                for _ in 0..1 + r.below(3) {
                    let i = r.below(4 * ENTRY_LEN);
                    b[i] = r.next() as u8;
                }
                b
            }
            // The real table, truncated or with its data mutated.
            _ => {
                let mut b = g.clone();
                if r.next().is_multiple_of(2) {
                    b.truncate(r.below(b.len()));
                } else {
                    let i = 4 * ENTRY_LEN + r.below(b.len() - 4 * ENTRY_LEN);
                    b[i] ^= 1 << r.below(8);
                }
                b
            }
        };
        match cert_table::parse(&buf) {
            Ok(t) => {
                parsed += 1;
                // What parses is sound: every entry inside the buffer, after
                // the table, and the split re-encodes to the same split.
                for e in &t.entries {
                    assert!(e.offset as usize >= (t.entries.len() + 1) * ENTRY_LEN);
                    assert!(e.offset as usize + e.length as usize <= buf.len());
                }
                let again: Vec<(Uuid, &[u8])> = t
                    .vek
                    .iter()
                    .map(|(k, d)| (k.guid(), &d[..]))
                    .chain(t.ask.iter().map(|d| (GUID_ASK, &d[..])))
                    .chain(t.ark.iter().map(|d| (GUID_ARK, &d[..])))
                    .collect();
                let back = cert_table::parse(&cert_table::build(&again)).unwrap();
                assert_eq!((back.vek, back.ask, back.ark), (t.vek, t.ask, t.ark));
            }
            Err(e) => {
                refused += 1;
                assert!(e.to_string().starts_with("certificate table: "));
            }
        }
        // Every tenth through the whole appraisal (slower: RSA chains).
        if round % 10 == 0 {
            let a = appraise(&tabled(GOSEV_REPORT, &buf), &policy);
            assert!(a.check("snp.endorsement_chain").is_some());
        }
    }
    assert!(
        parsed > 100 && refused > 100,
        "{parsed} parsed, {refused} refused"
    );
}
