//! End-to-end tests of the engine: preview1 modules written in WAT, a WASI 0.2 component built
//! from Rust source with `rustc --target wasm32-wasip2`, the compile cache and the filesystem
//! sandbox. Fixtures are built here; nothing binary is checked in.

use std::fs::{self, File};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use wasmcell_engine::{
    EngineOptions, ExitStatus, LoadOutcome, OptimizeOutcome, Policy, PreloadBudget, PreloadScan,
    Preopen, Program, RunSpec, Stdio, Tier, Wasm, WasmEngine,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const PREAMBLE: &str = r#"
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_open"
    (func $path_open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $proc_exit (param i32)))
  (memory (export "memory") 1)
"#;

fn module(body: &str) -> Vec<u8> {
    let text = format!("(module {PREAMBLE} {body})");
    match wat::parse_str(&text) {
        Ok(bytes) => bytes,
        Err(e) => panic!("fixture does not assemble: {e}\n{text}"),
    }
}

/// Writes "hello\n" to fd 1 and returns from `_start`.
fn hello_module() -> Vec<u8> {
    module(
        r#"
        (data (i32.const 0) "hello\n")
        (data (i32.const 16) "\00\00\00\00\06\00\00\00")
        (func (export "_start")
          (drop (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 32))))
        (func (export "other") (call $proc_exit (i32.const 42)))
        "#,
    )
}

/// Opens `path` relative to the first preopen (fd 3). Exits with the errno if that fails;
/// otherwise either copies up to 256 bytes of the file to stdout (`write: None`) or writes
/// `write` to it.
fn open_module(path: &str, write: Option<&str>) -> Vec<u8> {
    // oflags: CREAT|TRUNC = 9; rights: FD_READ = 2, FD_WRITE = 64; lookupflags SYMLINK_FOLLOW.
    let (oflags, rights, data) = match write {
        Some(text) => (9, 64, text),
        None => (0, 2, ""),
    };
    let action = if write.is_some() {
        // iovec at 16 = (2048, len(data)); write it to the opened fd.
        format!(
            r#"(i32.store (i32.const 16) (i32.const 2048))
               (i32.store (i32.const 20) (i32.const {len}))
               (local.set $err (call $fd_write (i32.load (i32.const 0)) (i32.const 16) (i32.const 1) (i32.const 24)))"#,
            len = data.len()
        )
    } else {
        // read into 2048..2304, then write what was read to stdout.
        r#"(i32.store (i32.const 16) (i32.const 2048))
           (i32.store (i32.const 20) (i32.const 256))
           (local.set $err (call $fd_read (i32.load (i32.const 0)) (i32.const 16) (i32.const 1) (i32.const 24)))
           (i32.store (i32.const 20) (i32.load (i32.const 24)))
           (drop (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 28)))"#
            .to_owned()
    };
    module(&format!(
        r#"
        (data (i32.const 1024) "{path}")
        (data (i32.const 2048) "{data}")
        (func (export "_start") (local $err i32)
          (local.set $err (call $path_open (i32.const 3) (i32.const 1)
            (i32.const 1024) (i32.const {path_len}) (i32.const {oflags})
            (i64.const {rights}) (i64.const 0) (i32.const 0) (i32.const 0)))
          (if (local.get $err) (then (call $proc_exit (local.get $err))))
          {action}
          (if (local.get $err) (then (call $proc_exit (local.get $err)))))
        "#,
        path_len = path.len(),
    ))
}

/// Captured stdio for one run.
struct Capture {
    dir: tempfile::TempDir,
}

impl Capture {
    fn new() -> Result<Self, std::io::Error> {
        Ok(Capture {
            dir: tempfile::tempdir()?,
        })
    }

    fn stdio(&self) -> Result<Stdio, std::io::Error> {
        Ok(Stdio::Files {
            stdin: None,
            stdout: File::create(self.dir.path().join("stdout"))?,
            stderr: File::create(self.dir.path().join("stderr"))?,
        })
    }

    fn stdout(&self) -> String {
        fs::read_to_string(self.dir.path().join("stdout")).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }
}

fn engine() -> Result<WasmEngine, wasmcell_engine::EngineError> {
    WasmEngine::new(EngineOptions::default())
}

