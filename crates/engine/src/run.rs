//! Running a program: [`RunSpec`] → WASI context → instantiate → call → [`ExitStatus`].
//!
//! Core modules get `wasi_snapshot_preview1`; components get the WASI 0.2 or 0.3 command
//! world. All run through wasmtime-wasi's async bindings on a current-thread tokio runtime
//! driven by the calling thread, so a run starts no thread of its own: the guest's timers and
//! sockets are polled whenever the wasm waits on them. (The synchronous bindings would need a
//! runtime whose I/O another thread drives — one worker thread per run, which also makes every
//! later unmap of the process a cross-CPU TLB shootdown.) Threads start only for host work
//! that cannot run inline (name lookups, reading stdin). The runtime is shut down afterwards
//! without waiting for stuck blocking reads.

use std::fs::File;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use wasmtime::component::{Component, InstancePre, ResourceTable};
use wasmtime::{Engine, Linker, Module, ResourceLimiter, Store, Trap, WasmBacktrace};
use wasmtime_wasi::cli::{InputFile, OutputFile};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::EngineError;
use crate::host::{self, HostWorld, Policy};

/// What to run a program with. `RunSpec::default()` is: no arguments, empty environment, no
/// preopens, no cwd, unlimited memory, no network, `_start` (modules) or `wasi:cli/run`
/// (components), inherited stdio, no idle task.
#[derive(Debug, Default)]
pub struct RunSpec {
    /// argv as the guest sees it (`args[0]` is the program name).
    pub args: Vec<String>,
    /// The guest's whole environment; nothing is inherited from the host.
    pub env: Vec<(String, String)>,
    /// Host directories the guest may reach; nothing else on the host is reachable.
    pub preopens: Vec<Preopen>,
    /// The guest's working directory. Reported to components as
    /// `wasi:cli/environment.initial-cwd`, and added to the environment as `PWD` unless `env`
    /// already has a `PWD` (preview1 has no cwd concept; wasi-libc starts every guest in `/`,
    /// so relative paths resolve against the preopen mounted at `/`).
    pub cwd: Option<String>,
    /// Cap on the sum of all linear memories of the guest, in bytes. Growing past it traps
    /// and the run ends with [`ExitStatus::MemoryLimit`]. `None`: only the wasm limits apply.
    pub memory_limit_bytes: Option<u64>,
    /// Allow WASI sockets: TCP, UDP and name lookup to any address the process's network
    /// namespace reaches. Only components can use sockets (preview1 has none). Default `false`:
    /// every socket operation is refused.
    pub allow_network: bool,
    /// Instead of the command entry point, call this exported function, which must take no
    /// parameters and return nothing. For a module that also exports `_initialize` (a WASI
    /// reactor), `_initialize` is called first.
    pub entry: Option<String>,
    /// Where the guest's stdin/stdout/stderr go. Default: the process's fds 0, 1 and 2.
    pub stdio: Stdio,
    /// Work for the host to do once during the run, on the run's own thread. Default `None`.
    pub idle_task: Option<IdleTask>,
}

/// A function the run calls once, on its own thread, the first time the guest waits (on a
/// timer, a socket or another host future) after it has run for `after`. A guest that finishes
/// sooner, or computes without ever waiting, never calls it. For what a long-lived process does
/// to its own footprint once it has started; the function must be quick, the guest waits on it.
#[derive(Debug, Clone, Copy)]
pub struct IdleTask {
    /// How long after the run starts the task becomes due.
    pub after: Duration,
    /// What it does.
    pub action: fn(),
}

/// A host directory made visible to the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preopen {
    /// Directory on the host, opened when the run starts.
    pub host: PathBuf,
    /// Absolute path under which the guest sees it (e.g. `/` or `/data`).
    pub guest: String,
    /// Read-only: the guest can neither create, modify nor delete anything below it.
    pub read_only: bool,
}

/// The guest's standard streams.
#[derive(Debug, Default)]
pub enum Stdio {
    /// The process's own fds 0, 1 and 2 (what the shim uses: they are containerd's FIFOs).
    #[default]
    Inherit,
    /// Explicit files (duplicated per run). `stdin: None` is a closed stdin.
    Files {
        stdin: Option<File>,
        stdout: File,
        stderr: File,
    },
}

