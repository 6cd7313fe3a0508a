//! The guest process: one per container, forked by the shim's single-threaded launcher
//! ([`crate::zygote`]) or else a fresh exec of the shim binary, shown as `__wasmcell-guest
//! PLAN` either way, so wasmtime never runs in a process forked from the multi-threaded shim
//! and kill, OOM, stats and isolation follow Linux process semantics.
//!
//! Handshake with the shim over two pipes installed as fds 3 and 4:
//! 1. wait for `c` on fd 3 (the shim has put this process in the container's cgroup), or for
//!    `j` and a list of cgroup v1 `tasks` files ([`join_message`]): join those cgroups by
//!    writing `0` to each, which a process moving itself does without the kernel's global
//!    migration lock (see [`crate::cgroup::ContainerCgroup::self_join_files`]);
//! 2. load the plan, compile or load the program from the cache, confine this process
//!    ([`crate::confine`]), report `ok …` or `error …` as one line on fd 4 (after any
//!    `warn …` lines for the shim's log and an `optimize PATH` line when baseline code runs
//!    and the shim is to compile the wasm copy at PATH in the background), close fd 4;
//! 3. wait for `s` on fd 3 (`start`), or EOF (deleted before start, or the shim died: exit
//!    quietly);
//! 4. run; the process's exit status is the guest's.
//!
//! Signals keep their default dispositions, so SIGTERM or SIGKILL end the guest at once and the
//! shim reports 128+N. As the first process of a PID namespace, where the kernel drops signals
//! that have no handler, the guest handles the terminating ones by exiting 128+N itself. Exit
//! codes of our own: 134 for a trap (what a native program that aborts reports), 137 for a
//! guest stopped by its memory limit (as the OOM killer would), 125 when the guest could not be
//! set up at all.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::path::{Path, PathBuf};

use wasmcell_engine::{
    EngineOptions, ExitStatus, IdleTask, LoadOutcome, Policy, Preopen, RunSpec, Tier, Wasm,
    WasmEngine,
};

use crate::compiler::Purpose;

use crate::plan::GuestPlan;

/// First argument that selects guest mode.
pub const GUEST_ARG: &str = "__wasmcell-guest";
/// Control pipe (shim → guest) as seen in the guest.
pub const CONTROL_FD: i32 = 3;
/// Status pipe (guest → shim) as seen in the guest.
pub const STATUS_FD: i32 = 4;

/// Exit code when the guest traps.
pub const EXIT_TRAP: i32 = 134;
/// Exit code when the guest exceeds its memory limit.
pub const EXIT_MEMORY_LIMIT: i32 = 137;
/// Exit code when setting up the guest failed.
pub const EXIT_SETUP: i32 = 125;

