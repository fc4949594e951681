//! The one binary encoding of the cluster crate: bincode 2 over serde, standard config. Used
//! for log entries and snapshots on disk and for openraft messages on the wire, so a change
//! here is a change of both formats.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Encodes `value`; fails only for types serde cannot express in bincode.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, bincode::error::EncodeError> {
    bincode::serde::encode_to_vec(value, bincode::config::standard())
}

/// The most bytes one decode may claim for its values (bincode counts each string's length
/// and each primitive's size before it allocates). Without a limit a length prefix is
/// trusted: 9 bytes claiming a 2^60-byte string from a peer made the node abort on the
/// allocation. 1 GiB is far above any real value (a snapshot stays well under
/// [`crate::MAX_MESSAGE`]) and far below what would exhaust memory.
const DECODE_LIMIT: usize = 1 << 30;

/// Decodes a whole buffer; trailing bytes are an error, since they mean a format mismatch.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, bincode::error::DecodeError> {
    let config = bincode::config::standard().with_limit::<DECODE_LIMIT>();
    let (value, used) = bincode::serde::decode_from_slice(bytes, config)?;
    if used != bytes.len() {
        return Err(bincode::error::DecodeError::OtherString(format!(
            "{} trailing bytes after the value",
            bytes.len() - used
        )));
    }
    Ok(value)
}

/// The first bytes of every record the store holds (log entries, vote, committed index,
/// last purged id, snapshot): a version tag, then an xxh3-64 of the payload. redb keeps no
/// checksum of values, so a flipped bit in a stored farm record would otherwise decode into
/// a different but valid farm (docs/design.md#durability).
/// `dsr2`: farms and backends hold `IpAddr` (IPv6); `dsr1` records held `Ipv4Addr` and
/// decode into nothing valid, so they are refused by name.
const SEAL_TAG: [u8; 4] = *b"dsr2";
const OLD_TAGS: [[u8; 4]; 1] = [*b"dsr1"];
const SEAL_LEN: usize = SEAL_TAG.len() + 8;

/// Encodes `value` for the store: tag, checksum, payload.
pub fn seal<T: Serialize>(value: &T) -> Result<Vec<u8>, bincode::error::EncodeError> {
    let payload = encode(value)?;
    let mut out = Vec::with_capacity(SEAL_LEN + payload.len());
    out.extend_from_slice(&SEAL_TAG);
    out.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Decodes a stored record after checking its tag and checksum; a mismatch is an error
/// saying the record is corrupt, never a value.
pub fn unseal<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, bincode::error::DecodeError> {
    let corrupt =
        |why: &str| bincode::error::DecodeError::OtherString(format!("corrupt record: {why}"));
    if bytes.len() >= SEAL_LEN && OLD_TAGS.iter().any(|t| bytes[..t.len()] == *t) {
        return Err(corrupt(
            "written by a dsrlb before IPv6 support (record format dsr1, this one reads \
             dsr2): start this node on an empty data directory and let it join, or \
             bootstrap from the config",
        ));
    }
    if bytes.len() < SEAL_LEN || bytes[..SEAL_TAG.len()] != SEAL_TAG {
        return Err(corrupt(
            "no checksum header (damaged, or written by a dsrlb without record checksums)",
        ));
    }
    let mut sum = [0u8; 8];
    sum.copy_from_slice(&bytes[SEAL_TAG.len()..SEAL_LEN]);
    let payload = &bytes[SEAL_LEN..];
    if u64::from_le_bytes(sum) != xxhash_rust::xxh3::xxh3_64(payload) {
        return Err(corrupt("checksum mismatch"));
    }
    decode(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `peer_message` fuzz target: a length prefix is a claim, not a fact.
    #[test]
    fn a_huge_length_prefix_is_an_error_not_an_allocation() {
        // Varint tag 253: a u64 follows, here 2^60 (and 2^31, above the limit but allocatable).
        for claim in [1u64 << 60, 1 << 31] {
            let mut bytes = vec![253];
            bytes.extend_from_slice(&claim.to_le_bytes());
            assert!(decode::<String>(&bytes).is_err(), "claim {claim}");
            assert!(decode::<Vec<u8>>(&bytes).is_err(), "claim {claim}");
            assert!(decode::<(u32, String)>(&[&[7u8][..], &bytes].concat()).is_err());
        }
        assert_eq!(decode::<String>(&encode(&"web").unwrap()).unwrap(), "web");
    }

    #[test]
    fn every_single_bit_flip_of_a_sealed_record_is_refused() {
        let sealed = seal(&("farm web", 0xC612_0015u32, vec![1u8, 2, 3])).unwrap();
        let back: (String, u32, Vec<u8>) = unseal(&sealed).unwrap();
        assert_eq!(back, ("farm web".to_string(), 0xC612_0015, vec![1, 2, 3]));
        for bit in 0..sealed.len() * 8 {
            let mut bad = sealed.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(
                unseal::<(String, u32, Vec<u8>)>(&bad).is_err(),
                "bit {bit} flipped went unnoticed"
            );
        }
        assert!(
            unseal::<u32>(&encode(&7u32).unwrap()).is_err(),
            "an unsealed record"
        );
    }
}
