//! The guest launcher ("zygote"): a single-threaded copy of the shim server, forked before the
//! server's async runtime exists, that forks every guest on the server's behalf.
//!
//! Why: a guest used to be a fresh exec of this binary, and on a VM an exec with the dynamic
//! loader's start-up costs more CPU than everything else a short guest does but its run. A fork
//! of a small process that has already been loaded costs a tenth of that. Forking guests from
//! the server itself is not an option: it is multi-threaded, and a fork of a multi-threaded
//! process may inherit locks held by threads that do not exist in the child. The zygote has
//! only ever had one thread, so what runs in its children (wasmtime included) starts from a
//! consistent state — the same invariant the exec gave.
//!
//! Protocol, over a `SOCK_SEQPACKET` pair: the server sends one [`LaunchRequest`] (JSON) with
//! the guest's control and status pipe ends and its stdio as `SCM_RIGHTS`; the zygote answers
//! `pid N` or `error MESSAGE`. One request at a time: the server asks from its runtime, under
//! a lock on the socket, and waits for the answer. Each guest is cloned with `CLONE_PARENT`, so
//! it is the *server's* child: the server's reaper sees its exit and its parent-death signal
//! follows the server, exactly as for an exec'd guest. What the exec'd guest got from
//! `Command` (fds 0–4 and nothing else, an empty
//! environment, `/` as working directory, its network namespace, a `__wasmcell-guest PLAN`
//! command line) the child sets up itself before it enters [`crate::guest::main`]; a failure
//! there is reported on the status pipe as the guest's setup error.
//!
//! A lone container's server (outside any pod, under the default grouping: it will start one
//! guest, ever) forks a launcher that *becomes* that guest instead of cloning it: forked already
//! in a new PID namespace (the one the spec asks for, almost always), it answers `self`, sets
//! itself up as a cloned guest would and runs as the guest — one process fewer to fork, fault in
//! and tear down per container. A spec asking for the host's PID namespace or another's is
//! declined (`decline REASON`) and that guest is exec'd.
//!
//! When the zygote cannot be forked or has died, or [`GUEST_START_ENV`] says `exec`, the server
//! execs guests.

use std::ffi::OsString;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use nix::sys::socket::{
    AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg,
    sendmsg, socketpair,
};
use serde::{Deserialize, Serialize};

use crate::confine::NsAction;
use crate::confine::namespaces::PidNamespaceForChildren;
use crate::forked::{close_from, set_command_line};
use crate::guest::{CONTROL_FD, EXIT_SETUP, GUEST_ARG, STATUS_FD};
use crate::plan::NetworkMode;

/// `exec` in containerd's environment: no zygote, every guest is a fresh exec (for comparing
/// the two, or should a kernel refuse `CLONE_PARENT`); `launcher`: a lone container's launcher
/// clones its guest as any other does instead of becoming it (for comparing those two).
pub const GUEST_START_ENV: &str = "WASMCELL_GUEST_START";

/// The zygote's own command line marker, so `ps` tells it from the server.
pub const ZYGOTE_ARG: &str = "__wasmcell-zygote";

/// A lone container's launcher's answer when it becomes the guest.
const SELF_ANSWER: &str = "self";

/// Largest request the zygote accepts (a plan path and two namespace paths).
const MAX_REQUEST: usize = 64 * 1024;
/// fds that travel with a request: control, status, stdin, stdout, stderr.
const MAX_FDS: usize = 5;

/// Why the zygote could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ZygoteError {
    /// An OS call failed.
    #[error("{what}: {source}")]
    Os {
        /// What was being done.
        what: &'static str,
        /// The error.
        #[source]
        source: nix::Error,
    },
    /// The zygote is gone or answered nonsense: the caller falls back to exec.
    #[error("the guest launcher is unavailable: {0}")]
    Unavailable(String),
    /// The zygote was found unavailable before (the fallback was logged then).
    #[error("the guest launcher exited earlier")]
    Gone,
    /// The zygote could not fork the guest (it is still usable).
    #[error("{0}")]
    Refused(String),
    /// A lone container's launcher cannot become this guest (it has left): exec it instead.
    #[error("the guest launcher cannot become this guest: {0}")]
    Declined(String),
}

/// What the server asks for: one guest.
#[derive(Debug, Serialize, Deserialize)]
struct LaunchRequest {
    /// This binary, for the guest's command line.
    exe: PathBuf,
    /// The guest's plan.
    plan: PathBuf,
    network: NetworkMode,
    pid_namespace: NsAction,
    /// Which of stdin, stdout, stderr travel as fds (after control and status); the others are
    /// `/dev/null`.
    stdio: [bool; 3],
}