/// Entry point of guest mode; returns the process exit code.
pub fn main(plan_path: &Path) -> i32 {
    // SAFETY: the shim dup2()s the two pipe ends onto fds 3 and 4 right before exec and nothing
    // else in this fresh process owns them; each File becomes their only owner.
    #[allow(unsafe_code)]
    let (mut control, mut status) =
        unsafe { (File::from_raw_fd(CONTROL_FD), File::from_raw_fd(STATUS_FD)) };
    match read_byte(&mut control) {
        Some(CONTROL_CONTINUE) => {}
        Some(CONTROL_JOIN) => {
            if let Err(message) = read_join(&mut control).and_then(|files| join_cgroups(&files)) {
                report(&mut status, Err(message));
                return EXIT_SETUP;
            }
        }
        _ => return EXIT_SETUP,
    }
    exit_on_signals_as_init();
    // The starter's preloaded engine, if this guest descends from a starter: taken at once, so
    // a guest that does not use it (a sandbox, a failed setup) drops it before it is confined.
    let inherited = crate::preload::take();
    let plan = read_plan(plan_path);
    if let Ok(plan) = &plan
        && plan.sandbox
    {
        if let Some(engine) = inherited {
            crate::preload::keep_only(&engine, None);
            std::mem::forget(engine);
        }
        if let Err(e) = plan.confinement.apply() {
            report(&mut status, Err(e.to_string()));
            return EXIT_SETUP;
        }
        return hold_sandbox(control, status);
    }
    // Load (the cache is outside the rootfs and root-only), then confine, then report: a
    // guest that could not be confined never reports ready.
    let prepared = plan.and_then(|mut plan| {
        let mut prepared = prepare(&plan, inherited)?;
        let started = std::time::Instant::now();
        crate::empty_network::stack_socket_filter(&mut plan.confinement.seccomp);
        plan.confinement.apply().map_err(|e| e.to_string())?;
        prepared.outcome = format!(
            "{}; confined in {} µs{}{}",
            prepared.outcome,
            started.elapsed().as_micros(),
            if crate::empty_network::joined() {
                "; in the shared empty network namespace"
            } else {
                ""
            },
            if prepared.preloaded {
                "; preloaded by the starter"
            } else {
                ""
            }
        );
        Ok((plan, prepared))
    });
    if let Ok((_, prepared)) = &prepared {
        for warning in &prepared.warnings {
            let _ = status.write_all(format!("warn {}\n", warning.replace('\n', " ")).as_bytes());
        }
        if let Some(copy) = &prepared.optimize {
            let _ = status.write_all(format!("optimize {}\n", copy.display()).as_bytes());
        }
    }
    report(
        &mut status,
        prepared
            .as_ref()
            .map(|(_, p)| p.outcome.clone())
            .map_err(Clone::clone),
    );
    drop(status);
    let Ok((_plan, prepared)) = prepared else {
        return EXIT_SETUP;
    };
    let Prepared {
        engine,
        program,
        work,
        ..
    } = prepared;
    if read_byte(&mut control) != Some(b's') {
        return 0; // deleted before it was started
    }
    drop(control);
    #[cfg(debug_assertions)]
    if let Some(drill) = crate::drill::requested(&_plan.env) {
        return crate::drill::run(&drill);
    }
    let spec = match work {
        Work::Run(spec) => RunSpec {
            idle_task: Some(IdleTask {
                after: crate::footprint::SETTLE_DELAY,
                action: crate::footprint::settle,
            }),
            ..spec
        },
        Work::Serve(setup) => {
            crate::footprint::settle_later();
            return crate::http::serve(&engine, &program, setup);
        }
    };
    let ran = engine.run(&program, &spec);
    // Nothing is dropped: the process ends with `_exit`, and freeing the engine and program
    // would only write to pages it shares with the launcher and the starter (each write a
    // copy) before exit unmaps them anyway.
    std::mem::forget((engine, program, spec));
    match ran {
        Ok(ExitStatus::Exited(code)) => code,
        Ok(ExitStatus::Trapped { message }) => {
            eprintln!("wasmcell: guest trapped: {message}");
            EXIT_TRAP
        }
        Ok(ExitStatus::MemoryLimit { limit }) => {
            eprintln!(
                "wasmcell: guest stopped: it exceeded its memory limit (linear memory is capped at \
                 {limit} bytes: the container's memory limit minus room for the runtime)"
            );
            EXIT_MEMORY_LIMIT
        }
        Err(e) => {
            eprintln!("wasmcell: guest failed: {}", with_causes(&e));
            EXIT_SETUP
        }
    }
}

/// Ends the guest process with `code` once its standard streams are flushed, skipping exit
/// handlers and the loader's finalizers: nothing of a guest outlives it, and the kernel frees
/// its memory at once, where running the finalizers would first copy-on-write pages shared
/// with the launcher.
pub fn exit(code: i32) -> ! {
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: _exit ends the process; nothing runs after it.
    #[allow(unsafe_code)]
    unsafe {
        libc::_exit(code)
    }
}

/// One status line for the shim: `ok OUTCOME` or `error MESSAGE`.
fn report(status: &mut File, outcome: Result<String, String>) {
    let line = match outcome {
        Ok(outcome) => format!("ok {outcome}\n"),
        Err(message) => format!("error {}\n", message.replace('\n', " ")),
    };
    let _ = status.write_all(line.as_bytes());
}

