//! Why a `dsrctl` command failed, as one line that says what to check, and its exit code.

use std::path::PathBuf;
use tonic::Code;

/// Exit status of a failure that fits no narrower code.
pub const EXIT_FAILED: u8 = 1;
/// Exit status when no endpoint could be reached (connect, TLS, or the connection lost).
pub const EXIT_UNREACHABLE: u8 = 2;
/// Exit status when the input was refused: a usage error, or a node's refusal of the request.
pub const EXIT_REJECTED: u8 = 3;

/// A failed command. `Display` is the whole message (one line, no trailing period).
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// No endpoint accepted a connection (or every one answered UNAVAILABLE).
    #[error(
        "cannot reach {}: {}; check --endpoint and that dsrlb runs with [admin] listen",
        .endpoints.join(", "), .cause
    )]
    Unreachable {
        endpoints: Vec<String>,
        /// The last endpoint's failure.
        cause: String,
    },
    /// The TLS handshake with every endpoint that was reached failed (the last one shown).
    #[error(
        "TLS with {endpoint} failed: {cause}; check --ca-file (the CA that signed the node's \
         admin certificate), the endpoint scheme (https:// for a node with [admin] tls_cert, \
         http:// otherwise), that the node's certificate has an IP SAN for the address \
         dialled, and --cert-file/--key-file if the node requires client certificates"
    )]
    Tls { endpoint: String, cause: String },
    /// A plaintext connection failed mid-call without a status from the server.
    #[error(
        "the connection to {endpoint} failed during the call ({cause}); if the node \
         serves TLS ([admin] tls_cert), use https:// with --ca-file"
    )]
    Closed { endpoint: String, cause: String },
    /// A TLS file given to dsrctl could not be used.
    #[error("cannot use {option} {}: {reason}", .path.display())]
    TlsFile {
        option: &'static str,
        path: PathBuf,
        reason: String,
    },
    /// The server refused the admin token.
    #[error(
        "refused: the admin token was rejected by {endpoint}; check --token-file / \
         DSRCTL_TOKEN_FILE and the node's [admin] token_file"
    )]
    Refused { endpoint: String },
    /// A reachable server answered with an error.
    #[error("{}", rpc_message(.endpoint, *.code, .message))]
    Rpc {
        endpoint: String,
        code: Code,
        message: String,
    },
    /// No answer within `--timeout`; a write may or may not have been applied.
    #[error("timed out: {endpoint} did not answer within {after}; a longer --timeout may help")]
    TimedOut { endpoint: String, after: String },
    /// The token file could not be used.
    #[error("cannot use the token file {}: {reason}; check --token-file / DSRCTL_TOKEN_FILE", .path.display())]
    TokenFile { path: PathBuf, reason: String },
    /// The `apply` file could not be read or is not TOML.
    #[error("invalid: {}: {reason}", .path.display())]
    ApplyFile { path: PathBuf, reason: String },
    /// The server answered without a field it always sends.
    #[error("bad reply from {endpoint}: {what} missing")]
    BadReply {
        endpoint: String,
        what: &'static str,
    },
    /// Writing the output failed (other than a closed pipe).
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
    /// The async runtime could not start.
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
}

impl CtlError {
    /// What a script can branch on: [`EXIT_UNREACHABLE`] when no node could be talked to
    /// (nothing was asked, so a retry elsewhere or later is safe), [`EXIT_REJECTED`] when a
    /// node refused what was asked (invalid, unknown, already there, not possible now) or
    /// the `apply` file is not valid, [`EXIT_FAILED`] for the rest — a refused token, a
    /// timeout (a write may have been applied), a server fault. Usage errors, found before
    /// any call, are [`EXIT_REJECTED`] too (`cli::usage_exit_code`).
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Unreachable { .. } | CtlError::Tls { .. } | CtlError::Closed { .. } => {
                EXIT_UNREACHABLE
            }
            CtlError::ApplyFile { .. } => EXIT_REJECTED,
            CtlError::Rpc {
                code:
                    Code::InvalidArgument
                    | Code::NotFound
                    | Code::AlreadyExists
                    | Code::FailedPrecondition
                    | Code::OutOfRange,
                ..
            } => EXIT_REJECTED,
            _ => EXIT_FAILED,
        }
    }
}

