//! `rivet-tpm-server`: the Rivet TPM engine served over the MS-simulator TCP
//! protocol (command port and platform port = port + 1), with its persistent
//! state kept in one file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use rivet_tools::engine::{EngineDevice, HostPlatform};
use rivet_tools::mssim::Server;
use rivet_tools::state_file::SavedState;
use rivet_tpm::Tpm;

#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Command port; the platform port is this plus one. 0 picks a free pair
    /// and prints it.
    #[arg(long, default_value_t = 2321)]
    port: u16,
    /// State file: loaded on start (created if missing), rewritten after
    /// every persistent change.
    #[arg(long)]
    state: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rivet-tpm-server: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let state_name = args.state.display();
    let tpm = match SavedState::load(&args.state).map_err(|e| format!("{state_name}: {e}"))? {
        Some(saved) => {
            let platform = HostPlatform::new(args.state.clone(), saved.clock_ms);
            Tpm::restore(platform, &saved.engine_state)
                .map_err(|e| format!("{state_name}: engine refused the state: {e}"))?
        }
        None => {
            let platform = HostPlatform::new(args.state.clone(), 0);
            let tpm = Tpm::manufacture(platform).map_err(|e| format!("{e}"))?;
            tpm.platform()
                .save(&tpm.state())
                .map_err(|e| format!("{state_name}: {e}"))?;
            tpm
        }
    };
    let server = Server::bind(&args.host, args.port).map_err(|e| format!("bind: {e}"))?;
    let addr = server.command_addr().map_err(|e| e.to_string())?;
    // Tests wait for this line to learn the port.
    println!(
        "rivet-tpm-server: listening on {addr} (platform port {})",
        addr.port() + 1
    );
    let reason = server
        .run(EngineDevice::new(tpm))
        .map_err(|e| format!("shutdown: {e}"))?;
    eprintln!("rivet-tpm-server: stopped ({reason:?}), state saved");
    Ok(())
}
