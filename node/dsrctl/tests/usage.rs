//! The real `dsrctl` binary without a cluster: usage errors exit 3 (rejected input), `--help`
//! reads like a man page summary, an unreachable endpoint fails with exit 2 and an unusable
//! token file with exit 1, each with one line that says what to check; the persistence verbs
//! check their arguments first; completions and the man page are printed without a call.
//! Needs no root: the only network use is connecting to closed ports on 127.0.0.1.

use lab::ctl::run;

/// A port on 127.0.0.1 that nothing listens on (bound, then closed).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

#[test]
fn help_is_a_summary_with_examples_and_exit_codes() {
    let help = run(&["--help"]).ok().stdout;
    for want in [
        "dsrctl — operate a dsrlb cluster",
        "--endpoint",
        "DSRCTL_ENDPOINT",
        "--token-file",
        "DSRCTL_TOKEN_FILE",
        "--output",
        "Exit status: 0 success, 1",
        "Examples:",
        "dsrctl apply -f farms.toml --dry-run",
    ] {
        assert!(help.contains(want), "--help lacks {want:?}:\n{help}");
    }
    for verb in [
        "status",
        "farm",
        "backend",
        "apply",
        "export",
        "persistence",
        "stats",
        "member",
        "leader",
    ] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(verb)),
            "--help does not list {verb}:\n{help}"
        );
    }
    let farm_help = run(&["farm", "add", "--help"]).ok().stdout;
    assert!(farm_help.contains("--persistence-ttl"), "{farm_help}");
}

#[test]
fn usage_errors_exit_3_before_any_call() {
    for args in [
        &[
            "farm",
            "add",
            "web",
            "--vip",
            "198.18.0.100",
            "--protocol",
            "tcp",
        ][..],
        &["backend", "set", "web", "b1"],
        &["stats", "--interval", "1s"],
        &["status", "--endpoint", "https://198.18.0.2:7101"],
        &["no-such-verb"],
        &[],
    ] {
        let r = run(args);
        assert_eq!(r.code, 3, "{args:?}: {r:#?}");
        assert!(r.stdout.is_empty(), "{args:?}: {r:#?}");
    }
}

#[test]
fn unreachable_endpoints_fail_with_one_line_naming_them() {
    let (a, b) = (closed_port(), closed_port());
    let endpoints = format!("127.0.0.1:{a},http://127.0.0.1:{b}");
    let r = run(&["--endpoint", &endpoints, "status"]);
    assert_eq!(r.code, 2, "unreachable: {r:#?}");
    let line = r.failed_one_line();
    assert!(
        line.starts_with(&format!(
            "dsrctl: cannot reach http://127.0.0.1:{a}, http://127.0.0.1:{b}:"
        )),
        "{line}"
    );
    assert!(
        line.ends_with("check --endpoint and that dsrlb runs with [admin] listen"),
        "{line}"
    );
    assert!(r.stdout.is_empty(), "{r:#?}");
}

#[test]
fn the_environment_names_the_endpoints() {
    let port = closed_port();
    let mut cmd = lab::ctl::command(&lab::ctl::strings(&["farm", "list"]));
    cmd.env("DSRCTL_ENDPOINT", format!("127.0.0.1:{port}"));
    let r = lab::ctl::output(cmd);
    let line = r.failed_one_line();
    assert!(
        line.contains(&format!("cannot reach http://127.0.0.1:{port}")),
        "{line}"
    );
}

#[test]
fn an_unusable_token_file_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("admin.token");
    let r = run(&[
        "--token-file",
        missing.to_str().expect("utf-8 path"),
        "status",
    ]);
    assert_eq!(r.code, 1, "unusable token file: {r:#?}");
    let line = r.failed_one_line();
    assert!(
        line.contains(&missing.display().to_string()) && line.contains("--token-file"),
        "{line}"
    );
}

#[test]
fn persistence_arguments_are_checked_before_any_call() {
    let help = run(&["persistence", "--help"]).ok().stdout;
    for verb in ["list", "flush"] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(verb)),
            "persistence --help does not list {verb}:\n{help}"
        );
    }
    let list_help = run(&["persistence", "list", "--help"]).ok().stdout;
    for want in ["--client", "--limit", "[default: 1000]", "Examples:"] {
        assert!(list_help.contains(want), "lacks {want:?}:\n{list_help}");
    }
    let flush_help = run(&["persistence", "flush", "--help"]).ok().stdout;
    assert!(flush_help.contains("--backend"), "{flush_help}");
    // Nothing listens at the endpoint: a usage error is found before it would matter.
    let endpoint = format!("127.0.0.1:{}", closed_port());
    for args in [
        &["persistence", "list"][..],
        &["persistence", "list", "web", "--client", "198.18.0"],
        &["persistence", "list", "web", "--client", "2001:db8::1::2"],
        &["persistence", "list", "web", "--limit", "0"],
        &["persistence", "list", "web", "--limit", "100001"],
        &["persistence", "flush"],
        &["persistence", "flush", "web", "--backend"],
    ] {
        let mut all = vec!["--endpoint", endpoint.as_str()];
        all.extend_from_slice(args);
        let r = run(&all);
        assert_eq!(r.code, 3, "{args:?}: {r:#?}");
        assert!(r.stdout.is_empty(), "{args:?}: {r:#?}");
    }
    // A well-formed one gets as far as the (closed) endpoint.
    let r = run(&["--endpoint", &endpoint, "persistence", "flush", "web"]);
    assert!(r.failed_one_line().contains("cannot reach"), "{r:#?}");
}

#[test]
fn a_malformed_apply_file_is_pointed_at_by_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("farms.toml");
    std::fs::write(&file, "[[farm]]\nname = \"web\"\nvip = 198.18.0.100\n").expect("write");
    let port = closed_port();
    let r = run(&[
        "--endpoint",
        &format!("127.0.0.1:{port}"),
        "apply",
        "-f",
        file.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(r.code, 3, "a malformed file is rejected input: {r:#?}");
    let line = r.failed_one_line();
    assert!(
        line.starts_with(&format!("dsrctl: invalid: {}: line 3", file.display())),
        "{line}"
    );
}

#[test]
fn completions_and_the_man_page_need_no_node() {
    // Nothing listens at the endpoint: these verbs never call one.
    let endpoint = format!("127.0.0.1:{}", closed_port());
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef dsrctl"),
        ("fish", "complete -c dsrctl"),
    ] {
        let out = run(&["--endpoint", &endpoint, "completion", shell])
            .ok()
            .stdout;
        assert!(out.contains(marker), "{shell}: no {marker:?} in\n{out}");
        for verb in ["farm", "backend", "persistence", "leader"] {
            assert!(out.contains(verb), "{shell} completion lacks {verb}");
        }
    }
    let man = run(&["--endpoint", &endpoint, "man"]).ok().stdout;
    for want in [".TH dsrctl 1", ".SH NAME", "\\-\\-endpoint", "Exit status"] {
        assert!(man.contains(want), "man page lacks {want:?}:\n{man}");
    }
    let r = run(&["completion", "powershell-classic"]);
    assert_eq!(r.code, 3, "{r:#?}");
}
