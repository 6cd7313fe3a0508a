//! Spare servers: a lone container's server that has served its container waits at its
//! starter, and serves the next new group the starter is asked for instead of the starter
//! forking one.
//!
//! Why: outside any pod (`ctr run`, nerdctl, an API client) every container has a server of its
//! own, and that process's life was most of what a short container cost the shim beyond the
//! container itself: the starter's fork, the copy-on-write faults on both sides, the code the
//! new process faults in again (a fork copies no page-table entries of the binary's code), and
//! its exit. A spare has already paid for all of them.
//!
//! What a spare keeps: nothing of its container. It becomes a spare only once its task service
//! has shut down (the container deleted, the ttrpc server stopped, the async runtime dropped) and
//! only while it is single-threaded, as a freshly forked server is; it then drops its standard
//! streams (containerd's pipes) and working directory (the old bundle), frees its heap and
//! waits. A request handed to it is taken exactly as a forked server takes one (the front's
//! streams, environment, working directory, rlimits, OOM score, umask and command line), and
//! its guest launcher is forked anew. A server serves at most [`MAX_CONTAINERS`] containers
//! before it exits, so what its allocator keeps stays bounded.
//!
//! Only servers forked by this starter are taken (the peer's parent is the starter), so a spare
//! is in the starter's cgroups and namespaces, which a forked server never leaves. The starter
//! keeps at most [`MAX_SPARES`], newest first; a spare leaves after [`SPARE_WAIT`] unused, or
//! when its starter does (its connection ends). A request the starter hands to a spare that has
//! just left is lost with the spare's socket: the front sees its connection end and starts the
//! core itself, as for any starter that did not answer.
//!
//! Wire format, starter → spare, on the spare's connection to `STARTER_SOCKET.spare`: a 4-byte
//! little-endian length carrying the front's connection and the new server's stdin, stdout and
//! stderr as `SCM_RIGHTS`, then that many bytes of the front's request as it sent it.
//! `WASMCELL_SERVER_REUSE=off` in containerd's environment turns spares off.

use std::ffi::OsString;
use std::io::{IoSlice, IoSliceMut, Read};
use std::mem::MaybeUninit;
use std::os::fd::RawFd;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout};
use wasmcell_shim_front::starter::{MAX_REQUEST_BYTES, StartRequest};

/// `off` in containerd's environment: every server exits when its container is gone.
pub const REUSE_ENV: &str = "WASMCELL_SERVER_REUSE";
/// The command line a spare shows: this, then its containerd's address.
pub const SPARE_TITLE: &str = "wasmcell-shim-spare";
/// Containers one server process serves before it exits instead of waiting for another.
pub const MAX_CONTAINERS: u32 = 64;
/// Spares a starter keeps; a server that finds the starter full exits.
pub const MAX_SPARES: usize = 8;
/// How long a spare waits for a request before it exits.
pub const SPARE_WAIT: Duration = Duration::from_secs(60);

/// Containers this process has served (counted when each is taken).
static SERVED: AtomicU32 = AtomicU32::new(1);

/// The fds this process had open before its first async runtime was built.
static BEFORE_ANY_RUNTIME: OnceLock<Vec<RawFd>> = OnceLock::new();
/// The fds the async runtime left open for the process's life: tokio's signal pipe, which
/// every later runtime — a spare's next, and those of the guests its launcher forks — reads
/// its signals through. What a spare forks keeps them open.
static RUNTIME_FDS: OnceLock<Vec<RawFd>> = OnceLock::new();

/// Call before building an async runtime: on the first call, notes the fds open before any.
pub fn note_fds_before_first_runtime() {
    BEFORE_ANY_RUNTIME.get_or_init(open_fds);
}

/// The fds a process forked by a spare must keep open (see [`RUNTIME_FDS`]); none in a
/// process that never was a spare.
pub fn runtime_fds() -> &'static [RawFd] {
    RUNTIME_FDS.get().map_or(&[], Vec::as_slice)
}

