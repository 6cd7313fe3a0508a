//! The starter: a long-lived, single-threaded fork of the core, one per containerd and core
//! binary, that forks a new group's server when the front asks (the protocol and why are in
//! `wasmcell_shim_front::starter`). A per-pod shim then costs a fork of a process that has
//! already started instead of an exec of the core.
//!
//! Life: a server the front had to spawn forks one ([`start_if_absent`]) before anything else,
//! orphaned (adopted by containerd if it is a subreaper, else by init) rather than left the
//! server's child. It holds an `flock` on `SOCKET.lock` for its whole life, so at most one
//! serves a socket; it leaves after [`IDLE_LIMIT`] without a request, when its containerd no
//! longer answers, or when a front arrives whose cgroups, namespaces or privileges are not its
//! own (its containerd moved: the front then spawns the core, whose server forks a fresh
//! starter). It never touches a container, and its children are reaped by the kernel
//! (`SIGCHLD` ignored). On a second socket it keeps network namespaces that guests have left,
//! for the next guests ([`crate::network_pool`]).
//!
//! The server it forks for a request takes the front's place — its stdin, stdout and stderr,
//! the command line, environment and working directory it sent, its rlimits, OOM score and
//! umask, a session of its own — and only then accepts; it serves exactly as a spawned one.

use std::ffi::OsString;
use std::io::{IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};

use wasmcell_shim_front::starter::{
    ACCEPTED, DECLINED, MAX_REQUEST_BYTES, START_ENV, STARTER_TITLE, StartRequest, starter_socket,
    starter_wanted,
};

/// How long a starter waits for a request before it leaves.
pub const IDLE_LIMIT: Duration = Duration::from_secs(60);
/// How often an idle starter checks that its containerd is still there.
const CHECK_EVERY: Duration = Duration::from_secs(5);
/// How long a front may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// In a server the front spawned, for containerd at `containerd_address`: forks a starter
/// unless [`START_ENV`] says `exec` (one that finds another starter serving leaves at once).
/// Call only while this process has a single thread, and before it becomes a subreaper.
pub fn start_if_absent(containerd_address: &str) {
    let Some(socket) = socket_if_wanted(containerd_address) else {
        return;
    };
    // SAFETY: called from `main` before any other thread exists, so the children own a
    // consistent copy of every lock and allocator state; neither returns.
    #[allow(unsafe_code)]
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            // The middle process exits at once, so the starter is orphaned: not the server's
            // child, which reaps and reports every child it has as a guest.
            // SAFETY: this child is as single-threaded as its parent (see above).
            if let Ok(nix::unistd::ForkResult::Child) = unsafe { nix::unistd::fork() } {
                become_starter(&socket, containerd_address)
            }
            exit_now(0)
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            let _ = nix::sys::wait::waitpid(child, None);
        }
        Err(_) => {}
    }
}

/// The socket of this core's starter for containerd at `containerd_address`, unless
/// [`START_ENV`] says `exec` (or this binary cannot be read).
pub fn socket_if_wanted(containerd_address: &str) -> Option<PathBuf> {
    if !starter_wanted(std::env::var_os(START_ENV).as_deref()) {
        return None;
    }
    starter_socket(containerd_address, &std::env::current_exe().ok()?)
}

