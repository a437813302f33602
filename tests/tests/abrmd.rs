//! tpm2-tools through the tpm2-abrmd resource manager (on a private D-Bus
//! session bus) in front of the TPM server: the flows that load objects and
//! need transient handles managed for them.

use rivet_tests::abrmd::Abrmd;
use rivet_tests::server::{Backend, TpmServer};
use rivet_tests::tools::{Tpm2, pcr};
use sha2::{Digest, Sha256};

fn through_abrmd(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let server = TpmServer::start(backend, &dir.path().join("tpm.state"));
    Tpm2::new(server.tcti()).ok(&["startup", "-c"]);
    let abrmd = Abrmd::start(&server.tcti());
    let tools = abrmd.tools();

    let r = tools.ok(&["getrandom", "16", "--hex"]);
    assert_eq!(r.trim().len(), 32, "{r}");

    let m = Sha256::digest(b"via abrmd");
    tools.ok(&["pcrextend", &format!("16:sha256={}", rivet_tests::hex(&m))]);
    let out = tools.ok(&["pcrread", "sha256:16"]);
    assert_eq!(
        pcr(&out, "sha256", 16),
        Sha256::digest([[0u8; 32].as_slice(), &m].concat()).to_vec()
    );

    tools.ok(&[
        "nvdefine",
        "0x1500050",
        "-C",
        "o",
        "-s",
        "16",
        "-a",
        "ownerread|ownerwrite",
    ]);
    tools.write("data", b"sixteen bytes!!!");
    tools.ok(&["nvwrite", "0x1500050", "-C", "o", "-i", "data"]);
    tools.ok(&["nvread", "0x1500050", "-C", "o", "-o", "back"]);
    assert_eq!(tools.read("back"), b"sixteen bytes!!!");

    // Primary, child key, load, sign, verify: transient objects that the
    // broker swaps in and out between tool runs.
    tools.ok(&["createprimary", "-C", "o", "-G", "ecc", "-c", "primary.ctx"]);
    tools.ok(&[
        "create",
        "-C",
        "primary.ctx",
        "-G",
        "ecc",
        "-u",
        "key.pub",
        "-r",
        "key.priv",
    ]);
    tools.ok(&[
        "load",
        "-C",
        "primary.ctx",
        "-u",
        "key.pub",
        "-r",
        "key.priv",
        "-c",
        "key.ctx",
    ]);
    tools.write("message", b"a message to sign");
    tools.ok(&[
        "sign", "-c", "key.ctx", "-g", "sha256", "-o", "sig", "message",
    ]);
    tools.ok(&[
        "verifysignature",
        "-c",
        "key.ctx",
        "-g",
        "sha256",
        "-m",
        "message",
        "-s",
        "sig",
    ]);
    tools.write("message", b"a different message");
    tools.fails(&[
        "verifysignature",
        "-c",
        "key.ctx",
        "-g",
        "sha256",
        "-m",
        "message",
        "-s",
        "sig",
    ]);
    // Seal and unseal.
    tools.write("secret", b"sealed secret");
    tools.ok(&[
        "create",
        "-C",
        "primary.ctx",
        "-i",
        "secret",
        "-u",
        "seal.pub",
        "-r",
        "seal.priv",
    ]);
    tools.ok(&[
        "load",
        "-C",
        "primary.ctx",
        "-u",
        "seal.pub",
        "-r",
        "seal.priv",
        "-c",
        "seal.ctx",
    ]);
    let unsealed = tools.ok(&["unseal", "-c", "seal.ctx"]);
    assert_eq!(unsealed, "sealed secret");
    // Nothing left loaded behind the broker's back.
    let transient = tools.ok(&["getcap", "handles-transient"]);
    assert!(
        transient.trim().is_empty() || !transient.contains("0x80"),
        "{transient}"
    );
    tools.ok(&["nvundefine", "0x1500050", "-C", "o"]);
}

#[test]
fn rivet_through_abrmd() {
    through_abrmd(Backend::Rivet);
}

#[test]
fn reference_through_abrmd() {
    through_abrmd(Backend::Reference);
}
