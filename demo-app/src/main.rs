//! demo-app: the guest wasmcell's demos and tests run, one small command per behaviour a
//! container user checks (output, exit codes, environment, files, stdin, signals, network,
//! memory, traps). Built as a WASI 0.2 component; it also builds natively for host-side checks.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage: demo-app COMMAND [ARGS]
commands:
  echo WORDS...      print the words
  exit N             exit with code N
  sleep SECS         sleep, then exit 0
  env                print the environment, one VAR=value per line
  ls DIR             list a directory, one name per line, sorted
  cat FILE           print a file (- reads stdin)
  write FILE TEXT    write TEXT to FILE
  daemon             print a line each second until stopped
  listen PORT        TCP server on 0.0.0.0:PORT answering one line per connection
  connect HOST:PORT  print what a TCP server sends (exit 1 if it cannot connect)
  resolve NAME       print the addresses NAME resolves to, one per line, sorted
  alloc MIB          allocate and touch MIB mebibytes
  flood MIB          write MIB mebibytes of numbered lines to stdout and to stderr
  trap               execute `unreachable`";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let command = args.get(1).map(String::as_str).unwrap_or("");
    let rest = args.get(2..).unwrap_or(&[]);
    match run(command, rest) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("demo-app {command}: {message}");
            ExitCode::from(1)
        }
    }
}

