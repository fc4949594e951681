//! Descriptor exhaustion (docs/design.md#listeners): a node at a 1024 open-file limit, and a
//! client that opens 1,100 idle connections to each of its peer, admin and metrics ports.
//! The caps close what is over them at accept, so the node keeps descriptors for its health
//! checks and datapath: VIP traffic flows, both backends stay up, and the connections the
//! caps admitted are closed once idle for `node.idle_timeout`.

use crate::common::{can_run_lab, dsrlb, one_node_lab};
use lab::{ADMIN_PORT, LabFarm, METRICS_PORT, PEER_PORT, scrape};
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

const PER_PORT: usize = 1100;
const IDLE: Duration = Duration::from_secs(3);

/// Lets this test process hold the 3,300 client sockets.
fn raise_own_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write `lim`.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        assert!(
            lim.rlim_max >= 8192,
            "the test needs 8192 descriptors, hard limit {}",
            lim.rlim_max
        );
        lim.rlim_cur = lim.rlim_cur.max(8192);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Whether the node closed `c` (EOF or reset) rather than leaving it open.
fn closed_by_node(c: &mut TcpStream) -> bool {
    c.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
    let mut b = [0u8; 64];
    loop {
        match c.read(&mut b) {
            Ok(0) => return true,
            // The metrics port answers nothing unasked; an HTTP/2 server greets with its
            // SETTINGS frame, which is not a close: read on.
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

#[test]
fn idle_connections_cannot_take_the_nodes_descriptors() {
    if !can_run_lab() {
        return;
    }
    raise_own_fd_limit();
    let lab = one_node_lab(2);
    let farms = [LabFarm {
        check: Some((200, 2, 3)),
        ..LabFarm::new("web", "tcp", lab::BACKEND_HTTP_PORT, &[0, 1])
    }];
    let config = lab
        .node_config(0, &farms)
        .unwrap()
        .replace(
            "[node]\n",
            &format!("[node]\nidle_timeout = \"{}s\"\n", IDLE.as_secs()),
        )
        .replace(
            &format!("listen = \"127.0.0.1:{METRICS_PORT}\""),
            &format!("listen = \"0.0.0.0:{METRICS_PORT}\""),
        );
    let node = &lab.nodes()[0];
    let path = lab.dir().join("n1-fd.toml");
    std::fs::write(&path, &config).unwrap();
    // systemd's default: a soft and hard limit of 1024, which the node cannot raise.
    let mut procs = vec![
        node.spawn_with_env(
            Path::new("prlimit"),
            [
                "--nofile=1024:1024".as_ref(),
                "--".as_ref(),
                dsrlb().as_os_str(),
                "run".as_ref(),
                "--config".as_ref(),
                path.as_os_str(),
            ],
            [("RUST_LOG", "info")],
        )
        .expect("dsrlb starts"),
    ];
    lab.wait_ready(&mut procs, &[0], &farms, Duration::from_secs(15))
        .expect("the node owns the VIP with both backends up");
    let pid = procs[0].pid();

    let client = lab.clients()[0].clone();
    let ports = [
        ("peer", PEER_PORT),
        ("admin", ADMIN_PORT),
        ("metrics", METRICS_PORT),
    ];
    let ip = node.ip;
    let mut held: Vec<(&str, TcpStream)> = client.run(|| {
        let mut held = Vec::new();
        for (name, port) in ports {
            for i in 0..PER_PORT {
                // Past the backlog the node may not have accepted yet; a refused or timed
                // out connect is as good as a closed one for this test.
                match TcpStream::connect_timeout(
                    &SocketAddr::from((ip, port)),
                    Duration::from_secs(2),
                ) {
                    Ok(c) => held.push((name, c)),
                    Err(e) => eprintln!("{name} connection {i}: {e}"),
                }
            }
        }
        held
    });
    eprintln!(
        "client holds {} connections; node has {} descriptors open",
        held.len(),
        open_fds(pid)
    );
    assert!(
        open_fds(pid) < 900,
        "the node holds {} of its 1024 descriptors",
        open_fds(pid)
    );

    // The VIP serves and both backends stay up while the client holds its sockets, through
    // several check intervals (each check needs a descriptor).
    let vip = SocketAddr::from((lab.vip(), lab::BACKEND_HTTP_PORT));
    let mut served = std::collections::BTreeSet::new();
    client.run(|| {
        for i in 0..60 {
            let r = lab::http_get(vip, "/").unwrap_or_else(|e| panic!("request {i}: {e}"));
            served.insert(r.backend().unwrap_or("?").to_string());
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    assert_eq!(served.len(), 2, "requests reached {served:?}");
    let m = scrape(node).expect("metrics answer from the node's own address");
    for b in ["b1", "b2"] {
        assert_eq!(
            m.get("dsrlb_backend_up", &[("farm", "web"), ("backend", b)]),
            1.0,
            "{b} went down while the listeners were flooded"
        );
    }
    for (name, _) in ports {
        let refused = m.get("dsrlb_listener_refused_total", &[("listener", name)]);
        let open = m.get("dsrlb_listener_connections", &[("listener", name)]);
        eprintln!("{name}: {open} open, {refused} refused");
        assert!(
            refused >= (PER_PORT / 2) as f64,
            "{name}: only {refused} connections refused at the cap"
        );
        assert!(open <= 64.0, "{name}: {open} connections open");
    }

    // Every connection the caps admitted is closed after the idle timeout.
    std::thread::sleep(IDLE + Duration::from_secs(2));
    let still_open: Vec<&str> = held
        .iter_mut()
        .filter_map(|(name, c)| (!closed_by_node(c)).then_some(*name))
        .collect();
    assert!(
        still_open.is_empty(),
        "{} connections still open after {IDLE:?} idle: {:?}",
        still_open.len(),
        &still_open[..still_open.len().min(10)]
    );
    let m = scrape(node).expect("metrics");
    for (name, _) in ports {
        let open = m.get("dsrlb_listener_connections", &[("listener", name)]);
        // The scrape itself holds one metrics connection.
        assert!(
            open <= 1.0,
            "{name}: {open} connections open after the idle timeout"
        );
    }
    drop(held);
    drop(procs);
}
