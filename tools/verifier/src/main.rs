//! `rivet-verify`: appraises an evidence bundle and prints the EAR JSON.
//! Exit codes: 0 affirming, 1 warning, 2 contraindicated, 3 unusable input.

use clap::Parser;
use rivet_verifier::{Evidence, Policy, appraise, parse_time};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "rivet-verify",
    about = "Appraise Rivet attestation evidence (SEV-SNP / TDX, vTPM quote, event log)"
)]
struct Args {
    /// Evidence bundle (JSON, schema in tools/verifier/README.md).
    #[arg(long)]
    evidence: PathBuf,
    /// Appraisal policy (JSON).
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Time to judge certificate validity at (RFC 3339); default: the system clock.
    #[arg(long)]
    now: Option<String>,
    /// Extra trust root: a certificate (PEM/DER) or a SEC1 P-384 key (hex or raw).
    /// Chains ending there are valid but not hardware-rooted.
    #[arg(long = "trust-root")]
    trust_root: Vec<PathBuf>,
    /// Accept evidence rooted only in a --trust-root (native platform) as a warning.
    #[arg(long)]
    allow_simulated_root: bool,
}

fn run(args: &Args) -> Result<rivet_verifier::Appraisal, String> {
    let evidence = Evidence::from_path(&args.evidence)?;
    let mut policy = match &args.policy {
        Some(p) => Policy::from_json(
            &std::fs::read_to_string(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?,
        )?,
        None => Policy::default(),
    };
    if let Some(n) = &args.now {
        policy.now = Some(parse_time(n)?);
    }
    for r in &args.trust_root {
        let data = std::fs::read(r).map_err(|e| format!("cannot read {}: {e}", r.display()))?;
        policy
            .add_trust_root(&data)
            .map_err(|e| format!("{}: {e}", r.display()))?;
    }
    policy.allow_simulated_root |= args.allow_simulated_root;
    Ok(appraise(&evidence, &policy))
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(a) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&a.to_ear_json()).unwrap_or_default()
            );
            if a.unusable {
                ExitCode::from(3)
            } else {
                ExitCode::from(a.status.exit_code() as u8)
            }
        }
        Err(e) => {
            eprintln!("rivet-verify: {e}");
            ExitCode::from(3)
        }
    }
}