/// How a guest run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitStatus {
    /// The guest returned from its entry point (0), called `proc_exit`/`exit` with a code,
    /// or a component's `wasi:cli/run` returned `Err` (1).
    Exited(i32),
    /// The guest trapped; `message` is the trap (or host error) and the wasm backtrace.
    Trapped { message: String },
    /// The guest tried to grow its linear memory beyond `RunSpec::memory_limit_bytes`.
    MemoryLimit { limit: u64 },
}

/// Runs `module` under preview1.
pub(crate) fn run_module(
    engine: &Engine,
    linkers: &CommandLinkers,
    module: &Module,
    spec: &RunSpec,
) -> Result<ExitStatus, EngineError> {
    on_wasi_runtime(spec, run_module_inner(engine, linkers, module, spec))
}

async fn run_module_inner(
    engine: &Engine,
    linkers: &CommandLinkers,
    module: &Module,
    spec: &RunSpec,
) -> Result<ExitStatus, EngineError> {
    const KIND: &str = "module";
    let linker = linkers.module(engine)?;
    let state = ModuleState {
        wasi: wasi_builder(spec)?.build_p1(),
        limits: GuestLimits::new(spec.memory_limit_bytes),
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limits);

    let instance = match linker.instantiate_async(&mut store, module).await {
        Ok(instance) => instance,
        Err(e) => return guest_failure(e, &store.data().limits, KIND),
    };
    let mut calls = Vec::with_capacity(2);
    match spec.entry.as_deref() {
        None => calls.push("_start"),
        Some(entry) => {
            if entry != "_initialize" && instance.get_func(&mut store, "_initialize").is_some() {
                calls.push("_initialize");
            }
            calls.push(entry);
        }
    }
    for name in calls {
        let func = instance
            .get_func(&mut store, name)
            .ok_or_else(|| EngineError::EntryNotFound {
                kind: KIND,
                name: name.to_owned(),
            })?
            .typed::<(), ()>(&store)
            .map_err(|e| EngineError::EntryType {
                name: name.to_owned(),
                source: e.into(),
            })?;
        if let Err(e) = func.call_async(&mut store, ()).await {
            return Ok(exit_status(e, &store.data().limits));
        }
    }
    Ok(ExitStatus::Exited(0))
}

/// Runs `component` as a WASI 0.2 or 0.3 command, by its exports (or calls `spec.entry`).
pub(crate) fn run_component(
    engine: &Engine,
    linkers: &CommandLinkers,
    component: &Component,
    spec: &RunSpec,
) -> Result<ExitStatus, EngineError> {
    if spec.entry.is_none() && component_world_of(engine, component)? == HostWorld::CommandP3 {
        return run_p3_command(engine, linkers, component, spec);
    }
    on_wasi_runtime(spec, run_component_inner(engine, linkers, component, spec))
}

/// The linkers commands run with, built once per [`WasmEngine`](crate::WasmEngine) on first
/// use: checking a program's imports and running it then share one. Each takes a few hundred
/// host functions, so building it twice cost a guest measurably at start.
///
/// It also keeps the WASI 0.2 commands it has type-checked ([`InstancePre`]s), so a run does
/// not check its imports a second time: matching a component against a linker of a few hundred
/// functions is a tenth of a short guest's start.
#[derive(Default)]
pub(crate) struct CommandLinkers {
    module: OnceLock<Linker<ModuleState>>,
    component: OnceLock<wasmtime::component::Linker<ComponentState>>,
    command_p3: OnceLock<wasmtime::component::Linker<ComponentState>>,
    checked_commands: Mutex<Vec<InstancePre<ComponentState>>>,
}

impl CommandLinkers {
    /// `component` matched against the 0.2 command linker: the kept [`InstancePre`] if this
    /// component was checked before, else checked now and kept. A component is recognised by
    /// the address of its code, which is unique while it is mapped — and the kept
    /// `InstancePre` holds the component, so it stays mapped.
    pub(crate) fn command_pre(
        &self,
        engine: &Engine,
        component: &Component,
    ) -> Result<InstancePre<ComponentState>, EngineError> {
        let code = component.image_range().start;
        let mut checked = self.lock_checked();
        if let Some(pre) = checked
            .iter()
            .find(|pre| pre.component().image_range().start == code)
        {
            return Ok(pre.clone());
        }
        let pre = self
            .component(engine)?
            .instantiate_pre(component)
            .map_err(unsatisfied("component"))?;
        checked.push(pre.clone());
        Ok(pre)
    }

