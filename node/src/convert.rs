//! Config-file farms → replicated farms. The config keeps the operator's vocabulary (port or
//! range, `"60s"` strings already parsed); the cluster state keeps one canonical form that
//! every node applies identically. All conversions between the two live here.

use crate::config::{BackendConfig, BackendState, FarmConfig, Persistence, Protocol};

/// The replicated form of a config farm.
pub fn farm(f: &FarmConfig) -> cluster::Farm {
    cluster::Farm {
        name: f.name.clone(),
        vip: f.vip,
        port_first: *f.ports.start(),
        port_last: *f.ports.end(),
        protocol: match f.protocol {
            Protocol::Tcp => cluster::Protocol::Tcp,
            Protocol::Udp => cluster::Protocol::Udp,
        },
        scheduler: cluster::Scheduler::Maglev,
        persistence: match f.persistence {
            Persistence::None => cluster::Persistence::None,
            Persistence::SrcIp { ttl } => cluster::Persistence::SrcIp { ttl },
        },
        check: f.check.as_ref().map(|c| cluster::TcpCheck {
            interval: c.interval,
            timeout: c.timeout,
            rise: c.rise,
            fall: c.fall,
        }),
        backends: f.backends.iter().map(backend).collect(),
    }
}

fn backend(b: &BackendConfig) -> cluster::Backend {
    cluster::Backend {
        name: b.name.clone(),
        ip: b.ip,
        mac: b.mac.map(|m| m.0),
        weight: b.weight,
        state: match b.state {
            BackendState::Up => cluster::BackendState::Up,
            BackendState::Drain => cluster::BackendState::Drain,
            BackendState::Off => cluster::BackendState::Off,
        },
        priority: b.priority,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_config_farm_converts_field_by_field() {
        let c = crate::config::parse(
            r#"
            [node]
            id = 1
            [admin]
            token_file = "/etc/dsrlb/admin.token"
            [[farm]]
            name = "web"
            vip = "198.18.0.100"
            ports = "8000-8010"
            protocol = "udp"
            persistence = "srcip"
            persistence_ttl = "90s"
            [farm.check]
            interval = "1s"
            timeout = "300ms"
            [[farm.backend]]
            name = "b1"
            ip = "198.18.0.21"
            mac = "02:00:00:00:00:21"
            weight = 5
            state = "drain"
            priority = 2
            "#,
        )
        .unwrap();
        let f = super::farm(&c.farms[0]);
        assert_eq!((f.port_first, f.port_last), (8000, 8010));
        assert_eq!(f.protocol, cluster::Protocol::Udp);
        assert_eq!(
            f.persistence,
            cluster::Persistence::SrcIp {
                ttl: std::time::Duration::from_secs(90)
            }
        );
        assert_eq!(f.check.as_ref().unwrap().timeout.as_millis(), 300);
        let b = &f.backends[0];
        assert_eq!(b.mac, Some([2, 0, 0, 0, 0, 0x21]));
        assert_eq!((b.weight, b.priority), (5, 2));
        assert_eq!(b.state, cluster::BackendState::Drain);
    }
}
