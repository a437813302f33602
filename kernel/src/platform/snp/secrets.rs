//! The SNP secrets page: the VM platform communication keys (VMPCK0..3) and
//! the SVSM fields.
//!
//! References:
//! - SEV-SNP Firmware ABI (AMD 56860), "Secrets Page Format": VERSION @0x00,
//!   IMIEN @0x04, FMS @0x08, GOSVW @0x10, VMPCK0..3 @0x20/0x40/0x60/0x80
//!   (32 bytes each), an area the guest OS owns @0xA0 (0x60 bytes), the VMSA
//!   tweak bitmap @0x100, TSC_FACTOR @0x160.
//! - SVSM specification (AMD 58019), "SVSM Secrets Page Fields": the SVSM
//!   fills 0x140 SVSM_BASE (u64), 0x148 SVSM_SIZE (u64), 0x150 SVSM_CAA
//!   (u64), 0x158 SVSM_MAX_VERSION (u32), 0x15C SVSM_GUEST_VMPL (u8) in the
//!   copy of the page it gives the guest, and wipes the VMPCKs of the VMPLs
//!   above the guest's (so the guest never sees VMPCK0).
//!
//! The page is firmware-written memory; [`SecretsPage::copy_from`] copies it
//! once into a private structure and validates it. The keys then live in
//! [`Vmpck`] values that zeroize themselves when dropped. The platform code
//! takes VMPCK0 out ([`SecretsPage::take_vmpck`]) for the guest-request
//! channel and wipes it from the page ([`wipe_vmpck_in_page`]), so exactly one
//! copy remains, which the channel destroys on any failure.

use core::fmt;

use crate::bytes::{le_u32, le_u64};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Size of the secrets page.
pub const SECRETS_PAGE_SIZE: usize = 4096;
/// Size of one VMPCK (an AES-256-GCM key).
pub const VMPCK_LEN: usize = 32;
/// Number of VMPCKs (one per VMPL).
pub const VMPCK_COUNT: usize = 4;
/// Secrets page versions whose layout this module knows. A newer version
/// must be reviewed before it is accepted: the code fails closed.
pub const SUPPORTED_VERSIONS: core::ops::RangeInclusive<u32> = 2..=3;
/// The highest VMPL (VMPLs are 0..=3).
pub const MAX_VMPL: u8 = 3;

/// Field offsets in the secrets page.
pub mod offset {
    /// u32 VERSION.
    pub const VERSION: usize = 0x00;
    /// VMPCK0 (VMPCKn is at `VMPCK0 + n * VMPCK_LEN`).
    pub const VMPCK0: usize = 0x20;
    /// u64 SVSM_BASE.
    pub const SVSM_BASE: usize = 0x140;
    /// u64 SVSM_SIZE.
    pub const SVSM_SIZE: usize = 0x148;
    /// u64 SVSM_CAA.
    pub const SVSM_CAA: usize = 0x150;
    /// u32 SVSM_MAX_VERSION.
    pub const SVSM_MAX_VERSION: usize = 0x158;
    /// u8 SVSM_GUEST_VMPL, followed by three reserved bytes.
    pub const SVSM_GUEST_VMPL: usize = 0x15C;
    /// End of the SVSM fields (exclusive).
    pub const SVSM_END: usize = 0x160;
}

/// Why a secrets page or an SVSM field set was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretsError {
    /// The VERSION field holds a version whose layout is not known here.
    UnsupportedVersion(u32),
    /// A VMPCK index outside 0..=3.
    InvalidVmpck(usize),
    /// The VMPCK is all zeros: the firmware provided none, or it was wiped.
    VmpckWiped(usize),
    /// SVSM_GUEST_VMPL must name a VMPL below the SVSM's (1..=3).
    InvalidGuestVmpl(u8),
}

impl fmt::Display for SecretsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnsupportedVersion(v) => write!(f, "unsupported secrets page version {v}"),
            Self::InvalidVmpck(i) => write!(f, "no VMPCK{i}"),
            Self::VmpckWiped(i) => write!(f, "VMPCK{i} is absent or wiped"),
            Self::InvalidGuestVmpl(v) => write!(f, "invalid SVSM guest VMPL {v}"),
        }
    }
}

/// One VM platform communication key. Zeroized when dropped; its bytes are
/// never printed.
pub struct Vmpck([u8; VMPCK_LEN]);

