//! The config loader on arbitrary text: `config::parse` (the `run`/`check-config` path
//! without the file read), a witness's validation, and a `dsrctl apply` file's farms. Never
//! panics, and every farm a valid config yields passes the cluster's own check (the bootstrap
//! command the node would write).
#![no_main]

use cluster::Command;
use libfuzzer_sys::fuzz_target;
use node::config::{RawConfig, RawFarms, parse, validate_farms};

/// Paths that would have the validator read a device or a pseudo-file: certificate and CA
/// files named in the text are read as the node would read them.
fn names_special_file(text: &str) -> bool {
    ["/dev", "/proc", "/sys", "/run"]
        .iter()
        .any(|p| text.contains(p))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if names_special_file(text) {
        return;
    }
    if let Ok(config) = parse(text) {
        let bootstrap = Command::Bootstrap {
            farms: config.farms.clone(),
            settings: Default::default(),
        };
        if let Err(e) = bootstrap.validate() {
            panic!("a valid config whose farms the cluster refuses: {e}");
        }
    }
    if let Ok(raw) = toml::from_str::<RawConfig>(text) {
        let _witness = raw.validate_witness();
    }
    if let Ok(raw) = toml::from_str::<RawFarms>(text)
        && let Ok(farms) = validate_farms(&raw.farm)
    {
        let replace = Command::ReplaceFarms {
            expected: Vec::new(),
            farms,
        };
        if let Err(e) = replace.validate() {
            panic!("valid farms the cluster refuses: {e}");
        }
    }
});
