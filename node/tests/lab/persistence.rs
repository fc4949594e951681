//! Source-IP persistence on a 3-node cluster, seen from clients with many source addresses:
//! each client keeps one backend across connections; pins are replicated to every node, so
//! after a backend change and a kill -9 of the owner every pinned client still reaches its
//! old backend; pins expire after the TTL on every node; drained backends keep their pins,
//! off and down ones lose them; a restart of the whole cluster keeps unexpired pins; a step
//! of the leader's wall clock by an hour either way neither expires pins nor keeps them.
//! (Flushing is shown with `dsrctl` in `dsrctl_persistence`.)

use crate::admin_support::{Client, endpoint, in_client};
use crate::common::{ClusterLab, can_run_lab, dsrlb, wait_for};
use lab::{HttpConn, Lab, LabFarm, LabProcess, LabSpec, scrape};
use proto::admin::v1 as pb;
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

/// A 3-node cluster lab with the persistence checks these tests make on it.
struct Cluster(ClusterLab);

impl std::ops::Deref for Cluster {
    type Target = ClusterLab;
    fn deref(&self) -> &ClusterLab {
        &self.0
    }
}

impl std::ops::DerefMut for Cluster {
    fn deref_mut(&mut self) -> &mut ClusterLab {
        &mut self.0
    }
}

impl Cluster {
    fn start(backends: usize, extra_ips: usize, farms: Vec<LabFarm>) -> Cluster {
        Cluster(ClusterLab::start_with_ips(
            3,
            backends,
            extra_ips,
            &farms,
            &[],
        ))
    }

    /// [`Cluster::start`] with every node's wall clock under the lab's control
    /// ([`Lab::set_clock_offset`]), at the machine's time to begin with.
    fn start_with_fake_clocks(backends: usize, extra_ips: usize, farms: Vec<LabFarm>) -> Cluster {
        let spec = LabSpec {
            nodes: 3,
            backends,
            clients: 1,
            client_extra_ips: extra_ips,
            ..LabSpec::default()
        };
        let built = Lab::build(&spec).expect("lab");
        for i in 0..3 {
            built.set_clock_offset(i, "+0").expect("clock offset");
        }
        Cluster(ClusterLab(
            lab::ClusterLab::start_in(built, dsrlb(), &farms, &[])
                .expect("the cluster starts with one owner"),
        ))
    }

    /// `ListPersistence` of `farm` answered by node `i`: client → ms until it expires.
    fn expires_in(&self, i: usize, farm: &str) -> BTreeMap<String, u64> {
        let farm = farm.to_string();
        self.admin(i, |mut c| async move {
            c.list_persistence(pb::ListPersistenceRequest {
                farm,
                client: None,
                limit: 0,
            })
            .await
            .expect("list persistence")
            .into_inner()
            .entries
            .into_iter()
            .map(|e| (e.client, e.expires_in_ms))
            .collect()
        })
    }

    /// Every client address: the client's own and its extra ones.
    fn sources(&self) -> Vec<Ipv4Addr> {
        let mut v = vec![self.lab.clients()[0].ip];
        v.extend_from_slice(self.lab.client_extra_ips());
        v
    }

    /// `dsrlb_persistence_entries{farm}` on node `i` (0 when the node has none or is down).
    fn entries(&self, i: usize, farm: &str) -> usize {
        scrape(&self.lab.nodes()[i])
            .map(|m| m.get("dsrlb_persistence_entries", &[("farm", farm)]) as usize)
            .unwrap_or(0)
    }

    /// Waits (bounded) until every running node holds `n` pins of `farm`.
    fn await_entries(&self, farm: &str, n: usize, limit: Duration) {
        let running = self.running();
        let ok = wait_for(limit, || {
            running
                .iter()
                .all(|&i| self.entries(i, farm) == n)
                .then_some(())
        });
        let seen: Vec<usize> = running.iter().map(|&i| self.entries(i, farm)).collect();
        assert!(
            ok.is_some(),
            "nodes {running:?} hold {seen:?} pins of {farm}, expected {n} each"
        );
    }