    /// Removes every checked command but those of `keep` and hands them back: the caller drops
    /// them, or — in a process forked from the one that checked them — leaks them (see
    /// [`crate::WasmEngine::forget_preloaded_except`]).
    #[must_use = "the removed commands are to be dropped or leaked, on purpose"]
    pub(crate) fn take_checked_except(
        &self,
        keep: &[&Component],
    ) -> Vec<InstancePre<ComponentState>> {
        let mut checked = self.lock_checked();
        let (kept, others): (Vec<_>, Vec<_>) =
            std::mem::take(&mut *checked).into_iter().partition(|pre| {
                let code = pre.component().image_range().start;
                keep.iter().any(|c| c.image_range().start == code)
            });
        *checked = kept;
        others
    }

    fn lock_checked(&self) -> std::sync::MutexGuard<'_, Vec<InstancePre<ComponentState>>> {
        self.checked_commands
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The preview1 linker ([`module_linker`]).
    fn module(&self, engine: &Engine) -> Result<&Linker<ModuleState>, EngineError> {
        once(&self.module, || module_linker(engine))
    }

    /// The WASI 0.2 command linker ([`component_linker`]).
    pub(crate) fn component(
        &self,
        engine: &Engine,
    ) -> Result<&wasmtime::component::Linker<ComponentState>, EngineError> {
        once(&self.component, || component_linker(engine))
    }

    /// The WASI 0.3 command linker ([`command_p3_linker`]).
    fn command_p3(
        &self,
        engine: &Engine,
    ) -> Result<&wasmtime::component::Linker<ComponentState>, EngineError> {
        once(&self.command_p3, || command_p3_linker(engine))
    }
}

/// `cell`'s value, built by `build` if it has none yet.
fn once<T>(
    cell: &OnceLock<T>,
    build: impl FnOnce() -> Result<T, EngineError>,
) -> Result<&T, EngineError> {
    if let Some(value) = cell.get() {
        return Ok(value);
    }
    let built = build()?;
    Ok(cell.get_or_init(|| built))
}

/// The preview1 linker every module runs with.
fn module_linker(engine: &Engine) -> Result<Linker<ModuleState>, EngineError> {
    let mut linker: Linker<ModuleState> = Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_async(&mut linker, |s| &mut s.wasi).map_err(|e| {
        EngineError::Link {
            world: "preview1",
            source: e.into(),
        }
    })?;
    Ok(linker)
}

/// The WASI 0.2 linker every component runs with.
fn component_linker(
    engine: &Engine,
) -> Result<wasmtime::component::Linker<ComponentState>, EngineError> {
    let mut linker = wasmtime::component::Linker::<ComponentState>::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| EngineError::Link {
        world: "0.2",
        source: e.into(),
    })?;
    Ok(linker)
}

/// The WASI 0.3 command linker: 0.2 (async bindings, for what a 0.3 component's standard
/// library still imports) and 0.3.
fn command_p3_linker(
    engine: &Engine,
) -> Result<wasmtime::component::Linker<ComponentState>, EngineError> {
    let mut linker = wasmtime::component::Linker::<ComponentState>::new(engine);
    let link = |e: wasmtime::Error| EngineError::Link {
        world: "0.3",
        source: e.into(),
    };
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(link)?;
    wasmtime_wasi::p3::add_to_linker(&mut linker).map_err(link)?;
    Ok(linker)
}

/// Runs a WASI 0.3 command: its async `wasi:cli/run` is called inside the store's event loop
/// (`run_concurrent`), which also drives the streams and futures it hands the host, on the
/// same current-thread runtime as 0.2 commands. The run ends when `run` returns; a task the
/// guest left running after that is not waited for.
fn run_p3_command(
    engine: &Engine,
    linkers: &CommandLinkers,
    component: &Component,
    spec: &RunSpec,
) -> Result<ExitStatus, EngineError> {
    on_wasi_runtime(spec, run_p3_command_inner(engine, linkers, component, spec))
}

