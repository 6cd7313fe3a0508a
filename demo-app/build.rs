//! Builds demo-app for `wasm32-wasip2` and packages the component as the three demo OCI tars,
//! all inside the one `cargo build` that builds this package.
//!
//! The guest is compiled by invoking `rustc` directly rather than a nested `cargo build`: the
//! app has no dependencies, so this is one short compiler call with nothing to recurse into, no
//! second target directory and no rebuild of this script's own dependencies. Paths are remapped
//! and timestamps fixed (`SOURCE_DATE_EPOCH`, default 0), so the same sources and toolchain give
//! byte-identical tars wherever the tree is checked out.
//!
//! The HTTP demo (`http/`, a `wasi:http/proxy` component) needs the WASI bindings crate, so it
//! is the one nested `cargo build`: a workspace of its own with its own lock file, built
//! `--locked` for `wasm32-wasip2` into a target directory under `OUT_DIR`. It has no build
//! script and does not depend on this package, so nothing recurses.
//!
//! Output: `$WASMCELL_OCI_OUT` if set (the Makefile uses `target/oci`), else `$OUT_DIR/oci`.

use std::collections::BTreeMap;
use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

use wasmcell_oci::{PackageFormat, PackageSpec, write_package};

const GUEST_TARGET: &str = "wasm32-wasip2";

fn main() {
    if let Err(message) = run() {
        // A build script reports failure by panicking with its message; there is no caller.
        panic!("demo-app build script: {message}");
    }
}

fn run() -> Result<(), String> {
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=wit");
    println!("cargo:rerun-if-changed=http/src");
    println!("cargo:rerun-if-changed=http/Cargo.toml");
    println!("cargo:rerun-if-changed=http/Cargo.lock");
    println!("cargo:rerun-if-env-changed=WASMCELL_OCI_OUT");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let var = |name: &str| env::var(name).map_err(|e| format!("${name}: {e}"));
    let manifest_dir = PathBuf::from(var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(var("OUT_DIR")?);
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let epoch: u64 = match env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v
            .parse()
            .map_err(|e| format!("SOURCE_DATE_EPOCH={v:?} is not a number: {e}"))?,
        Err(_) => 0,
    };

    let wasm_path = out_dir.join("demo-app.wasm");
    compile_guest(&rustc, &manifest_dir, &wasm_path)?;
    let wasm = std::fs::read(&wasm_path).map_err(|e| format!("{}: {e}", wasm_path.display()))?;
    let http_wasm_path = compile_http_guest(&manifest_dir, &out_dir)?;
    let http_wasm =
        std::fs::read(&http_wasm_path).map_err(|e| format!("{}: {e}", http_wasm_path.display()))?;

    let oci_dir = env::var_os("WASMCELL_OCI_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| out_dir.join("oci"));
    std::fs::create_dir_all(&oci_dir).map_err(|e| format!("{}: {e}", oci_dir.display()))?;
    let app = ("demo-app", &wasm, &wasm_path, None);
    let http = (
        "demo-http",
        &http_wasm,
        &http_wasm_path,
        Some("wasi:http/proxy@0.2.0"),
    );
    let packages = [
        (app, PackageFormat::Image, "demo-app-image.tar", "demo-app"),
        (
            app,
            PackageFormat::WasmLayer,
            "demo-app-wasm-layer.tar",
            "demo-app-wasm-layer",
        ),
        (
            app,
            PackageFormat::Artifact,
            "demo-app-artifact.tar",
            "demo-app-artifact",
        ),
        (
            http,
            PackageFormat::Image,
            "demo-http-image.tar",
            "demo-http",
        ),
        (
            http,
            PackageFormat::Artifact,
            "demo-http-artifact.tar",
            "demo-http-artifact",
        ),
    ];
    for ((program, wasm, source, target), format, file, name) in packages {
        let spec = PackageSpec {
            format,
            reference: format!("localhost/wasmcell/{name}:latest"),
            wasm: wasm.clone(),
            wasm_path: format!("/{program}.wasm"),
            annotations: BTreeMap::from([(
                "org.opencontainers.image.title".to_owned(),
                format!("wasmcell {program}"),
            )]),
            created_epoch: epoch,
            author: None,
            target: target.map(str::to_owned),
        };
        let out = oci_dir.join(file);
        write_package(&spec, &source.display().to_string(), &out)
            .map_err(|e| format!("packaging {}: {e}", out.display()))?;
    }
    println!("cargo:rustc-env=DEMO_APP_OCI_DIR={}", oci_dir.display());
    Ok(())
}

fn compile_guest(rustc: &str, manifest_dir: &Path, out: &Path) -> Result<(), String> {
    let main_rs = manifest_dir.join("src/main.rs");
    let status = Command::new(rustc)
        .args([
            "--edition",
            "2024",
            "--crate-name",
            "demo_app",
            "--crate-type",
            "bin",
        ])
        .args(["--target", GUEST_TARGET])
        .args([
            "-C",
            "opt-level=s",
            "-C",
            "codegen-units=1",
            "-C",
            "strip=symbols",
        ])
        .args(["-C", "panic=abort", "-C", "debuginfo=0"])
        .arg(format!(
            "--remap-path-prefix={}=demo-app",
            manifest_dir.display()
        ))
        // Declares `exit-with-code` so the guest can report any exit status.
        .arg(format!(
            "-Clink-arg=--component-type={}",
            manifest_dir.join("wit/exit-code.wit").display()
        ))
        .arg(&main_rs)
        .arg("-o")
        .arg(out)
        // Flags meant for the host build must not leak into the guest.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .map_err(|e| format!("running {rustc}: {e}"))?;
    if !status.success() {
        return Err(format!(
            "compiling the guest for {GUEST_TARGET} failed ({status}); is the target installed? \
             (`rustup target add {GUEST_TARGET}`)"
        ));
    }
    Ok(())
}

/// Builds `http/` (demo-http) for `wasm32-wasip2` with a nested, locked `cargo build` and returns
/// the component's path. Paths are remapped so the binary does not depend on where the tree or
/// the cargo home is.
fn compile_http_guest(manifest_dir: &Path, out_dir: &Path) -> Result<PathBuf, String> {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let target_dir = out_dir.join("http-target");
    let http_dir = manifest_dir.join("http");
    let cargo_home = env::var("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|_| env::var("HOME").map(|home| Path::new(&home).join(".cargo")))
        .map_err(|_| "neither CARGO_HOME nor HOME is set".to_owned())?;
    let rustflags = [
        format!("--remap-path-prefix={}=demo-http", http_dir.display()),
        format!("--remap-path-prefix={}=cargo", cargo_home.display()),
    ]
    .join("\x1f");
    let status = Command::new(&cargo)
        .args(["build", "--release", "--locked", "--target", GUEST_TARGET])
        .arg("--manifest-path")
        .arg(http_dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        // The outer build's flags and settings are for the host and this package.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_TARGET_DIR")
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags)
        .status()
        .map_err(|e| format!("running {cargo}: {e}"))?;
    if !status.success() {
        return Err(format!(
            "building demo-http for {GUEST_TARGET} failed ({status}); is the target installed? \
             (`rustup target add {GUEST_TARGET}`)"
        ));
    }
    Ok(target_dir.join(GUEST_TARGET).join("release/demo_http.wasm"))
}
