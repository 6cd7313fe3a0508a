//! The starter protocol: how the front asks a running *starter* — a long-lived,
//! single-threaded fork of the shim core, one per containerd and core binary — to fork a new
//! group's server instead of exec'ing the core for it.
//!
//! Why: a per-pod shim costs one server per pod, and an exec'd server pays the glibc loader's
//! start-up (on a VM mostly `cpuid` traps: 0.7 ms for an empty C program here) and the first
//! touches of a 50 MB binary. A fork of a process that already ran pays neither. The forked
//! server gets what the exec'd one would: the front's command line for it, its environment
//! (with the grouping), the bundle as working directory, the three standard streams sent with
//! the request, and the front's rlimits, OOM score and umask; the starter declines — and the
//! front spawns the core as before — whenever it cannot give the server the front's cgroups,
//! namespaces or identity. A lone container's server that has served may take the request
//! instead of a fork (a *spare*, waiting at the starter; the core's `spare` module): it takes
//! the same things from the front and answers it the same way.
//!
//! Wire format, front → starter: a 4-byte little-endian length carrying the new process's
//! stdin, stdout and stderr as `SCM_RIGHTS`, then that many bytes of
//! [`StartRequest::encode`]. Starter → front: one byte, [`ACCEPTED`] once a server (forked, or
//! a spare) has taken the request, or [`DECLINED`]. Until a request is accepted nothing has been done
//! for it, so the front spawns the core itself for a declined one, for a connection that ends
//! first (no starter, or one that retired with the front in its backlog) and for a starter
//! that does not answer within [`REPLY_TIMEOUT`].

use std::ffi::OsString;
use std::io::{IoSlice, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

/// Environment variable that chooses how a new group's server starts: `exec` spawns the core
/// every time (no starter is asked or started); anything else, or unset, uses a starter.
pub const START_ENV: &str = "WASMCELL_SHIM_START";
/// Directory of the starters' sockets: containerd-shim's socket directory, root-only.
pub const STARTER_SOCKET_DIR: &str = "/run/containerd/s";
/// The command line a starter shows: this, then its containerd's address.
pub const STARTER_TITLE: &str = "wasmcell-shim-starter";
/// The reply that means "a server has taken your request" (forked for it, or a spare).
pub const ACCEPTED: u8 = b'a';
/// The reply that means "start the server yourself".
pub const DECLINED: u8 = b'd';
/// Largest request a starter reads: a command line and an environment, with room to spare.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;
/// How long the front waits for a starter's verdict before it starts the server itself. A
/// starter answers in well under a millisecond; one that does not is stopped or overloaded.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether a starter may be used, from the value of [`START_ENV`].
pub fn starter_wanted(start_env: Option<&std::ffi::OsStr>) -> bool {
    start_env.is_none_or(|v| v != "exec")
}

/// The socket of the starter for containerd at `containerd_address` and the core binary at
/// `core`: the core's identity (device, inode, size, modification time) is part of the name,
/// so an upgraded core gets a starter of its own and no server is forked from old code.
/// `None` if the core cannot be read.
pub fn starter_socket(containerd_address: &str, core: &Path) -> Option<PathBuf> {
    let meta = std::fs::metadata(core).ok()?;
    let mut hash = Sha256::new();
    hash.update(containerd_address.as_bytes());
    hash.update([0]);
    for part in [
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime() as u64,
        meta.mtime_nsec() as u64,
    ] {
        hash.update(part.to_le_bytes());
    }
    let digest = hash.finalize();
    let name: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    Some(Path::new(STARTER_SOCKET_DIR).join(format!("wasmcell-starter-{name}")))
}

/// What the front hands a starter: the server's command line, environment (`KEY=VALUE`) and
/// working directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartRequest {
    pub args: Vec<OsString>,
    pub env: Vec<OsString>,
    pub cwd: PathBuf,
}

/// Why a request could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("start request is truncated: {field} needs {needed} bytes, {left} are left")]
    Truncated {
        field: &'static str,
        needed: usize,
        left: usize,
    },
    #[error("start request has {count} {field}, more than the {limit} allowed")]
    TooMany {
        field: &'static str,
        count: usize,
        limit: usize,
    },
    #[error("start request has {extra} bytes after its last field")]
    TrailingBytes { extra: usize },
    #[error("start request has no command line")]
    NoCommandLine,
}

/// Most strings in one list of a request.
const MAX_STRINGS: usize = 1 << 14;

