//! Every invariant checker, fed what a broken run would record, must say so: two MACs on one
//! probe round, a stale node forwarding between the owner's frames, a stream with a corrupted
//! byte, cut short or reset (real streams from a misbehaving local server, read by the lab's
//! own verified download), a stream that stopped moving, an acknowledged write missing, a
//! write that was never made, nodes that disagree. Clean inputs pass, so no check is vacuous
//! and none cries wolf. No root needed.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::fd::AsFd;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use chaos_tests::invariants::convergence::{self, NodeView};
use chaos_tests::invariants::writes::{self, LedgerView};
use chaos_tests::invariants::{pins, single_owner, streams};
use chaos_tests::rng::{Rng, parse_seed};
use chaos_tests::workload::streams::StreamOutcome;
use chaos_tests::workload::writes::{WriteHistory, WriteOp, WriteOutcome, judge};
use dsrctl::CtlError;
use lab::arp_probe::round_tag;
use lab::capture::{ArpSummary, Ipv4Summary};
use lab::pattern::pattern_byte;
use lab::{Frame, MacAddr};

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const CLIENT: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x31]);
const BACKEND: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x21]);
const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x11]);
const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x12]);
const VIP6: std::net::Ipv6Addr = lab::DEFAULT_VIP6;

fn frame(at: Instant, src: MacAddr, dst: MacAddr) -> Frame {
    Frame {
        at,
        since_start: Duration::ZERO,
        len: 60,
        dst_mac: dst,
        src_mac: src,
        ethertype: 0x0806,
        pkttype: 0,
        arp: None,
        ipv4: None,
        ipv6: None,
    }
}

/// `mac`'s answer to probe round `round`.
fn reply(at: Instant, mac: MacAddr, round: usize) -> Frame {
    Frame {
        arp: Some(ArpSummary {
            op: 2,
            sender_mac: mac,
            sender_ip: VIP,
            target_mac: CLIENT,
            target_ip: round_tag(round),
        }),
        ..frame(at, mac, CLIENT)
    }
}

/// A client frame for the VIP sent on by node `mac` to a backend.
fn forward(at: Instant, mac: MacAddr) -> Frame {
    Frame {
        ethertype: 0x0800,
        ipv4: Some(Ipv4Summary {
            src: Ipv4Addr::new(198, 18, 0, 31),
            dst: VIP,
            proto: 6,
            src_port: Some(40_000),
            dst_port: Some(80),
            tcp_flags: Some(0x10),
        }),
        ..frame(at, mac, BACKEND)
    }
}

fn judge_wire(frames: &[Frame], rounds: &[Instant]) -> single_owner::OwnerReport {
    let obs = single_owner::observations(frames, VIP, Some(VIP6), &[A, B], rounds.len());
    single_owner::check(&obs, rounds)
}

fn ms(t0: Instant, n: u64) -> Instant {
    t0 + Duration::from_millis(n)
}

#[test]
fn single_owner_fails_when_two_macs_answer_one_probe() {
    let t0 = Instant::now();
    let rounds: Vec<Instant> = (0..10).map(|k| ms(t0, 10 * k)).collect();
    let mut frames: Vec<Frame> = (0..10)
        .map(|k| reply(ms(t0, 10 * k + 1), A, k as usize))
        .collect();
    frames.insert(4, reply(ms(t0, 32), B, 3));
    let r = judge_wire(&frames, &rounds);
    assert!(!r.ok(), "two answers to round 3 went unseen");
    assert!(
        r.violations().iter().any(|v| v.contains("probe round 3")),
        "{:?}",
        r.violations()
    );
    assert!(r.two_owners >= Duration::from_millis(1));
}

#[test]
fn single_owner_fails_when_a_stale_node_forwards_between_the_owners_frames() {
    let t0 = Instant::now();
    // B owns and forwards every 2 ms; A (resumed, stale) forwards a few frames from its ring.
    let mut frames: Vec<Frame> = (0..50).map(|k| forward(ms(t0, 2 * k), B)).collect();
    frames.insert(20, forward(ms(t0, 39), A));
    frames.insert(21, forward(ms(t0, 39), A));
    let r = judge_wire(&frames, &[]);
    assert!(
        !r.ok(),
        "a stale forward between the owner's frames went unseen"
    );
    assert_eq!(r.turns, vec![B, A, B]);
}

/// An advertisement of the IPv6 VIP from `mac` (solicited or not: either claims it).
fn advert(at: Instant, mac: MacAddr) -> Frame {
    Frame {
        ethertype: 0x86dd,
        ipv6: Some(lab::Ipv6Summary {
            src: VIP6,
            dst: "ff02::1".parse().unwrap(),
            next: 58,
            icmp_type: Some(136),
            nd_target: Some(VIP6),
        }),
        ..frame(at, mac, MacAddr([0x33, 0x33, 0, 0, 0, 1]))
    }
}

