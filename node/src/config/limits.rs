//! A farm's limit keys (docs/design.md#limits): `new_rate_limit`, `new_rate_limit_farm`,
//! their bursts, `max_flows` and `tcp_strict`, checked into [`cluster::FarmLimits`] and
//! written back in the canonical spelling (absent = no limit, so an export of a farm
//! without limits reads as before).

use super::ConfigError;
use super::raw::RawFarm;
use cluster::state::{FarmLimits, RateLimit};

/// Highest new-flow rate and burst accepted: far above what one node forwards, low enough
/// that a bucket's arithmetic never saturates.
pub const MAX_RATE: u32 = 10_000_000;
/// Highest `max_flows`: a backend's share of the largest flow tables (256 workers ×
/// 16 Mi entries) is far below it.
pub const MAX_FLOWS: u32 = 1_000_000_000;

/// The limits of `raw`; `k` names a farm key as the caller reports errors.
pub fn validate_limits(
    k: &dyn Fn(&str) -> String,
    raw: &RawFarm,
) -> Result<FarmLimits, ConfigError> {
    Ok(FarmLimits {
        per_source: rate(
            k,
            "new_rate_limit",
            raw.new_rate_limit,
            raw.new_rate_limit_burst,
        )?,
        per_farm: rate(
            k,
            "new_rate_limit_farm",
            raw.new_rate_limit_farm,
            raw.new_rate_limit_farm_burst,
        )?,
        max_flows: match raw.max_flows {
            None => 0,
            Some(n) if (1..=MAX_FLOWS).contains(&n) => n,
            Some(n) => {
                return Err(ConfigError::invalid(
                    k("max_flows"),
                    format!("{n} is not 1-{MAX_FLOWS} (leave it out for no limit)"),
                ));
            }
        },
        tcp_strict: raw.tcp_strict.unwrap_or(false),
    })
}

fn rate(
    k: &dyn Fn(&str) -> String,
    key: &str,
    per_sec: Option<u32>,
    burst: Option<u32>,
) -> Result<Option<RateLimit>, ConfigError> {
    let burst_key = format!("{key}_burst");
    let Some(per_sec) = per_sec else {
        if burst.is_some() {
            return Err(ConfigError::invalid(
                k(&burst_key),
                format!("needs `{key}`"),
            ));
        }
        return Ok(None);
    };
    if !(1..=MAX_RATE).contains(&per_sec) {
        return Err(ConfigError::invalid(
            k(key),
            format!(
                "{per_sec} is not 1-{MAX_RATE} new flows per second (leave it out for no limit)"
            ),
        ));
    }
    // One second's worth unless said otherwise.
    let burst = burst.unwrap_or(per_sec);
    if !(1..=MAX_RATE).contains(&burst) {
        return Err(ConfigError::invalid(
            k(&burst_key),
            format!("{burst} is not 1-{MAX_RATE}"),
        ));
    }
    Ok(Some(RateLimit { per_sec, burst }))
}

/// Writes `l` into `raw`'s limit keys, leaving out what limits nothing.
pub fn write_limits(l: &FarmLimits, raw: &mut RawFarm) {
    raw.new_rate_limit = l.per_source.map(|r| r.per_sec);
    raw.new_rate_limit_burst = l.per_source.map(|r| r.burst);
    raw.new_rate_limit_farm = l.per_farm.map(|r| r.per_sec);
    raw.new_rate_limit_farm_burst = l.per_farm.map(|r| r.burst);
    raw.max_flows = (l.max_flows > 0).then_some(l.max_flows);
    raw.tcp_strict = l.tcp_strict.then_some(true);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(edit: impl FnOnce(&mut RawFarm)) -> Result<FarmLimits, String> {
        let mut raw = RawFarm::default();
        edit(&mut raw);
        validate_limits(&|f| format!("farm[web].{f}"), &raw).map_err(|e| e.to_string())
    }

    #[test]
    fn bad_values_name_their_key() {
        type Edit = fn(&mut RawFarm);
        let cases: [(Edit, &str); 6] = [
            (|r| r.new_rate_limit = Some(0), "farm[web].new_rate_limit"),
            (
                |r| r.new_rate_limit_farm = Some(MAX_RATE + 1),
                "farm[web].new_rate_limit_farm",
            ),
            (
                |r| r.new_rate_limit_burst = Some(5),
                "farm[web].new_rate_limit_burst",
            ),
            (
                |r| {
                    r.new_rate_limit = Some(5);
                    r.new_rate_limit_burst = Some(0);
                },
                "farm[web].new_rate_limit_burst",
            ),
            (
                |r| r.new_rate_limit_farm_burst = Some(1),
                "farm[web].new_rate_limit_farm_burst",
            ),
            (|r| r.max_flows = Some(0), "farm[web].max_flows"),
        ];
        for (edit, key) in cases {
            let err = check(edit).expect_err(key);
            assert!(err.starts_with(&format!("config key `{key}`")), "{err}");
        }
    }

    #[test]
    fn defaults_and_round_trip() {
        assert_eq!(check(|_| {}).unwrap(), FarmLimits::default());
        let l = check(|r| {
            r.new_rate_limit = Some(20);
            r.new_rate_limit_farm = Some(1000);
            r.new_rate_limit_farm_burst = Some(50);
            r.max_flows = Some(100);
            r.tcp_strict = Some(true);
        })
        .unwrap();
        assert_eq!(
            l.per_source,
            Some(RateLimit {
                per_sec: 20,
                burst: 20
            })
        );
        let mut raw = RawFarm::default();
        write_limits(&l, &mut raw);
        assert_eq!(validate_limits(&|f| f.to_string(), &raw).unwrap(), l);
    }
}
