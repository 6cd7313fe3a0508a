//! The starter protocol: how the front asks a running starter — a long-lived fork of the shim
//! core, one per containerd and core binary — to run containerd's `start` in a forked child
//! instead of exec'ing the core for it.
//!
//! Why: a per-pod shim used to cost one exec of the core per pod, and on a VM the glibc loader's
//! start-up alone (mostly `cpuid` traps) and the first touches of a 50 MB binary are a large
//! part of a short task's CPU. A fork of a process that already ran costs a fraction of that.
//! The child behaves as the exec'd core would: it gets the front's stdin, stdout and stderr (as
//! fds over the socket), its command line, environment and working directory, and joins its
//! cgroups, rlimits and OOM score; the starter declines — and the front execs the core as
//! before — whenever it cannot give the child the front's namespaces or identity.
//!
//! Wire format, front → starter: a 4-byte little-endian length carrying the fds 0, 1 and 2 as
//! `SCM_RIGHTS`, then that many bytes of [`StartRequest::encode`]. Starter → front: one byte,
//! [`ACCEPTED`] once a child has been forked for the request or [`DECLINED`]; after
//! [`ACCEPTED`], the child's `start` exit code as a 4-byte little-endian `i32`. Until a request
//! is accepted nothing has been done for it, so the front execs the core for a declined one,
//! and for a connection that ends first (no starter, or one that retired with the front in its
//! backlog). An accepted request whose child dies before answering fails the `start`: the child
//! may already have answered containerd.

use std::ffi::OsString;
use std::io::{IoSlice, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Environment variable that chooses how `start` runs: `exec` execs the core every time (no
/// starter is asked or started); anything else, or unset, uses a starter.
pub const START_ENV: &str = "WASMCELL_SHIM_START";
/// Directory of the starters' sockets: containerd-shim's socket directory, root-only.
pub const STARTER_SOCKET_DIR: &str = "/run/containerd/s";
/// The reply that means "a child is running your `start`".
pub const ACCEPTED: u8 = b'a';
/// The reply that means "exec the core yourself".
pub const DECLINED: u8 = b'd';
/// Largest request a starter reads: a command line and an environment, with room to spare.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;

/// Whether `start` may use a starter, from the value of [`START_ENV`].
pub fn starter_wanted(start_env: Option<&std::ffi::OsStr>) -> bool {
    start_env.is_none_or(|v| v != "exec")
}

/// The socket of the starter for containerd at `containerd_address` and the core binary at
/// `core`: the core's identity (device, inode, size, modification time) is part of the name,
/// so an upgraded core gets a starter of its own and no pod is forked from old code. `None` if
/// the core cannot be read.
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

/// What the front hands a starter: the exec'd core's command line, environment (`KEY=VALUE`)
/// and working directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartRequest {
    pub args: Vec<OsString>,
    pub env: Vec<OsString>,
    pub cwd: PathBuf,
}

/// Why a request could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("spawn request is truncated: {field} needs {needed} bytes, {left} are left")]
    Truncated {
        field: &'static str,
        needed: usize,
        left: usize,
    },
    #[error("spawn request has {count} {field}, more than the {limit} allowed")]
    TooMany {
        field: &'static str,
        count: usize,
        limit: usize,
    },
    #[error("spawn request has {extra} bytes after its last field")]
    TrailingBytes { extra: usize },
    #[error("spawn request has no command line")]
    NoCommandLine,
}

/// Most strings in one list of a request.
const MAX_STRINGS: usize = 1 << 14;

impl StartRequest {
    /// This process's own: what an exec of the core would inherit.
    pub fn of_this_process() -> Option<Self> {
        Some(Self {
            args: std::env::args_os().collect(),
            env: std::env::vars_os()
                .map(|(k, v)| {
                    let mut pair = k;
                    pair.push("=");
                    pair.push(v);
                    pair
                })
                .collect(),
            cwd: std::env::current_dir().ok()?,
        })
    }

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

/// How a request to a starter ended.
#[derive(Debug, PartialEq, Eq)]
pub enum StartOutcome {
    /// The child ran `start`, which exited with this code.
    Exited(i32),
    /// Nothing was done: exec the core.
    NotTaken,
    /// The child died before it answered; containerd may have its answer already.
    ChildLost,
}

/// Asks the starter at `socket` to run `request` with this process's stdin, stdout and stderr.
pub fn request_start(socket: &Path, request: &StartRequest) -> StartOutcome {
    match send_request(socket, request) {
        Some(stream) => await_outcome(stream),
        None => StartOutcome::NotTaken,
    }
}

/// Reads the starter's reply from `stream`.
fn await_outcome(mut stream: UnixStream) -> StartOutcome {
    let mut verdict = [0u8; 1];
    if stream.read_exact(&mut verdict).is_err() || verdict[0] != ACCEPTED {
        return StartOutcome::NotTaken;
    }
    let mut code = [0u8; 4];
    match stream.read_exact(&mut code) {
        Ok(()) => StartOutcome::Exited(i32::from_le_bytes(code)),
        Err(_) => StartOutcome::ChildLost,
    }
}

/// Connects and sends the request with this process's standard streams; the connection, or
/// `None` if that failed.
fn send_request(socket: &Path, request: &StartRequest) -> Option<UnixStream> {
    let mut stream = UnixStream::connect(socket).ok()?;
    let body = request.encode();
    let length = (body.len() as u32).to_le_bytes();
    // SAFETY: fds 0, 1 and 2 are this process's standard streams, open for its whole life
    // (containerd gives a shim all three); they are only borrowed for the send.
    #[allow(unsafe_code)]
    let streams = unsafe {
        [
            BorrowedFd::borrow_raw(0),
            BorrowedFd::borrow_raw(1),
            BorrowedFd::borrow_raw(2),
        ]
    };
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
            args: vec!["shim".into(), "-id".into(), "c1".into(), "start".into()],
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

    fn replying(bytes: &'static [u8]) -> StartOutcome {
        let (ours, theirs) = UnixStream::pair().unwrap_or_else(|e| panic!("{e}"));
        let writer = std::thread::spawn(move || {
            let mut theirs = theirs;
            let _ = theirs.write_all(bytes);
        });
        let outcome = await_outcome(ours);
        let _ = writer.join();
        outcome
    }

    #[test]
    fn only_an_accepted_request_that_loses_its_child_fails() {
        assert_eq!(replying(b""), StartOutcome::NotTaken);
        assert_eq!(replying(b"d"), StartOutcome::NotTaken);
        assert_eq!(replying(b"x"), StartOutcome::NotTaken);
        assert_eq!(replying(b"a"), StartOutcome::ChildLost);
        assert_eq!(replying(b"a\x01\0"), StartOutcome::ChildLost);
        assert_eq!(replying(b"a\x07\0\0\0"), StartOutcome::Exited(7));
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
