//! The starter: a long-lived, single-threaded fork of the core, one per containerd and core
//! binary, that runs containerd's `start` in a forked child when the front asks (the protocol is
//! `wasmcell_shim_front::starter`). A per-pod shim then costs a fork of a process that has already
//! started instead of an exec of the core — the loader's start-up and the first touches of the
//! binary, paid once per starter instead of once per pod.
//!
//! Life: an exec'd `start` forks one (see [`start_if_absent`]) when none answers; it holds an
//! `flock` on `SOCKET.lock` for its whole life, so at most one serves a socket; it leaves after
//! [`IDLE_LIMIT`] without a request, when its containerd's socket is gone, or when a front
//! arrives whose cgroups, namespaces or privileges are not its own (its containerd moved: the
//! front's own exec of the core starts a fresh starter). It never touches a container.
//!
//! The child it forks for a request takes the front's stdin, stdout, stderr, command line,
//! environment, working directory, rlimits, OOM score and umask, and then runs `start` as an
//! exec'd core would; its reply is `start`'s exit code.

use std::ffi::OsString;
use std::io::{IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use wasmcell_shim_front::starter::{
    ACCEPTED, DECLINED, MAX_REQUEST_BYTES, START_ENV, StartRequest, starter_socket, starter_wanted,
};

/// The starter's command line: this, then its containerd's address.
pub const STARTER_TITLE: &str = "wasmcell-shim-starter";
/// How long a starter waits for a request before it leaves.
pub const IDLE_LIMIT: Duration = Duration::from_secs(300);
/// How often an idle starter checks that its containerd is still there.
const CHECK_EVERY: Duration = Duration::from_secs(10);
/// How long a front may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// In an exec'd `start` for containerd at `containerd_address`: forks a starter unless one
/// answers or [`START_ENV`] says `exec`. Call only while this process has a single thread; the
/// starter lets go of every fd `start` has.
pub fn start_if_absent(containerd_address: &str) {
    if !starter_wanted(std::env::var_os(START_ENV).as_deref()) {
        return;
    }
    let Ok(core) = std::env::current_exe() else {
        return;
    };
    let Some(socket) = starter_socket(containerd_address, &core) else {
        return;
    };
    if UnixStream::connect(&socket).is_ok() {
        return;
    }
    // SAFETY: called from `start` on the main thread before any other thread exists (see
    // above), so the child owns a consistent copy of every lock and allocator state; it never
    // returns from `become_starter`.
    #[allow(unsafe_code)]
    if let Ok(nix::unistd::ForkResult::Child) = unsafe { nix::unistd::fork() } {
        become_starter(&socket, containerd_address)
    }
}

/// In the forked child: detach from `start` and containerd, take the socket (or leave if
/// another starter holds it) and serve until idle.
fn become_starter(socket: &Path, containerd_address: &str) -> ! {
    let detach = || -> std::io::Result<()> {
        nix::unistd::setsid()?;
        let null = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")?;
        nix::unistd::dup2_stdin(&null)?;
        nix::unistd::dup2_stdout(&null)?;
        nix::unistd::dup2_stderr(&null)?;
        drop(null);
        crate::forked::close_from(3)?;
        std::env::set_current_dir("/")?;
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
        Ok(())
    };
    if detach().is_err() {
        std::process::exit(1);
    }
    let Some((listener, _lock)) = take_socket(socket) else {
        std::process::exit(0);
    };
    // Named apart from the shims (`ps`, and tools that count shims by `containerd-shim`), with
    // its containerd's address so an operator can tell whose it is.
    crate::forked::set_command_line(&[STARTER_TITLE.into(), containerd_address.into()]);
    // Children are never waited for: the kernel reaps them.
    // SAFETY: setting a signal's disposition to SIG_IGN installs no handler.
    #[allow(unsafe_code)]
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGCHLD,
            nix::sys::signal::SigHandler::SigIgn,
        );
    }
    serve(&listener, containerd_address);
    // Both go while the lock is held. A starter starting now either failed to take the lock
    // (and leaves) or takes a new lock file after this; one that still took this file's lock
    // binds a socket the next one replaces, and idles out.
    let _ = std::fs::remove_file(socket);
    let _ = std::fs::remove_file(lock_path(socket));
    std::process::exit(0)
}

fn lock_path(socket: &Path) -> PathBuf {
    let mut path = socket.as_os_str().to_owned();
    path.push(".lock");
    PathBuf::from(path)
}

/// Binds `socket` under its lock, replacing a stale one; `None` if another starter holds the
/// lock. The lock is held for as long as the returned fd lives.
fn take_socket(socket: &Path) -> Option<(UnixListener, std::fs::File)> {
    // The first `start` on a node may come before any shim made containerd-shim's directory.
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
    let listener = UnixListener::bind(socket).ok()?;
    let _ = std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600));
    rustix::net::sockopt::set_socket_timeout(
        &listener,
        rustix::net::sockopt::Timeout::Recv,
        Some(CHECK_EVERY),
    )
    .ok()?;
    Some((listener, lock))
}

