//! The shim's process life, in place of the `containerd-shim` crate's `run`: the `start`,
//! `delete` and serve actions containerd invokes.
//!
//! Why our own: the crate registers the task service only as `containerd.task.v3.Task` and
//! always answers `start` with task API version 3, which containerd 1.7 refuses ("unsupported
//! shim version (3)"). Here `start` answers with the address alone (version 2, which every
//! containerd since 1.5 accepts) and the service is served under both the v2 and v3 names —
//! the two APIs have the same messages — so one binary serves containerd 1.6, 1.7 and 2.x.
//! The crate still provides flag parsing, the log FIFO, the event publisher, the exit monitor
//! and the generated protocol.
//!
//! `start` runs before any runtime or thread exists and forks the server (see
//! [`fork_server`]); a server exec'd with `-socket` (by an older `start`) serves the same way.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::asynchronous::monitor::monitor_notify_by_pid;
use containerd_shim::protos::protobuf::Message;
use containerd_shim::protos::shim_async::create_task;
use containerd_shim::protos::ttrpc::r#async::Server;
use containerd_shim::protos::ttrpc::r#async::transport::Listener;
use log::{debug, warn};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::signal::unix::{SignalKind, signal};

use crate::events::EventPublisher;
use crate::group::{GROUP_ENV, Grouping, Handover, LONE_ENV, StartPlace, server_args, socket_path};
use crate::service::{Service, ServiceConfig};
use crate::shim;

const TASK_V2: &str = "containerd.task.v2.Task";
const TASK_V3: &str = "containerd.task.v3.Task";

/// Runs `start`, `delete` or `-info`, whichever containerd asked for, and returns the exit
/// code; `None` when this process is to serve. Call first thing in `main`, while this process
/// has a single thread: `start` may fork the server. None of these needs an async runtime.
pub fn act_if_asked(args: &[OsString]) -> Option<i32> {
    let flags = containerd_shim::parse(args.get(1..)?).ok()?;
    let outcome = match flags.action.as_str() {
        "start" => start(&flags),
        "delete" => delete(&flags),
        _ if flags.info => info(),
        _ => return None,
    };
    Some(match outcome {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{}: {e:#}", shim::RUNTIME_ID);
            1
        }
    })
}

/// Serves, as a server exec'd with `-socket` (`start` forks its own), then — a lone
/// container's server that served and shut down cleanly — waits as a spare and serves the next
/// group its starter hands it ([`crate::spare`]): the exit code.
pub fn run(args: &[OsString], zygote: Option<crate::zygote::Zygote>) -> i32 {
    let mut served = serve_once(args, zygote);
    while let Ok(address) = served {
        let Some(next) =
            crate::spare::wait_for_request(&address).and_then(crate::starter::serve_handed)
        else {
            return 0;
        };
        let (args, zygote) = next;
        served = serve_once(&args, zygote);
    }
    1
}

/// Serves one group on a fresh runtime; its containerd's address if all went well.
fn serve_once(args: &[OsString], zygote: Option<crate::zygote::Zygote>) -> Result<String, ()> {
    match containerd_shim::parse(args.get(1..).unwrap_or_default()) {
        Ok(flags) => match serve_on_new_runtime(&flags, zygote) {
            0 => Ok(flags.address),
            _ => Err(()),
        },
        Err(e) => {
            eprintln!("{}: parsing the shim flags: {e}", shim::RUNTIME_ID);
            Err(())
        }
    }
}

/// Serves on a fresh single-threaded runtime; the exit code.
fn serve_on_new_runtime(
    flags: &containerd_shim::Flags,
    zygote: Option<crate::zygote::Zygote>,
) -> i32 {
    crate::spare::note_fds_before_first_runtime();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("{}: cannot start the async runtime: {e}", shim::RUNTIME_ID);
            return 1;
        }
    };
    // Boxed: the server's whole future lives on the heap once rather than being moved through
    // stack frames, each move dirtying (copying, after the fork from the starter) more stack.
    match runtime.block_on(Box::pin(serve(flags, zygote))) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{}: {e:#}", shim::RUNTIME_ID);
            1
        }
    }
}

/// `delete`: containerd's cleanup after a shim is gone.
fn delete(flags: &containerd_shim::Flags) -> anyhow::Result<()> {
    let response = shim::delete_leftovers(&bundle_of(flags)?);
    std::io::stdout()
        .write_all(&response)
        .context("writing the delete response")
}

/// `-info`: the runtime's name.
fn info() -> anyhow::Result<()> {
    let info = containerd_shim::protos::types::introspection::RuntimeInfo {
        name: shim::RUNTIME_ID.to_owned(),
        ..Default::default()
    };
    std::io::stdout()
        .write_all(&info.write_to_bytes()?)
        .context("writing the runtime info")
}