impl LaunchRequest {
    /// How many fds travel with the request: control, status and the stdio that is not
    /// `/dev/null`.
    fn expected_fds(&self) -> usize {
        2 + self.stdio.iter().filter(|&&s| s).count()
    }
}

/// The fds a guest starts with.
pub struct GuestFds {
    /// The read end of the control pipe (becomes fd 3).
    pub control: OwnedFd,
    /// The write end of the status pipe (becomes fd 4).
    pub status: OwnedFd,
    /// stdin, stdout, stderr (`None` = `/dev/null`).
    pub stdio: [Option<OwnedFd>; 3],
}

/// The server's end of the zygote.
#[derive(Debug)]
pub struct Zygote {
    socket: Mutex<Option<OwnedFd>>,
    /// A lone container's launcher, which becomes its guest: its pid (ours, not its own view).
    becomes_the_guest: Option<u32>,
}

/// What the zygote does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Clones a guest per request, in the requested namespaces.
    Launcher,
    /// Becomes the one guest asked for, if it is to be in a new PID namespace (as this process
    /// already is).
    BecomesTheGuest,
}

impl Zygote {
    /// Forks the zygote. Call only while this process has a single thread (from `main`, before
    /// any runtime or thread exists): the child carries on with whatever state the fork caught.
    /// `server_args` is the server's command line, from which the zygote's own is made.
    pub fn fork(server_args: Vec<OsString>) -> Result<Zygote, ZygoteError> {
        let (server_end, zygote_end) = launcher_socket()?;
        let server = nix::unistd::getpid();
        // SAFETY: the caller guarantees this process is single-threaded, so the child owns a
        // consistent copy of every lock and allocator state; it never returns from `serve`.
        #[allow(unsafe_code)]
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => {
                drop(server_end);
                serve(zygote_end, Some(server), server_args, Role::Launcher)
            }
            Ok(nix::unistd::ForkResult::Parent { .. }) => Ok(Zygote {
                socket: Mutex::new(Some(server_end)),
                becomes_the_guest: None,
            }),
            Err(source) => Err(ZygoteError::Os {
                what: "forking the guest launcher",
                source,
            }),
        }
    }

    /// Forks, in a new PID namespace, a launcher that becomes the one guest of a lone container's
    /// server (see the module docs). Call only while this process has a single thread, as for
    /// [`Zygote::fork`]; fails where this process may not make a PID namespace.
    pub fn fork_to_become_the_guest(server_args: Vec<OsString>) -> Result<Zygote, ZygoteError> {
        let (server_end, zygote_end) = launcher_socket()?;
        let flags = (libc::CLONE_NEWPID | libc::SIGCHLD) as libc::c_ulong;
        // SAFETY: as in `launch`: a clone without CLONE_VM and without a new stack is a fork of
        // this single-threaded process (the caller guarantees it), so the child owns a
        // consistent copy of every lock and allocator state; it never returns from `serve`.
        #[allow(unsafe_code)]
        let pid = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
        if pid < 0 {
            return Err(ZygoteError::Os {
                what: "forking the guest launcher in a new PID namespace",
                source: nix::errno::Errno::last(),
            });
        }
        if pid == 0 {
            drop(server_end);
            // Its parent is outside its PID namespace (getppid says 0): a server that died
            // before the parent-death signal was armed shows as EOF on the socket instead.
            serve(zygote_end, None, server_args, Role::BecomesTheGuest)
        }
        Ok(Zygote {
            socket: Mutex::new(Some(server_end)),
            becomes_the_guest: u32::try_from(pid).ok(),
        })
    }

    /// Whether this is a lone container's launcher, which becomes the guest it is asked for.
    pub fn becomes_the_guest(&self) -> bool {
        self.becomes_the_guest.is_some()
    }

    /// Lets the zygote go once the server will start no other guest: a container outside any
    /// pod has a server of its own ([`crate::shim::has_a_server_of_its_own`]), and a launcher
    /// kept for it would stay as long as its guest, a third process with its own copies of the
    /// pages it wrote. Closing the socket ends the zygote (it reads EOF); the server reaps it.
    /// A launch after this finds it gone and the guest is exec'd.
    pub fn retire(&self) {
        if let Ok(mut socket) = self.socket.lock() {
            socket.take();
        }
    }

    /// Has the zygote fork a guest; returns its pid (a child of this process).
    pub fn launch(
        &self,
        exe: &Path,
        plan: &Path,
        network: &NetworkMode,
        pid_namespace: &NsAction,
        fds: GuestFds,
    ) -> Result<u32, ZygoteError> {
        let mut socket = self
            .socket
            .lock()
            .map_err(|_| ZygoteError::Unavailable("its lock is poisoned".into()))?;
        let Some(fd) = socket.as_ref().map(AsRawFd::as_raw_fd) else {
            return Err(ZygoteError::Gone);
        };
        let request = LaunchRequest {
            exe: exe.to_owned(),
            plan: plan.to_owned(),
            network: network.clone(),
            pid_namespace: pid_namespace.clone(),
            stdio: [0, 1, 2].map(|i| fds.stdio[i].is_some()),
        };
        let body = serde_json::to_vec(&request)
            .map_err(|e| ZygoteError::Unavailable(format!("encoding the request: {e}")))?;
        let mut raw = vec![fds.control.as_raw_fd(), fds.status.as_raw_fd()];
        raw.extend(fds.stdio.iter().flatten().map(AsRawFd::as_raw_fd));
        let sent = sendmsg::<()>(
            fd,
            &[IoSlice::new(&body)],
            &[ControlMessage::ScmRights(&raw)],
            MsgFlags::MSG_NOSIGNAL,
            None,
        );
        // Our copies close here; the zygote holds its own until the guest has them.
        drop(fds);
        let answer = sent.and_then(|_| {
            let mut buf = [0u8; 4096];
            let mut iov = [IoSliceMut::new(&mut buf)];
            let n = recvmsg::<()>(fd, &mut iov, None, MsgFlags::empty())?.bytes;
            Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
        });
        let answer = match answer {
            Ok(answer) if !answer.is_empty() => answer,
            Ok(_) => {
                *socket = None;
                return Err(ZygoteError::Unavailable("it exited".into()));
            }
            Err(e) => {
                *socket = None;
                return Err(ZygoteError::Unavailable(e.to_string()));
            }
        };
        if let Some(pid) = answer.strip_prefix("pid ") {
            return pid
                .parse()
                .map_err(|_| ZygoteError::Unavailable(format!("it answered {answer:?}")));
        }
        if self.becomes_the_guest.is_some() {
            // One request is all it takes: it is the guest now, or gone.
            *socket = None;
        }
        if answer == SELF_ANSWER {
            return self
                .becomes_the_guest
                .ok_or_else(|| ZygoteError::Unavailable(format!("it answered {answer:?}")));
        }
        if let Some(reason) = answer.strip_prefix("decline ") {
            return Err(ZygoteError::Declined(reason.to_owned()));
        }
        Err(ZygoteError::Refused(
            answer.strip_prefix("error ").unwrap_or(&answer).to_owned(),
        ))
    }
}