impl Vmpck {
    /// Wraps key bytes (e.g. a key a test or a model chose).
    pub const fn new(bytes: [u8; VMPCK_LEN]) -> Self {
        Self(bytes)
    }

    /// The key bytes.
    pub fn bytes(&self) -> &[u8; VMPCK_LEN] {
        &self.0
    }

    /// True if the key is all zeros (absent or wiped). Constant time is not
    /// needed: whether a key exists is no secret.
    pub fn is_wiped(&self) -> bool {
        self.0.iter().all(|b| *b == 0)
    }

    /// Destroys the key in place.
    pub fn wipe(&mut self) {
        self.0.zeroize();
    }
}

impl Drop for Vmpck {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl ZeroizeOnDrop for Vmpck {}

impl fmt::Debug for Vmpck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_wiped() {
            f.write_str("Vmpck(wiped)")
        } else {
            f.write_str("Vmpck(..)")
        }
    }
}

/// The SVSM fields at 0x140..0x160 of the secrets page (SVSM spec 58019).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SvsmFields {
    /// Guest physical base of the SVSM's memory.
    pub base: u64,
    /// Size of the SVSM's memory in bytes.
    pub size: u64,
    /// Guest physical address of the boot CPU's Calling Area.
    pub caa: u64,
    /// Highest SVSM protocol version the SVSM implements.
    pub max_version: u32,
    /// The VMPL the guest runs at.
    pub guest_vmpl: u8,
}

impl SvsmFields {
    /// Reads the fields from a page (no validation: a page the firmware wrote
    /// holds zeros here, which means "no SVSM").
    pub fn read_from(page: &[u8; SECRETS_PAGE_SIZE]) -> Self {
        Self::parse(&page[..offset::SVSM_END])
    }

    /// `b` holds at least the first `offset::SVSM_END` bytes of a page.
    fn parse(b: &[u8]) -> Self {
        Self {
            base: le_u64(b, offset::SVSM_BASE),
            size: le_u64(b, offset::SVSM_SIZE),
            caa: le_u64(b, offset::SVSM_CAA),
            max_version: le_u32(b, offset::SVSM_MAX_VERSION),
            guest_vmpl: b[offset::SVSM_GUEST_VMPL],
        }
    }

    /// Writes the fields (and zeros the three reserved bytes after
    /// SVSM_GUEST_VMPL) into the guest's copy of the page.
    pub fn write_to(&self, page: &mut [u8; SECRETS_PAGE_SIZE]) -> Result<(), SecretsError> {
        if self.guest_vmpl == 0 || self.guest_vmpl > MAX_VMPL {
            return Err(SecretsError::InvalidGuestVmpl(self.guest_vmpl));
        }
        page[offset::SVSM_BASE..offset::SVSM_BASE + 8].copy_from_slice(&self.base.to_le_bytes());
        page[offset::SVSM_SIZE..offset::SVSM_SIZE + 8].copy_from_slice(&self.size.to_le_bytes());
        page[offset::SVSM_CAA..offset::SVSM_CAA + 8].copy_from_slice(&self.caa.to_le_bytes());
        page[offset::SVSM_MAX_VERSION..offset::SVSM_MAX_VERSION + 4]
            .copy_from_slice(&self.max_version.to_le_bytes());
        page[offset::SVSM_GUEST_VMPL] = self.guest_vmpl;
        page[offset::SVSM_GUEST_VMPL + 1..offset::SVSM_END].fill(0);
        Ok(())
    }
}

/// The validated private copy of the secrets page.
#[derive(Debug)]
pub struct SecretsPage {
    version: u32,
    vmpck: [Vmpck; VMPCK_COUNT],
    svsm: SvsmFields,
}

impl SecretsPage {
    /// Copies the page once into private memory and validates the version.
    pub fn copy_from(page: &[u8; SECRETS_PAGE_SIZE]) -> Result<Self, SecretsError> {
        // One copy of exactly the bytes used; everything below works on it.
        let mut head = [0u8; offset::SVSM_END];
        head.copy_from_slice(&page[..offset::SVSM_END]);
        let version = le_u32(&head, offset::VERSION);
        let result = if SUPPORTED_VERSIONS.contains(&version) {
            let key = |i: usize| {
                let at = offset::VMPCK0 + i * VMPCK_LEN;
                let mut k = [0u8; VMPCK_LEN];
                k.copy_from_slice(&head[at..at + VMPCK_LEN]);
                Vmpck::new(k)
            };
            Ok(Self {
                version,
                vmpck: [key(0), key(1), key(2), key(3)],
                svsm: SvsmFields::parse(&head),
            })
        } else {
            Err(SecretsError::UnsupportedVersion(version))
        };
        head.zeroize();
        result
    }