/// Accepts requests until idle, until containerd's socket is gone, or until a front shows that
/// this starter's place has moved.
fn serve(listener: &UnixListener, containerd_address: &str) {
    let containerd_socket = Path::new(
        containerd_address
            .strip_prefix("unix://")
            .unwrap_or(containerd_address),
    );
    let mut last_request = Instant::now();
    loop {
        match listener.accept() {
            Ok((connection, _)) => {
                last_request = Instant::now();
                if handle(connection) == Handled::Retire {
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
        if last_request.elapsed() >= IDLE_LIMIT || !containerd_socket.exists() {
            return;
        }
    }
}

#[derive(PartialEq, Eq)]
enum Handled {
    Served,
    Retire,
}

/// One front's request: checked, read, and handed to a forked child.
fn handle(mut connection: UnixStream) -> Handled {
    let Ok(peer) = rustix::net::sockopt::socket_peercred(&connection) else {
        return Handled::Served;
    };
    if peer.uid != rustix::process::geteuid() {
        return Handled::Served; // not containerd's: no answer at all
    }
    let peer_pid = peer.pid.as_raw_nonzero().get();
    if differs_from_self(peer_pid).is_some() {
        let _ = connection.write_all(&[DECLINED]);
        return Handled::Retire;
    }
    let _ = rustix::net::sockopt::set_socket_timeout(
        &connection,
        rustix::net::sockopt::Timeout::Recv,
        Some(REQUEST_TIMEOUT),
    );
    let Some((streams, request)) = read_request(&mut connection) else {
        let _ = connection.write_all(&[DECLINED]);
        return Handled::Served;
    };
    // SAFETY: the starter is single-threaded (forked from `start` before any thread existed,
    // and it starts none), so the child owns a consistent copy of every lock and allocator
    // state; it never returns from `run_start`.
    #[allow(unsafe_code)]
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => run_start(connection, streams, request, peer_pid),
        Ok(nix::unistd::ForkResult::Parent { .. }) => {}
        Err(_) => {
            let _ = connection.write_all(&[DECLINED]);
        }
    }
    Handled::Served
}

/// The first of what a forked child cannot take from the front — cgroups, namespaces,
/// privileges, security label — that differs between the front (`peer`) and this process.
fn differs_from_self(peer: i32) -> Option<String> {
    let read = |pid: &str, what: &str| std::fs::read(format!("/proc/{pid}/{what}")).ok();
    let peer_dir = peer.to_string();
    if read(&peer_dir, "cgroup") != read("self", "cgroup") {
        return Some("cgroup".to_owned());
    }
    for ns in ["mnt", "net", "pid", "ipc", "uts", "user", "cgroup"] {
        let link = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).ok();
        if link(&peer_dir) != link("self") {
            return Some(format!("{ns} namespace"));
        }
    }
    if read(&peer_dir, "attr/current") != read("self", "attr/current") {
        return Some("security label".to_owned());
    }
    let privileges = |pid: &str| {
        let status = String::from_utf8(read(pid, "status")?).ok()?;
        Some(
            status
                .lines()
                .filter(|l| {
                    ["Cap", "NoNewPrivs:", "Seccomp:", "Uid:", "Gid:", "Groups:"]
                        .iter()
                        .any(|p| l.starts_with(p))
                })
                .map(str::to_owned)
                .collect::<Vec<_>>(),
        )
    };
    if privileges(&peer_dir) != privileges("self") {
        return Some("privileges".to_owned());
    }
    None
}

/// Reads the front's stdin, stdout and stderr and its request; `None` if it sent anything
/// else.
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
    // Only `start` is run this way; anything else is the core's to answer, exec'd.
    let invocation = wasmcell_shim_front::ShimInvocation::parse(request.args.get(1..)?)?;
    (invocation.action.as_deref() == Some("start")).then_some((streams, request))
}

/// In the forked child: become what an exec of the core by the front would have been, run
/// `start`, reply with its exit code.
fn run_start(
    mut connection: UnixStream,
    streams: [OwnedFd; 3],
    request: StartRequest,
    peer: i32,
) -> ! {
    // First, before anything is done for it: the front fails rather than retries from here on.
    if connection.write_all(&[ACCEPTED]).is_err() {
        std::process::exit(1);
    }
    let (code, connection) = match take_the_fronts_place(connection, streams, &request, peer) {
        Ok(connection) => (
            crate::bootstrap::act_if_asked(&request.args, false).unwrap_or(1),
            Some(connection),
        ),
        Err(e) => {
            // stderr is the front's (containerd's log of the start) once it was taken over.
            eprintln!(
                "{}: taking the front's place for start: {e}",
                crate::shim::RUNTIME_ID
            );
            (1, None)
        }
    };
    if let Some(mut connection) = connection {
        let _ = connection.write_all(&code.to_le_bytes());
    }
    std::process::exit(code)
}

/// Takes the front's fds, limits, OOM score, umask, working directory, environment and command
/// line; the connection, moved to fd 3. On an error the connection is closed (the front then
/// fails this `start`: what was already changed cannot be told apart from a half-run one).
fn take_the_fronts_place(
    connection: UnixStream,
    streams: [OwnedFd; 3],
    request: &StartRequest,
    peer: i32,
) -> std::io::Result<UnixStream> {
    // SAFETY: restoring the default disposition installs no handler.
    #[allow(unsafe_code)]
    unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGCHLD,
            nix::sys::signal::SigHandler::SigDfl,
        )?;
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
    // Keep the connection (for the reply) at fd 3 and close everything else of the starter's.
    let raw = connection.into_raw_fd();
    // SAFETY: dup2 onto fd 3 replaces whatever fd 3 was — the listener, the lock or a received
    // fd, none of which this child uses (the lock's flock belongs to the open file, which the
    // starter keeps); the original fd is closed just below, and only fd 3 is used from here.
    #[allow(unsafe_code)]
    if raw != 3 && unsafe { libc::dup2(raw, 3) } != 3 {
        return Err(std::io::Error::last_os_error());
    }
    crate::forked::close_from(4)?;
    // SAFETY: fd 3 is the connection (just duplicated there) and nothing else owns it.
    #[allow(unsafe_code)]
    let connection = unsafe { UnixStream::from_raw_fd(3) };
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
    Ok(connection)
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
