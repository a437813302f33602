//! Credential protection (Part 3 §12.5, §12.6): MakeCredential and
//! ActivateCredential, by which a verifier learns that a key (an AK) is
//! loaded in the same TPM as an EK: the credential is sealed to the EK's
//! public key and bound to the AK's Name (Part 1 §24 "credential protection").

use zeroize::Zeroizing;

use crate::command::object::key_at;
use crate::dispatch::{Call, Ctx};
use crate::key::{self, KeyObject, ParentProtection, oa};
use crate::rc::{self, CmdResult, Locate, Rc};
use crate::spec::{self, alg};

const IDENTITY: &[u8] = b"IDENTITY";
/// TPM2_ID_OBJECT and TPM2B_ENCRYPTED_SECRET capacities.
const MAX_ID_OBJECT: usize = 2 + spec::MAX_DIGEST + 2 + spec::MAX_DIGEST;
const MAX_SECRET: usize = key::MAX_RSA_BYTES;

/// An asymmetric decryption key with a symmetric definition (the EK shape).
fn credential_key(k: &KeyObject) -> CmdResult<()> {
    if !matches!(k.public.kind, alg::RSA | alg::ECC) {
        return Err(Rc::handle(rc::TYPE, 2));
    }
    if !k.public.has(oa::DECRYPT) {
        return Err(Rc::handle(rc::ATTRIBUTES, 2));
    }
    Ok(())
}

pub fn make_credential(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let credential = call.params.tpm2b(spec::MAX_DIGEST).p(1)?.to_vec();
    let name = call.params.tpm2b(spec::MAX_DIGEST + 2).p(2)?.to_vec();
    call.done()?;
    let k = key_at(cx, call.handle(0), 1)?;
    if !matches!(k.public.kind, alg::RSA | alg::ECC) || !k.public.has(oa::DECRYPT) {
        return Err(Rc::handle(rc::TYPE, 1));
    }
    if credential.len() > k.public.hash().size() {
        return Err(Rc::param(rc::SIZE, 1));
    }
    let sym = k.public.sym().ok_or(Rc::handle(rc::TYPE, 1))?;
    let (seed, secret) = key::encrypt_seed(cx, &k, IDENTITY).map_err(|e| Rc::handle(e.base, 1))?;
    let protection = ParentProtection {
        name_alg: k.public.hash(),
        seed: &seed,
        sym,
    };
    let blob = protection.protect(&name, &credential)?;
    call.out.tpm2b(&blob);
    call.out.tpm2b(&secret);
    Ok(())
}

pub fn activate_credential(cx: &mut Ctx, call: &mut Call) -> CmdResult<()> {
    let blob = call.params.tpm2b(MAX_ID_OBJECT).p(1)?.to_vec();
    let secret = call.params.tpm2b(MAX_SECRET).p(2)?.to_vec();
    call.done()?;
    let object = key_at(cx, call.handle(0), 1)?;
    let k = key_at(cx, call.handle(1), 2)?;
    credential_key(&k)?;
    let sym = k.public.sym().ok_or(Rc::handle(rc::TYPE, 2))?;
    let seed: Zeroizing<alloc::vec::Vec<u8>> = key::decrypt_seed(cx, &k, &secret, IDENTITY).p(2)?;
    let protection = ParentProtection {
        name_alg: k.public.hash(),
        seed: &seed,
        sym,
    };
    let cert = protection.unprotect(&object.name, &blob).p(1)?;
    if cert.len() > spec::MAX_DIGEST {
        return Err(Rc::param(rc::SIZE, 1));
    }
    call.out.tpm2b(&cert);
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::command::object::tests::*;
    use crate::testutil::{Cmd, rc_of, started};

    const MAKE: u32 = 0x168;
    const ACTIVATE: u32 = 0x147;

    #[test]
    fn make_and_activate_credential_with_rsa_and_ecc_eks() {
        let mut tpm = started();
        let (_, ak, _, rest) = primary(&mut tpm, OWNER, b"", &ecc_signer(AK_ATTRS));
        // The AK's Name is the last TPM2B of the CreatePrimary response.
        let (_, p) = tpm2b(&rest, 0);
        let (_, p) = tpm2b(&rest, p);
        let (_, p) = tpm2b(&rest, p + 6);
        let name = tpm2b(&rest, p).0;
        assert_eq!(name.len(), 34);
        // An owner-hierarchy decryption key stands in for the EK (whose
        // adminWithPolicy needs a PolicySecret session).
        let srk_rsa = template(
            0x01,
            SRK_ATTRS,
            &[0, 6, 0, 0x80, 0, 0x43, 0, 0x10, 8, 0, 0, 0, 0, 0, 0, 0],
        );
        for parent in [srk_ecc(), srk_rsa] {
            let (rc, ek, _, _) = primary(&mut tpm, OWNER, b"", &parent);
            assert_eq!(rc, 0, "{rc:#x}");
            let resp = tpm.execute(
                0,
                &Cmd::new(MAKE)
                    .h(ek)
                    .tpm2b(b"the credential")
                    .tpm2b(&name)
                    .bytes(),
            );
            assert_eq!(rc_of(&resp), 0);
            let (blob, p) = tpm2b(&resp, 10);
            let (secret, _) = tpm2b(&resp, p);
            let activate = |blob: &[u8], secret: &[u8]| {
                Cmd::new(ACTIVATE)
                    .h(ak)
                    .h(ek)
                    .pw(b"")
                    .pw(b"")
                    .tpm2b(blob)
                    .tpm2b(secret)
            };
            let (rc, _, body) = split(&tpm.execute(0, &activate(&blob, &secret).bytes()), false);
            assert_eq!(rc, 0, "{rc:#x}");
            assert_eq!(tpm2b(&body, 0).0, b"the credential");
            // Bound to the AK's Name: another object cannot activate it.
            let other = Cmd::new(ACTIVATE)
                .h(ek)
                .h(ek)
                .pw(b"")
                .pw(b"")
                .tpm2b(&blob)
                .tpm2b(&secret);
            assert_eq!(rc_of(&tpm.execute(0, &other.bytes())), 0x1DF);
            let mut bad = blob.clone();
            let n = bad.len();
            bad[n - 1] ^= 1;
            assert_eq!(
                rc_of(&tpm.execute(0, &activate(&bad, &secret).bytes())),
                0x1DF
            );
            flush(&mut tpm, ek);
        }
    }
}
