//! TCG event logs: the PC Client crypto-agile format (Spec ID event, then
//! TCG_PCR_EVENT2), the SHA-1 legacy format, and the TDX CCEL (same format,
//! MR index 1..4 → RTMR0..3). Replay skips EV_NO_ACTION.

use crate::reader::{Reader, Truncated};
use crate::tpm::HashAlg;
use std::collections::BTreeMap;

const EV_NO_ACTION: u32 = 3;
const SPEC_ID_SIGNATURE: &[u8; 16] = b"Spec ID Event03\0";
const STARTUP_LOCALITY: &[u8; 16] = b"StartupLocality\0";

/// One measured event.
#[derive(Debug, Clone)]
pub struct Event {
    /// PCR (or CC MR) index.
    pub index: u32,
    /// Event type.
    pub event_type: u32,
    /// Digests by bank.
    pub digests: Vec<(HashAlg, Vec<u8>)>,
    /// Event data.
    pub data: Vec<u8>,
}

/// A parsed log.
#[derive(Debug, Clone)]
pub struct EventLog {
    /// True for the crypto-agile format.
    pub crypto_agile: bool,
    /// Banks the log declares.
    pub banks: Vec<HashAlg>,
    /// Every event after the header, EV_NO_ACTION included.
    pub events: Vec<Event>,
}

fn t(e: Truncated) -> String {
    format!("event log truncated: {e}")
}

/// True when nothing but padding (0xFF or 0x00) is left.
fn is_padding(rest: &[u8]) -> bool {
    rest.iter().all(|&b| b == 0xFF) || rest.iter().all(|&b| b == 0)
}

/// Parses a log in either format.
pub fn parse(data: &[u8]) -> Result<EventLog, String> {
    let mut r = Reader::new(data);
    // The first event is always a TCG_PCR_EVENT (SHA-1 layout).
    let first = legacy_event(&mut r).map_err(t)?;
    // PCRIndex is 0 in a TPM log and 1 in the TDX CCEL: not checked.
    let spec_id = first.event_type == EV_NO_ACTION
        && first.data.get(..16) == Some(SPEC_ID_SIGNATURE.as_slice());
    if !spec_id {
        let mut events = vec![first];
        while !r.remaining().is_empty() && !is_padding(r.remaining()) {
            events.push(legacy_event(&mut r).map_err(t)?);
        }
        return Ok(EventLog {
            crypto_agile: false,
            banks: vec![HashAlg::Sha1],
            events,
        });
    }
    let sizes = spec_id_algorithms(&first.data)?;
    let banks = sizes
        .iter()
        .filter_map(|(id, _)| HashAlg::from_id(*id))
        .collect();
    let mut events = Vec::new();
    while !r.remaining().is_empty() && !is_padding(r.remaining()) {
        events.push(agile_event(&mut r, &sizes).map_err(t)?);
    }
    Ok(EventLog {
        crypto_agile: true,
        banks,
        events,
    })
}

fn legacy_event(r: &mut Reader<'_>) -> Result<Event, Truncated> {
    let index = r.u32_le("PCRIndex")?;
    let event_type = r.u32_le("EventType")?;
    let digest = r.take(20, "SHA-1 digest")?.to_vec();
    let size = r.u32_le("EventSize")?;
    let data = r.take(size as usize, "Event")?.to_vec();
    Ok(Event {
        index,
        event_type,
        digests: vec![(HashAlg::Sha1, digest)],
        data,
    })
}

/// (algorithm id, digest size) pairs from the Spec ID event.
fn spec_id_algorithms(data: &[u8]) -> Result<Vec<(u16, u16)>, String> {
    let mut r = Reader::new(data);
    let f = |e: Truncated| format!("bad Spec ID event: {e}");
    r.take(16, "signature").map_err(f)?;
    r.u32_le("platformClass").map_err(f)?;
    r.take(4, "version, errata, uintnSize").map_err(f)?;
    let n = r.u32_le("numberOfAlgorithms").map_err(f)?;
    if n == 0 || n > 16 {
        return Err(format!("bad Spec ID event: {n} algorithms"));
    }
    let mut out = Vec::new();
    for _ in 0..n {
        let id = r.u16_le("algorithmId").map_err(f)?;
        let size = r.u16_le("digestSize").map_err(f)?;
        if let Some(h) = HashAlg::from_id(id)
            && usize::from(size) != h.size()
        {
            return Err(format!("Spec ID event gives {} a size of {size}", h.name()));
        }
        out.push((id, size));
    }
    Ok(out)
}

