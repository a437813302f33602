//! tpm2-tools against the TPM server: sessions, policy, credentials and
//! duplication (engine part 3). HMAC sessions salted and bound, parameter
//! encryption both ways, a secret sealed to a PCR policy, PolicyOR and
//! PolicyAuthorize, EK + AK credential activation, duplication of a key to
//! another parent, and dictionary-attack lockout. As in `tpm2_tools.rs`,
//! every scenario runs against the Rivet engine and against the reference
//! TPM behind the same server code.

use std::process::Command;

use rivet_tests::on_both_backends;
use rivet_tests::scenario::{fail, fail_with, run, setup};
use rivet_tests::server::Backend;
use rivet_tests::tools::Tpm2;

fn openssl(tools: &Tpm2, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(tools.dir())
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

on_both_backends!(
    hmac_sessions_salted_and_bound,
    parameter_encryption_both_ways,
    seal_to_a_pcr_policy,
    policy_or_and_policy_authorize,
    ek_ak_credential_activation,
    duplicate_and_import_into_another_parent,
    dictionary_attack_lockout_and_reset,
    policy_nv_counter_timer_and_a_policy_only_index,
    policy_signed_by_an_external_key,
);

/// Salted HMAC sessions (RSA and ECC tpmKey) authorize the owner; a session
/// bound to the owner leaves its authValue out of the HMAC; a wrong owner
/// password in a bound-to-something-else session fails.
fn hmac_sessions_salted_and_bound(backend: Backend) {
    let setup = setup(backend);
    let tools = &setup.tools;
    run(tools, &["changeauth", "-c", "o", "ownerpw"]);
    run(
        tools,
        &[
            "createprimary",
            "-C",
            "o",
            "-P",
            "ownerpw",
            "-G",
            "ecc",
            "-c",
            "ecc.ctx",
        ],
    );
    run(
        tools,
        &[
            "createprimary",
            "-C",
            "o",
            "-P",
            "ownerpw",
            "-G",
            "rsa",
            "-c",
            "rsa.ctx",
        ],
    );
    for (i, key) in ["ecc.ctx", "rsa.ctx"].iter().enumerate() {
        let session = format!("salted{i}.ctx");
        run(
            tools,
            &[
                "startauthsession",
                "--hmac-session",
                "--tpmkey-context",
                key,
                "-S",
                &session,
            ],
        );
        let index = format!("{:#x}", 0x0150_0020 + i);
        run(
            tools,
            &[
                "nvdefine",
                &index,
                "-C",
                "o",
                "-s",
                "8",
                "-a",
                "ownerread|ownerwrite",
                "-P",
                &format!("session:{session}+ownerpw"),
            ],
        );
        // A wrong password through the same salted session is refused.
        fail(
            tools,
            &[
                "nvundefine",
                &index,
                "-C",
                "o",
                "-P",
                &format!("session:{session}+wrong"),
            ],
        );
        tools.ok(&["flushcontext", &session]);
    }
    // Bound to the owner: the HMAC needs no authValue.
    run(
        tools,
        &[
            "startauthsession",
            "--hmac-session",
            "--bind-context",
            "o",
            "--bind-auth",
            "ownerpw",
            "--tpmkey-context",
            "ecc.ctx",
            "-S",
            "bound.ctx",
        ],
    );
    run(
        tools,
        &[
            "nvundefine",
            "0x1500020",
            "-C",
            "o",
            "-P",
            "session:bound.ctx",
        ],
    );
    tools.ok(&["flushcontext", "bound.ctx"]);
    let caps = tools.ok(&["getcap", "handles-nv-index"]);
    assert!(!caps.contains("0x1500020"), "{caps}");
    assert!(caps.contains("0x1500021"), "{caps}");
}

/// A salted session with decrypt and encrypt: NV_Write's data goes in
/// encrypted, NV_Read's and GetRandom's come back encrypted, and the tools
/// see the plain values.
fn parameter_encryption_both_ways(backend: Backend) {
    let setup = setup(backend);
    let tools = &setup.tools;
    run(
        tools,
        &["createprimary", "-C", "o", "-G", "ecc", "-c", "ecc.ctx"],
    );
    run(
        tools,
        &[
            "startauthsession",
            "--hmac-session",
            "--tpmkey-context",
            "ecc.ctx",
            "-S",
            "enc.ctx",
        ],
    );
    tools.ok(&[
        "sessionconfig",
        "enc.ctx",
        "--enable-encrypt",
        "--enable-decrypt",
    ]);
    let out = tools.ok(&["getrandom", "-S", "enc.ctx", "--hex", "32"]);
    assert_eq!(out.trim().len(), 64, "{out}");
    run(
        tools,
        &[
            "nvdefine",
            "0x1500030",
            "-C",
            "o",
            "-s",
            "16",
            "-a",
            "ownerread|ownerwrite",
        ],
    );
    tools.write("data", b"sixteen bytes!!!");
    run(
        tools,
        &[
            "nvwrite",
            "0x1500030",
            "-C",
            "o",
            "-i",
            "data",
            "-P",
            "session:enc.ctx",
        ],
    );
    run(
        tools,
        &[
            "nvread",
            "0x1500030",
            "-C",
            "o",
            "-o",
            "back",
            "-P",
            "session:enc.ctx",
        ],
    );
    assert_eq!(tools.read("back"), b"sixteen bytes!!!");
    // An XOR session too (tpm2-tools picks AES-CFB; the unsalted default works as well).
    run(
        tools,
        &["startauthsession", "--hmac-session", "-S", "plain.ctx"],
    );
    tools.ok(&["sessionconfig", "plain.ctx", "--enable-encrypt"]);
    let out = tools.ok(&["getrandom", "-S", "plain.ctx", "--hex", "16"]);
    assert_eq!(out.trim().len(), 32, "{out}");
    tools.ok(&["flushcontext", "enc.ctx"]);
    tools.ok(&["flushcontext", "plain.ctx"]);
}

/// PolicyPCR over PCR 16 (resettable): unseal works, then fails after an extend.
fn seal_to_a_pcr_policy(backend: Backend) {
    let setup = setup(backend);
    let tools = &setup.tools;
    run(tools, &["pcrreset", "16"]);
    run(
        tools,
        &[
            "createpolicy",
            "--policy-pcr",
            "-l",
            "sha256:16",
            "-L",
            "pcr.policy",
        ],
    );
    run(
        tools,
        &["createprimary", "-C", "o", "-G", "ecc", "-c", "prim.ctx"],
    );
    tools.write("secret", b"sealed to PCR 16");
    run(
        tools,
        &[
            "create",
            "-C",
            "prim.ctx",
            "-L",
            "pcr.policy",
            "-a",
            "fixedtpm|fixedparent",
            "-i",
            "secret",
            "-u",
            "seal.pub",
            "-r",
            "seal.priv",
        ],
    );
    let load = [
        "load",
        "-C",
        "prim.ctx",
        "-u",
        "seal.pub",
        "-r",
        "seal.priv",
        "-c",
        "seal.ctx",
    ];
    run(tools, &load);
    run(
        tools,
        &[
            "unseal",
            "-c",
            "seal.ctx",
            "-p",
            "pcr:sha256:16",
            "-o",
            "out",
        ],
    );
    assert_eq!(tools.read("out"), b"sealed to PCR 16");
    // A password is not enough (userWithAuth CLEAR).
    fail(tools, &["unseal", "-c", "seal.ctx", "-o", "out2"]);
    run(
        tools,
        &["pcrextend", &format!("16:sha256={}", "ab".repeat(32))],
    );
    fail(
        tools,
        &[
            "unseal",
            "-c",
            "seal.ctx",
            "-p",
            "pcr:sha256:16",
            "-o",
            "out3",
        ],
    );
}

/// A secret under PolicyOR(PolicyPCR, PolicySecret(owner)), then one under
/// PolicyAuthorize whose approved PCR policy an external key signed.
fn policy_or_and_policy_authorize(backend: Backend) {
    let setup = setup(backend);
    let tools = &setup.tools;
    run(tools, &["pcrreset", "16"]);
    run(
        tools,
        &["createprimary", "-C", "o", "-G", "ecc", "-c", "prim.ctx"],
    );
    // The two branches and their OR, computed in trial sessions.
    run(
        tools,
        &[
            "createpolicy",
            "--policy-pcr",
            "-l",
            "sha256:16",
            "-L",
            "a.policy",
        ],
    );
    run(tools, &["startauthsession", "-S", "trial.ctx"]);
    run(
        tools,
        &[
            "policysecret",
            "-S",
            "trial.ctx",
            "-c",
            "o",
            "-L",
            "b.policy",
        ],
    );
    tools.ok(&["flushcontext", "trial.ctx"]);
    run(tools, &["startauthsession", "-S", "trial.ctx"]);
    run(
        tools,
        &[
            "policyor",
            "-S",
            "trial.ctx",
            "-L",
            "or.policy",
            "sha256:a.policy,b.policy",
        ],
    );
    tools.ok(&["flushcontext", "trial.ctx"]);
    tools.write("secret", b"either branch");
    run(
        tools,
        &[
            "create",
            "-C",
            "prim.ctx",
            "-L",
            "or.policy",
            "-a",
            "fixedtpm|fixedparent",
            "-i",
            "secret",
            "-u",
            "or.pub",
            "-r",
            "or.priv",
        ],
    );
    run(
        tools,
        &[
            "load", "-C", "prim.ctx", "-u", "or.pub", "-r", "or.priv", "-c", "or.ctx",
        ],
    );
    let unseal_with = |branch: &str| {
        run(
            tools,
            &["startauthsession", "--policy-session", "-S", "s.ctx"],
        );
        if branch == "pcr" {
            run(tools, &["policypcr", "-S", "s.ctx", "-l", "sha256:16"]);
        } else {
            run(tools, &["policysecret", "-S", "s.ctx", "-c", "o"]);
        }
        let or = tools.output(&["policyor", "-S", "s.ctx", "sha256:a.policy,b.policy"]);
        let ok = or.status.success()
            && tools
                .output(&["unseal", "-c", "or.ctx", "-p", "session:s.ctx", "-o", "out"])
                .status
                .success();
        tools.ok(&["flushcontext", "-t"]);
        tools.ok(&["flushcontext", "s.ctx"]);
        ok
    };
    assert!(unseal_with("pcr"));
    assert_eq!(tools.read("out"), b"either branch");
    assert!(unseal_with("secret"));
    run(
        tools,
        &["pcrextend", &format!("16:sha256={}", "cd".repeat(32))],
    );
    assert!(!unseal_with("pcr"), "the PCR branch after an extend");
    assert!(unseal_with("secret"), "the owner branch still works");

    // PolicyAuthorize: the object's policy names a signing key; a PCR policy
    // signed by it is accepted through its VerifySignature ticket.
    openssl(tools, &["genrsa", "-out", "signer.pem", "2048"]);
    openssl(
        tools,
        &[
            "rsa",
            "-in",
            "signer.pem",
            "-pubout",
            "-out",
            "signer.pub.pem",
        ],
    );
    run(
        tools,
        &[
            "loadexternal",
            "-G",
            "rsa",
            "-C",
            "o",
            "-u",
            "signer.pub.pem",
            "-c",
            "signer.ctx",
            "-n",
            "signer.name",
        ],
    );
    run(tools, &["startauthsession", "-S", "trial.ctx"]);
    run(
        tools,
        &[
            "policyauthorize",
            "-S",
            "trial.ctx",
            "-L",
            "authorize.policy",
            "-n",
            "signer.name",
        ],
    );
    tools.ok(&["flushcontext", "trial.ctx"]);
    run(
        tools,
        &[
            "createpolicy",
            "--policy-pcr",
            "-l",
            "sha256:16",
            "-L",
            "now.policy",
        ],
    );
    openssl(
        tools,
        &[
            "dgst",
            "-sha256",
            "-sign",
            "signer.pem",
            "-out",
            "now.sig",
            "now.policy",
        ],
    );
    tools.write("secret2", b"authorized policy");
    run(
        tools,
        &[
            "create",
            "-C",
            "prim.ctx",
            "-L",
            "authorize.policy",
            "-a",
            "fixedtpm|fixedparent",
            "-i",
            "secret2",
            "-u",
            "auth.pub",
            "-r",
            "auth.priv",
        ],
    );
    let verify_and_unseal = |sig: &str| {
        let verified = tools
            .output(&[
                "verifysignature",
                "-c",
                "signer.ctx",
                "-g",
                "sha256",
                "-m",
                "now.policy",
                "-s",
                sig,
                "-f",
                "rsassa",
                "-t",
                "verified.tkt",
            ])
            .status
            .success();
        tools.ok(&["flushcontext", "-t"]);
        if !verified {
            return false;
        }
        run(
            tools,
            &["startauthsession", "--policy-session", "-S", "s.ctx"],
        );
        run(tools, &["policypcr", "-S", "s.ctx", "-l", "sha256:16"]);
        let ok = tools
            .output(&[
                "policyauthorize",
                "-S",
                "s.ctx",
                "-i",
                "now.policy",
                "-n",
                "signer.name",
                "-t",
                "verified.tkt",
            ])
            .status
            .success()
            && {
                tools.ok(&["flushcontext", "-t"]);
                tools.ok(&[
                    "load",
                    "-C",
                    "prim.ctx",
                    "-u",
                    "auth.pub",
                    "-r",
                    "auth.priv",
                    "-c",
                    "auth.ctx",
                ]);
                tools
                    .output(&[
                        "unseal",
                        "-c",
                        "auth.ctx",
                        "-p",
                        "session:s.ctx",
                        "-o",
                        "out",
                    ])
                    .status
                    .success()
            };
        tools.ok(&["flushcontext", "-t"]);
        tools.ok(&["flushcontext", "s.ctx"]);
        ok
    };
    assert!(verify_and_unseal("now.sig"));
    assert_eq!(tools.read("out"), b"authorized policy");
    // A signature over something else does not verify.
    tools.write("other", b"another policy");
    openssl(
        tools,
        &[
            "dgst",
            "-sha256",
            "-sign",
            "signer.pem",
            "-out",
            "other.sig",
            "other",
        ],
    );
    assert!(!verify_and_unseal("other.sig"));
}

/// ActivateCredential with the EK authorized by PolicySecret(endorsement).
fn activate(tools: &Tpm2, blob: &str, succeeds: bool) {
    run(
        tools,
        &["startauthsession", "--policy-session", "-S", "ek.session"],
    );
    run(tools, &["policysecret", "-S", "ek.session", "-c", "e"]);
    let args = [
        "activatecredential",
        "-c",
        "ak.ctx",
        "-C",
        "ek.ctx",
        "-i",
        blob,
        "-o",
        "got",
        "-P",
        "session:ek.session",
    ];
    if succeeds {
        run(tools, &args);
    } else {
        // The outer HMAC binds the credential to the AK's Name: TPM_RC_INTEGRITY (credentialBlob).
        fail_with(tools, 0x1df, &args);
    }
    tools.ok(&["flushcontext", "ek.session"]);
}

/// createek + createak, then makecredential (by the TPM, with the EK's
/// public key) and activatecredential (EK policy: PolicySecret(endorsement)).
fn ek_ak_credential_activation(backend: Backend) {
    let setup = setup(backend);
    let tools = &setup.tools;
    tools.write("secret", b"a credential!");
    for alg in ["rsa", "ecc"] {
        run(
            tools,
            &["createek", "-c", "ek.ctx", "-G", alg, "-u", "ek.pub"],
        );
        let sig = if alg == "rsa" { "rsassa" } else { "ecdsa" };
        run(
            tools,
            &[
                "createak", "-C", "ek.ctx", "-c", "ak.ctx", "-G", alg, "-g", "sha256", "-s", sig,
                "-u", "ak.pub", "-n", "ak.name",
            ],
        );
        let name: String = tools
            .read("ak.name")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        run(
            tools,
            &[
                "makecredential",
                "-u",
                "ek.pub",
                "-s",
                "secret",
                "-n",
                &name,
                "-o",
                "cred.out",
            ],
        );
        activate(tools, "cred.out", true);
        assert_eq!(tools.read("got"), b"a credential!", "{alg}");
        // A credential made for another Name does not activate.
        let other = format!("000b{}", "11".repeat(32));
        run(
            tools,
            &[
                "makecredential",
                "-u",
                "ek.pub",
                "-s",
                "secret",
                "-n",
                &other,
                "-o",
                "cred2.out",
            ],
        );
        activate(tools, "cred2.out", false);
    }
}

/// A key whose policy is PolicyCommandCode(Duplicate) is duplicated to a
/// second parent (without and with an inner wrapper), imported there,
/// loaded, and signs.
fn duplicate_and_import_into_another_parent(backend: Backend) {
    let setup = setup(backend);
    let tools = &setup.tools;
    run(
        tools,
        &["createprimary", "-C", "o", "-G", "ecc", "-c", "src.ctx"],
    );
    run(
        tools,
        &["createprimary", "-C", "o", "-G", "rsa", "-c", "dst.ctx"],
    );
    run(tools, &["startauthsession", "-S", "trial.ctx"]);
    run(
        tools,
        &[
            "policycommandcode",
            "-S",
            "trial.ctx",
            "-L",
            "dup.policy",
            "TPM2_CC_Duplicate",
        ],
    );
    tools.ok(&["flushcontext", "trial.ctx"]);
    run(
        tools,
        &[
            "create",
            "-C",
            "src.ctx",
            "-G",
            "ecc",
            "-L",
            "dup.policy",
            "-a",
            "sensitivedataorigin|userwithauth|sign",
            "-u",
            "key.pub",
            "-r",
            "key.priv",
        ],
    );
    tools.write("msg", b"signed by the imported key");
    for (wrapper, extra) in [("null", None), ("aes", Some("inner.key"))] {
        run(
            tools,
            &[
                "load", "-C", "src.ctx", "-u", "key.pub", "-r", "key.priv", "-c", "key.ctx",
            ],
        );
        // A password cannot authorize the DUP role.
        let mut dup = vec![
            "duplicate",
            "-C",
            "dst.ctx",
            "-c",
            "key.ctx",
            "-G",
            wrapper,
            "-r",
            "dup.priv",
            "-s",
            "dup.seed",
        ];
        if let Some(k) = extra {
            dup.extend(["-o", k]);
        }
        fail(tools, &dup);
        run(
            tools,
            &["startauthsession", "--policy-session", "-S", "s.ctx"],
        );
        run(
            tools,
            &["policycommandcode", "-S", "s.ctx", "TPM2_CC_Duplicate"],
        );
        dup.extend(["-p", "session:s.ctx"]);
        run(tools, &dup);
        tools.ok(&["flushcontext", "s.ctx"]);
        let mut import = vec![
            "import",
            "-C",
            "dst.ctx",
            "-u",
            "key.pub",
            "-i",
            "dup.priv",
            "-s",
            "dup.seed",
            "-r",
            "imported.priv",
        ];
        if let Some(k) = extra {
            import.extend(["-k", k]);
        }
        run(tools, &import);
        run(
            tools,
            &[
                "load",
                "-C",
                "dst.ctx",
                "-u",
                "key.pub",
                "-r",
                "imported.priv",
                "-c",
                "imp.ctx",
            ],
        );
        run(
            tools,
            &["sign", "-c", "imp.ctx", "-g", "sha256", "-o", "sig", "msg"],
        );
        run(
            tools,
            &[
                "verifysignature",
                "-c",
                "imp.ctx",
                "-g",
                "sha256",
                "-m",
                "msg",
                "-s",
                "sig",
            ],
        );
        // The blob does not import under the original parent.
        let mut wrong = import.clone();
        wrong[2] = "src.ctx";
        fail(tools, &wrong);
    }
}

/// DA parameters set to 2 tries; wrong passwords on a DA-protected object
/// lock the TPM out (TPM_RC_LOCKOUT even with the right password) until
/// DictionaryAttackLockReset with lockoutAuth.
fn dictionary_attack_lockout_and_reset(backend: Backend) {
    let setup = setup(backend);
    let tools = &setup.tools;
    run(
        tools,
        &[
            "dictionarylockout",
            "-s",
            "-n",
            "2",
            "-t",
            "1000",
            "-l",
            "1000",
        ],
    );
    run(
        tools,
        &["createprimary", "-C", "o", "-G", "ecc", "-c", "prim.ctx"],
    );
    tools.write("secret", b"da protected");
    run(
        tools,
        &[
            "create", "-C", "prim.ctx", "-i", "secret", "-p", "right", "-u", "s.pub", "-r",
            "s.priv",
        ],
    );
    run(
        tools,
        &[
            "load", "-C", "prim.ctx", "-u", "s.pub", "-r", "s.priv", "-c", "s.ctx",
        ],
    );
    let wrong = ["unseal", "-c", "s.ctx", "-p", "wrong", "-o", "out"];
    let right = ["unseal", "-c", "s.ctx", "-p", "right", "-o", "out"];
    fail_with(tools, 0x98e, &wrong);
    fail_with(tools, 0x98e, &wrong);
    fail_with(tools, 0x921, &right);
    let props = tools.ok(&["getcap", "properties-variable"]);
    assert!(props.contains("inLockout:                 1"), "{props}");
    run(tools, &["dictionarylockout", "-c"]);
    run(tools, &right);
    assert_eq!(tools.read("out"), b"da protected");
    // A wrong lockoutAuth disables lockoutAuth itself.
    run(tools, &["changeauth", "-c", "l", "lockpw"]);
    fail_with(tools, 0x98e, &["dictionarylockout", "-c", "-p", "wrongpw"]);
    fail_with(tools, 0x921, &["dictionarylockout", "-c", "-p", "lockpw"]);
}

/// A secret sealed to PolicyNV (an NV value equal to an operand) unseals
/// until the value changes; PolicyCounterTimer holds for a small Clock
/// bound; an index with only POLICYREAD/POLICYWRITE refuses passwords and
/// takes a PolicySecret(owner) session.
fn policy_nv_counter_timer_and_a_policy_only_index(backend: Backend) {
    let setup = setup(backend);
    let tools = &setup.tools;
    run(
        tools,
        &["createprimary", "-C", "o", "-G", "ecc", "-c", "prim.ctx"],
    );
    run(
        tools,
        &[
            "nvdefine",
            "0x1500041",
            "-C",
            "o",
            "-s",
            "4",
            "-a",
            "ownerread|ownerwrite",
        ],
    );
    tools.write("v1", &[0, 0, 0, 1]);
    tools.write("v2", &[0, 0, 0, 2]);
    run(tools, &["nvwrite", "0x1500041", "-C", "o", "-i", "v1"]);
    run(tools, &["startauthsession", "-S", "trial.ctx"]);
    run(
        tools,
        &[
            "policynv",
            "-S",
            "trial.ctx",
            "-i",
            "v1",
            "-C",
            "o",
            "-L",
            "nv.policy",
            "0x1500041",
            "eq",
        ],
    );
    tools.ok(&["flushcontext", "trial.ctx"]);
    tools.write("secret", b"while NV says 1");
    run(
        tools,
        &[
            "create",
            "-C",
            "prim.ctx",
            "-L",
            "nv.policy",
            "-a",
            "fixedtpm|fixedparent",
            "-i",
            "secret",
            "-u",
            "nv.pub",
            "-r",
            "nv.priv",
        ],
    );
    let unseal = || {
        run(
            tools,
            &["startauthsession", "--policy-session", "-S", "s.ctx"],
        );
        let ok = tools
            .output(&[
                "policynv",
                "-S",
                "s.ctx",
                "-i",
                "v1",
                "-C",
                "o",
                "0x1500041",
                "eq",
            ])
            .status
            .success()
            && {
                tools.ok(&[
                    "load", "-C", "prim.ctx", "-u", "nv.pub", "-r", "nv.priv", "-c", "nv.ctx",
                ]);
                tools
                    .output(&["unseal", "-c", "nv.ctx", "-p", "session:s.ctx", "-o", "out"])
                    .status
                    .success()
            };
        tools.ok(&["flushcontext", "-t"]);
        tools.ok(&["flushcontext", "s.ctx"]);
        ok
    };
    assert!(unseal());
    assert_eq!(tools.read("out"), b"while NV says 1");
    run(tools, &["nvwrite", "0x1500041", "-C", "o", "-i", "v2"]);
    assert!(!unseal(), "PolicyNV after the value changed");

    // Clock is far below 2^40 ms right after startup.
    run(
        tools,
        &["startauthsession", "--policy-session", "-S", "t.ctx"],
    );
    run(
        tools,
        &[
            "policycountertimer",
            "-S",
            "t.ctx",
            "--ult",
            "clock=1099511627776",
        ],
    );
    fail(
        tools,
        &[
            "policycountertimer",
            "-S",
            "t.ctx",
            "--ugt",
            "clock=1099511627776",
        ],
    );
    tools.ok(&["flushcontext", "t.ctx"]);

    // A policy-only index: PolicySecret(owner) reads and writes it.
    run(tools, &["startauthsession", "-S", "trial.ctx"]);
    run(
        tools,
        &[
            "policysecret",
            "-S",
            "trial.ctx",
            "-c",
            "o",
            "-L",
            "owner.policy",
        ],
    );
    tools.ok(&["flushcontext", "trial.ctx"]);
    run(
        tools,
        &[
            "nvdefine",
            "0x1500042",
            "-C",
            "o",
            "-s",
            "4",
            "-a",
            "policyread|policywrite",
            "-L",
            "owner.policy",
        ],
    );
    fail_with(
        tools,
        0x12f,
        &["nvwrite", "0x1500042", "-C", "0x1500042", "-i", "v2"],
    );
    for (tool, extra) in [("nvwrite", ["-i", "v2"]), ("nvread", ["-o", "got"])] {
        run(
            tools,
            &["startauthsession", "--policy-session", "-S", "s.ctx"],
        );
        run(tools, &["policysecret", "-S", "s.ctx", "-c", "o"]);
        let mut args = vec![tool, "0x1500042", "-C", "0x1500042", "-P", "session:s.ctx"];
        args.extend(extra);
        run(tools, &args);
        tools.ok(&["flushcontext", "s.ctx"]);
    }
    assert_eq!(tools.read("got"), [0, 0, 0, 2]);
}

/// PolicySigned: an external RSA key signs aHash = SHA-256(nonceTPM ‖
/// expiration ‖ cpHashA ‖ policyRef), here with everything empty and
/// expiration 0 (four zero bytes); a secret sealed to that policy unseals;
/// a signature by another key does not satisfy it.
fn policy_signed_by_an_external_key(backend: Backend) {
    let setup = setup(backend);
    let tools = &setup.tools;
    openssl(tools, &["genrsa", "-out", "signer.pem", "2048"]);
    openssl(
        tools,
        &[
            "rsa",
            "-in",
            "signer.pem",
            "-pubout",
            "-out",
            "signer.pub.pem",
        ],
    );
    openssl(tools, &["genrsa", "-out", "other.pem", "2048"]);
    tools.write("zero", &[0, 0, 0, 0]);
    openssl(
        tools,
        &[
            "dgst",
            "-sha256",
            "-sign",
            "signer.pem",
            "-out",
            "good.sig",
            "zero",
        ],
    );
    openssl(
        tools,
        &[
            "dgst",
            "-sha256",
            "-sign",
            "other.pem",
            "-out",
            "bad.sig",
            "zero",
        ],
    );
    let load = [
        "loadexternal",
        "-G",
        "rsa",
        "-C",
        "o",
        "-u",
        "signer.pub.pem",
        "-c",
        "signer.ctx",
    ];
    run(
        tools,
        &["createprimary", "-C", "o", "-G", "ecc", "-c", "prim.ctx"],
    );
    tools.ok(&load);
    run(tools, &["startauthsession", "-S", "trial.ctx"]);
    run(
        tools,
        &[
            "policysigned",
            "-S",
            "trial.ctx",
            "-g",
            "sha256",
            "-s",
            "good.sig",
            "-f",
            "rsassa",
            "-c",
            "signer.ctx",
            "-L",
            "signed.policy",
        ],
    );
    tools.ok(&["flushcontext", "trial.ctx"]);
    tools.write("secret", b"released by a signature");
    run(
        tools,
        &[
            "create",
            "-C",
            "prim.ctx",
            "-L",
            "signed.policy",
            "-a",
            "fixedtpm|fixedparent",
            "-i",
            "secret",
            "-u",
            "s.pub",
            "-r",
            "s.priv",
        ],
    );
    let unseal = |sig: &str| {
        tools.ok(&load);
        run(
            tools,
            &["startauthsession", "--policy-session", "-S", "s.ctx"],
        );
        let ok = tools
            .output(&[
                "policysigned",
                "-S",
                "s.ctx",
                "-g",
                "sha256",
                "-s",
                sig,
                "-f",
                "rsassa",
                "-c",
                "signer.ctx",
            ])
            .status
            .success()
            && {
                tools.ok(&["flushcontext", "-t"]);
                tools.ok(&[
                    "load", "-C", "prim.ctx", "-u", "s.pub", "-r", "s.priv", "-c", "obj.ctx",
                ]);
                tools
                    .output(&[
                        "unseal",
                        "-c",
                        "obj.ctx",
                        "-p",
                        "session:s.ctx",
                        "-o",
                        "out",
                    ])
                    .status
                    .success()
            };
        tools.ok(&["flushcontext", "-t"]);
        tools.ok(&["flushcontext", "s.ctx"]);
        ok
    };
    assert!(!unseal("bad.sig"), "another key's signature");
    assert!(unseal("good.sig"));
    assert_eq!(tools.read("out"), b"released by a signature");
}