async fn run_p3_command_inner(
    engine: &Engine,
    linkers: &CommandLinkers,
    component: &Component,
    spec: &RunSpec,
) -> Result<ExitStatus, EngineError> {
    const KIND: &str = "component";
    let linker = linkers.command_p3(engine)?;
    let mut store = component_store(engine, spec)?;
    let command = match wasmtime_wasi::p3::bindings::Command::instantiate_async(
        &mut store, component, linker,
    )
    .await
    {
        Ok(command) => command,
        Err(e) => return guest_failure(e, &store.data().limits, KIND),
    };
    let ran = store
        .run_concurrent(async |store| command.wasi_cli_run().call_run(store).await)
        .await;
    Ok(match ran.and_then(|returned| returned) {
        Ok(Ok(())) => ExitStatus::Exited(0),
        Ok(Err(())) => ExitStatus::Exited(1),
        Err(e) => exit_status(e, &store.data().limits),
    })
}

/// Checks every import of `program` against what the host provides and `policy`: first by
/// name, listing every refusal ([`host`]), then by type against the linker it would run with
/// (`instantiate_pre`, semver-aware for components), without instantiating anything.
pub(crate) fn check_imports(
    engine: &Engine,
    linkers: &CommandLinkers,
    program: &crate::Program,
    policy: &Policy,
) -> Result<(), EngineError> {
    match program {
        crate::Program::Module(module) => {
            let linker = linkers.module(engine)?;
            let provided = preview1_functions_of(engine, linker);
            let imports: Vec<(&str, &str)> =
                module.imports().map(|i| (i.module(), i.name())).collect();
            host::check_module_names(imports, &provided, policy).map_err(|refusal| {
                EngineError::Refused {
                    kind: "module",
                    refusal,
                }
            })?;
            linker
                .instantiate_pre(module)
                .map_err(unsatisfied("module"))?;
        }
        crate::Program::Component(component) => {
            let world = component_world_of(engine, component)?;
            let names = component_import_names(engine, component);
            let exports = component_export_names(engine, component);
            host::check_component_names(
                world,
                names.iter().map(String::as_str),
                exports.iter().map(String::as_str),
                policy,
            )
            .map_err(|refusal| EngineError::Refused {
                kind: "component",
                refusal,
            })?;
            match world {
                HostWorld::Command => return linkers.command_pre(engine, component).map(drop),
                HostWorld::Proxy => {
                    crate::serve::proxy_linker::<crate::serve::RequestState>(engine)?
                        .instantiate_pre(component)
                        .map(drop)
                }
                HostWorld::CommandP3 => linkers
                    .command_p3(engine)?
                    .instantiate_pre(component)
                    .map(drop),
                HostWorld::ServiceP3 => {
                    crate::serve::service_linker::<crate::serve::RequestState>(engine)?
                        .instantiate_pre(component)
                        .map(drop)
                }
            }
            .map_err(unsatisfied("component"))?;
        }
    }
    Ok(())
}

/// The error for a program that failed the type check against `kind`'s linker.
fn unsatisfied(kind: &'static str) -> impl Fn(wasmtime::Error) -> EngineError {
    move |e| EngineError::Unsatisfied {
        kind,
        message: format!("{e:#}"),
    }
}

/// The world `component` runs in, from its exports ([`HostWorld::for_exports`]).
pub(crate) fn component_world_of(
    engine: &Engine,
    component: &Component,
) -> Result<HostWorld, EngineError> {
    let exports = component_export_names(engine, component);
    HostWorld::for_exports(exports.iter().map(String::as_str)).map_err(|message| {
        EngineError::Unsatisfied {
            kind: "component",
            message,
        }
    })
}

/// The top-level export names of `component`, in its order.
pub(crate) fn component_export_names(engine: &Engine, component: &Component) -> Vec<String> {
    component
        .component_type()
        .exports(engine)
        .map(|(name, _)| name.to_owned())
        .collect()
}

/// The top-level import names of `component`, in its order.
pub(crate) fn component_import_names(engine: &Engine, component: &Component) -> Vec<String> {
    component
        .component_type()
        .imports(engine)
        .map(|(name, _)| name.to_owned())
        .collect()
}

/// The preview 1 function names the module linker defines, sorted.
pub(crate) fn preview1_functions(
    engine: &Engine,
    linkers: &CommandLinkers,
) -> Result<Vec<String>, EngineError> {
    Ok(preview1_functions_of(engine, linkers.module(engine)?))
}

