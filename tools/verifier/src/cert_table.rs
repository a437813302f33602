//! The SEV-SNP certificate table, as the guest receives it: from the SVSM
//! attestation protocol's certificate buffer (AMD 58019), from the GHCB
//! SNP Extended Guest Request (AMD 56421, NAE event 0x8000_0012, "struct
//! cert_table") or from Linux's `SNP_GET_EXT_REPORT`.
//!
//! Layout: entries of { GUID (16 bytes), offset (u32 LE), length (u32 LE) }
//! ended by an all-zero entry; offsets count from the start of the buffer;
//! the certificates are DER. The buffer may be longer than the table and its
//! data (a whole number of pages, zero padded).
//!
//! GUID byte order: the 16 bytes are the GUID's text form read as hex digits
//! in order (RFC 4122 network order, what `uuid_parse` and the `uuid`
//! crate's `as_bytes` give), **not** the mixed-endian EFI_GUID layout. That
//! is what AMD's `sev-guest` tools (`uuid_t` from `uuid_parse`), virtee/sev's
//! `CertTableEntry` (used by `snpguest`/`snphost`; its tests encode the ARK
//! GUID as `c0 b4 06 a4 a8 03 49 52 …`) and Rivet's own SNP platform
//! (`kernel/src/platform/snp/certs.rs`) write.
//!
//! Known GUIDs: VCEK, VLEK, ASK, ARK. There is no ASVK GUID: the GHCB
//! specification defines none, and host tools file the ASVK (the VLEK's
//! intermediate) under the ASK GUID (virtee/snphost #143); the chain check
//! tells the two apart by the certificate itself. Other GUIDs (a CRL, a
//! cloud's endorsement) are ignored and listed as a note.
//!
//! [`parse`] refuses: a buffer that ends before the terminator, more than
//! [`MAX_ENTRIES`] entries, a zero-GUID entry that is not all zero, an entry
//! of length 0, data outside the buffer or inside the table, two entries
//! sharing bytes, a GUID twice, both a VCEK and a VLEK. It never panics.

use std::fmt;
use uuid::{Uuid, uuid};

/// Size of one table entry.
pub const ENTRY_LEN: usize = 24;
/// Most entries accepted before the terminator.
pub const MAX_ENTRIES: usize = 64;

/// VCEK 63da758d-e664-4564-adc5-f4b93be8accd.
pub const GUID_VCEK: Uuid = uuid!("63da758d-e664-4564-adc5-f4b93be8accd");
/// VLEK a8074bc2-a25a-483e-aae6-39c045a0b8a1.
pub const GUID_VLEK: Uuid = uuid!("a8074bc2-a25a-483e-aae6-39c045a0b8a1");
/// ASK 4ab7b379-bbac-4fe4-a02f-05aef327c782 (also carries an ASVK).
pub const GUID_ASK: Uuid = uuid!("4ab7b379-bbac-4fe4-a02f-05aef327c782");
/// ARK c0b406a4-a803-4952-9743-3fb6014cd0ae.
pub const GUID_ARK: Uuid = uuid!("c0b406a4-a803-4952-9743-3fb6014cd0ae");

/// What a known GUID names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Versioned Chip Endorsement Key.
    Vcek,
    /// Versioned Loaded Endorsement Key.
    Vlek,
    /// AMD SEV Key (or the ASVK, filed under the same GUID).
    Ask,
    /// AMD Root Key.
    Ark,
}

impl Kind {
    /// The kind a GUID names, if known.
    pub fn from_guid(g: &Uuid) -> Option<Self> {
        [Self::Vcek, Self::Vlek, Self::Ask, Self::Ark]
            .into_iter()
            .find(|k| k.guid() == *g)
    }

    /// The kind's GUID.
    pub fn guid(self) -> Uuid {
        match self {
            Self::Vcek => GUID_VCEK,
            Self::Vlek => GUID_VLEK,
            Self::Ask => GUID_ASK,
            Self::Ark => GUID_ARK,
        }
    }

    /// Short name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Vcek => "VCEK",
            Self::Vlek => "VLEK",
            Self::Ask => "ASK",
            Self::Ark => "ARK",
        }
    }
}

/// One entry as read from the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// Its GUID.
    pub guid: Uuid,
    /// Offset of its data from the start of the buffer.
    pub offset: u32,
    /// Length of its data.
    pub length: u32,
}

impl Entry {
    fn label(&self, index: usize) -> String {
        match Kind::from_guid(&self.guid) {
            Some(k) => format!("entry {index} ({})", k.name()),
            None => format!("entry {index} ({})", self.guid),
        }
    }

    fn end(&self) -> u64 {
        u64::from(self.offset) + u64::from(self.length)
    }
}