/// In the forked child: detach from the server and containerd, take the socket (or leave if
/// another starter holds it) and serve until idle.
fn become_starter(socket: &Path, containerd_address: &str) -> ! {
    let detach = || -> std::io::Result<()> {
        nix::unistd::setsid()?;
        // The server's stdout is the front's pipe: holding it would keep the front waiting.
        crate::forked::null_stdio()?;
        crate::forked::close_from(3)?;
        std::env::set_current_dir("/")?;
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
        Ok(())
    };
    if detach().is_err() {
        exit_now(1);
    }
    let Some((listener, _lock)) = take_socket(socket) else {
        exit_now(0);
    };
    // Named apart from the shims (`ps`, and tools that count shims by `containerd-shim`), with
    // its containerd's address so an operator can tell whose it is.
    crate::forked::set_command_line(&[STARTER_TITLE.into(), containerd_address.into()]);
    // Once here rather than in every server's guest launcher: each `cpuid` traps to the
    // hypervisor, and every server forked from here inherits the answers.
    wasmcell_engine::detect_cpu_features();
    crate::cgroup::find_host_hierarchy();
    // Without it each network-less guest gets a namespace of its own: slower, as safe.
    let _ = crate::empty_network::create();
    crate::preload::start();
    // After the empty namespace, which it must never lend.
    let mut pool = crate::network_pool::Pool::bind(socket);
    let mut spares = crate::spare::Spares::bind(socket);
    // Its servers are never waited for: the kernel reaps them.
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler.
    #[allow(unsafe_code)]
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGCHLD,
            nix::sys::signal::SigHandler::SigIgn,
        );
    }
    serve(
        &listener,
        pool.as_mut(),
        spares.as_mut(),
        containerd_address,
    );
    // All go while the lock is held. A starter starting now either failed to take the lock
    // (and left) or takes the lock of a new file after this; one that still took this file's
    // lock binds a socket the next one replaces, and idles out.
    let _ = std::fs::remove_file(socket);
    let _ = std::fs::remove_file(lock_path(socket));
    if pool.is_some() {
        let _ = std::fs::remove_file(crate::network_pool::socket_of(socket));
    }
    if let Some(path) = spares.as_ref().and_then(crate::spare::Spares::path) {
        let _ = std::fs::remove_file(path);
    }
    exit_now(0)
}

/// Leaves without running the server's exit handlers (none are the starter's).
fn exit_now(code: i32) -> ! {
    // SAFETY: `_exit` ends the process at once; nothing of it is used afterwards.
    #[allow(unsafe_code)]
    unsafe {
        libc::_exit(code)
    }
}

fn lock_path(socket: &Path) -> PathBuf {
    let mut path = socket.as_os_str().to_owned();
    path.push(".lock");
    PathBuf::from(path)
}

/// Binds `socket` under its lock, replacing a stale one; `None` if another starter holds the
/// lock. The lock is held for as long as the returned file lives.
fn take_socket(socket: &Path) -> Option<(UnixListener, std::fs::File)> {
    // The first server on a node may come before containerd-shim's directory exists.
    std::fs::create_dir_all(socket.parent()?).ok()?;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(lock_path(socket))
        .ok()?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).ok()?;
    // Under the lock no other starter can be binding: a socket file here is a dead one's.
    let _ = std::fs::remove_file(socket);
    // Created 0600 (umask 077): only root, containerd's user, may connect.
    let listener = UnixListener::bind(socket).ok()?;
    rustix::net::sockopt::set_socket_timeout(
        &listener,
        rustix::net::sockopt::Timeout::Recv,
        Some(CHECK_EVERY),
    )
    .ok()?;
    Some((listener, lock))
}

