//! Helpers for wasmcell's integration tests: locating the workspace's build outputs, external
//! tools, and private containerd instances that tests start and always stop.
//!
//! Tests that need something this machine lacks skip **loudly** outside CI and fail under
//! `CI=true`, so a CI run can never pass by skipping.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test harness: a panic is a test failure

pub mod containerd;
pub mod cri;
pub mod image;
pub mod lying_registry;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Whether we run under CI (`CI=true`), where nothing may be skipped.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Skips the calling test with `reason`, or fails it under CI.
#[macro_export]
macro_rules! skip_or_fail {
    ($($reason:tt)*) => {{
        let reason = format!($($reason)*);
        if $crate::in_ci() {
            panic!("CI=true and a prerequisite is missing: {reason}");
        }
        eprintln!("\n*** SKIPPED (not CI): {reason} ***\n");
        return;
    }};
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("test crate lives in the workspace")
        .to_owned()
}

/// The cargo target directory.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// The demo component's bytes, taken out of the wasm-layer demo image.
pub fn demo_component() -> Vec<u8> {
    let archive = wasmcell_oci::read_archive(
        &demo_tar("demo-app-wasm-layer.tar"),
        wasmcell_oci::ReadLimits::default(),
    )
    .expect("the wasm-layer demo image reads");
    archive.images[0]
        .wasm_layer()
        .expect("the wasm-layer demo image has a wasm layer")
        .bytes
        .clone()
}

/// A demo tar built by `make demo-images`.
pub fn demo_tar(name: &str) -> PathBuf {
    let path = std::env::var_os("WASMCELL_OCI_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("oci"))
        .join(name);
    assert!(
        path.is_file(),
        "{} is missing: run `make demo-images` (make test does) first",
        path.display()
    );
    path
}

/// The three demo tars with the image names they must register.
pub const DEMO_IMAGES: [(&str, &str); 9] = [
    ("demo-app-image.tar", "localhost/wasmcell/demo-app:latest"),
    (
        "demo-app-wasm-layer.tar",
        "localhost/wasmcell/demo-app-wasm-layer:latest",
    ),
    (
        "demo-app-artifact.tar",
        "localhost/wasmcell/demo-app-artifact:latest",
    ),
    ("demo-http-image.tar", "localhost/wasmcell/demo-http:latest"),
    (
        "demo-http-artifact.tar",
        "localhost/wasmcell/demo-http-artifact:latest",
    ),
    ("demo-p3-image.tar", "localhost/wasmcell/demo-p3:latest"),
    (
        "demo-p3-artifact.tar",
        "localhost/wasmcell/demo-p3-artifact:latest",
    ),
    (
        "demo-p3-http-image.tar",
        "localhost/wasmcell/demo-p3-http:latest",
    ),
    (
        "demo-p3-http-artifact.tar",
        "localhost/wasmcell/demo-p3-http-artifact:latest",
    ),
];

/// The `wasmcell` binary cargo built for these tests.
pub fn wasmcell_bin() -> PathBuf {
    let bin = target_dir().join("debug/wasmcell");
    assert!(
        bin.is_file(),
        "{} missing: `make test` builds the binaries before the tests (cargo build --workspace --bins)",
        bin.display()
    );
    bin
}

/// Runs `program` with `args`, returning its output (never fails on a non-zero exit).
pub fn run(program: impl AsRef<Path>, args: &[&str]) -> Output {
    let program = program.as_ref();
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", program.display()))
}

/// Stdout of a command that must succeed.
pub fn run_ok(program: impl AsRef<Path>, args: &[&str]) -> String {
    let program = program.as_ref();
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{} {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        program.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The path of `tool` on `PATH`, if installed.
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

/// The directory `test/fetch-debian.sh NAME` unpacked (a containerd line or a newer tool),
/// fetching it into the user cache when needed. `Err` explains why not.
pub fn fetch_debian(name: &str) -> Result<PathBuf, String> {
    let script = workspace_root().join("test/fetch-debian.sh");
    let out = Command::new(&script)
        .arg(name)
        .output()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} {name} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dir = stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")))
        .ok_or_else(|| format!("fetch script printed no directory: {stdout}"))?;
    Ok(PathBuf::from(dir.trim()))
}

/// The executable `binary` of newer tool `name` (`cosign-2`, `cosign-3`, `oras`).
pub fn newer_tool(name: &str, binary: &str) -> Result<PathBuf, String> {
    Ok(fetch_debian(name)?.join("usr/bin").join(binary))
}
