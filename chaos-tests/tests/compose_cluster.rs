//! The compose deployment (`deploy/`) end to end on the machine's Docker engine: the image
//! built by `deploy/build-image.sh` from the release binaries (no image pulled), `compose up`
//! of 3 nodes, 3 backends and a client (healthchecks passing), DSR traffic through the VIP
//! from the client (replies captured on the client's interface come from the backends'
//! MACs), `docker kill` of the leader container in the middle of a verified stream, and
//! `compose down -v` leaving no container, network, volume or image behind.
//!
//! Needs root and a Docker engine with a compose tool (`docker compose` or `docker-compose`).
//! Without them it prints `SKIPPED: <reason>` to the terminal and returns, unless
//! `DSRLB_REQUIRE_DOCKER=1`, which turns the skip into a failure. The binaries are the ones
//! next to this test (`target/release/dsrlb`, `dsrctl`): a workspace test run builds them
//! for node's own tests; alone, run `cargo build --release -p node -p dsrctl` first.
//!
//! Everything it creates carries a per-run name (compose project, bridge, image tag, netns
//! handle) and is removed on drop, panics included. The host gets one bridge with no address
//! (`internal`, `inhibit_ipv4`); every wait is bounded.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lab::{Capture, MacAddr};

const REQUIRE_ENV: &str = "DSRLB_REQUIRE_DOCKER";
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 31);
const NODES: [&str; 3] = ["n1", "n2", "n3"];
const BACKENDS: [&str; 3] = ["b1", "b2", "b3"];
const SERVICES: [&str; 7] = ["n1", "n2", "n3", "b1", "b2", "b3", "client"];
const VOLUMES: [&str; 3] = ["n1-data", "n2-data", "n3-data"];
/// The stream the leader is killed under: long enough that the kill lands mid-stream and the
/// takeover (election timeout, then TCP retransmission backoff) fits well inside it.
const STREAM_BYTES: u64 = 16 << 20;
const STREAM_RATE: u64 = 2 << 20;
/// Short docker calls (inspect, exec of a status query).
const SHORT: Duration = Duration::from_secs(30);

/// Said on the terminal even when libtest captures output: a skip must not look like a pass.
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "compose_cluster: {line}");
}

/// Skips (prints why) or, with `DSRLB_REQUIRE_DOCKER=1`, fails.
fn skip(reason: &str) {
    if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") {
        panic!("{REQUIRE_ENV}=1 but the compose test cannot run: {reason}");
    }
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: compose_cluster: {reason} (set {REQUIRE_ENV}=1 to make this a failure)"
    );
}

/// Runs a command with a deadline; a command that outlives it is killed and reported.
fn run_bounded(cmd: &mut Command, limit: Duration) -> Result<Output, String> {
    let line = describe(cmd);
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{line}: {e}"))?;
    wait_bounded(child, limit).map_err(|e| format!("{line}: {e}"))
}

