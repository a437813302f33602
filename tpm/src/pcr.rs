//! PCR banks and the PC Client PCR attributes (PTP profile, table "PCR
//! attributes"): which localities may extend or reset each PCR, which are
//! saved by Shutdown(STATE), and their initial values.

use alloc::vec;
use alloc::vec::Vec;

use crate::crypto::HashAlg;
use crate::marshal::{Reader, Writer};
use crate::rc::{self, CmdResult, Rc};
use crate::spec::{PCR_COUNT, PCR_SELECT_MAX};

/// Per PCR: (state saved, localities that may reset, localities that may extend).
/// Bit n of a locality mask is locality n.
const ATTRIBUTES: [(bool, u8, u8); PCR_COUNT] = {
    let mut a = [(true, 0x00, 0x1F); PCR_COUNT];
    a[16] = (false, 0x0F, 0x1F); // debug
    a[17] = (false, 0x10, 0x1C); // locality 4
    a[18] = (false, 0x10, 0x1C); // locality 3
    a[19] = (false, 0x10, 0x0C); // locality 2
    a[20] = (false, 0x14, 0x0E); // locality 1
    a[21] = (false, 0x14, 0x04); // dynamic OS
    a[22] = (false, 0x14, 0x04); // dynamic OS
    a[23] = (false, 0x0F, 0x1F); // application
    a
};

pub fn state_saved(pcr: usize) -> bool {
    ATTRIBUTES.get(pcr).is_some_and(|a| a.0)
}
pub fn reset_localities(pcr: usize) -> u8 {
    ATTRIBUTES.get(pcr).map_or(0, |a| a.1)
}
pub fn extend_localities(pcr: usize) -> u8 {
    ATTRIBUTES.get(pcr).map_or(0, |a| a.2)
}
/// PCRs reset by a DRTM event start as all ones.
pub fn drtm(pcr: usize) -> bool {
    reset_localities(pcr) & 0x10 != 0
}
/// PCRs whose change does not bump pcrUpdateCounter (PC Client: debug,
/// dynamic OS and application PCRs, as the reference's table).
pub fn no_increment(pcr: usize) -> bool {
    matches!(pcr, 16 | 21 | 22 | 23)
}

pub fn locality_allows(mask: u8, locality: u8) -> bool {
    locality <= 4 && mask & (1 << locality) != 0
}

/// PCR_Reset: a DRTM-capable TPM never resets from locality 4 (DRTM PCRs are
/// reset by _TPM_Hash_Start there), whatever the table says.
pub fn reset_allowed(pcr: usize, locality: u8) -> bool {
    locality != 4 && locality_allows(reset_localities(pcr), locality)
}

pub struct PcrBanks {
    pub allocated: [u32; 3],
    values: [Vec<u8>; 3],
    pub update_counter: u32,
}

impl PcrBanks {
    pub fn new(allocated: [u32; 3]) -> Self {
        let values = HashAlg::ALL.map(|a| vec![0u8; a.size() * PCR_COUNT]);
        Self {
            allocated,
            values,
            update_counter: 0,
        }
    }

    pub fn is_allocated(&self, alg: HashAlg, pcr: usize) -> bool {
        pcr < PCR_COUNT && self.allocated[alg.index()] & (1 << pcr) != 0
    }

    pub fn get(&self, alg: HashAlg, pcr: usize) -> &[u8] {
        let n = alg.size();
        self.values[alg.index()]
            .get(pcr * n..(pcr + 1) * n)
            .unwrap_or(&[])
    }

    fn get_mut(&mut self, alg: HashAlg, pcr: usize) -> &mut [u8] {
        let n = alg.size();
        self.values[alg.index()]
            .get_mut(pcr * n..(pcr + 1) * n)
            .unwrap_or(&mut [])
    }

    /// Initial values at TPM Reset / Restart (PCR 0's last byte = startup locality).
    pub fn startup(&mut self, locality: u8) {
        for alg in HashAlg::ALL {
            for pcr in 0..PCR_COUNT {
                let v = self.get_mut(alg, pcr);
                v.fill(if drtm(pcr) { 0xFF } else { 0 });
                if pcr == 0
                    && let Some(last) = v.last_mut()
                {
                    *last = locality;
                }
            }
        }
        // Initialising a PCR counts as a change, as in the reference.
        self.update_counter = 0;
        for pcr in 0..PCR_COUNT {
            self.changed(pcr);
        }
    }

    /// TPM Resume: saved PCRs restored, the others initialised (and counted).
    pub fn resume(&mut self, locality: u8, saved: &[u8], counter: u32) {
        self.startup(locality);
        self.restore(saved);
        self.update_counter = counter;
        for pcr in (0..PCR_COUNT).filter(|&p| !state_saved(p)) {
            self.changed(pcr);
        }
    }

