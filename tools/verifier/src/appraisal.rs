//! The appraisal result in the shape of an IETF EAT Attestation Result (EAR):
//! one overall status and one entry per check, each with a human reason.

use serde::Serialize;

/// EAR trustworthiness tier, ordered from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The check passed.
    Affirming,
    /// The check could not be run, or found something the policy tolerates.
    Warning,
    /// The check failed.
    Contraindicated,
}

impl Status {
    /// CLI exit code for this overall status.
    pub fn exit_code(self) -> i32 {
        match self {
            Status::Affirming => 0,
            Status::Warning => 1,
            Status::Contraindicated => 2,
        }
    }
}

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable identifier, e.g. `snp.report_signature`.
    pub name: String,
    /// Outcome.
    pub status: Status,
    /// False when its inputs were absent and nothing was checked.
    pub run: bool,
    /// Why, for a human.
    pub reason: String,
}

/// The appraisal of one evidence bundle.
#[derive(Debug, Clone, Serialize)]
pub struct Appraisal {
    /// Worst status of all checks.
    pub status: Status,
    /// `snp`, `tdx` or `none`.
    pub platform: String,
    /// Every check, in the order it ran.
    pub checks: Vec<Check>,
    /// Claims read from the evidence (measurement, TCB, …) for the relying party.
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// Time the appraisal judged certificate validity at (RFC 3339).
    pub now: String,
    /// The platform evidence could not be parsed at all (CLI exit code 3).
    #[serde(skip)]
    pub unusable: bool,
}

impl Appraisal {
    /// Starts an empty appraisal.
    pub fn new(platform: &str, now: String) -> Self {
        Self {
            status: Status::Affirming,
            platform: platform.to_string(),
            checks: Vec::new(),
            claims: serde_json::Map::new(),
            now,
            unusable: false,
        }
    }

    /// Records a passed check.
    pub fn pass(&mut self, name: &str, reason: impl Into<String>) {
        self.push(name, Status::Affirming, true, reason.into());
    }

    /// Records a failed check.
    pub fn fail(&mut self, name: &str, reason: impl Into<String>) {
        self.push(name, Status::Contraindicated, true, reason.into());
    }

    /// Records a check that ran and found something tolerated.
    pub fn warn(&mut self, name: &str, reason: impl Into<String>) {
        self.push(name, Status::Warning, true, reason.into());
    }

    /// Records a check whose inputs were absent.
    pub fn not_run(&mut self, name: &str, reason: impl Into<String>) {
        self.push(
            name,
            Status::Warning,
            false,
            format!("not run: {}", reason.into()),
        );
    }

    /// Records an outcome from a `Result`.
    pub fn record(&mut self, name: &str, r: Result<String, String>) {
        match r {
            Ok(why) => self.pass(name, why),
            Err(why) => self.fail(name, why),
        }
    }

    fn push(&mut self, name: &str, status: Status, run: bool, reason: String) {
        self.status = self.status.max(status);
        self.checks.push(Check {
            name: name.to_string(),
            status,
            run,
            reason,
        });
    }

    /// The named check, if it was recorded.
    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// Adds a claim.
    pub fn claim(&mut self, key: &str, value: impl Into<serde_json::Value>) {
        self.claims.insert(key.to_string(), value.into());
    }

    /// The EAR JSON document (`eat_profile`, `ear.status`, one submodule).
    pub fn to_ear_json(&self) -> serde_json::Value {
        serde_json::json!({
            "eat_profile": "tag:github.com,2023:veraison/ear",
            "ear.verifier-id": {
                "developer": "rivet",
                "build": concat!("rivet-verifier ", env!("CARGO_PKG_VERSION")),
            },
            "ear.status": self.status,
            "rivet.now": self.now,
            "submods": {
                "rivet-vtpm": {
                    "ear.status": self.status,
                    "rivet.platform": self.platform,
                    "rivet.checks": self.checks,
                    "rivet.claims": self.claims,
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overall_status_is_the_worst_check() {
        let mut a = Appraisal::new("snp", String::new());
        a.pass("x", "ok");
        assert_eq!(a.status, Status::Affirming);
        assert_eq!(a.status.exit_code(), 0);
        a.not_run("y", "absent");
        assert_eq!(a.status, Status::Warning);
        assert!(!a.check("y").unwrap().run);
        a.pass("z", "ok");
        assert_eq!(a.status, Status::Warning);
        a.fail("w", "bad");
        assert_eq!(a.status, Status::Contraindicated);
        assert_eq!(a.status.exit_code(), 2);
        assert_eq!(a.to_ear_json()["ear.status"], "contraindicated");
    }
}
