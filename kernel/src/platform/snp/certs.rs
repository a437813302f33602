//! The VCEK/VLEK certificate chain the hypervisor hands over with the SNP
//! Extended Guest Request, validated once, for the attestation protocol.
//!
//! References:
//! - GHCB specification (AMD 56421), "SNP Extended Guest Request" (NAE
//!   event 0x8000_0012): RAX = GPA of the certificate buffer, RBX = its
//!   size in pages; a buffer too small comes back as SW_EXITINFO2 =
//!   INVALID_LEN (1 << 32) with the needed page count in RBX. The buffer
//!   holds the certificate table: entries of { GUID (16 bytes), offset
//!   (u32), length (u32) }, offsets from the start of the buffer, ended by
//!   an all-zero entry.
//! - SVSM specification (AMD 58019), attestation protocol: the certificates
//!   the SVSM returns use that same table format.
//!
//! GUIDs are stored as the bytes of their text form in order (what
//! `uuid_parse` produces, as AMD's own guest tools do). Known: VCEK, VLEK,
//! ASK, ARK. The GHCB specification defines no ASVK GUID: hosts file the
//! ASVK (the VLEK's signer) under the ASK GUID, and the verifier tells the
//! two apart from the certificate itself.
//!
//! What is done with the table: it is copied once out of shared memory (by
//! the transport), then checked here: entries inside the buffer, a
//! terminator, data after the table and inside the buffer, no two data
//! ranges overlapping, no GUID twice, no empty or all-zero-GUID entry, at
//! most [`MAX_ENTRIES`]. Unknown GUIDs are kept (a host may add, say, a
//! revocation list; the verifier checks every certificate itself) and
//! logged. The result is re-encoded compactly (table, then the data in
//! table order), so nothing outside the entries reaches the guest. A table
//! that fails any check is dropped whole: the chain is then empty, as when
//! the host sends none, and the verifier fetches it from AMD's KDS.

use alloc::vec::Vec;
use core::fmt;

use super::guest_request::{CertsAnswer, GuestRequestChannel, GuestRequestTransport, PAGE_SIZE};

/// Size of a table entry.
pub const ENTRY_LEN: usize = 24;
/// Most entries accepted (VCEK or VLEK, ASK or ASVK, ARK, and a few more).
pub const MAX_ENTRIES: usize = 16;
/// Most pages of certificates accepted from the hypervisor (64 KiB).
pub const MAX_PAGES: usize = 16;
/// Pages offered first (16 KiB, Linux's default; a VCEK chain is about
/// 5 KiB). A hypervisor that needs more says so and gets up to
/// [`MAX_PAGES`].
pub const FIRST_PAGES: usize = 4;

/// VCEK 63da758d-e664-4564-adc5-f4b93be8accd.
pub const GUID_VCEK: [u8; 16] = guid(0x63da758d, 0xe664, 0x4564, 0xadc5, 0xf4b93be8accd);
/// VLEK a8074bc2-a25a-483e-aae6-39c045a0b8a1.
pub const GUID_VLEK: [u8; 16] = guid(0xa8074bc2, 0xa25a, 0x483e, 0xaae6, 0x39c045a0b8a1);
/// ASK 4ab7b379-bbac-4fe4-a02f-05aef327c782.
pub const GUID_ASK: [u8; 16] = guid(0x4ab7b379, 0xbbac, 0x4fe4, 0xa02f, 0x05aef327c782);
/// ARK c0b406a4-a803-4952-9743-3fb6014cd0ae.
pub const GUID_ARK: [u8; 16] = guid(0xc0b406a4, 0xa803, 0x4952, 0x9743, 0x3fb6014cd0ae);

/// The bytes of a GUID's text form, in order.
const fn guid(a: u32, b: u16, c: u16, d: u16, e: u64) -> [u8; 16] {
    let (a, b, c, d, e) = (
        a.to_be_bytes(),
        b.to_be_bytes(),
        c.to_be_bytes(),
        d.to_be_bytes(),
        e.to_be_bytes(),
    );
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], e[2], e[3], e[4], e[5], e[6],
        e[7],
    ]
}

