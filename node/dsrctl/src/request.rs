//! Parsed arguments → `dsrlb.admin.v1` requests. Pure, so every option's effect on the wire
//! is unit-tested without a server. Values the operator left out get the node config's
//! defaults (the API takes the config's schema, where an absent key means its default).

use super::cli::{
    BackendAddArgs, BackendSetArgs, CheckKind, FarmAddArgs, FarmSetArgs, FarmSettings,
    PersistenceFlushArgs, PersistenceListArgs,
};
use proto::admin::v1 as pb;

/// `[farm.check]` defaults of the node config, used when a check is switched on without
/// saying every field.
pub const CHECK_INTERVAL: &str = "2s";
pub const CHECK_TIMEOUT: &str = "1s";
pub const CHECK_RISE: u32 = 2;
pub const CHECK_FALL: u32 = 3;

/// `farm add` → the farm to create (no backends yet).
pub fn create_farm(args: &FarmAddArgs) -> pb::CreateFarmRequest {
    let mut farm = pb::Farm {
        name: args.name.clone(),
        vip: args.vip.to_string(),
        ports: ports_text(args.port, args.ports.as_deref()).unwrap_or_default(),
        protocol: args.protocol.as_str().into(),
        ..pb::Farm::default()
    };
    apply_settings(&mut farm, &args.settings);
    pb::CreateFarmRequest { farm: Some(farm) }
}

/// `farm set` → the farm as it is now (`current`, from GetFarm) with only the given options
/// changed; its backends are kept (`replace_backends` stays false).
pub fn update_farm(mut current: pb::Farm, args: &FarmSetArgs) -> pb::UpdateFarmRequest {
    if let Some(vip) = args.vip {
        current.vip = vip.to_string();
    }
    if let Some(ports) = ports_text(args.port, args.ports.as_deref()) {
        current.ports = ports;
    }
    if let Some(p) = args.protocol {
        current.protocol = p.as_str().into();
    }
    apply_settings(&mut current, &args.settings);
    // Backends are left out: sending them back could undo a backend change made between
    // our read and this write, and they are kept anyway without `replace_backends`.
    current.backends.clear();
    pb::UpdateFarmRequest {
        farm: Some(current),
        replace_backends: false,
    }
}

fn ports_text(port: Option<u16>, range: Option<&str>) -> Option<String> {
    port.map(|p| p.to_string())
        .or_else(|| range.map(str::to_owned))
}

fn apply_settings(farm: &mut pb::Farm, s: &FarmSettings) {
    if let Some(sched) = &s.scheduler {
        farm.scheduler = sched.clone();
    }
    if let Some(p) = s.persistence {
        farm.persistence = p.as_str().into();
    }
    if let Some(ttl) = &s.persistence_ttl {
        farm.persistence_ttl = ttl.clone();
    }
    // A new rate without a burst gets the default burst of its rate, not the old burst.
    if let Some(v) = s.new_rate_limit {
        farm.new_rate_limit = v;
        farm.new_rate_limit_burst = 0;
    }
    if let Some(v) = s.new_rate_limit_burst {
        farm.new_rate_limit_burst = v;
    }
    if let Some(v) = s.new_rate_limit_farm {
        farm.new_rate_limit_farm = v;
        farm.new_rate_limit_farm_burst = 0;
    }
    if let Some(v) = s.new_rate_limit_farm_burst {
        farm.new_rate_limit_farm_burst = v;
    }
    if let Some(v) = s.max_flows {
        farm.max_flows = v;
    }
    if let Some(v) = s.maglev_table_size {
        farm.maglev_table_size = v;
    }
    if let Some(v) = s.tcp_strict {
        farm.tcp_strict = v;
    }
    let tuning = s.check_interval.is_some()
        || s.check_timeout.is_some()
        || s.check_rise.is_some()
        || s.check_fall.is_some()
        || s.check_port.is_some()
        || s.check_path.is_some()
        || s.check_host.is_some()
        || s.check_expect_status.is_some()
        || s.check_expect_body.is_some()
        || s.check_ca_file.is_some()
        || s.check_send.is_some()
        || s.check_expect.is_some()
        || s.check_program.is_some()
        || !s.check_arg.is_empty()
        || s.check_via_vip.is_some();
    match s.check {
        Some(CheckKind::None) => farm.check = None,
        Some(kind) => tune_check(farm, s, Some(kind)),
        None if tuning => tune_check(farm, s, None),
        None => {}
    }
}

