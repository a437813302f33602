//! Test-only: the reference TPM (libtpms) behind the same mssim server code
//! as `rivet-tpm-server`, so the tpm2-tools suites can be checked against the
//! reference as well as the engine. Same command line.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use rivet_libtpms::Reference;
use rivet_tools::mssim::{Device, Server};
use rivet_tools::state_file::SavedState;

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 2321)]
    port: u16,
    #[arg(long)]
    state: PathBuf,
}

struct LibtpmsDevice {
    tpm: Reference,
    state: PathBuf,
}

fn encode(nv: &HashMap<String, Vec<u8>>) -> Vec<u8> {
    let mut names: Vec<_> = nv.keys().collect();
    names.sort();
    let mut out = Vec::new();
    for name in names {
        for part in [name.as_bytes(), &nv[name]] {
            out.extend_from_slice(&u32::try_from(part.len()).unwrap().to_be_bytes());
            out.extend_from_slice(part);
        }
    }
    out
}

fn decode(mut bytes: &[u8]) -> Option<HashMap<String, Vec<u8>>> {
    let take = |bytes: &mut &[u8]| -> Option<Vec<u8>> {
        let len = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
        let part = bytes.get(4..4 + len)?.to_vec();
        *bytes = &bytes[4 + len..];
        Some(part)
    };
    let mut nv = HashMap::new();
    while !bytes.is_empty() {
        let name = String::from_utf8(take(&mut bytes)?).ok()?;
        nv.insert(name, take(&mut bytes)?);
    }
    Some(nv)
}

impl LibtpmsDevice {
    fn save(&self) -> io::Result<()> {
        // libtpms keeps its own clock; no host clock to carry over.
        SavedState {
            clock_ms: 0,
            engine_state: encode(&self.tpm.nvram()),
        }
        .store(&self.state)
    }
}

impl Device for LibtpmsDevice {
    fn init(&mut self) {
        self.tpm.power_cycle();
    }

    fn execute(&mut self, locality: u8, command: &[u8]) -> Vec<u8> {
        let response = self.tpm.execute(locality, command);
        if self.tpm.take_nv_dirty()
            && let Err(e) = self.save()
        {
            eprintln!("rivet-libtpms-server: saving state: {e}");
        }
        response
    }

    fn shutdown(&mut self) -> io::Result<()> {
        self.save()
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let nv = match SavedState::load(&args.state) {
        Ok(Some(saved)) => match decode(&saved.engine_state) {
            Some(nv) => nv,
            None => {
                eprintln!(
                    "rivet-libtpms-server: {}: malformed NVRAM",
                    args.state.display()
                );
                return ExitCode::FAILURE;
            }
        },
        Ok(None) => HashMap::new(),
        Err(e) => {
            eprintln!("rivet-libtpms-server: {}: {e}", args.state.display());
            return ExitCode::FAILURE;
        }
    };
    let device = LibtpmsDevice {
        tpm: Reference::with_nvram(nv),
        state: args.state,
    };
    let server = match Server::bind(&args.host, args.port) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("rivet-libtpms-server: bind: {e}");
            return ExitCode::FAILURE;
        }
    };
    let port = server.command_addr().map(|a| a.port()).unwrap_or(0);
    println!(
        "rivet-libtpms-server: listening on {}:{port} (platform port {})",
        args.host,
        port + 1
    );
    match server.run(device) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rivet-libtpms-server: shutdown: {e}");
            ExitCode::FAILURE
        }
    }
}
