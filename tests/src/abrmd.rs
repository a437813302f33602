//! A private D-Bus session bus with tpm2-abrmd on it, fronting a TPM server:
//! the resource manager most tpm2-tools flows expect.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::tools::Tpm2;

pub struct Abrmd {
    dbus: Child,
    abrmd: Child,
    pub bus_address: String,
}

impl Abrmd {
    /// Starts `dbus-daemon --session` and `tpm2-abrmd --session` on it,
    /// with `tcti` as the TPM; returns once the broker answers.
    pub fn start(tcti: &str) -> Self {
        let mut dbus = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("dbus-daemon: {e} (is the dbus package installed?)"));
        let mut bus_address = String::new();
        BufReader::new(dbus.stdout.take().unwrap())
            .read_line(&mut bus_address)
            .unwrap();
        let bus_address = bus_address.trim().to_string();
        assert!(!bus_address.is_empty(), "dbus-daemon printed no address");
        let abrmd = Command::new("tpm2-abrmd")
            .args(["--session", "--allow-root", "--logger=stdout"])
            .arg(format!("--tcti={tcti}"))
            .env("DBUS_SESSION_BUS_ADDRESS", &bus_address)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("tpm2-abrmd: {e} (is the tpm2-abrmd package installed?)"));
        let this = Self {
            dbus,
            abrmd,
            bus_address,
        };
        let tools = this.tools();
        // The broker's TCTI library is a package of its own: say so plainly
        // instead of timing out.
        let probe = tools
            .env("TSS2_LOG", "tcti+debug")
            .output(&["getrandom", "1"]);
        let err = String::from_utf8_lossy(&probe.stderr);
        assert!(
            !err.contains("libtss2-tcti-tabrmd.so.0: cannot open shared object file"),
            "the tabrmd TCTI is missing (install libtss2-tcti-tabrmd0): {err}"
        );
        let tools = this.tools();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = tools.output(&["getrandom", "1"]);
            if out.status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "tpm2-abrmd did not come up within 20 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        this
    }

    /// tpm2-tools talking to the broker.
    pub fn tools(&self) -> Tpm2 {
        Tpm2::new("tabrmd:bus_type=session").env("DBUS_SESSION_BUS_ADDRESS", &self.bus_address)
    }
}

impl Drop for Abrmd {
    fn drop(&mut self) {
        let _ = self.abrmd.kill();
        let _ = self.abrmd.wait();
        let _ = self.dbus.kill();
        let _ = self.dbus.wait();
    }
}