fn run(wasm: &[u8], spec: RunSpec) -> Result<ExitStatus, Box<dyn std::error::Error>> {
    let engine = engine()?;
    let (program, outcome) = engine.load(wasm)?;
    assert_eq!(outcome, LoadOutcome::CacheDisabled);
    Ok(engine.run(&program, &spec)?)
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn module_writes_stdout_and_exits_zero() -> TestResult {
    let out = Capture::new()?;
    let spec = RunSpec {
        stdio: out.stdio()?,
        ..RunSpec::default()
    };
    assert_eq!(run(&hello_module(), spec)?, ExitStatus::Exited(0));
    assert_eq!(out.stdout(), "hello\n");
    Ok(())
}

#[test]
fn proc_exit_code_is_the_exit_status() -> TestResult {
    let wasm = module(r#"(func (export "_start") (call $proc_exit (i32.const 7)))"#);
    assert_eq!(run(&wasm, RunSpec::default())?, ExitStatus::Exited(7));
    Ok(())
}

#[test]
fn unreachable_is_a_trap_with_backtrace() -> TestResult {
    let wasm = module(r#"(func $boom (export "_start") unreachable)"#);
    match run(&wasm, RunSpec::default())? {
        ExitStatus::Trapped { message } => {
            assert!(message.contains("unreachable"), "{message}");
            assert!(message.contains("wasm backtrace"), "{message}");
            assert!(message.contains("boom"), "{message}");
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    Ok(())
}

#[test]
fn growing_past_the_memory_limit_is_reported() -> TestResult {
    // 1 page to start; grow by 16 pages (1 MiB) until memory.grow fails.
    let wasm = module(
        r#"(func (export "_start")
             (loop $grow
               (br_if $grow (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))))"#,
    );
    let limit = 4 << 20;
    let spec = RunSpec {
        memory_limit_bytes: Some(limit),
        ..RunSpec::default()
    };
    assert_eq!(run(&wasm, spec)?, ExitStatus::MemoryLimit { limit });
    // Within the limit nothing happens; the wasm maximum still makes memory.grow return -1.
    let bounded = wat::parse_str(
        r#"(module (memory 1 8)
             (func (export "_start")
               (loop $grow (br_if $grow (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))))"#,
    )?;
    let spec = RunSpec {
        memory_limit_bytes: Some(limit),
        ..RunSpec::default()
    };
    assert_eq!(run(&bounded, spec)?, ExitStatus::Exited(0));
    Ok(())
}

#[test]
fn initial_memory_over_the_limit_is_reported() -> TestResult {
    let wasm = wat::parse_str(r#"(module (memory 64) (func (export "_start")))"#)?;
    let spec = RunSpec {
        memory_limit_bytes: Some(1 << 20),
        ..RunSpec::default()
    };
    assert_eq!(
        run(&wasm, spec)?,
        ExitStatus::MemoryLimit { limit: 1 << 20 }
    );
    Ok(())
}

#[test]
fn entry_calls_the_named_export() -> TestResult {
    let spec = RunSpec {
        entry: Some("other".to_owned()),
        ..RunSpec::default()
    };
    assert_eq!(run(&hello_module(), spec)?, ExitStatus::Exited(42));

    let engine = engine()?;
    let (program, _) = engine.load(&hello_module())?;
    let spec = RunSpec {
        entry: Some("missing".to_owned()),
        ..RunSpec::default()
    };
    let err = engine
        .run(&program, &spec)
        .err()
        .ok_or("missing export ran")?;
    assert!(err.to_string().contains("\"missing\""), "{err}");
    Ok(())
}

#[test]
fn reactor_initialize_runs_before_the_entry() -> TestResult {
    let wasm = module(
        r#"(global $ready (mut i32) (i32.const 0))
           (func (export "_initialize") (global.set $ready (i32.const 5)))
           (func (export "run") (call $proc_exit (global.get $ready)))"#,
    );
    let spec = RunSpec {
        entry: Some("run".to_owned()),
        ..RunSpec::default()
    };
    assert_eq!(run(&wasm, spec)?, ExitStatus::Exited(5));
    Ok(())
}

#[test]
fn non_wasm_and_missing_imports_are_errors() -> TestResult {
    let engine = engine()?;
    let err = engine.load(b"\x7fELF....").err().ok_or("ELF loaded")?;
    assert!(
        err.to_string().contains("not a WebAssembly binary"),
        "{err}"
    );

    let wasm = wat::parse_str(r#"(module (import "env" "nope" (func)) (func (export "_start")))"#)?;
    let (program, _) = engine.load(&wasm)?;
    let err = engine
        .run(&program, &RunSpec::default())
        .err()
        .ok_or("instantiated with a missing import")?;
    assert!(err.to_string().contains("instantiate"), "{err}");
    Ok(())
}

fn preopen(host: &Path, read_only: bool) -> Vec<Preopen> {
    vec![Preopen {
        host: host.to_owned(),
        guest: "/".to_owned(),
        read_only,
    }]
}

#[test]
fn writable_preopen_accepts_writes_and_read_only_refuses_them() -> TestResult {
    let root = tempfile::tempdir()?;
    let wasm = open_module("new.txt", Some("written"));

    let spec = RunSpec {
        preopens: preopen(root.path(), false),
        ..RunSpec::default()
    };
    assert_eq!(run(&wasm, spec)?, ExitStatus::Exited(0));
    assert_eq!(fs::read_to_string(root.path().join("new.txt"))?, "written");

    fs::remove_file(root.path().join("new.txt"))?;
    let spec = RunSpec {
        preopens: preopen(root.path(), true),
        ..RunSpec::default()
    };
    match run(&wasm, spec)? {
        ExitStatus::Exited(code) if code != 0 => {}
        other => panic!("write to a read-only preopen was not refused: {other:?}"),
    }
    assert!(!root.path().join("new.txt").exists());
    Ok(())
}

#[test]
fn symlinks_cannot_escape_a_preopen() -> TestResult {
    let outside = tempfile::tempdir()?;
    fs::write(outside.path().join("secret"), "host secret")?;
    let root = tempfile::tempdir()?;
    fs::write(root.path().join("inside.txt"), "inside")?;
    symlink(outside.path(), root.path().join("abs"))?;
    let relative = Path::new("..").join(outside.path().file_name().ok_or("no name")?);
    symlink(&relative, root.path().join("rel"))?;
    symlink("/etc", root.path().join("etc"))?;

    // Control: the same module reads a file inside the preopen.
    let out = Capture::new()?;
    let spec = RunSpec {
        preopens: preopen(root.path(), true),
        stdio: out.stdio()?,
        ..RunSpec::default()
    };
    assert_eq!(
        run(&open_module("inside.txt", None), spec)?,
        ExitStatus::Exited(0)
    );
    assert_eq!(out.stdout(), "inside");

    for path in ["abs/secret", "rel/secret", "etc/passwd", "../secret"] {
        let out = Capture::new()?;
        let spec = RunSpec {
            preopens: preopen(root.path(), false),
            stdio: out.stdio()?,
            ..RunSpec::default()
        };
        match run(&open_module(path, None), spec)? {
            ExitStatus::Exited(code) if code != 0 => {}
            other => panic!("{path} was readable: {other:?}, stdout {:?}", out.stdout()),
        }
        assert_eq!(out.stdout(), "", "{path}");
    }
    Ok(())
}

fn write_corrupted(path: &Path) -> std::io::Result<()> {
    let mut bytes = fs::read(path)?;
    let middle = bytes.len() / 2;
    for b in &mut bytes[middle..middle + 16] {
        *b ^= 0xff;
    }
    fs::write(path, bytes)
}

fn cache_files(dir: &Path) -> Result<Vec<PathBuf>, std::io::Error> {
    let mut files = Vec::new();
    for fingerprint in fs::read_dir(dir)? {
        for entry in fs::read_dir(fingerprint?.path())? {
            files.push(entry?.path());
        }
    }
    files.sort();
    Ok(files)
}

#[test]
fn cache_compiles_once_detects_corruption_and_is_private() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let cache_dir = tmp.path().join("cache");
    let options = EngineOptions {
        cache_dir: Some(cache_dir.clone()),
        ..Default::default()
    };
    let wasm = hello_module();

    let engine = WasmEngine::new(options.clone())?;
    let (program, outcome) = engine.load(&wasm)?;
    assert_eq!(outcome, LoadOutcome::Compiled);
    assert!(matches!(program, Program::Module(_)));

    // Directory and entry layout and modes.
    assert_eq!(
        fs::metadata(&cache_dir)?.permissions().mode() & 0o7777,
        0o700
    );
    let fp_dir = cache_dir.join(engine.fingerprint());
    assert_eq!(fs::metadata(&fp_dir)?.permissions().mode() & 0o7777, 0o700);
    let files = cache_files(&cache_dir)?;
    // The entry, its sidecar and its (empty, unlocked) compile lock.
    assert_eq!(files.len(), 3, "{files:?}");
    assert!(
        files
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "lock"))
    );
    for file in &files {
        assert_eq!(fs::metadata(file)?.permissions().mode() & 0o7777, 0o600);
    }
    let cwasm = files
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .ok_or("no .cwasm")?
        .clone();

    // A new engine (as in a new process) hits the cache, and the program runs.
    let engine = WasmEngine::new(options.clone())?;
    let (program, outcome) = engine.load(&wasm)?;
    assert_eq!(outcome, LoadOutcome::CacheHit);
    let out = Capture::new()?;
    let spec = RunSpec {
        stdio: out.stdio()?,
        ..RunSpec::default()
    };
    assert_eq!(engine.run(&program, &spec)?, ExitStatus::Exited(0));
    assert_eq!(out.stdout(), "hello\n");

    // Flipped bytes: detected, recompiled, replaced.
    let good = fs::read(&cwasm)?;
    write_corrupted(&cwasm)?;
    let engine = WasmEngine::new(options.clone())?;
    let (_, outcome) = engine.load(&wasm)?;
    assert_eq!(outcome, LoadOutcome::CacheCorruptRecompiled);
    assert_eq!(fs::read(&cwasm)?, good);
    assert_eq!(engine.load(&wasm)?.1, LoadOutcome::CacheHit);

    // A missing sidecar also counts as corrupt; a loosened directory mode is tightened.
    fs::remove_file(cwasm.with_extension("blake3"))?;
    fs::set_permissions(&cache_dir, fs::Permissions::from_mode(0o755))?;
    let engine = WasmEngine::new(options)?;
    assert_eq!(
        fs::metadata(&cache_dir)?.permissions().mode() & 0o7777,
        0o700
    );
    assert_eq!(engine.load(&wasm)?.1, LoadOutcome::CacheCorruptRecompiled);
    assert_eq!(engine.load(&wasm)?.1, LoadOutcome::CacheHit);
    assert_eq!(cache_files(&cache_dir)?.len(), 3, "entry, sidecar, lock");
    Ok(())
}

const GUEST_SOURCE: &str = r#"
use std::io::Read;
fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("echo") => println!("{}", args[2..].join(" ")),
        Some("exit") => std::process::exit(args[2].parse().unwrap()),
        Some("env") => for (k, v) in std::env::vars() { println!("{k}={v}") },
        Some("cwd") => println!("{}", std::env::current_dir().unwrap().display()),
        Some("cat") => match std::fs::read_to_string(&args[2]) {
            Ok(text) => print!("{text}"),
            Err(e) => { eprintln!("cat {}: {e}", args[2]); std::process::exit(1) }
        },
        Some("write") => if let Err(e) = std::fs::write(&args[2], &args[3]) {
            eprintln!("write {}: {e}", args[2]); std::process::exit(1)
        },
        Some("stdin") => { let mut s = String::new(); std::io::stdin().read_to_string(&mut s).unwrap(); print!("{s}") }
        Some("connect") => match std::net::TcpStream::connect(&args[2]) {
            Ok(_) => println!("connected"),
            Err(e) => { eprintln!("connect: {e}"); std::process::exit(1) }
        },
        Some("alloc") => {
            let mib: usize = args[2].parse().unwrap();
            let v = vec![1u8; mib << 20];
            println!("{}", v.iter().map(|b| *b as usize).sum::<usize>());
        }
        Some("trap") => { std::process::abort() }
        _ => {}
    }
}
"#;

/// The Rust guest above as a WASI 0.2 component, built once per test binary.
fn component() -> Result<&'static [u8], String> {
    static WASM: OnceLock<Result<Vec<u8>, String>> = OnceLock::new();
    WASM.get_or_init(|| {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let src = dir.path().join("guest.rs");
        let out = dir.path().join("guest.wasm");
        fs::write(&src, GUEST_SOURCE).map_err(|e| e.to_string())?;
        let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
        let output = Command::new(rustc)
            .args(["--edition", "2021", "--target", "wasm32-wasip2", "-O", "-o"])
            .arg(&out)
            .arg(&src)
            .output()
            .map_err(|e| format!("cannot run rustc: {e}"))?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).into_owned());
        }
        fs::read(&out).map_err(|e| e.to_string())
    })
    .as_ref()
    .map(Vec::as_slice)
    .map_err(Clone::clone)
}