/// A table split into the chain's parts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertTable {
    /// The endorsement key's certificate and which one the GUID says it is
    /// ([`Kind::Vcek`] or [`Kind::Vlek`]).
    pub vek: Option<(Kind, Vec<u8>)>,
    /// The ASK or ASVK certificate.
    pub ask: Option<Vec<u8>>,
    /// The ARK certificate.
    pub ark: Option<Vec<u8>>,
    /// Every entry, in table order (known and unknown).
    pub entries: Vec<Entry>,
}

impl CertTable {
    /// The ASK/ASVK and ARK, in that order, those present.
    pub fn chain(&self) -> Vec<Vec<u8>> {
        self.ask.iter().chain(&self.ark).cloned().collect()
    }

    /// Entries with a GUID this verifier does not know (ignored).
    pub fn unknown(&self) -> impl Iterator<Item = &Entry> {
        self.entries
            .iter()
            .filter(|e| Kind::from_guid(&e.guid).is_none())
    }

    /// One line per entry, for the appraisal's claims: the name (or the
    /// GUID and "ignored") and the length.
    pub fn summary(&self) -> Vec<String> {
        self.entries
            .iter()
            .map(|e| match Kind::from_guid(&e.guid) {
                Some(k) => format!("{} ({} bytes)", k.name(), e.length),
                None => format!("{} ({} bytes): unknown GUID, ignored", e.guid, e.length),
            })
            .collect()
    }
}

/// Why a table was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableError {
    /// The buffer ends before an all-zero entry (after `entries` entries).
    Unterminated {
        /// Entries read before the buffer ended.
        entries: usize,
        /// Buffer size.
        buffer: usize,
    },
    /// More than [`MAX_ENTRIES`] entries.
    TooManyEntries,
    /// A zero GUID with a non-zero offset or length.
    BadTerminator {
        /// Entry index.
        index: usize,
    },
    /// An entry of length 0.
    EmptyEntry {
        /// Entry index.
        index: usize,
        /// Its label.
        label: String,
    },
    /// Data reaching past the buffer.
    OutOfBounds {
        /// Entry index.
        index: usize,
        /// Its label.
        label: String,
        /// Its offset.
        offset: u32,
        /// Its length.
        length: u32,
        /// Buffer size.
        buffer: usize,
    },
    /// Data starting inside the table itself.
    InsideTable {
        /// Entry index.
        index: usize,
        /// Its label.
        label: String,
        /// Its offset.
        offset: u32,
        /// Where the table (with its terminator) ends.
        table_end: usize,
    },
    /// Two entries sharing bytes.
    Overlap {
        /// The later entry's index.
        index: usize,
        /// The earlier entry's index.
        other: usize,
        /// The later entry's label.
        label: String,
    },
    /// A GUID twice.
    Duplicate {
        /// The later entry's index.
        index: usize,
        /// The earlier entry's index.
        first: usize,
        /// The later entry's label.
        label: String,
    },
    /// Both a VCEK and a VLEK entry: which signed the report is ambiguous.
    VcekAndVlek,
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("certificate table: ")?;
        match self {
            Self::Unterminated { entries, buffer } => write!(
                f,
                "no terminating all-zero entry: the {buffer}-byte buffer ends after {entries} entries"
            ),
            Self::TooManyEntries => write!(f, "more than {MAX_ENTRIES} entries"),
            Self::BadTerminator { index } => write!(
                f,
                "entry {index} has a zero GUID but a non-zero offset or length"
            ),
            Self::EmptyEntry { label, .. } => write!(f, "{label} has length 0"),
            Self::OutOfBounds {
                label,
                offset,
                length,
                buffer,
                ..
            } => write!(
                f,
                "{label} lies outside the buffer: offset {offset} + length {length} > {buffer} bytes"
            ),
            Self::InsideTable {
                label,
                offset,
                table_end,
                ..
            } => write!(
                f,
                "{label} starts inside the table: offset {offset} < {table_end}"
            ),
            Self::Overlap { label, other, .. } => {
                write!(f, "{label} overlaps entry {other}")
            }
            Self::Duplicate { label, first, .. } => {
                write!(f, "{label} repeats the GUID of entry {first}")
            }
            Self::VcekAndVlek => {
                f.write_str("both a VCEK and a VLEK entry: the signing key is ambiguous")
            }
        }
    }
}

impl std::error::Error for TableError {}

fn entry_at(buf: &[u8], i: usize) -> Option<Entry> {
    let start = i.checked_mul(ENTRY_LEN)?;
    let raw: &[u8; ENTRY_LEN] = buf
        .get(start..start.checked_add(ENTRY_LEN)?)?
        .try_into()
        .ok()?;
    let (g, rest) = raw.split_at(16);
    let (o, l) = rest.split_at(4);
    Some(Entry {
        guid: Uuid::from_bytes(g.try_into().ok()?),
        offset: u32::from_le_bytes(o.try_into().ok()?),
        length: u32::from_le_bytes(l.try_into().ok()?),
    })
}

