//! `wasmcell worlds`: the worlds and interfaces this host gives guests, from the engine's own
//! linker set-up, so what it prints is what the shim checks against.

use clap::Args;
use serde_json::json;
use wasmcell_engine::{EngineOptions, WasmEngine, host};

/// Arguments of `wasmcell worlds`.
#[derive(Debug, Args)]
pub struct WorldsArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// Runs `wasmcell worlds`.
pub fn run(args: &WorldsArgs) -> anyhow::Result<()> {
    let engine = WasmEngine::new(EngineOptions::default())?;
    let worlds = engine.worlds()?;
    if args.json {
        let doc: Vec<_> = worlds
            .iter()
            .map(|w| json!({ "world": w.name, "kind": w.kind, "provides": w.provides }))
            .collect();
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    for world in &worlds {
        let note = match world.kind {
            "component" => {
                let series = host::WASI_P2_VERSION
                    .rsplit_once('.')
                    .map_or(host::WASI_P2_VERSION, |(series, _)| series);
                let served = if world.name.starts_with(host::PROXY_WORLD) {
                    "components exporting wasi:http/incoming-handler, served over HTTP; "
                } else {
                    "components; "
                };
                format!("{served}imports at any {series}.x version match")
            }
            _ => "core modules".to_owned(),
        };
        println!("{} ({note})", world.name);
        for name in &world.provides {
            println!("  {name}");
        }
    }
    Ok(())
}
