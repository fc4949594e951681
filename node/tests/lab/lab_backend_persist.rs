//! `backend-setup.sh VIP --persist` in a lab backend, as a user runs it: the boot
//! configuration it writes (a sysctl.d file and the VIP on `lo` for systemd-networkd or
//! ifupdown, under a scratch root given by `DSRLB_SETUP_ROOT`), a second run that changes
//! nothing, `--undo --persist` that removes exactly what it wrote and the VIP, and a refusal
//! that changes nothing when neither network manager is found (docs/backends.md).

use crate::common::can_run_lab;
use lab::{Lab, LabSpec};
use std::path::Path;
use std::process::{Command, Output};

/// Runs the lab's copy of the script in backend `b1` with `root` as the file system root.
fn setup(lab: &Lab, root: &Path, args: &[&str]) -> Output {
    let host = &lab.backends()[0];
    Command::new("ip")
        .args(["netns", "exec", &host.netns, "sh"])
        .arg(lab.setup_script())
        .arg(lab.vip().to_string())
        .args(args)
        .env("DSRLB_SETUP_STATE_DIR", lab.dir().join("b1-setup-state"))
        .env("DSRLB_SETUP_ROOT", root)
        .output()
        .expect("run backend-setup.sh")
}

pub(crate) fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "backend-setup.sh failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every regular file under `root` with its content (the test's own fixtures are symlinks
/// or files it checks separately).
pub(crate) fn files(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).expect("read dir").flatten() {
            let p = e.path();
            if p.is_symlink() {
                continue;
            }
            if p.is_dir() {
                dirs.push(p);
            } else if p.is_file() {
                let rel = p
                    .strip_prefix(root)
                    .expect("under root")
                    .display()
                    .to_string();
                out.push((rel, std::fs::read(&p).expect("read")));
            }
        }
    }
    out.sort();
    out
}

fn vip_on_lo(lab: &Lab) -> bool {
    let out = Command::new("ip")
        .args([
            "-n",
            &lab.backends()[0].netns,
            "-4",
            "-o",
            "addr",
            "show",
            "dev",
            "lo",
        ])
        .output()
        .expect("ip addr");
    String::from_utf8_lossy(&out.stdout).contains(&format!("{}/32", lab.vip()))
}

pub(crate) fn read(root: &Path, rel: &str) -> String {
    std::fs::read_to_string(root.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn persist_writes_boot_config_once_and_undo_removes_it() {
    if !can_run_lab() {
        return;
    }
    // Building the lab ran `backend-setup.sh VIP` (no --persist) in every backend.
    let lab = Lab::build(&LabSpec {
        nodes: 1,
        backends: 1,
        clients: 0,
        ..LabSpec::default()
    })
    .expect("lab builds");
    assert!(vip_on_lo(&lab), "the lab's setup put the VIP on lo");
    let vip = lab.vip();
    let sysctl = "etc/sysctl.d/90-dsrlb-backend.conf";

    // systemd-networkd, enabled: the VIP joins lo's own addresses in a .network file.
    let networkd = tempfile::tempdir().expect("tempdir");
    let wants = networkd
        .path()
        .join("etc/systemd/system/multi-user.target.wants");
    std::fs::create_dir_all(&wants).expect("mkdir");
    std::os::unix::fs::symlink(
        "/lib/systemd/system/systemd-networkd.service",
        wants.join("systemd-networkd.service"),
    )
    .expect("symlink");
    ok(&setup(&lab, networkd.path(), &["--persist"]));
    let network = read(networkd.path(), "etc/systemd/network/10-dsrlb-lo.network");
    for want in [
        "Name=lo".to_string(),
        "Address=127.0.0.1/8".to_string(),
        format!("Address={vip}/32"),
    ] {
        assert!(network.contains(&want), "no {want:?} in:\n{network}");
    }
    let conf: String = read(networkd.path(), sysctl)
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    for want in [
        "net.ipv4.conf.all.arp_ignore=1",
        "net.ipv4.conf.all.arp_announce=2",
    ] {
        assert!(conf.contains(want), "no {want} in {sysctl}");
    }
    let written = files(networkd.path());
    ok(&setup(&lab, networkd.path(), &["--persist"]));
    assert_eq!(
        files(networkd.path()),
        written,
        "a second run changed files"
    );
    ok(&setup(&lab, networkd.path(), &["--undo", "--persist"]));
    let left: Vec<String> = files(networkd.path()).into_iter().map(|(p, _)| p).collect();
    assert!(left.is_empty(), "--undo --persist left {left:?}");
    assert!(!vip_on_lo(&lab), "--undo left the VIP on lo");

    // ifupdown: a stanza for lo in interfaces.d, without a second "auto lo".
    let ifupdown = tempfile::tempdir().expect("tempdir");
    let r = ifupdown.path();
    std::fs::create_dir_all(r.join("etc/network/interfaces.d")).expect("mkdir");
    std::fs::create_dir_all(r.join("sbin")).expect("mkdir");
    std::fs::write(
        r.join("etc/network/interfaces"),
        "source /etc/network/interfaces.d/*\n\nauto lo\niface lo inet loopback\n",
    )
    .expect("write");
    std::fs::write(r.join("sbin/ifup"), "#!/bin/sh\n").expect("write");
    std::fs::set_permissions(
        r.join("sbin/ifup"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    ok(&setup(&lab, r, &["--persist"]));
    assert!(vip_on_lo(&lab), "--persist sets the VIP up now as well");
    let stanza = read(r, "etc/network/interfaces.d/dsrlb-lo");
    assert!(
        stanza.contains(&format!("up ip addr replace {vip}/32 dev lo"))
            && stanza.contains("iface lo inet loopback")
            && !stanza.lines().any(|l| l.trim() == "auto lo"),
        "{stanza}"
    );
    ok(&setup(&lab, r, &["--undo", "--persist"]));
    assert!(!r.join("etc/network/interfaces.d/dsrlb-lo").exists());
    assert!(!r.join(sysctl).exists());
    assert!(
        r.join("etc/network/interfaces").exists(),
        "the user's own file stays"
    );

    // Neither manager: refused, and nothing changed.
    let bare = tempfile::tempdir().expect("tempdir");
    let out = setup(&lab, bare.path(), &["--persist"]);
    assert!(!out.status.success(), "--persist with no network manager");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("DSRLB_SETUP_NET"),
        "the refusal says how to choose: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(files(bare.path()).is_empty());
    assert!(!vip_on_lo(&lab), "a refused --persist set nothing up");
}