/// A client frame for the IPv6 VIP sent on by node `mac`.
fn forward6(at: Instant, mac: MacAddr) -> Frame {
    Frame {
        ethertype: 0x86dd,
        ipv6: Some(lab::Ipv6Summary {
            src: "2001:db8::31".parse().unwrap(),
            dst: VIP6,
            next: 6,
            icmp_type: None,
            nd_target: None,
        }),
        ..frame(at, mac, BACKEND)
    }
}

#[test]
fn single_owner_fails_when_a_stale_node_advertises_the_ipv6_vip_while_another_owns() {
    let t0 = Instant::now();
    let rounds: Vec<Instant> = (0..20).map(|k| ms(t0, 10 * k)).collect();
    let mut frames: Vec<Frame> = (0..20)
        .map(|k| reply(ms(t0, 10 * k + 1), B, k as usize))
        .collect();
    frames.insert(8, advert(ms(t0, 75), A));
    let r = judge_wire(&frames, &rounds);
    assert!(!r.ok(), "A's advertisement amid B's ownership went unseen");
    assert_eq!(r.turns, vec![B, A, B]);

    // IPv6 forwarding by a stale node is caught the same way.
    let mut frames: Vec<Frame> = (0..50).map(|k| forward6(ms(t0, 2 * k), B)).collect();
    frames.insert(20, forward6(ms(t0, 39), A));
    let r = judge_wire(&frames, &[]);
    assert!(!r.ok(), "a stale IPv6 forward went unseen");

    // A takeover's advertisements after the old owner went quiet are a clean handover.
    let mut frames: Vec<Frame> = (0..5)
        .map(|k| reply(ms(t0, 10 * k + 1), A, k as usize))
        .collect();
    frames.push(advert(ms(t0, 400), B));
    frames.extend((50..60).map(|k| reply(ms(t0, 10 * k + 1), B, k as usize)));
    let rounds: Vec<Instant> = (0..60).map(|k| ms(t0, 10 * k)).collect();
    let r = judge_wire(&frames, &rounds);
    assert!(r.ok(), "{:?}", r.violations());
    assert_eq!(r.turns, vec![A, B]);
}

#[test]
fn single_owner_passes_clean_handovers_and_a_legitimate_return() {
    let t0 = Instant::now();
    let rounds: Vec<Instant> = (0..200).map(|k| ms(t0, 10 * k)).collect();
    let mut frames = Vec::new();
    // A owns, dies; B takes over after an election; later B dies and A (restarted) leads.
    for k in 0..40 {
        frames.push(reply(ms(t0, 10 * k + 1), A, k as usize));
        frames.push(forward(ms(t0, 10 * k + 5), A));
    }
    for k in 70..140 {
        frames.push(reply(ms(t0, 10 * k + 1), B, k as usize));
        frames.push(forward(ms(t0, 10 * k + 5), B));
    }
    for k in 170..200 {
        frames.push(reply(ms(t0, 10 * k + 1), A, k as usize));
    }
    let r = judge_wire(&frames, &rounds);
    assert!(r.ok(), "{:?}", r.violations());
    assert_eq!(r.turns, vec![A, B, A]);
    assert_eq!(r.two_owners, Duration::ZERO);
    // The outages: 300 ms before B, 300 ms before A's return.
    let obs = single_owner::observations(&frames, VIP, Some(VIP6), &[A, B], rounds.len());
    let longest = single_owner::longest_outage(&obs, &rounds);
    assert!(
        (Duration::from_millis(290)..Duration::from_millis(320)).contains(&longest),
        "{longest:?}"
    );
    let after = single_owner::outage_after(&obs, &rounds, ms(t0, 400)).expect("answered");
    assert_eq!(after, Duration::from_millis(301));
}

/// What the misbehaving server does to its `/bytes` answer.
#[derive(Clone, Copy)]
enum Defect {
    None,
    Corrupt(usize),
    Short(usize),
    Reset(usize),
}