/// The name of a known GUID.
pub fn guid_name(g: &[u8; 16]) -> Option<&'static str> {
    match *g {
        GUID_VCEK => Some("VCEK"),
        GUID_VLEK => Some("VLEK"),
        GUID_ASK => Some("ASK"),
        GUID_ARK => Some("ARK"),
        _ => None,
    }
}

/// Why a certificate table was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableError {
    /// No all-zero entry inside the buffer (or within [`MAX_ENTRIES`]).
    Unterminated,
    /// Entry `n` has a zero GUID but is not all zero, or a zero length.
    BadEntry(usize),
    /// Entry `n`'s data reaches past the buffer or into the table.
    OutOfBounds(usize),
    /// Entry `n`'s data overlaps another entry's.
    Overlap(usize),
    /// Entry `n` repeats an earlier GUID.
    Duplicate(usize),
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unterminated => f.write_str("no terminating entry"),
            Self::BadEntry(n) => write!(f, "entry {n} is malformed"),
            Self::OutOfBounds(n) => write!(f, "entry {n} lies outside the buffer"),
            Self::Overlap(n) => write!(f, "entry {n} overlaps another"),
            Self::Duplicate(n) => write!(f, "entry {n} repeats a GUID"),
        }
    }
}

/// One checked entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    guid: [u8; 16],
    offset: usize,
    len: usize,
}

fn entry_at(buf: &[u8], i: usize) -> Option<Entry> {
    let raw = buf.get(i * ENTRY_LEN..(i + 1) * ENTRY_LEN)?;
    let mut guid = [0u8; 16];
    guid.copy_from_slice(&raw[..16]);
    let u32_at = |at: usize| u32::from_le_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]]);
    Some(Entry {
        guid,
        offset: u32_at(16) as usize,
        len: u32_at(20) as usize,
    })
}

/// Checks the table in `buf` (a private copy) and re-encodes it compactly.
/// An empty table (the first entry all zero) gives an empty vector.
pub fn validate(buf: &[u8]) -> Result<Vec<u8>, TableError> {
    let mut entries: Vec<Entry> = Vec::new();
    loop {
        let i = entries.len();
        let e = entry_at(buf, i).ok_or(TableError::Unterminated)?;
        if e.guid == [0; 16] {
            if e.offset != 0 || e.len != 0 {
                return Err(TableError::BadEntry(i));
            }
            break;
        }
        if i == MAX_ENTRIES {
            return Err(TableError::Unterminated);
        }
        if e.len == 0 {
            return Err(TableError::BadEntry(i));
        }
        if entries.iter().any(|p| p.guid == e.guid) {
            return Err(TableError::Duplicate(i));
        }
        entries.push(e);
    }
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let table_end = (entries.len() + 1) * ENTRY_LEN;
    for (i, e) in entries.iter().enumerate() {
        let end = e
            .offset
            .checked_add(e.len)
            .ok_or(TableError::OutOfBounds(i))?;
        if e.offset < table_end || end > buf.len() {
            return Err(TableError::OutOfBounds(i));
        }
        let overlaps = entries
            .iter()
            .enumerate()
            .any(|(j, o)| j != i && e.offset < o.offset + o.len && o.offset < end);
        if overlaps {
            return Err(TableError::Overlap(i));
        }
    }
    let mut out = Vec::with_capacity(table_end + entries.iter().map(|e| e.len).sum::<usize>());
    out.resize(table_end, 0);
    for (i, e) in entries.iter().enumerate() {
        let offset = out.len();
        let slot = &mut out[i * ENTRY_LEN..(i + 1) * ENTRY_LEN];
        slot[..16].copy_from_slice(&e.guid);
        // Below 64 KiB: the buffer is at most MAX_PAGES pages.
        slot[16..20].copy_from_slice(&(offset as u32).to_le_bytes());
        slot[20..24].copy_from_slice(&(e.len as u32).to_le_bytes());
        out.extend_from_slice(&buf[e.offset..e.offset + e.len]);
    }
    Ok(out)
}