/// Component tests share one cache under cargo's test scratch directory, so the guest is
/// compiled once (concurrently by whichever tests get there first, which also exercises racing
/// cache writers).
fn run_component(spec: RunSpec) -> Result<ExitStatus, Box<dyn std::error::Error>> {
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("engine-component-cache");
    let engine = engine_cached_in(&cache)?;
    let (program, _) = engine.load(component()?)?;
    assert!(matches!(program, Program::Component(_)));
    Ok(engine.run(&program, &spec)?)
}

#[test]
fn component_runs_with_args_env_cwd_and_exit_codes() -> TestResult {
    let out = Capture::new()?;
    let spec = RunSpec {
        args: args(&["guest", "echo", "hello", "world"]),
        stdio: out.stdio()?,
        ..RunSpec::default()
    };
    assert_eq!(run_component(spec)?, ExitStatus::Exited(0));
    assert_eq!(out.stdout(), "hello world\n");

    let out = Capture::new()?;
    let spec = RunSpec {
        args: args(&["guest", "env"]),
        env: vec![("GREETING".to_owned(), "hi".to_owned())],
        cwd: Some("/work".to_owned()),
        stdio: out.stdio()?,
        ..RunSpec::default()
    };
    assert_eq!(run_component(spec)?, ExitStatus::Exited(0));
    assert_eq!(out.stdout(), "GREETING=hi\nPWD=/work\n");

    // Rust's wasm32-wasip2 std (1.95) exits through `wasi:cli/exit.exit(result)`, not
    // `exit-with-code`, so any non-zero code reaches the host as a plain failure: 1.
    let spec = RunSpec {
        args: args(&["guest", "exit", "7"]),
        ..RunSpec::default()
    };
    assert_eq!(run_component(spec)?, ExitStatus::Exited(1));

    let out = Capture::new()?;
    let spec = RunSpec {
        args: args(&["guest", "trap"]),
        stdio: out.stdio()?,
        ..RunSpec::default()
    };
    match run_component(spec)? {
        ExitStatus::Trapped { message } => assert!(message.contains("unreachable"), "{message}"),
        other => panic!("expected a trap, got {other:?}"),
    }
    Ok(())
}

