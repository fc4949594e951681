//! Unit tests of the ARP prober's pure parts: round tags, claim extraction from captured
//! frames, and the analysis (gaps, takeovers, dual owners).

use super::*;
use crate::capture::parse_frame;

const A: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x11]);
const B: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x12]);
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);

fn ms(base: Instant, n: u64) -> Instant {
    base + Duration::from_millis(n)
}
/// Probes every 10 ms from `base`.
fn rounds(base: Instant, n: usize) -> Vec<Instant> {
    (0..n).map(|k| ms(base, 10 * k as u64)).collect()
}
fn reply(base: Instant, at: u64, mac: MacAddr, round: usize) -> ArpClaim {
    ArpClaim {
        at: ms(base, at),
        mac,
        round: Some(round),
    }
}

#[test]
fn tags_round_trip_and_foreign_addresses_are_no_rounds() {
    for r in [0, 1, 255, 256, MAX_ROUNDS - 1] {
        assert_eq!(round_of(round_tag(r)), Some(r));
    }
    assert_eq!(round_tag(MAX_ROUNDS), round_tag(0));
    assert_eq!(round_of(Ipv4Addr::new(198, 18, 0, 31)), None);
}

#[test]
fn a_reply_made_from_a_probe_names_its_round() {
    let client = MacAddr([2, 0, 0, 0, 0, 0x31]);
    let mut f = probe_frame(client, VIP, 300);
    // What the owner's datapath does to the request: swap roles, claim the VIP.
    f[0..6].copy_from_slice(&client.0);
    f[6..12].copy_from_slice(&A.0);
    let tag = f[28..32].to_vec();
    f[20..22].copy_from_slice(&2u16.to_be_bytes());
    f[22..28].copy_from_slice(&A.0);
    f[28..32].copy_from_slice(&VIP.octets());
    f[32..38].copy_from_slice(&client.0);
    f[38..42].copy_from_slice(&tag);
    let now = Instant::now();
    let frame = parse_frame(&f, f.len(), 0, now, now).expect("parses");
    let request = parse_frame(&probe_frame(client, VIP, 300), 60, 4, now, now).expect("ok");
    assert_eq!(
        claims(&[request.clone(), frame.clone()], VIP, 301),
        vec![ArpClaim {
            at: now,
            mac: A,
            round: Some(300)
        }],
        "the probe itself claims nothing; the reply answers round 300"
    );
    assert_eq!(
        claims(&[frame], VIP, 300)[0].round,
        None,
        "round 300 was never sent"
    );
    assert!(request.is_arp_request_for(VIP));
}

#[test]
fn steady_state_has_one_owner_and_no_gap() {
    let base = Instant::now();
    let r = rounds(base, 100);
    let c: Vec<ArpClaim> = (0..100)
        .map(|k| reply(base, 10 * k as u64 + 1, A, k))
        .collect();
    let a = analyze(&r, &c);
    assert_eq!((a.probes, a.answered), (100, 100));
    assert_eq!(a.macs, vec![(A, 100)]);
    assert!(a.dual.is_empty(), "{:?}", a.dual);
    assert_eq!(a.longest_gap, Duration::from_millis(10));
}

#[test]
fn a_takeover_is_a_gap_not_a_dual_owner() {
    let base = Instant::now();
    let r = rounds(base, 100);
    let mut c: Vec<ArpClaim> = (0..30)
        .map(|k| reply(base, 10 * k as u64 + 2, A, k))
        .collect();
    // A dies after round 29 (reply at 292 ms); B announces at 595 ms and answers from 60.
    c.push(ArpClaim {
        at: ms(base, 595),
        mac: B,
        round: None,
    });
    c.extend((60..100).map(|k| reply(base, 10 * k as u64 + 3, B, k)));
    let a = analyze(&r, &c);
    assert!(a.dual.is_empty(), "{:?}", a.dual);
    assert_eq!(a.owners(), vec![A, B]);
    assert_eq!(a.answered, 70);
    assert_eq!(a.longest_gap, Duration::from_millis(603 - 292));
    assert_eq!(a.gap_from, Some(ms(base, 292)));
}

#[test]
fn detects_two_owners_in_one_round_and_a_flip_back() {
    let base = Instant::now();
    let r = rounds(base, 10);
    // Both A and B answer probe 3; later A answers again after B did.
    let c = vec![
        reply(base, 1, A, 0),
        reply(base, 31, A, 3),
        reply(base, 32, B, 3),
        reply(base, 41, B, 4),
        reply(base, 51, A, 5),
    ];
    let a = analyze(&r, &c);
    assert!(
        a.dual.contains(&DualOwner::SameRound {
            round: 3,
            macs: vec![A, B]
        }),
        "{:?}",
        a.dual
    );
    assert!(
        a.dual.contains(&DualOwner::FlipBack {
            back: A,
            other: B,
            index: 4
        }),
        "{:?}",
        a.dual
    );
    assert_eq!(a.dual.len(), 2);
}

#[test]
fn an_unsolicited_claim_counts_in_the_round_it_was_read() {
    let base = Instant::now();
    let r = rounds(base, 5);
    // A answers probe 2 at 21 ms; B's gratuitous ARP is read at 25 ms, still in round 2.
    let c = vec![
        reply(base, 21, A, 2),
        ArpClaim {
            at: ms(base, 25),
            mac: B,
            round: None,
        },
    ];
    let a = analyze(&r, &c);
    assert_eq!(
        a.dual,
        vec![DualOwner::SameRound {
            round: 2,
            macs: vec![A, B]
        }]
    );
}

#[test]
fn no_reply_at_all_is_one_gap_over_the_whole_window() {
    let base = Instant::now();
    let a = analyze(&rounds(base, 50), &[]);
    assert_eq!(a.longest_gap, Duration::from_millis(490));
    assert_eq!((a.answered, a.gap_from), (0, Some(base)));
    assert_eq!(analyze(&[], &[]), ArpAnalysis::default());
}
