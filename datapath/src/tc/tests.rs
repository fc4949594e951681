//! The fast-path program run by the kernel on test frames (`BPF_PROG_TEST_RUN`, root
//! only), held to what the user-space [`Processor`] decides for the same frames.

use std::net::Ipv4Addr;

use super::*;
use crate::counters::CounterRegistry;
use crate::packet::MacAddr;
use crate::process::{Processor, ProcessorConfig, Verdict};
use crate::table::{
    BackendSpec, BackendState, FarmLimits, FarmSpec, FlowHash, PersistSpec, Protocol,
};

const TC_ACT_OK: u32 = 0;
const TC_ACT_REDIRECT: u32 = 7;
const OWN: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);

/// Root, or a skip (a failure under `DSRLB_REQUIRE_LAB=1`, as CI runs).
fn root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var("DSRLB_REQUIRE_LAB").as_deref() != Ok("1"),
        "DSRLB_REQUIRE_LAB=1 but loading a tc program needs root"
    );
    eprintln!("SKIPPED: loading a tc program needs root");
    false
}

fn backend(name: &str, n: u8, state: BackendState) -> BackendSpec {
    BackendSpec {
        name: name.into(),
        ip: Ipv4Addr::new(198, 18, 1, n).into(),
        mac: Some(MacAddr([2, 0, 0, 0, 1, n])),
        weight: 1,
        state,
        healthy: true,
    }
}

fn farm(name: &str, protocol: Protocol, port: u16, backends: Vec<BackendSpec>) -> FarmSpec {
    FarmSpec {
        name: name.into(),
        vip: VIP.into(),
        protocol,
        ports: port..=port,
        backends,
        persistence: None,
        hash: FlowHash::FiveTuple,
        limits: FarmLimits::default(),
        maglev_size: 65_537,
    }
}

fn three() -> Vec<BackendSpec> {
    (1..=3)
        .map(|n| backend(&format!("b{n}"), n, BackendState::Up))
        .collect()
}

fn table(farms: &[FarmSpec], reg: &CounterRegistry) -> ForwardingTable {
    ForwardingTable::build(OWN, farms, reg).expect("valid table")
}

/// An untagged IPv4 frame to the VIP; `flags` are TCP flags (ignored for UDP).
fn frame(src: Ipv4Addr, sport: u16, protocol: u8, dport: u16, flags: u8) -> Vec<u8> {
    let l4 = if protocol == 6 { 20 } else { 8 };
    let mut f = vec![0u8; 14 + 20 + l4 + 16];
    f[0..6].copy_from_slice(&OWN.0);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 9, 9]);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    f[14] = 0x45;
    let total = (f.len() - 14) as u16;
    f[16..18].copy_from_slice(&total.to_be_bytes());
    f[22] = 64;
    f[23] = protocol;
    f[26..30].copy_from_slice(&src.octets());
    f[30..34].copy_from_slice(&VIP.octets());
    f[34..36].copy_from_slice(&sport.to_be_bytes());
    f[36..38].copy_from_slice(&dport.to_be_bytes());
    if protocol == 6 {
        f[46] = 5 << 4;
        f[47] = flags;
    } else {
        f[38..40].copy_from_slice(&(8u16 + 16).to_be_bytes());
    }
    f
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

fn loaded(t: &ForwardingTable) -> FastPath {
    let fp = FastPath::load(4096, "test").expect("the kernel loads the fast path program");
    fp.sync(t);
    fp.set_deadline(u64::MAX);
    fp
}

/// The program's verdict and the frame as it left it.
fn run(fp: &FastPath, f: &[u8]) -> (u32, Vec<u8>) {
    let mut out = f.to_vec();
    let rc = bpf::prog_test_run(&fp.prog, &mut out).expect("BPF_PROG_TEST_RUN");
    (rc, out)
}

