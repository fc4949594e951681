//! The datapath's clock: nanoseconds on the process's monotonic clock, which the VIP
//! ownership lease, flow idle times and pin ages are all measured on, and the conversion of
//! an `Instant` onto it.
//!
//! Apart from `shared` because the pin mirror (`persist`) reads it too: while it lived
//! there, `persist` depended on `shared`, which holds the pin registry from `persist`.

use std::sync::OnceLock;
use std::time::Instant;

/// Nanoseconds on the process's monotonic clock (counting from first use). The clock keeps
/// running while the process is stopped, which is what makes a stale lease visible.
pub fn monotonic_ns() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let base = *BASE.get_or_init(Instant::now);
    u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// The [`monotonic_ns`] value of an `Instant` (0 for instants before the clock's base).
pub fn instant_ns(at: Instant) -> u64 {
    let now = Instant::now();
    let now_ns = monotonic_ns();
    if at >= now {
        now_ns.saturating_add(u64::try_from((at - now).as_nanos()).unwrap_or(u64::MAX))
    } else {
        now_ns.saturating_sub(u64::try_from((now - at).as_nanos()).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instant_lands_on_the_clock() {
        let now = monotonic_ns();
        let later = Instant::now() + std::time::Duration::from_millis(5);
        let ns = instant_ns(later);
        assert!(ns >= now + 5_000_000, "{ns} vs {now}");
    }
}
