//! The one binary encoding of the cluster crate: bincode 2 over serde, standard config. Used
//! for log entries and snapshots on disk and for openraft messages on the wire, so a change
//! here is a change of both formats.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Encodes `value`; fails only for types serde cannot express in bincode.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, bincode::error::EncodeError> {
    bincode::serde::encode_to_vec(value, bincode::config::standard())
}

/// Decodes a whole buffer; trailing bytes are an error, since they mean a format mismatch.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, bincode::error::DecodeError> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, bincode::config::standard())?;
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
const SEAL_TAG: [u8; 4] = *b"dsr1";
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
