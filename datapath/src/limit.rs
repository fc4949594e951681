//! New-flow rate limits (docs/design.md#limits): the token bucket as GCRA on one `u64`, and
//! the per-worker table of per-source buckets.
//!
//! GCRA (the generic cell rate algorithm) is a token bucket kept as one number, the
//! *theoretical arrival time* (TAT): a flow admitted at `now` moves it to
//! `max(TAT, now) + interval`, and a flow is refused while that would run more than
//! `burst × interval` ahead of `now`. So `burst` flows pass at once, then one per
//! `interval`; one add and one compare per check, no division, and "how full" is just how
//! far the TAT lags `now` (a TAT at or before `now` is a full bucket).
//!
//! The source table is private to its worker (no sharing, no lock) and allocated once: sets
//! of [`WAYS`] slots, picked by the client hash. A source missing from its set takes the
//! slot whose TAT is oldest — the fullest bucket. Forgetting a full bucket loses nothing (a
//! new source starts full), so a spoofed-source flood, whose one-off sources are all full,
//! churns those slots while the sources being limited, whose TAT runs ahead, stay put.

/// Slots per set.
pub(crate) const WAYS: usize = 4;
/// Sets per worker (a power of two): 4096 sources per worker in 64 KiB.
pub(crate) const SETS: usize = 1024;

/// A rate of `per_sec` new flows per second with bursts of `burst`, in a worker's share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Gcra {
    /// Nanoseconds between two admitted flows at the sustained rate.
    pub(crate) interval_ns: u64,
    /// `burst × interval_ns`: how far the TAT may run ahead of now.
    pub(crate) tolerance_ns: u64,
}

impl Gcra {
    /// The bucket for `per_sec` flows per second and bursts of `burst` (both ≥ 1; 0 is
    /// taken as 1), scaled for a worker that sees one `share`th of the traffic: its
    /// sustained rate is `per_sec / share`, its burst stays `burst`.
    pub(crate) fn new(per_sec: u32, burst: u32, share: usize) -> Gcra {
        let share = share.max(1) as u64;
        let interval_ns = (1_000_000_000u64 * share) / u64::from(per_sec.max(1));
        Gcra {
            interval_ns: interval_ns.max(1),
            tolerance_ns: interval_ns.max(1).saturating_mul(u64::from(burst.max(1))),
        }
    }

    /// This bucket for a worker that sees one `share`th of the traffic (built for a share
    /// of 1): the rate divided, the burst kept. Multiplies only: this runs per new flow.
    #[inline]
    pub(crate) fn scaled(&self, share: u64) -> Gcra {
        Gcra {
            interval_ns: self.interval_ns.saturating_mul(share),
            tolerance_ns: self.tolerance_ns.saturating_mul(share),
        }
    }

    /// Admits one flow at `now_ns` against the bucket `tat` (updated only if admitted).
    #[inline]
    pub(crate) fn admit(&self, tat: &mut u64, now_ns: u64) -> bool {
        let next = (*tat).max(now_ns).saturating_add(self.interval_ns);
        if next - now_ns > self.tolerance_ns {
            return false;
        }
        *tat = next;
        true
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Slot {
    /// (farm key << 32) | source address.
    key: u64,
    tat: u64,
}

/// One worker's per-source buckets.
#[derive(Debug)]
pub(crate) struct SourceLimiter {
    slots: Box<[Slot]>,
}

impl SourceLimiter {
    pub(crate) fn new() -> Self {
        SourceLimiter {
            slots: vec![Slot::default(); SETS * WAYS].into_boxed_slice(),
        }
    }

    /// Admits one new flow of `key` (hashed as `hash`) under `rate` at `now_ns`.
    #[inline]
    pub(crate) fn admit(&mut self, key: u64, hash: u64, rate: &Gcra, now_ns: u64) -> bool {
        // High bits: the flow table and the pin memories index by the low ones.
        let set = (hash >> 48) as usize & (SETS - 1);
        let start = set * WAYS;
        let Some(ways) = self.slots.get_mut(start..start + WAYS) else {
            return true;
        };
        let mut pick = 0;
        let mut oldest = u64::MAX;
        for (i, s) in ways.iter_mut().enumerate() {
            if s.key == key {
                return rate.admit(&mut s.tat, now_ns);
            }
            if s.tat < oldest {
                oldest = s.tat;
                pick = i;
            }
        }
        let s = &mut ways[pick];
        *s = Slot { key, tat: 0 };
        rate.admit(&mut s.tat, now_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn a_burst_then_the_rate() {
        let g = Gcra::new(10, 5, 1);
        let mut tat = 0;
        let now = 100 * S;
        let passed = (0..20).filter(|_| g.admit(&mut tat, now)).count();
        assert_eq!(passed, 5, "the burst at one instant");
        // One more every 100 ms.
        assert!(!g.admit(&mut tat, now + S / 10 - 1));
        assert!(g.admit(&mut tat, now + S / 10));
        assert!(!g.admit(&mut tat, now + S / 10));
        // Idle for a second: the bucket is full again, not fuller.
        let later = now + 2 * S;
        assert_eq!((0..20).filter(|_| g.admit(&mut tat, later)).count(), 5);
    }

    #[test]
    fn a_share_divides_the_rate_not_the_burst() {
        let g = Gcra::new(10, 3, 2);
        assert_eq!(g.interval_ns, S / 5);
        assert_eq!(Gcra::new(10, 3, 1).scaled(2), g);
        let mut tat = 0;
        assert_eq!((0..10).filter(|_| g.admit(&mut tat, 50 * S)).count(), 3);
    }

    #[test]
    fn limited_sources_stay_while_one_off_sources_churn() {
        let mut l = SourceLimiter::new();
        let g = Gcra::new(1, 2, 1);
        let now = 10 * S;
        // Source 1 uses its burst.
        let hot = 1u64;
        assert!(l.admit(hot, 0, &g, now));
        assert!(l.admit(hot, 0, &g, now));
        assert!(!l.admit(hot, 0, &g, now));
        // A flood of one-off sources in the same set (same hash) each passes once...
        for k in 100..10_000u64 {
            assert!(l.admit(k, 0, &g, now + k));
        }
        // ...and never takes the limited source's slot: it is still refused.
        assert!(!l.admit(hot, 0, &g, now + 10_000));
    }

    proptest! {
        /// Over any window, admitted flows never exceed burst + window / interval, and a
        /// source that asks no faster than the rate is never refused.
        #[test]
        fn never_more_than_burst_plus_rate(
            per_sec in 1u32..10_000,
            burst in 1u32..100,
            gaps in proptest::collection::vec(0u64..50_000_000, 1..400),
        ) {
            let g = Gcra::new(per_sec, burst, 1);
            let mut tat = 0;
            let start = 1_000 * S;
            let mut now = start;
            let mut admitted = 0u64;
            for gap in &gaps {
                now += gap;
                if g.admit(&mut tat, now) {
                    admitted += 1;
                }
            }
            let bound = u64::from(burst) + (now - start) / g.interval_ns;
            prop_assert!(admitted <= bound, "{admitted} > {bound}");

            let mut tat = 0;
            let mut now = start;
            for _ in 0..gaps.len() {
                prop_assert!(g.admit(&mut tat, now));
                now += g.interval_ns;
            }
        }
    }
}
