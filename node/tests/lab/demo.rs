//! `dsrlb demo`: it runs start to finish — a kill -9 of the VIP owner under a verified stream,
//! the takeover shown live — and leaves no namespace, link, process or file behind; without
//! root it says so and builds nothing; Ctrl-C (SIGINT to its process group, as a terminal
//! sends it) in the middle cleans everything up; `--keep` leaves the lab running, with
//! commands to explore it that work, until Ctrl-C.

use crate::common::{can_run_lab, dsrlb};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

/// Far above the demo's own bound (60 s): only a hang gets here, and the demo is then killed.
const HANG: Duration = Duration::from_secs(120);
/// How long the demo may take to clean up and exit after Ctrl-C.
const CLEANUP: Duration = Duration::from_secs(30);

/// Said on the terminal even when libtest captures output (the demo's wall time).
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// A running `dsrlb demo`, in its own process group (as a shell runs a foreground job), its
/// output read line by line. Every process it starts carries `DSRLB_DEMO_TEST_TAG`, so a
/// survivor can be found after it exited. Dropping it kills the group.
struct Demo {
    child: Child,
    lines: Receiver<String>,
    out: Vec<String>,
    tag: String,
    started: Instant,
}

impl Demo {
    fn start(args: &[&str]) -> Demo {
        let tag = format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        let mut child = Command::new(dsrlb())
            .arg("demo")
            .args(args)
            .env("DSRLB_DEMO_TEST_TAG", &tag)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("dsrlb demo starts");
        let (tx, lines) = channel();
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
        }
        Demo {
            child,
            lines,
            out: Vec::new(),
            tag,
            started: Instant::now(),
        }
    }

    /// Reads output until a line contains `what` (that line), or the demo ends or hangs.
    fn wait_for_line(&mut self, what: &str) -> Option<String> {
        loop {
            let left = HANG.saturating_sub(self.started.elapsed());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.out.push(line.clone());
                    if line.contains(what) {
                        return Some(line);
                    }
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// Ctrl-C as a terminal sends it: SIGINT to the whole process group.
    fn interrupt(&self) {
        let group = nix::unistd::Pid::from_raw(-(self.child.id() as i32));
        nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
    }

    /// Waits (bounded by `limit`) for the demo to exit and for its output to end.
    fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "the demo did not exit within {limit:?}:\n{}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.out.push(line);
        }
        status
    }

    fn text(&self) -> String {
        self.out.join("\n")
    }

    /// The lab prefix from "[  0.2s] lab d1a2b3: a bridge in namespace ...".
    fn prefix(&self) -> String {
        let prefix = self
            .out
            .iter()
            .find_map(|l| l.split("] lab ").nth(1)?.split(':').next())
            .unwrap_or_else(|| panic!("the demo names no lab:\n{}", self.text()))
            .to_owned();
        assert!(
            prefix.len() == 6 && prefix.starts_with('d'),
            "unexpected lab prefix {prefix:?}"
        );
        prefix
    }

    /// Asserts that nothing of the demo's lab is left: no namespace, no link in this
    /// namespace, no temp dir, no process carrying the tag.
    fn assert_nothing_left(&self) {
        let prefix = self.prefix();
        let ns = Command::new("ip").args(["netns", "list"]).output().unwrap();
        let ns = String::from_utf8_lossy(&ns.stdout);
        assert!(
            !ns.lines().any(|l| l.starts_with(&format!("{prefix}-"))),
            "namespaces left behind:\n{ns}"
        );
        let links = Command::new("ip").args(["-o", "link"]).output().unwrap();
        let links = String::from_utf8_lossy(&links.stdout);
        assert!(!links.contains(&prefix), "links left behind:\n{links}");
        let dir = std::env::temp_dir().join(format!("dsrlb-lab-{prefix}"));
        assert!(!dir.exists(), "{} left behind", dir.display());
        let survivors = tagged_processes(&self.tag);
        assert!(survivors.is_empty(), "processes left behind: {survivors:?}");
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            // A failing test: Ctrl-C first, so the demo removes its lab (a SIGKILL alone
            // left its namespaces behind); then whatever is left of the group goes, errors
            // or not (the group may be gone already).
            let group = nix::unistd::Pid::from_raw(-(self.child.id() as i32));
            let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGINT);
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline && self.child.try_wait().ok().flatten().is_none() {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }
}

/// `(pid, command line)` of every process whose environment carries `tag`.
fn tagged_processes(tag: &str) -> Vec<(u32, String)> {
    let needle = format!("DSRLB_DEMO_TEST_TAG={tag}");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        // A process may exit between the listing and the read.
        let Ok(env) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if env.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) {
            let cmd = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            found.push((pid, cmd));
        }
    }
    found
}