/// The bundle directory: `-bundle`, or else the working directory containerd gave us.
fn bundle_of(flags: &containerd_shim::Flags) -> anyhow::Result<PathBuf> {
    if flags.bundle.is_empty() {
        std::env::current_dir().context("reading the bundle directory")
    } else {
        Ok(flags.bundle.clone().into())
    }
}

/// `start`: find or fork the shim serving this container's group and print its address.
fn start(flags: &containerd_shim::Flags) -> anyhow::Result<()> {
    let bundle = bundle_of(flags)?;
    // Legacy start passes runtime options on stdin; wasmcell has none to read yet.
    let mut ignored = Vec::new();
    let _ = std::io::stdin().take(1 << 20).read_to_end(&mut ignored);
    let grouping = Grouping::configured()?;
    let place = StartPlace::find(
        grouping,
        &bundle,
        &flags.namespace,
        &flags.id,
        &flags.address,
    )
    .with_context(|| format!("finding the shim for container {}", flags.id))?;
    if !place.served {
        let mut args: Vec<OsString> = std::env::args_os().take(1).collect();
        args.extend(server_args(
            &flags.namespace,
            &flags.id,
            &flags.address,
            &place.address,
            flags.debug,
        ));
        fork_server(&bundle, args, grouping, place.lone)?;
    }
    place
        .answer(&bundle, &mut std::io::stdout())
        .context("answering start")
}

/// Forks the server (`args` is its command line) and waits until it serves or has failed: it
/// closes its stdout, our pipe, either way.
///
/// Why a fork, not an exec of this binary: an exec costs the dynamic loader's start-up again,
/// and on a VM that is mostly `cpuid` traps (glibc probes the caches at every start); a fork of
/// this small, freshly started process costs a fraction of that.
fn fork_server(
    bundle: &Path,
    args: Vec<OsString>,
    grouping: Grouping,
    lone: bool,
) -> anyhow::Result<()> {
    let (ready_read, ready_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("creating the start pipe")?;
    // Once here, not in the server, its guest launcher and every guest separately.
    wasmcell_engine::detect_cpu_features();
    // SAFETY: `start` runs from `main` before any runtime or thread exists, so the child owns
    // a consistent copy of every lock and allocator state; it never returns from
    // `become_server`.
    #[allow(unsafe_code)]
    match unsafe { nix::unistd::fork() }.context("forking the shim server")? {
        nix::unistd::ForkResult::Child => {
            drop(ready_read);
            std::process::exit(become_server(bundle, args, grouping, lone, ready_write))
        }
        nix::unistd::ForkResult::Parent { .. } => {
            drop(ready_write);
            let mut sink = Vec::new();
            let _ = std::fs::File::from(ready_read).read_to_end(&mut sink);
            Ok(())
        }
    }
}

/// In the forked child: take what an exec'd server got from `start` — `/dev/null` as stdin and
/// stderr, the start pipe as stdout, no other fd of start's (the group's lock among them: its
/// `flock` stays with start), the bundle as working directory, the grouping (and whether the
/// container is alone in it) in the environment, the server's command line — then serve as an
/// exec'd server does.
fn become_server(
    bundle: &Path,
    args: Vec<OsString>,
    grouping: Grouping,
    lone: bool,
    ready: OwnedFd,
) -> i32 {
    let set_up = || -> anyhow::Result<containerd_shim::Flags> {
        let null = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
            .context("opening /dev/null")?;
        nix::unistd::dup2_stdin(&null).context("redirecting stdin")?;
        nix::unistd::dup2_stdout(&ready).context("redirecting stdout")?;
        nix::unistd::dup2_stderr(&null).context("redirecting stderr")?;
        drop(null);
        drop(ready);
        crate::forked::close_from(3).context("closing start's fds")?;
        std::env::set_current_dir(bundle)
            .with_context(|| format!("entering {}", bundle.display()))?;
        // SAFETY: this process has a single thread (see `fork_server`), so nothing reads the
        // environment while it changes.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var(GROUP_ENV, grouping.name());
            if lone {
                std::env::set_var(LONE_ENV, "1");
            } else {
                std::env::remove_var(LONE_ENV);
            }
        }
        crate::forked::set_command_line(&args);
        containerd_shim::parse(&args[1..]).context("parsing the server's flags")
    };
    if let Err(e) = set_up() {
        eprintln!("{}: {e:#}", shim::RUNTIME_ID);
        return 1;
    }
    let zygote = crate::launcher_if_wanted(args.clone());
    run(&args, zygote)
}

async fn socket_answers(address: &str) -> bool {
    tokio::net::UnixStream::connect(socket_path(address))
        .await
        .is_ok()
}

