//! Starting a guest process — forked by the [`crate::zygote`], or else a fresh exec of this
//! binary in guest mode — with the container's stdio, network and PID namespaces and cgroup,
//! and the setup handshake described in [`crate::guest`]. The rest of the confinement the
//! guest applies to itself ([`crate::confine`]). With the zygote, all of it runs on the shim's
//! async runtime and the shim starts no thread for it.

use std::fs::File;
use std::io::Write;

use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use tokio::io::AsyncBufReadExt;

use log::{debug, warn};
use nix::fcntl::OFlag;

use crate::cgroup::ContainerCgroup;
use crate::confine::NsAction;
use crate::confine::namespaces::PidNamespaceForChildren;
use crate::guest::{CONTROL_CONTINUE, CONTROL_FD, GUEST_ARG, STATUS_FD, join_message};
use crate::plan::NetworkMode;
use crate::stdio::GuestStdio;
use crate::zygote::{GuestFds, Zygote, ZygoteError};

/// Why a guest process could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// An OS call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The guest reported a setup failure (bad program, compile error…).
    #[error("{0}")]
    Setup(String),
    /// The guest died before reporting.
    #[error("the guest process exited during setup")]
    DiedDuringSetup,
    /// The spawner thread is gone (it only ends with the shim).
    #[error("the shim's guest spawner thread has stopped")]
    SpawnerGone,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SpawnError {
    let what = what.into();
    move |source| SpawnError::Io { what, source }
}

fn nix_io(what: &str) -> impl FnOnce(nix::Error) -> SpawnError + '_ {
    move |e| SpawnError::Io {
        what: what.to_owned(),
        source: std::io::Error::from(e),
    }
}

/// The one long-lived thread that execs guests when there is no [`crate::zygote`]. A
/// parent-death signal is tied to the thread that forked the child, and blocking-pool threads
/// exit when idle, so forking from them would kill guests at random; forking from one thread
/// that lives as long as the shim kills them exactly when the shim dies. It starts with the
/// first exec: a guest from the zygote has the shim's main thread as its parent, which lives
/// as long, and is asked for on the async runtime ([`launch_by_zygote`]), so a shim whose
/// launcher works never starts this thread. Only the fork runs here.
#[derive(Debug, Default)]
pub struct Spawner {
    jobs: std::sync::Mutex<Option<std::sync::mpsc::Sender<Job>>>,
}

type Job = Box<dyn FnOnce() + Send>;

impl Spawner {
    /// Runs `fork` on the spawner thread (started now if it is not running) and returns its
    /// result.
    pub async fn run<R: Send + 'static>(
        &self,
        fork: impl FnOnce() -> Result<R, SpawnError> + Send + 'static,
    ) -> Result<R, SpawnError> {
        let (reply, result) = tokio::sync::oneshot::channel();
        self.sender()?
            .send(Box::new(move || {
                let _ = reply.send(fork());
            }))
            .map_err(|_| SpawnError::SpawnerGone)?;
        result.await.map_err(|_| SpawnError::SpawnerGone)?
    }

    fn sender(&self) -> Result<std::sync::mpsc::Sender<Job>, SpawnError> {
        let mut jobs = self.jobs.lock().map_err(|_| SpawnError::SpawnerGone)?;
        if let Some(sender) = jobs.as_ref() {
            return Ok(sender.clone());
        }
        let (sender, queue) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("guest-spawner".into())
            .spawn(move || {
                for job in queue {
                    job();
                }
            })
            .map_err(io("starting the guest spawner thread"))?;
        *jobs = Some(sender.clone());
        Ok(sender)
    }
}

/// A guest that finished setup and waits for `start`.
#[derive(Debug)]
pub struct PreparedGuest {
    /// Its pid.
    pub pid: u32,
    /// How the program was loaded (`Compiled`, `CacheHit`, …) for the log.
    pub load_outcome: String,
    /// What the guest asks the shim to warn about (a degraded compile cache).
    pub warnings: Vec<String>,
    /// The wasm copy to compile to optimized code in the background: the guest runs baseline
    /// code ([`crate::compiler::optimize_in_background`]).
    pub optimize: Option<std::path::PathBuf>,
    control: File,
}

impl PreparedGuest {
    /// Lets the guest run.
    pub fn start(mut self) -> std::io::Result<()> {
        self.control.write_all(b"s")
    }
}