    /// kill -9 of every node, then all of them again from their data dirs, waiting until one
    /// owns the VIP and every node has every backend up.
    fn restart_all(&mut self) {
        let lab = &mut self.0;
        for i in 0..3 {
            lab.kill(i);
        }
        for i in 0..3 {
            lab.restart(i);
        }
        let mut procs: Vec<LabProcess> = (0..3)
            .map(|i| lab.take_running(i).expect("restarted"))
            .collect();
        let farms = lab.farms.clone();
        let ready = lab
            .lab
            .wait_ready(&mut procs, &[0, 1, 2], &farms, Duration::from_secs(20));
        lab.procs = procs.into_iter().map(Some).collect();
        ready.expect("the restarted cluster is ready");
    }

    /// An admin call through node `node`'s endpoint.
    fn admin<F, Fut, R>(&self, node: usize, f: F) -> R
    where
        F: FnOnce(Client) -> Fut + Send,
        Fut: std::future::Future<Output = R>,
        R: Send,
    {
        let (e, token) = (endpoint(&self.lab, node), self.lab.admin_token().unwrap());
        in_client(&self.lab, || async move {
            f(crate::admin_support::client_with(e, Some(token)).await).await
        })
    }

    fn set_backend(&self, farm: &str, name: &str, state: Option<&str>, weight: Option<u32>) {
        let (farm, name, state) = (farm.to_string(), name.to_string(), state.map(String::from));
        self.admin(0, |mut c| async move {
            c.update_backend(pb::UpdateBackendRequest {
                farm,
                name,
                state,
                weight,
                ..Default::default()
            })
            .await
            .expect("update backend");
        });
    }
}

/// The backend that answers one HTTP request from `src` through the VIP (bounded retries:
/// during a takeover the first SYNs find no owner).
fn http_backend(c: &Cluster, src: Ipv4Addr, limit: Duration) -> String {
    let addr = SocketAddr::from((c.lab.vip(), lab::BACKEND_HTTP_PORT));
    c.lab.clients()[0].run(|| {
        wait_for(limit, || {
            let mut conn =
                HttpConn::connect_from(Some(src), addr, Duration::from_millis(300)).ok()?;
            let reply = conn.get("/", false).ok()?;
            reply.backend().map(str::to_owned)
        })
        .unwrap_or_else(|| panic!("no answer for {src} within {limit:?}"))
    })
}

/// `n` request/answer exchanges of one UDP flow from `src` (one socket, one port).
fn udp_flow(c: &Cluster, src: Ipv4Addr, n: usize) {
    let addr = SocketAddr::from((c.lab.vip(), lab::BACKEND_UDP_PORT));
    c.lab.clients()[0].run(|| {
        let sock = std::net::UdpSocket::bind((src, 0)).expect("bind");
        sock.connect(addr).expect("connect");
        sock.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        let mut buf = [0u8; 2048];
        for i in 0..n {
            wait_for(Duration::from_secs(3), || {
                sock.send(b"ping").ok()?;
                sock.recv(&mut buf).ok()
            })
            .unwrap_or_else(|| panic!("no UDP answer {i} for {src}"));
        }
    });
}

/// Each source's backend over `conns` connections, asserting it never changes.
fn pin_all(c: &Cluster, sources: &[Ipv4Addr], conns: usize) -> BTreeMap<Ipv4Addr, String> {
    sources
        .iter()
        .map(|&src| {
            let first = http_backend(c, src, Duration::from_secs(3));
            for k in 1..conns {
                let again = http_backend(c, src, Duration::from_secs(3));
                assert_eq!(again, first, "{src}: connection {k} went elsewhere");
            }
            (src, first)
        })
        .collect()
}