/// The server's and the launcher's ends of the socket they talk over.
fn launcher_socket() -> Result<(OwnedFd, OwnedFd), ZygoteError> {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|source| ZygoteError::Os {
        what: "creating the guest launcher's socket",
        source,
    })
}

/// The zygote's life: answer requests until the server's end closes. `server` is the
/// server's pid when it is visible from here (not across a PID namespace).
fn serve(
    socket: OwnedFd,
    server: Option<nix::unistd::Pid>,
    server_args: Vec<OsString>,
    role: Role,
) -> ! {
    // The zygote dies with the server (its main thread, which forked us, lives as long as it).
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes plain integers and touches no memory.
    #[allow(unsafe_code)]
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
    }
    if server.is_some_and(|server| nix::unistd::getppid() != server) {
        std::process::exit(0);
    }
    let title = zygote_title(server_args);
    detach_from_server(&socket);
    set_command_line(&title);
    // Already done in a server forked by the starter (or by `start`); an exec'd server has
    // not, and every guest inherits what this process knows.
    wasmcell_engine::detect_cpu_features();
    let mut body = vec![0u8; MAX_REQUEST];
    loop {
        let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
        let mut iov = [IoSliceMut::new(&mut body)];
        let (n, fds) = match recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => {
                let mut fds = Vec::new();
                if let Ok(cmsgs) = msg.cmsgs() {
                    for c in cmsgs {
                        if let ControlMessageOwned::ScmRights(received) = c {
                            // SAFETY: SCM_RIGHTS installed these fds in this process just now
                            // and nothing else refers to them.
                            #[allow(unsafe_code)]
                            fds.extend(
                                received
                                    .into_iter()
                                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                            );
                        }
                    }
                }
                (msg.bytes, fds)
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => std::process::exit(0),
        };
        if n == 0 {
            std::process::exit(0); // the server closed its end
        }
        let request = serde_json::from_slice::<LaunchRequest>(&body[..n]);
        if role == Role::BecomesTheGuest {
            become_the_requested_guest(&socket, request, fds);
        }
        let answer = match request {
            Ok(request) => launch(&request, fds),
            Err(e) => Err(format!("bad launch request: {e}")),
        };
        let answer = match answer {
            Ok(pid) => format!("pid {pid}"),
            Err(message) => format!("error {message}"),
        };
        if nix::sys::socket::send(
            socket.as_raw_fd(),
            answer.as_bytes(),
            MsgFlags::MSG_NOSIGNAL,
        )
        .is_err()
        {
            std::process::exit(0);
        }
    }
}