#[test]
fn it_forwards_to_the_backend_the_processor_picks() {
    if !root() {
        return;
    }
    let reg = CounterRegistry::new(1);
    let t = table(
        &[
            farm("web", Protocol::Tcp, 80, three()),
            farm("dns", Protocol::Udp, 53, three()),
        ],
        &reg,
    );
    let fp = loaded(&t);
    let mut p = Processor::new(0, &ProcessorConfig::default());
    let mut seen = std::collections::HashSet::new();
    for i in 0..600u32 {
        let src = Ipv4Addr::from_bits(0xc612_0000 | (i * 7919 % 65_536));
        let sport = 1024 + (i * 131 % 60_000) as u16;
        let (proto, dport, flags) = match i % 3 {
            0 => (6, 80, SYN),
            1 => (6, 80, ACK),
            _ => (17, 53, 0),
        };
        let f = frame(src, sport, proto, dport, flags);
        let (rc, out) = run(&fp, &f);
        assert_eq!(rc, TC_ACT_REDIRECT, "frame {i} forwarded in the kernel");
        let mut user = f.clone();
        assert_eq!(p.process(&t, true, &mut user, 1), Verdict::Forward);
        assert_eq!(
            out[0..6],
            user[0..6],
            "frame {i}: same backend as user space"
        );
        assert_eq!(out[6..12], OWN.0, "source MAC is the node's");
        assert_eq!(out[12..], f[12..], "nothing past the MACs changes");
        seen.insert(out[5]);
    }
    assert_eq!(seen.len(), 3, "every backend takes flows");
    let forwarded: u64 = t.backends().map(|(_, b)| fp.count(b.id).packets).sum();
    assert_eq!(
        forwarded, 600,
        "the kernel counts each frame once, per backend"
    );
}

#[test]
fn without_the_lease_or_a_fast_farm_frames_go_to_user_space() {
    if !root() {
        return;
    }
    let reg = CounterRegistry::new(1);
    let mut sticky = farm("sticky", Protocol::Tcp, 443, three());
    sticky.persistence = Some(PersistSpec {
        ttl: std::time::Duration::from_secs(60),
        pins: crate::persist::PinRegistry::default().farm("sticky"),
    });
    let mut src_hash = farm("src", Protocol::Tcp, 8080, three());
    src_hash.hash = FlowHash::Source;
    let empty = farm("empty", Protocol::Tcp, 81, Vec::new());
    let mut strict = farm("strict", Protocol::Tcp, 82, three());
    strict.limits.tcp_strict = true;
    let mut capped = farm("capped", Protocol::Tcp, 83, three());
    capped.limits.max_flows = 10;
    let mut rr = farm("rr", Protocol::Tcp, 84, three());
    rr.hash = FlowHash::RoundRobin;
    let t = table(
        &[
            farm("web", Protocol::Tcp, 80, three()),
            sticky,
            src_hash,
            empty,
            strict,
            capped,
            rr,
        ],
        &reg,
    );
    let fp = loaded(&t);
    let c = Ipv4Addr::new(198, 18, 7, 7);
    for (what, f) in [
        ("persistent farm", frame(c, 5000, 6, 443, ACK)),
        ("source-hash farm", frame(c, 5000, 6, 8080, ACK)),
        ("farm without backends", frame(c, 5000, 6, 81, ACK)),
        ("tcp_strict farm", frame(c, 5000, 6, 82, ACK)),
        ("max_flows farm", frame(c, 5000, 6, 83, ACK)),
        ("rr farm", frame(c, 5000, 6, 84, ACK)),
        ("no farm on the port", frame(c, 5000, 6, 22, ACK)),
    ] {
        let (rc, out) = run(&fp, &f);
        assert_eq!((rc, &out), (TC_ACT_OK, &f), "{what}: passed unchanged");
    }
    let web = frame(c, 5000, 6, 80, ACK);
    let mut frag = web.clone();
    frag[20] = 0x20; // more fragments
    let mut options = web.clone();
    options[14] = 0x46;
    let mut truncated = web.clone();
    truncated[16..18].copy_from_slice(&1400u16.to_be_bytes());
    let mut short_total = web.clone();
    short_total[16..18].copy_from_slice(&30u16.to_be_bytes());
    for (what, f) in [
        ("a fragment", frag),
        ("IP options", options),
        ("a total length past the frame", truncated),
        ("a total length short of the TCP header", short_total),
    ] {
        let (rc, out) = run(&fp, &f);
        assert_eq!((rc, &out), (TC_ACT_OK, &f), "{what}: passed unchanged");
    }
    assert_eq!(run(&fp, &web).0, TC_ACT_REDIRECT, "the lease runs");
    fp.set_deadline(monotonic_ns() + 30_000_000);
    assert_eq!(run(&fp, &web).0, TC_ACT_REDIRECT, "within the deadline");
    std::thread::sleep(std::time::Duration::from_millis(40));
    let (rc, out) = run(&fp, &web);
    assert_eq!(
        (rc, &out),
        (TC_ACT_OK, &web),
        "past the deadline the kernel stops forwarding on its own"
    );
    fp.set_deadline(0);
    assert_eq!(run(&fp, &web).0, TC_ACT_OK, "not owner");
}

