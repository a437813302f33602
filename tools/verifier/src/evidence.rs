//! The evidence bundle: a JSON document (schema in README.md) decoded into
//! bytes. Binary fields are a base64 string, or `{"hex": …}`, `{"base64": …}`
//! or `{"file": …}` (relative to the bundle's folder, when read from a file).

use crate::tpm::{Bank, PcrValues};
use base64::Engine;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Decoded evidence. Only the platform evidence is required.
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    /// SEV-SNP evidence.
    pub snp: Option<SnpEvidence>,
    /// TDX evidence.
    pub tdx: Option<TdxEvidence>,
    /// Attestation nonce (REPORT_DATA = SHA-512(nonce ‖ manifest)).
    pub nonce: Option<Vec<u8>>,
    /// Service manifest bound by REPORT_DATA.
    pub manifest: Option<Vec<u8>>,
    /// TPM quote.
    pub tpm_quote: Option<TpmQuote>,
    /// AK public area (TPMT_PUBLIC).
    pub ak_public: Option<Vec<u8>>,
    /// PCR values by bank.
    pub pcrs: Option<PcrValues>,
    /// Event log (TCG PC Client or CCEL).
    pub event_log: Option<Vec<u8>>,
    /// EK certificate.
    pub ek_cert: Option<Vec<u8>>,
    /// AK certificate.
    pub ak_cert: Option<Vec<u8>>,
    /// The vTPM's binding certificate (NV 0x01525600): self-signed, carries
    /// the platform report that binds its key; signs the EK/AK certificates.
    pub binding_cert: Option<Vec<u8>>,
    /// EK certificates (NV 0x01C00002, 0x01C0000A), checked like `ek_cert`.
    pub ek_certs: Vec<Vec<u8>>,
    /// AK certificates (NV 0x01525601, 0x01525602), checked like `ak_cert`.
    pub ak_certs: Vec<Vec<u8>>,
}

/// SEV-SNP platform evidence.
#[derive(Debug, Clone, Default)]
pub struct SnpEvidence {
    /// ATTESTATION_REPORT bytes.
    pub report: Vec<u8>,
    /// VCEK or VLEK certificate (PEM or DER).
    pub vek: Option<Vec<u8>>,
    /// ASK/ASVK and ARK (PEM or DER, any order, several per entry allowed).
    pub chain: Vec<Vec<u8>>,
    /// Native platform: the SEC1 P-384 key that signs reports, no chain.
    pub simulated_vcek_public_key: Option<Vec<u8>>,
    /// The certificate table as the guest received it (SVSM certificate
    /// buffer, GHCB extended guest request, Linux `SNP_GET_EXT_REPORT`);
    /// split by [`crate::cert_table::parse`] into `vek` and `chain` at
    /// appraisal. Exclusive with `vek`, `chain` and the simulated key.
    pub cert_table: Option<Vec<u8>>,
}

impl SnpEvidence {
    /// Refuses a `cert_table` together with `vek`, `chain` or
    /// `simulated_vcek_public_key`: there is no precedence, the bundle is
    /// ambiguous.
    pub fn check_exclusive(&self) -> Result<(), String> {
        if self.cert_table.is_some()
            && (self.vek.is_some()
                || !self.chain.is_empty()
                || self.simulated_vcek_public_key.is_some())
        {
            return Err(
                "ambiguous SNP evidence: snp.cert_table together with snp.vek, \
                 snp.chain or snp.simulated_vcek_public_key (give the table or the separate \
                 fields, not both)"
                    .into(),
            );
        }
        Ok(())
    }
}

/// TDX platform evidence.
#[derive(Debug, Clone, Default)]
pub struct TdxEvidence {
    /// Quote bytes (trailing bytes allowed).
    pub quote: Vec<u8>,
    /// CCEL event log (MR index 1..4 = RTMR0..3).
    pub ccel: Option<Vec<u8>>,
}

