//! Network namespaces kept for reuse by the starter, for guests that need one of their own.
//!
//! A guest whose program imports `wasi:sockets` or `wasi:http` gets a new network namespace,
//! as runc gives every container one. The kernel makes it (its loopback, under the RTNL lock)
//! and, once the last process in it is gone, destroys it in the `cleanup_net` worker with an
//! expedited RCU grace period: about 1 ms of CPU per container, serialised across the node.
//! Yet what such a guest is given is always the same — a loopback that is down, nothing else —
//! and when nothing it ran could have changed that, the namespace its predecessor leaves is as
//! good as a new one. So the starter keeps up to [`MAX_SPARE`] of them and lends them out.
//!
//! Which namespaces come back: only one whose every occupant could change nothing in it
//! ([`crate::plan::GuestPlan::may_share_a_used_network`]: a plan whose namespace is the empty
//! kind — no pod's, no `net.*` sysctl, not privileged — whose bounding set has neither
//! `CAP_NET_ADMIN` nor `CAP_SYS_ADMIN`, and whose guest is PID 1 of a new PID namespace). The
//! server opens the guest's namespace once the guest has reported ready (its own code has run,
//! none of the program's) and gives it back ([`give_back`]) when it has reaped the guest: PID 1
//! of a namespace is reaped only after every other process in it, so by then no process is in
//! the network namespace either. Without `CAP_NET_ADMIN` no process could bring its loopback
//! up, add an interface, address, route or rule, or set a `net.*` sysctl (user namespaces are
//! refused), and the sockets it had are closed with it: a reused namespace shows its next guest
//! exactly what a new one would. The starter takes only a network namespace that is neither its
//! own (the host's) nor the shared empty one ([`crate::empty_network`]).
//!
//! Who borrows: a guest in the shared empty namespace whose program turns out to need a
//! network ([`crate::empty_network::leave_if`]) asks ([`borrow`]) and, with none to lend, no
//! answer within [`ANSWER_WAIT`] or a fd `setns` refuses, makes a new one as before. Spares live only in the starter:
//! when it leaves, they are destroyed with it.
//!
//! `WASMCELL_NETWORK_REUSE=off` in containerd's environment ([`REUSE_ENV`]) turns it off.
//!
//! The protocol, on `STARTER_SOCKET.netns` (0600, root only): one byte, [`LEND`] or
//! [`GIVE_BACK`] (with the namespace's fd); a lend is answered [`HERE`] with a fd, or [`NONE`].

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
};

/// How many used namespaces the starter keeps. It never holds more than the most such guests
/// that ran at once (each spare is one a guest gave back), and lets them all go when it leaves
/// (a minute without requests); each holds about 0.3 MiB of kernel memory on this project's
/// machine (slab and per-CPU data, measured over 32).
pub const MAX_SPARE: usize = 32;
/// How long a guest waits for the starter's answer before it makes a namespace itself: the
/// starter is single-threaded and may be forking a server.
pub const ANSWER_WAIT: Duration = Duration::from_millis(100);
/// How long the starter waits for a connection's request byte.
const REQUEST_WAIT: Duration = Duration::from_millis(50);

/// `off` in the shim's environment (containerd's) turns reuse off: every guest that needs a
/// network namespace gets a new one, and none is kept.
pub const REUSE_ENV: &str = "WASMCELL_NETWORK_REUSE";

/// A guest asks for a namespace.
pub const LEND: u8 = b'L';
/// A server hands one back (with its fd).
pub const GIVE_BACK: u8 = b'R';
/// The answer to a lend: here is one (with its fd).
pub const HERE: u8 = b'Y';
/// The answer to a lend: none spare.
pub const NONE: u8 = b'N';

/// Whether this shim's guests may share used namespaces ([`REUSE_ENV`]).
pub fn reuse_wanted() -> bool {
    std::env::var_os(REUSE_ENV).is_none_or(|v| v != "off")
}

/// The pool's socket, next to the starter's.
pub fn socket_of(starter_socket: &Path) -> PathBuf {
    let mut path = starter_socket.as_os_str().to_owned();
    path.push(".netns");
    PathBuf::from(path)
}

/// The kernel's name of the network namespace `fd` refers to (`net:[INODE]`), or `None` if it
/// is not one.
fn network_namespace_name(fd: BorrowedFd<'_>) -> Option<String> {
    let name = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
    let name = name.to_str()?;
    name.starts_with("net:[").then(|| name.to_owned())
}

/// The starter's side: the listening socket and the spares.
pub struct Pool {
    listener: UnixListener,
    spare: Vec<(String, OwnedFd)>,
    /// Namespaces never to lend: the starter's own and the shared empty one.
    never: Vec<String>,
}

