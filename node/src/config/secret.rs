//! Bearer-token files (`cluster.token_file`, `admin.token_file`): read and judged once, at
//! config load, so `check-config` and `run` refuse the same files before anything starts
//! (docs/design.md#config).

use super::ConfigError;
use std::os::unix::fs::MetadataExt;

/// The shortest token accepted, in bytes (after surrounding whitespace is trimmed): 16 bytes
/// is 128 bits when random, the size `deploy/build-image.sh` and a cluster of one use.
pub const MIN_TOKEN_BYTES: usize = 16;

/// Reads a token file: it must be readable by its owner only (like ssh's private keys: a
/// token others can read is a token others can use) and hold at least
/// [`MIN_TOKEN_BYTES`]. Errors name the key and the file; the token itself is never shown.
pub fn read_token(key: &str, path: &str) -> Result<String, ConfigError> {
    let bad = |reason: String| ConfigError::invalid(key, format!("{path}: {reason}"));
    let meta = std::fs::metadata(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    if !meta.is_file() {
        return Err(bad("is not a regular file".into()));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(bad(format!(
            "is readable or writable by group or others (mode {mode:o}): `chmod 600 {path}`"
        )));
    }
    // A token is a line; a file this large is not one (and is not read whole).
    if meta.len() > 4096 {
        return Err(bad(format!(
            "is {} bytes, more than a token (4096 at most)",
            meta.len()
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    let token = text.trim();
    if token.len() < MIN_TOKEN_BYTES {
        return Err(bad(format!(
            "the token is {} bytes, shorter than {MIN_TOKEN_BYTES}",
            token.len()
        )));
    }
    Ok(token.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn file(dir: &tempfile::TempDir, text: &str, mode: u32) -> String {
        let p = dir.path().join(format!("t{mode:o}-{}", text.len()));
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p.display().to_string()
    }

    #[test]
    fn a_token_file_must_be_private_and_long_enough() {
        let dir = tempfile::tempdir().unwrap();
        let good = file(&dir, "0123456789abcdef\n", 0o600);
        assert_eq!(
            read_token("admin.token_file", &good).unwrap(),
            "0123456789abcdef"
        );
        assert!(read_token("k", &file(&dir, "0123456789abcdef", 0o400)).is_ok());
        for (text, mode, why) in [
            ("0123456789abcdef", 0o640, "mode 640"),
            ("0123456789abcdef", 0o604, "mode 604"),
            ("0123456789abcdef", 0o620, "mode 620"),
            ("0123456789abcde\n", 0o600, "15 bytes"),
            ("   \n", 0o600, "0 bytes"),
        ] {
            let e = read_token("cluster.token_file", &file(&dir, text, mode))
                .expect_err(why)
                .to_string();
            assert!(
                e.contains("cluster.token_file") && e.contains(why),
                "{why}: {e}"
            );
            assert!(!e.contains("0123456789"), "the token leaked: {e}");
        }
        let e = read_token("admin.token_file", "/nonexistent/token").unwrap_err();
        assert!(e.to_string().contains("/nonexistent/token"));
    }
}
