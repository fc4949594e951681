//! Value parsers for `dsrctl` arguments: a malformed value is a usage error (exit 2) that
//! names the value and the expected form, before any call is made.

use std::time::Duration;

/// Accepts an `http://` or `https://` URL or a bare `host:port` (taken as http). An https
/// endpoint also needs `--ca-file`; `Cli::checked` says so.
pub fn parse_endpoint(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty endpoint".into());
    }
    let url = if s.contains("://") {
        s.to_owned()
    } else {
        format!("http://{s}")
    };
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("`{s}`: the scheme must be http or https"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        return Err(format!("`{s}`: no host"));
    }
    url.parse::<tonic::transport::Uri>()
        .map_err(|e| format!("`{s}`: {e}"))?;
    Ok(url)
}

/// `A-B` with `1 <= A <= B <= 65535`; kept as text, the API's spelling.
pub fn parse_port_range(s: &str) -> Result<String, String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("`{s}`: expected A-B, e.g. 8000-8099"))?;
    let port = |p: &str| {
        p.trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("`{p}` is not a port (1-65535)"))
    };
    let (a, b) = (port(a)?, port(b)?);
    if a > b {
        return Err(format!("`{s}`: the range is empty ({a} > {b})"));
    }
    Ok(format!("{a}-{b}"))
}

/// A duration with a unit (`500ms`, `60s`), kept as the text the operator wrote.
pub fn parse_duration_text(s: &str) -> Result<String, String> {
    humantime::parse_duration(s).map_err(|e| format!("`{s}`: {e} (e.g. 500ms, 60s)"))?;
    Ok(s.trim().to_owned())
}

pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("`{s}`: {e}"))?;
    if d < Duration::from_millis(100) {
        return Err(format!("`{s}`: at least 100ms"));
    }
    Ok(d)
}

/// `aa:bb:cc:dd:ee:ff` (or empty: unpin), normalised to lower case.
pub fn parse_mac(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Ok(String::new());
    }
    let parts: Vec<&str> = s.split(':').collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()));
    if !ok {
        return Err(format!("`{s}`: expected a MAC like aa:bb:cc:dd:ee:ff"));
    }
    Ok(s.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_range_and_mac_parsers() {
        assert_eq!(parse_port_range("8000-8099").as_deref(), Ok("8000-8099"));
        assert!(parse_port_range("0-10").is_err());
        assert!(parse_port_range("80").is_err());
        assert_eq!(
            parse_mac("AA:BB:cc:dd:ee:0F").as_deref(),
            Ok("aa:bb:cc:dd:ee:0f")
        );
        assert_eq!(parse_mac("").as_deref(), Ok(""));
        assert!(parse_mac("aa:bb:cc:dd:ee").is_err());
    }
}