#[test]
fn component_stdin_from_a_file() -> TestResult {
    let tmp = tempfile::tempdir()?;
    fs::write(tmp.path().join("in"), "from stdin")?;
    let out = Capture::new()?;
    let Stdio::Files { stdout, stderr, .. } = out.stdio()? else {
        unreachable!()
    };
    let spec = RunSpec {
        args: args(&["guest", "stdin"]),
        stdio: Stdio::Files {
            stdin: Some(File::open(tmp.path().join("in"))?),
            stdout,
            stderr,
        },
        ..RunSpec::default()
    };
    assert_eq!(run_component(spec)?, ExitStatus::Exited(0));
    assert_eq!(out.stdout(), "from stdin");
    Ok(())
}

#[test]
fn component_filesystem_is_confined_to_preopens() -> TestResult {
    let outside = tempfile::tempdir()?;
    fs::write(outside.path().join("secret"), "host secret")?;
    let root = tempfile::tempdir()?;
    fs::write(root.path().join("inside.txt"), "inside")?;
    symlink(outside.path(), root.path().join("abs"))?;
    symlink("/etc", root.path().join("etc"))?;

    let cat =
        |path: &str, read_only| -> Result<(ExitStatus, Capture), Box<dyn std::error::Error>> {
            let out = Capture::new()?;
            let spec = RunSpec {
                args: args(&["guest", "cat", path]),
                preopens: preopen(root.path(), read_only),
                stdio: out.stdio()?,
                ..RunSpec::default()
            };
            Ok((run_component(spec)?, out))
        };
    let (status, out) = cat("/inside.txt", true)?;
    assert_eq!(status, ExitStatus::Exited(0));
    assert_eq!(out.stdout(), "inside");
    for path in ["/abs/secret", "/etc/passwd", "/../secret", "abs/secret"] {
        let (status, out) = cat(path, false)?;
        assert_eq!(status, ExitStatus::Exited(1), "{path}: {}", out.stderr());
        assert!(out.stderr().starts_with("cat "), "{path}: {}", out.stderr());
        assert_eq!(out.stdout(), "", "{path}");
    }

    let out = Capture::new()?;
    let spec = RunSpec {
        args: args(&["guest", "write", "/new.txt", "x"]),
        preopens: preopen(root.path(), true),
        stdio: out.stdio()?,
        ..RunSpec::default()
    };
    assert_eq!(run_component(spec)?, ExitStatus::Exited(1));
    assert!(
        out.stderr().starts_with("write /new.txt: "),
        "{}",
        out.stderr()
    );
    assert!(!root.path().join("new.txt").exists());
    Ok(())
}

