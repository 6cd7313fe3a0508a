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
        let note = match host::HostWorld::ALL
            .into_iter()
            .find(|w| w.name() == world.name)
        {
            Some(host_world) => {
                let version = host_world.version();
                let series = version
                    .rsplit_once('.')
                    .map_or(version, |(series, _)| series);
                let what = match host_world {
                    host::HostWorld::Command => "components exporting wasi:cli/run@0.2.x",
                    host::HostWorld::CommandP3 => {
                        "components exporting wasi:cli/run@0.3.x, run with the 0.2 \
                         interfaces too"
                    }
                    host::HostWorld::Proxy => {
                        "components exporting wasi:http/incoming-handler@0.2.x, served over \
                         HTTP, a fresh instance per request"
                    }
                    host::HostWorld::ServiceP3 => {
                        "components exporting wasi:http/handler@0.3.x, served over HTTP, \
                         instances shared between requests"
                    }
                };
                let p2 = host::WASI_P2_VERSION;
                let p2_series = p2.rsplit_once('.').map_or(p2, |(series, _)| series);
                if series == p2_series {
                    format!("{what}; imports at any {series}.x version match")
                } else {
                    format!("{what}; imports at any {series}.x or {p2_series}.x version match")
                }
            }
            None => "core modules".to_owned(),
        };
        println!("{} ({note})", world.name);
        for name in &world.provides {
            println!("  {name}");
        }
    }
    Ok(())
}
