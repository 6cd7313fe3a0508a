//! Builds demo-app for `wasm32-wasip2` and packages the component as the three demo OCI tars,
//! all inside the one `cargo build` that builds this package.
//!
//! The guest is compiled by invoking `rustc` directly rather than a nested `cargo build`: the
//! app has no dependencies, so this is one short compiler call with nothing to recurse into, no
//! second target directory and no rebuild of this script's own dependencies. Paths are remapped
//! and timestamps fixed (`SOURCE_DATE_EPOCH`, default 0), so the same sources and toolchain give
//! byte-identical tars wherever the tree is checked out.
//!
//! The guests that need WASI bindings crates live in `guests/`: the HTTP demo (demo-http, a
//! `wasi:http/proxy` component) and the WASI 0.3 demos (demo-p3, a 0.3 command, and
//! demo-p3-http, a `wasi:http/service` component). They are the one nested `cargo build`: a
//! workspace of its own with its own lock file, built `--locked` for `wasm32-wasip2` into a
//! target directory under `OUT_DIR`. None has a build script or depends on this package, so
//! nothing recurses.
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
    println!("cargo:rerun-if-changed=guests");
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
    let guests = compile_guests(&manifest_dir, &out_dir)?;
    let read = |path: &PathBuf| std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()));
    let (http_wasm_path, p3_wasm_path, p3_http_wasm_path) = (
        guests.join("demo_http.wasm"),
        guests.join("demo_p3.wasm"),
        guests.join("demo_p3_http.wasm"),
    );
    let (http_wasm, p3_wasm, p3_http_wasm) = (
        read(&http_wasm_path)?,
        read(&p3_wasm_path)?,
        read(&p3_http_wasm_path)?,
    );

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
    let p3 = (
        "demo-p3",
        &p3_wasm,
        &p3_wasm_path,
        Some("wasi:cli/command@0.3.0"),
    );
    let p3_http = (
        "demo-p3-http",
        &p3_http_wasm,
        &p3_http_wasm_path,
        Some("wasi:http/service@0.3.0"),
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
        (p3, PackageFormat::Image, "demo-p3-image.tar", "demo-p3"),
        (
            p3,
            PackageFormat::Artifact,
            "demo-p3-artifact.tar",
            "demo-p3-artifact",
        ),
        (
            p3_http,
            PackageFormat::Image,
            "demo-p3-http-image.tar",
            "demo-p3-http",
        ),
        (
            p3_http,
            PackageFormat::Artifact,
            "demo-p3-http-artifact.tar",
            "demo-p3-http-artifact",
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

/// Builds the `guests/` workspace for `wasm32-wasip2` with one nested, locked `cargo build` and
/// returns the directory holding the components. Paths are remapped so the binaries do not
/// depend on where the tree or the cargo home is.
fn compile_guests(manifest_dir: &Path, out_dir: &Path) -> Result<PathBuf, String> {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let target_dir = out_dir.join("guests-target");
    let guests_dir = manifest_dir.join("guests");
    let cargo_home = env::var("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|_| env::var("HOME").map(|home| Path::new(&home).join(".cargo")))
        .map_err(|_| "neither CARGO_HOME nor HOME is set".to_owned())?;
    let rustflags = [
        format!("--remap-path-prefix={}=guests", guests_dir.display()),
        format!("--remap-path-prefix={}=cargo", cargo_home.display()),
    ]
    .join("\x1f");
    let status = Command::new(&cargo)
        .args(["build", "--release", "--locked", "--target", GUEST_TARGET])
        .arg("--manifest-path")
        .arg(guests_dir.join("Cargo.toml"))
        .arg("--workspace")
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
            "building the guests/ workspace for {GUEST_TARGET} failed ({status}); is the target installed? \
             (`rustup target add {GUEST_TARGET}`)"
        ));
    }
    Ok(target_dir.join(GUEST_TARGET).join("release"))
}