/// Accepts requests (answers the network pool's, takes in spare servers) until idle, until
/// containerd is gone, or until a front shows that this starter's place has moved.
fn serve(
    listener: &UnixListener,
    mut pool: Option<&mut crate::network_pool::Pool>,
    mut spares: Option<&mut crate::spare::Spares>,
    containerd_address: &str,
) {
    let containerd_socket = Path::new(
        containerd_address
            .strip_prefix("unix://")
            .unwrap_or(containerd_address),
    );
    // No request for a while: is containerd still there? A socket file alone does not say so
    // (a killed containerd leaves it).
    let still_wanted = |last_request: Instant| {
        last_request.elapsed() < IDLE_LIMIT && UnixStream::connect(containerd_socket).is_ok()
    };
    let home = Place::of("self");
    let mut last_request = Instant::now();
    loop {
        let (front, lending, arriving) = {
            let mut ready = vec![PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
            if let Some(pool) = pool.as_deref() {
                ready.push(PollFd::new(pool.listener(), PollFlags::POLLIN));
            }
            if let Some(spares) = spares.as_deref() {
                ready.push(PollFd::new(spares.listener(), PollFlags::POLLIN));
            }
            let timeout =
                u16::try_from(CHECK_EVERY.as_millis()).map_or(PollTimeout::MAX, PollTimeout::from);
            match nix::poll::poll(&mut ready, timeout) {
                Ok(0) if !still_wanted(last_request) => return,
                Ok(0) => continue,
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return,
            }
            let is_ready = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
            let mut rest = ready.iter().skip(1);
            let lending = pool.is_some() && rest.next().is_some_and(is_ready);
            let arriving = spares.is_some() && rest.next().is_some_and(is_ready);
            (is_ready(&ready[0]), lending, arriving)
        };
        if lending && let Some(pool) = pool.as_deref_mut() {
            // Guests come and go with containers: the starter is still in use.
            last_request = Instant::now();
            pool.answer_waiting();
        }
        if arriving && let Some(spares) = spares.as_deref_mut() {
            spares.accept_waiting();
        }
        if !front {
            continue;
        }
        match listener.accept() {
            Ok((connection, _)) => {
                last_request = Instant::now();
                if handle(connection, &home, spares.as_deref_mut()) == Handled::Retire {
                    return;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(_) => return,
        }
    }
}

#[derive(PartialEq, Eq)]
enum Handled {
    Served,
    Retire,
}

/// One front's request: checked, read, and handed to a spare server or a forked one.
fn handle(
    mut connection: UnixStream,
    home: &Place,
    spares: Option<&mut crate::spare::Spares>,
) -> Handled {
    let Ok(peer) = rustix::net::sockopt::socket_peercred(&connection) else {
        return Handled::Served;
    };
    if peer.uid != rustix::process::geteuid() {
        return Handled::Served; // not containerd's: no answer at all
    }
    let peer_pid = peer.pid.as_raw_nonzero().get();
    if Place::of(&peer_pid.to_string()) != *home {
        let _ = connection.write_all(&[DECLINED]);
        return Handled::Retire;
    }
    let _ = connection.set_read_timeout(Some(REQUEST_TIMEOUT));
    let Some((streams, request)) = read_request(&mut connection) else {
        let _ = connection.write_all(&[DECLINED]);
        return Handled::Served;
    };
    if let Some(spares) = spares
        && spares.hand_over(&connection, &streams, &request)
    {
        return Handled::Served;
    }
    crate::preload::refresh();
    // SAFETY: the starter is single-threaded (forked from a server's `main` before any thread
    // existed, and it starts none), so the child owns a consistent copy of every lock and
    // allocator state; it never returns from `become_server`.
    #[allow(unsafe_code)]
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => become_server(connection, streams, request, peer_pid),
        Ok(nix::unistd::ForkResult::Parent { .. }) => {}
        Err(_) => {
            let _ = connection.write_all(&[DECLINED]);
        }
    }
    Handled::Served
}

/// What a forked server cannot take from the front and must therefore already share with the
/// starter: cgroups, namespaces, security label, privileges (capabilities, `no_new_privs`,
/// seccomp, user and groups), as `/proc` shows them.
#[derive(PartialEq, Eq)]
struct Place {
    cgroups: Option<Vec<u8>>,
    namespaces: Vec<Option<PathBuf>>,
    label: Option<Vec<u8>>,
    privileges: Option<Vec<String>>,
}

impl Place {
    /// The place of `pid` (a number, or `self`).
    fn of(pid: &str) -> Self {
        let read = |what: &str| std::fs::read(format!("/proc/{pid}/{what}")).ok();
        let privileges = read("status")
            .and_then(|status| String::from_utf8(status).ok())
            .map(|status| {
                status
                    .lines()
                    .filter(|l| {
                        ["Cap", "NoNewPrivs:", "Seccomp:", "Uid:", "Gid:", "Groups:"]
                            .iter()
                            .any(|p| l.starts_with(p))
                    })
                    .map(str::to_owned)
                    .collect()
            });
        Self {
            cgroups: read("cgroup"),
            namespaces: ["mnt", "net", "pid", "ipc", "uts", "user", "cgroup"]
                .iter()
                .map(|ns| std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).ok())
                .collect(),
            label: read("attr/current"),
            privileges,
        }
    }
}

/// Reads the server's stdin, stdout and stderr and the request; `None` if the front sent
/// anything else.
fn read_request(connection: &mut UnixStream) -> Option<([OwnedFd; 3], StartRequest)> {
    let mut length = [0u8; 4];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(3))];
    let mut control = rustix::net::RecvAncillaryBuffer::new(&mut space);
    let received = rustix::net::recvmsg(
        &*connection,
        &mut [IoSliceMut::new(&mut length)],
        &mut control,
        rustix::net::RecvFlags::CMSG_CLOEXEC,
    )
    .ok()?;
    let mut fds: Vec<OwnedFd> = Vec::new();
    for message in control.drain() {
        if let rustix::net::RecvAncillaryMessage::ScmRights(received_fds) = message {
            fds.extend(received_fds);
        }
    }
    if received.bytes < length.len() {
        connection.read_exact(&mut length[received.bytes..]).ok()?;
    }
    let streams: [OwnedFd; 3] = fds.try_into().ok()?;
    let length = u32::from_le_bytes(length) as usize;
    if length > MAX_REQUEST_BYTES {
        return None;
    }
    let mut body = vec![0u8; length];
    connection.read_exact(&mut body).ok()?;
    let request = StartRequest::decode(&body).ok()?;
    // Only a server's command line (`-socket`, no action) is started this way.
    crate::server_flags(&request.args)?;
    Some((streams, request))
}