    /// The page's VERSION.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// VMPCK `index`, if it is present (not all zeros).
    pub fn vmpck(&self, index: usize) -> Result<&Vmpck, SecretsError> {
        let key = self
            .vmpck
            .get(index)
            .ok_or(SecretsError::InvalidVmpck(index))?;
        if key.is_wiped() {
            return Err(SecretsError::VmpckWiped(index));
        }
        Ok(key)
    }

    /// Moves VMPCK `index` out of the private copy (which keeps zeros), so
    /// that its new owner holds the only copy in private memory.
    pub fn take_vmpck(&mut self, index: usize) -> Result<Vmpck, SecretsError> {
        self.vmpck(index)?;
        let slot = &mut self.vmpck[index];
        let key = Vmpck::new(*slot.bytes());
        slot.wipe();
        Ok(key)
    }

    /// The SVSM fields as the page holds them.
    pub fn svsm_fields(&self) -> SvsmFields {
        self.svsm
    }

    /// Wipes VMPCK `index` in the private copy and in the page.
    pub fn wipe_vmpck(
        &mut self,
        index: usize,
        page: &mut [u8; SECRETS_PAGE_SIZE],
    ) -> Result<(), SecretsError> {
        let slot = self
            .vmpck
            .get_mut(index)
            .ok_or(SecretsError::InvalidVmpck(index))?;
        slot.wipe();
        wipe_vmpck_in_page(index, page)
    }
}

/// Wipes VMPCK `index` in a secrets page (zeroize: the writes are not
/// optimised away).
pub fn wipe_vmpck_in_page(
    index: usize,
    page: &mut [u8; SECRETS_PAGE_SIZE],
) -> Result<(), SecretsError> {
    if index >= VMPCK_COUNT {
        return Err(SecretsError::InvalidVmpck(index));
    }
    let at = offset::VMPCK0 + index * VMPCK_LEN;
    page[at..at + VMPCK_LEN].zeroize();
    Ok(())
}