#[test]
fn the_demo_runs_and_cleans_up() {
    if !can_run_lab() {
        return;
    }
    let mut demo = Demo::start(&[]);
    let status = demo.wait(HANG);
    let wall = demo.started.elapsed();
    assert!(status.success(), "demo failed:\n{}", demo.text());
    say(&format!(
        "demo: ran start to finish in {:.1} s",
        wall.as_secs_f64()
    ));
    let out = demo.text();
    for step in [
        "owns 198.18.0.100",
        "owner forwarded only",
        // Dual stack: the IPv6 VIP served before and after the takeover.
        "answered by the same backends: {\"b",
        "after the takeover: answered by b",
        // The live view samples every ~100 ms: a takeover shorter than that shows no
        // "none" line, so only the view itself is required (and never two owners, below).
        "live: VIP owner ",
        "took over",
        "every byte verified",
        "rejoined as a follower",
        "b2 out after",
        "back after",
        "3 of 3 nodes released the VIP",
    ] {
        assert!(out.contains(step), "demo output lacks {step:?}:\n{out}");
    }
    let doubled: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("live: VIP owner"))
        .filter(|l| l.split('|').next().is_some_and(|owner| owner.contains('+')))
        .collect();
    assert!(
        doubled.is_empty(),
        "two owners in the live view: {doubled:?}"
    );
    demo.assert_nothing_left();
}

#[test]
fn without_root_the_demo_says_so_and_builds_nothing() {
    // Runs as root elsewhere; here it drops to nobody itself, so it needs root to start.
    if !can_run_lab() {
        return;
    }
    let out = Command::new(dsrlb())
        .arg("demo")
        .uid(65534)
        .gid(65534)
        .output();
    let out = match out {
        Ok(out) => out,
        // The build directory is not readable by nobody on this machine.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            say(&format!("SKIPPED: demo as nobody: {e}"));
            return;
        }
        Err(e) => panic!("run the demo as nobody: {e}"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the demo ran without root:\n{stdout}"
    );
    assert!(
        stderr.contains("needs root") && stderr.contains("sudo"),
        "no clear word about root: {stderr:?}"
    );
    assert!(!stdout.contains("] lab "), "a lab was built:\n{stdout}");
}

#[test]
fn ctrl_c_in_the_middle_removes_everything() {
    if !can_run_lab() {
        return;
    }
    let mut demo = Demo::start(&[]);
    // Mid-takeover: the owner just died, a stream runs, the cluster elects.
    let line = demo.wait_for_line("kill -9 of");
    assert!(
        line.is_some(),
        "the demo never got to the kill:\n{}",
        demo.text()
    );
    std::thread::sleep(Duration::from_millis(200));
    let pressed = Instant::now();
    demo.interrupt();
    let status = demo.wait(CLEANUP);
    say(&format!(
        "demo: exited {:.1} s after Ctrl-C ({status})",
        pressed.elapsed().as_secs_f64()
    ));
    assert!(
        demo.text().contains("removing the lab"),
        "no word of the cleanup:\n{}",
        demo.text()
    );
    demo.assert_nothing_left();
}

#[test]
fn keep_leaves_a_working_lab_until_ctrl_c() {
    if !can_run_lab() {
        return;
    }
    let mut demo = Demo::start(&["--keep"]);
    let kept = demo.wait_for_line("stays up until Ctrl-C");
    assert!(
        kept.is_some(),
        "the demo did not keep its lab:\n{}",
        demo.text()
    );
    // The commands follow that line; the first is `... dsrctl ... status`.
    let status_cmd = demo
        .wait_for_line(" status")
        .expect("a dsrctl status command")
        .trim()
        .to_owned();
    let prefix = demo.prefix();
    let ns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let ns = String::from_utf8_lossy(&ns.stdout);
    assert_eq!(
        ns.lines()
            .filter(|l| l.starts_with(&format!("{prefix}-")))
            .count(),
        8,
        "the kept lab's namespaces (switch, 3 nodes, 3 backends, client):\n{ns}"
    );
    let ran = Command::new("sh")
        .args(["-c", &status_cmd])
        .output()
        .expect("sh runs");
    let text = String::from_utf8_lossy(&ran.stdout);
    assert!(
        ran.status.success() && text.contains("leader"),
        "`{status_cmd}` did not work: {text}{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    demo.interrupt();
    demo.wait(CLEANUP);
    demo.assert_nothing_left();
}