/// In the forked child: take the front's place, accept, and serve as a spawned server would.
fn become_server(
    mut connection: UnixStream,
    streams: [OwnedFd; 3],
    request: StartRequest,
    peer: i32,
) -> ! {
    if take_the_fronts_place(&connection, streams, &request, peer, Taker::ForkedServer).is_err() {
        // Declined: the front spawns the core instead, as if no starter were running.
        let _ = connection.write_all(&[DECLINED]);
        exit_now(1);
    }
    if connection.write_all(&[ACCEPTED]).is_err() {
        exit_now(1); // the front gave up waiting and starts the server itself
    }
    drop(connection);
    let zygote = crate::launcher_if_wanted(request.args.clone());
    std::process::exit(crate::bootstrap::run(&request.args, zygote))
}

/// In a spare server ([`crate::spare`]), with the request the starter handed it: takes the
/// front's place as a forked server does and answers the front; the server's command line and
/// its new guest launcher, or `None` (the front was answered `DECLINED`, or is gone) when the
/// spare should exit.
pub fn serve_handed(
    handed: crate::spare::Handed,
) -> Option<(Vec<OsString>, Option<crate::zygote::Zygote>)> {
    let crate::spare::Handed {
        mut connection,
        streams,
        request,
    } = handed;
    let peer = rustix::net::sockopt::socket_peercred(&connection)
        .ok()?
        .pid
        .as_raw_nonzero()
        .get();
    // Everything of the container it served closed with its service.
    if take_the_fronts_place(&connection, streams, &request, peer, Taker::Spare).is_err() {
        let _ = connection.write_all(&[DECLINED]);
        return None;
    }
    connection.write_all(&[ACCEPTED]).ok()?;
    drop(connection);
    // As the starter does before each fork: the programs compiled since it left it.
    crate::preload::refresh();
    let zygote = crate::launcher_if_wanted(request.args.clone());
    Some((request.args, zygote))
}

/// Which process takes a front's place: what it holds is the starter's, or its own.
#[derive(PartialEq, Eq)]
enum Taker {
    /// A fresh fork of the starter: the starter's fds (its listener, its lock) are closed and
    /// its ignored `SIGCHLD` is restored.
    ForkedServer,
    /// A spare server: its fds and signal handlers are its own (the async runtime's signal
    /// pipe and `SIGCHLD` handler outlive the runtime, and are used again by the next).
    Spare,
}