/// A lone container's launcher: becomes the guest `request` asks for, or declines and leaves.
fn become_the_requested_guest(
    socket: &OwnedFd,
    request: Result<LaunchRequest, serde_json::Error>,
    fds: Vec<OwnedFd>,
) -> ! {
    let answer = match &request {
        Ok(request) if request.pid_namespace != NsAction::New => {
            "decline its PID namespace is not a new one".to_owned()
        }
        Ok(request) if fds.len() != request.expected_fds() => format!(
            "decline the request came with {} fds, expected {}",
            fds.len(),
            request.expected_fds()
        ),
        Ok(_) => SELF_ANSWER.to_owned(),
        Err(e) => format!("error bad launch request: {e}"),
    };
    let sent = nix::sys::socket::send(
        socket.as_raw_fd(),
        answer.as_bytes(),
        MsgFlags::MSG_NOSIGNAL,
    );
    match request {
        Ok(request) if answer == SELF_ANSWER && sent.is_ok() => become_guest(&request, fds),
        _ => std::process::exit(0),
    }
}

/// The zygote's command line: the server's with `__wasmcell-zygote` after the program and
/// without `-socket ADDRESS`, so it fits where the server's arguments were and stays a list of
/// arguments (namespace, id and containerd's address still say whose it is).
fn zygote_title(args: Vec<OsString>) -> Vec<OsString> {
    let mut args = args.into_iter();
    let mut title: Vec<OsString> = args.next().into_iter().collect();
    title.push(ZYGOTE_ARG.into());
    while let Some(arg) = args.next() {
        if arg == "-socket" {
            args.next();
        } else {
            title.push(arg);
        }
    }
    title
}

/// Gives the zygote what an exec'd guest gets from `Command`: `/dev/null` for stdio (the
/// server's stdout is `start`'s pipe until it is serving, and `start` waits for its EOF), no
/// other fd of the server's, an empty environment, `/` as working directory.
fn detach_from_server(socket: &OwnedFd) {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for target in 0..3 {
            // SAFETY: dup2 onto the standard fds, which only this thread uses.
            #[allow(unsafe_code)]
            unsafe {
                libc::dup2(null.as_raw_fd(), target);
            }
        }
    }
    // Everything of the server's but the socket (and the preloaded programs' files).
    let _ = crate::forked::close_from_but(3, &[socket.as_raw_fd()]);
    let names: Vec<OsString> = std::env::vars_os().map(|(k, _)| k).collect();
    for name in names {
        // SAFETY: this process has a single thread, so nothing reads the environment while it
        // changes.
        #[allow(unsafe_code)]
        unsafe {
            std::env::remove_var(name);
        }
    }
    let _ = std::env::set_current_dir("/");
}

