//! demo-p3: a WASI 0.3 command component, the 0.3 counterpart of demo-app's test commands.
//! Everything it does goes through 0.3 interfaces (arguments, environment, stdio as streams,
//! files through preopens, the monotonic clock, exit codes); `run` is async.

use wasip3::cli::{environment, exit, stderr, stdin, stdout};
use wasip3::filesystem::preopens;
use wasip3::filesystem::types::{Descriptor, DescriptorFlags, OpenFlags, PathFlags};
use wasip3::wit_stream;

wasip3::cli::command::export!(DemoP3);

const USAGE: &str = "usage: demo-p3 COMMAND [ARGS]
  echo WORDS...      print WORDS
  exit N             exit with code N
  env                print the environment, sorted
  cat FILE|-         copy FILE (or stdin) to stdout
  write FILE TEXT    write TEXT to FILE
  sleep SECS         wait SECS seconds on the monotonic clock
  alloc MIB          allocate and touch MIB mebibytes
  trap               execute `unreachable`";

struct DemoP3;

impl wasip3::exports::cli::run::Guest for DemoP3 {
    async fn run() -> Result<(), ()> {
        let args = environment::get_arguments();
        let command = args.get(1).cloned().unwrap_or_default();
        let rest = args.get(2..).unwrap_or(&[]);
        match run(&command, rest).await {
            Ok(()) => Ok(()),
            Err(message) => {
                write_err(format!("demo-p3 {command}: {message}\n").into_bytes()).await;
                Err(())
            }
        }
    }
}

async fn run(command: &str, rest: &[String]) -> Result<(), String> {
    let arg = |i: usize, what: &str| {
        rest.get(i)
            .map(String::as_str)
            .ok_or_else(|| format!("missing {what}\n{USAGE}"))
    };
    match command {
        "echo" => write_out(format!("{}\n", rest.join(" ")).into_bytes()).await,
        "exit" => {
            let code: u8 = arg(0, "N")?
                .parse()
                .map_err(|e| format!("exit code must be 0-255: {e}"))?;
            exit::exit_with_code(code);
            Ok(())
        }
        "env" => {
            let mut vars = environment::get_environment();
            vars.sort();
            let text: String = vars.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
            write_out(text.into_bytes()).await
        }
        "cat" => {
            let file = arg(0, "FILE")?;
            let bytes = if file == "-" {
                let (contents, done) = stdin::read_via_stream();
                let bytes = contents.collect().await;
                done.await.map_err(|e| format!("stdin: {e:?}"))?;
                bytes
            } else {
                read_file(file).await?
            };
            write_out(bytes).await
        }
        "write" => write_file(arg(0, "FILE")?, arg(1, "TEXT")?).await,
        "sleep" => {
            let secs: f64 = arg(0, "SECS")?
                .parse()
                .map_err(|e| format!("SECS must be a number: {e}"))?;
            let nanos = (secs.max(0.0) * 1e9) as u64;
            wasip3::clocks::monotonic_clock::wait_for(nanos).await;
            Ok(())
        }
        "alloc" => {
            let mib: usize = arg(0, "MIB")?
                .parse()
                .map_err(|e| format!("MIB must be a whole number: {e}"))?;
            // Every page is touched so the memory is really committed.
            let blocks: Vec<Vec<u8>> = (0..mib)
                .map(|i| vec![(i % 251) as u8 + 1; 1 << 20])
                .collect();
            let sum: u64 = blocks.iter().map(|b| u64::from(b[b.len() - 1])).sum();
            write_out(format!("allocated {mib} MiB (checksum {sum})\n").into_bytes()).await
        }
        "trap" => trap(),
        _ => Err(format!("unknown command {command:?}\n{USAGE}")),
    }
}

async fn write_out(bytes: Vec<u8>) -> Result<(), String> {
    let (mut tx, rx) = wit_stream::new();
    let done = stdout::write_via_stream(rx);
    let left = tx.write_all(bytes).await;
    drop(tx);
    done.await.map_err(|e| format!("stdout: {e:?}"))?;
    if left.is_empty() {
        Ok(())
    } else {
        Err(format!("stdout: {} bytes not written", left.len()))
    }
}

async fn write_err(bytes: Vec<u8>) {
    let (mut tx, rx) = wit_stream::new();
    let done = stderr::write_via_stream(rx);
    tx.write_all(bytes).await;
    drop(tx);
    let _ = done.await;
}

/// The preopen holding `path` (the longest guest path that is a prefix) and the rest of it.
fn resolve(path: &str) -> Result<(Descriptor, String), String> {
    let mut best: Option<(Descriptor, String, usize)> = None;
    for (dir, guest) in preopens::get_directories() {
        let prefix = guest.trim_end_matches('/');
        let inside = path == prefix
            || path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'));
        if inside && best.as_ref().is_none_or(|(_, _, len)| prefix.len() > *len) {
            let rest = path[prefix.len()..].trim_start_matches('/').to_owned();
            best = Some((dir, rest, prefix.len()));
        }
    }
    best.map(|(dir, rest, _)| (dir, rest))
        .ok_or_else(|| format!("{path}: not below any preopened directory"))
}

async fn read_file(path: &str) -> Result<Vec<u8>, String> {
    let (dir, rest) = resolve(path)?;
    let file = dir
        .open_at(
            PathFlags::empty(),
            rest,
            OpenFlags::empty(),
            DescriptorFlags::READ,
        )
        .await
        .map_err(|e| format!("{path}: {e:?}"))?;
    let (contents, done) = file.read_via_stream(0);
    let bytes = contents.collect().await;
    done.await.map_err(|e| format!("{path}: {e:?}"))?;
    Ok(bytes)
}

async fn write_file(path: &str, text: &str) -> Result<(), String> {
    let (dir, rest) = resolve(path)?;
    let file = dir
        .open_at(
            PathFlags::empty(),
            rest,
            OpenFlags::CREATE | OpenFlags::TRUNCATE,
            DescriptorFlags::WRITE,
        )
        .await
        .map_err(|e| format!("{path}: {e:?}"))?;
    let (mut tx, rx) = wit_stream::new();
    let done = file.write_via_stream(rx, 0);
    tx.write_all(text.as_bytes().to_vec()).await;
    drop(tx);
    done.await.map_err(|e| format!("{path}: {e:?}"))
}

#[cfg(target_arch = "wasm32")]
fn trap() -> ! {
    core::arch::wasm32::unreachable()
}

#[cfg(not(target_arch = "wasm32"))]
fn trap() -> ! {
    std::process::abort()
}