/// Takes the front's standard streams (as sent), rlimits, OOM score and umask, a session of
/// its own, the working directory, environment and command line of the request (see [`Taker`]
/// for what else). Call only while this process has a single thread.
fn take_the_fronts_place(
    connection: &UnixStream,
    streams: [OwnedFd; 3],
    request: &StartRequest,
    peer: i32,
    taker: Taker,
) -> std::io::Result<()> {
    if taker == Taker::ForkedServer {
        // SAFETY: restoring the default disposition installs no handler.
        #[allow(unsafe_code)]
        unsafe {
            nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGCHLD,
                nix::sys::signal::SigHandler::SigDfl,
            )?;
        }
    }
    // A spare leads the session it made as a forked server.
    if nix::unistd::getsid(None)? != nix::unistd::getpid() {
        nix::unistd::setsid()?;
    }
    copy_rlimits(peer)?;
    let score = std::fs::read(format!("/proc/{peer}/oom_score_adj"))?;
    std::fs::write("/proc/self/oom_score_adj", score)?;
    let status = std::fs::read_to_string(format!("/proc/{peer}/status"))?;
    if let Some(umask) = status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .and_then(|m| u32::from_str_radix(m.trim(), 8).ok())
    {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(umask));
    }
    let [stdin, stdout, stderr] = streams;
    nix::unistd::dup2_stdin(&stdin)?;
    nix::unistd::dup2_stdout(&stdout)?;
    nix::unistd::dup2_stderr(&stderr)?;
    drop((stdin, stdout, stderr));
    // The listener, the lock and anything else of the starter's (the lock's `flock` belongs to
    // the open file, which the starter keeps).
    if taker == Taker::ForkedServer {
        crate::forked::close_from_but(3, &[connection.as_raw_fd()])?;
    }
    std::env::set_current_dir(&request.cwd)?;
    let old: Vec<OsString> = std::env::vars_os().map(|(k, _)| k).collect();
    // SAFETY: this process has a single thread (see `handle`), so nothing reads the
    // environment while it changes.
    #[allow(unsafe_code)]
    unsafe {
        for key in old {
            std::env::remove_var(key);
        }
        for pair in &request.env {
            let bytes = pair.as_bytes();
            if let Some(eq) = bytes.iter().position(|&b| b == b'=')
                && eq > 0
            {
                std::env::set_var(
                    std::ffi::OsStr::from_bytes(&bytes[..eq]),
                    std::ffi::OsStr::from_bytes(&bytes[eq + 1..]),
                );
            }
        }
    }
    crate::forked::set_command_line(&request.args);
    Ok(())
}

/// Gives this process the front's resource limits.
fn copy_rlimits(peer: i32) -> std::io::Result<()> {
    for resource in [
        libc::RLIMIT_AS,
        libc::RLIMIT_CORE,
        libc::RLIMIT_CPU,
        libc::RLIMIT_DATA,
        libc::RLIMIT_FSIZE,
        libc::RLIMIT_LOCKS,
        libc::RLIMIT_MEMLOCK,
        libc::RLIMIT_MSGQUEUE,
        libc::RLIMIT_NICE,
        libc::RLIMIT_NOFILE,
        libc::RLIMIT_NPROC,
        libc::RLIMIT_RSS,
        libc::RLIMIT_RTPRIO,
        libc::RLIMIT_RTTIME,
        libc::RLIMIT_SIGPENDING,
        libc::RLIMIT_STACK,
    ] {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: prlimit reads the front's limit into `limit`, a valid rlimit, and sets ours
        // from it; no other memory is touched.
        #[allow(unsafe_code)]
        let rc = unsafe {
            let rc = libc::prlimit(peer, resource, std::ptr::null(), &mut limit);
            if rc == 0 {
                libc::prlimit(0, resource, &limit, std::ptr::null_mut())
            } else {
                rc
            }
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