#[test]
fn clients_keep_their_backend_across_a_backend_change_and_a_takeover() {
    if !can_run_lab() {
        return;
    }
    let web =
        LabFarm::new("web", "tcp", lab::BACKEND_HTTP_PORT, &[0, 1, 2]).with_persistence("300s");
    // 40 addresses: 20 pinned before the change, 20 that arrive after it.
    let mut c = Cluster::start(4, 39, vec![web]);
    let sources = c.sources();
    let (pinned_src, fresh_src) = sources.split_at(20);

    let pinned = pin_all(&c, pinned_src, 10);
    let used: std::collections::BTreeSet<&String> = pinned.values().collect();
    assert!(
        used.len() >= 2,
        "20 clients spread over the backends: {pinned:?}"
    );
    c.await_entries("web", 20, Duration::from_secs(5));

    // A fourth backend with most of the weight: Maglev alone now maps most clients to it.
    let b4 = c.lab.backends()[3].clone();
    c.admin(1, |mut cl| async move {
        cl.add_backend(pb::AddBackendRequest {
            farm: "web".into(),
            backend: Some(pb::Backend {
                name: b4.name.clone(),
                ip: b4.ip.to_string(),
                weight: 20,
                state: "up".into(),
                ..Default::default()
            }),
        })
        .await
        .expect("add backend");
    });
    let b4_name = c.lab.backends()[3].name.clone();
    // Every node's table has it live (MAC learned) before new clients arrive.
    let live = wait_for(Duration::from_secs(5), || {
        (0..3)
            .all(|i| {
                scrape(&c.lab.nodes()[i]).is_ok_and(|m| {
                    m.get(
                        "dsrlb_backend_up",
                        &[("farm", "web"), ("backend", b4_name.as_str())],
                    ) == 1.0
                })
            })
            .then_some(())
    });
    assert!(live.is_some(), "{b4_name} never came up on every node");
    let fresh: BTreeMap<Ipv4Addr, String> = fresh_src
        .iter()
        .map(|&s| (s, http_backend(&c, s, Duration::from_secs(3))))
        .collect();
    assert!(
        fresh.values().filter(|b| **b == b4_name).count() >= 10,
        "Maglev alone sends most new clients to the heavy {b4_name}: {fresh:?}"
    );
    for (src, was) in &pinned {
        assert_eq!(
            &http_backend(&c, *src, Duration::from_secs(3)),
            was,
            "{src} left its pinned backend after the change (new clients: {fresh:?})"
        );
    }
    c.await_entries("web", 40, Duration::from_secs(5));
    // The replicated table says what the clients saw.
    let listed = c.admin(2, |mut cl| async move {
        cl.list_persistence(pb::ListPersistenceRequest {
            farm: "web".into(),
            limit: 100,
            ..Default::default()
        })
        .await
        .expect("list persistence")
        .into_inner()
        .entries
    });
    let table: BTreeMap<Ipv4Addr, String> = listed
        .into_iter()
        .map(|e| (e.client.parse().expect("address"), e.backend))
        .collect();
    let seen: BTreeMap<Ipv4Addr, String> = pinned
        .iter()
        .chain(fresh.iter())
        .map(|(a, b)| (*a, b.clone()))
        .collect();
    assert_eq!(table, seen, "the pins are where the clients went");

    // kill -9 the owner: the new owner has every pin.
    let old = c.sole_owner();
    c.kill(old);
    let new = wait_for(Duration::from_secs(10), || {
        match c.lab.owners().as_slice() {
            [one] if *one != old => Some(*one),
            _ => None,
        }
    })
    .expect("a new owner");
    for (src, was) in pinned.iter().chain(fresh.iter()) {
        assert_eq!(
            &http_backend(&c, *src, Duration::from_secs(5)),
            was,
            "{src} lost its backend in the takeover to node {new}"
        );
    }
    c.await_entries("web", 40, Duration::from_secs(5));
}

