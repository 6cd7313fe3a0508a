//! Builds demo-app for `wasm32-wasip2` and packages the component as the three demo OCI tars,
//! all inside the one `cargo build` that builds this package.
//!
//! The guest is compiled by invoking `rustc` directly rather than a nested `cargo build`: the
//! app has no dependencies, so this is one short compiler call with nothing to recurse into, no
//! second target directory and no rebuild of this script's own dependencies. Paths are remapped
//! and timestamps fixed (`SOURCE_DATE_EPOCH`, default 0), so the same sources and toolchain give
//! byte-identical tars wherever the tree is checked out.
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

    let oci_dir = env::var_os("WASMCELL_OCI_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| out_dir.join("oci"));
    std::fs::create_dir_all(&oci_dir).map_err(|e| format!("{}: {e}", oci_dir.display()))?;
    let packages = [
        (
            PackageFormat::Image,
            "demo-app-image.tar",
            "localhost/wasmcell/demo-app:latest",
        ),
        (
            PackageFormat::WasmLayer,
            "demo-app-wasm-layer.tar",
            "localhost/wasmcell/demo-app-wasm-layer:latest",
        ),
        (
            PackageFormat::Artifact,
            "demo-app-artifact.tar",
            "localhost/wasmcell/demo-app-artifact:latest",
        ),
    ];
    for (format, file, reference) in packages {
        let spec = PackageSpec {
            format,
            reference: reference.to_owned(),
            wasm: wasm.clone(),
            wasm_path: "/demo-app.wasm".to_owned(),
            annotations: BTreeMap::from([(
                "org.opencontainers.image.title".to_owned(),
                "wasmcell demo-app".to_owned(),
            )]),
            created_epoch: epoch,
            author: None,
            target: None,
        };
        let out = oci_dir.join(file);
        write_package(&spec, &wasm_path.display().to_string(), &out)
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