/// Names of the entries of a table [`validate`] returned, for the log.
pub fn entry_names(table: &[u8]) -> impl Iterator<Item = Option<&'static str>> + '_ {
    (0..)
        .map_while(move |i| entry_at(table, i))
        .take_while(|e| e.guid != [0; 16])
        .map(|e| guid_name(&e.guid))
}

/// How fetching the certificates went (for the log and the tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fetched {
    /// A valid table with this many entries.
    Table(usize),
    /// The hypervisor sent an empty table.
    Empty,
    /// The hypervisor does not serve the extended request.
    NotServed,
    /// The hypervisor wanted this many pages: more than [`MAX_PAGES`], not
    /// more than it was offered, or again more after the retry.
    BadSize(u64),
    /// The table failed a check.
    Invalid(TableError),
    /// The report request itself failed (see the channel's rules: the key
    /// may be gone).
    Request(super::guest_request::GuestRequestError),
}

/// Fetches the certificate table with extended report requests (REPORT_DATA
/// all zero; the report is thrown away), offering [`FIRST_PAGES`] pages,
/// then once the count the hypervisor asks for if at most [`MAX_PAGES`].
/// Returns the validated table (empty if there is none or it is bad) and
/// what happened. Never panics on anything the hypervisor sends.
pub fn fetch<T: GuestRequestTransport>(ch: &mut GuestRequestChannel<T>) -> (Vec<u8>, Fetched) {
    let mut pages = FIRST_PAGES;
    for retry in [false, true] {
        let mut buf = alloc::vec![0u8; pages * PAGE_SIZE];
        match ch.report_with_certificates(&[0; 64], 0, &mut buf) {
            Ok((_, CertsAnswer::Written)) => {
                return match validate(&buf) {
                    Ok(t) if t.is_empty() => (t, Fetched::Empty),
                    Ok(t) => {
                        let n = entry_names(&t).count();
                        (t, Fetched::Table(n))
                    }
                    Err(e) => (Vec::new(), Fetched::Invalid(e)),
                };
            }
            Ok((_, CertsAnswer::TooSmall(n))) => {
                if retry || n <= pages as u64 || n > MAX_PAGES as u64 {
                    return (Vec::new(), Fetched::BadSize(n));
                }
                pages = n as usize;
            }
            Ok((_, CertsAnswer::NotServed)) => return (Vec::new(), Fetched::NotServed),
            Err(e) => return (Vec::new(), Fetched::Request(e)),
        }
    }
    // Not reached: the retry returns in every arm.
    (Vec::new(), Fetched::BadSize(pages as u64))
}