fn rpc_message(endpoint: &str, code: Code, message: &str) -> String {
    // Server messages may span lines (a TOML parse error does); the contract is one line.
    let msg = message.split_whitespace().collect::<Vec<_>>().join(" ");
    match code {
        Code::InvalidArgument => format!("invalid: {msg}"),
        Code::NotFound => format!("not found: {msg}"),
        Code::AlreadyExists => format!("already exists: {msg}"),
        Code::FailedPrecondition => format!("not possible now: {msg}"),
        Code::PermissionDenied => format!("denied by {endpoint}: {msg}"),
        Code::DeadlineExceeded => {
            format!("timed out waiting for {endpoint}: {msg}; a longer --timeout may help")
        }
        Code::Unimplemented => {
            format!("not supported by the server at {endpoint} (an older dsrlb?): {msg}")
        }
        Code::Unavailable => format!("unavailable at {endpoint}: {msg}"),
        other => format!("error from {endpoint} ({other:?}): {msg}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_line_and_say_what_to_check() {
        let cases = [
            (
                CtlError::Unreachable {
                    endpoints: vec!["http://a:7101".into(), "http://b:7101".into()],
                    cause: "connection refused".into(),
                },
                "cannot reach http://a:7101, http://b:7101: connection refused; check \
                 --endpoint and that dsrlb runs with [admin] listen",
            ),
            (
                CtlError::Refused {
                    endpoint: "http://a:7101".into(),
                },
                "refused: the admin token was rejected by http://a:7101; check --token-file / \
                 DSRCTL_TOKEN_FILE and the node's [admin] token_file",
            ),
            (
                CtlError::Rpc {
                    endpoint: "http://a:7101".into(),
                    code: Code::InvalidArgument,
                    message: "farm.vip: not a unicast\n  address".into(),
                },
                "invalid: farm.vip: not a unicast address",
            ),
            (
                CtlError::Rpc {
                    endpoint: "http://a:7101".into(),
                    code: Code::NotFound,
                    message: "farm `web`".into(),
                },
                "not found: farm `web`",
            ),
            (
                CtlError::Rpc {
                    endpoint: "http://a:7101".into(),
                    code: Code::FailedPrecondition,
                    message: "farm \"echo\" has persistence = \"none\"".into(),
                },
                "not possible now: farm \"echo\" has persistence = \"none\"",
            ),
        ];
        for (err, want) in cases {
            let text = err.to_string();
            assert_eq!(text, want);
            assert!(!text.contains('\n'));
            assert!(!text.is_empty());
        }
    }

    #[test]
    fn exit_codes_tell_unreachable_rejected_and_other_apart() {
        let rpc = |code| CtlError::Rpc {
            endpoint: "http://a:7101".into(),
            code,
            message: "m".into(),
        };
        let cases = [
            (
                CtlError::Unreachable {
                    endpoints: vec!["http://a:7101".into()],
                    cause: "refused".into(),
                },
                EXIT_UNREACHABLE,
            ),
            (
                CtlError::Tls {
                    endpoint: "https://a:7101".into(),
                    cause: "unknown CA".into(),
                },
                EXIT_UNREACHABLE,
            ),
            (rpc(Code::InvalidArgument), EXIT_REJECTED),
            (rpc(Code::NotFound), EXIT_REJECTED),
            (rpc(Code::AlreadyExists), EXIT_REJECTED),
            (rpc(Code::FailedPrecondition), EXIT_REJECTED),
            (
                CtlError::ApplyFile {
                    path: "f.toml".into(),
                    reason: "line 3".into(),
                },
                EXIT_REJECTED,
            ),
            (rpc(Code::Internal), EXIT_FAILED),
            (rpc(Code::Unavailable), EXIT_FAILED),
            (
                CtlError::Refused {
                    endpoint: "http://a:7101".into(),
                },
                EXIT_FAILED,
            ),
            (
                CtlError::TimedOut {
                    endpoint: "http://a:7101".into(),
                    after: "30s".into(),
                },
                EXIT_FAILED,
            ),
        ];
        for (err, want) in cases {
            assert_eq!(err.exit_code(), want, "{err}");
        }
    }
}