#[test]
fn an_established_flow_keeps_a_draining_backend_and_a_syn_does_not() {
    if !root() {
        return;
    }
    let reg = CounterRegistry::new(1);
    let t = table(&[farm("web", Protocol::Tcp, 80, three())], &reg);
    let fp = loaded(&t);
    // Flows past their SYN, one on each backend.
    let mut on: std::collections::HashMap<u8, (Ipv4Addr, u16)> = Default::default();
    for i in 0..200u16 {
        let c = Ipv4Addr::new(198, 18, 9, (i % 250) as u8);
        let (_, out) = run(&fp, &frame(c, 2000 + i, 6, 80, ACK));
        on.entry(out[5]).or_insert((c, 2000 + i));
    }
    assert_eq!(on.len(), 3);
    // b2 drains: it keeps its flows, takes no new ones.
    let mut b = three();
    b[1].state = BackendState::Drain;
    let drained = table(&[farm("web", Protocol::Tcp, 80, b)], &reg);
    fp.sync(&drained);
    let (c, port) = on[&2];
    let (_, out) = run(&fp, &frame(c, port, 6, 80, ACK));
    assert_eq!(
        out[5], 2,
        "the established flow stays on its draining backend"
    );
    let (_, out) = run(&fp, &frame(c, port, 6, 80, SYN));
    assert_ne!(
        out[5], 2,
        "a new connection (SYN) on the same tuple goes elsewhere"
    );
    // A SYN wrote no flow entry: a port never seen past its SYN follows Maglev.
    let fresh = (0..500u16)
        .map(|i| (Ipv4Addr::new(198, 18, 10, (i % 250) as u8), 40_000 + i))
        .find(|&(c, p)| {
            let mut f = frame(c, p, 6, 80, ACK);
            Processor::new(0, &ProcessorConfig::default()).process(&t, true, &mut f, 1);
            f[5] == 2
        })
        .expect("some tuple maps to b2 in the old table");
    fp.sync(&t);
    let (_, out) = run(&fp, &frame(fresh.0, fresh.1, 6, 80, SYN));
    assert_eq!(out[5], 2, "the SYN goes to b2 before the drain");
    fp.sync(&drained);
    let (_, out) = run(&fp, &frame(fresh.0, fresh.1, 6, 80, ACK));
    assert_ne!(out[5], 2, "only the SYN was seen: no entry held it on b2");
    // Down: flows leave it.
    let mut b = three();
    b[1].healthy = false;
    fp.sync(&table(&[farm("web", Protocol::Tcp, 80, b)], &reg));
    let (_, out) = run(&fp, &frame(c, port, 6, 80, ACK));
    assert_ne!(out[5], 2, "a backend that is down keeps no flow");
}

