//! The guest side of HTTP serving: which programs are served, where they listen, their limits
//! from the container's environment, and the drain on SIGTERM/SIGINT. The server itself is
//! `wasmcell_engine`'s (`WasmEngine::serve`).
//!
//! A component exporting `wasi:http/incoming-handler@0.2.x` or `wasi:http/handler@0.3.x` is
//! served; the listening socket is
//! bound at create, in the container's network namespace and before the guest confines
//! itself, so a port that is taken fails the create with its reason and a ready container is
//! already accepting. Knobs, all optional, read from the container's environment:
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `WASMCELL_HTTP_ADDR` (or runwasi's `WASMTIME_HTTP_PROXY_SOCKET_ADDR`) | `0.0.0.0:8080` | listen address |
//! | `WASMCELL_HTTP_MAX_CONCURRENT` | 64 | requests handled at once |
//! | `WASMCELL_HTTP_MAX_QUEUED` | 256 | requests waiting for a slot; past it, 503 |
//! | `WASMCELL_HTTP_TIMEOUT_MS` | 30000 | per request; past it, 504 |
//! | `WASMCELL_HTTP_MAX_BODY` | 16777216 | request body bytes; past it, 413 |
//! | `WASMCELL_HTTP_DRAIN_MS` | 25000 | how long SIGTERM waits for in-flight requests |
//! | `WASMCELL_HTTP_MAX_INSTANCE_MEMORY` | the container's memory limit (none: 4 GiB) | bytes one instance's linear memory may grow to |
//! | `WASMCELL_HTTP_INSTANCE_REUSE` | 128 | 0.3 components: requests one instance takes in its life (1: a fresh instance per request) |
//! | `WASMCELL_HTTP_INSTANCE_CONCURRENCY` | 16 | 0.3 components: requests one instance takes at once |
//! | `WASMCELL_HTTP_IDLE_INSTANCE_MS` | 1000 | 0.3 components: how long an idle instance is kept for the next request |
//!
//! The engine's instance pool is sized from these: a slot per concurrent request, each memory
//! slot capped at the per-instance limit.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use wasmcell_engine::config::ServePool;
use wasmcell_engine::{HostWorld, InstanceReuse, Program, ServeLimits, ServeSpec, WasmEngine};

use crate::plan::GuestPlan;

/// Listen address when the environment names none.
pub const DEFAULT_ADDR: &str = "0.0.0.0:8080";

/// What the guest needs to serve once started.
#[derive(Debug)]
pub struct ServeSetup {
    listener: TcpListener,
    address: SocketAddr,
    spec: ServeSpec,
    world: HostWorld,
    /// Worker threads: one per CPU the guest may use, counted once, before confinement.
    workers: usize,
}

/// The world a binary runs in, from its exports (modules are commands). Decoded, not
/// validated: this runs on every start, and the engine validates what it compiles.
pub fn world_of(wasm: &[u8]) -> Result<HostWorld, String> {
    match wasmcell_oci::wasm::decode_wasm_interface(wasm) {
        Ok(info) => HostWorld::for_exports(info.exports.iter().map(String::as_str)),
        // The engine's load reports an undecodable binary with the parser's cause.
        Err(_) => Ok(HostWorld::Command),
    }
}

fn env<'a>(plan: &'a GuestPlan, name: &str) -> Option<&'a str> {
    plan.env
        .iter()
        .rev()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.as_str())
}

fn number<T: std::str::FromStr>(plan: &GuestPlan, name: &str, default: T) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    match env(plan, name) {
        None => Ok(default),
        Some(text) => text
            .trim()
            .parse()
            .map_err(|e| format!("{name}={text:?} is not a valid number: {e}")),
    }
}

