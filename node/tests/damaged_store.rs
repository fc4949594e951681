//! A corpus of damaged stores (docs/design.md#durability): a node never starts on one. Each
//! damage of a real store — cut in half, cut to 0 bytes, header overwritten, bytes flipped
//! across every page, one bit flipped in a stored farm record — makes
//! `dsrlb witness` (the same store opening as `dsrlb run`, without root or an interface)
//! exit with status 1 and a message naming the store file; the undamaged store starts.

use cluster::{
    Backend, BackendState, ClusterNode, ClusterSettings, Command, Farm, Persistence, Protocol,
    Scheduler,
};
use std::io::Write;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command as Proc, Stdio};
use std::time::{Duration, Instant};

/// Unique in the store's bytes, so a bit of the farm record can be flipped where it lies.
const MARKER: &[u8] = b"marker-backend-7";

fn farm(weight: u32) -> Farm {
    Farm {
        name: "web".into(),
        vip: Ipv4Addr::new(198, 18, 0, 100).into(),
        port_first: 80,
        port_last: 80,
        protocol: Protocol::Tcp,
        scheduler: Scheduler::Maglev,
        limits: Default::default(),
        maglev_table_size: 307,
        persistence: Persistence::None,
        check: None,
        backends: vec![Backend {
            name: String::from_utf8(MARKER.to_vec()).unwrap(),
            ip: Ipv4Addr::new(198, 18, 0, 21).into(),
            mac: None,
            weight,
            state: BackendState::Up,
            priority: 1,
        }],
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real store: a cluster of one bootstraps the farm, rewrites it past a snapshot, stops.
fn good_store(dir: &Path) -> Vec<u8> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let listen = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut s = ClusterSettings::new(1, dir.into(), listen, "damaged-store-token-0123".into());
        s.snapshot_every = 3;
        s.keep_logs = 10;
        let node = ClusterNode::start(s, vec![farm(1)]).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !node.state().borrow().bootstrapped {
            assert!(Instant::now() < deadline, "bootstrap did not apply");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for w in 2..8 {
            node.write(Command::PutFarm(farm(w))).await.unwrap();
        }
        node.shutdown().await.unwrap();
    });
    // The runtime's end drops the last handle to the database: a clean close, so opening
    // it again needs no repair (which would check redb's own page checksums) and only the
    // record checksums stand between a flipped bit and a running node.
    drop(rt);
    std::fs::read(dir.join(cluster::STORE_FILE)).unwrap()
}

/// Writes `bytes` as the store of a fresh data dir and runs a witness on it: `Ok(stderr)`
/// with its exit status, or `Err` if it was still running after `wait` (it started).
fn run_witness(root: &Path, name: &str, bytes: &[u8], wait: Duration) -> Result<(i32, String), ()> {
    let data = root.join(name);
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join(cluster::STORE_FILE), bytes).unwrap();
    let token = root.join("cluster.token");
    std::fs::write(&token, "damaged-store-token-0123\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let ports = [free_port(), free_port(), free_port()];
    let config = root.join(format!("{name}.toml"));
    let mut f = std::fs::File::create(&config).unwrap();
    write!(
        f,
        "[node]\nid = 3\ndata_dir = {data:?}\n[cluster]\nlisten = \"127.0.0.1:{p3}\"\n\
         members = [\"1=127.0.0.1:{p1}\", \"2=127.0.0.1:{p2}\", \"3=127.0.0.1:{p3}\"]\n\
         token_file = {token:?}\n[metrics]\nlisten = \"\"\n",
        p1 = ports[0],
        p2 = ports[1],
        p3 = ports[2],
    )
    .unwrap();
    let mut child = Proc::new(env!("CARGO_BIN_EXE_dsrlb"))
        .args(["witness", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + wait;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            return Ok((
                status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ));
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            return Err(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn flip_every_page(mut b: Vec<u8>) -> Vec<u8> {
    for i in (100..b.len()).step_by(4096) {
        b[i] ^= 0xFF;
    }
    b
}

#[test]
fn every_damaged_store_is_refused_naming_it_with_exit_1() {
    let root = tempfile::tempdir().unwrap();
    let good = good_store(&root.path().join("source"));
    let marks: Vec<usize> = good
        .windows(MARKER.len())
        .enumerate()
        .filter(|(_, w)| *w == MARKER)
        .map(|(i, _)| i)
        .collect();
    assert!(
        !marks.is_empty(),
        "the farm record is not in the store's bytes"
    );

    // The control: the same store undamaged starts (the witness is still running).
    assert!(
        run_witness(root.path(), "intact", &good, Duration::from_secs(3)).is_err(),
        "the undamaged store did not start"
    );

    let mut farm_bit = good.clone();
    for &i in &marks {
        // One bit of the backend's name, in every copy of the record (log and snapshot).
        farm_bit[i + 3] ^= 0x04;
    }
    let corpus: Vec<(&str, Vec<u8>)> = vec![
        ("cut_in_half", good[..good.len() / 2].to_vec()),
        ("cut_to_zero", Vec::new()),
        ("header_zeroed", {
            let mut b = good.clone();
            b[..512].fill(0);
            b
        }),
        ("header_flipped", {
            let mut b = good.clone();
            b[16..96].iter_mut().for_each(|x| *x ^= 0x5A);
            b
        }),
        ("bytes_flipped", flip_every_page(good.clone())),
        ("farm_record_bit", farm_bit),
    ];
    let mut failures = Vec::new();
    for (name, bytes) in &corpus {
        let store = root.path().join(name).join(cluster::STORE_FILE);
        match run_witness(root.path(), name, bytes, Duration::from_secs(10)) {
            Err(()) => failures.push(format!("{name}: the node started")),
            Ok((code, stderr)) => {
                println!("{name}: exit {code}: {}", stderr.trim());
                if code != 1 {
                    failures.push(format!("{name}: exit {code}, not 1: {stderr}"));
                } else if !stderr.contains(&store.display().to_string()) {
                    failures.push(format!(
                        "{name}: the message does not name the store: {stderr}"
                    ));
                } else if stderr.contains("panicked") {
                    failures.push(format!("{name}: a panic reached the log: {stderr}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Junk appended to the file is the one damage that is not refused: redb takes a file longer
/// than its header's layout for a crash while growing it (the same state kill -9 can leave)
/// and recovers the tail as free space. Every record is still checked, so the node starts
/// on exactly the data it had (docs/design.md#durability).
#[test]
fn junk_appended_to_the_store_is_recovered_as_free_space() {
    let root = tempfile::tempdir().unwrap();
    let mut bytes = good_store(&root.path().join("source"));
    bytes.extend(std::iter::repeat_n(0xAB, 1 << 20));
    assert!(
        run_witness(root.path(), "junk", &bytes, Duration::from_secs(3)).is_err(),
        "a store with junk appended did not start"
    );
}