/// Signals that end a process by default. The first process of a PID namespace gets only the
/// signals it has a handler for, so as its namespace's init a guest handles these by exiting
/// with 128+N — what the shim reports for a process they killed.
const TERMINATING_SIGNALS: [libc::c_int; 14] = [
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
    libc::SIGTERM,
    libc::SIGSTKFLT,
    libc::SIGIO,
    libc::SIGPWR,
    libc::SIGXCPU,
    libc::SIGXFSZ,
    libc::SIGVTALRM,
    libc::SIGPROF,
];

extern "C" fn exit_with_signal(signal: libc::c_int) {
    // SAFETY: _exit is async-signal-safe and ends the process without running anything else.
    #[allow(unsafe_code)]
    unsafe {
        libc::_exit(128 + signal)
    }
}

fn exit_on_signals_as_init() {
    if std::process::id() != 1 {
        return;
    }
    let realtime = libc::SIGRTMIN()..=libc::SIGRTMAX();
    for signal in TERMINATING_SIGNALS.into_iter().chain(realtime) {
        // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" action; the handler is
        // an extern "C" fn that only calls _exit; sigaction copies the struct.
        #[allow(unsafe_code)]
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = exit_with_signal as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

fn read_plan(plan_path: &Path) -> Result<GuestPlan, String> {
    let text =
        std::fs::read(plan_path).map_err(|e| format!("reading {}: {e}", plan_path.display()))?;
    serde_json::from_slice(&text).map_err(|e| format!("parsing {}: {e}", plan_path.display()))
}

/// A pod sandbox: report ready, wait for start, then hold the pod's cgroup and namespaces
/// until a signal ends the process (SIGTERM 143, SIGKILL 137).
fn hold_sandbox(mut control: File, mut status: File) -> i32 {
    report(&mut status, Ok("sandbox".to_owned()));
    drop(status);
    if read_byte(&mut control) != Some(b's') {
        return 0;
    }
    drop(control);
    // Nothing runs here any more: let go of what starting touched, now.
    crate::footprint::settle();
    loop {
        nix::unistd::pause();
    }
}

/// What a started guest does with its program.
enum Work {
    /// Run it once as a command.
    Run(RunSpec),
    /// Serve it over HTTP ([`crate::http`]).
    Serve(crate::http::ServeSetup),
}

/// A guest ready to be confined and started.
struct Prepared {
    engine: WasmEngine,
    program: wasmcell_engine::Program,
    work: Work,
    /// How the program was loaded, for the shim's log.
    outcome: String,
    /// What the shim is to warn about.
    warnings: Vec<String>,
    /// A wasm copy for the shim's background optimizer ([`load`]).
    optimize: Option<PathBuf>,
    /// The program came from the starter's preloaded engine ([`crate::preload`]).
    preloaded: bool,
}

/// `error: cause: cause …`, each cause once (wrappers often repeat their source's text).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A program file's bytes, mapped rather than copied: hashing and parsing them then reads
/// the page cache in place, with no buffer to fault in and free in every guest.
enum ProgramBytes {
    Mapped(memmap2::Mmap),
    /// A file that cannot be mapped (empty, or on a filesystem without `mmap`).
    Read(Vec<u8>),
}

impl std::ops::Deref for ProgramBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            ProgramBytes::Mapped(map) => map,
            ProgramBytes::Read(bytes) => bytes,
        }
    }
}

fn read_program(path: &Path) -> std::io::Result<ProgramBytes> {
    let mut file = std::fs::File::open(path)?;
    // SAFETY: a private, read-only mapping of the container's program: a file of its image's
    // layers (or the one the shim wrote into the bundle) in a rootfs whose container has not
    // started, which only the host's root could change while the guest reads it; the mapping
    // lives as long as the value, and no reference into it outlives `prepare`.
    #[allow(unsafe_code)]
    match unsafe { memmap2::Mmap::map(&file) } {
        Ok(map) => Ok(ProgramBytes::Mapped(map)),
        Err(_) => {
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)?;
            Ok(ProgramBytes::Read(bytes))
        }
    }
}

