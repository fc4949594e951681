//! The names the admin API, the config file and `dsrctl` share: a farm's protocol and a
//! backend's administrative state. They are strings on the wire (`"tcp"`, `"drain"`) and
//! these enums everywhere else; `cluster` keeps them in the replicated state, so their
//! serialized shape (variant order) is the format of the log and snapshots on disk and only
//! ever grows at the end.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Transport protocol of a farm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// Every protocol, in the order their names are listed to users.
    pub const ALL: [Protocol; 2] = [Protocol::Tcp, Protocol::Udp];

    /// The name the config file, the admin API and dsrctl use.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }

    /// The protocol [`Protocol::as_str`] names `name`, if any.
    pub fn from_name(name: &str) -> Option<Protocol> {
        Protocol::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Administrative state of a backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackendState {
    /// Takes new flows.
    #[default]
    Up,
    /// Keeps its flows, takes no new ones.
    Drain,
    /// Out of service.
    Off,
}

impl BackendState {
    /// Every state, in the order their names are listed to users.
    pub const ALL: [BackendState; 3] = [BackendState::Up, BackendState::Drain, BackendState::Off];

    /// The name the config file, the admin API and dsrctl use.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendState::Up => "up",
            BackendState::Drain => "drain",
            BackendState::Off => "off",
        }
    }

    /// The state [`BackendState::as_str`] names `name`, if any.
    pub fn from_name(name: &str) -> Option<BackendState> {
        BackendState::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for BackendState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