/// What asking the zygote for a guest came to.
#[derive(Debug)]
pub enum Launched {
    /// The guest exists.
    Forked(ForkedGuest),
    /// The zygote is gone: the guest is to be exec'd ([`fork_exec_guest`]), with this stdio.
    NeedsExec(GuestStdio),
}

/// Has `zygote` fork the guest for `plan_path`; the guest's setup handshake is
/// [`ForkedGuest::prepare`]. Takes as long as the zygote's fork: call it on the runtime.
pub fn launch_by_zygote(
    zygote: &Zygote,
    exe: &Path,
    plan_path: &Path,
    stdio: GuestStdio,
    network: &NetworkMode,
    pid_namespace: &NsAction,
) -> Result<Launched, SpawnError> {
    let (control_read, control_write) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(nix_io("pipe"))?;
    let (status_read, status_write) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(nix_io("pipe"))?;
    let fds = GuestFds {
        control: control_read,
        status: status_write,
        stdio: [
            duplicate(stdio.stdin.as_ref())?,
            duplicate(stdio.stdout.as_ref())?,
            duplicate(stdio.stderr.as_ref())?,
        ],
    };
    match zygote.launch(exe, plan_path, network, pid_namespace, fds) {
        Ok(pid) => Ok(Launched::Forked(ForkedGuest {
            pid,
            control: File::from(control_write),
            status: status_read,
        })),
        Err(ZygoteError::Refused(message)) => Err(SpawnError::Setup(message)),
        Err(ZygoteError::Gone) => Ok(Launched::NeedsExec(stdio)),
        Err(e @ ZygoteError::Declined(_)) => {
            debug!("{e}; exec'ing it");
            Ok(Launched::NeedsExec(stdio))
        }
        Err(e) => {
            warn!("{e}; starting guests by exec from now on");
            Ok(Launched::NeedsExec(stdio))
        }
    }
}

/// Forks and execs this binary as the guest for `plan_path`. Runs on the [`Spawner`] thread;
/// the guest's setup handshake is [`ForkedGuest::prepare`].
pub fn fork_exec_guest(
    exe: &Path,
    plan_path: &Path,
    stdio: GuestStdio,
    network: &NetworkMode,
    pid_namespace: &NsAction,
) -> Result<ForkedGuest, SpawnError> {
    let (control_read, control_write) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(nix_io("pipe"))?;
    let (status_read, status_write) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(nix_io("pipe"))?;
    let netns: Option<OwnedFd> = match network {
        NetworkMode::Join(path) => Some(
            File::open(path)
                .map_err(io(format!("opening network namespace {}", path.display())))?
                .into(),
        ),
        _ => None,
    };
    // An exec'd guest holds no starter's namespace: `Empty` is a new one too.
    let new_netns = matches!(network, NetworkMode::Private | NetworkMode::Empty);

    let to_stdio = |f: Option<File>| f.map_or_else(Stdio::null, Stdio::from);
    let mut command = Command::new(exe);
    command
        .arg(GUEST_ARG)
        .arg(plan_path)
        .env_clear()
        .current_dir("/")
        .stdin(to_stdio(stdio.stdin))
        .stdout(to_stdio(stdio.stdout))
        .stderr(to_stdio(stdio.stderr));
    let (control_fd, status_fd) = (control_read.as_raw_fd(), status_write.as_raw_fd());
    let netns_fd = netns.as_ref().map(AsRawFd::as_raw_fd);
    // SAFETY: the closure runs in the forked child before exec and only makes async-signal-safe
    // system calls (fcntl, dup2, setns, unshare) on fds that are open in the parent and stay
    // open until spawn returns; it allocates nothing and takes no locks.
    #[allow(unsafe_code)]
    unsafe {
        command.pre_exec(move || {
            let check = |r: libc::c_int| {
                if r < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(r)
                }
            };
            // Move both ends above the target numbers first so neither dup2 clobbers the other;
            // dup2 clears close-on-exec on the targets.
            let control_high = check(libc::fcntl(control_fd, libc::F_DUPFD, 10))?;
            let status_high = check(libc::fcntl(status_fd, libc::F_DUPFD, 10))?;
            check(libc::dup2(control_high, CONTROL_FD))?;
            check(libc::dup2(status_high, STATUS_FD))?;
            // The guest dies with the shim: a shim killed by SIGKILL (or the OOM killer)
            // takes the spawner thread with it, and the kernel then kills its guests.
            check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0))?;
            if let Some(fd) = netns_fd {
                check(libc::setns(fd, libc::CLONE_NEWNET))?;
            } else if new_netns {
                check(libc::unshare(libc::CLONE_NEWNET))?;
            }
            Ok(())
        });
    }
    let child = {
        // Only a new process can be in a PID namespace: fork it there (restored on drop).
        let _pid_namespace = PidNamespaceForChildren::enter(pid_namespace)
            .map_err(io("preparing the guest's PID namespace"))?;
        command.spawn().map_err(io("starting the guest process"))?
    };
    let pid = child.id();
    // The reaper owns exit statuses; the Child handle is only dropped.
    drop(child);
    drop(control_read);
    drop(status_write);
    Ok(ForkedGuest {
        pid,
        control: File::from(control_write),
        status: status_read,
    })
}

