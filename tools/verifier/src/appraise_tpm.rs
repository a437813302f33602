//! vTPM checks: the AK quote (magic, type, nonce, signature), the PCR digest,
//! the AK's binding to the manifest, the event log against the PCRs, and the
//! EK/AK certificates' keys.

use crate::appraisal::Appraisal;
use crate::evidence::Evidence;
use crate::tpm;

pub fn tpm(a: &mut Appraisal, ev: &Evidence) {
    let ak = ev.ak_public.as_deref().map(tpm::parse_public);
    let attest = ev.tpm_quote.as_ref().map(|q| tpm::parse_attest(&q.attest));

    match (&ev.tpm_quote, &attest, &ak) {
        (None, _, _) | (Some(_), None, _) => {
            for c in ["tpm.quote_signature", "tpm.nonce", "tpm.pcr_digest"] {
                a.not_run(c, "no TPM quote in the bundle");
            }
        }
        (Some(_), _, None) => {
            for c in ["tpm.quote_signature", "tpm.nonce", "tpm.pcr_digest"] {
                a.not_run(c, "no AK public area to authenticate the quote");
            }
        }
        (Some(_), Some(Err(e)), _) | (Some(_), _, Some(Err(e))) => {
            a.fail("tpm.quote_signature", e.clone());
            a.fail("tpm.nonce", "the quote is not authentic");
            a.fail("tpm.pcr_digest", "the quote is not authentic");
        }
        (Some(q), Some(Ok(at)), Some(Ok(key))) => {
            let hash = tpm::verify_signature(key, &q.attest, &q.signature);
            match &hash {
                Ok(h) => a.pass(
                    "tpm.quote_signature",
                    format!("TPMS_ATTEST (quote) signed by the AK ({})", h.name()),
                ),
                Err(e) => a.fail("tpm.quote_signature", e.clone()),
            }
            let nonce = q.nonce.as_ref().or(ev.nonce.as_ref());
            match nonce {
                Some(n) if *n == at.extra_data => a.pass("tpm.nonce", "extraData equals the nonce"),
                Some(_) => a.fail("tpm.nonce", "extraData does not equal the nonce"),
                None => a.not_run("tpm.nonce", "no nonce in the bundle"),
            }
            match (&ev.pcrs, &hash) {
                (Some(p), Ok(h)) => a.record("tpm.pcr_digest", tpm::check_pcr_digest(at, p, *h)),
                (None, _) => a.not_run("tpm.pcr_digest", "no PCR values in the bundle"),
                (_, Err(_)) => a.fail(
                    "tpm.pcr_digest",
                    "the quote is not authentic, its digest means nothing",
                ),
            }
        }
    }

    // The AK public area must be inside the manifest REPORT_DATA binds.
    match (&ev.ak_public, &ev.manifest) {
        (Some(ak), Some(m))
            if tpm::parse_public(ak).is_ok() && m.windows(ak.len()).any(|w| w == &ak[..]) =>
        {
            a.pass(
                "tpm.ak_binding",
                "the AK public area is part of the bound manifest",
            )
        }
        (Some(_), Some(_)) => a.warn(
            "tpm.ak_binding",
            "the AK public area is not in the manifest (manifest version 0 binds only the EK)",
        ),
        _ => a.not_run(
            "tpm.ak_binding",
            "needs the AK public area and the manifest",
        ),
    }

    match (&ev.event_log, &ev.pcrs) {
        (Some(log), Some(p)) => a.record(
            "eventlog.replay",
            crate::eventlog::parse(log).and_then(|l| {
                let r = crate::eventlog::replay(&l);
                crate::eventlog::compare_with_pcrs(&r, p)
                    .map(|s| format!("{s} ({} events)", l.events.len()))
            }),
        ),
        (Some(_), None) => a.not_run("eventlog.replay", "no PCR values to compare the log with"),
        (None, _) => a.not_run("eventlog.replay", "no TPM event log in the bundle"),
    }

    if let Some(c) = &ev.ak_cert {
        let r = crate::cert::parse_certs(c).and_then(|v| {
            v.first()
                .ok_or_else(|| "no certificate".to_string())?
                .spki_der()
        });
        match (r, &ak) {
            (Err(e), _) => a.fail("tpm.ak_certificate", e),
            (Ok(spki), Some(Ok(key))) => {
                if tpm::key_matches_spki(key, &spki) {
                    a.pass("tpm.ak_certificate", "the AK certificate certifies the AK")
                } else {
                    a.fail(
                        "tpm.ak_certificate",
                        "the AK certificate's key is not the AK",
                    )
                }
            }
            (Ok(_), _) => a.not_run("tpm.ak_certificate", "no valid AK public area to compare"),
        }
    }
    if let Some(c) = &ev.ek_cert {
        let r = crate::cert::parse_certs(c).and_then(|v| {
            v.first()
                .ok_or_else(|| "no certificate".to_string())?
                .spki_der()
        });
        match (r, &ev.manifest) {
            (Err(e), _) => a.fail("tpm.ek_certificate", e),
            (Ok(spki), Some(m)) => {
                // The EK public area (TPMT_PUBLIC) is in the manifest; its key must be the certificate's.
                let found = (0..m.len()).any(|i| {
                    tpm::parse_public(&m[i..]).is_ok_and(|k| tpm::key_matches_spki(&k, &spki))
                });
                if found {
                    a.pass(
                        "tpm.ek_certificate",
                        "the EK certificate certifies an EK in the bound manifest",
                    )
                } else {
                    a.fail(
                        "tpm.ek_certificate",
                        "the EK certificate's key is not in the bound manifest",
                    )
                }
            }
            (Ok(_), None) => a.not_run("tpm.ek_certificate", "no manifest to compare the EK with"),
        }
    }
}