/// Serves one `GET /bytes/<len>` on 127.0.0.1 with `defect`; the lab's verified download
/// reads it, as a lab stream reads a backend through the VIP.
fn stream_from(defect: Defect, len: usize) -> StreamOutcome {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") && head.len() < 4096 {
            if conn.read(&mut byte).expect("request") == 0 {
                return;
            }
            head.push(byte[0]);
        }
        let mut body: Vec<u8> = (0..len as u64).map(pattern_byte).collect();
        let cut = match defect {
            Defect::None => len,
            Defect::Corrupt(at) => {
                body[at] ^= 0x5a;
                len
            }
            Defect::Short(at) | Defect::Reset(at) => at,
        };
        let reply = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nx-backend: bad\r\n\r\n");
        conn.write_all(reply.as_bytes()).expect("head");
        // The peer may already have given up on a corrupted byte.
        let _ = conn.write_all(&body[..cut]);
        if let Defect::Reset(_) = defect {
            // Linger 0: close() sends RST instead of FIN.
            let linger = nix::libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            nix::sys::socket::setsockopt(&conn.as_fd(), nix::sys::socket::sockopt::Linger, &linger)
                .expect("SO_LINGER");
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let progress = AtomicU64::new(0);
    let result = lab::stream::download_paced(addr, len as u64, 1 << 30, &progress);
    server.join().expect("server thread");
    let now = Instant::now();
    let got = progress.load(std::sync::atomic::Ordering::Relaxed);
    StreamOutcome {
        target: addr,
        backend: Some("bad".into()),
        bytes: result.as_ref().map_or(got, |n| *n),
        error: result.err().map(|e| e.to_string()),
        longest_stall: Duration::ZERO,
        samples: vec![(now - Duration::from_millis(10), got / 2), (now, got)],
    }
}

fn stream_violations(defect: Defect) -> Vec<String> {
    let outcome = stream_from(defect, 200_000);
    streams::check(&[outcome], |_| false, None)
}

#[test]
fn streams_fail_on_a_corrupted_byte() {
    let v = stream_violations(Defect::Corrupt(123_457));
    assert!(
        v.len() == 1 && v[0].contains("offset 123457"),
        "a corrupted byte went unseen: {v:?}"
    );
}

#[test]
fn streams_fail_when_cut_short() {
    let v = stream_violations(Defect::Short(50_000));
    assert!(
        v.len() == 1 && v[0].contains("short transfer"),
        "a gap went unseen: {v:?}"
    );
}

#[test]
fn streams_fail_on_a_reset() {
    let v = stream_violations(Defect::Reset(50_000));
    assert!(
        v.len() == 1 && v[0].contains("broke"),
        "a reset went unseen: {v:?}"
    );
}

#[test]
fn streams_pass_a_clean_stream_and_fail_a_doomed_one_that_survives() {
    let clean = stream_from(Defect::None, 200_000);
    assert!(clean.error.is_none(), "{:?}", clean.error);
    assert_eq!(clean.bytes, 200_000);
    assert!(streams::check(std::slice::from_ref(&clean), |_| false, None).is_empty());
    // Expected to break (its backend was killed) but did not: the check cannot see breaks.
    let v = streams::check(&[clean], |_| true, None);
    assert!(v.len() == 1 && v[0].contains("outlived"), "{v:?}");
}

#[test]
fn streams_fail_when_a_stream_stops_moving() {
    let t0 = Instant::now();
    let stuck = StreamOutcome {
        target: SocketAddr::from((VIP, 80)),
        backend: Some("b1".into()),
        bytes: 4096,
        error: None,
        longest_stall: Duration::from_secs(3),
        samples: vec![(t0, 1024), (ms(t0, 100), 4096), (ms(t0, 3000), 4096)],
    };
    let v = streams::check(&[stuck], |_| false, Some(ms(t0, 200)));
    assert!(v.len() == 1 && v[0].contains("did not move"), "{v:?}");
}

fn op(name: &str, outcome: WriteOutcome) -> WriteOp {
    let now = Instant::now();
    WriteOp {
        farm: "ledger0".into(),
        name: name.into(),
        sent: now,
        done: now,
        outcome,
    }
}

fn ledger(node: usize, names: &[&str]) -> LedgerView {
    LedgerView {
        node,
        names: Ok(names
            .iter()
            .map(|n| (*n).to_owned())
            .collect::<BTreeSet<_>>()),
    }
}

#[test]
fn writes_fail_on_a_lost_acknowledged_write_and_on_a_phantom() {
    let history = WriteHistory {
        ops: vec![
            op("w0", WriteOutcome::Acked),
            op("w1", WriteOutcome::Acked),
            op("w2", WriteOutcome::Unknown("timed out".into())),
            op("w3", WriteOutcome::Refused("invalid".into())),
            op("w4", WriteOutcome::Acked),
        ],
    };
    // Unknown writes may be there or not; both nodes are fine.
    let good = [
        ledger(0, &["w0", "w1", "w4"]),
        ledger(1, &["w0", "w1", "w2", "w4"]),
    ];
    assert!(writes::check(&history, &good).is_empty());

    let lost = writes::check(&history, &[ledger(2, &["w0", "w2", "w4"])]);
    assert!(
        lost.len() == 1 && lost[0].contains("lost 1 acknowledged") && lost[0].contains("w1"),
        "{lost:?}"
    );
    let phantom = writes::check(&history, &[ledger(0, &["w0", "w1", "w3", "w4", "w9"])]);
    assert!(
        phantom.len() == 1 && phantom[0].contains("w3, w9"),
        "{phantom:?}"
    );
    let silent = writes::check(
        &history,
        &[LedgerView {
            node: 1,
            names: Err("unreachable".into()),
        }],
    );
    assert_eq!(silent.len(), 1, "{silent:?}");
}

