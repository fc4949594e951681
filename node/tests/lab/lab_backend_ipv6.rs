//! `backend-setup.sh` with an IPv6 VIP (issue #14), in a lab backend as a user runs it: the
//! VIP goes on `lo` as a /128 and no sysctl changes, a second run changes nothing, `--undo`
//! removes only what it added; a refusal that changes nothing while IPv6 is off on `lo` (the
//! lab turns IPv6 off in every namespace); IPv4 and IPv6 VIPs on one host, the ARP sysctls
//! kept while an IPv4 VIP is; `--persist` for both families; bad addresses refused before
//! anything is touched; and why an IPv6 VIP needs no sysctl: Neighbor Discovery never
//! resolves a VIP held on `lo`, and the backend's own solicitations never come from it
//! (docs/design.md#packet-walk).

use crate::common::can_run_lab;
use crate::lab_backend_persist::{files, ok, read};
use lab::{Host, Lab, LabSpec};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// An IPv6 VIP off the lab's segment (documentation prefix).
const VIP6: &str = "2001:db8:14::100";

/// The state dir the lab's own setup of `b1` used, so IPv4 and IPv6 runs share it.
fn state_dir(lab: &Lab) -> PathBuf {
    lab.dir().join("b1-setup-state")
}

/// Runs the lab's copy of the script in backend `b1` for `vip`, with `root` as the file
/// system root (always a scratch directory, so nothing of the machine's /etc is read).
fn setup(lab: &Lab, root: &Path, vip: &str, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", &lab.backends()[0].netns, "sh"])
        .arg(lab.setup_script())
        .arg(vip)
        .args(args)
        .env("DSRLB_SETUP_STATE_DIR", state_dir(lab))
        .env("DSRLB_SETUP_ROOT", root)
        .env_remove("DSRLB_SETUP_NET")
        .output()
        .expect("run backend-setup.sh")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `ip -6 addr show dev lo` in `host`.
fn lo6(host: &Host) -> String {
    host.ip(&["-6", "addr", "show", "dev", "lo"])
        .expect("ip -6 addr")
}

fn has_vip6(host: &Host, vip: &str) -> bool {
    lo6(host).contains(&format!("inet6 {vip}/128 "))
}

fn has_vip4(lab: &Lab) -> bool {
    lab.backends()[0]
        .ip(&["-4", "addr", "show", "dev", "lo"])
        .expect("ip -4 addr")
        .contains(&format!("inet {}/32 ", lab.vip()))
}

/// arp_ignore and arp_announce of "all" and eth0.
fn arp(host: &Host) -> [(String, String); 2] {
    ["all", "eth0"].map(|i| {
        (
            host.sysctl(&format!("net/ipv4/conf/{i}/arp_ignore"))
                .expect("read"),
            host.sysctl(&format!("net/ipv4/conf/{i}/arp_announce"))
                .expect("read"),
        )
    })
}

fn arp_set() -> [(String, String); 2] {
    let set = ("1".to_owned(), "2".to_owned());
    [set.clone(), set]
}

fn arp_default() -> [(String, String); 2] {
    let default = ("0".to_owned(), "0".to_owned());
    [default.clone(), default]
}

/// The state file listing the VIPs the script added.
fn recorded(lab: &Lab) -> String {
    std::fs::read_to_string(state_dir(lab).join("vips")).unwrap_or_default()
}

fn one_backend() -> Lab {
    Lab::build(&LabSpec {
        nodes: 0,
        backends: 1,
        clients: 0,
        ..LabSpec::default()
    })
    .expect("lab builds")
}

#[test]
fn ipv6_vip_goes_on_lo_as_128_once_without_sysctls_and_undo_removes_it() {
    if !can_run_lab() {
        return;
    }
    let lab = one_backend();
    let b1 = lab.backends()[0].clone();
    let root = tempfile::tempdir().expect("tempdir");
    let root = root.path();
    // Only IPv6 here: take the IPv4 VIP the lab set up away first.
    ok(&setup(&lab, root, &lab.vip().to_string(), &["--undo"]));
    assert_eq!(arp(&b1), arp_default());
    assert!(!state_dir(&lab).exists(), "the IPv4 undo emptied the state");

    // The lab turns IPv6 off in every namespace: refused, and IPv6 stays off.
    assert_eq!(
        b1.sysctl("net/ipv6/conf/lo/disable_ipv6").expect("read"),
        "1"
    );
    let out = setup(&lab, root, VIP6, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains("IPv6 is disabled on lo")
            && err.contains("net.ipv6.conf.all.disable_ipv6 = 1")
            && err.contains("policy"),
        "the refusal says why and that enabling IPv6 is the host's call: {err}"
    );
    assert_eq!(
        b1.sysctl("net/ipv6/conf/lo/disable_ipv6").expect("read"),
        "1",
        "the script does not turn IPv6 on"
    );
    assert!(!recorded(&lab).contains(VIP6));

    b1.set_sysctl("net/ipv6/conf/lo/disable_ipv6", "0")
        .expect("IPv6 on lo");
    // A non-canonical spelling is the same VIP.
    let out = setup(&lab, root, "2001:DB8:14:0::0100", &[]);
    ok(&out);
    assert!(
        stdout(&out).contains(&format!("added {VIP6}/128 to lo")),
        "{}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains("note: IPv6 is disabled on eth0"),
        "traffic arriving on an interface without IPv6 is dropped: {}",
        stderr(&out)
    );
    assert!(has_vip6(&b1, VIP6), "{}", lo6(&b1));
    assert_eq!(recorded(&lab).trim(), VIP6, "recorded in canonical form");
    assert_eq!(arp(&b1), arp_default(), "an IPv6 VIP changes no sysctl");
    assert!(!state_dir(&lab).join("sysctls").exists());

    let before = lo6(&b1);
    let again = setup(&lab, root, VIP6, &[]);
    ok(&again);
    assert!(
        stdout(&again).contains("nothing to change"),
        "{}",
        stdout(&again)
    );
    assert_eq!(lo6(&b1), before, "a second run changed lo");

    // An IPv6 address on lo the script did not add is left alone by --undo.
    let theirs = "2001:db8:14::5";
    b1.ip(&["-6", "addr", "add", &format!("{theirs}/128"), "dev", "lo"])
        .expect("add by hand");
    ok(&setup(&lab, root, theirs, &[]));
    let out = setup(&lab, root, theirs, &["--undo"]);
    ok(&out);
    assert!(stdout(&out).contains("not added by"), "{}", stdout(&out));
    assert!(
        has_vip6(&b1, theirs),
        "--undo removed an address it did not add"
    );

    let out = setup(&lab, root, VIP6, &["--undo"]);
    ok(&out);
    assert!(
        stdout(&out).contains(&format!("removed {VIP6}/128 from lo")),
        "{}",
        stdout(&out)
    );
    assert!(!has_vip6(&b1, VIP6), "--undo left the VIP on lo");
    assert_eq!(arp(&b1), arp_default());
    assert!(!state_dir(&lab).exists(), "no VIP left: the state goes");
    let again = setup(&lab, root, VIP6, &["--undo"]);
    ok(&again);
    assert!(
        stdout(&again).contains("nothing to undo"),
        "{}",
        stdout(&again)
    );

    // The same address on lo with another prefix length, or on eth0, is refused.
    b1.ip(&["-6", "addr", "add", "2001:db8:14::6/64", "dev", "lo"])
        .expect("add by hand");
    let out = setup(&lab, root, "2001:db8:14::6", &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("lo (as 2001:db8:14::6/64)"),
        "{}",
        stderr(&out)
    );
    b1.set_sysctl("net/ipv6/conf/eth0/accept_dad", "0")
        .expect("no DAD");
    b1.set_sysctl("net/ipv6/conf/eth0/disable_ipv6", "0")
        .expect("IPv6 on eth0");
    b1.ip(&[
        "-6",
        "addr",
        "add",
        "2001:db8:14::7/64",
        "dev",
        "eth0",
        "nodad",
    ])
    .expect("add by hand");
    let out = setup(&lab, root, "2001:db8:14::7", &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("also on: eth0") && stderr(&out).contains("Neighbor Solicitations"),
        "{}",
        stderr(&out)
    );
    assert!(!has_vip6(&b1, "2001:db8:14::7"));
}

#[test]
fn ipv4_and_ipv6_vips_share_a_backend_and_arp_sysctls_follow_the_ipv4_ones() {
    if !can_run_lab() {
        return;
    }
    let lab = one_backend();
    let b1 = lab.backends()[0].clone();
    let root = tempfile::tempdir().expect("tempdir");
    let root = root.path();
    let vip4 = lab.vip().to_string();
    assert!(has_vip4(&lab), "the lab set its IPv4 VIP up");
    assert_eq!(arp(&b1), arp_set());
    b1.set_sysctl("net/ipv6/conf/lo/disable_ipv6", "0")
        .expect("IPv6 on lo");

    ok(&setup(&lab, root, VIP6, &[]));
    assert!(has_vip6(&b1, VIP6) && has_vip4(&lab));
    assert_eq!(arp(&b1), arp_set());
    for vip in [vip4.as_str(), VIP6] {
        let again = setup(&lab, root, vip, &[]);
        ok(&again);
        assert!(
            stdout(&again).contains("nothing to change"),
            "{vip}: {}",
            stdout(&again)
        );
    }

    // Undoing the IPv6 VIP keeps the IPv4 one and its sysctls.
    let out = setup(&lab, root, VIP6, &["--undo"]);
    ok(&out);
    assert!(stdout(&out).contains("sysctls kept"), "{}", stdout(&out));
    assert!(!has_vip6(&b1, VIP6) && has_vip4(&lab));
    assert_eq!(arp(&b1), arp_set());

    // Undoing the IPv4 VIP restores the sysctls: the IPv6 VIP left needs none.
    ok(&setup(&lab, root, VIP6, &[]));
    let out = setup(&lab, root, &vip4, &["--undo"]);
    ok(&out);
    assert!(
        stdout(&out).contains("IPv6 VIPs still set up"),
        "{}",
        stdout(&out)
    );
    assert!(!has_vip4(&lab) && has_vip6(&b1, VIP6));
    assert_eq!(arp(&b1), arp_default());
    assert_eq!(recorded(&lab).trim(), VIP6);

    // And back: an IPv4 VIP next to the IPv6 one sets the sysctls again.
    ok(&setup(&lab, root, &vip4, &[]));
    assert_eq!(arp(&b1), arp_set());
    ok(&setup(&lab, root, &vip4, &["--undo"]));
    ok(&setup(&lab, root, VIP6, &["--undo"]));
    assert!(!has_vip4(&lab) && !has_vip6(&b1, VIP6));
    assert_eq!(arp(&b1), arp_default());
    assert!(!state_dir(&lab).exists(), "no VIP left: the state goes");
}

#[test]
fn ipv6_persist_writes_boot_config_for_networkd_and_ifupdown() {
    if !can_run_lab() {
        return;
    }
    let lab = one_backend();
    let b1 = lab.backends()[0].clone();
    b1.set_sysctl("net/ipv6/conf/lo/disable_ipv6", "0")
        .expect("IPv6 on lo");
    let vip4 = lab.vip().to_string();
    let sysctl = "etc/sysctl.d/90-dsrlb-backend.conf";
    let network = "etc/systemd/network/10-dsrlb-lo.network";

    // systemd-networkd: one .network file for both families; the sysctl file only with an
    // IPv4 VIP.
    let networkd = tempfile::tempdir().expect("tempdir");
    let n = networkd.path();
    let wants = n.join("etc/systemd/system/multi-user.target.wants");
    std::fs::create_dir_all(&wants).expect("mkdir");
    std::os::unix::fs::symlink(
        "/lib/systemd/system/systemd-networkd.service",
        wants.join("systemd-networkd.service"),
    )
    .expect("symlink");
    ok(&setup(&lab, n, VIP6, &["--persist"]));
    let text = read(n, network);
    for want in [
        "Name=lo".to_string(),
        "Address=127.0.0.1/8".to_string(),
        "Address=::1/128".to_string(),
        format!("Address={VIP6}/128"),
    ] {
        assert!(text.contains(&want), "no {want:?} in:\n{text}");
    }
    assert!(!text.contains(&format!("Address={vip4}/")), "{text}");
    assert!(!n.join(sysctl).exists(), "an IPv6 VIP needs no sysctl file");
    let written = files(n);
    ok(&setup(&lab, n, VIP6, &["--persist"]));
    assert_eq!(files(n), written, "a second run changed files");

    ok(&setup(&lab, n, &vip4, &["--persist"]));
    let text = read(n, network);
    assert!(
        text.contains(&format!("Address={VIP6}/128"))
            && text.contains(&format!("Address={vip4}/32"))
            && text.contains(&format!("# VIPs on lo: {VIP6} {vip4}")),
        "{text}"
    );
    assert!(read(n, sysctl).contains("arp_ignore"));
    let written = files(n);
    for vip in [VIP6, vip4.as_str()] {
        ok(&setup(&lab, n, vip, &["--persist"]));
    }
    assert_eq!(files(n), written, "second runs changed files");

    // The sysctl file goes with the last IPv4 VIP, the .network file with the last VIP.
    ok(&setup(&lab, n, &vip4, &["--undo", "--persist"]));
    assert!(
        !n.join(sysctl).exists(),
        "the sysctl file outlived the IPv4 VIP"
    );
    let text = read(n, network);
    assert!(
        text.contains(&format!("Address={VIP6}/128")) && !text.contains(&format!("{vip4}/32")),
        "{text}"
    );
    assert!(!has_vip4(&lab) && has_vip6(&b1, VIP6));
    ok(&setup(&lab, n, VIP6, &["--undo", "--persist"]));
    let left: Vec<String> = files(n).into_iter().map(|(p, _)| p).collect();
    assert!(left.is_empty(), "--undo --persist left {left:?}");
    assert!(!has_vip6(&b1, VIP6), "--undo left the VIP on lo");

    // ifupdown: up/down lines in the lo stanza, ip taking the family from the address.
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
    ok(&setup(&lab, r, VIP6, &["--persist"]));
    let stanza = read(r, "etc/network/interfaces.d/dsrlb-lo");
    let up = format!("ip addr replace {VIP6}/128 dev lo");
    let down = format!("ip addr del {VIP6}/128 dev lo || true");
    assert!(
        stanza.contains("iface lo inet loopback")
            && stanza.lines().any(|l| l.trim() == format!("up {up}"))
            && stanza.lines().any(|l| l.trim() == format!("down {down}"))
            && !stanza.lines().any(|l| l.trim() == "auto lo"),
        "{stanza}"
    );
    assert!(!r.join(sysctl).exists(), "an IPv6 VIP needs no sysctl file");
    // The lines do what ifupdown would have them do, with this ip.
    b1.exec("sh", ["-c", down.as_str()]).expect("down line");
    assert!(!has_vip6(&b1, VIP6), "the down line removes the VIP");
    for _ in 0..2 {
        b1.exec("sh", ["-c", up.as_str()]).expect("up line");
        assert!(
            has_vip6(&b1, VIP6),
            "the up line adds the VIP, also when it is there"
        );
    }
    let written = files(r);
    ok(&setup(&lab, r, VIP6, &["--persist"]));
    assert_eq!(files(r), written, "a second run changed files");
    ok(&setup(&lab, r, VIP6, &["--undo", "--persist"]));
    assert!(!r.join("etc/network/interfaces.d/dsrlb-lo").exists());
    assert!(!r.join(sysctl).exists());
    assert!(
        r.join("etc/network/interfaces").exists(),
        "the user's own file stays"
    );
    assert!(!has_vip6(&b1, VIP6));
}

#[test]
fn ipv6_bad_vips_are_refused_before_anything_is_touched() {
    // Argument checks come before anything is touched, so this needs no root or lab (and
    // must never hold an address the script would accept: it would run on this machine).
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/backend-setup.sh");
    for (vip, why) in [
        ("fe80::1", "link-local"),
        ("ff02::1", "multicast"),
        ("::", "unspecified"),
        ("::1", "loopback"),
        ("::ffff:c612:64", "IPv4-mapped"),
        ("::ffff:198.18.0.100", "hexadecimal groups"),
        ("2001:db8::1/128", "without a prefix length"),
        ("2001:db8::1%eth0", "zone"),
        ("2001:db8::1::2", "\"::\" twice"),
        ("2001:db8:1:2:3:4:5:6:7", "not 8 groups"),
        ("2001:db8:1:2:3:4:5", "not 8 groups"),
        ("2001:db8::12345", "bad group"),
        ("2001:dg8::1", "not an IPv6 address"),
        ("2001:db8:::1", "not an IPv6 address"),
        (":2001:db8::1", "bad group"),
        ("198.18.0.100/32", "not an IPv4 or IPv6 address"),
    ] {
        let out = Command::new("sh")
            .arg(&script)
            .arg(vip)
            .output()
            .expect("sh runs");
        assert_eq!(out.status.code(), Some(2), "{vip}: {}", stdout(&out));
        let err = stderr(&out);
        assert!(
            err.contains(why) && err.contains("usage: backend-setup.sh VIP"),
            "{vip}: want {why:?} in: {err}"
        );
    }
}

/// The neighbour entry `host` has for `addr` on eth0 (`ip -6 neigh show`), if any.
fn neigh(host: &Host, addr: &str) -> Option<String> {
    host.ip(&["-6", "neigh", "show", "dev", "eth0"])
        .expect("ip neigh")
        .lines()
        .find(|l| l.split_whitespace().next() == Some(addr))
        .map(str::to_owned)
}

/// Turns IPv6 on for `host`'s eth0 (without duplicate address detection, so addresses work
/// at once) and gives it `addr`/64.
fn ipv6_on_eth0(host: &Host, addr: &str) {
    host.set_sysctl("net/ipv6/conf/eth0/accept_dad", "0")
        .expect("no DAD");
    host.set_sysctl("net/ipv6/conf/eth0/disable_ipv6", "0")
        .expect("IPv6 on eth0");
    host.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{addr}/64"),
        "dev",
        "eth0",
        "nodad",
    ])
    .expect("address");
}

