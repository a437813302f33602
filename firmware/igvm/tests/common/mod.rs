//! Inputs for the image tests: a synthetic kernel ELF laid out like the real
//! one, Debian's OVMF, and a small flat firmware.

#![allow(dead_code)]

use std::path::PathBuf;

/// Debian's OVMF (package `ovmf`).
pub const OVMF: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";

/// Debian's 2 MiB OVMF build, whose SEV metadata lists SEC_MEM, secrets,
/// CPUID and CAA ranges (the 4 MiB build's list is empty).
pub const OVMF_2M: &str = "/usr/share/OVMF/OVMF_CODE.fd";

/// A file the tests need (`apt-get install -y ovmf`).
pub fn read(path: &str) -> Vec<u8> {
    std::fs::read(path)
        .unwrap_or_else(|e| panic!("{path}: {e}: install it with `apt-get install -y ovmf`"))
}

/// Debian's 4 MiB OVMF.
pub fn ovmf() -> Vec<u8> {
    read(OVMF)
}

/// A flat firmware of `pages` pages with recognisable contents.
pub fn flat_firmware(pages: usize) -> Vec<u8> {
    (0..pages * 4096)
        .map(|i| (i % 251) as u8 ^ (i / 4096) as u8)
        .collect()
}

/// One program header of [`elf`]: (p_type, paddr, file bytes, memsz).
pub struct Seg {
    pub p_type: u32,
    pub paddr: u64,
    pub data: Vec<u8>,
    pub memsz: u64,
}

impl Seg {
    pub fn load(paddr: u64, data: Vec<u8>, memsz: u64) -> Self {
        Self {
            p_type: 1,
            paddr,
            data,
            memsz,
        }
    }
}

/// An x86-64 ELF64 executable with these program headers.
pub fn elf(entry: u64, segs: &[Seg]) -> Vec<u8> {
    let phoff = 64u64;
    let mut data_off = phoff + 56 * segs.len() as u64;
    let mut out = vec![0u8; data_off as usize];
    out[0..4].copy_from_slice(b"\x7fELF");
    out[4] = 2;
    out[5] = 1;
    out[6] = 1;
    out[16..18].copy_from_slice(&2u16.to_le_bytes());
    out[18..20].copy_from_slice(&62u16.to_le_bytes());
    out[20..24].copy_from_slice(&1u32.to_le_bytes());
    out[24..32].copy_from_slice(&entry.to_le_bytes());
    out[32..40].copy_from_slice(&phoff.to_le_bytes());
    out[52..54].copy_from_slice(&64u16.to_le_bytes());
    out[54..56].copy_from_slice(&56u16.to_le_bytes());
    out[56..58].copy_from_slice(&(segs.len() as u16).to_le_bytes());
    let mut blobs = Vec::new();
    for (i, s) in segs.iter().enumerate() {
        let ph = (phoff + 56 * i as u64) as usize;
        out[ph..ph + 4].copy_from_slice(&s.p_type.to_le_bytes());
        out[ph + 4..ph + 8].copy_from_slice(&5u32.to_le_bytes());
        out[ph + 8..ph + 16].copy_from_slice(&data_off.to_le_bytes());
        out[ph + 16..ph + 24].copy_from_slice(&s.paddr.to_le_bytes());
        out[ph + 24..ph + 32].copy_from_slice(&s.paddr.to_le_bytes());
        out[ph + 32..ph + 40].copy_from_slice(&(s.data.len() as u64).to_le_bytes());
        out[ph + 40..ph + 48].copy_from_slice(&s.memsz.to_le_bytes());
        out[ph + 48..ph + 56].copy_from_slice(&4096u64.to_le_bytes());
        data_off += s.data.len() as u64;
        blobs.extend_from_slice(&s.data);
    }
    out.extend_from_slice(&blobs);
    out
}

/// A kernel shaped like Rivet's: text at 1 MiB (entry there), rodata, data
/// ending mid-page, and bss + stack with no file bytes.
pub fn kernel() -> Vec<u8> {
    let text: Vec<u8> = (0..3 * 4096 + 100).map(|i| (i * 7 % 256) as u8).collect();
    let rodata: Vec<u8> = (0..4096).map(|i| (i * 13 % 256) as u8 | 1).collect();
    let data: Vec<u8> = vec![0xd7; 0x120];
    elf(
        0x10_0000,
        &[
            Seg::load(0x10_0000, text.clone(), text.len() as u64),
            Seg::load(0x10_4000, rodata, 4096),
            Seg::load(0x10_5000, data, 0x120),
            Seg::load(0x10_5120, Vec::new(), 0x2ee0 + 0x1000),
            Seg {
                p_type: 4,
                paddr: 0,
                data: vec![1, 2, 3, 4],
                memsz: 4,
            },
        ],
    )
}

/// Scratch directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rivet-igvm-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}
