//! Little-endian integers read out of fixed-layout byte structures (pages
//! the kernel has already copied into private memory). The caller owns the
//! layout: an offset past the end is a bug in the caller's layout table, so
//! these index (and would panic) rather than return an error.

/// The `u16` at `at`.
pub fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// The `u32` at `at`.
pub fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut v = [0u8; 4];
    v.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(v)
}

/// The `u64` at `at`.
pub fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}