#[test]
fn a_sync_writes_only_what_the_changed_farms_changed() {
    if !root() {
        return;
    }
    let reg = CounterRegistry::new(1);
    let specs: Vec<FarmSpec> = (0..50u16)
        .map(|i| {
            let mut f = farm(&format!("f{i:02}"), Protocol::Tcp, 1000 + i, three());
            f.maglev_size = 307;
            f
        })
        .collect();
    let t = table(&specs, &reg);
    let fp = loaded(&t);
    let c = Ipv4Addr::new(198, 18, 7, 7);
    let to = |port: u16| frame(c, 5000, 6, port, ACK);
    assert_eq!(fp.maps().sync(&t).expect("sync").writes, 0, "same table");

    // b2 of one farm goes off: its backend entry, the farm's new slots and its key.
    let mut next = specs.clone();
    next[7].backends[1].state = BackendState::Off;
    let t2 = t.rebuild(&next, &reg).expect("valid");
    let s = fp.maps().sync(&t2).expect("sync");
    assert_eq!((s.fast, s.slow, s.writes), (50, 0, 3));
    for sport in 0..200 {
        let (rc, out) = run(&fp, &frame(c, 3000 + sport, 6, 1007, SYN));
        assert_eq!(rc, TC_ACT_REDIRECT);
        assert_ne!(out[5], 2, "b2 of f07 is off");
    }

    // In one change a port moves from f03 to f04 (f03 takes another) and f10 leaves: the
    // moved port keeps a key, the leaving farm's key and backends are deleted.
    let mut moved = next.clone();
    moved[3].ports = 2003..=2003;
    moved[4].ports = 1003..=1004;
    moved.remove(10);
    let t3 = t2.rebuild(&moved, &reg).expect("valid");
    let s = fp.maps().sync(&t3).expect("sync");
    // Keys 2003 (f03) and 1003 (f04, new value); f10's key and its three backends.
    assert_eq!((s.fast, s.writes), (49, 6));
    for (port, rc) in [
        (1003, TC_ACT_REDIRECT),
        (1004, TC_ACT_REDIRECT),
        (2003, TC_ACT_REDIRECT),
        (1010, TC_ACT_OK),
        (1011, TC_ACT_REDIRECT),
    ] {
        assert_eq!(run(&fp, &to(port)).0, rc, "port {port}");
    }
    // The same specs built from scratch (no farm shared) write the same maps again.
    let fresh = table(&moved, &reg);
    fp.maps().sync(&fresh).expect("sync");
    for (port, rc) in [
        (1003, TC_ACT_REDIRECT),
        (1010, TC_ACT_OK),
        (1049, TC_ACT_REDIRECT),
    ] {
        assert_eq!(run(&fp, &to(port)).0, rc, "port {port} after a full sync");
    }
}

#[test]
fn farms_refused_for_want_of_slots_try_again_only_when_room_was_freed() {
    if !root() {
        return;
    }
    let reg = CounterRegistry::new(1);
    // 31 regions of 65,537 slots fit in the slot array; two farms more are refused.
    let specs: Vec<FarmSpec> = (0..33u16)
        .map(|i| farm(&format!("f{i:02}"), Protocol::Tcp, 1000 + i, three()))
        .collect();
    let t = table(&specs, &reg);
    let fp = FastPath::load(4096, "test").expect("the kernel loads the fast path program");
    fp.set_deadline(u64::MAX);
    let s = fp.maps().sync(&t).expect("sync");
    assert_eq!((s.fast, s.slow), (31, 2));
    let c = Ipv4Addr::new(198, 18, 7, 7);
    let redirected = |fp: &FastPath| {
        (1000..1033u16)
            .filter(|&p| run(fp, &frame(c, 5000, 6, p, ACK)).0 == TC_ACT_REDIRECT)
            .count()
    };
    assert_eq!(redirected(&fp), 31);
    // Nothing freed: the refused farms are not tried again (no writes at all).
    assert_eq!(fp.maps().sync(&t).expect("sync").writes, 0);
    // A fast farm leaves; its region is freed after the sync that removes it, and the next
    // sync places one refused farm there, not both.
    let fewer = t.rebuild(&specs[1..], &reg).expect("valid");
    let s = fp.maps().sync(&fewer).expect("sync");
    assert_eq!((s.fast, s.slow), (30, 2));
    // The next table, rebuilt with nothing changed, is written from its lineage (no farm
    // compared); the retry still happens.
    let again = fewer.rebuild(&specs[1..], &reg).expect("valid");
    assert_eq!(again.rebuilt_farms(), 0);
    let s = fp.maps().sync(&again).expect("sync");
    assert_eq!((s.fast, s.slow), (31, 1));
    assert_eq!(redirected(&fp), 31);
    // Compared farm by farm (not rebuilt from the table written last): nothing to write.
    assert_eq!(fp.maps().sync(&fewer).expect("sync").writes, 0);
}