#[test]
fn write_outcomes_are_judged_conservatively() {
    let rpc = |code| {
        Err(CtlError::Rpc {
            endpoint: "http://198.18.0.11:7101".into(),
            code,
            message: "x".into(),
        })
    };
    assert_eq!(judge(&Ok(())), WriteOutcome::Acked);
    assert_eq!(judge(&rpc(tonic::Code::AlreadyExists)), WriteOutcome::Acked);
    assert!(matches!(
        judge(&rpc(tonic::Code::InvalidArgument)),
        WriteOutcome::Refused(_)
    ));
    for unknown in [
        rpc(tonic::Code::Unavailable),
        rpc(tonic::Code::Internal),
        rpc(tonic::Code::DeadlineExceeded),
        Err(CtlError::TimedOut {
            endpoint: "e".into(),
            after: "2s".into(),
        }),
        Err(CtlError::Unreachable {
            endpoints: vec!["e".into()],
            cause: "refused".into(),
        }),
    ] {
        assert!(
            matches!(judge(&unknown), WriteOutcome::Unknown(_)),
            "{unknown:?} judged {:?}",
            judge(&unknown)
        );
    }
}

fn view(node: usize, config: &str, owner: u64, term: u64, owns: bool) -> NodeView {
    NodeView {
        node,
        config: Ok(config.into()),
        status: Ok((owner, term)),
        owns: Ok(owns),
    }
}

#[test]
fn convergence_fails_on_disagreement() {
    let good = [
        view(0, "a\nb", 2, 7, false),
        view(1, "a\nb", 2, 7, true),
        view(2, "a\nb", 2, 7, false),
    ];
    assert!(convergence::check(&good).is_empty());

    let mut config = good.clone();
    config[2].config = Ok("a\nc".into());
    let v = convergence::check(&config);
    assert!(
        v.len() == 1 && v[0].contains("line 2"),
        "a diverged config went unseen: {v:?}"
    );

    let mut two = good.clone();
    two[0].owns = Ok(true);
    assert_eq!(convergence::check(&two).len(), 1, "two metric owners");

    let mut none = good.clone();
    for w in &mut none {
        w.status = Ok((0, 7));
        w.owns = Ok(false);
    }
    assert!(!convergence::check(&none).is_empty(), "no owner at all");

    let mut terms = good.clone();
    terms[0].status = Ok((2, 6));
    assert_eq!(convergence::check(&terms).len(), 1, "a node in an old term");

    let mut silent = good;
    silent[1].config = Err("unreachable".into());
    assert!(!convergence::check(&silent).is_empty(), "a silent node");
}

#[test]
fn a_seed_replays_the_same_choices() {
    let draw = |seed| {
        let mut r = Rng::for_scenario(seed, "kill_leader");
        let mut order: Vec<usize> = (0..5).collect();
        r.shuffle(&mut order);
        (r.millis(50, 400), r.pick(&[1, 2, 3]), order)
    };
    assert_eq!(draw(42), draw(42));
    assert_ne!(draw(42), draw(43));
    let mut r = Rng::for_scenario(42, "a");
    assert!((0..1000).all(|_| (10..=20).contains(&r.millis(10, 20).as_millis())));
    assert_eq!(parse_seed("0x2a"), Some(42));
    assert_eq!(parse_seed(" 42 "), Some(42));
    assert_eq!(parse_seed("forty-two"), None);
}

#[test]
fn pins_fail_when_a_persistent_client_moves_or_goes_unanswered() {
    let c = |i: u8| Ipv4Addr::new(198, 18, 0, i);
    let pinned: std::collections::BTreeMap<Ipv4Addr, String> =
        [(c(60), "b1".to_string()), (c(61), "b2".to_string())].into();
    let same = [
        (c(60), Some("b1".to_string())),
        (c(61), Some("b2".to_string())),
    ]
    .into();
    assert!(pins::check(&pinned, &same).is_empty());
    let moved = [(c(60), Some("b3".to_string())), (c(61), None)].into();
    let v = pins::check(&pinned, &moved);
    assert_eq!(v.len(), 2, "{v:?}");
    assert!(v[0].contains("moved from b1 to b3") && v[1].contains("no answer"));
    assert_eq!(pins::check(&pinned, &Default::default()).len(), 2);
}