/// Turns a copy of the secrets page into the one the guest gets: the VMPCKs
/// of VMPL 0..guest_vmpl are wiped (the guest may only hold the keys of its
/// own and less privileged VMPLs) and the SVSM fields are written.
pub fn prepare_guest_page(
    page: &mut [u8; SECRETS_PAGE_SIZE],
    fields: &SvsmFields,
) -> Result<(), SecretsError> {
    fields.write_to(page)?;
    for index in 0..usize::from(fields.guest_vmpl) {
        wipe_vmpck_in_page(index, page)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(version: u32) -> [u8; SECRETS_PAGE_SIZE] {
        let mut p = [0u8; SECRETS_PAGE_SIZE];
        p[0..4].copy_from_slice(&version.to_le_bytes());
        for i in 0..VMPCK_COUNT {
            let at = offset::VMPCK0 + i * VMPCK_LEN;
            p[at..at + VMPCK_LEN].fill(0x10 + i as u8);
        }
        // Something in the OS area and the VMSA tweak bitmap that must survive.
        p[0xA0] = 0x77;
        p[0x100] = 0x55;
        p
    }

    #[test]
    fn known_versions_parse_and_others_are_refused() {
        for v in [2, 3] {
            let s = SecretsPage::copy_from(&page(v)).unwrap();
            assert_eq!(s.version(), v);
            for i in 0..VMPCK_COUNT {
                assert_eq!(s.vmpck(i).unwrap().bytes(), &[0x10 + i as u8; 32]);
            }
            assert_eq!(s.svsm_fields(), SvsmFields::default());
        }
        for v in [0, 1, 4, u32::MAX] {
            assert_eq!(
                SecretsPage::copy_from(&page(v)).unwrap_err(),
                SecretsError::UnsupportedVersion(v)
            );
        }
    }

    #[test]
    fn the_copy_does_not_follow_later_writes_to_the_page() {
        let mut p = page(3);
        let s = SecretsPage::copy_from(&p).unwrap();
        p[offset::VMPCK0] ^= 0xFF;
        assert_eq!(p[offset::VMPCK0], 0xEF);
        assert_eq!(s.vmpck(0).unwrap().bytes(), &[0x10; 32]);
    }

    #[test]
    fn wipe_clears_the_private_copy_and_the_page_only_for_that_key() {
        let mut p = page(3);
        let before = p;
        let mut s = SecretsPage::copy_from(&p).unwrap();
        s.wipe_vmpck(1, &mut p).unwrap();
        assert_eq!(s.vmpck(1).unwrap_err(), SecretsError::VmpckWiped(1));
        assert!(p[0x40..0x60].iter().all(|b| *b == 0));
        // Every other byte of the page is unchanged.
        for (i, (a, b)) in p.iter().zip(before.iter()).enumerate() {
            if !(0x40..0x60).contains(&i) {
                assert_eq!(a, b, "byte {i:#x} changed");
            }
        }
        assert!(s.vmpck(0).is_ok() && s.vmpck(2).is_ok() && s.vmpck(3).is_ok());
        assert_eq!(
            s.wipe_vmpck(4, &mut p).unwrap_err(),
            SecretsError::InvalidVmpck(4)
        );
        assert_eq!(s.vmpck(9).unwrap_err(), SecretsError::InvalidVmpck(9));
    }

    #[test]
    fn take_moves_the_key_out() {
        let mut s = SecretsPage::copy_from(&page(2)).unwrap();
        let k = s.take_vmpck(0).unwrap();
        assert_eq!(k.bytes(), &[0x10; 32]);
        assert_eq!(s.vmpck(0).unwrap_err(), SecretsError::VmpckWiped(0));
        assert_eq!(s.take_vmpck(0).unwrap_err(), SecretsError::VmpckWiped(0));
        assert_eq!(format!("{k:?}"), "Vmpck(..)");
    }

    #[test]
    fn svsm_fields_are_written_at_their_offsets_and_read_back() {
        let mut p = page(3);
        p[0x15D..0x160].fill(0xEE);
        let f = SvsmFields {
            base: 0x1122_3344_5566_7788,
            size: 0x0100_0000,
            caa: 0xAB_C000,
            max_version: 1,
            guest_vmpl: 2,
        };
        f.write_to(&mut p).unwrap();
        assert_eq!(&p[0x140..0x148], &0x1122_3344_5566_7788u64.to_le_bytes());
        assert_eq!(&p[0x148..0x150], &0x0100_0000u64.to_le_bytes());
        assert_eq!(&p[0x150..0x158], &0xAB_C000u64.to_le_bytes());
        assert_eq!(&p[0x158..0x15C], &1u32.to_le_bytes());
        assert_eq!(p[0x15C], 2);
        assert_eq!(&p[0x15D..0x160], &[0, 0, 0]);
        assert_eq!(SvsmFields::read_from(&p), f);
        assert_eq!(SecretsPage::copy_from(&p).unwrap().svsm_fields(), f);
        for bad in [0u8, 4, 0xFF] {
            let g = SvsmFields {
                guest_vmpl: bad,
                ..f
            };
            assert_eq!(
                g.write_to(&mut p).unwrap_err(),
                SecretsError::InvalidGuestVmpl(bad)
            );
        }
    }

    #[test]
    fn the_guest_page_loses_the_keys_of_more_privileged_vmpls() {
        let mut p = page(3);
        let f = SvsmFields {
            base: 0x8000_0000,
            size: 0x10_0000,
            caa: 0x8000_1000,
            max_version: 1,
            guest_vmpl: 2,
        };
        prepare_guest_page(&mut p, &f).unwrap();
        let s = SecretsPage::copy_from(&p).unwrap();
        assert_eq!(s.vmpck(0).unwrap_err(), SecretsError::VmpckWiped(0));
        assert_eq!(s.vmpck(1).unwrap_err(), SecretsError::VmpckWiped(1));
        assert_eq!(s.vmpck(2).unwrap().bytes(), &[0x12; 32]);
        assert_eq!(s.vmpck(3).unwrap().bytes(), &[0x13; 32]);
        assert_eq!(s.svsm_fields(), f);
        assert_eq!((p[0xA0], p[0x100]), (0x77, 0x55));
    }
}