fn tune_check(farm: &mut pb::Farm, s: &FarmSettings, kind: Option<CheckKind>) {
    let check = farm.check.get_or_insert_with(|| pb::Check {
        r#type: "tcp".into(),
        interval: CHECK_INTERVAL.into(),
        timeout: CHECK_TIMEOUT.into(),
        rise: CHECK_RISE,
        fall: CHECK_FALL,
        ..Default::default()
    });
    if let Some(kind) = kind
        && kind.name() != check.r#type
    {
        // Another type: the old type's own fields would not apply to it.
        *check = pb::Check {
            r#type: kind.name().into(),
            interval: std::mem::take(&mut check.interval),
            timeout: std::mem::take(&mut check.timeout),
            rise: check.rise,
            fall: check.fall,
            port: check.port,
            via_vip: check.via_vip.filter(|_| kind != CheckKind::Exec),
            ..Default::default()
        };
    }
    if check.r#type.is_empty() {
        check.r#type = "tcp".into();
    }
    let set = |field: &mut String, v: &Option<String>| {
        if let Some(v) = v {
            field.clone_from(v);
        }
    };
    set(&mut check.interval, &s.check_interval);
    set(&mut check.timeout, &s.check_timeout);
    if let Some(v) = s.check_rise {
        check.rise = v;
    }
    if let Some(v) = s.check_fall {
        check.fall = v;
    }
    if let Some(v) = s.check_port {
        check.port = u32::from(v);
    }
    set(&mut check.path, &s.check_path);
    set(&mut check.host, &s.check_host);
    set(&mut check.expect_status, &s.check_expect_status);
    set(&mut check.expect_body, &s.check_expect_body);
    set(&mut check.ca_file, &s.check_ca_file);
    set(&mut check.send, &s.check_send);
    set(&mut check.expect, &s.check_expect);
    set(&mut check.program, &s.check_program);
    if !s.check_arg.is_empty() {
        check.args.clone_from(&s.check_arg);
    }
    if let Some(v) = s.check_via_vip {
        check.via_vip = Some(v);
    }
}

/// `backend add` → the backend, every field explicit (weight, state, priority default to the
/// config's 1, `up`, 1).
pub fn add_backend(args: &BackendAddArgs) -> pb::AddBackendRequest {
    pb::AddBackendRequest {
        farm: args.farm.clone(),
        backend: Some(pb::Backend {
            name: args.name.clone(),
            ip: args.ip.to_string(),
            mac: args.mac.clone().unwrap_or_default(),
            weight: args.weight,
            state: args.state.as_str().into(),
            priority: args.priority,
            healthy: false,
            last_check: None,
        }),
    }
}

/// `backend set` → only the given fields are set in the request.
pub fn update_backend(args: &BackendSetArgs) -> pb::UpdateBackendRequest {
    pb::UpdateBackendRequest {
        farm: args.farm.clone(),
        name: args.name.clone(),
        ip: args.ip.map(|ip| ip.to_string()),
        mac: args.mac.clone(),
        weight: args.weight,
        state: args.state.map(|s| s.as_str().to_owned()),
        priority: args.priority,
    }
}

/// `persistence list` → the listing request (the limit always explicit).
pub fn list_persistence(args: &PersistenceListArgs) -> pb::ListPersistenceRequest {
    pb::ListPersistenceRequest {
        farm: args.farm.clone(),
        client: args.client.map(|ip| ip.to_string()),
        limit: args.limit,
    }
}

