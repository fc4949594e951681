//! The packaged systemd units (`deploy/systemd/`) pass `systemd-analyze verify` with this
//! build's `dsrlb` as their program: unknown keys, bad values, a missing binary or a
//! capability systemd does not know fail the test. Their promises are kept elsewhere:
//! readiness and the stop notification in the lab test `product_systemd`. Needs no root.

use std::path::Path;
use std::process::Command;

fn systemd_analyze() -> Option<&'static str> {
    let path = "/usr/bin/systemd-analyze";
    Path::new(path).exists().then_some(path)
}

#[test]
fn the_units_pass_systemd_analyze_verify() {
    let Some(analyze) = systemd_analyze() else {
        assert!(
            std::env::var_os("DSRLB_REQUIRE_LAB").is_none(),
            "systemd-analyze not found (Debian package `systemd`)"
        );
        eprintln!("skipped: systemd-analyze not found");
        return;
    };
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd");
    let dir = tempfile::tempdir().expect("tempdir");
    for unit in ["dsrlb.service", "dsrlb-witness.service"] {
        let text = std::fs::read_to_string(units.join(unit)).expect("unit file");
        assert!(
            text.contains("ExecStart=/usr/bin/dsrlb "),
            "{unit} runs /usr/bin/dsrlb"
        );
        // Where the package puts the binary; here, the one this test was built with.
        let text = text.replace("/usr/bin/dsrlb", env!("CARGO_BIN_EXE_dsrlb"));
        let path = dir.path().join(unit);
        std::fs::write(&path, text).expect("write the unit");
        let out = Command::new(analyze)
            .arg("verify")
            .arg(&path)
            .output()
            .expect("run systemd-analyze");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // verify also reports on units the file pulls in (network-online.target etc.) when
        // the machine lacks them; only lines about our unit count.
        let ours: Vec<&str> = said.lines().filter(|l| l.contains(unit)).collect();
        assert!(
            out.status.success() && ours.is_empty(),
            "systemd-analyze verify {unit}: {}\n{said}",
            out.status
        );
    }
}