fn agile_event(r: &mut Reader<'_>, sizes: &[(u16, u16)]) -> Result<Event, Truncated> {
    let index = r.u32_le("PCRIndex")?;
    let event_type = r.u32_le("EventType")?;
    let count = r.u32_le("digests.count")?;
    let mut digests = Vec::new();
    for _ in 0..count {
        let id = r.u16_le("hashAlg")?;
        let size = sizes
            .iter()
            .find(|(a, _)| *a == id)
            .map(|(_, s)| *s)
            .ok_or(Truncated {
                what: "digest of an algorithm the Spec ID event declares",
                offset: r.pos(),
            })?;
        let d = r.take(usize::from(size), "digest")?.to_vec();
        if let Some(h) = HashAlg::from_id(id) {
            digests.push((h, d));
        }
    }
    let size = r.u32_le("EventSize")?;
    let data = r.take(size as usize, "Event")?.to_vec();
    Ok(Event {
        index,
        event_type,
        digests,
        data,
    })
}

/// Replayed registers: bank → index → value.
pub type Replay = BTreeMap<&'static str, BTreeMap<u32, Vec<u8>>>;

/// Replays the log: `R = H(R ‖ digest)` from zero (PCR 0 starts at the
/// startup locality if a StartupLocality event says so).
pub fn replay(log: &EventLog) -> Replay {
    let mut out: Replay = BTreeMap::new();
    let mut locality = 0u8;
    for ev in &log.events {
        if ev.event_type == EV_NO_ACTION {
            if ev.data.get(..16) == Some(STARTUP_LOCALITY.as_slice()) {
                locality = ev.data.get(16).copied().unwrap_or(0);
            }
            continue;
        }
        for (alg, d) in &ev.digests {
            let bank = out.entry(alg.name()).or_default();
            let cur = bank.entry(ev.index).or_insert_with(|| {
                let mut z = vec![0u8; alg.size()];
                if ev.index == 0 {
                    z[alg.size() - 1] = locality;
                }
                z
            });
            *cur = alg.hash(&[cur, d]);
        }
    }
    out
}

/// Compares a replay with PCR values: every PCR the log extends must be
/// given and equal; a given firmware PCR (0..=7) the log never touches must
/// hold its reset value (zero). Higher PCRs may be extended by the OS (IMA,
/// systemd) with entries in other logs, so they are only compared when this
/// log extends them.
pub fn compare_with_pcrs(
    replayed: &Replay,
    pcrs: &crate::tpm::PcrValues,
) -> Result<String, String> {
    let mut compared = 0;
    for (bank, values) in replayed {
        let Some(given) = pcrs.get(*bank) else {
            continue;
        };
        for (i, v) in values {
            match given.get(i) {
                Some(g) if g == v => compared += 1,
                Some(g) => {
                    return Err(format!(
                        "{bank} PCR {i}: log replays to {} but the PCR holds {}",
                        hex::encode(v),
                        hex::encode(g)
                    ));
                }
                None => {}
            }
        }
    }
    for (bank, given) in pcrs {
        for (i, g) in given {
            let in_log = replayed
                .get(bank.as_str())
                .is_some_and(|b| b.contains_key(i));
            if !in_log && *i <= 7 && g.iter().any(|&b| b != 0) {
                return Err(format!(
                    "{bank} PCR {i} is extended but the log has no event for it"
                ));
            }
        }
    }
    if compared == 0 {
        return Err("no PCR value given for any register the log extends".into());
    }
    Ok(format!(
        "event log replays to all {compared} given PCR values the log extends"
    ))
}

/// Compares a CCEL replay (SHA-384, MR index 1..=3, and 4 if the log has
/// events for it) with the quote's RTMRs. RTMR3 is left to the OS and
/// runtime, which may extend it without a CCEL entry.
pub fn compare_with_rtmrs(replayed: &Replay, rtmrs: &[[u8; 48]; 4]) -> Result<String, String> {
    let bank = replayed.get("sha384");
    let mut n = 0;
    for (k, rtmr) in rtmrs.iter().enumerate() {
        let mr = k as u32 + 1;
        if mr == 4 && !bank.is_some_and(|b| b.contains_key(&4)) {
            continue;
        }
        let v = bank
            .and_then(|b| b.get(&mr))
            .cloned()
            .unwrap_or_else(|| vec![0u8; 48]);
        if v != rtmr {
            return Err(format!(
                "RTMR{k}: CCEL replays to {} but the quote holds {}",
                hex::encode(&v),
                hex::encode(rtmr)
            ));
        }
        n += 1;
    }
    Ok(format!("CCEL replays to RTMR0..{} of the quote", n - 1))
}
