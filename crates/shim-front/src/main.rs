//! `containerd-shim-wasmcell-v1`, the binary containerd execs: answers the cleanup `delete`
//! that finds nothing to empty, and execs the shim core (same arguments, same `argv[0]`) for
//! every other action. See the library's docs for why.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use wasmcell_shim_front::{CORE_BINARY, ShimInvocation, delete_response, remove_bundle_leftovers};

fn main() {
    let args: Vec<OsString> = std::env::args_os().collect();
    let invocation = ShimInvocation::parse(args.get(1..).unwrap_or_default());
    if let Some(invocation) = invocation
        && invocation.action.as_deref() == Some("delete")
        && let Some(bundle) = invocation.bundle.or_else(|| std::env::current_dir().ok())
        && remove_bundle_leftovers(&bundle).is_none()
    {
        let response = delete_response(std::time::SystemTime::now());
        let mut stdout = std::io::stdout();
        if let Err(e) = stdout.write_all(&response).and_then(|()| stdout.flush()) {
            eprintln!("io.containerd.wasmcell.v1: writing the delete response: {e}");
            std::process::exit(1);
        }
        std::process::exit(0);
    }
    exec_core(&args)
}

/// Replaces this process with the core, installed next to this binary (or else found on
/// `PATH`).
fn exec_core(args: &[OsString]) -> ! {
    let core = std::env::current_exe()
        .ok()
        .and_then(|front| Some(front.parent()?.join(CORE_BINARY)))
        .unwrap_or_else(|| PathBuf::from(CORE_BINARY));
    let mut command = std::process::Command::new(&core);
    if let Some(argv0) = args.first() {
        command.arg0(argv0);
    }
    let error = command.args(args.iter().skip(1)).exec();
    eprintln!(
        "io.containerd.wasmcell.v1: cannot run the shim core {}: {error} (it is installed next to containerd-shim-wasmcell-v1)",
        core.display()
    );
    std::process::exit(1)
}
