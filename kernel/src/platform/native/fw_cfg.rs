//! QEMU's firmware configuration device (fw_cfg), through its I/O ports:
//! how the host hands the native platform things that must not be built
//! into the image, such as the simulated attestation key.

use alloc::vec::Vec;

use crate::cpu::instr::{inb, outw};

const SELECTOR: u16 = 0x510;
const DATA: u16 = 0x511;
const SIGNATURE: u16 = 0x0000;
const FILE_DIR: u16 = 0x0019;
/// Largest file read (a key or a certificate chain).
const MAX_FILE: usize = 64 * 1024;

fn select(key: u16) {
    // SAFETY: 0x510 is fw_cfg's selector on QEMU's PC machines; selecting
    // an item has no other effect.
    unsafe { outw(SELECTOR, key) }
}

fn read(buf: &mut [u8]) {
    for b in buf {
        // SAFETY: reading fw_cfg's data port returns the next byte of the
        // selected item (0 past its end).
        *b = unsafe { inb(DATA) };
    }
}

/// Whether fw_cfg is present.
pub fn present() -> bool {
    select(SIGNATURE);
    let mut sig = [0u8; 4];
    read(&mut sig);
    &sig == b"QEMU"
}

/// The contents of the fw_cfg file `name` (e.g. "opt/rivet/report-key").
pub fn read_file(name: &str) -> Option<Vec<u8>> {
    if !present() {
        return None;
    }
    select(FILE_DIR);
    let mut count = [0u8; 4];
    read(&mut count);
    for _ in 0..u32::from_be_bytes(count).min(4096) {
        let mut entry = [0u8; 64];
        read(&mut entry);
        let size = u32::from_be_bytes([entry[0], entry[1], entry[2], entry[3]]) as usize;
        let key = u16::from_be_bytes([entry[4], entry[5]]);
        let raw_name = &entry[8..];
        let len = raw_name
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(raw_name.len());
        if &raw_name[..len] == name.as_bytes() {
            if size > MAX_FILE {
                return None;
            }
            select(key);
            let mut data = alloc::vec![0u8; size];
            read(&mut data);
            return Some(data);
        }
    }
    None
}