impl Pool {
    /// In the starter, holding its socket's lock: binds the pool's socket (replacing a dead
    /// starter's). `None` if it cannot; guests then make their own namespaces.
    pub fn bind(starter_socket: &Path) -> Option<Self> {
        let path = socket_of(starter_socket);
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).ok()?;
        listener.set_nonblocking(true).ok()?;
        let never = never_to_lend();
        if never.is_empty() {
            return None;
        }
        Some(Self {
            listener,
            spare: Vec::new(),
            never,
        })
    }

    /// What the starter polls for requests.
    pub fn listener(&self) -> BorrowedFd<'_> {
        self.listener.as_fd()
    }

    /// Answers every connection waiting on the socket.
    pub fn answer_waiting(&mut self) {
        while let Ok((connection, _)) = self.listener.accept() {
            self.answer(connection.as_fd());
        }
    }

    fn answer(&mut self, connection: BorrowedFd<'_>) {
        let Ok(peer) = rustix::net::sockopt::socket_peercred(connection) else {
            return;
        };
        if peer.uid != rustix::process::geteuid() {
            return;
        }
        // Accepted sockets do not inherit the listener's O_NONBLOCK on Linux.
        let _ = rustix::net::sockopt::set_socket_timeout(
            connection,
            rustix::net::sockopt::Timeout::Recv,
            Some(REQUEST_WAIT),
        );
        let Some((request, fd)) = receive(connection) else {
            return;
        };
        match (request, fd) {
            (LEND, None) => match self.spare.pop() {
                Some((_, namespace)) => {
                    let _ = send(connection, HERE, Some(namespace.as_fd()));
                }
                None => {
                    let _ = send(connection, NONE, None);
                }
            },
            (GIVE_BACK, Some(namespace)) => self.keep(namespace),
            _ => {}
        }
    }

    /// Keeps `namespace` if it is a network namespace the pool may lend and there is room.
    fn keep(&mut self, namespace: OwnedFd) {
        let Some(name) = network_namespace_name(namespace.as_fd()) else {
            return;
        };
        if self.spare.len() >= MAX_SPARE
            || self.never.contains(&name)
            || self.spare.iter().any(|(kept, _)| *kept == name)
        {
            return;
        }
        self.spare.push((name, namespace));
    }
}

/// In a guest, before it is confined: a used namespace from the pool at `pool`, if the
/// starter has one to lend and answers within [`ANSWER_WAIT`].
pub fn borrow(pool: &Path) -> Option<OwnedFd> {
    let connection = connect(pool, false)?;
    send(connection.as_fd(), LEND, None)?;
    match receive(connection.as_fd())? {
        (HERE, Some(namespace)) => Some(namespace),
        _ => None,
    }
}

/// In a server, once guest `pid` (its unreaped child) has reported ready: its network
/// namespace, unless that is the server's own or the shared empty one (nothing to give back).
pub fn namespace_of_guest(pid: u32) -> Option<OwnedFd> {
    let namespace = OwnedFd::from(std::fs::File::open(format!("/proc/{pid}/ns/net")).ok()?);
    let name = network_namespace_name(namespace.as_fd())?;
    (!never_lent().contains(&name)).then_some(namespace)
}

/// [`never_to_lend`], read once per server.
fn never_lent() -> &'static [String] {
    static NEVER: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    NEVER.get_or_init(never_to_lend)
}

/// The namespaces this process (a starter or a server) must never put in the pool: its own,
/// the host's, and the starter's shared empty one. Empty if even its own cannot be read.
fn never_to_lend() -> Vec<String> {
    let Ok(own) = std::fs::read_link("/proc/self/ns/net") else {
        return Vec::new();
    };
    let mut never = vec![own.to_string_lossy().into_owned()];
    if let Some(shared) = crate::empty_network::inherited_fd() {
        // SAFETY: starters and servers keep the shared namespace's fd open for their whole
        // life.
        #[allow(unsafe_code)]
        let shared = unsafe { BorrowedFd::borrow_raw(shared) };
        never.extend(network_namespace_name(shared));
    }
    never
}

/// In a server that has reaped the guest `namespace` belonged to: hands it to the pool at
/// `pool` without waiting (a full backlog or no starter: it is dropped, and the kernel
/// destroys it).
pub fn give_back(pool: &Path, namespace: OwnedFd) {
    if let Some(connection) = connect(pool, true) {
        let _ = send(connection.as_fd(), GIVE_BACK, Some(namespace.as_fd()));
    }
}