#[test]
fn neighbor_discovery_never_resolves_an_ipv6_vip_held_on_lo() {
    if !can_run_lab() {
        return;
    }
    let lab = Lab::build(&LabSpec {
        nodes: 0,
        backends: 1,
        clients: 1,
        ..LabSpec::default()
    })
    .expect("lab builds");
    let (b1, c1) = (lab.backends()[0].clone(), lab.clients()[0].clone());
    let root = tempfile::tempdir().expect("tempdir");
    // The VIP in the segment's own prefix, as a router in front of the farm sees it.
    let (vip, b1_ip, c1_ip) = ("fd00:14::100", "fd00:14::21", "fd00:14::31");
    let b1_mac = b1.mac.to_string().to_lowercase();
    b1.set_sysctl("net/ipv6/conf/lo/disable_ipv6", "0")
        .expect("IPv6 on lo");
    ipv6_on_eth0(&b1, b1_ip);
    ipv6_on_eth0(&c1, c1_ip);
    let out = setup(&lab, root.path(), vip, &[]);
    ok(&out);
    assert!(!stderr(&out).contains("note:"), "{}", stderr(&out));

    // The client solicits both: b1's own address resolves, the VIP on b1's lo never does.
    c1.run(|| {
        let s = UdpSocket::bind("[::]:0").expect("bind");
        for to in [b1_ip, vip] {
            let _ = s.send_to(b"x", format!("[{to}]:9"));
        }
    });
    let start = Instant::now();
    loop {
        let (own, v) = (neigh(&c1, b1_ip), neigh(&c1, vip));
        assert!(
            !v.as_deref().unwrap_or("").contains("lladdr"),
            "the VIP on b1's lo was resolved: {v:?}"
        );
        let own_ok = own.as_deref().is_some_and(|l| l.contains(&b1_mac));
        if own_ok && v.as_deref().is_some_and(|l| l.contains("FAILED")) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(8),
            "b1's address {own:?}, the VIP {v:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // DSR: the client hands VIP traffic to b1's MAC (a route via b1's link-local address,
    // known in advance, so the client never solicits), b1 has forgotten the client, so its
    // answer from the VIP waits on a solicitation of its own. That one comes from b1's
    // interface, never from the VIP: the client learns nothing about the VIP.
    let b1_ll = b1
        .ip(&["-6", "-o", "addr", "show", "dev", "eth0", "scope", "link"])
        .expect("ip addr")
        .split_whitespace()
        .skip_while(|w| *w != "inet6")
        .nth(1)
        .and_then(|a| a.split('/').next().map(str::to_owned))
        .expect("b1 has a link-local address");
    c1.ip(&["-6", "neigh", "flush", "dev", "eth0"])
        .expect("flush");
    c1.ip(&[
        "-6",
        "neigh",
        "replace",
        &b1_ll,
        "lladdr",
        &b1_mac,
        "dev",
        "eth0",
        "nud",
        "permanent",
    ])
    .expect("pin b1");
    c1.ip(&[
        "-6",
        "route",
        "add",
        &format!("{vip}/128"),
        "via",
        &b1_ll,
        "dev",
        "eth0",
    ])
    .expect("route to the VIP via b1");
    b1.ip(&["-6", "neigh", "flush", "dev", "eth0"])
        .expect("flush");
    // Nothing listens on port 9: b1's kernel, holding the VIP, answers with a reset from
    // VIP:9, which is what refuses the connection (a reset from anywhere else would not).
    let to: SocketAddr = format!("[{vip}]:9").parse().expect("address");
    let refused = c1.run(|| TcpStream::connect_timeout(&to, Duration::from_secs(3)));
    assert_eq!(
        refused.as_ref().map_err(std::io::Error::kind).err(),
        Some(std::io::ErrorKind::ConnectionRefused),
        "b1 takes VIP traffic arriving on eth0 and answers from the VIP: {refused:?}"
    );
    assert!(
        neigh(&b1, c1_ip).is_some(),
        "b1 solicited the client to answer it"
    );
    assert_eq!(
        neigh(&c1, vip),
        None,
        "b1 announced the VIP in a solicitation"
    );
}