#[test]
fn component_network_is_off_unless_allowed() -> TestResult {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?.to_string();
    for (allow, expected) in [
        (false, ExitStatus::Exited(1)),
        (true, ExitStatus::Exited(0)),
    ] {
        let out = Capture::new()?;
        let spec = RunSpec {
            args: args(&["guest", "connect", &addr]),
            allow_network: allow,
            stdio: out.stdio()?,
            ..RunSpec::default()
        };
        assert_eq!(
            run_component(spec)?,
            expected,
            "allow_network={allow}: {}",
            out.stderr()
        );
        if !allow {
            assert!(out.stderr().starts_with("connect: "), "{}", out.stderr());
        }
    }
    Ok(())
}

#[test]
fn component_memory_limit() -> TestResult {
    let spec = RunSpec {
        args: args(&["guest", "alloc", "64"]),
        memory_limit_bytes: Some(32 << 20),
        ..RunSpec::default()
    };
    assert_eq!(
        run_component(spec)?,
        ExitStatus::MemoryLimit { limit: 32 << 20 }
    );
    let out = Capture::new()?;
    let spec = RunSpec {
        args: args(&["guest", "alloc", "8"]),
        memory_limit_bytes: Some(32 << 20),
        stdio: out.stdio()?,
        ..RunSpec::default()
    };
    assert_eq!(run_component(spec)?, ExitStatus::Exited(0));
    assert_eq!(out.stdout(), format!("{}\n", 8 << 20));
    Ok(())
}

#[test]
fn component_cache_round_trip() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let options = EngineOptions {
        cache_dir: Some(tmp.path().to_owned()),
        ..Default::default()
    };
    let wasm = component()?;
    assert_eq!(
        WasmEngine::new(options.clone())?.load(wasm)?.1,
        LoadOutcome::Compiled
    );
    let engine = WasmEngine::new(options)?;
    let (program, outcome) = engine.load(wasm)?;
    assert_eq!(outcome, LoadOutcome::CacheHit);
    let out = Capture::new()?;
    let spec = RunSpec {
        args: args(&["guest", "echo", "cached"]),
        stdio: out.stdio()?,
        ..RunSpec::default()
    };
    assert_eq!(engine.run(&program, &spec)?, ExitStatus::Exited(0));
    assert_eq!(out.stdout(), "cached\n");
    Ok(())
}

/// A cold start's path: baseline code runs at once, a copy waits for the optimizer, which
/// then makes the optimized entry every later start loads.
#[test]
fn baseline_code_runs_and_the_optimizer_replaces_it() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let options = |tier| EngineOptions {
        cache_dir: Some(tmp.path().to_owned()),
        tier,
        ..Default::default()
    };
    let wasm = component()?;
    let optimized = WasmEngine::new(options(Tier::Optimized))?;
    assert!(
        optimized.load_if_cached(wasm)?.is_none(),
        "nothing compiled yet"
    );
    let baseline = WasmEngine::new(options(Tier::Baseline))?;
    assert_eq!(baseline.tier(), Tier::Baseline);
    assert_ne!(baseline.fingerprint(), optimized.fingerprint());
    let (program, outcome) = baseline.load(wasm)?;
    assert_eq!(outcome, LoadOutcome::Compiled);
    let out = Capture::new()?;
    let spec = RunSpec {
        args: args(&["guest", "echo", "baseline"]),
        stdio: out.stdio()?,
        ..RunSpec::default()
    };
    assert_eq!(baseline.run(&program, &spec)?, ExitStatus::Exited(0));
    assert_eq!(out.stdout(), "baseline\n");

    let stashed = optimized.stash_for_optimizer(wasm)?;
    assert!(stashed.starts_with(tmp.path().join(optimized.fingerprint())));
    assert_eq!(
        optimized.optimize_stashed(&stashed)?,
        OptimizeOutcome::Compiled
    );
    assert!(!stashed.exists(), "the copy is removed once compiled");
    assert!(optimized.load_if_cached(wasm)?.is_some());
    // A second request for the same program finds the entry and does nothing.
    let again = optimized.stash_for_optimizer(wasm)?;
    assert_eq!(
        optimized.optimize_stashed(&again)?,
        OptimizeOutcome::NotNeeded
    );
    assert!(!again.exists());
    Ok(())
}

/// An engine outlives its cache directory (the starter's preloaded engine lives as long as the
/// starter): once the directory is removed, storing makes it again, with the same mode, instead
/// of failing every later start.
#[test]
fn an_engine_stores_again_after_its_cache_directory_is_removed() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path().join("cache");
    let engine = engine_cached_in(&root)?;
    let wasm = hello_module();
    fs::remove_dir_all(&root)?;
    let stashed = engine.stash_for_optimizer(&wasm)?;
    assert!(stashed.exists(), "the copy for the optimizer is written");
    assert_eq!(
        fs::metadata(root.join(engine.fingerprint()))?
            .permissions()
            .mode()
            & 0o7777,
        0o700
    );
    assert_eq!(
        engine.optimize_stashed(&stashed)?,
        OptimizeOutcome::Compiled
    );
    fs::remove_dir_all(&root)?;
    let (_, outcome) = engine.load(&wasm)?;
    assert_eq!(outcome, LoadOutcome::Compiled, "stored, not kept in memory");
    assert!(engine.load_if_cached(&wasm)?.is_some());
    Ok(())
}