#[test]
fn pins_expire_everywhere_drained_backends_keep_theirs_off_ones_lose_them() {
    if !can_run_lab() {
        return;
    }
    let web =
        LabFarm::new("web", "tcp", lab::BACKEND_HTTP_PORT, &[0, 1, 2]).with_persistence("300s");
    let echo =
        LabFarm::new("echo", "udp", lab::BACKEND_UDP_PORT, &[0, 1, 2]).with_persistence("3s");
    let c = Cluster::start(3, 11, vec![web, echo]);
    let sources = c.sources();

    // Expiry, decided in the log: gone on every node, never before the TTL has passed. A
    // UDP client is pinned from its second datagram (docs/design.md#inv-pins-from-real-clients).
    for &s in &sources[..5] {
        udp_flow(&c, s, 2);
    }
    // No pin can be seen before this instant; the last one expires 3 s after it at the
    // earliest (a few ms are lost converting between clocks).
    let last_packet = Instant::now();
    udp_flow(&c, sources[5], 2);
    c.await_entries("echo", 6, Duration::from_secs(3));
    c.await_entries("echo", 0, Duration::from_secs(10));
    assert!(
        last_packet.elapsed() >= Duration::from_millis(2_990),
        "pins expired {:?} after the last packet, before their 3 s TTL",
        last_packet.elapsed()
    );

    // Drain keeps pins (and the pinned clients), off drops them.
    let pinned = pin_all(&c, &sources, 2);
    c.await_entries("web", 12, Duration::from_secs(5));
    let count = |b: &str| pinned.values().filter(|v| *v == b).count();
    let (drained, _) = pinned
        .iter()
        .max_by_key(|(_, b)| count(b))
        .map(|(s, b)| (b.clone(), *s))
        .unwrap();
    c.set_backend("web", &drained, Some("drain"), None);
    std::thread::sleep(Duration::from_millis(500));
    for (src, was) in pinned.iter().filter(|(_, b)| **b == drained) {
        assert_eq!(
            &http_backend(&c, *src, Duration::from_secs(3)),
            was,
            "{src}"
        );
    }
    c.await_entries("web", 12, Duration::from_secs(2));
    c.set_backend("web", &drained, Some("off"), None);
    c.await_entries("web", 12 - count(&drained), Duration::from_secs(5));
    for (src, _) in pinned.iter().filter(|(_, b)| **b == drained) {
        assert_ne!(http_backend(&c, *src, Duration::from_secs(3)), drained);
    }
}

#[test]
fn a_backend_that_goes_down_loses_its_pins() {
    if !can_run_lab() {
        return;
    }
    // A lenient check: on a loaded machine a strict one flaps, and a flap rightly drops pins.
    let web = LabFarm {
        check: Some((500, 1, 3)),
        ..LabFarm::new("web", "tcp", lab::BACKEND_HTTP_PORT, &[0, 1, 2]).with_persistence("300s")
    };
    let mut c = Cluster::start(3, 11, vec![web]);
    let sources = c.sources();
    let now = pin_all(&c, &sources, 1);
    c.await_entries("web", 12, Duration::from_secs(5));
    let victim = now.values().next().unwrap().clone();
    let idx = c
        .lab
        .backends()
        .iter()
        .position(|b| b.name == victim)
        .unwrap();
    let lost = now.values().filter(|b| **b == victim).count();
    c.lab.stop_backend(idx).expect("stop backend");
    c.await_entries("web", 12 - lost, Duration::from_secs(5));
    // Its clients are pinned afresh, to live backends.
    for (src, _) in now.iter().filter(|(_, b)| **b == victim) {
        assert_ne!(http_backend(&c, *src, Duration::from_secs(3)), victim);
    }
    c.await_entries("web", 12, Duration::from_secs(5));
}