fn prepare(plan: &GuestPlan, inherited: Option<WasmEngine>) -> Result<Prepared, String> {
    let bytes = read_program(&plan.program).map_err(|e| {
        format!(
            "reading program {}: {e}",
            plan.args.first().map_or("", |a| a)
        )
    })?;
    if !wasmcell_oci::wasm::has_wasm_magic(&bytes) {
        let head: Vec<u8> = bytes.iter().take(4).copied().collect();
        return Err(format!(
            "program {:?} is not a wasm binary ({} bytes starting with {head:02x?}, expected \\0asm)",
            plan.args.first().map_or("", |a| a),
            bytes.len()
        ));
    }
    let mut warnings = Vec::new();
    let name = plan.args.first().map_or("", |a| a);
    let world = crate::http::world_of(&bytes).map_err(|e| format!("program {name:?}: {e}"))?;
    let serve_http = world.is_served();
    if serve_http {
        // It binds its socket below, in the namespace it is to keep.
        crate::empty_network::leave_if(true, plan.network_pool.as_deref())?;
    }
    // A server's limits size its engine's instance pool, so they are read first.
    let serve_setup = if serve_http {
        Some(crate::http::prepare(plan, world).map_err(|e| format!("program {name:?}: {e}"))?)
    } else {
        None
    };
    let serve_pool = serve_setup
        .as_ref()
        .map(crate::http::pool_for)
        .unwrap_or_default();
    // A compile cache that cannot be opened (unwritable, not ours) costs speed, not the
    // container: run uncached and say so once.
    let options = EngineOptions {
        serve_http,
        serve_pool,
        ..crate::preload::command_options(plan.cache_dir.clone())
    };
    let engine = match crate::preload::for_options(inherited, &options)
        .map_or_else(|| WasmEngine::new(options), Ok)
    {
        Ok(engine) => engine,
        Err(e) if plan.cache_dir.is_some() => {
            warnings.push(format!(
                "the compile cache is unusable ({e}); the guest runs uncached"
            ));
            WasmEngine::new(EngineOptions {
                serve_http,
                serve_pool,
                ..Default::default()
            })
            .map_err(|e| e.to_string())?
        }
        Err(e) => return Err(e.to_string()),
    };
    let purpose = if serve_http {
        Purpose::Serve
    } else {
        Purpose::Run
    };
    let Loaded {
        engine,
        program,
        outcome,
        optimize,
        preloaded,
    } = load(
        engine,
        program_wasm(&bytes, plan),
        plan,
        purpose,
        &mut warnings,
    )
    .map_err(|e| format!("program {name:?}: {}", with_causes(&e)))?;
    // Refuse at create, naming every import, rather than failing after start.
    if let Some(declared) = &plan.declared_imports {
        check_declared_matches(declared, &engine.imports(&program))
            .map_err(|e| format!("program {name:?}: {e}"))?;
    }
    let policy = Policy {
        deny: plan.deny.clone(),
        source: plan.policy_source.clone(),
        allow_outbound: plan.allow_outbound.clone(),
        ..Policy::default()
    };
    engine
        .check_imports(&program, &policy)
        .map_err(|e| format!("program {name:?}: {e}"))?;
    if crate::empty_network::joined() {
        let imports = engine.imports(&program);
        crate::empty_network::leave_if(
            crate::empty_network::needs_network(&imports),
            plan.network_pool.as_deref(),
        )?;
    }
    if let Some(setup) = serve_setup {
        return Ok(Prepared {
            engine,
            program,
            work: Work::Serve(setup),
            outcome: format!("{outcome}; serving HTTP"),
            warnings,
            optimize,
            preloaded,
        });
    }
    let spec = RunSpec {
        args: plan.args.clone(),
        env: plan.env.clone(),
        preopens: plan
            .preopens
            .iter()
            .map(|p| Preopen {
                host: p.host.clone(),
                guest: p.guest.clone(),
                read_only: p.read_only,
            })
            .collect(),
        cwd: plan.cwd.clone(),
        memory_limit_bytes: plan.memory_limit_bytes,
        allow_network: true,
        entry: plan.entry.clone(),
        ..RunSpec::default()
    };
    Ok(Prepared {
        engine,
        program,
        work: Work::Run(spec),
        outcome,
        warnings,
        optimize,
        preloaded,
    })
}

