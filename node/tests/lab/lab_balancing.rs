//! One node, three backends: TCP requests through the VIP all succeed and spread by weight;
//! UDP requests succeed too.

use crate::common::{SingleNode, can_run_lab};
use lab::LabFarm;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

#[test]
fn tcp_requests_spread_by_weight_and_udp_is_answered() {
    if !can_run_lab() {
        return;
    }
    let weights = [1u32, 1, 2];
    let web = LabFarm {
        backends: vec![(0, weights[0]), (1, weights[1]), (2, weights[2])],
        ..LabFarm::new("web", "tcp", lab::BACKEND_HTTP_PORT, &[])
    };
    let echo = LabFarm::new("echo", "udp", lab::BACKEND_UDP_PORT, &[0, 1, 2]);
    let s = SingleNode::start(3, 0, &[web, echo]);
    let vip = s.lab.vip();
    let client = s.lab.clients()[0].clone();

    let (ok, per) = client.run(|| {
        let addr = SocketAddr::from((vip, lab::BACKEND_HTTP_PORT));
        let mut per: BTreeMap<String, u32> = BTreeMap::new();
        let mut ok = 0;
        for i in 0..300 {
            let reply = lab::http_get(addr, "/").unwrap_or_else(|e| panic!("request {i}: {e}"));
            assert_eq!(reply.status, 200);
            *per.entry(reply.backend().expect("names its backend").to_string())
                .or_default() += 1;
            ok += 1;
        }
        (ok, per)
    });
    assert_eq!(ok, 300);
    let total_weight: u32 = weights.iter().sum();
    for (i, w) in weights.iter().enumerate() {
        let name = format!("b{}", i + 1);
        let share = f64::from(*per.get(&name).unwrap_or(&0)) / 300.0;
        let expected = f64::from(*w) / f64::from(total_weight);
        // 10 percentage points: about four standard deviations of 300 draws.
        assert!(
            (share - expected).abs() <= 0.10,
            "{name}: share {share:.3}, weight share {expected:.3}; all: {per:?}"
        );
    }

    let replies = client.run(|| {
        let addr = SocketAddr::from((vip, lab::BACKEND_UDP_PORT));
        (0..30)
            .map(|i| {
                lab::udp_request(addr, format!("ping {i}").as_bytes(), Duration::from_secs(2))
                    .unwrap_or_else(|e| panic!("udp request {i}: {e}"))
            })
            .collect::<Vec<_>>()
    });
    for (i, r) in replies.iter().enumerate() {
        assert!(
            r.starts_with("backend=b") && r.ends_with(&format!("ping {i}")),
            "udp reply {i}: {r:?}"
        );
    }
}

/// `scheduler = "srchash"` (docs/design.md#schedulers): every connection of one client
/// address reaches one backend, without persistence, and the clients spread over backends.
#[test]
fn srchash_keeps_each_client_on_one_backend() {
    if !can_run_lab() {
        return;
    }
    let web = LabFarm {
        scheduler: Some("srchash"),
        ..LabFarm::new("web", "tcp", lab::BACKEND_HTTP_PORT, &[0, 1, 2])
    };
    let s = SingleNode::start(3, 8, &[web]);
    let addr = SocketAddr::from((s.lab.vip(), lab::BACKEND_HTTP_PORT));
    let mut sources = vec![s.lab.clients()[0].ip];
    sources.extend_from_slice(s.lab.client_extra_ips());
    let per_source: BTreeMap<_, Vec<String>> = s.lab.clients()[0].run(|| {
        sources
            .iter()
            .map(|&src| {
                let got = (0..6)
                    .map(|i| {
                        crate::common::wait_for(Duration::from_secs(3), || {
                            let mut c = lab::HttpConn::connect_from(
                                Some(src),
                                addr,
                                Duration::from_secs(1),
                            )
                            .ok()?;
                            c.get("/", false).ok()?.backend().map(str::to_owned)
                        })
                        .unwrap_or_else(|| panic!("{src}: request {i} unanswered"))
                    })
                    .collect();
                (src, got)
            })
            .collect()
    });
    for (src, got) in &per_source {
        assert!(got.iter().all(|b| *b == got[0]), "{src} went to {got:?}");
    }
    let used: std::collections::BTreeSet<_> = per_source.values().map(|g| &g[0]).collect();
    assert!(used.len() >= 2, "9 clients all on {used:?}");
}