#[test]
fn the_optimizer_refuses_copies_that_are_not_what_they_claim() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let engine = engine_cached_in(tmp.path())?;
    let wasm = hello_module();
    let stashed = engine.stash_for_optimizer(&wasm)?;
    fs::write(&stashed, module("(func (export \"_start\"))"))?;
    let tampered = engine
        .optimize_stashed(&stashed)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        tampered.contains("hashes to") && tampered.contains("not to its name"),
        "{tampered}"
    );
    assert!(!stashed.exists(), "a bad copy is removed");
    assert!(
        engine.load_if_cached(&wasm)?.is_none(),
        "and nothing is stored"
    );
    let elsewhere = tmp.path().join("notes.wasm");
    fs::write(&elsewhere, &wasm)?;
    let outside = engine
        .optimize_stashed(&elsewhere)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        outside.contains("is not a wasm copy in the compile cache directory"),
        "{outside}"
    );
    assert!(
        elsewhere.exists(),
        "a file that is not a copy is left alone"
    );
    Ok(())
}

#[test]
fn imports_the_host_lacks_are_refused_before_instantiation()
-> Result<(), Box<dyn std::error::Error>> {
    let engine = WasmEngine::new(EngineOptions::default())?;
    let load = |wat_text: &str| -> Result<Program, Box<dyn std::error::Error>> {
        Ok(engine.load(&wat::parse_str(wat_text)?)?.0)
    };
    let refusal = |program: &Program| {
        engine
            .check_imports(program, &Policy::default())
            .err()
            .map(|e| e.to_string())
    };
    let keyvalue = load(
        r#"(component (import "wasi:keyvalue/store@0.2.0-draft" (instance (export "open" (func)))))"#,
    )?;
    let err = refusal(&keyvalue).unwrap_or_default();
    assert!(err.contains("wasi:keyvalue/store@0.2.0-draft"), "{err}");
    let environment = |version: &str| {
        format!(
            r#"(component (import "wasi:cli/environment@{version}" (instance (export "get-environment" (func (result (list (tuple string string))))))))"#
        )
    };
    let err = refusal(&load(&environment("0.3.0"))?).unwrap_or_default();
    assert!(err.contains("wasi:cli/environment@0.3.0"), "{err}");
    assert_eq!(
        refusal(&load(&environment("0.2.0"))?),
        None,
        "0.2.0 is satisfied by 0.2.x"
    );
    let err = refusal(&load(r#"(module (import "env" "foo" (func)))"#)?).unwrap_or_default();
    assert!(err.contains("env") && err.contains("foo"), "{err}");
    let p1 = load(
        r#"(module (import "wasi_snapshot_preview1" "proc_exit" (func (param i32))) (memory (export "memory") 1))"#,
    )?;
    assert_eq!(refusal(&p1), None, "preview1 is provided");

    // Every refused import is listed, not just the first one wasmtime would report.
    let several = load(
        r#"(component
            (import "wasi:keyvalue/store@0.2.0-draft" (instance (export "open" (func))))
            (import "wasi:cli/environment@0.3.0" (instance (export "get-environment" (func))))
            (import "wasi:cli/exit@0.2.0" (instance)))"#,
    )?;
    let err = refusal(&several).unwrap_or_default();
    assert!(err.contains("2 imports cannot be satisfied"), "{err}");
    assert!(
        err.contains("wasi:keyvalue/store@0.2.0-draft (not provided by this host)"),
        "{err}"
    );
    assert!(
        err.contains(
            "wasi:cli/environment@0.3.0 (not provided; the host has wasi:cli/environment@0.2.12)"
        ),
        "{err}"
    );
    let err = refusal(&load(
        r#"(module (import "env" "foo" (func)) (import "env" "bar" (func)))"#,
    )?)
    .unwrap_or_default();
    assert!(err.contains("env.foo") && err.contains("env.bar"), "{err}");
    Ok(())
}

#[test]
fn a_deny_policy_refuses_components_and_preview1_sockets() -> Result<(), Box<dyn std::error::Error>>
{
    let engine = WasmEngine::new(EngineOptions::default())?;
    let deny_sockets = Policy {
        deny: vec!["wasi:sockets/*".into()],
        source: "/etc/wasmcell/strict.toml".into(),
        ..Policy::default()
    };
    let tcp = engine
        .load(&wat::parse_str(
            r#"(component (import "wasi:sockets/tcp@0.2.0" (instance (export "tcp-socket" (type (sub resource))))))"#,
        )?)?
        .0;
    assert!(engine.check_imports(&tcp, &Policy::default()).is_ok());
    let err = engine
        .check_imports(&tcp, &deny_sockets)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains(r#"wasi:sockets/tcp@0.2.0 (denied by policy "wasi:sockets/*" from /etc/wasmcell/strict.toml)"#),
        "{err}"
    );
    let sock_module = engine
        .load(&wat::parse_str(
            r#"(module (import "wasi_snapshot_preview1" "sock_accept" (func (param i32 i32 i32) (result i32))))"#,
        )?)?
        .0;
    assert!(
        engine
            .check_imports(&sock_module, &Policy::default())
            .is_ok()
    );
    let err = engine
        .check_imports(&sock_module, &deny_sockets)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("wasi_snapshot_preview1.sock_accept (denied by policy"),
        "{err}"
    );
    Ok(())
}

