//! Conversions between the admin API's farm messages and the replicated farms, both ways.
//! The API speaks the config file's vocabulary, so a request farm becomes a [`RawFarm`] and
//! goes through the same validator as a `[[farm]]` table, which yields the replicated farm;
//! reads go the other way through the config's canonical spelling (`RawFarm::from`), so the
//! API shows a farm exactly as `export` writes it.
//!
//! proto3 cannot tell an unset scalar from zero, so in request farms an empty string means
//! "the default" (scheduler, persistence, ttl, state, check durations), `priority = 0` means
//! the default tier 1, check `rise`/`fall` 0 mean the defaults; `weight` is taken as written
//! (0 is a real weight: no new flows); the limits' 0 means no limit (or, for a burst, the
//! default burst) and `tcp_strict = false` the default; `maglev_table_size = 0` keeps the
//! farm's size (or, for a new farm, chooses it from the backends).

use crate::config::{RawBackend, RawCheck, RawFarm};
use cluster::ClusterState;
use proto::admin::v1 as pb;

/// A request farm in the config file's schema, ready for the config validator.
pub fn raw_from_pb(f: &pb::Farm) -> RawFarm {
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let (port, ports) = if f.ports.is_empty() {
        (None, None)
    } else {
        match f.ports.trim().parse::<u16>() {
            Ok(p) => (Some(p), None),
            // Anything else goes to the range parser, whose error names `farm.ports`.
            Err(_) => (None, Some(f.ports.clone())),
        }
    };
    RawFarm {
        name: f.name.clone(),
        vip: f.vip.clone(),
        port,
        ports,
        protocol: f.protocol.clone(),
        scheduler: opt(&f.scheduler),
        persistence: opt(&f.persistence),
        persistence_ttl: opt(&f.persistence_ttl),
        check: f.check.as_ref().map(|c| {
            let d = RawCheck::default();
            RawCheck {
                kind: opt(&c.r#type).unwrap_or(d.kind),
                interval: opt(&c.interval).unwrap_or(d.interval),
                timeout: opt(&c.timeout).unwrap_or(d.timeout),
                rise: if c.rise == 0 { d.rise } else { c.rise },
                fall: if c.fall == 0 { d.fall } else { c.fall },
                // Out of range reaches the validator as 0, which names `check.port`.
                port: (c.port != 0).then(|| u16::try_from(c.port).unwrap_or(0)),
                path: opt(&c.path),
                host: opt(&c.host),
                expect_status: opt(&c.expect_status),
                expect_body: opt(&c.expect_body),
                ca_file: opt(&c.ca_file),
                send: opt(&c.send),
                expect: opt(&c.expect),
                program: opt(&c.program),
                args: (!c.args.is_empty()).then(|| c.args.clone()),
                via_vip: c.via_vip,
            }
        }),
        backend: f.backends.iter().map(raw_backend_from_pb).collect(),
        new_rate_limit: nonzero(f.new_rate_limit),
        new_rate_limit_burst: nonzero(f.new_rate_limit_burst),
        new_rate_limit_farm: nonzero(f.new_rate_limit_farm),
        new_rate_limit_farm_burst: nonzero(f.new_rate_limit_farm_burst),
        max_flows: nonzero(f.max_flows),
        tcp_strict: f.tcp_strict.then_some(true),
        maglev_table_size: nonzero(f.maglev_table_size),
    }
}

fn nonzero(v: u32) -> Option<u32> {
    (v != 0).then_some(v)
}

/// A request backend in the config file's schema.
pub fn raw_backend_from_pb(b: &pb::Backend) -> RawBackend {
    let opt = |s: &str| (!s.is_empty()).then(|| s.to_string());
    RawBackend {
        name: b.name.clone(),
        ip: b.ip.clone(),
        mac: opt(&b.mac),
        weight: Some(b.weight),
        state: opt(&b.state),
        priority: (b.priority != 0).then_some(b.priority),
    }
}

/// A replicated farm as the API shows it, with replicated health verdicts.
pub fn pb_from_farm(f: &cluster::Farm, state: &ClusterState) -> pb::Farm {
    let raw = RawFarm::from(f);
    pb::Farm {
        name: raw.name,
        vip: raw.vip,
        ports: match (raw.port, raw.ports) {
            (Some(p), _) => p.to_string(),
            (None, Some(r)) => r,
            (None, None) => String::new(),
        },
        protocol: raw.protocol,
        scheduler: raw.scheduler.unwrap_or_else(|| "maglev".into()),
        persistence: raw.persistence.unwrap_or_else(|| "none".into()),
        persistence_ttl: raw.persistence_ttl.unwrap_or_default(),
        check: raw.check.map(|c| pb::Check {
            r#type: c.kind,
            interval: c.interval,
            timeout: c.timeout,
            rise: c.rise,
            fall: c.fall,
            port: c.port.map_or(0, u32::from),
            path: c.path.unwrap_or_default(),
            host: c.host.unwrap_or_default(),
            expect_status: c.expect_status.unwrap_or_default(),
            expect_body: c.expect_body.unwrap_or_default(),
            ca_file: c.ca_file.unwrap_or_default(),
            send: c.send.unwrap_or_default(),
            expect: c.expect.unwrap_or_default(),
            program: c.program.unwrap_or_default(),
            args: c.args.unwrap_or_default(),
            via_vip: c.via_vip,
        }),
        backends: f.backends.iter().map(|b| pb_backend(f, b, state)).collect(),
        new_rate_limit: raw.new_rate_limit.unwrap_or(0),
        new_rate_limit_burst: raw.new_rate_limit_burst.unwrap_or(0),
        new_rate_limit_farm: raw.new_rate_limit_farm.unwrap_or(0),
        new_rate_limit_farm_burst: raw.new_rate_limit_farm_burst.unwrap_or(0),
        max_flows: raw.max_flows.unwrap_or(0),
        tcp_strict: raw.tcp_strict.unwrap_or(false),
        maglev_table_size: f.maglev_table_size,
    }
}

/// One replicated backend as the API shows it.
pub fn pb_backend(f: &cluster::Farm, b: &cluster::Backend, state: &ClusterState) -> pb::Backend {
    pb::Backend {
        name: b.name.clone(),
        ip: b.ip.to_string(),
        mac: b
            .mac
            .map(|m| datapath::MacAddr(m).to_string())
            .unwrap_or_default(),
        weight: b.weight,
        state: b.state.as_str().into(),
        priority: b.priority,
        healthy: state.is_healthy(&f.name, &b.name),
        last_check: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Keys, validate_farm};

    #[test]
    fn a_farm_survives_the_api_and_back() {
        let raw: crate::config::RawFarms = toml::from_str(crate::config::SAMPLE_FARM).unwrap();
        let farm = validate_farm(Keys::Api, &raw.farm[0]).unwrap();
        let through_pb = raw_from_pb(&pb_from_farm(&farm, &ClusterState::default()));
        let back = validate_farm(Keys::Api, &through_pb).unwrap();
        assert_eq!(back, farm);
    }
}
