//! `wasmcell`: the command-line tool. Packages wasm programs as OCI images and artifacts and
//! inspects image archives, and imports them into containerd; later issues add `worlds` and
//! `containerd-config`.
//!
//! Errors go to stderr with exit status 1; usage errors exit 2 (clap's convention).

mod import;
mod inspect;
mod package;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Run WebAssembly under containerd: package and inspect wasm OCI images.
#[derive(Debug, Parser)]
#[command(name = "wasmcell", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Package a wasm module or component as an OCI image-layout tar.
    Package(package::PackageArgs),
    /// Show what an image archive holds: references, media types, digests, sizes, and the
    /// wasm config's os, imports and exports.
    Inspect(inspect::InspectArgs),
    /// Import an archive into containerd so `ctr run` can run it; CNCF wasm artifacts are made
    /// runnable on the way, keeping their wasm and wasm config blobs byte-identical.
    Import(import::ImportArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Package(args) => package::run(&args),
        Command::Inspect(args) => inspect::run(&args),
        Command::Import(args) => import::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("wasmcell: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