/// Checks the table in `buf` and splits it. An empty table (the first entry
/// all zero) gives an empty [`CertTable`].
pub fn parse(buf: &[u8]) -> Result<CertTable, TableError> {
    let mut entries: Vec<Entry> = Vec::new();
    loop {
        let i = entries.len();
        let e = entry_at(buf, i).ok_or(TableError::Unterminated {
            entries: i,
            buffer: buf.len(),
        })?;
        if e.guid.is_nil() {
            if e.offset != 0 || e.length != 0 {
                return Err(TableError::BadTerminator { index: i });
            }
            break;
        }
        if i == MAX_ENTRIES {
            return Err(TableError::TooManyEntries);
        }
        if let Some(first) = entries.iter().position(|p| p.guid == e.guid) {
            return Err(TableError::Duplicate {
                index: i,
                first,
                label: e.label(i),
            });
        }
        entries.push(e);
    }
    let table_end = (entries.len() + 1) * ENTRY_LEN;
    for (i, e) in entries.iter().enumerate() {
        if e.length == 0 {
            return Err(TableError::EmptyEntry {
                index: i,
                label: e.label(i),
            });
        }
        if (e.offset as usize) < table_end {
            return Err(TableError::InsideTable {
                index: i,
                label: e.label(i),
                offset: e.offset,
                table_end,
            });
        }
        if e.end() > buf.len() as u64 {
            return Err(TableError::OutOfBounds {
                index: i,
                label: e.label(i),
                offset: e.offset,
                length: e.length,
                buffer: buf.len(),
            });
        }
        if let Some(other) = entries[..i]
            .iter()
            .position(|o| u64::from(e.offset) < o.end() && u64::from(o.offset) < e.end())
        {
            return Err(TableError::Overlap {
                index: i,
                other,
                label: e.label(i),
            });
        }
    }
    let mut out = CertTable {
        entries: entries.clone(),
        ..CertTable::default()
    };
    for e in &entries {
        // In bounds: checked above.
        let data = buf
            .get(e.offset as usize..e.end() as usize)
            .unwrap_or_default()
            .to_vec();
        match Kind::from_guid(&e.guid) {
            Some(k @ (Kind::Vcek | Kind::Vlek)) => {
                if out.vek.is_some() {
                    return Err(TableError::VcekAndVlek);
                }
                out.vek = Some((k, data));
            }
            Some(Kind::Ask) => out.ask = Some(data),
            Some(Kind::Ark) => out.ark = Some(data),
            None => {}
        }
    }
    Ok(out)
}

/// Encodes a table the way a host does: the entries, the terminator, then
/// each certificate in entry order. For tests and for runners that hold the
/// certificates separately.
pub fn build(certs: &[(Uuid, &[u8])]) -> Vec<u8> {
    let mut table = Vec::new();
    let mut data = Vec::new();
    let table_len = (certs.len() + 1) * ENTRY_LEN;
    for (g, c) in certs {
        let offset = u32::try_from(table_len + data.len()).unwrap_or(u32::MAX);
        table.extend_from_slice(g.as_bytes());
        table.extend_from_slice(&offset.to_le_bytes());
        table.extend_from_slice(&u32::try_from(c.len()).unwrap_or(u32::MAX).to_le_bytes());
        data.extend_from_slice(c);
    }
    table.extend_from_slice(&[0; ENTRY_LEN]);
    table.extend_from_slice(&data);
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_are_the_text_bytes_in_order() {
        // virtee/sev's CertTableEntry test vector and Rivet's kernel agree.
        assert_eq!(
            GUID_ARK.as_bytes(),
            &[
                0xc0, 0xb4, 0x06, 0xa4, 0xa8, 0x03, 0x49, 0x52, 0x97, 0x43, 0x3f, 0xb6, 0x01, 0x4c,
                0xd0, 0xae
            ]
        );
        assert_eq!(GUID_VCEK.as_bytes()[..4], [0x63, 0xda, 0x75, 0x8d]);
        assert_eq!(GUID_VLEK.as_bytes()[14..], [0xb8, 0xa1]);
        assert_eq!(GUID_ASK.as_bytes()[..2], [0x4a, 0xb7]);
        assert_eq!(Kind::from_guid(&GUID_VLEK), Some(Kind::Vlek));
        assert_eq!(Kind::from_guid(&Uuid::from_bytes([7; 16])), None);
    }

    #[test]
    fn build_then_parse() {
        let t = build(&[(GUID_VCEK, b"v"), (GUID_ASK, b"as"), (GUID_ARK, b"ark")]);
        assert_eq!(t.len(), 4 * ENTRY_LEN + 6);
        let p = parse(&t).unwrap();
        assert_eq!(p.vek, Some((Kind::Vcek, b"v".to_vec())));
        assert_eq!(p.chain(), vec![b"as".to_vec(), b"ark".to_vec()]);
        assert_eq!(p.unknown().count(), 0);
        assert_eq!(parse(&[0; ENTRY_LEN]), Ok(CertTable::default()));
    }
}