/// TPM2_Quote output.
#[derive(Debug, Clone, Default)]
pub struct TpmQuote {
    /// TPMS_ATTEST bytes.
    pub attest: Vec<u8>,
    /// TPMT_SIGNATURE bytes.
    pub signature: Vec<u8>,
    /// Qualifying data given to TPM2_Quote; defaults to the bundle's nonce.
    pub nonce: Option<Vec<u8>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBundle {
    #[serde(default)]
    version: Option<u32>,
    #[serde(default)]
    snp: Option<RawSnp>,
    #[serde(default)]
    tdx: Option<RawTdx>,
    #[serde(default)]
    nonce: Option<Value>,
    #[serde(default)]
    manifest: Option<Value>,
    #[serde(default)]
    tpm_quote: Option<RawQuote>,
    #[serde(default)]
    ak_public: Option<Value>,
    #[serde(default)]
    pcrs: Option<BTreeMap<String, BTreeMap<String, String>>>,
    #[serde(default)]
    event_log: Option<Value>,
    #[serde(default)]
    ek_cert: Option<Value>,
    #[serde(default)]
    ak_cert: Option<Value>,
    #[serde(default)]
    binding_cert: Option<Value>,
    #[serde(default)]
    ek_certs: Vec<Value>,
    #[serde(default)]
    ak_certs: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSnp {
    report: Value,
    #[serde(default)]
    vek: Option<Value>,
    #[serde(default)]
    chain: Vec<Value>,
    #[serde(default)]
    simulated_vcek_public_key: Option<String>,
    #[serde(default)]
    cert_table: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTdx {
    quote: Value,
    #[serde(default)]
    ccel: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuote {
    attest: Value,
    signature: Value,
    #[serde(default)]
    nonce: Option<Value>,
}

struct Decoder<'a> {
    base: Option<&'a Path>,
}

impl Decoder<'_> {
    fn blob(&self, v: &Value, what: &str) -> Result<Vec<u8>, String> {
        let bad = |e: String| format!("{what}: {e}");
        match v {
            Value::String(s) => b64(s).map_err(bad),
            Value::Object(m) if m.len() == 1 => {
                let (k, v) = m.iter().next().ok_or_else(|| bad("empty object".into()))?;
                let s = v
                    .as_str()
                    .ok_or_else(|| bad(format!("'{k}' must be a string")))?;
                match k.as_str() {
                    "hex" => decode_hex(s).map_err(bad),
                    "base64" => b64(s).map_err(bad),
                    "file" => {
                        let base = self.base.ok_or_else(|| {
                            bad("file references need a bundle read from a file".into())
                        })?;
                        let p: PathBuf = base.join(s);
                        std::fs::read(&p)
                            .map_err(|e| bad(format!("cannot read {}: {e}", p.display())))
                    }
                    other => Err(bad(format!(
                        "unknown encoding '{other}' (hex, base64, file)"
                    ))),
                }
            }
            _ => Err(bad(
                "expected a base64 string or {\"hex\"|\"base64\"|\"file\": …}".into(),
            )),
        }
    }

    fn opt(&self, v: &Option<Value>, what: &str) -> Result<Option<Vec<u8>>, String> {
        v.as_ref().map(|v| self.blob(v, what)).transpose()
    }
}

fn b64(s: &str) -> Result<Vec<u8>, String> {
    let clean: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(clean)
        .map_err(|e| format!("bad base64: {e}"))
}

/// Decodes hex, ignoring whitespace.
pub fn decode_hex(s: &str) -> Result<Vec<u8>, String> {
    let clean: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    hex::decode(clean).map_err(|e| format!("bad hex: {e}"))
}

impl Evidence {
    /// Parses a bundle; `base` resolves `{"file": …}` references.
    pub fn from_json(text: &str, base: Option<&Path>) -> Result<Self, String> {
        let raw: RawBundle =
            serde_json::from_str(text).map_err(|e| format!("bad evidence JSON: {e}"))?;
        if let Some(v) = raw.version
            && v != 1
        {
            return Err(format!("unsupported bundle version {v}"));
        }
        let d = Decoder { base };
        let snp = match &raw.snp {
            Some(s) => Some(SnpEvidence {
                report: d.blob(&s.report, "snp.report")?,
                vek: d.opt(&s.vek, "snp.vek")?,
                chain: s
                    .chain
                    .iter()
                    .map(|c| d.blob(c, "snp.chain"))
                    .collect::<Result<_, _>>()?,
                simulated_vcek_public_key: s
                    .simulated_vcek_public_key
                    .as_deref()
                    .map(decode_hex)
                    .transpose()
                    .map_err(|e| format!("snp.simulated_vcek_public_key: {e}"))?,
                cert_table: d.opt(&s.cert_table, "snp.cert_table")?,
            }),
            None => None,
        };
        let tdx = match &raw.tdx {
            Some(t) => Some(TdxEvidence {
                quote: d.blob(&t.quote, "tdx.quote")?,
                ccel: d.opt(&t.ccel, "tdx.ccel")?,
            }),
            None => None,
        };
        if let Some(s) = &snp {
            s.check_exclusive()?;
        }
        if snp.is_none() && tdx.is_none() {
            return Err("the bundle has no platform evidence (snp or tdx)".into());
        }
        if snp.is_some() && tdx.is_some() {
            return Err("the bundle has both snp and tdx evidence".into());
        }
        let tpm_quote = match &raw.tpm_quote {
            Some(q) => Some(TpmQuote {
                attest: d.blob(&q.attest, "tpm_quote.attest")?,
                signature: d.blob(&q.signature, "tpm_quote.signature")?,
                nonce: d.opt(&q.nonce, "tpm_quote.nonce")?,
            }),
            None => None,
        };
        let pcrs = match &raw.pcrs {
            Some(banks) => {
                let mut out = PcrValues::new();
                for (bank, values) in banks {
                    let alg = crate::tpm::HashAlg::from_name(bank)
                        .ok_or(format!("pcrs: unknown bank '{bank}'"))?;
                    let mut b = Bank::new();
                    for (i, v) in values {
                        let i: u32 = i
                            .parse()
                            .map_err(|_| format!("pcrs.{bank}: bad index '{i}'"))?;
                        let v = decode_hex(v).map_err(|e| format!("pcrs.{bank}.{i}: {e}"))?;
                        if v.len() != alg.size() || i > 23 {
                            return Err(format!("pcrs.{bank}.{i}: wrong size or index"));
                        }
                        b.insert(i, v);
                    }
                    out.insert(alg.name().to_string(), b);
                }
                Some(out)
            }
            None => None,
        };
        Ok(Evidence {
            snp,
            tdx,
            nonce: d.opt(&raw.nonce, "nonce")?,
            manifest: d.opt(&raw.manifest, "manifest")?,
            tpm_quote,
            ak_public: d.opt(&raw.ak_public, "ak_public")?,
            pcrs,
            event_log: d.opt(&raw.event_log, "event_log")?,
            ek_cert: d.opt(&raw.ek_cert, "ek_cert")?,
            ak_cert: d.opt(&raw.ak_cert, "ak_cert")?,
            binding_cert: d.opt(&raw.binding_cert, "binding_cert")?,
            ek_certs: raw
                .ek_certs
                .iter()
                .map(|c| d.blob(c, "ek_certs"))
                .collect::<Result<_, _>>()?,
            ak_certs: raw
                .ak_certs
                .iter()
                .map(|c| d.blob(c, "ak_certs"))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Reads a bundle file; `{"file": …}` references resolve next to it.
    pub fn from_path(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::from_json(&text, Some(path.parent().unwrap_or(Path::new("."))))
    }
}

fn hex_blob(b: &[u8]) -> Value {
    serde_json::json!({ "hex": hex::encode(b) })
}

impl Evidence {
    /// The bundle as JSON in the documented format (binary fields as
    /// `{"hex": …}`), e.g. for a runner that collected the evidence.
    pub fn to_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        m.insert("version".into(), 1.into());
        if let Some(s) = &self.snp {
            let mut o = serde_json::Map::new();
            o.insert("report".into(), hex_blob(&s.report));
            if let Some(v) = &s.vek {
                o.insert("vek".into(), hex_blob(v));
            }
            if !s.chain.is_empty() {
                o.insert(
                    "chain".into(),
                    s.chain.iter().map(|c| hex_blob(c)).collect(),
                );
            }
            if let Some(k) = &s.simulated_vcek_public_key {
                o.insert("simulated_vcek_public_key".into(), hex::encode(k).into());
            }
            if let Some(t) = &s.cert_table {
                o.insert("cert_table".into(), hex_blob(t));
            }
            m.insert("snp".into(), o.into());
        }
        if let Some(t) = &self.tdx {
            let mut o = serde_json::Map::new();
            o.insert("quote".into(), hex_blob(&t.quote));
            if let Some(c) = &t.ccel {
                o.insert("ccel".into(), hex_blob(c));
            }
            m.insert("tdx".into(), o.into());
        }
        let opt = [
            ("nonce", &self.nonce),
            ("manifest", &self.manifest),
            ("ak_public", &self.ak_public),
            ("event_log", &self.event_log),
            ("ek_cert", &self.ek_cert),
            ("ak_cert", &self.ak_cert),
            ("binding_cert", &self.binding_cert),
        ];
        for (k, v) in opt {
            if let Some(v) = v {
                m.insert(k.into(), hex_blob(v));
            }
        }
        for (k, v) in [("ek_certs", &self.ek_certs), ("ak_certs", &self.ak_certs)] {
            if !v.is_empty() {
                m.insert(k.into(), v.iter().map(|c| hex_blob(c)).collect());
            }
        }
        if let Some(q) = &self.tpm_quote {
            let mut o = serde_json::Map::new();
            o.insert("attest".into(), hex_blob(&q.attest));
            o.insert("signature".into(), hex_blob(&q.signature));
            if let Some(n) = &q.nonce {
                o.insert("nonce".into(), hex_blob(n));
            }
            m.insert("tpm_quote".into(), o.into());
        }
        if let Some(p) = &self.pcrs {
            let banks: serde_json::Map<String, Value> = p
                .iter()
                .map(|(bank, values)| {
                    let v: serde_json::Map<String, Value> = values
                        .iter()
                        .map(|(i, d)| (i.to_string(), hex::encode(d).into()))
                        .collect();
                    (bank.clone(), v.into())
                })
                .collect();
            m.insert("pcrs".into(), banks.into());
        }
        m.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_json_round_trips() {
        let mut pcrs = PcrValues::new();
        pcrs.insert(
            "sha256".into(),
            [(7u32, vec![7u8; 32])].into_iter().collect(),
        );
        let e = Evidence {
            snp: Some(SnpEvidence {
                report: vec![1, 2, 3],
                vek: Some(vec![4]),
                chain: vec![vec![5], vec![6]],
                simulated_vcek_public_key: Some(vec![4, 9]),
                cert_table: None,
            }),
            nonce: Some(b"n".to_vec()),
            manifest: Some(b"m".to_vec()),
            tpm_quote: Some(TpmQuote {
                attest: vec![8],
                signature: vec![9],
                nonce: None,
            }),
            ak_public: Some(vec![10]),
            pcrs: Some(pcrs),
            event_log: Some(vec![11]),
            binding_cert: Some(vec![12]),
            ek_certs: vec![vec![13], vec![14]],
            ak_certs: vec![vec![15]],
            ..Evidence::default()
        };
        let back = Evidence::from_json(&e.to_json().to_string(), None).unwrap();
        assert_eq!(format!("{back:?}"), format!("{e:?}"));
        let t = Evidence {
            snp: Some(SnpEvidence {
                report: vec![1],
                cert_table: Some(vec![0; 24]),
                ..SnpEvidence::default()
            }),
            ..Evidence::default()
        };
        let back = Evidence::from_json(&t.to_json().to_string(), None).unwrap();
        assert_eq!(format!("{back:?}"), format!("{t:?}"));
    }

    #[test]
    fn a_table_with_separate_fields_is_ambiguous() {
        for extra in [
            r#""vek": {"hex": "00"}"#,
            r#""chain": [{"hex": "00"}]"#,
            r#""simulated_vcek_public_key": "04""#,
        ] {
            let j = format!(
                r#"{{"snp": {{"report": {{"hex": "00"}}, "cert_table": {{"hex": "00"}}, {extra}}}}}"#
            );
            let e = Evidence::from_json(&j, None).unwrap_err();
            assert!(e.contains("ambiguous"), "{e}");
        }
    }
}
