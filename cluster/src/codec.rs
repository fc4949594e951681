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
