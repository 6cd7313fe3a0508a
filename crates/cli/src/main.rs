//! `wasmcell`: the command-line tool. Packages wasm programs as OCI images and artifacts,
//! inspects archives or containerd images (with the verdict for this host), imports them into
//! containerd, moves them to and from registries and checks their signatures, lists the worlds
//! this host provides, and sets up a node's containerd config.
//!
//! Errors go to stderr with exit status 1; usage errors exit 2 (clap's convention).

mod ahead;
mod containerd_config;
mod ctr;
mod import;
mod inspect;
mod package;
mod program;
mod pull;
mod push;
mod registry;
mod verify;
mod worlds;

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
    /// Show what an image archive (or an image in containerd) holds: references, media
    /// types, digests, sizes, the wasm config and binary's imports and exports, and whether
    /// this host would run it. Exits 0 when every image runs, 1 when one is refused, 2 when the
    /// input cannot be read.
    Inspect(inspect::InspectArgs),
    /// Import an archive into containerd so `ctr run` can run it; CNCF wasm artifacts are made
    /// runnable on the way, keeping their wasm and wasm config blobs byte-identical.
    Import(import::ImportArgs),
    /// Push an archive's image or artifact to a registry, its manifest byte for byte.
    Push(push::PushArgs),
    /// Pull an image or artifact from a registry into containerd, as `import` stores an
    /// archive, every blob verified.
    Pull(pull::PullArgs),
    /// Check that an image in a registry is signed (cosign, key-based) by one of the given
    /// keys, as the shim's `require_signature` policy does at create. Exits 1 when it is not.
    Verify(verify::VerifyArgs),
    /// List the worlds and interfaces this host provides to guests.
    Worlds(worlds::WorldsArgs),
    /// Print, or patch into containerd's config, the runtime entry Kubernetes needs for the
    /// `wasmcell` RuntimeClass handler (containerd 1.6/1.7 config version 2, 2.x version 3).
    ContainerdConfig(containerd_config::ContainerdConfigArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Package(args) => package::run(&args),
        Command::Inspect(args) => {
            return match inspect::run(&args) {
                Ok(outcome) => ExitCode::from(outcome.exit_code()),
                Err(err) => {
                    eprintln!("wasmcell: error: {err:#}");
                    ExitCode::from(inspect::EXIT_CANNOT_READ)
                }
            };
        }
        Command::Import(args) => import::run(&args),
        Command::Push(args) => push::run(&args),
        Command::Pull(args) => pull::run(&args),
        Command::Verify(args) => verify::run(&args),
        Command::Worlds(args) => worlds::run(&args),
        Command::ContainerdConfig(args) => containerd_config::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("wasmcell: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