fn preview1_functions_of(engine: &Engine, linker: &Linker<ModuleState>) -> Vec<String> {
    // Listing a core linker needs a store; an empty context is enough to name the functions.
    let mut store = Store::new(
        engine,
        ModuleState {
            wasi: WasiCtxBuilder::new().build_p1(),
            limits: GuestLimits::new(None),
        },
    );
    let mut names: Vec<String> = linker
        .iter(&mut store)
        .filter(|(module, _, _)| *module == host::PREVIEW1_MODULE)
        .map(|(_, name, _)| name.to_owned())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Drives `run` to completion on a fresh wasi runtime (see [`wasi_runtime`]) with `spec`'s idle
/// task beside it, then shuts the runtime down without waiting.
fn on_wasi_runtime(
    spec: &RunSpec,
    run: impl Future<Output = Result<ExitStatus, EngineError>>,
) -> Result<ExitStatus, EngineError> {
    let runtime = wasi_runtime()?;
    let status = runtime.block_on(async {
        if let Some(task) = spec.idle_task {
            // Polled only while `run` is pending, i.e. while the guest waits: never in the way
            // of wasm that is computing.
            tokio::spawn(async move {
                tokio::time::sleep(task.after).await;
                (task.action)();
            });
        }
        run.await
    });
    runtime.shutdown_background();
    status
}

/// A component's store: its WASI context from `spec`, under `spec`'s memory limit.
fn component_store(engine: &Engine, spec: &RunSpec) -> Result<Store<ComponentState>, EngineError> {
    let state = ComponentState {
        wasi: wasi_builder(spec)?.build(),
        table: ResourceTable::new(),
        limits: GuestLimits::new(spec.memory_limit_bytes),
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limits);
    Ok(store)
}

async fn run_component_inner(
    engine: &Engine,
    linkers: &CommandLinkers,
    component: &Component,
    spec: &RunSpec,
) -> Result<ExitStatus, EngineError> {
    const KIND: &str = "component";
    let mut store = component_store(engine, spec)?;
    let pre = linkers.command_pre(engine, component)?;

    let Some(name) = spec.entry.as_deref() else {
        let command = match CommandPre::new(pre) {
            Ok(pre) => pre.instantiate_async(&mut store).await,
            Err(e) => Err(e),
        };
        let command = match command {
            Ok(command) => command,
            Err(e) => return guest_failure(e, &store.data().limits, KIND),
        };
        return Ok(match command.wasi_cli_run().call_run(&mut store).await {
            Ok(Ok(())) => ExitStatus::Exited(0),
            Ok(Err(())) => ExitStatus::Exited(1),
            Err(e) => exit_status(e, &store.data().limits),
        });
    };
    let instance = match pre.instantiate_async(&mut store).await {
        Ok(instance) => instance,
        Err(e) => return guest_failure(e, &store.data().limits, KIND),
    };
    let func = instance
        .get_func(&mut store, name)
        .ok_or_else(|| EngineError::EntryNotFound {
            kind: KIND,
            name: name.to_owned(),
        })?
        .typed::<(), ()>(&store)
        .map_err(|e| EngineError::EntryType {
            name: name.to_owned(),
            source: e.into(),
        })?;
    Ok(match func.call_async(&mut store, ()).await {
        Ok(()) => ExitStatus::Exited(0),
        Err(e) => exit_status(e, &store.data().limits),
    })
}

/// The calling thread drives WASI's timers and sockets while the guest waits; blocking work
/// (name lookups) goes to tokio's blocking pool, whose threads start on demand and exit after
/// 10 s idle, and wasmtime-wasi reads stdin on a thread of its own, started at the first read.
fn wasi_runtime() -> Result<tokio::runtime::Runtime, EngineError> {
    tokio::runtime::Builder::new_current_thread()
        .thread_name("wasi-io")
        .enable_io()
        .enable_time()
        .build()
        .map_err(|source| EngineError::Runtime { source })
}

fn wasi_builder(spec: &RunSpec) -> Result<WasiCtxBuilder, EngineError> {
    let mut builder = WasiCtxBuilder::new();
    // Must precede the preopens (each captures it): file operations run on the calling thread
    // instead of a round trip through tokio's blocking pool.
    builder.allow_blocking_current_thread(true);
    builder.args(&spec.args).envs(&spec.env);
    if let Some(cwd) = &spec.cwd {
        builder.initial_cwd(cwd);
        if !spec.env.iter().any(|(k, _)| k == "PWD") {
            builder.env("PWD", cwd);
        }
    }
    match &spec.stdio {
        Stdio::Inherit => {
            builder.inherit_stdio();
        }
        Stdio::Files {
            stdin,
            stdout,
            stderr,
        } => {
            let dup = |file: &File, stream| {
                file.try_clone()
                    .map_err(|source| EngineError::Stdio { stream, source })
            };
            if let Some(stdin) = stdin {
                builder.stdin(InputFile::new(dup(stdin, "stdin")?));
            }
            builder
                .stdout(OutputFile::new(dup(stdout, "stdout")?))
                .stderr(OutputFile::new(dup(stderr, "stderr")?));
        }
    }
    for preopen in &spec.preopens {
        let perms = if preopen.read_only {
            FsPerms::ReadOnly
        } else {
            FsPerms::ReadWrite
        };
        builder
            .preopened_dir(&preopen.host, &preopen.guest, perms)
            .map_err(|e| EngineError::Preopen {
                host: preopen.host.clone(),
                guest: preopen.guest.clone(),
                source: e.into(),
            })?;
    }
    if spec.allow_network {
        builder
            .inherit_network()
            .allow_tcp(true)
            .allow_udp(true)
            .allow_ip_name_lookup(true);
    }
    Ok(builder)
}

/// Instantiation failed: a trap in a start function, an exit or the memory limit is the
/// guest's doing; anything else (typically a missing import) is an [`EngineError`].
fn guest_failure(
    error: wasmtime::Error,
    limits: &GuestLimits,
    kind: &'static str,
) -> Result<ExitStatus, EngineError> {
    let guest_caused = error.downcast_ref::<I32Exit>().is_some()
        || error.downcast_ref::<Trap>().is_some()
        || limits.exceeded;
    if guest_caused {
        Ok(exit_status(error, limits))
    } else {
        Err(EngineError::Instantiate {
            kind,
            source: error.into(),
        })
    }
}

/// Classifies the error a guest call ended with.
fn exit_status(error: wasmtime::Error, limits: &GuestLimits) -> ExitStatus {
    if let Some(exit) = error.downcast_ref::<I32Exit>() {
        return ExitStatus::Exited(exit.0);
    }
    if let (true, Some(limit)) = (limits.exceeded, limits.limit) {
        return ExitStatus::MemoryLimit { limit };
    }
    let backtrace = error
        .downcast_ref::<WasmBacktrace>()
        .map(ToString::to_string);
    let mut message = error
        .chain()
        .map(ToString::to_string)
        .filter(|m| Some(m) != backtrace.as_ref())
        .collect::<Vec<_>>()
        .join(": ");
    if let Some(backtrace) = backtrace {
        message.push('\n');
        message.push_str(&backtrace);
    }
    ExitStatus::Trapped { message }
}

struct ModuleState {
    wasi: WasiP1Ctx,
    limits: GuestLimits,
}

pub(crate) struct ComponentState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: GuestLimits,
}

