//! The deterministic byte pattern of lab transfers: byte `i` of every stream is
//! `(i % 251) as u8`. 251 is prime, so the pattern never lines up with packet, segment or
//! page sizes and a dropped, duplicated or reordered run of bytes shows up at its offset.

/// The pattern's period.
pub const PATTERN_PERIOD: u64 = 251;

/// Bytes per pattern chunk: a whole number of periods, about 64 KiB.
pub(crate) const CHUNK: usize = 251 * 256;

/// One chunk of the pattern, starting at offset 0. Any stream offset maps into it, so
/// senders slice it instead of allocating.
pub(crate) static PATTERN: [u8; CHUNK] = build();

const fn build() -> [u8; CHUNK] {
    let mut a = [0u8; CHUNK];
    let mut i = 0;
    while i < CHUNK {
        a[i] = (i % 251) as u8;
        i += 1;
    }
    a
}

/// The byte at stream offset `offset`.
pub fn pattern_byte(offset: u64) -> u8 {
    (offset % PATTERN_PERIOD) as u8
}

/// The longest static slice of the pattern (at most `max` bytes) that starts at `offset`.
pub(crate) fn pattern_slice(offset: u64, max: usize) -> &'static [u8] {
    let start = (offset % PATTERN_PERIOD) as usize;
    let len = max.min(CHUNK - start);
    &PATTERN[start..start + len]
}

/// Checks `data`, which sits at stream offset `offset`; on a mismatch returns
/// `(offset, expected, got)` of the first bad byte.
pub(crate) fn verify(offset: u64, data: &[u8]) -> Result<(), (u64, u8, u8)> {
    let mut done = 0usize;
    while done < data.len() {
        let at = offset + done as u64;
        let want = pattern_slice(at, data.len() - done);
        let got = &data[done..done + want.len()];
        if want != got {
            let i = want.iter().zip(got).position(|(w, g)| w != g).unwrap_or(0);
            return Err((at + i as u64, want[i], got[i]));
        }
        done += want.len();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_follow_the_formula_at_any_offset() {
        for offset in [0u64, 1, 250, 251, 252, 64_255, 64_256, 1 << 40] {
            let s = pattern_slice(offset, 1000);
            assert_eq!(s.len(), 1000);
            for (i, b) in s.iter().enumerate() {
                assert_eq!(*b, pattern_byte(offset + i as u64));
            }
        }
    }

    #[test]
    fn verify_finds_the_first_bad_byte() {
        let mut data: Vec<u8> = (0..200_000u64).map(|i| pattern_byte(i + 7)).collect();
        assert_eq!(verify(7, &data), Ok(()));
        data[150_000] ^= 0xff;
        let want = pattern_byte(150_007);
        assert_eq!(verify(7, &data), Err((150_007, want, want ^ 0xff)));
        assert!(
            verify(8, &data[..10]).is_err(),
            "shifted stream must not verify"
        );
    }
}