#[test]
fn worlds_name_what_the_linkers_provide() -> Result<(), Box<dyn std::error::Error>> {
    let engine = WasmEngine::new(EngineOptions::default())?;
    let worlds = engine.worlds()?;
    let names: Vec<&str> = worlds.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "wasi:cli/command@0.2.12",
            "wasi:http/proxy@0.2.12",
            "wasi:cli/command@0.3.0",
            "wasi:http/service@0.3.0",
            "wasi_snapshot_preview1"
        ]
    );
    assert!(
        worlds[0]
            .provides
            .iter()
            .any(|i| i == "wasi:cli/environment@0.2.12")
    );
    // The proxy world is the command world plus wasi:http.
    let http_only: Vec<&String> = worlds[1]
        .provides
        .iter()
        .filter(|i| !worlds[0].provides.contains(i))
        .collect();
    assert_eq!(
        http_only,
        [
            "wasi:http/outgoing-handler@0.2.12",
            "wasi:http/types@0.2.12"
        ]
    );
    // A 0.3 command also gets 0.2's interfaces (a component may import both), and the 0.3
    // service world adds 0.3's wasi:http to that.
    let command_p3 = &worlds[2].provides;
    assert!(command_p3.iter().any(|i| i == "wasi:cli/environment@0.3.0"));
    assert!(worlds[0].provides.iter().all(|i| command_p3.contains(i)));
    assert!(!command_p3.iter().any(|i| i.starts_with("wasi:http/")));
    let service_only: Vec<&String> = worlds[3]
        .provides
        .iter()
        .filter(|i| !command_p3.contains(i) && !i.ends_with("@0.2.12"))
        .collect();
    assert_eq!(
        service_only,
        ["wasi:http/client@0.3.0", "wasi:http/types@0.3.0"]
    );
    assert!(
        worlds[4]
            .provides
            .iter()
            .any(|f| f == "wasi_snapshot_preview1.fd_write")
    );
    Ok(())
}

/// Concurrent loads of one wasm with an empty cache compile it once: the others wait on the
/// entry's lock and map what the first stored.
#[test]
fn concurrent_loads_compile_once() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let options = EngineOptions {
        cache_dir: Some(tmp.path().join("cache")),
        ..Default::default()
    };
    let wasm = hello_module();
    let outcomes: Vec<LoadOutcome> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (options, wasm) = (options.clone(), wasm.clone());
                scope.spawn(move || -> Result<LoadOutcome, String> {
                    let engine = WasmEngine::new(options).map_err(|e| e.to_string())?;
                    engine
                        .load(&wasm)
                        .map(|(_, o)| o)
                        .map_err(|e| e.to_string())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("panicked".into())))
            .collect::<Result<Vec<_>, String>>()
    })?;
    let compiled = outcomes
        .iter()
        .filter(|o| **o == LoadOutcome::Compiled)
        .count();
    assert_eq!(compiled, 1, "{outcomes:?}");
    assert!(
        outcomes.iter().all(|o| matches!(
            o,
            LoadOutcome::Compiled | LoadOutcome::CompiledConcurrently | LoadOutcome::CacheHit
        )),
        "{outcomes:?}"
    );
    Ok(())
}

#[test]
fn a_miss_is_compiled_elsewhere_when_it_can_be_and_here_when_not() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let options = EngineOptions {
        cache_dir: Some(tmp.path().join("cache")),
        ..Default::default()
    };
    let helper_options = EngineOptions {
        compile_in_parallel: true,
        ..options.clone()
    };
    let wasm = component()?;
    // The helper (another engine, as in another process) compiles on every core into the cache.
    let helper = || -> Result<(), String> {
        let engine = WasmEngine::new(helper_options.clone()).map_err(|e| e.to_string())?;
        engine
            .compile_to_cache(wasm)
            .map(drop)
            .map_err(|e| e.to_string())
    };
    let engine = WasmEngine::new(options.clone())?;
    let (program, outcome) = engine.load_with(wasm, Some(&helper))?;
    assert_eq!(outcome, LoadOutcome::CompiledByHelper);
    assert!(matches!(program, Program::Component(_)));
    assert_eq!(
        engine.load_with(wasm, Some(&helper))?.1,
        LoadOutcome::CacheHit
    );

    // A corrupt entry recompiled by the helper still says so (it is the warning).
    let cwasm = cache_files(&tmp.path().join("cache"))?
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .ok_or("no .cwasm")?;
    write_corrupted(&cwasm)?;
    assert_eq!(
        engine.load_with(wasm, Some(&helper))?.1,
        LoadOutcome::CacheCorruptRecompiled
    );

    // A helper that fails, or succeeds without writing the entry: compiled here instead.
    let failing = || -> Result<(), String> { Err("helper killed".to_owned()) };
    let idle = || -> Result<(), String> { Ok(()) };
    for helper in [&failing as &dyn Fn() -> Result<(), String>, &idle] {
        fs::remove_file(&cwasm)?;
        assert_eq!(
            engine.load_with(wasm, Some(helper))?.1,
            LoadOutcome::Compiled
        );
    }

    // Nothing to compile into without a cache.
    let uncached = WasmEngine::new(EngineOptions::default())?;
    let err = uncached.compile_to_cache(wasm).err().ok_or("no error")?;
    assert_eq!(
        err.to_string(),
        "no compile cache is configured to compile into"
    );
    Ok(())
}

