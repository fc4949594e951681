//! Invariant: long-lived TCP streams through the VIP survive every nemesis — no reset, no
//! gap, no corrupted byte (the client checks each against the pattern), and they still move
//! after the last nemesis. Streams whose backend was killed on purpose must break instead:
//! that they do shows the check can see a broken stream.

use std::time::Instant;

use crate::workload::streams::StreamOutcome;

/// Judges `outcomes`. `doomed(k)` says whether stream `k` was meant to break (its backend
/// was killed); `last_nemesis` is when the last nemesis struck (the streams must have moved
/// after it).
pub fn check(
    outcomes: &[StreamOutcome],
    doomed: impl Fn(usize) -> bool,
    last_nemesis: Option<Instant>,
) -> Vec<String> {
    let mut v = Vec::new();
    for (k, s) in outcomes.iter().enumerate() {
        let who = format!(
            "stream {k} to {} (backend {})",
            s.target,
            s.backend.as_deref().unwrap_or("unknown")
        );
        if doomed(k) {
            if s.error.is_none() {
                v.push(format!(
                    "{who} outlived its killed backend ({} bytes): a broken stream went unseen",
                    s.bytes
                ));
            }
            continue;
        }
        if let Some(e) = &s.error {
            v.push(format!("{who} broke after {} verified bytes: {e}", s.bytes));
            continue;
        }
        if s.bytes == 0 {
            v.push(format!("{who} never received a byte"));
            continue;
        }
        if let Some(at) = last_nemesis {
            let then = s.bytes_at(at);
            if s.bytes <= then {
                v.push(format!(
                    "{who} did not move after the last nemesis ({then} bytes then and at the end)"
                ));
            }
        }
    }
    v
}

/// How many of `outcomes` broke.
pub fn broken(outcomes: &[StreamOutcome]) -> usize {
    outcomes.iter().filter(|s| s.error.is_some()).count()
}