/// A program ready to run, and the engine it was loaded into.
struct Loaded {
    engine: WasmEngine,
    program: wasmcell_engine::Program,
    /// How it was loaded, for the shim's log.
    outcome: String,
    /// A wasm copy the shim is to have compiled to optimized code in the background.
    optimize: Option<PathBuf>,
    /// The program came from the starter's preloaded engine ([`crate::preload`]).
    preloaded: bool,
}

/// Loads the program into `engine` (optimized code): from the cache when it is there. On a miss
/// a command starts at once on baseline code — Winch's, compiled by the helper in a fraction of
/// Cranelift's time — and leaves a copy of its wasm for the shim's background optimizer, so
/// later starts map optimized code. A server (long-lived, measured by its throughput), a guest
/// without a cache, and a program Winch cannot compile get optimized code now, compiled by the
/// helper so this long-lived process keeps no compiler memory.
fn load(
    engine: WasmEngine,
    wasm: Wasm<'_>,
    plan: &GuestPlan,
    purpose: Purpose,
    warnings: &mut Vec<String>,
) -> Result<Loaded, wasmcell_engine::EngineError> {
    let helper = |purpose| {
        plan.cache_dir.as_deref().map(|cache_dir| {
            move || crate::compiler::compile_in_helper(&plan.program, cache_dir, purpose)
        })
    };
    // Whatever this guest runs, nothing else the starter preloaded stays mapped in it.
    let sha256 = wasm.sha256();
    crate::preload::keep_only(&engine, Some(&sha256));
    if purpose == Purpose::Run && plan.cache_dir.is_some() {
        if let Some(program) = engine.load_if_cached(wasm)? {
            return Ok(Loaded {
                // Still preloaded after the lookup: it came from memory.
                preloaded: engine.is_preloaded(&sha256),
                engine,
                program,
                outcome: LoadOutcome::CacheHit.to_string(),
                optimize: None,
            });
        }
        match load_baseline(wasm, plan, helper(Purpose::Baseline)) {
            Ok((baseline, program, outcome)) => {
                warnings.extend(outcome.warning());
                let optimize = engine
                    .stash_for_optimizer(wasm)
                    .map_err(|e| {
                        warnings.push(format!("{}; later starts compile again", with_causes(&e)))
                    })
                    .ok();
                return Ok(Loaded {
                    engine: baseline,
                    program,
                    outcome: format!("{outcome}; baseline code until the optimized code is ready"),
                    optimize,
                    preloaded: false,
                });
            }
            Err(e) => log::debug!("no baseline code ({e}); compiling optimized code"),
        }
    }
    let helper = helper(purpose);
    let helper = helper
        .as_ref()
        .map(|h| h as &dyn Fn() -> Result<(), String>);
    let (program, outcome) = engine.load_with(wasm, helper)?;
    warnings.extend(outcome.warning());
    Ok(Loaded {
        engine,
        program,
        outcome: outcome.to_string(),
        optimize: None,
        preloaded: false,
    })
}

/// The program's bytes with their sha256: the one the shim verified, else hashed here.
fn program_wasm<'a>(bytes: &'a [u8], plan: &GuestPlan) -> Wasm<'a> {
    plan.program_sha256
        .as_deref()
        .and_then(|sha256| Wasm::with_verified_sha256(bytes, sha256))
        .unwrap_or_else(|| Wasm::new(bytes))
}

