//! Exit codes and error messages. Scripts rely on the codes, so they are a
//! contract: keep them in step with `args.rs` (after_help) and docs/cli.md.

use std::io;
use std::path::Path;

use bascule_api::{pb, ClientError};

pub const SUCCESS: u8 = 0;
/// The operation was attempted and failed, or anything not covered below.
pub const FAILED: u8 = 1;
/// Usage errors: mostly produced by clap itself.
pub const USAGE: u8 = 2;
/// No answer: no socket, connection refused or closed, reply timed out.
pub const UNREACHABLE: u8 = 3;
pub const NOT_FOUND: u8 = 4;
pub const PERMISSION_DENIED: u8 = 5;
/// The server refused the upgrade before changing anything.
pub const REFUSED: u8 = 6;
/// The upgrade stopped in a phase.
pub const ABORTED: u8 = 7;
/// `--wait`: the new slot failed and the machine came back on the old one.
pub const ROLLED_BACK: u8 = 8;
/// `--wait`: the machine did not come back, or not settle, within the bound.
pub const NOT_CONFIRMED: u8 = 9;

/// Why a command did not succeed: the exit code and what to tell the user.
/// `message` is `None` when the process should end quietly (stdout closed).
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: Option<String>,
}

impl Failure {
    pub fn failed(message: impl Into<String>) -> Self {
        Failure::with(FAILED, message)
    }

    pub fn with(code: u8, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: Some(message.into()),
        }
    }

    /// A client error while doing `what` (e.g. `service "web"`) on `socket`.
    pub fn client(what: &str, socket: &Path, err: &ClientError) -> Self {
        Failure {
            code: code_for(err),
            message: Some(describe(what, socket, err)),
        }
    }

    /// A failed write to stdout. A closed pipe (`bascule logs x | head -1`)
    /// means the reader has what it wanted: end quietly with success.
    pub fn output(err: io::Error) -> Self {
        if err.kind() == io::ErrorKind::BrokenPipe {
            Failure {
                code: SUCCESS,
                message: None,
            }
        } else {
            Failure::failed(format!("cannot write to stdout: {err}"))
        }
    }
}

/// The exit code for a client error.
pub fn code_for(err: &ClientError) -> u8 {
    match err {
        ClientError::Server(_) => match err.server_code() {
            Some(pb::ErrorCode::NotFound) => NOT_FOUND,
            Some(pb::ErrorCode::PermissionDenied) => PERMISSION_DENIED,
            _ => FAILED,
        },
        // A socket the user may not open is a permission problem, not an
        // absent server: retrying will not help, so do not report it as 3.
        ClientError::Connect { source, .. } if source.kind() == io::ErrorKind::PermissionDenied => {
            PERMISSION_DENIED
        }
        ClientError::Connect { .. }
        | ClientError::Timeout(_)
        | ClientError::Closed
        | ClientError::Io(_) => UNREACHABLE,
        // The server answered, but with something this client cannot use.
        ClientError::Frame(_) | ClientError::Unexpected { .. } => FAILED,
    }
}

/// The message printed after `bascule: `. It names what was being done and,
/// for transport errors, the socket, so the user knows where to look.
pub fn describe(what: &str, socket: &Path, err: &ClientError) -> String {
    match err {
        ClientError::Server(e) => {
            let code = pb::ErrorCode::try_from(e.code).unwrap_or(pb::ErrorCode::Unspecified);
            let phrase = code_phrase(code);
            if e.message.is_empty() {
                format!("{what}: {phrase}")
            } else {
                format!("{what}: {phrase}: {}", e.message)
            }
        }
        // Already names the path.
        ClientError::Connect { .. } => format!("{what}: {err}"),
        _ => format!("{what}: {err} (socket {})", socket.display()),
    }
}

pub fn code_phrase(code: pb::ErrorCode) -> &'static str {
    match code {
        pb::ErrorCode::Unspecified => "error",
        pb::ErrorCode::NotFound => "not found",
        pb::ErrorCode::InvalidRequest => "invalid request",
        pb::ErrorCode::PermissionDenied => "permission denied",
        pb::ErrorCode::Failed => "failed",
        pb::ErrorCode::FrameTooLarge => "request too large",
        pb::ErrorCode::Malformed => "malformed request",
        pb::ErrorCode::Unavailable => "unavailable",
        pb::ErrorCode::Timeout => "timed out",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn server(code: pb::ErrorCode, msg: &str) -> ClientError {
        ClientError::Server(pb::Error::new(code, msg))
    }

    #[test]
    fn server_codes_map_to_exit_codes() {
        use pb::ErrorCode::*;
        let cases = [
            (NotFound, NOT_FOUND),
            (PermissionDenied, PERMISSION_DENIED),
            (Failed, FAILED),
            (Timeout, FAILED),
            (Unavailable, FAILED),
            (InvalidRequest, FAILED),
            (Malformed, FAILED),
            (FrameTooLarge, FAILED),
            (Unspecified, FAILED),
        ];
        for (code, exit) in cases {
            assert_eq!(code_for(&server(code, "x")), exit, "{code:?}");
        }
        // A code from a newer server is still an error.
        let unknown = ClientError::Server(pb::Error {
            code: 99,
            message: "new".into(),
        });
        assert_eq!(code_for(&unknown), FAILED);
    }

    #[test]
    fn transport_errors_are_unreachable() {
        let connect = ClientError::Connect {
            path: "/nope".into(),
            source: io::Error::from(io::ErrorKind::NotFound),
        };
        assert_eq!(code_for(&connect), UNREACHABLE);
        assert_eq!(
            code_for(&ClientError::Timeout(Duration::from_secs(1))),
            UNREACHABLE
        );
        assert_eq!(code_for(&ClientError::Closed), UNREACHABLE);
        let reset = ClientError::Io(io::Error::from(io::ErrorKind::ConnectionReset));
        assert_eq!(code_for(&reset), UNREACHABLE);
        assert_eq!(code_for(&ClientError::Unexpected { expected: 1 }), FAILED);
    }

    #[test]
    fn socket_permission_is_permission_denied() {
        let err = ClientError::Connect {
            path: "/run/bascule/api.sock".into(),
            source: io::Error::from(io::ErrorKind::PermissionDenied),
        };
        assert_eq!(code_for(&err), PERMISSION_DENIED);
    }

    #[test]
    fn messages_name_the_object_and_socket() {
        let sock = Path::new("/tmp/x.sock");
        let msg = describe(
            "service \"web\"",
            sock,
            &server(pb::ErrorCode::NotFound, "no service named web"),
        );
        assert_eq!(msg, "service \"web\": not found: no service named web");
        let msg = describe("version", sock, &ClientError::Closed);
        assert!(msg.starts_with("version: "), "{msg}");
        assert!(msg.contains("/tmp/x.sock"), "{msg}");
        let msg = describe("reboot", sock, &server(pb::ErrorCode::Unavailable, ""));
        assert_eq!(msg, "reboot: unavailable");
    }

    #[test]
    fn broken_pipe_is_a_quiet_success() {
        let f = Failure::output(io::Error::from(io::ErrorKind::BrokenPipe));
        assert_eq!(f.code, SUCCESS);
        assert!(f.message.is_none());
        let f = Failure::output(io::Error::from(io::ErrorKind::Other));
        assert_eq!(f.code, FAILED);
        assert!(f.message.is_some());
    }
}