impl fmt::Display for Fetched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Table(n) => write!(f, "{n} certificates from the host"),
            Self::Empty => f.write_str("the host sent no certificates"),
            Self::NotServed => f.write_str("the host does not serve extended guest requests"),
            Self::BadSize(n) => write!(
                f,
                "the host asks for {n} pages for its certificates (refused: at most \
                 {MAX_PAGES}, and more than offered, once)"
            ),
            Self::Invalid(e) => write!(f, "the host's certificate table is invalid: {e}"),
            Self::Request(e) => write!(f, "extended guest request failed: {e}"),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use alloc::vec;

    /// A table with `certs` laid out after it, as a host would write it.
    pub(crate) fn table(certs: &[([u8; 16], &[u8])]) -> Vec<u8> {
        let mut t = vec![0u8; (certs.len() + 1) * ENTRY_LEN];
        for (i, (g, data)) in certs.iter().enumerate() {
            let off = t.len() as u32;
            t[i * ENTRY_LEN..i * ENTRY_LEN + 16].copy_from_slice(g);
            t[i * ENTRY_LEN + 16..i * ENTRY_LEN + 20].copy_from_slice(&off.to_le_bytes());
            t[i * ENTRY_LEN + 20..i * ENTRY_LEN + 24]
                .copy_from_slice(&(data.len() as u32).to_le_bytes());
            t.extend_from_slice(data);
        }
        t
    }

    fn set_entry(t: &mut [u8], i: usize, g: [u8; 16], off: u32, len: u32) {
        t[i * ENTRY_LEN..i * ENTRY_LEN + 16].copy_from_slice(&g);
        t[i * ENTRY_LEN + 16..i * ENTRY_LEN + 20].copy_from_slice(&off.to_le_bytes());
        t[i * ENTRY_LEN + 20..i * ENTRY_LEN + 24].copy_from_slice(&len.to_le_bytes());
    }

    fn page(t: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; PAGE_SIZE];
        p[..t.len()].copy_from_slice(t);
        p
    }

    #[test]
    fn guids_are_the_text_bytes_in_order() {
        assert_eq!(
            GUID_VCEK,
            [
                0x63, 0xda, 0x75, 0x8d, 0xe6, 0x64, 0x45, 0x64, 0xad, 0xc5, 0xf4, 0xb9, 0x3b, 0xe8,
                0xac, 0xcd
            ]
        );
        assert_eq!(GUID_ARK[..4], [0xc0, 0xb4, 0x06, 0xa4]);
        assert_eq!(GUID_ARK[10..], [0x3f, 0xb6, 0x01, 0x4c, 0xd0, 0xae]);
        assert_eq!(guid_name(&GUID_VLEK), Some("VLEK"));
        assert_eq!(guid_name(&GUID_ASK), Some("ASK"));
        assert_eq!(guid_name(&[9; 16]), None);
    }

    #[test]
    fn a_good_table_is_reencoded_compactly() {
        let t = table(&[
            (GUID_VCEK, b"vcek-der"),
            (GUID_ASK, b"ask-der!!"),
            (GUID_ARK, b"ark"),
        ]);
        // Spread out: data at the end of the buffer, in reverse order.
        let mut buf = vec![0xEEu8; 2 * PAGE_SIZE];
        buf[..4 * ENTRY_LEN].fill(0);
        let datas: [&[u8]; 3] = [b"vcek-der", b"ask-der!!", b"ark"];
        let guids = [GUID_VCEK, GUID_ASK, GUID_ARK];
        let mut at = buf.len();
        for (i, d) in datas.iter().enumerate() {
            at -= d.len() + 5;
            buf[at..at + d.len()].copy_from_slice(d);
            set_entry(&mut buf, i, guids[i], at as u32, d.len() as u32);
        }
        let out = validate(&buf).unwrap();
        assert_eq!(out, t, "the same table as the compact one");
        assert_eq!(validate(&page(&t)).unwrap(), t);
        assert_eq!(
            entry_names(&out).collect::<Vec<_>>(),
            [Some("VCEK"), Some("ASK"), Some("ARK")]
        );
    }

    #[test]
    fn unknown_guids_are_kept() {
        let t = table(&[(GUID_VLEK, b"vlek"), ([0x42; 16], b"crl")]);
        let out = validate(&page(&t)).unwrap();
        assert_eq!(out, t);
        assert_eq!(entry_names(&out).collect::<Vec<_>>(), [Some("VLEK"), None]);
    }

    #[test]
    fn empty_tables() {
        assert_eq!(validate(&[0u8; PAGE_SIZE]), Ok(Vec::new()));
        assert_eq!(validate(&[0u8; ENTRY_LEN]), Ok(Vec::new()));
    }

    #[test]
    fn bad_tables_are_refused() {
        let good = table(&[(GUID_VCEK, b"0123456789"), (GUID_ARK, b"abcdef")]);
        let t0 = good.len();
        let cases: Vec<(Vec<u8>, TableError)> = vec![
            // Nothing but entries, no terminator before the buffer ends.
            (
                {
                    let mut t = vec![0u8; 5 * ENTRY_LEN];
                    for i in 0..5 {
                        set_entry(&mut t, i, [i as u8 + 1; 16], 0x1000, 1);
                    }
                    t
                },
                TableError::Unterminated,
            ),
            // The buffer ends inside the table.
            (good[..ENTRY_LEN + 10].to_vec(), TableError::Unterminated),
            // Data past the end of the buffer.
            (good[..t0 - 1].to_vec(), TableError::OutOfBounds(1)),
            (
                {
                    let mut t = page(&good);
                    set_entry(&mut t, 0, GUID_VCEK, u32::MAX, 2);
                    t
                },
                TableError::OutOfBounds(0),
            ),
            (
                {
                    let mut t = page(&good);
                    set_entry(&mut t, 0, GUID_VCEK, 100, u32::MAX);
                    t
                },
                TableError::OutOfBounds(0),
            ),
            // Data inside the table.
            (
                {
                    let mut t = page(&good);
                    set_entry(&mut t, 1, GUID_ARK, 40, 6);
                    t
                },
                TableError::OutOfBounds(1),
            ),
            // Two entries sharing bytes.
            (
                {
                    let mut t = page(&good);
                    set_entry(&mut t, 1, GUID_ARK, 3 * ENTRY_LEN as u32 + 9, 6);
                    t
                },
                TableError::Overlap(0),
            ),
            // The same GUID twice.
            (
                {
                    let mut t = page(&good);
                    set_entry(&mut t, 1, GUID_VCEK, 3 * ENTRY_LEN as u32 + 10, 6);
                    t
                },
                TableError::Duplicate(1),
            ),
            // A zero length.
            (
                {
                    let mut t = page(&good);
                    set_entry(&mut t, 1, GUID_ARK, 3 * ENTRY_LEN as u32 + 10, 0);
                    t
                },
                TableError::BadEntry(1),
            ),
            // A zero GUID with an offset: not a terminator.
            (
                {
                    let mut t = page(&good);
                    set_entry(&mut t, 2, [0; 16], 5, 0);
                    t
                },
                TableError::BadEntry(2),
            ),
        ];
        for (i, (buf, want)) in cases.iter().enumerate() {
            assert_eq!(validate(buf), Err(*want), "case {i}");
        }
        // Too many entries, each otherwise fine.
        let many: Vec<([u8; 16], &[u8])> = (0..=MAX_ENTRIES as u8)
            .map(|i| ([i + 1; 16], &b"x"[..]))
            .collect();
        assert_eq!(
            validate(&page(&table(&many))),
            Err(TableError::Unterminated)
        );
        let enough = &many[..MAX_ENTRIES];
        assert_eq!(
            validate(&page(&table(enough))).map(|t| entry_names(&t).count()),
            Ok(MAX_ENTRIES)
        );
    }

    #[test]
    fn random_tables_never_panic_and_what_passes_is_sound() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut passed = 0;
        for _ in 0..3000 {
            let mut buf = vec![0u8; PAGE_SIZE];
            let n = (next() % 6) as usize;
            for i in 0..n {
                let g = if next() % 8 == 0 {
                    [0; 16]
                } else {
                    [(next() % 5) as u8 + 1; 16]
                };
                let off = (next() % 4200) as u32;
                let len = (next() % 700) as u32;
                set_entry(&mut buf, i, g, off, len);
            }
            if next() % 16 == 0 {
                let at = (next() % 4096) as usize;
                buf[at] ^= next() as u8;
            }
            if let Ok(t) = validate(&buf)
                && !t.is_empty()
            {
                passed += 1;
                // What passes re-validates to itself.
                assert_eq!(validate(&t), Ok(t.clone()));
            }
        }
        assert!(passed > 0, "some random tables are well-formed");
    }
}