/// Baseline code for `wasm`, from the cache or compiled by the helper.
fn load_baseline(
    wasm: Wasm<'_>,
    plan: &GuestPlan,
    helper: Option<impl Fn() -> Result<(), String>>,
) -> Result<(WasmEngine, wasmcell_engine::Program, LoadOutcome), wasmcell_engine::EngineError> {
    let engine = WasmEngine::new(EngineOptions {
        cache_dir: plan.cache_dir.clone(),
        tier: Tier::Baseline,
        ..Default::default()
    })?;
    let helper = helper
        .as_ref()
        .map(|h| h as &dyn Fn() -> Result<(), String>);
    let (program, outcome) = engine.load_with(wasm, helper)?;
    if let LoadOutcome::CompiledNotStored { .. } = outcome {
        // A cache that cannot keep baseline code cannot keep optimized code either: take the
        // path that reports it.
        return Err(wasmcell_engine::EngineError::NoCache);
    }
    Ok((engine, program, outcome))
}

/// An artifact's config must declare exactly what its binary imports: a config that hides an
/// import would let the pre-flight pass what the binary then needs.
fn check_declared_matches(declared: &[String], imported: &[String]) -> Result<(), String> {
    let undeclared: Vec<&str> = imported
        .iter()
        .filter(|i| !declared.contains(i))
        .map(String::as_str)
        .collect();
    let unused: Vec<&str> = declared
        .iter()
        .filter(|d| !imported.contains(d))
        .map(String::as_str)
        .collect();
    if undeclared.is_empty() && unused.is_empty() {
        return Ok(());
    }
    let mut message = format!(
        "the artifact's wasm config and its binary disagree: config declares [{}], binary imports [{}]",
        declared.join(", "),
        imported.join(", ")
    );
    if !undeclared.is_empty() {
        message.push_str(&format!("; not declared: {}", undeclared.join(", ")));
    }
    if !unused.is_empty() {
        message.push_str(&format!(
            "; declared but not imported: {}",
            unused.join(", ")
        ));
    }
    Err(message)
}

/// Control byte: go on with the setup, the shim placed this process in its cgroup.
pub const CONTROL_CONTINUE: u8 = b'c';
/// Control byte: join the cgroups that follow ([`join_message`]), then go on with the setup.
pub const CONTROL_JOIN: u8 = b'j';
/// Longest list of `tasks` paths a join message carries: the whole message then fits in
/// PIPE_BUF (4096) bytes, one write into even a one-page pipe. Real lists (one path per v1
/// hierarchy, a Kubernetes pod's about 1.5 KiB) fit; a longer one makes the shim place the
/// guest itself.
const MAX_JOIN_BYTES: usize = 4096 - 5;

/// The control message that has the guest join the cgroups whose v1 `tasks` files are `files`:
/// [`CONTROL_JOIN`], the byte length of the list as 4 little-endian bytes, then the paths, one
/// per line. `None` if the list is longer than [`MAX_JOIN_BYTES`] or a path has a newline.
pub fn join_message(files: &[PathBuf]) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let mut list = Vec::new();
    for file in files {
        let bytes = file.as_os_str().as_bytes();
        if bytes.contains(&b'\n') {
            return None;
        }
        list.extend_from_slice(bytes);
        list.push(b'\n');
    }
    if list.len() > MAX_JOIN_BYTES {
        return None;
    }
    let mut message = vec![CONTROL_JOIN];
    message.extend_from_slice(&u32::try_from(list.len()).ok()?.to_le_bytes());
    message.extend_from_slice(&list);
    Some(message)
}

