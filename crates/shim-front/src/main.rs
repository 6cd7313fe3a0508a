//! `containerd-shim-wasmcell-v1`, the binary containerd execs: answers `start` (finding the
//! group's shim, or starting the core as a new one: forked by the
//! [starter](wasmcell_shim_front::starter) when one takes it) and the cleanup `delete` that
//! finds nothing to empty, and execs the shim core (same arguments, same `argv[0]`) for every
//! other action. See the library's docs for why.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use wasmcell_shim_front::group::{GROUP_ENV, Grouping, LONE_ENV, StartPlace, server_args};
use wasmcell_shim_front::starter::{
    START_ENV, StartRequest, request_start, starter_socket, starter_wanted,
};
use wasmcell_shim_front::{
    CORE_BINARY, ShimInvocation, delete_response, leftover_cgroup, remove_bundle_leftovers,
};

mod arena;

#[global_allocator]
static ALLOCATOR: arena::Arena = arena::Arena;

fn main() {
    let args: Vec<OsString> = std::env::args_os().collect();
    let invocation = ShimInvocation::parse(args.get(1..).unwrap_or_default());
    if let Some(invocation) = &invocation
        && invocation.action.as_deref() == Some("start")
        && let Some(bundle) = invocation
            .bundle
            .clone()
            .or_else(|| std::env::current_dir().ok())
        && answer_start(invocation, &bundle, args.first())
    {
        std::process::exit(0);
    }
    if let Some(invocation) = invocation
        && invocation.action.as_deref() == Some("delete")
        && let Some(bundle) = invocation.bundle.or_else(|| std::env::current_dir().ok())
        && leftover_cgroup(&bundle).is_none()
    {
        if let Err(e) = remove_bundle_leftovers(&bundle) {
            eprintln!("io.containerd.wasmcell.v1: {e}");
        }
        let response = delete_response(std::time::SystemTime::now());
        let mut stdout = std::io::stdout();
        if let Err(e) = stdout.write_all(&response).and_then(|()| stdout.flush()) {
            eprintln!("io.containerd.wasmcell.v1: writing the delete response: {e}");
            std::process::exit(1);
        }
        std::process::exit(0);
    }
    exec_core(&args)
}

/// Answers `start`: the address of the shim serving the container's group, started first if
/// there is none. `false` (nothing answered) when anything is unclear — the core's own `start`
/// then decides, and reports any error itself.
fn answer_start(invocation: &ShimInvocation, bundle: &Path, argv0: Option<&OsString>) -> bool {
    // Legacy start passes runtime options on stdin; wasmcell has none to read yet.
    let mut ignored = Vec::new();
    let _ = std::io::stdin().take(1 << 20).read_to_end(&mut ignored);
    let Ok(grouping) = Grouping::configured() else {
        return false;
    };
    let Ok(place) = StartPlace::find(
        grouping,
        bundle,
        &invocation.namespace,
        &invocation.id,
        &invocation.address,
    ) else {
        return false;
    };
    if !place.served && start_server(invocation, bundle, grouping, &place, argv0).is_err() {
        return false;
    }
    place.answer(bundle, &mut std::io::stdout()).is_ok()
}

/// Starts the core as the group's server and waits until it serves or has failed: it closes
/// its stdout, our pipe, either way. The server is forked by this containerd's starter when
/// one takes the request (no loader start-up at all), else spawned (what containerd's `start`
/// would otherwise have the core fork: one glibc start-up either way, and no short-lived core
/// process).
fn start_server(
    invocation: &ShimInvocation,
    bundle: &Path,
    grouping: Grouping,
    place: &StartPlace,
    argv0: Option<&OsString>,
) -> std::io::Result<()> {
    let core = core_path();
    let lone = place.lone.then_some("1");
    let (mut ready, ready_write) = std::io::pipe()?;
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    let mut args = vec![argv0.cloned().unwrap_or_else(|| core.clone().into())];
    args.extend(server_args(
        &invocation.namespace,
        &invocation.id,
        &invocation.address,
        &place.address,
        invocation.debug,
    ));
    let forked = starter_wanted(std::env::var_os(START_ENV).as_deref())
        && starter_socket(&invocation.address, &core).is_some_and(|socket| {
            let request = StartRequest {
                args: args.clone(),
                env: environment_with(&[(GROUP_ENV, Some(grouping.name())), (LONE_ENV, lone)]),
                cwd: bundle.to_owned(),
            };
            request_start(
                &socket,
                &request,
                [null.as_fd(), ready_write.as_fd(), null.as_fd()],
            )
        });
    if !forked {
        let mut command = std::process::Command::new(&core);
        command
            .arg0(&args[0])
            .args(&args[1..])
            .current_dir(bundle)
            .env(GROUP_ENV, grouping.name())
            .env_remove(LONE_ENV)
            .stdin(null.try_clone()?)
            .stdout(ready_write.try_clone()?)
            .stderr(null.try_clone()?);
        if let Some(lone) = lone {
            command.env(LONE_ENV, lone);
        }
        // Not waited for: the server outlives this process, as containerd expects.
        let _server = command.spawn()?;
    }
    // Every copy of the pipe's write end but the server's must be closed to see it close.
    drop((ready_write, null));
    let mut sink = Vec::new();
    ready.read_to_end(&mut sink)?;
    Ok(())
}

/// This process's environment as `KEY=VALUE` strings, with each of `pairs` set to its value
/// (or removed, for `None`).
fn environment_with(pairs: &[(&str, Option<&str>)]) -> Vec<OsString> {
    let mut env: Vec<OsString> = std::env::vars_os()
        .filter(|(k, _)| pairs.iter().all(|(key, _)| k != key))
        .map(|(k, v)| {
            let mut pair = k;
            pair.push("=");
            pair.push(v);
            pair
        })
        .collect();
    for (key, value) in pairs {
        if let Some(value) = value {
            env.push(format!("{key}={value}").into());
        }
    }
    env
}

/// The core, installed next to this binary (or else found on `PATH`).
fn core_path() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|front| Some(front.parent()?.join(CORE_BINARY)))
        .unwrap_or_else(|| PathBuf::from(CORE_BINARY))
}

/// Replaces this process with the core, installed next to this binary (or else found on
/// `PATH`).
fn exec_core(args: &[OsString]) -> ! {
    let core = core_path();
    let mut command = std::process::Command::new(&core);
    if let Some(argv0) = args.first() {
        command.arg0(argv0);
    }
    let error = command.args(args.iter().skip(1)).exec();
    eprintln!(
        "io.containerd.wasmcell.v1: cannot run the shim core {}: {error} (it is installed next to containerd-shim-wasmcell-v1)",
        core.display()
    );
    std::process::exit(1)
}