impl WasiView for ComponentState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Caps the total size of the guest's linear memories (a component can have several) and
/// remembers whether the cap was what stopped it. Exceeding the cap traps instead of making
/// `memory.grow` return -1, so the run ends with a clear [`ExitStatus::MemoryLimit`] rather
/// than with whatever the guest's allocator does on failure. Growth beyond a memory's own
/// declared maximum keeps wasm semantics (`memory.grow` returns -1). Tables and instance
/// counts keep wasmtime's defaults (10 000 instances, tables and memories).
struct GuestLimits {
    limit: Option<u64>,
    /// Bytes currently granted across all memories.
    committed: u64,
    exceeded: bool,
}

impl GuestLimits {
    fn new(limit: Option<u64>) -> Self {
        GuestLimits {
            limit,
            committed: 0,
            exceeded: false,
        }
    }
}

impl ResourceLimiter for GuestLimits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        let growth = desired.saturating_sub(current) as u64;
        let total = self.committed.saturating_add(growth);
        if let Some(limit) = self.limit
            && total > limit
        {
            self.exceeded = true;
            wasmtime::bail!(
                "memory limit of {limit} bytes exceeded: growing a linear memory to {desired} \
                 bytes would bring the total to {total} bytes"
            );
        }
        self.committed = total;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        Err(error.context("the host could not grow a linear memory"))
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(maximum.is_none_or(|max| desired <= max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One member each interface really has; the probe imports it with a deliberately wrong
    /// type, so the type-check fails either way, but only a missing interface reports the
    /// member's implementation as missing.
    const MEMBERS: &[(&str, &str)] = &[
        ("wasi:cli/environment", "get-environment"),
        ("wasi:cli/exit", "exit"),
        ("wasi:cli/stderr", "get-stderr"),
        ("wasi:cli/stdin", "get-stdin"),
        ("wasi:cli/stdout", "get-stdout"),
        ("wasi:cli/terminal-input", "terminal-input"),
        ("wasi:cli/terminal-output", "terminal-output"),
        ("wasi:cli/terminal-stderr", "get-terminal-stderr"),
        ("wasi:cli/terminal-stdin", "get-terminal-stdin"),
        ("wasi:cli/terminal-stdout", "get-terminal-stdout"),
        ("wasi:clocks/monotonic-clock", "now"),
        ("wasi:clocks/wall-clock", "now"),
        ("wasi:filesystem/preopens", "get-directories"),
        ("wasi:filesystem/types", "descriptor"),
        ("wasi:io/error", "error"),
        ("wasi:io/poll", "poll"),
        ("wasi:io/streams", "input-stream"),
        ("wasi:random/insecure", "get-insecure-random-bytes"),
        ("wasi:random/insecure-seed", "insecure-seed"),
        ("wasi:random/random", "get-random-bytes"),
        ("wasi:sockets/instance-network", "instance-network"),
        ("wasi:sockets/ip-name-lookup", "resolve-addresses"),
        ("wasi:sockets/network", "network"),
        ("wasi:sockets/tcp", "tcp-socket"),
        ("wasi:sockets/tcp-create-socket", "create-tcp-socket"),
        ("wasi:sockets/udp", "udp-socket"),
        ("wasi:sockets/udp-create-socket", "create-udp-socket"),
    ];

    fn probe(engine: &Engine, interface: &str, member: &str) -> Result<Component, String> {
        let wat = format!(
            r#"(component (import "{interface}" (instance (export "{member}" (func (param "wasmcell-probe" u8))))))"#
        );
        let bytes = wat::parse_str(&wat).map_err(|e| e.to_string())?;
        Component::from_binary(engine, &bytes).map_err(|e| e.to_string())
    }

    fn defined(result: wasmtime::Result<impl Sized>, interface: &str) -> Result<bool, String> {
        match result {
            Ok(_) => Err(format!("{interface}: the probe type-checked")),
            Err(e) => Ok(!format!("{e:#}").contains("implementation is missing")),
        }
    }

    /// WASI 0.3's interfaces and one member each; `None` for interfaces of types only, which
    /// any linker satisfies (a component's import of them carries no function to define).
    const P3_MEMBERS: &[(&str, Option<&str>)] = &[
        ("wasi:cli/environment", Some("get-environment")),
        ("wasi:cli/exit", Some("exit")),
        ("wasi:cli/stderr", Some("write-via-stream")),
        ("wasi:cli/stdin", Some("read-via-stream")),
        ("wasi:cli/stdout", Some("write-via-stream")),
        ("wasi:cli/terminal-input", Some("terminal-input")),
        ("wasi:cli/terminal-output", Some("terminal-output")),
        ("wasi:cli/terminal-stderr", Some("get-terminal-stderr")),
        ("wasi:cli/terminal-stdin", Some("get-terminal-stdin")),
        ("wasi:cli/terminal-stdout", Some("get-terminal-stdout")),
        ("wasi:cli/types", None),
        ("wasi:clocks/monotonic-clock", Some("now")),
        ("wasi:clocks/system-clock", Some("now")),
        ("wasi:clocks/types", None),
        ("wasi:filesystem/preopens", Some("get-directories")),
        ("wasi:filesystem/types", Some("descriptor")),
        ("wasi:random/insecure", Some("get-insecure-random-bytes")),
        ("wasi:random/insecure-seed", Some("get-insecure-seed")),
        ("wasi:random/random", Some("get-random-bytes")),
        ("wasi:sockets/ip-name-lookup", Some("resolve-addresses")),
        ("wasi:sockets/types", Some("tcp-socket")),
    ];

    const HTTP_MEMBERS: &[(&str, &str)] = &[
        ("wasi:http/outgoing-handler", "handle"),
        ("wasi:http/types", "http-error-code"),
    ];

    const P3_HTTP_MEMBERS: &[(&str, &str)] =
        &[("wasi:http/client", "send"), ("wasi:http/types", "fields")];

    /// Whether the linker `world`'s components run with defines `interface`'s `member`.
    fn world_defines(
        engine: &Engine,
        world: HostWorld,
        interface: &str,
        member: &str,
    ) -> Result<bool, String> {
        let component = probe(engine, interface, member)?;
        let error = |e: EngineError| e.to_string();
        match world {
            HostWorld::Command => defined(
                component_linker(engine)
                    .map_err(error)?
                    .instantiate_pre(&component),
                interface,
            ),
            HostWorld::CommandP3 => defined(
                command_p3_linker(engine)
                    .map_err(error)?
                    .instantiate_pre(&component),
                interface,
            ),
            HostWorld::Proxy => defined(
                crate::serve::proxy_linker::<crate::serve::RequestState>(engine)
                    .map_err(error)?
                    .instantiate_pre(&component),
                interface,
            ),
            HostWorld::ServiceP3 => defined(
                crate::serve::service_linker::<crate::serve::RequestState>(engine)
                    .map_err(error)?
                    .instantiate_pre(&component),
                interface,
            ),
        }
    }

    #[test]
    fn every_world_is_what_its_linker_defines() -> Result<(), String> {
        let listed = |members: &[(&'static str, &'static str)]| -> Vec<&'static str> {
            members.iter().map(|(name, _)| *name).collect()
        };
        assert_eq!(listed(MEMBERS), host::WASI_P2_INTERFACES);
        assert_eq!(listed(HTTP_MEMBERS), host::WASI_HTTP_INTERFACES);
        let p3: Vec<&str> = P3_MEMBERS.iter().map(|(name, _)| *name).collect();
        assert_eq!(p3, host::WASI_P3_INTERFACES);
        assert_eq!(listed(P3_HTTP_MEMBERS), host::WASI_P3_HTTP_INTERFACES);

        let p2_version = host::WASI_P2_VERSION;
        let p3_version = host::WASI_P3_VERSION;
        let every: Vec<(&str, &str, Option<&str>)> = MEMBERS
            .iter()
            .chain(HTTP_MEMBERS)
            .map(|(name, member)| (*name, p2_version, Some(*member)))
            .chain(
                P3_MEMBERS
                    .iter()
                    .map(|(name, member)| (*name, p3_version, *member)),
            )
            .chain(
                P3_HTTP_MEMBERS
                    .iter()
                    .map(|(name, member)| (*name, p3_version, Some(*member))),
            )
            .collect();
        let engine = Engine::new(&crate::config::engine_config()).map_err(|e| e.to_string())?;
        for world in HostWorld::ALL {
            for (interface, version, member) in &every {
                let Some(member) = member else { continue };
                let versioned = format!("{interface}@{version}");
                assert_eq!(
                    world.provides(interface, version),
                    world_defines(&engine, world, &versioned, member)?,
                    "{world:?}: the table and the linker disagree on {versioned}"
                );
                let next_minor = format!("{interface}@0.4.0");
                assert!(
                    !world_defines(&engine, world, &next_minor, member)?,
                    "{world:?}: {next_minor} should not be satisfied"
                );
            }
        }
        assert!(!world_defines(
            &engine,
            HostWorld::ServiceP3,
            "wasi:cli/nonesuch@0.3.0",
            "get-environment"
        )?);
        Ok(())
    }

    #[test]
    fn each_command_linker_is_built_once_per_engine() -> Result<(), String> {
        let engine = Engine::new(&crate::config::engine_config()).map_err(|e| e.to_string())?;
        let linkers = CommandLinkers::default();
        let error = |e: EngineError| e.to_string();
        assert!(std::ptr::eq(
            linkers.module(&engine).map_err(error)?,
            linkers.module(&engine).map_err(error)?
        ));
        assert!(std::ptr::eq(
            linkers.component(&engine).map_err(error)?,
            linkers.component(&engine).map_err(error)?
        ));
        assert!(std::ptr::eq(
            linkers.command_p3(&engine).map_err(error)?,
            linkers.command_p3(&engine).map_err(error)?
        ));
        Ok(())
    }

    #[test]
    fn preview1_functions_come_from_the_linker() -> Result<(), String> {
        let engine = Engine::new(&crate::config::engine_config()).map_err(|e| e.to_string())?;
        let names =
            preview1_functions(&engine, &CommandLinkers::default()).map_err(|e| e.to_string())?;
        for expected in [
            "fd_write",
            "proc_exit",
            "path_open",
            "sock_accept",
            "poll_oneoff",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} missing from {names:?}"
            );
        }
        Ok(())
    }
}