/// Reads the list of a join message whose [`CONTROL_JOIN`] byte was read: exactly its bytes, so
/// the later `s` is not consumed.
fn read_join(control: &mut impl Read) -> Result<Vec<PathBuf>, String> {
    use std::os::unix::ffi::OsStrExt;
    let mut length = [0u8; 4];
    control
        .read_exact(&mut length)
        .map_err(|e| format!("reading the cgroups to join from the shim: {e}"))?;
    let length = u32::from_le_bytes(length) as usize;
    if length > MAX_JOIN_BYTES {
        return Err(format!(
            "the shim's list of cgroups to join is {length} bytes, more than {MAX_JOIN_BYTES}"
        ));
    }
    let mut list = vec![0u8; length];
    control
        .read_exact(&mut list)
        .map_err(|e| format!("reading the cgroups to join from the shim: {e}"))?;
    Ok(list
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| PathBuf::from(std::ffi::OsStr::from_bytes(line)))
        .collect())
}

/// Moves this process, which must have a single thread, into each cgroup v1 `tasks` file's
/// cgroup.
fn join_cgroups(files: &[PathBuf]) -> Result<(), String> {
    // A thread moves alone: with another thread, that one would stay outside the cgroup.
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("reading /proc/self/status before joining the cgroup: {e}"))?;
    let threads = status
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .map(str::trim);
    if threads != Some("1") {
        return Err(format!(
            "the guest has {} threads, not one, so it cannot join its cgroup by itself",
            threads.unwrap_or("an unknown number of")
        ));
    }
    for file in files {
        std::fs::OpenOptions::new()
            .write(true)
            .open(file)
            .and_then(|mut tasks| tasks.write_all(b"0"))
            .map_err(|e| format!("joining the container's cgroup {}: {e}", file.display()))?;
    }
    Ok(())
}

fn read_byte(file: &mut File) -> Option<u8> {
    let mut byte = [0u8; 1];
    match file.read(&mut byte) {
        Ok(1) => Some(byte[0]),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_that_omits_or_invents_imports_is_named() {
        let binary = [
            "wasi:cli/exit@0.2.0".to_owned(),
            "wasi:sockets/tcp@0.2.0".to_owned(),
        ];
        assert!(check_declared_matches(&binary, &binary).is_ok());
        let hidden = check_declared_matches(&binary[..1], &binary)
            .err()
            .unwrap_or_default();
        assert!(
            hidden.contains("config declares [wasi:cli/exit@0.2.0], binary imports [wasi:cli/exit@0.2.0, wasi:sockets/tcp@0.2.0]; not declared: wasi:sockets/tcp@0.2.0"),
            "{hidden}"
        );
        let invented = check_declared_matches(&binary, &binary[..1])
            .err()
            .unwrap_or_default();
        assert!(
            invented.ends_with("declared but not imported: wasi:sockets/tcp@0.2.0"),
            "{invented}"
        );
    }

    /// The join list arrives whole and the `s` behind it stays unread; a list the guest
    /// cannot trust (truncated, oversized) is refused by name, and the shim never builds one
    /// it could not send in one write.
    #[test]
    fn a_join_message_round_trips_and_bad_ones_are_named() {
        let files = vec![
            PathBuf::from("/sys/fs/cgroup/memory/k8s.io/abc/tasks"),
            PathBuf::from("/sys/fs/cgroup/pids/k8s.io/abc/tasks"),
        ];
        let mut stream = join_message(&files).unwrap_or_default();
        assert_eq!(stream.first(), Some(&CONTROL_JOIN));
        stream.push(b's');
        let mut reader = &stream[1..];
        assert_eq!(read_join(&mut reader).ok(), Some(files));
        assert_eq!(reader, b"s");

        let mut truncated: &[u8] = &stream[1..stream.len() - 5];
        let error = read_join(&mut truncated).err().unwrap_or_default();
        assert!(error.contains("reading the cgroups to join"), "{error}");

        let oversized = u32::MAX.to_le_bytes();
        let error = read_join(&mut &oversized[..]).err().unwrap_or_default();
        assert!(error.contains("more than"), "{error}");

        assert!(join_message(&[PathBuf::from("/a\nb/tasks")]).is_none());
        let many = vec![PathBuf::from(format!("/{}/tasks", "x".repeat(1000))); 40];
        assert!(join_message(&many).is_none());
    }
}