impl StartRequest {
    /// Lists of length-prefixed strings: args, env, then the working directory.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for list in [&self.args, &self.env] {
            out.extend_from_slice(&(list.len() as u32).to_le_bytes());
            for s in list {
                put_bytes(&mut out, s.as_bytes());
            }
        }
        put_bytes(&mut out, self.cwd.as_os_str().as_bytes());
        out
    }

    /// The inverse of [`encode`](Self::encode); every length is checked against what is left.
    pub fn decode(bytes: &[u8]) -> Result<Self, RequestError> {
        let mut rest = bytes;
        let args = take_list(&mut rest, "arguments")?;
        let env = take_list(&mut rest, "environment variables")?;
        let cwd = PathBuf::from(OsString::from_vec(
            take_bytes(&mut rest, "working directory")?.to_vec(),
        ));
        if !rest.is_empty() {
            return Err(RequestError::TrailingBytes { extra: rest.len() });
        }
        if args.is_empty() {
            return Err(RequestError::NoCommandLine);
        }
        Ok(Self { args, env, cwd })
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn take_u32(rest: &mut &[u8], field: &'static str) -> Result<usize, RequestError> {
    let Some((head, tail)) = rest.split_first_chunk::<4>() else {
        return Err(RequestError::Truncated {
            field,
            needed: 4,
            left: rest.len(),
        });
    };
    *rest = tail;
    Ok(u32::from_le_bytes(*head) as usize)
}

fn take_bytes<'a>(rest: &mut &'a [u8], field: &'static str) -> Result<&'a [u8], RequestError> {
    let len = take_u32(rest, field)?;
    if len > rest.len() {
        return Err(RequestError::Truncated {
            field,
            needed: len,
            left: rest.len(),
        });
    }
    let (bytes, tail) = rest.split_at(len);
    *rest = tail;
    Ok(bytes)
}

fn take_list(rest: &mut &[u8], field: &'static str) -> Result<Vec<OsString>, RequestError> {
    let count = take_u32(rest, field)?;
    if count > MAX_STRINGS {
        return Err(RequestError::TooMany {
            field,
            count,
            limit: MAX_STRINGS,
        });
    }
    (0..count)
        .map(|_| Ok(OsString::from_vec(take_bytes(rest, field)?.to_vec())))
        .collect()
}

/// Asks the starter at `socket` to fork a server for `request` with `streams` as its stdin,
/// stdout and stderr: `true` once it has, `false` if nothing was done (start it yourself).
pub fn request_start(socket: &Path, request: &StartRequest, streams: [BorrowedFd<'_>; 3]) -> bool {
    let Some(stream) = send_request(socket, request, streams) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(REPLY_TIMEOUT));
    accepted(stream)
}

/// Whether the starter's reply on `stream` is [`ACCEPTED`].
fn accepted(mut stream: UnixStream) -> bool {
    let mut verdict = [0u8; 1];
    stream.read_exact(&mut verdict).is_ok() && verdict[0] == ACCEPTED
}

/// Connects and sends the request with `streams`; the connection, or `None` if that failed.
fn send_request(
    socket: &Path,
    request: &StartRequest,
    streams: [BorrowedFd<'_>; 3],
) -> Option<UnixStream> {
    let mut stream = UnixStream::connect(socket).ok()?;
    let body = request.encode();
    let length = (body.len() as u32).to_le_bytes();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
    let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
    if !control.push(rustix::net::SendAncillaryMessage::ScmRights(&streams)) {
        return None;
    }
    let sent = rustix::net::sendmsg(
        &stream,
        &[IoSlice::new(&length)],
        &mut control,
        rustix::net::SendFlags::NOSIGNAL,
    )
    .ok()?;
    if sent != length.len() {
        return None;
    }
    stream.write_all(&body).ok()?;
    Some(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> StartRequest {
        StartRequest {
            args: vec!["shim".into(), "-id".into(), "c1".into(), "-socket".into()],
            env: vec!["TTRPC_ADDRESS=/run/c.sock.ttrpc".into()],
            cwd: "/run/bundle".into(),
        }
    }

    #[test]
    fn a_request_survives_its_encoding() {
        assert_eq!(StartRequest::decode(&request().encode()), Ok(request()));
    }

    #[test]
    fn a_truncated_request_is_named() {
        let bytes = request().encode();
        for cut in 0..bytes.len() {
            assert!(
                matches!(
                    StartRequest::decode(&bytes[..cut]),
                    Err(RequestError::Truncated { .. })
                ),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn trailing_bytes_and_huge_counts_are_refused() {
        let mut bytes = request().encode();
        bytes.push(0);
        assert_eq!(
            StartRequest::decode(&bytes),
            Err(RequestError::TrailingBytes { extra: 1 })
        );
        let huge = u32::MAX.to_le_bytes();
        assert!(matches!(
            StartRequest::decode(&huge),
            Err(RequestError::TooMany { count, .. }) if count == u32::MAX as usize
        ));
        let lengthy = [1, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f];
        assert!(matches!(
            StartRequest::decode(&lengthy),
            Err(RequestError::Truncated {
                needed: 0x7fff_ffff,
                left: 0,
                ..
            })
        ));
    }

    #[test]
    fn a_request_without_a_command_line_is_refused() {
        let empty = StartRequest {
            args: Vec::new(),
            ..request()
        };
        assert_eq!(
            StartRequest::decode(&empty.encode()),
            Err(RequestError::NoCommandLine)
        );
    }

    fn replying(bytes: &'static [u8]) -> bool {
        let (ours, theirs) = UnixStream::pair().unwrap_or_else(|e| panic!("{e}"));
        let writer = std::thread::spawn(move || {
            let mut theirs = theirs;
            let _ = theirs.write_all(bytes);
        });
        let accepted = accepted(ours);
        let _ = writer.join();
        accepted
    }

    #[test]
    fn only_an_accepting_reply_counts_as_started() {
        assert!(!replying(b""));
        assert!(!replying(b"d"));
        assert!(!replying(b"x"));
        assert!(replying(b"a"));
    }

    #[test]
    fn exec_turns_the_starter_off() {
        assert!(starter_wanted(None));
        assert!(starter_wanted(Some("fork".as_ref())));
        assert!(!starter_wanted(Some("exec".as_ref())));
    }

    #[test]
    fn another_core_binary_gets_another_starter() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, b"core")?;
        std::fs::write(&b, b"core")?;
        let socket = |core: &Path| starter_socket("/run/containerd/containerd.sock", core);
        assert_ne!(socket(&a), socket(&b));
        assert_eq!(socket(&a), socket(&a));
        assert_ne!(
            starter_socket("/other.sock", &a),
            socket(&a),
            "one starter per containerd"
        );
        assert_eq!(starter_socket("/x", &dir.path().join("absent")), None);
        Ok(())
    }
}
