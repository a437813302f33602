//! The harness of the tpm2-tools scenario suites: a fresh server per
//! scenario, tools that flush what they leave loaded, and a macro that runs
//! every scenario against the Rivet engine and against the reference TPM
//! (libtpms behind the same server code), so a scenario shows it expects
//! what a real TPM does.

use crate::server::{Backend, TpmServer};
use crate::tools::Tpm2;

/// A fresh server with its own state file, already through Startup(CLEAR).
pub struct Setup {
    /// The server (stops when dropped).
    pub server: TpmServer,
    /// tpm2-tools pointed at it.
    pub tools: Tpm2,
    /// The folder of the server's state file (removed when dropped).
    pub state_dir: tempfile::TempDir,
}

/// Starts a server for `backend` and sends Startup(CLEAR).
pub fn setup(backend: Backend) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let server = TpmServer::start(backend, &dir.path().join("tpm.state"));
    let tools = Tpm2::new(server.tcti());
    tools.ok(&["startup", "-c"]);
    Setup {
        server,
        tools,
        state_dir: dir,
    }
}

/// Runs a tool that must succeed, then flushes the transient objects it
/// left loaded (without a resource manager every context file a tool
/// reads is loaded again, and a TPM holds only a few objects at once).
pub fn run(tools: &Tpm2, args: &[&str]) -> String {
    let out = tools.ok(args);
    tools.ok(&["flushcontext", "-t"]);
    out
}

/// Runs a tool that must fail, then flushes as [`run`] does.
pub fn fail(tools: &Tpm2, args: &[&str]) -> String {
    let err = tools.fails(args);
    tools.ok(&["flushcontext", "-t"]);
    err
}

/// Runs a tool that must fail with `rc`, then flushes as [`run`] does.
pub fn fail_with(tools: &Tpm2, rc: u32, args: &[&str]) {
    tools.fails_with(rc, args);
    tools.ok(&["flushcontext", "-t"]);
}

/// Declares one test per scenario and backend: `rivet::<scenario>` and
/// `reference::<scenario>`, each calling `<scenario>(Backend)`.
#[macro_export]
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod rivet {
            $(#[test] fn $scenario() { super::$scenario($crate::server::Backend::Rivet) })*
        }
        mod reference {
            $(#[test] fn $scenario() { super::$scenario($crate::server::Backend::Reference) })*
        }
    };
}
