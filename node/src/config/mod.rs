//! The node configuration file: its TOML schema (docs/design.md#config), loading, and validation
//! into typed values.
//!
//! The file is read into `raw` structs that mirror the TOML exactly (every field optional
//! with a documented default, unknown keys refused), then `validate` turns them into
//! [`Config`] or a [`ConfigError`] that names the key at fault. Addresses and durations are
//! kept as strings in the raw form so the error can name the key, not only a line number.
//! Farms are validated straight into the replicated [`cluster::Farm`]; `dsrctl apply` files
//! and admin API requests go through the same farm validator.

mod limits;
mod raw;
mod secret;
mod tls;
mod validate;

pub use raw::{RawBackend, RawCheck, RawConfig, RawFarm, RawFarms};
pub use secret::{MIN_TOKEN_BYTES, read_token};
pub use tls::AdminTls;
#[cfg(test)]
pub(crate) use validate::SAMPLE_FARM;
pub(crate) use validate::shown;
pub use validate::{
    ClusterConfig, Config, DatapathSettings, Keys, MAGLEV_SIZES, MAX_WEIGHT, WitnessConfig,
    backend_address, backend_mac, backend_priority, backend_state, backend_weight, check_backends,
    default_maglev_size, failover, keep_maglev_size, unicast_ipv4, validate_backend, validate_farm,
    validate_farms, vip_address,
};

use std::path::Path;

/// A configuration that cannot be used, naming where the fault is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown key or a value of the wrong type; the
    /// parser's message shows the offending line and key.
    #[error("config file {path}: {message}")]
    Syntax { path: String, message: String },
    /// A value is well-formed TOML but not acceptable.
    #[error("config key `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

impl ConfigError {
    pub(crate) fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// Reads, parses and validates a config file; a node never starts on a partial config.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let (text, syntax) = read(path)?;
    parse(&text).map_err(|e| match e {
        ConfigError::Syntax { message, .. } => syntax(message),
        other => other,
    })
}

/// The file's text, and how a syntax error in it is reported (naming the file).
fn read(path: &Path) -> Result<(String, impl Fn(String) -> ConfigError), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let shown = path.display().to_string();
    Ok((text, move |message| ConfigError::Syntax {
        path: shown.clone(),
        message,
    }))
}

/// What a config file makes this process: a full node, or a witness.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // Built once at start; boxing buys nothing.
pub enum Loaded {
    Node(Config),
    /// `dsrlb witness`, or `[cluster] witness = true`: `[node]`, `[cluster]` and
    /// `[metrics]` only. `ignored` names the tables present that a witness does not use.
    Witness {
        config: WitnessConfig,
        ignored: Vec<String>,
    },
}

/// Reads and validates a config file as a witness's (when `witness` is set, or the file says
/// `[cluster] witness = true`) or as a full node's.
pub fn load_role(path: &Path, witness: bool) -> Result<Loaded, ConfigError> {
    let (text, syntax) = read(path)?;
    let raw: RawConfig = toml::from_str(&text).map_err(|e| syntax(e.to_string()))?;
    if !(witness || raw.cluster.witness) {
        let config = raw.validate()?;
        // The files a node reads at start are read now (docs/design.md#config), so
        // `check-config` refuses what `run` would, and `run` refuses before anything starts.
        if let Some(f) = &config.cluster.token_file {
            read_token("cluster.token_file", f)?;
        }
        read_token("admin.token_file", &config.admin_token_file)?;
        if let Some(f) = &config.metrics.token_file {
            read_token("metrics.token_file", f)?;
        }
        return Ok(Loaded::Node(config));
    }
    let table: toml::Table = toml::from_str(&text).map_err(|e| syntax(e.to_string()))?;
    let ignored = ["datapath", "admin", "farm"]
        .into_iter()
        .filter(|k| table.contains_key(*k))
        .map(String::from)
        .collect();
    let config = raw.validate_witness()?;
    if let Some(f) = &config.cluster.token_file {
        read_token("cluster.token_file", f)?;
    }
    if let Some(f) = &config.metrics.token_file {
        read_token("metrics.token_file", f)?;
    }
    Ok(Loaded::Witness { config, ignored })
}

/// What `check-config` checks of the host beyond the files: the datapath interface exists
/// here. `run` refuses the same in its preflight; the file alone cannot know it.
pub fn check_host(config: &Config) -> Result<(), ConfigError> {
    let name = &config.datapath.interface;
    nix::net::if_::if_nametoindex(name.as_str())
        .map(drop)
        .map_err(|e| {
            ConfigError::invalid(
                "datapath.interface",
                format!("no interface {name:?} on this host ({e})"),
            )
        })
}

/// Parses and validates config text (the file's contents).
pub fn parse(text: &str) -> Result<Config, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
        path: "<text>".into(),
        message: e.to_string(),
    })?;
    raw.validate()
}