#[test]
fn a_restart_of_the_whole_cluster_keeps_unexpired_pins() {
    if !can_run_lab() {
        return;
    }
    let web =
        LabFarm::new("web", "tcp", lab::BACKEND_HTTP_PORT, &[0, 1, 2]).with_persistence("600s");
    let mut c = Cluster::start(3, 7, vec![web]);
    let sources = c.sources();
    let pinned = pin_all(&c, &sources, 3);
    c.await_entries("web", 8, Duration::from_secs(5));
    // Move Maglev's choice for most clients, so only the pins keep them.
    let heavy = c.lab.backends()[0].name.clone();
    c.set_backend("web", &heavy, None, Some(50));
    c.restart_all();
    c.await_entries("web", 8, Duration::from_secs(10));
    for (src, was) in &pinned {
        assert_eq!(
            &http_backend(&c, *src, Duration::from_secs(5)),
            was,
            "{src} lost its pin over the restart"
        );
    }
}

/// A step of the leader's wall clock by an hour (an operator's `date -s`, a VM resumed), each
/// way, with pins in the table (docs/design.md#srcip-persistence, the log's clock). Forward:
/// without the log clock the leader's next expiry batch would expire every pin at once on
/// every node. Back: pins stamped before it would live an hour longer. Here every node keeps
/// them until their TTL and drops them then, and `ListPersistence` on the stepped leader says
/// so. The leader runs under libfaketime; the machine's clock is never touched.
#[test]
fn a_wall_clock_step_of_an_hour_on_the_leader_neither_expires_nor_keeps_pins() {
    if !can_run_lab() {
        return;
    }
    const TTL: Duration = Duration::from_secs(8);
    let echo =
        LabFarm::new("echo", "udp", lab::BACKEND_UDP_PORT, &[0, 1, 2]).with_persistence("8s");
    let c = Cluster::start_with_fake_clocks(3, 9, vec![echo]);
    let sources = c.sources();
    let leader = c.sole_owner();

    // Pins `set`, steps the leader's clock to `offset`, and follows the pins to their end.
    let phase = |set: &[Ipv4Addr], offset: &str| {
        for &s in set {
            udp_flow(&c, s, 2);
        }
        // No pin of the set is stamped before this instant.
        let last_packet = Instant::now();
        c.await_entries("echo", set.len(), Duration::from_secs(3));
        c.lab
            .set_clock_offset(leader, offset)
            .expect("step the clock");
        let stepped = Instant::now();

        // The leader proposes an expiry batch every 250 ms: a second and a half gives it
        // several chances to expire what its stepped wall clock calls due.
        std::thread::sleep(Duration::from_millis(1_500));
        for i in 0..3 {
            assert_eq!(
                c.entries(i, "echo"),
                set.len(),
                "node {i} lost pins {:?} after the leader's clock stepped {offset}",
                stepped.elapsed()
            );
        }
        let listed = c.expires_in(leader, "echo");
        let (lo, hi) = (
            TTL.saturating_sub(last_packet.elapsed() + Duration::from_millis(500)),
            TTL + Duration::from_millis(500),
        );
        assert_eq!(listed.len(), set.len(), "listing: {listed:?}");
        for (client, ms) in &listed {
            let left = Duration::from_millis(*ms);
            assert!(
                (lo..=hi).contains(&left),
                "the stepped leader lists {client} as expiring in {left:?}, expected {lo:?}..={hi:?}"
            );
        }

        c.await_entries("echo", 0, TTL + Duration::from_secs(4));
        // The log's clock may run 1 % off while it absorbs the step.
        let gone_after = last_packet.elapsed();
        assert!(
            gone_after >= TTL.mul_f64(0.97),
            "pins with an {TTL:?} TTL expired {gone_after:?} after their last packet \
             (clock stepped {offset})"
        );
    };
    phase(&sources[..5], "+1h");
    // From an hour ahead to an hour behind: a step of two hours back.
    phase(&sources[5..10], "-1h");
}