fn wait_bounded(mut child: Child, limit: Duration) -> Result<Output, String> {
    // Pipes are drained on threads so a chatty command cannot block on a full pipe.
    let drain = |r: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(child.stdout.take().map(|s| Box::new(s) as _));
    let err = drain(child.stderr.take().map(|s| Box::new(s) as _));
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("still running after {limit:?}; killed"));
            }
            Err(e) => return Err(format!("wait: {e}")),
        }
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs a command that must succeed and returns its trimmed stdout.
fn check(cmd: &mut Command, limit: Duration) -> String {
    let line = describe(cmd);
    let out = run_bounded(cmd, limit).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out.status.success(),
        "{line} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Whether a command exits 0 (within the limit).
fn succeeds(cmd: &mut Command, limit: Duration) -> bool {
    run_bounded(cmd, limit).is_ok_and(|o| o.status.success())
}

fn docker<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(args: I) -> Command {
    let mut c = Command::new("docker");
    c.args(args);
    c
}

/// Why this test cannot run here, if it cannot; otherwise the compose command to use.
fn preconditions() -> Result<Vec<String>, String> {
    let euid = std::fs::metadata("/proc/self")
        .map_err(|e| format!("cannot read /proc/self: {e}"))?
        .uid();
    if euid != 0 {
        return Err(format!("not root (euid {euid})"));
    }
    let info = run_bounded(
        &mut docker(["info", "--format", "{{.ServerVersion}}"]),
        SHORT,
    )
    .map_err(|e| format!("no Docker engine answers: {e}"))?;
    if !info.status.success() {
        return Err(format!(
            "no Docker engine answers (`docker info`: {})",
            String::from_utf8_lossy(&info.stderr).trim()
        ));
    }
    let candidates: [&[&str]; 2] = [&["docker", "compose"], &["docker-compose"]];
    for c in candidates {
        let mut cmd = Command::new(c[0]);
        cmd.args(&c[1..]).arg("version");
        if succeeds(&mut cmd, SHORT) {
            return Ok(c.iter().map(|s| (*s).to_owned()).collect());
        }
    }
    Err("neither `docker compose` nor `docker-compose` is installed".into())
}

/// `target/release`, found from this test's own path (`target/release/deps/<test>`).
fn release_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binary lives in <target>/<profile>/deps")
        .to_path_buf();
    let rebuild = "build it with `cargo build --release -p node -p dsrctl` (a workspace \
                   `cargo test --release` builds it for node's tests)";
    for bin in ["dsrlb", "dsrctl"] {
        assert!(
            dir.join(bin).is_file(),
            "{} is missing: {rebuild}",
            dir.join(bin).display()
        );
    }
    // A binary older than `lab-stream` would only fail deep inside the client container.
    assert!(
        succeeds(
            Command::new(dir.join("dsrlb")).args(["lab-stream", "--help"]),
            SHORT
        ),
        "{} has no lab-stream subcommand (stale?): {rebuild}",
        dir.join("dsrlb").display()
    );
    dir
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("chaos-tests sits in the workspace root")
        .to_path_buf()
}

/// One compose project of this run. Dropping it takes everything down (`down -v
/// --remove-orphans`), removes the image tag and the netns handle, and, when a panic is
/// unwinding, prints the containers' last log lines first.
struct Project {
    compose: Vec<String>,
    name: String,
    bridge: String,
    image: String,
    file: PathBuf,
    secrets: tempfile::TempDir,
    netns: Option<String>,
    cleaned: bool,
}

impl Project {
    fn new(compose: Vec<String>) -> Project {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let run = format!("{:06x}", (std::process::id() ^ nanos) & 0xff_ffff);
        Project {
            compose,
            name: format!("dsrlbt{run}"),
            // The host's interface name: at most 15 characters.
            bridge: format!("dsrlbt{run}"),
            image: format!("dsrlb-test:{run}"),
            file: repo_root().join("deploy/docker-compose.yml"),
            secrets: tempfile::tempdir().expect("temp dir for the secrets"),
            netns: None,
            cleaned: false,
        }
    }

    /// `compose -p <project> -f deploy/docker-compose.yml ARGS` with this run's variables.
    fn cmd<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(&self, args: I) -> Command {
        let mut c = Command::new(&self.compose[0]);
        c.args(&self.compose[1..])
            .arg("-p")
            .arg(&self.name)
            .arg("-f")
            .arg(&self.file)
            .args(args)
            .env("DSRLB_IMAGE", &self.image)
            .env("DSRLB_SECRETS", self.secrets.path())
            .env("DSRLB_BRIDGE", &self.bridge);
        c
    }

    fn container(&self, service: &str) -> String {
        let id = check(&mut self.cmd(["ps", "-q", service]), SHORT);
        assert!(!id.is_empty(), "service {service} has no container");
        id
    }

    fn inspect(&self, container: &str, format: &str) -> String {
        check(&mut docker(["inspect", "-f", format, container]), SHORT)
    }

    /// `docker exec` in the client container, bounded.
    fn client_exec(&self, client: &str, args: &[&str], limit: Duration) -> Result<Output, String> {
        run_bounded(docker(["exec", client]).args(args), limit)
    }