/// A digest the caller verified keys the same cache entry as hashing the bytes would, so a
/// program compiled on import is found by a guest that skips hashing; a digest that is not
/// 64 hex digits is not taken.
#[test]
fn a_verified_sha256_keys_the_same_entry_as_the_bytes() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let engine = engine_cached_in(tmp.path())?;
    let wasm = hello_module();
    let hashed = Wasm::new(&wasm);
    let sha256 = hashed.sha256();
    let verified = Wasm::with_verified_sha256(&wasm, &sha256).ok_or("digest refused")?;
    assert_eq!(verified.sha256(), sha256);
    assert!(engine.load_if_cached(verified)?.is_none());
    engine.load(&wasm)?;
    assert!(engine.load_if_cached(verified)?.is_some());
    for bad in ["", "abc", &sha256[1..], &format!("{}zz", &sha256[2..])] {
        assert!(Wasm::with_verified_sha256(&wasm, bad).is_none(), "{bad:?}");
    }
    Ok(())
}

/// An engine with default options whose compile cache is `dir`.
fn engine_cached_in(dir: &Path) -> Result<WasmEngine, wasmcell_engine::EngineError> {
    WasmEngine::new(EngineOptions {
        cache_dir: Some(dir.to_owned()),
        ..Default::default()
    })
}

/// What a starter preloads: the newest verified entries, rescanned when the cache changes. A
/// process forked from it runs a preloaded program from memory, keeps only its own, and drops
/// one whose entry changed since it was verified.
#[test]
fn the_newest_verified_entries_are_preloaded_and_dropped_when_they_change() -> TestResult {
    let tmp = tempfile::tempdir()?;
    let compiler = engine_cached_in(tmp.path())?;
    let component = component()?;
    let hello = hello_module();
    let (component_sha, hello_sha) = (Wasm::new(component).sha256(), Wasm::new(&hello).sha256());
    compiler.load(component)?;
    compiler.load(&hello)?;
    let entry = |sha: &str| {
        tmp.path()
            .join(compiler.fingerprint())
            .join(format!("{sha}.cwasm"))
    };
    // The module is the newest entry.
    let past = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    File::options()
        .write(true)
        .open(entry(&component_sha))?
        .set_modified(past)?;

    let up_to = |count| PreloadBudget {
        count,
        bytes: u64::MAX,
    };
    // A byte budget the component's code does not fit in.
    let small = fs::metadata(entry(&hello_sha))?.len();
    let budgeted = engine_cached_in(tmp.path())?;
    let fits = PreloadBudget {
        count: 8,
        bytes: small,
    };
    assert_eq!(budgeted.preload_recent(fits).loaded, 1);
    assert!(budgeted.is_preloaded(&hello_sha));

    let newest_only = engine_cached_in(tmp.path())?;
    assert_eq!(newest_only.preload_recent(up_to(1)).loaded, 1);
    assert!(newest_only.is_preloaded(&hello_sha));
    assert!(!newest_only.is_preloaded(&component_sha));

    let starter = engine_cached_in(tmp.path())?;
    let scanned = PreloadScan {
        loaded: 2,
        changed: true,
    };
    assert_eq!(starter.preload_recent(up_to(8)), scanned);
    assert_eq!(
        starter.preload_recent(up_to(8)),
        PreloadScan {
            changed: false,
            ..scanned
        },
        "nothing changed: no rescan"
    );
    // Written in place after it was verified: dropped, then found again once replaced.
    write_corrupted(&entry(&component_sha))?;
    assert_eq!(
        starter.preload_recent(up_to(8)).loaded,
        1,
        "the changed entry is dropped"
    );
    assert!(starter.is_preloaded(&hello_sha));
    compiler.load(component)?;
    assert_eq!(starter.preload_recent(up_to(8)).loaded, 2);

    // A forked guest (a clone shares the preloaded set; a fork copies it).
    let guest = starter.clone();
    let gone = guest.forget_preloaded_except(Some(&component_sha));
    assert_eq!(
        gone,
        vec![entry(&hello_sha)],
        "the other program's file, to close"
    );
    assert!(!guest.is_preloaded(&hello_sha));
    let program = guest
        .load_if_cached(component)?
        .ok_or("the preloaded program")?;
    assert!(guest.is_preloaded(&component_sha));
    guest.check_imports(&program, &Policy::default())?;
    let out = Capture::new()?;
    let spec = RunSpec {
        args: args(&["guest", "echo", "preloaded"]),
        stdio: out.stdio()?,
        ..RunSpec::default()
    };
    assert_eq!(guest.run(&program, &spec)?, ExitStatus::Exited(0));
    assert_eq!(out.stdout(), "preloaded\n");

    // A corrupt entry is not loaded; one changed after the preload is not trusted either.
    write_corrupted(&entry(&hello_sha))?;
    let fresh = engine_cached_in(tmp.path())?;
    assert_eq!(fresh.preload_recent(up_to(8)).loaded, 1);
    assert!(fresh.is_preloaded(&component_sha));
    write_corrupted(&entry(&component_sha))?;
    assert!(guest.load_if_cached(component)?.is_none(), "corrupt entry");
    assert!(!guest.is_preloaded(&component_sha));
    Ok(())
}