/// Reads the knobs, binds the listening socket and builds the serve spec for a component of
/// `world`.
pub fn prepare(plan: &GuestPlan, world: HostWorld) -> Result<ServeSetup, String> {
    let (variable, text) = match env(plan, "WASMCELL_HTTP_ADDR") {
        Some(text) => ("WASMCELL_HTTP_ADDR", text),
        None => match env(plan, "WASMTIME_HTTP_PROXY_SOCKET_ADDR") {
            Some(text) => ("WASMTIME_HTTP_PROXY_SOCKET_ADDR", text),
            None => ("the default address", DEFAULT_ADDR),
        },
    };
    let address: SocketAddr = text
        .trim()
        .parse()
        .map_err(|e| format!("{variable}={text:?} is not an address like 0.0.0.0:8080: {e}"))?;
    let defaults = ServeLimits::default();
    let limits = ServeLimits {
        max_concurrent: number(
            plan,
            "WASMCELL_HTTP_MAX_CONCURRENT",
            defaults.max_concurrent,
        )?,
        max_queued: number(plan, "WASMCELL_HTTP_MAX_QUEUED", defaults.max_queued)?,
        request_timeout: Duration::from_millis(number(
            plan,
            "WASMCELL_HTTP_TIMEOUT_MS",
            defaults.request_timeout.as_millis() as u64,
        )?),
        max_request_body: number(plan, "WASMCELL_HTTP_MAX_BODY", defaults.max_request_body)?,
        max_instance_memory: instance_memory_cap(
            env(plan, "WASMCELL_HTTP_MAX_INSTANCE_MEMORY"),
            plan.memory_limit_bytes,
        )?,
        drain_timeout: Duration::from_millis(number(
            plan,
            "WASMCELL_HTTP_DRAIN_MS",
            defaults.drain_timeout.as_millis() as u64,
        )?),
        instance_reuse: InstanceReuse {
            max_requests: number(
                plan,
                "WASMCELL_HTTP_INSTANCE_REUSE",
                defaults.instance_reuse.max_requests,
            )?,
            max_concurrent: number(
                plan,
                "WASMCELL_HTTP_INSTANCE_CONCURRENCY",
                defaults.instance_reuse.max_concurrent,
            )?,
            idle_timeout: Duration::from_millis(number(
                plan,
                "WASMCELL_HTTP_IDLE_INSTANCE_MS",
                defaults.instance_reuse.idle_timeout.as_millis() as u64,
            )?),
        },
    };
    for (name, value) in [
        ("WASMCELL_HTTP_MAX_CONCURRENT", limits.max_concurrent),
        (
            "WASMCELL_HTTP_INSTANCE_REUSE",
            limits.instance_reuse.max_requests,
        ),
        (
            "WASMCELL_HTTP_INSTANCE_CONCURRENCY",
            limits.instance_reuse.max_concurrent,
        ),
    ] {
        if value == 0 {
            return Err(format!("{name} must be at least 1"));
        }
    }
    let listener = TcpListener::bind(address)
        .map_err(|e| format!("cannot listen on {address} (from {variable}): {e}"))?;
    Ok(ServeSetup {
        listener,
        address,
        world,
        workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
        spec: ServeSpec {
            env: plan.env.clone(),
            limits,
            allow_outbound: plan.allow_outbound.clone(),
        },
    })
}

/// How far one instance's memory may grow: `WASMCELL_HTTP_MAX_INSTANCE_MEMORY` when set, which
/// can lower the container's limit but not raise it (the cgroup would stop the instance there
/// anyway, and the whole server with it); else the container's limit.
fn instance_memory_cap(knob: Option<&str>, container: Option<u64>) -> Result<Option<u64>, String> {
    const NAME: &str = "WASMCELL_HTTP_MAX_INSTANCE_MEMORY";
    let Some(text) = knob else {
        return Ok(container);
    };
    let bytes: u64 = text
        .trim()
        .parse()
        .map_err(|e| format!("{NAME}={text:?} is not a valid number: {e}"))?;
    if bytes < 65536 {
        return Err(format!(
            "{NAME}={bytes} is below one wasm page (65536 bytes)"
        ));
    }
    Ok(Some(container.map_or(bytes, |limit| bytes.min(limit))))
}