    /// Extend one bank; an unallocated bank is skipped and not counted.
    pub fn extend(&mut self, alg: HashAlg, pcr: usize, digest: &[u8]) {
        if !self.is_allocated(alg, pcr) {
            return;
        }
        let new = alg.digest(&[self.get(alg, pcr), digest]);
        self.get_mut(alg, pcr).copy_from_slice(&new);
        self.changed(pcr);
    }

    pub fn reset(&mut self, pcr: usize) {
        for alg in HashAlg::ALL {
            self.get_mut(alg, pcr).fill(0);
        }
        self.changed(pcr);
    }

    fn changed(&mut self, pcr: usize) {
        if !no_increment(pcr) {
            self.update_counter = self.update_counter.wrapping_add(1);
        }
    }

    /// The state-saved PCR values for Shutdown(STATE).
    pub fn save(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for alg in HashAlg::ALL {
            for pcr in (0..PCR_COUNT).filter(|&p| state_saved(p)) {
                out.extend_from_slice(self.get(alg, pcr));
            }
        }
        out
    }

    pub fn restore(&mut self, saved: &[u8]) {
        let mut pos = 0usize;
        for alg in HashAlg::ALL {
            for pcr in (0..PCR_COUNT).filter(|&p| state_saved(p)) {
                let n = alg.size();
                if let Some(v) = saved.get(pos..pos + n) {
                    self.get_mut(alg, pcr).copy_from_slice(v);
                }
                pos += n;
            }
        }
    }

    /// Bytes of PCR memory an allocation needs.
    pub fn size_needed(alloc: &[u32; 3]) -> u32 {
        HashAlg::ALL
            .iter()
            .map(|a| alloc[a.index()].count_ones() * u32::try_from(a.size()).unwrap_or(0))
            .sum()
    }
}

/// One TPMS_PCR_SELECTION.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    pub alg: HashAlg,
    pub size: u8,
    pub bits: u32,
}

/// Unmarshal a TPML_PCR_SELECTION (errors without a location).
pub fn read_selection(r: &mut Reader) -> CmdResult<Vec<Selection>> {
    let count = r.u32()?;
    if count > 3 {
        return Err(Rc::new(rc::SIZE));
    }
    let mut out = Vec::new();
    for _ in 0..count {
        let alg = HashAlg::from_id(r.u16()?).ok_or(Rc::new(rc::HASH))?;
        let size = r.u8()?;
        if !(3..=PCR_SELECT_MAX).contains(&usize::from(size)) {
            return Err(Rc::new(rc::VALUE));
        }
        let mut bits = 0u32;
        for (i, b) in r.bytes(usize::from(size))?.iter().enumerate() {
            bits |= u32::from(*b) << (8 * i);
        }
        out.push(Selection { alg, size, bits });
    }
    Ok(out)
}

pub fn write_selection(w: &mut Writer, sel: &[Selection]) {
    w.u32(u32::try_from(sel.len()).unwrap_or(0));
    for s in sel {
        w.u16(s.alg.id());
        w.u8(s.size);
        for i in 0..usize::from(s.size) {
            w.u8(u8::try_from((s.bits >> (8 * i)) & 0xFF).unwrap_or(0));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pc_client_attributes() {
        assert!(state_saved(0) && state_saved(15) && !state_saved(16));
        assert!(!locality_allows(reset_localities(0), 0));
        assert!(locality_allows(reset_localities(16), 3));
        assert!(
            locality_allows(reset_localities(17), 4) && !locality_allows(reset_localities(17), 3)
        );
        assert!(
            !locality_allows(extend_localities(17), 1) && locality_allows(extend_localities(17), 2)
        );
        assert!(drtm(17) && drtm(22) && !drtm(16) && !drtm(23));
    }

    #[test]
    fn startup_values_and_extend() {
        let mut b = PcrBanks::new([0xFF_FFFF, 0xFF_FFFF, 0]);
        b.startup(3);
        assert_eq!(b.update_counter, 20);
        assert_eq!(b.get(HashAlg::Sha256, 0)[31], 3);
        assert!(b.get(HashAlg::Sha256, 17).iter().all(|&x| x == 0xFF));
        b.extend(HashAlg::Sha256, 23, &[0; 32]);
        assert_eq!(
            b.get(HashAlg::Sha256, 23),
            HashAlg::Sha256.digest(&[&[0; 32], &[0; 32]]).as_slice()
        );
        b.extend(HashAlg::Sha384, 23, &[0; 48]);
        assert!(b.get(HashAlg::Sha384, 23).iter().all(|&x| x == 0));
    }
}
