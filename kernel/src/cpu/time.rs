//! Time: the TSC, calibrated once against the PIT (channel 2, the speaker
//! gate), as the monotonic clock the TPM needs.

use core::sync::atomic::{AtomicU64, Ordering};

use super::instr::{inb, outb, rdtsc};

static TSC_HZ: AtomicU64 = AtomicU64::new(0);
static TSC_AT_BOOT: AtomicU64 = AtomicU64::new(0);

const PIT_HZ: u64 = 1_193_182;
/// 10 ms of PIT ticks.
const CALIBRATION_TICKS: u16 = 11_932;
/// Assumed when the PIT never answers (the clock then only orders events).
const FALLBACK_HZ: u64 = 1_000_000_000;

/// Measures the TSC frequency; returns it in Hz.
pub fn calibrate() -> u64 {
    TSC_AT_BOOT.store(rdtsc(), Ordering::Relaxed);
    // SAFETY: ports 0x61, 0x42 and 0x43 are the PC speaker gate and PIT
    // channel 2, which nothing else in the kernel uses.
    let hz = unsafe {
        let gate = inb(0x61);
        outb(0x61, (gate & !0x02) | 0x01);
        outb(0x43, 0xB0); // channel 2, lobyte/hibyte, mode 0
        outb(0x42, CALIBRATION_TICKS as u8);
        outb(0x42, (CALIBRATION_TICKS >> 8) as u8);
        let start = rdtsc();
        let mut spins = 0u64;
        while inb(0x61) & 0x20 == 0 && spins < 50_000_000 {
            spins += 1;
        }
        let end = rdtsc();
        outb(0x61, gate);
        if spins >= 50_000_000 || end <= start {
            log::warn!("PIT did not answer; assuming a 1 GHz TSC");
            FALLBACK_HZ
        } else {
            (end - start) * PIT_HZ / u64::from(CALIBRATION_TICKS)
        }
    };
    TSC_HZ.store(hz, Ordering::Relaxed);
    hz
}

/// The TSC frequency from CPUID leaf 0x15 (TSC/crystal ratio and crystal
/// frequency), for platforms where the PIT is not reachable (TDX, where
/// port I/O raises #VE and the TDX module reports this leaf). Starts the
/// clock like `calibrate`; None if the leaf gives no frequency.
pub fn calibrate_from_cpuid() -> Option<u64> {
    let leaf = super::instr::cpuid(0x15, 0);
    let (denominator, numerator, crystal) = (
        u64::from(leaf.eax),
        u64::from(leaf.ebx),
        u64::from(leaf.ecx),
    );
    if denominator == 0 || numerator == 0 || crystal == 0 {
        return None;
    }
    let hz = crystal * numerator / denominator;
    TSC_AT_BOOT.store(rdtsc(), Ordering::Relaxed);
    TSC_HZ.store(hz, Ordering::Relaxed);
    Some(hz)
}

/// Milliseconds since `calibrate`.
pub fn now_ms() -> u64 {
    let hz = TSC_HZ.load(Ordering::Relaxed).max(1);
    let ticks = rdtsc().saturating_sub(TSC_AT_BOOT.load(Ordering::Relaxed));
    (u128::from(ticks) * 1000 / u128::from(hz)) as u64
}