fn connect(path: &Path, nonblocking: bool) -> Option<OwnedFd> {
    let flags = if nonblocking {
        SocketFlags::CLOEXEC | SocketFlags::NONBLOCK
    } else {
        SocketFlags::CLOEXEC
    };
    let socket =
        rustix::net::socket_with(AddressFamily::UNIX, SocketType::STREAM, flags, None).ok()?;
    if !nonblocking {
        // A starter whose backlog is full would otherwise hold the guest at `connect`.
        for direction in [
            rustix::net::sockopt::Timeout::Send,
            rustix::net::sockopt::Timeout::Recv,
        ] {
            rustix::net::sockopt::set_socket_timeout(&socket, direction, Some(ANSWER_WAIT)).ok()?;
        }
    }
    let address = SocketAddrUnix::new(path).ok()?;
    rustix::net::connect(&socket, &address).ok()?;
    Some(socket)
}

/// Sends one byte, with `fd` attached if given.
fn send(connection: BorrowedFd<'_>, byte: u8, fd: Option<BorrowedFd<'_>>) -> Option<()> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds = fd.map(|fd| [fd]);
    if let Some(fds) = &fds
        && !control.push(SendAncillaryMessage::ScmRights(fds))
    {
        return None;
    }
    let sent = rustix::net::sendmsg(
        connection,
        &[IoSlice::new(&[byte])],
        &mut control,
        SendFlags::NOSIGNAL,
    )
    .ok()?;
    (sent == 1).then_some(())
}

/// Receives one byte and the fd attached to it, if any (only the first of several is kept).
fn receive(connection: BorrowedFd<'_>) -> Option<(u8, Option<OwnedFd>)> {
    let mut byte = [0u8; 1];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = rustix::net::recvmsg(
        connection,
        &mut [IoSliceMut::new(&mut byte)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .ok()?;
    let mut fd = None;
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            for received in received {
                fd.get_or_insert(received);
            }
        }
    }
    (received.bytes == 1).then_some((byte[0], fd))
}

#[cfg(test)]
#[allow(clippy::expect_used)] // tests: a panic is a failure
mod tests {
    use super::*;

    #[test]
    fn the_pool_socket_sits_next_to_the_starters() {
        assert_eq!(
            socket_of(Path::new("/run/containerd/s/wasmcell-starter-00ff")),
            Path::new("/run/containerd/s/wasmcell-starter-00ff.netns")
        );
    }

    #[test]
    fn only_network_namespaces_are_named() {
        let file = std::fs::File::open("/proc/self/ns/net").expect("own network namespace");
        let name = network_namespace_name(file.as_fd()).expect("a network namespace");
        assert!(name.starts_with("net:["), "{name}");
        let file = std::fs::File::open("/proc/self/ns/uts").expect("own UTS namespace");
        assert_eq!(network_namespace_name(file.as_fd()), None);
        let file = std::fs::File::open("/proc/self/status").expect("a plain file");
        assert_eq!(network_namespace_name(file.as_fd()), None);
    }

    /// The pool lends what was given back, never its own namespace, never one twice, and
    /// answers `NONE` when it has nothing; nothing here needs privileges (no namespace is
    /// made: the test's own is given back, and a copy of its fd stands for a second one).
    #[test]
    fn the_pool_keeps_what_it_may_lend_and_lends_it_once() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let starter = dir.path().join("wasmcell-starter-test");
        let mut pool = Pool::bind(&starter).expect("pool bound");
        let path = socket_of(&starter);
        assert!(pool.never.iter().all(|n| n.starts_with("net:[")));

        // Its own namespace (the host's, here) is refused.
        let own = std::fs::File::open("/proc/self/ns/net").expect("own network namespace");
        give_back(&path, OwnedFd::from(own.try_clone().expect("dup")));
        pool.answer_waiting();
        assert_eq!(pool.spare.len(), 0);

        // A namespace that is not the starter's is kept once, however often it comes back;
        // a fd that is no network namespace is not kept.
        pool.never.clear();
        give_back(&path, OwnedFd::from(own.try_clone().expect("dup")));
        give_back(&path, OwnedFd::from(own.try_clone().expect("dup")));
        give_back(
            &path,
            OwnedFd::from(std::fs::File::open("/proc/self/ns/uts").expect("uts")),
        );
        pool.answer_waiting();
        assert_eq!(pool.spare.len(), 1);

        // A lend is answered from another thread (the pool is the starter's, single-threaded).
        let mut borrow_one = || {
            std::thread::scope(|scope| {
                let borrower = scope.spawn(|| borrow(&path));
                while !borrower.is_finished() {
                    pool.answer_waiting();
                    std::thread::sleep(Duration::from_millis(1));
                }
                borrower.join().expect("borrower")
            })
        };
        let lent = borrow_one().expect("the spare is lent");
        assert_eq!(
            network_namespace_name(lent.as_fd()),
            network_namespace_name(own.as_fd())
        );
        let none = borrow_one();
        assert!(none.is_none(), "nothing spare, nothing lent");
    }
}