/// The instance pool a server with `setup`'s limits needs: a slot per concurrent request,
/// and for a 0.3 component one more per worker thread, for the instance each keeps idle for
/// its next request (which another worker cannot use).
pub fn pool_for(setup: &ServeSetup) -> ServePool {
    let limits = &setup.spec.limits;
    let idle = if setup.world == HostWorld::ServiceP3 {
        setup.workers
    } else {
        0
    };
    ServePool {
        instances: u32::try_from(limits.max_concurrent.saturating_add(idle)).unwrap_or(u32::MAX),
        max_memory: limits.max_instance_memory,
    }
}

/// Serves until SIGTERM or SIGINT, then drains; returns the guest's exit code (0 after a
/// drain, as a server that shut down cleanly).
pub fn serve(engine: &WasmEngine, program: &Program, setup: ServeSetup) -> i32 {
    // The guest, as its PID namespace's init, exits on these signals from a handler of its
    // own; here they must start a drain instead, so they go back to their defaults before
    // tokio installs its handlers (which would otherwise chain to the exiting one).
    for signal in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: restoring the default disposition of a signal; no handler code is involved.
        #[allow(unsafe_code)]
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
        }
    }
    let ServeSetup {
        listener,
        address,
        spec,
        workers,
        ..
    } = setup;
    let drain = spec.limits.drain_timeout;
    let served = engine.serve(program, listener, spec, workers, || async {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            (Err(e), _) | (_, Err(e)) => {
                wasmcell_engine::stderr_line(&format!(
                    "wasmcell: cannot watch SIGTERM/SIGINT ({e}); serving until killed"
                ));
                std::future::pending::<()>().await;
            }
        }
        wasmcell_engine::stderr_line(&format!(
            "wasmcell: draining: no new connections, waiting up to {drain:?} for requests"
        ));
    });
    match served {
        Ok(summary) if summary.abandoned > 0 => {
            wasmcell_engine::stderr_line(&format!(
                "wasmcell: stopped serving {address} after {} requests; {} connections were \
                 still busy at the drain deadline",
                summary.requests, summary.abandoned
            ));
            0
        }
        Ok(summary) => {
            let instantiate = summary
                .instantiate_us
                .map(|(p50, p99)| format!("; instantiation median {p50} µs, p99 {p99} µs"))
                .unwrap_or_default();
            wasmcell_engine::stderr_line(&format!(
                "wasmcell: stopped serving {address} after {} requests{instantiate}",
                summary.requests
            ));
            0
        }
        Err(e) => {
            wasmcell_engine::stderr_line(&format!("wasmcell: serving {address} failed: {e}"));
            crate::guest::EXIT_SETUP
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_instance_memory_knob_lowers_the_container_limit_only() {
        assert_eq!(instance_memory_cap(None, None), Ok(None));
        assert_eq!(
            instance_memory_cap(None, Some(64 << 20)),
            Ok(Some(64 << 20))
        );
        assert_eq!(
            instance_memory_cap(Some("16777216"), Some(64 << 20)),
            Ok(Some(16 << 20))
        );
        assert_eq!(
            instance_memory_cap(Some("1073741824"), Some(64 << 20)),
            Ok(Some(64 << 20)),
            "not above the container's limit"
        );
        assert_eq!(
            instance_memory_cap(Some(" 131072 "), None),
            Ok(Some(128 << 10))
        );
        for (bad, reason) in [
            ("lots", "not a valid number"),
            ("4096", "below one wasm page"),
        ] {
            let err = instance_memory_cap(Some(bad), None).err();
            assert!(
                err.as_deref().is_some_and(|e| {
                    e.contains("WASMCELL_HTTP_MAX_INSTANCE_MEMORY") && e.contains(reason)
                }),
                "{bad}: {err:?}"
            );
        }
    }
}
