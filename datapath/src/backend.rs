//! Which I/O backend moves the frames: the configured choice and what was chosen. Both
//! backends run the same [`Processor`](crate::process::Processor); only how frames reach
//! it and leave differs.

use std::fmt;

/// The configured backend (`[datapath] io`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IoMode {
    /// AF_XDP where the interface and kernel take it (native XDP), AF_PACKET otherwise.
    #[default]
    Auto,
    AfPacket,
    AfXdp,
}

impl IoMode {
    /// The config file's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            IoMode::Auto => "auto",
            IoMode::AfPacket => "af_packet",
            IoMode::AfXdp => "af_xdp",
        }
    }

    /// Parses the config file's spelling.
    pub fn parse(s: &str) -> Option<IoMode> {
        match s {
            "auto" => Some(IoMode::Auto),
            "af_packet" => Some(IoMode::AfPacket),
            "af_xdp" => Some(IoMode::AfXdp),
            _ => None,
        }
    }
}

/// Whether the kernel fast path runs in front of the AF_PACKET workers (`[datapath]
/// fast_path`; docs/design.md#fast-path).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FastPathMode {
    /// Where the kernel takes the program (tcx, Linux 6.6+) and the I/O is AF_PACKET.
    #[default]
    Auto,
    /// Required: the datapath does not start without it.
    On,
    Off,
}

impl FastPathMode {
    /// The config file's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FastPathMode::Auto => "auto",
            FastPathMode::On => "on",
            FastPathMode::Off => "off",
        }
    }

    /// Parses the config file's spelling.
    pub fn parse(s: &str) -> Option<FastPathMode> {
        match s {
            "auto" => Some(FastPathMode::Auto),
            "on" => Some(FastPathMode::On),
            "off" => Some(FastPathMode::Off),
            _ => None,
        }
    }
}

/// The backend a running datapath uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoBackend {
    AfPacket,
    /// AF_XDP; `zerocopy` when every socket bound in zero-copy mode, else copy mode.
    AfXdp {
        zerocopy: bool,
    },
}

impl IoBackend {
    /// `af_packet` or `af_xdp` (the metric label and the log field).
    pub fn as_str(self) -> &'static str {
        match self {
            IoBackend::AfPacket => "af_packet",
            IoBackend::AfXdp { .. } => "af_xdp",
        }
    }

    /// How frames cross into user space: `ring` (AF_PACKET's mapped ring), `copy` or
    /// `zerocopy` (AF_XDP).
    pub fn mode(self) -> &'static str {
        match self {
            IoBackend::AfPacket => "ring",
            IoBackend::AfXdp { zerocopy: true } => "zerocopy",
            IoBackend::AfXdp { zerocopy: false } => "copy",
        }
    }
}

impl fmt::Display for IoBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.as_str(), self.mode())
    }
}
