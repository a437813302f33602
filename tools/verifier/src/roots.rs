//! Built-in trust anchors: AMD's ARKs (Milan, Genoa, Turin) and Intel's SGX
//! Root CA, embedded as data with their SHA-256 fingerprints cross-checked.

use crate::cert::{Cert, parse_certs};

const ARK_PEMS: [(&str, &str, &str); 3] = [
    (
        "Milan",
        include_str!("../roots/ark_milan.pem"),
        "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd",
    ),
    (
        "Genoa",
        include_str!("../roots/ark_genoa.pem"),
        "4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1",
    ),
    (
        "Turin",
        include_str!("../roots/ark_turin.pem"),
        "1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a",
    ),
];

const INTEL_ROOT_PEM: &str = include_str!("../roots/intel_sgx_root_ca.pem");
const INTEL_ROOT_SHA256: &str = "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3";

fn load(pem: &str, fp: &str) -> Option<Cert> {
    let c = parse_certs(pem.as_bytes()).ok()?.into_iter().next()?;
    // A root whose bytes do not hash to the recorded fingerprint is not trusted.
    (hex::encode(c.fingerprint()) == fp).then_some(c)
}

/// The AMD ARKs whose fingerprints match.
pub fn amd_arks() -> Vec<Cert> {
    ARK_PEMS
        .iter()
        .filter_map(|(_, pem, fp)| load(pem, fp))
        .collect()
}

/// The Intel SGX Root CA.
pub fn intel_sgx_root() -> Option<Cert> {
    load(INTEL_ROOT_PEM, INTEL_ROOT_SHA256)
}

#[cfg(test)]
mod tests {
    #[test]
    fn embedded_roots_match_their_fingerprints() {
        assert_eq!(super::amd_arks().len(), 3);
        assert!(super::intel_sgx_root().is_some());
        for a in super::amd_arks() {
            assert!(a.is_self_signed(), "{}", a.cn());
        }
    }
}