fn run(command: &str, rest: &[String]) -> Result<ExitCode, String> {
    let arg = |i: usize, what: &str| {
        rest.get(i)
            .map(String::as_str)
            .ok_or_else(|| format!("missing {what}\n{USAGE}"))
    };
    match command {
        "echo" => {
            println!("{}", rest.join(" "));
        }
        "exit" => {
            let code: u8 = arg(0, "N")?
                .parse()
                .map_err(|e| format!("exit code must be 0-255: {e}"))?;
            let _ = std::io::stdout().flush();
            exit_with_code(code);
            return Ok(ExitCode::from(code));
        }
        "sleep" => {
            let secs: f64 = arg(0, "SECS")?
                .parse()
                .map_err(|e| format!("SECS must be a number: {e}"))?;
            std::thread::sleep(Duration::from_secs_f64(secs.max(0.0)));
        }
        "env" => {
            let mut vars: Vec<(String, String)> = std::env::vars().collect();
            vars.sort();
            for (k, v) in vars {
                println!("{k}={v}");
            }
        }
        "ls" => {
            let dir = arg(0, "DIR")?;
            let mut names = Vec::new();
            for entry in std::fs::read_dir(dir).map_err(|e| format!("{dir}: {e}"))? {
                let entry = entry.map_err(|e| format!("{dir}: {e}"))?;
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
            names.sort();
            for name in names {
                println!("{name}");
            }
        }
        "cat" => {
            let file = arg(0, "FILE")?;
            let mut out = std::io::stdout().lock();
            let copied = if file == "-" {
                std::io::copy(&mut std::io::stdin().lock(), &mut out)
            } else {
                let mut f = std::fs::File::open(file).map_err(|e| format!("{file}: {e}"))?;
                std::io::copy(&mut f, &mut out)
            };
            copied.map_err(|e| format!("{file}: {e}"))?;
            out.flush().map_err(|e| e.to_string())?;
        }
        "write" => {
            let file = arg(0, "FILE")?;
            let text = arg(1, "TEXT")?;
            std::fs::write(file, text).map_err(|e| format!("{file}: {e}"))?;
        }
        "daemon" => {
            for tick in 0u64.. {
                println!("daemon tick {tick}");
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        "listen" => {
            let port: u16 = arg(0, "PORT")?
                .parse()
                .map_err(|e| format!("PORT must be 0-65535: {e}"))?;
            let listener =
                TcpListener::bind(("0.0.0.0", port)).map_err(|e| format!("bind {port}: {e}"))?;
            println!("listening on {port}");
            for (n, stream) in listener.incoming().enumerate() {
                let mut stream = stream.map_err(|e| format!("accept: {e}"))?;
                // A client that went away must not stop the server.
                let _ = writeln!(stream, "hello from demo-app listener, connection {n}");
            }
        }
        "connect" => {
            let address = arg(0, "HOST:PORT")?;
            let stream = TcpStream::connect(address).map_err(|e| format!("{address}: {e}"))?;
            let mut line = String::new();
            BufReader::new(stream)
                .read_line(&mut line)
                .map_err(|e| format!("{address}: {e}"))?;
            print!("{line}");
        }
        "resolve" => {
            let name = arg(0, "NAME")?;
            let mut addresses: Vec<String> = (name, 0)
                .to_socket_addrs()
                .map_err(|e| format!("{name}: {e}"))?
                .map(|a| a.ip().to_string())
                .collect();
            addresses.sort();
            addresses.dedup();
            for address in addresses {
                println!("{address}");
            }
        }
        "alloc" => {
            let mib: usize = arg(0, "MIB")?
                .parse()
                .map_err(|e| format!("MIB must be a whole number: {e}"))?;
            let mut blocks = Vec::with_capacity(mib);
            for i in 0..mib {
                // Touch every page so the memory is really committed.
                blocks.push(vec![(i % 251) as u8 + 1; 1 << 20]);
            }
            let sum: u64 = blocks.iter().map(|b| u64::from(b[b.len() - 1])).sum();
            println!("allocated {mib} MiB (checksum {sum})");
        }
        "flood" => {
            let mib: u64 = arg(0, "MIB")?
                .parse()
                .map_err(|e| format!("MIB must be a whole number: {e}"))?;
            // Full 64 KiB writes, as a logging program floods, not one host call per line.
            let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
            let mut err = std::io::BufWriter::with_capacity(1 << 16, std::io::stderr().lock());
            // 64-byte lines, so every line is whole and a reader can count what arrived.
            for line in 0..mib * (1 << 20) / 64 {
                let text = format!("{line:063}\n");
                out.write_all(text.as_bytes())
                    .map_err(|e| format!("stdout: {e}"))?;
                err.write_all(text.as_bytes())
                    .map_err(|e| format!("stderr: {e}"))?;
            }
            // Dropping a BufWriter would swallow a failed last write.
            out.flush().map_err(|e| format!("stdout: {e}"))?;
            err.flush().map_err(|e| format!("stderr: {e}"))?;
        }
        "trap" => trap(),
        "" | "help" | "--help" | "-h" => {
            println!("{USAGE}");
        }
        other => return Err(format!("unknown command {other:?}\n{USAGE}")),
    }
    let _ = std::io::stdout().flush();
    Ok(ExitCode::SUCCESS)
}

/// WASI 0.2's `exit` only knows success and failure; `exit-with-code` (declared in
/// `wit/exit-code.wit`) carries the number.
#[cfg(all(target_os = "wasi", target_env = "p2"))]
fn exit_with_code(code: u8) {
    #[link(wasm_import_module = "wasi:cli/exit@0.2.6")]
    unsafe extern "C" {
        #[link_name = "exit-with-code"]
        fn wasi_exit_with_code(status_code: i32);
    }
    // SAFETY: a plain import taking the status code as an i32 (the canonical ABI for u8);
    // it does not return when the host implements it.
    #[allow(unsafe_code)]
    unsafe {
        wasi_exit_with_code(i32::from(code));
    }
}

/// Elsewhere `ExitCode` carries the number.
#[cfg(not(all(target_os = "wasi", target_env = "p2")))]
fn exit_with_code(_code: u8) {}

#[cfg(target_arch = "wasm32")]
fn trap() -> ! {
    core::arch::wasm32::unreachable()
}

#[cfg(not(target_arch = "wasm32"))]
fn trap() -> ! {
    std::process::abort()
}