    /// `dsrctl -o json status` from the client (every node's endpoint, in turn).
    fn status(&self, client: &str) -> Option<serde_json::Value> {
        let out = self
            .client_exec(
                client,
                &["dsrctl", "-o", "json", "--timeout", "3s", "status"],
                SHORT,
            )
            .ok()?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    fn down(&mut self) -> Result<(), String> {
        let out = run_bounded(
            &mut self.cmd(["down", "-v", "--remove-orphans", "--timeout", "5"]),
            Duration::from_secs(120),
        )?;
        if !out.status.success() {
            return Err(format!(
                "compose down failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(())
    }

    fn drop_netns(&mut self) {
        if let Some(ns) = self.netns.take() {
            let _ = run_bounded(Command::new("ip").args(["netns", "delete", &ns]), SHORT);
        }
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        if self.cleaned {
            return;
        }
        if std::thread::panicking()
            && let Ok(out) =
                run_bounded(&mut self.cmd(["logs", "--no-color", "--tail", "40"]), SHORT)
        {
            say(&format!(
                "container logs:\n{}",
                String::from_utf8_lossy(&out.stdout)
            ));
        }
        self.drop_netns();
        if let Err(e) = self.down() {
            say(&format!("cleanup: {e}"));
        }
        let _ = run_bounded(&mut docker(["rmi", "-f", &self.image]), SHORT);
    }
}

/// The backend names in a batch of `backend=<name>` answers.
fn backends_answering(text: &str) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for name in text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("backend="))
    {
        *seen.entry(name.to_owned()).or_insert(0) += 1;
    }
    seen
}

/// The `done bytes=<n> longest_stall_ms=<ms>` summary of `dsrlb lab-stream`.
fn parse_done(line: &str) -> Option<(u64, u64)> {
    let rest = line.strip_prefix("done ")?;
    let mut bytes = None;
    let mut stall = None;
    for field in rest.split_whitespace() {
        match field.split_once('=') {
            Some(("bytes", v)) => bytes = v.parse().ok(),
            Some(("longest_stall_ms", v)) => stall = v.parse().ok(),
            _ => {}
        }
    }
    Some((bytes?, stall?))
}

#[test]
fn compose_cluster_survives_docker_kill_of_the_leader() {
    let compose = match preconditions() {
        Ok(c) => c,
        Err(reason) => return skip(&reason),
    };
    let bins = release_dir();
    let mut p = Project::new(compose);
    say(&format!(
        "project {} (bridge {}, image {}) with `{}`",
        p.name,
        p.bridge,
        p.image,
        p.compose.join(" ")
    ));

    // Build: the tag is new, so nothing of this project exists before the script runs.
    assert!(
        !succeeds(&mut docker(["image", "inspect", &p.image]), SHORT),
        "image {} exists before the build",
        p.image
    );
    let started = Instant::now();
    check(
        Command::new(repo_root().join("deploy/build-image.sh"))
            .arg("--tag")
            .arg(&p.image)
            .arg("--bin-dir")
            .arg(&bins)
            .env("DSRLB_SECRETS", p.secrets.path()),
        Duration::from_secs(180),
    );
    say(&format!("image built in {:?}", started.elapsed()));

    check(&mut p.cmd(["up", "-d"]), Duration::from_secs(180));
    let client = p.container("client");
    let mut containers = BTreeMap::new();
    let mut macs = BTreeMap::new();
    for svc in SERVICES {
        let id = p.container(svc);
        let mac = p.inspect(
            &id,
            "{{range .NetworkSettings.Networks}}{{.MacAddress}}{{end}}",
        );
        let mac: MacAddr = mac
            .parse()
            .unwrap_or_else(|_| panic!("{svc}: bad MAC {mac:?}"));
        macs.insert(svc, mac);
        containers.insert(svc, id);
    }
    // The host end of the bridge has no IPv4 address.
    let host_addrs = check(
        Command::new("ip").args(["-4", "-o", "addr", "show", "dev", &p.bridge]),
        SHORT,
    );
    assert!(
        host_addrs.is_empty(),
        "bridge {} has an address on the host: {host_addrs}",
        p.bridge
    );

    // A leader that owns the VIP, every member reachable.
    let deadline = Instant::now() + Duration::from_secs(60);
    let leader = loop {
        let st = p.status(&client);
        let ready = st.as_ref().and_then(|s| {
            let leader = s["leader"].as_u64()?;
            let reachable = s["members"]
                .as_array()?
                .iter()
                .filter(|m| m["reachable"] == true)
                .count();
            (s["vip_owner"].as_u64() == Some(leader) && reachable == 3).then_some(leader)
        });
        if let Some(l) = ready {
            break l;
        }
        assert!(
            Instant::now() < deadline,
            "no leader owning the VIP with 3 reachable members within 60s; last status {st:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    say(&format!(
        "cluster up {:?} after the build started; leader node {leader}",
        started.elapsed()
    ));

    // The compose healthchecks (dsrctl status on nodes, HTTP on backends) pass.
    let deadline = Instant::now() + Duration::from_secs(45);
    for svc in SERVICES.iter().filter(|s| **s != "client") {
        loop {
            let health = p.inspect(&containers[svc], "{{.State.Health.Status}}");
            if health == "healthy" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{svc} not healthy within 45s: {health}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    say(&format!(
        "every node and backend healthy {:?} after the build started",
        started.elapsed()
    ));

    // DSR: capture on the client's eth0 (through a netns handle on the container's
    // namespace) while it sends requests to the VIP.
    let pid = p.inspect(&client, "{{.State.Pid}}");
    let ns = format!("{}-client", p.name);
    check(
        Command::new("ip").args(["netns", "attach", &ns, &pid]),
        SHORT,
    );
    p.netns = Some(ns.clone());
    let capture = Capture::start(&ns, "eth0").expect("capture on the client's eth0");
    let deadline = Instant::now() + Duration::from_secs(45);
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    // Backends become usable as the leader's health checks and ARP find them; retry batches
    // until each one answered.
    while seen.len() < BACKENDS.len() {
        assert!(
            Instant::now() < deadline,
            "not every backend answered through the VIP within 45s: {seen:?}"
        );
        // No `-T`: busybox 1.35's wget crashes with it; `timeout` bounds each request.
        let out = p
            .client_exec(
                &client,
                &[
                    "sh",
                    "-c",
                    "for i in $(seq 30); do timeout 5 wget -q -O - http://198.18.0.100/; done",
                ],
                Duration::from_secs(60),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        for (name, n) in backends_answering(&String::from_utf8_lossy(&out.stdout)) {
            *seen.entry(name).or_insert(0) += n;
        }
    }
    let frames = capture.stop().expect("stop the capture");
    say(&format!(
        "through the VIP, answers per backend: {seen:?}; {} frames captured",
        frames.len()
    ));
    let expected: BTreeSet<String> = BACKENDS.iter().map(|b| (*b).to_owned()).collect();
    assert_eq!(seen.keys().cloned().collect::<BTreeSet<_>>(), expected);
    // Replies VIP -> client arrive from the backends' MACs, never from a node's.
    let reply_macs: BTreeSet<MacAddr> = frames
        .iter()
        .filter(|f| {
            !f.outgoing()
                && f.is_ipv4(VIP, CLIENT_IP)
                && f.ipv4.and_then(|i| i.src_port) == Some(80)
        })
        .map(|f| f.src_mac)
        .collect();
    let backend_macs: BTreeSet<MacAddr> = BACKENDS.iter().map(|b| macs[b]).collect();
    let node_macs: BTreeSet<MacAddr> = NODES.iter().map(|n| macs[n]).collect();
    assert_eq!(
        reply_macs, backend_macs,
        "VIP replies must come straight from the backends (backend MACs {backend_macs:?}, \
         node MACs {node_macs:?})"
    );
    // Requests client -> VIP go to the VIP owner's MAC.
    let owner_mac = macs[NODES[usize::try_from(leader - 1).expect("node id")]];
    let request_macs: BTreeSet<MacAddr> = frames
        .iter()
        .filter(|f| f.outgoing() && f.is_ipv4(CLIENT_IP, VIP))
        .map(|f| f.dst_mac)
        .collect();
    assert_eq!(
        request_macs,
        BTreeSet::from([owner_mac]),
        "client->VIP frames must go to the owner (node {leader})"
    );
    p.drop_netns();

    // A verified stream through the VIP; the leader container is killed a quarter in.
    let mut stream = docker([
        "exec",
        &client,
        "dsrlb",
        "lab-stream",
        "--to",
        "198.18.0.100:80",
    ])
    .args(["--bytes", &STREAM_BYTES.to_string()])
    .args(["--rate", &STREAM_RATE.to_string(), "--every-ms", "50"])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("docker exec lab-stream");
    let progress = Arc::new(AtomicU64::new(0));
    let reader = {
        let progress = Arc::clone(&progress);
        let stdout = stream.stdout.take().expect("piped stdout");
        // Ends when the exec's stdout closes (the exec is killed at the latest deadline).
        std::thread::spawn(move || {
            let mut last = String::new();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(bytes) = line
                    .strip_prefix("progress ")
                    .and_then(|r| r.split_whitespace().nth(1))
                    .and_then(|b| b.parse().ok())
                {
                    progress.store(bytes, Ordering::Relaxed);
                } else {
                    last = line;
                }
            }
            last
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while progress.load(Ordering::Relaxed) < STREAM_BYTES / 4 {
        if Instant::now() >= deadline || matches!(stream.try_wait(), Ok(Some(_))) {
            let _ = stream.kill();
            let _ = stream.wait();
            panic!(
                "the stream did not reach a quarter within 30s: {} bytes; it said {:?}",
                progress.load(Ordering::Relaxed),
                reader.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let leader_svc = NODES[usize::try_from(leader - 1).expect("node id")];
    let at = progress.load(Ordering::Relaxed);
    check(&mut docker(["kill", &containers[leader_svc]]), SHORT);
    say(&format!(
        "docker kill {leader_svc} (the leader) at byte {at} of {STREAM_BYTES}"
    ));
    let limit = Duration::from_secs(60);
    let exec = wait_bounded(stream, limit).unwrap_or_else(|e| panic!("lab-stream: {e}"));
    let summary = reader.join().unwrap_or_default();
    assert!(
        exec.status.success(),
        "the stream broke across the takeover: {summary} {}",
        String::from_utf8_lossy(&exec.stderr).trim()
    );
    let (bytes, stall_ms) =
        parse_done(&summary).unwrap_or_else(|| panic!("no summary from lab-stream: {summary:?}"));
    assert_eq!(bytes, STREAM_BYTES, "every byte, verified");
    say(&format!(
        "stream complete: {bytes} bytes verified; outage (longest stall) {stall_ms} ms"
    ));

    // A new owner, not the killed node.
    let deadline = Instant::now() + Duration::from_secs(30);
    let new_leader = loop {
        let st = p.status(&client);
        if let Some(l) = st.as_ref().and_then(|s| {
            let l = s["leader"].as_u64()?;
            (l != leader && s["vip_owner"].as_u64() == Some(l)).then_some(l)
        }) {
            break l;
        }
        assert!(
            Instant::now() < deadline,
            "no new leader owning the VIP within 30s; last status {st:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    say(&format!("node {new_leader} took over from node {leader}"));

    // Down: nothing of the project is left.
    p.down().unwrap_or_else(|e| panic!("{e}"));
    p.cleaned = true;
    let left = check(
        &mut docker([
            "ps",
            "-a",
            "-q",
            "--filter",
            &format!("label=com.docker.compose.project={}", p.name),
        ]),
        SHORT,
    );
    assert!(left.is_empty(), "containers left after down -v: {left}");
    for id in containers.values() {
        assert!(
            !succeeds(&mut docker(["container", "inspect", id]), SHORT),
            "container {id} still exists"
        );
    }
    let network = format!("{}_lan", p.name);
    assert!(
        !succeeds(&mut docker(["network", "inspect", &network]), SHORT),
        "network {network} still exists"
    );
    for v in VOLUMES {
        let volume = format!("{}_{v}", p.name);
        assert!(
            !succeeds(&mut docker(["volume", "inspect", &volume]), SHORT),
            "volume {volume} still exists"
        );
    }
    assert!(
        !succeeds(Command::new("ip").args(["link", "show", &p.bridge]), SHORT),
        "bridge {} is still on the host",
        p.bridge
    );
    check(&mut docker(["rmi", &p.image]), SHORT);
    say(&format!(
        "down -v left nothing behind; image removed; {:?} in all",
        started.elapsed()
    ));
}

#[test]
fn stream_summary_parses() {
    assert_eq!(
        parse_done("done bytes=16777216 longest_stall_ms=1450"),
        Some((16_777_216, 1450))
    );
    assert_eq!(parse_done("error: stream from 198.18.0.100:80: read"), None);
    assert_eq!(parse_done("done bytes=12"), None);
    let seen = backends_answering("backend=b1\nbackend=b2\nbackend=b1\nnoise\n");
    assert_eq!(seen.get("b1"), Some(&2));
    assert_eq!(seen.get("b2"), Some(&1));
    assert_eq!(seen.len(), 2);
}