/// `persistence flush` → the flush request; no `--backend` flushes the whole farm.
pub fn flush_persistence(args: &PersistenceFlushArgs) -> pb::FlushPersistenceRequest {
    pb::FlushPersistenceRequest {
        farm: args.farm.clone(),
        backend: args.backend.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::cli::{BackendCmd, Cli, Command, FarmCmd, PersistenceCmd};
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Command {
        let mut all = vec!["dsrctl"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).expect("parses").command
    }

    fn farm_add(args: &[&str]) -> pb::Farm {
        let mut all = vec!["farm", "add"];
        all.extend_from_slice(args);
        match parse(&all) {
            Command::Farm(FarmCmd::Add(a)) => create_farm(&a).farm.expect("farm"),
            other => panic!("{other:?}"),
        }
    }

    fn farm_set(current: pb::Farm, args: &[&str]) -> pb::UpdateFarmRequest {
        let mut all = vec!["farm", "set"];
        all.extend_from_slice(args);
        match parse(&all) {
            Command::Farm(FarmCmd::Set(a)) => update_farm(current, &a),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn farm_add_minimal() {
        let f = farm_add(&[
            "web",
            "--vip",
            "198.18.0.100",
            "--port",
            "80",
            "--protocol",
            "tcp",
        ]);
        assert_eq!(
            f,
            pb::Farm {
                name: "web".into(),
                vip: "198.18.0.100".into(),
                ports: "80".into(),
                protocol: "tcp".into(),
                ..pb::Farm::default()
            }
        );
    }

    #[test]
    fn farm_add_everything() {
        let f = farm_add(&[
            "dns",
            "--vip",
            "198.18.0.101",
            "--ports",
            "5300-5399",
            "--protocol",
            "udp",
            "--scheduler",
            "maglev",
            "--persistence",
            "srcip",
            "--persistence-ttl",
            "90s",
            "--check-interval",
            "500ms",
            "--check-fall",
            "5",
            "--new-rate-limit",
            "20",
            "--new-rate-limit-farm",
            "1000",
            "--new-rate-limit-farm-burst",
            "50",
            "--max-flows",
            "300",
            "--tcp-strict",
            "true",
        ]);
        assert_eq!(
            (
                f.new_rate_limit,
                f.new_rate_limit_burst,
                f.new_rate_limit_farm,
                f.new_rate_limit_farm_burst,
                f.max_flows,
                f.tcp_strict
            ),
            (20, 0, 1000, 50, 300, true)
        );
        assert_eq!(f.ports, "5300-5399");
        assert_eq!(f.protocol, "udp");
        assert_eq!(f.scheduler, "maglev");
        assert_eq!(f.persistence, "srcip");
        assert_eq!(f.persistence_ttl, "90s");
        // A check-* option alone switches a TCP check on with the other fields defaulted.
        assert_eq!(
            f.check,
            Some(pb::Check {
                r#type: "tcp".into(),
                interval: "500ms".into(),
                timeout: CHECK_TIMEOUT.into(),
                rise: CHECK_RISE,
                fall: 5,
                ..Default::default()
            })
        );
    }

    #[test]
    fn farm_set_changes_only_what_is_given_and_sends_no_backends() {
        let current = pb::Farm {
            name: "web".into(),
            vip: "198.18.0.100".into(),
            ports: "80".into(),
            protocol: "tcp".into(),
            persistence: "srcip".into(),
            check: Some(pb::Check {
                r#type: "tcp".into(),
                interval: "2s".into(),
                timeout: "1s".into(),
                rise: 2,
                fall: 3,
                ..Default::default()
            }),
            backends: vec![pb::Backend {
                name: "b1".into(),
                ..pb::Backend::default()
            }],
            ..pb::Farm::default()
        };
        let req = farm_set(
            current.clone(),
            &["web", "--ports", "8000-8009", "--check-rise", "4"],
        );
        assert!(!req.replace_backends);
        let f = req.farm.expect("farm");
        assert_eq!(f.ports, "8000-8009");
        assert_eq!(f.vip, current.vip);
        assert_eq!(f.persistence, "srcip");
        assert_eq!(f.check.as_ref().map(|c| (c.rise, c.fall)), Some((4, 3)));
        assert!(f.backends.is_empty());

        let f = farm_set(current, &["web", "--check", "none"])
            .farm
            .expect("farm");
        assert_eq!(f.check, None);
    }

    #[test]
    fn backend_add_fills_the_config_defaults() {
        let req = match parse(&["backend", "add", "web", "b1", "--ip", "198.18.0.10"]) {
            Command::Backend(BackendCmd::Add(a)) => add_backend(&a),
            other => panic!("{other:?}"),
        };
        assert_eq!(req.farm, "web");
        let b = req.backend.expect("backend");
        assert_eq!(
            (
                b.name.as_str(),
                b.ip.as_str(),
                b.mac.as_str(),
                b.weight,
                b.state.as_str(),
                b.priority
            ),
            ("b1", "198.18.0.10", "", 1, "up", 1)
        );
        let req = match parse(&[
            "backend",
            "add",
            "web",
            "b2",
            "--ip",
            "198.18.0.11",
            "--mac",
            "AA:bb:cc:dd:ee:01",
            "--weight",
            "0",
            "--state",
            "drain",
            "--priority",
            "2",
        ]) {
            Command::Backend(BackendCmd::Add(a)) => add_backend(&a),
            other => panic!("{other:?}"),
        };
        let b = req.backend.expect("backend");
        assert_eq!(
            (b.mac.as_str(), b.weight, b.state.as_str(), b.priority),
            ("aa:bb:cc:dd:ee:01", 0, "drain", 2)
        );
    }

    #[test]
    fn backend_set_sets_only_given_fields() {
        let req = match parse(&["backend", "set", "web", "b1", "--state", "drain"]) {
            Command::Backend(BackendCmd::Set(a)) => update_backend(&a),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            req,
            pb::UpdateBackendRequest {
                farm: "web".into(),
                name: "b1".into(),
                state: Some("drain".into()),
                ..pb::UpdateBackendRequest::default()
            }
        );
    }

    #[test]
    fn persistence_requests() {
        let list = |args: &[&str]| match parse(args) {
            Command::Persistence(PersistenceCmd::List(a)) => list_persistence(&a),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            list(&["persistence", "list", "web"]),
            pb::ListPersistenceRequest {
                farm: "web".into(),
                client: None,
                limit: proto::admin::PERSISTENCE_LIST_DEFAULT,
            }
        );
        assert_eq!(
            list(&[
                "persistence",
                "list",
                "web",
                "--client",
                "198.18.0.41",
                "--limit",
                "5"
            ]),
            pb::ListPersistenceRequest {
                farm: "web".into(),
                client: Some("198.18.0.41".into()),
                limit: 5,
            }
        );
        let flush = |args: &[&str]| match parse(args) {
            Command::Persistence(PersistenceCmd::Flush(a)) => flush_persistence(&a),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            flush(&["persistence", "flush", "web"]),
            pb::FlushPersistenceRequest {
                farm: "web".into(),
                backend: None,
            }
        );
        assert_eq!(
            flush(&["persistence", "flush", "web", "--backend", "b1"]).backend,
            Some("b1".into())
        );
    }
}