/// Forks one guest; in the child, never returns.
fn launch(request: &LaunchRequest, fds: Vec<OwnedFd>) -> Result<i32, String> {
    let expected = request.expected_fds();
    if fds.len() != expected {
        return Err(format!(
            "launch request came with {} fds, expected {expected}",
            fds.len()
        ));
    }
    // Only a new process can be in a PID namespace: clone it there (restored on drop).
    let _pid_namespace = PidNamespaceForChildren::enter(&request.pid_namespace)
        .map_err(|e| format!("preparing the guest's PID namespace: {e}"))?;
    // CLONE_PARENT makes the guest the server's child (see the module docs).
    let flags = (libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_ulong;
    // SAFETY: a clone without CLONE_VM and without a new stack is a fork: the child continues
    // below on a copy of this single-threaded process's memory, so no lock is held by a thread
    // it lacks. It skips glibc's fork bookkeeping: no atfork handlers are registered here, and
    // the thread id glibc caches for the main thread is not used to signal or lock the calling
    // thread (raise() asks the kernel; Rust's locks are futexes keyed by address).
    #[allow(unsafe_code)]
    let pid = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    if pid < 0 {
        return Err(format!(
            "forking the guest: {}",
            std::io::Error::last_os_error()
        ));
    }
    if pid == 0 {
        become_guest(request, fds);
    }
    Ok(pid as i32)
}

/// In the new child: set up like an exec'd guest, then run as one.
fn become_guest(request: &LaunchRequest, fds: Vec<OwnedFd>) -> ! {
    // A copy of the status pipe that survives the fd shuffle, for reporting a failure in it;
    // `close_from` closes it on success.
    // SAFETY: F_DUPFD_CLOEXEC on an fd this process owns; the copy is a plain number that only
    // this function uses.
    #[allow(unsafe_code)]
    let status_copy = fds.get(1).map_or(-1, |fd| unsafe {
        libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 64)
    });
    if let Err(e) = set_up_child(request, fds) {
        let message = format!("error starting the guest process: {e}\n");
        // SAFETY: write(2) of a buffer we own to an fd we own (or -1: EBADF, harmless).
        #[allow(unsafe_code)]
        unsafe {
            libc::write(status_copy, message.as_ptr().cast(), message.len());
        }
        std::process::exit(EXIT_SETUP);
    }
    set_command_line(&[
        request.exe.clone().into_os_string(),
        GUEST_ARG.into(),
        request.plan.clone().into_os_string(),
    ]);
    crate::guest::exit(crate::guest::main(&request.plan));
}

/// Puts the received fds at 0–4, closes every other one (the caller's copy of the status pipe
/// among them, so it stays open only when this fails) and enters the guest's network namespace.
fn set_up_child(request: &LaunchRequest, fds: Vec<OwnedFd>) -> std::io::Result<()> {
    let check = |r: libc::c_int| {
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(r)
        }
    };
    // The guest dies with the server, whose main thread (its parent through CLONE_PARENT) lives
    // as long as it does. Should the server die before this line, the guest finds its control
    // pipe closed and exits at its first read.
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes plain integers and touches no memory.
    #[allow(unsafe_code)]
    check(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) })?;
    match &request.network {
        NetworkMode::Join(path) => crate::confine::namespaces::join_for_launch(
            path,
            nix::sched::CloneFlags::CLONE_NEWNET,
            "network",
        )?,
        NetworkMode::Private => nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?,
        NetworkMode::Empty => crate::empty_network::enter_at_launch()?,
        NetworkMode::Host => {}
    }
    crate::empty_network::close_inherited();
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    let mut received = fds.into_iter();
    let mut sources: Vec<(OwnedFd, RawFd)> = Vec::new();
    for target in [CONTROL_FD, STATUS_FD] {
        if let Some(fd) = received.next() {
            sources.push((fd, target));
        }
    }
    for (target, present) in request.stdio.iter().enumerate() {
        let fd = match present.then(|| received.next()).flatten() {
            Some(fd) => fd,
            None => null.try_clone()?.into(),
        };
        sources.push((fd, target as RawFd));
    }
    // Copy every source above the targets, then close the originals, so no dup2 lands on a
    // source still to come and no close hits a target already in place.
    let mut high = Vec::new();
    for (fd, target) in &sources {
        // SAFETY: F_DUPFD_CLOEXEC on an fd this process owns; the copy is closed by
        // `close_from` below.
        #[allow(unsafe_code)]
        high.push((
            check(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) })?,
            *target,
        ));
    }
    drop(sources);
    drop(null);
    for (fd, target) in high {
        // SAFETY: dup2 of an fd this process owns onto a standard or handshake fd number,
        // where the exec'd guest had the same thing; nothing else owns the target.
        #[allow(unsafe_code)]
        check(unsafe { libc::dup2(fd, target) })?;
    }
    close_from(STATUS_FD + 1)?;
    crate::spare::renew_runtime_fds()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_zygote_title_names_itself_and_drops_the_socket() {
        let args = [
            "/bin/shim",
            "-namespace",
            "ns",
            "-id",
            "c1",
            "-socket",
            "unix:///s",
            "-debug",
        ];
        let title = zygote_title(args.iter().map(OsString::from).collect());
        assert_eq!(
            title,
            [
                "/bin/shim",
                ZYGOTE_ARG,
                "-namespace",
                "ns",
                "-id",
                "c1",
                "-debug"
            ]
            .map(OsString::from)
        );
        let joined: usize = title.iter().map(|a| a.len() + 1).sum();
        let original: usize = args.iter().map(|a| a.len() + 1).sum();
        assert!(
            joined <= original,
            "it fits where the server's arguments were"
        );
    }
}
