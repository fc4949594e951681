//! The suite's one source of randomness: a seed (printed by every scenario, taken from
//! `DSRLB_CHAOS_SEED` to replay a run) expanded by SplitMix64, so a scenario's choices —
//! which follower, how long a freeze, the order of a rolling restart — come from it alone.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The variable that fixes the seed: decimal, or hex with `0x`.
pub const SEED_ENV: &str = "DSRLB_CHAOS_SEED";

/// SplitMix64: tiny, fast, and every seed gives a good stream.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

/// The seed of this run, the same for every scenario of one test process:
/// `DSRLB_CHAOS_SEED` if set (an unparsable value is an error that names the variable), else
/// one drawn from the clock and the process id.
pub fn run_seed() -> Result<u64, String> {
    static SEED: OnceLock<Result<u64, String>> = OnceLock::new();
    SEED.get_or_init(draw_seed).clone()
}

fn draw_seed() -> Result<u64, String> {
    match std::env::var(SEED_ENV) {
        Ok(text) => parse_seed(&text)
            .ok_or_else(|| format!("{SEED_ENV}={text:?} is not a number (decimal or 0x-hex)")),
        Err(_) => {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            Ok(Rng::new(nanos ^ u64::from(std::process::id()) << 40).next_u64())
        }
    }
}

/// Parses `123` or `0x7b`.
pub fn parse_seed(text: &str) -> Option<u64> {
    let t = text.trim();
    match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => t.parse().ok(),
    }
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    /// The stream of scenario `name` under `seed`: each scenario draws its own numbers, so
    /// replaying one seed replays every scenario, alone or together, in any order.
    pub fn for_scenario(seed: u64, name: &str) -> Rng {
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for b in name.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        Rng::new(seed ^ h)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n == 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        // Multiply-shift: no modulo bias worth caring about at these sizes.
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A duration uniform in `[lo, hi]` at millisecond resolution.
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi.saturating_sub(lo) + 1))
    }

    /// One of `items`; `None` when empty.
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> Option<T> {
        let n = items.len() as u64;
        (n > 0).then(|| items[self.below(n) as usize])
    }

    /// Fisher–Yates.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}