/// Binds the shim socket; `None` when another shim already serves it.
async fn listen(address: &str) -> anyhow::Result<Option<UnixListener>> {
    let path = socket_path(address);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    match UnixListener::bind(path) {
        Ok(listener) => Ok(Some(listener)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            if socket_answers(address).await {
                return Ok(None);
            }
            std::fs::remove_file(path)
                .with_context(|| format!("removing stale {}", path.display()))?;
            Ok(Some(
                UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?,
            ))
        }
        Err(e) => Err(e).with_context(|| format!("binding {}", path.display())),
    }
}

/// Tells `start` the server is up by closing our stdout (its pipe).
fn signal_started() {
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdout(null);
    }
}

/// The long-running server.
async fn serve(
    flags: &containerd_shim::Flags,
    zygote: Option<crate::zygote::Zygote>,
) -> anyhow::Result<()> {
    if flags.socket.is_empty() {
        bail!("no -socket given: containerd starts the server through `start`");
    }
    // Orphaned guests are re-parented to us, so the reaper below sees every exit.
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes plain integers and touches no memory.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc != 0 {
        warn!(
            "cannot become a child subreaper: {}",
            std::io::Error::last_os_error()
        );
    }
    if let Err(e) = crate::shim_log::init(flags.debug, &flags.id) {
        eprintln!(
            "{}: logging to containerd is unavailable: {e}",
            shim::RUNTIME_ID
        );
    }
    let Some(listener) = listen(&flags.socket).await? else {
        signal_started();
        return Ok(());
    };
    let ttrpc_address = std::env::var("TTRPC_ADDRESS").context("TTRPC_ADDRESS is not set")?;
    let publisher = EventPublisher::connect(&ttrpc_address)?;
    let exit = Arc::new(ExitSignal::default());
    let config = ServiceConfig {
        namespace: flags.namespace.clone(),
        address: flags.address.clone(),
        cache_dir: shim::cache_dir(),
        exe: std::env::current_exe().context("locating this binary")?,
        handover: (Grouping::from_env() == Grouping::Namespace)
            .then(|| Handover::for_address(&flags.socket)),
        zygote: zygote.map(Arc::new),
        network_pool: crate::starter::socket_if_wanted(&flags.address)
            .filter(|_| crate::network_pool::reuse_wanted())
            .map(|socket| crate::network_pool::socket_of(&socket)),
    };
    let service = Service::new(publisher, config, exit.clone()).await;
    let watching = service.clone();
    tokio::spawn(reap_children());
    tokio::spawn(crate::footprint::settle_when_idle());

    let task: Arc<dyn containerd_shim::protos::shim_async::Task + Send + Sync> = Arc::new(service);
    let mut services = create_task(task.clone());
    if let Some(v3) = create_task(task).remove(TASK_V3) {
        services.insert(TASK_V2.to_owned(), v3);
    }
    let listener = Listener::try_from(listener).context("creating the ttrpc listener")?;
    let mut server = Server::new()
        .add_listener(listener)
        .register_service(services);
    server.start().await.context("starting the ttrpc server")?;
    signal_started();
    debug!("shim serving {}", flags.socket);
    exit.wait().await;
    debug!("shim shutting down");
    let _ = server.shutdown().await;
    watching.stop_watching_exits().await;
    let _ = std::fs::remove_file(socket_path(&flags.socket));
    Ok(())
}

/// Reaps every child on SIGCHLD and reports exits (128+N for signals) to the exit monitor.
async fn reap_children() {
    let mut sigchld = match signal(SignalKind::child()) {
        Ok(s) => s,
        Err(e) => {
            warn!("cannot watch SIGCHLD: {e}");
            return;
        }
    };
    loop {
        loop {
            match waitpid(Some(Pid::from_raw(-1)), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => notify(pid.as_raw(), code).await,
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    notify(pid.as_raw(), 128 + sig as i32).await
                }
                Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => break,
                Ok(_) => {}
                Err(e) => {
                    warn!("waitpid: {e}");
                    break;
                }
            }
        }
        if sigchld.recv().await.is_none() {
            return;
        }
    }
}

async fn notify(pid: i32, code: i32) {
    debug!("child {pid} exited with {code}");
    if let Err(e) = monitor_notify_by_pid(pid, code).await {
        warn!("reporting the exit of {pid}: {e}");
    }
}

#[cfg(test)]
mod tests {
    /// The front answers `start` with addresses it derives itself; they must be the ones the
    /// `containerd-shim` crate (and containerd's own shims) derive.
    #[test]
    fn the_fronts_socket_addresses_are_containerds() {
        for (address, namespace, group) in [
            ("/run/containerd/containerd.sock", "default", "c1"),
            ("/tmp/x/c.sock", "k8s.io", "0123abcd"),
            (
                "/run/containerd/containerd.sock",
                "ns",
                "wasmcell-namespace-ns",
            ),
            ("relative.sock", "é", "a/b"),
        ] {
            assert_eq!(
                crate::group::socket_address(address, namespace, group),
                containerd_shim::socket_address(address, namespace, group),
                "{address} {namespace} {group}"
            );
        }
    }
}