/// In a guest forked below a spare, before it builds an async runtime: a signal pipe of its
/// own. tokio reads a process's signals through one socket pair, made with the process's first
/// runtime, which a fork shares: without this, the spare's runtime and the guest's read from
/// the same socket, and either may take the other's wakeups (a guest's `SIGTERM`, the server's
/// `SIGCHLD`). A new pair is put at the same fd numbers, where tokio's globals look.
pub fn renew_runtime_fds() -> std::io::Result<()> {
    let &[first, second] = runtime_fds() else {
        return Ok(());
    };
    let (one, other) = nix::sys::socket::socketpair(
        nix::sys::socket::AddressFamily::Unix,
        nix::sys::socket::SockType::Stream,
        None,
        nix::sys::socket::SockFlag::SOCK_NONBLOCK | nix::sys::socket::SockFlag::SOCK_CLOEXEC,
    )?;
    for (new, target) in [(one, first), (other, second)] {
        // SAFETY: dup3 onto an fd number this process owns (the inherited pair, which only
        // tokio's globals refer to, by number); the new socket replaces it atomically.
        #[allow(unsafe_code)]
        let rc = unsafe {
            libc::dup3(
                std::os::fd::AsRawFd::as_raw_fd(&new),
                target,
                libc::O_CLOEXEC,
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Whether `fd` is a socket.
fn is_socket(fd: RawFd) -> bool {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .is_ok_and(|target| target.to_string_lossy().starts_with("socket:["))
}

/// This process's open fds.
fn open_fds() -> Vec<RawFd> {
    std::fs::read_dir("/proc/self/fd").map_or_else(
        |_| Vec::new(),
        |entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        },
    )
}

/// A front's request handed to a spare: the connection to answer it on, the new server's
/// standard streams, and the request.
pub struct Handed {
    /// The front's connection: the spare answers `ACCEPTED` or `DECLINED` on it.
    pub connection: UnixStream,
    /// stdin, stdout and stderr for the server.
    pub streams: [OwnedFd; 3],
    /// What the front asked for.
    pub request: StartRequest,
}

/// Whether servers may wait as spares ([`REUSE_ENV`]).
pub fn reuse_wanted() -> bool {
    std::env::var_os(REUSE_ENV).is_none_or(|v| v != "off")
}

/// The spares' socket, next to the starter's.
pub fn socket_of(starter_socket: &Path) -> PathBuf {
    let mut path = starter_socket.as_os_str().to_owned();
    path.push(".spare");
    PathBuf::from(path)
}

/// In a server whose task service has shut down: waits at the starter of containerd at
/// `containerd_address` as a spare, if this server may be one (a lone container's, reuse
/// wanted, fewer than [`MAX_CONTAINERS`] served, one thread); the request it is handed, or
/// `None` when the caller should exit.
pub fn wait_for_request(containerd_address: &str) -> Option<Handed> {
    if !reuse_wanted()
        || !wasmcell_shim_front::group::serves_a_lone_container()
        || SERVED.load(Ordering::Relaxed) >= MAX_CONTAINERS
        || !single_threaded()
    {
        return None;
    }
    let socket = socket_of(&crate::starter::socket_if_wanted(containerd_address)?);
    let connection = UnixStream::connect(socket).ok()?;
    leave_the_old_container(containerd_address).ok()?;
    let before = BEFORE_ANY_RUNTIME.get()?;
    let connection_fd = std::os::fd::AsRawFd::as_raw_fd(&connection);
    let kept = RUNTIME_FDS.get_or_init(|| {
        open_fds()
            .into_iter()
            .filter(|fd| !before.contains(fd) && *fd != connection_fd)
            .collect()
    });
    // Only tokio's signal pair may be left, or what a guest forked from here would hold is
    // not known.
    if kept.len() != 2 || !kept.iter().all(|&fd| is_socket(fd)) {
        return None;
    }
    // Taken at once (containers keep arriving), a spare serves with the code its last container
    // ran still mapped; one left waiting lets go of it as an idle server does (`footprint`), so
    // the spares a burst leaves behind hold heap and stack only.
    if !readable_within(&connection, crate::footprint::IDLE_CHECK) {
        crate::footprint::release_code_pages();
    }
    connection.set_read_timeout(Some(SPARE_WAIT)).ok()?;
    let handed = receive(&connection)?;
    SERVED.fetch_add(1, Ordering::Relaxed);
    Some(handed)
}

/// Whether something (a request, or the starter's end) arrives on `connection` within `wait`.
fn readable_within(connection: &UnixStream, wait: Duration) -> bool {
    let timeout = u16::try_from(wait.as_millis()).map_or(PollTimeout::MAX, PollTimeout::from);
    loop {
        let mut ready = [PollFd::new(connection.as_fd(), PollFlags::POLLIN)];
        match nix::poll::poll(&mut ready, timeout) {
            Err(nix::errno::Errno::EINTR) => continue,
            Ok(0) => return false,
            _ => return true,
        }
    }
}

/// Whether this process has exactly one thread: only then may it fork its next launcher and
/// change its environment.
fn single_threaded() -> bool {
    // The runtime's blocking threads are joined when it drops, but a joined thread's task can
    // stay listed for a moment while the kernel finishes its exit.
    for _ in 0..20 {
        if std::fs::read_dir("/proc/self/task").is_ok_and(|tasks| tasks.count() == 1) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

/// Lets go of what tied this process to the container it served: containerd's pipes as stdin,
/// stdout and stderr (containerd reads them until they close), the bundle as working
/// directory, its command line; and returns its allocator's free pages.
fn leave_the_old_container(containerd_address: &str) -> std::io::Result<()> {
    crate::forked::null_stdio()?;
    std::env::set_current_dir("/")?;
    crate::forked::set_command_line(&[SPARE_TITLE.into(), OsString::from(containerd_address)]);
    crate::footprint::release_free_heap();
    Ok(())
}

/// Reads one handed request; `None` when the starter closed the connection, sent something
/// else, or nothing came within [`SPARE_WAIT`].
fn receive(connection: &UnixStream) -> Option<Handed> {
    let mut length = [0u8; 4];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut control = rustix::net::RecvAncillaryBuffer::new(&mut space);
    let received = rustix::net::recvmsg(
        connection,
        &mut [IoSliceMut::new(&mut length)],
        &mut control,
        rustix::net::RecvFlags::CMSG_CLOEXEC,
    )
    .ok()?;
    let mut fds: Vec<OwnedFd> = control
        .drain()
        .filter_map(|message| match message {
            rustix::net::RecvAncillaryMessage::ScmRights(fds) => Some(fds),
            _ => None,
        })
        .flatten()
        .collect();
    if received.bytes != length.len() || fds.len() != 4 {
        return None;
    }
    let length = usize::try_from(u32::from_le_bytes(length)).ok()?;
    if length > MAX_REQUEST_BYTES {
        return None;
    }
    let mut bytes = vec![0u8; length];
    (&*connection).read_exact(&mut bytes).ok()?;
    let request = StartRequest::decode(&bytes).ok()?;
    let stderr = fds.pop()?;
    let stdout = fds.pop()?;
    let stdin = fds.pop()?;
    let front = fds.pop()?;
    Some(Handed {
        connection: UnixStream::from(front),
        streams: [stdin, stdout, stderr],
        request,
    })
}

/// The starter's side: the spares' socket and the spares waiting on it.
pub struct Spares {
    listener: UnixListener,
    waiting: Vec<UnixStream>,
}

impl Spares {
    /// In the starter, holding its socket's lock: binds the spares' socket (replacing a dead
    /// starter's); `None` if spares are not wanted or it cannot.
    pub fn bind(starter_socket: &Path) -> Option<Self> {
        if !reuse_wanted() {
            return None;
        }
        let path = socket_of(starter_socket);
        let _ = std::fs::remove_file(&path);
        // Created 0600 (the starter's umask is 077): only root, containerd's user, connects.
        let listener = UnixListener::bind(&path).ok()?;
        listener.set_nonblocking(true).ok()?;
        Some(Self {
            listener,
            waiting: Vec::new(),
        })
    }

    /// The socket's path, for removing it.
    pub fn path(&self) -> Option<PathBuf> {
        self.listener
            .local_addr()
            .ok()?
            .as_pathname()
            .map(Path::to_path_buf)
    }

    /// What the starter polls for arriving spares.
    pub fn listener(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }

    /// Takes every spare waiting to connect that this starter forked, while there is room.
    pub fn accept_waiting(&mut self) {
        while let Ok((connection, _)) = self.listener.accept() {
            if self.waiting.len() < MAX_SPARES && forked_by_this_process(&connection) {
                self.waiting.push(connection);
            }
            // Otherwise dropped: the server sees its connection end and exits.
        }
    }

    /// Hands the front's request to the newest spare that takes it; whether one did.
    pub fn hand_over(
        &mut self,
        front: &UnixStream,
        streams: &[OwnedFd; 3],
        request: &StartRequest,
    ) -> bool {
        let bytes = request.encode();
        let Ok(length) = u32::try_from(bytes.len()) else {
            return false;
        };
        while let Some(spare) = self.waiting.pop() {
            if send(&spare, front, streams, length, &bytes).is_ok() {
                return true;
            }
            // Gone (it waited too long, or died): try the next.
        }
        false
    }
}

/// Whether the peer of `connection` is a child of this process (a server this starter forked,
/// which shares its cgroups and namespaces).
fn forked_by_this_process(connection: &UnixStream) -> bool {
    let Ok(peer) = rustix::net::sockopt::socket_peercred(connection) else {
        return false;
    };
    if peer.uid != rustix::process::geteuid() {
        return false;
    }
    let pid = peer.pid.as_raw_nonzero().get();
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // Fields after the command name, which may itself contain spaces: state, then ppid.
    stat.rsplit_once(") ")
        .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
        .is_some_and(|parent| parent == std::process::id())
}

/// Sends one request: the length with the four fds, then the bytes.
fn send(
    spare: &UnixStream,
    front: &UnixStream,
    streams: &[OwnedFd; 3],
    length: u32,
    bytes: &[u8],
) -> std::io::Result<()> {
    let fds = [
        front.as_fd(),
        streams[0].as_fd(),
        streams[1].as_fd(),
        streams[2].as_fd(),
    ];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
    if !control.push(rustix::net::SendAncillaryMessage::ScmRights(&fds)) {
        return Err(std::io::Error::other("the fds do not fit"));
    }
    let head = length.to_le_bytes();
    let sent = rustix::net::sendmsg(
        spare,
        &[IoSlice::new(&head)],
        &mut control,
        rustix::net::SendFlags::NOSIGNAL,
    )?;
    if sent != head.len() {
        return Err(std::io::Error::other("short send"));
    }
    let mut rest = bytes;
    while !rest.is_empty() {
        let n = rustix::net::send(spare, rest, rustix::net::SendFlags::NOSIGNAL)?;
        rest = &rest[n..];
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn request() -> StartRequest {
        StartRequest {
            args: vec!["core".into(), "-id".into(), "c1".into()],
            env: vec!["TTRPC_ADDRESS=/run/c.sock.ttrpc".into()],
            cwd: "/run/bundle".into(),
        }
    }

    /// What the starter sends is what a spare reads: the request, the front's connection and
    /// the three streams, in order.
    #[test]
    fn a_handed_request_arrives_whole() {
        let (starter_end, spare_end) = UnixStream::pair().unwrap();
        let (front, mut front_peer) = UnixStream::pair().unwrap();
        let streams: [OwnedFd; 3] =
            std::array::from_fn(|_| OwnedFd::from(std::fs::File::open("/dev/null").unwrap()));
        let mut spares = Spares {
            listener: UnixListener::bind(
                std::env::temp_dir().join(format!("spare-test-{}", std::process::id())),
            )
            .unwrap(),
            waiting: vec![starter_end],
        };
        if let Some(path) = spares.path() {
            let _ = std::fs::remove_file(path);
        }
        assert!(spares.hand_over(&front, &streams, &request()));
        let handed = receive(&spare_end).expect("a request");
        assert_eq!(handed.request, request());
        // The connection handed over is the front's: what the spare writes, the front reads.
        std::io::Write::write_all(&mut &handed.connection, b"a").unwrap();
        let mut reply = [0u8; 1];
        front_peer.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"a");
        // None left: the next front is forked a server.
        assert!(!spares.hand_over(&front, &streams, &request()));
    }

    /// A spare that has gone is skipped, and the request goes to the next one.
    #[test]
    fn a_gone_spare_is_skipped() {
        let (gone, gone_peer) = UnixStream::pair().unwrap();
        drop(gone_peer);
        let (alive, alive_peer) = UnixStream::pair().unwrap();
        let (front, _front_peer) = UnixStream::pair().unwrap();
        let streams: [OwnedFd; 3] =
            std::array::from_fn(|_| OwnedFd::from(std::fs::File::open("/dev/null").unwrap()));
        let path = std::env::temp_dir().join(format!("spare-test-gone-{}", std::process::id()));
        let mut spares = Spares {
            listener: UnixListener::bind(&path).unwrap(),
            waiting: vec![alive, gone],
        };
        let _ = std::fs::remove_file(&path);
        assert!(spares.hand_over(&front, &streams, &request()));
        assert!(receive(&alive_peer).is_some());
    }

    /// Anything but a length with four fds is not a request.
    #[test]
    fn a_message_without_its_fds_is_refused() {
        let (starter_end, spare_end) = UnixStream::pair().unwrap();
        let bytes = request().encode();
        std::io::Write::write_all(&mut &starter_end, &(bytes.len() as u32).to_le_bytes()).unwrap();
        std::io::Write::write_all(&mut &starter_end, &bytes).unwrap();
        assert!(receive(&spare_end).is_none());
    }

    /// This process's children count as forked by it; the test's own parent does not.
    #[test]
    fn only_children_of_the_starter_are_taken() {
        let (mine, _peer) = UnixStream::pair().unwrap();
        // A socketpair's peer is this very process: not its own child.
        assert!(!forked_by_this_process(&mine));
    }
}
