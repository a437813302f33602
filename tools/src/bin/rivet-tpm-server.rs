//! `rivet-tpm-server`: the Rivet TPM engine served over the MS-simulator TCP
//! protocol (command port and platform port = port + 1) and/or the swtpm
//! control channel on a Unix socket (for QEMU's `-tpmdev emulator`), with its
//! persistent state kept in one file.

use std::os::unix::net::UnixListener;
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
    /// MS-simulator command port; the platform port is this plus one. 0 picks
    /// a free pair and prints it. Default 2321, or none with --ctrl.
    #[arg(long)]
    port: Option<u16>,
    /// Also (or, without --port, only) serve the swtpm control channel on
    /// this Unix socket, as `swtpm socket --ctrl type=unixio,path=…` does:
    /// QEMU's `-chardev socket,path=…` + `-tpmdev emulator`. The server
    /// exits after the control command SHUTDOWN, which QEMU sends on exit.
    #[arg(long)]
    ctrl: Option<PathBuf>,
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
    let port = match (args.port, &args.ctrl) {
        (Some(port), _) => Some(port),
        (None, None) => Some(2321),
        (None, Some(_)) => None,
    };
    let mut server = None;
    if let Some(port) = port {
        let bound = Server::bind(&args.host, port).map_err(|e| format!("bind: {e}"))?;
        let addr = bound.command_addr().map_err(|e| e.to_string())?;
        // Tests wait for this line to learn the port.
        println!(
            "rivet-tpm-server: listening on {addr} (platform port {})",
            addr.port() + 1
        );
        server = Some(bound);
    }
    if let Some(path) = &args.ctrl {
        // A socket file left by a previous run would make bind fail.
        if std::fs::symlink_metadata(path)
            .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
        {
            let _ = std::fs::remove_file(path);
        }
        let ctrl = UnixListener::bind(path).map_err(|e| format!("{}: {e}", path.display()))?;
        server = Some(match server {
            Some(s) => s.with_swtpm_ctrl(ctrl),
            None => Server::swtpm_only(ctrl),
        });
        // Tests and scripts wait for this line before starting QEMU.
        println!(
            "rivet-tpm-server: swtpm control channel on {}",
            path.display()
        );
    }
    let server = server.ok_or("nothing to serve")?;
    let reason = server
        .run(EngineDevice::new(tpm))
        .map_err(|e| format!("shutdown: {e}"))?;
    if let Some(path) = &args.ctrl {
        let _ = std::fs::remove_file(path);
    }
    eprintln!("rivet-tpm-server: stopped ({reason:?}), state saved");
    Ok(())
}