fn duplicate(file: Option<&File>) -> Result<Option<OwnedFd>, SpawnError> {
    file.map(|f| f.try_clone().map(OwnedFd::from))
        .transpose()
        .map_err(io("duplicating the guest's stdio"))
}

/// A guest process that exists but has not been released into its setup yet.
#[derive(Debug)]
pub struct ForkedGuest {
    pid: u32,
    control: File,
    status: OwnedFd,
}

impl ForkedGuest {
    /// Places the guest in `cgroup`, lets it load and confine itself, and waits (without
    /// blocking the runtime) for its report, for as long as a compile takes.
    pub async fn prepare(
        self,
        cgroup: Option<&ContainerCgroup>,
    ) -> Result<PreparedGuest, SpawnError> {
        let ForkedGuest {
            pid,
            mut control,
            status,
        } = self;
        let abort = |e: SpawnError| {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            e
        };
        // On cgroup v1 the guest joins by itself, which costs the kernel no RCU grace period
        // (the shim's write of its pid would wait for one, blocking this runtime's thread).
        let message = match cgroup {
            Some(cgroup) => match cgroup.self_join_files().and_then(|f| join_message(&f)) {
                Some(join) => join,
                None => {
                    cgroup
                        .add(pid)
                        .map_err(|e| abort(SpawnError::Setup(e.to_string())))?;
                    vec![CONTROL_CONTINUE]
                }
            },
            None => vec![CONTROL_CONTINUE],
        };
        // Into an empty pipe, at most PIPE_BUF bytes: one write that never blocks.
        control.write_all(&message).map_err(|e| {
            abort(SpawnError::Io {
                what: "signalling the guest".into(),
                source: e,
            })
        })?;
        let report = read_report(status).await.map_err(abort)?;
        Ok(PreparedGuest {
            pid,
            load_outcome: report.outcome,
            warnings: report.warnings,
            optimize: report.optimize,
            control,
        })
    }
}

/// What a guest reported at the end of its setup.
struct SetupReport {
    outcome: String,
    warnings: Vec<String>,
    optimize: Option<std::path::PathBuf>,
}

/// Reads the guest's setup report from its status pipe: `warn`/`optimize` lines, then `ok` or
/// `error`; EOF first means it died.
async fn read_report(status: OwnedFd) -> Result<SetupReport, SpawnError> {
    let reading = |e: std::io::Error| SpawnError::Io {
        what: "reading the guest's status".into(),
        source: e,
    };
    let status = tokio::net::unix::pipe::Receiver::from_owned_fd(status).map_err(reading)?;
    let mut status = tokio::io::BufReader::new(status);
    let mut warnings = Vec::new();
    let mut optimize = None;
    let mut line = String::new();
    loop {
        line.clear();
        status.read_line(&mut line).await.map_err(reading)?;
        let text = line.trim_end();
        if let Some(warning) = text.strip_prefix("warn ") {
            warnings.push(warning.to_owned());
        } else if let Some(copy) = text.strip_prefix("optimize ") {
            optimize = Some(copy.into());
        } else {
            break;
        }
    }
    let line = line.trim_end();
    if let Some(outcome) = line.strip_prefix("ok ") {
        Ok(SetupReport {
            outcome: outcome.to_owned(),
            warnings,
            optimize,
        })
    } else if let Some(message) = line.strip_prefix("error ") {
        Err(SpawnError::Setup(message.to_owned()))
    } else {
        Err(SpawnError::DiedDuringSetup)
    }
}
