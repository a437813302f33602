//! Shared helpers for the verifier's tests: bundle building and check lookup.
#![allow(dead_code)]

use rivet_verifier::{Appraisal, Evidence, Policy, Status, parse_time};
use serde_json::{Value, json};

pub fn hexs(b: &[u8]) -> Value {
    json!({ "hex": hex::encode(b) })
}

pub fn evidence(v: Value) -> Evidence {
    Evidence::from_json(&v.to_string(), None).expect("bundle parses")
}

pub fn policy_at(now: &str) -> Policy {
    Policy {
        now: Some(parse_time(now).unwrap()),
        ..Policy::default()
    }
}

/// Status and reason of a named check; panics with the whole appraisal if absent.
pub fn check(a: &Appraisal, name: &str) -> (Status, String) {
    match a.check(name) {
        Some(c) => (c.status, c.reason.clone()),
        None => panic!("no check {name} in {:#?}", a.checks),
    }
}

pub fn assert_pass(a: &Appraisal, name: &str) {
    let (s, r) = check(a, name);
    assert_eq!(s, Status::Affirming, "{name}: {r}\n{:#?}", a.checks);
}

pub fn assert_fail(a: &Appraisal, name: &str, reason_part: &str) {
    let (s, r) = check(a, name);
    assert_eq!(s, Status::Contraindicated, "{name} should fail: {r}");
    assert!(
        r.contains(reason_part),
        "{name}: reason '{r}' lacks '{reason_part}'"
    );
    assert_eq!(a.status, Status::Contraindicated);
}

/// No check contraindicated.
pub fn assert_none_failed(a: &Appraisal) {
    for c in &a.checks {
        assert_ne!(
            c.status,
            Status::Contraindicated,
            "{}: {}",
            c.name,
            c.reason
        );
    }
}

pub fn claim(a: &Appraisal, key: &str) -> String {
    a.claims
        .get(key)
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string()
}

pub fn flip(data: &[u8], byte: usize, bit: u8) -> Vec<u8> {
    let mut d = data.to_vec();
    d[byte] ^= 1 << bit;
    d
}
