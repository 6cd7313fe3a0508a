//! A container's stdio: containerd's FIFOs opened so that no open ever blocks on a missing
//! peer, the stdin relay, and the output drain. The guest writes stdout/stderr straight into
//! containerd's FIFOs, so the shim holds no output buffer: a slow reader slows the guest (the
//! pipe fills and its writes block), never grows the shim.
//!
//! A guest's exit is reported only once its reader has taken what the guest left in the FIFOs
//! ([`OutputDrain`]): containerd's client (1.7 and later) closes its FIFOs as soon as it
//! deletes an exited task, so output still in a pipe at the exit event would be lost.

use std::fs::File;
use std::time::{Duration, Instant};

/// The container's stdio, already opened.
#[derive(Debug, Default)]
pub struct GuestStdio {
    /// stdin (None = /dev/null).
    pub stdin: Option<File>,
    /// stdout (None = /dev/null).
    pub stdout: Option<File>,
    /// stderr (None = /dev/null).
    pub stderr: Option<File>,
}

/// Opens containerd's FIFOs without ever blocking on a missing peer.
///
/// stdout/stderr are opened read-write, so the open succeeds whether or not containerd's reader
/// is there yet; containerd sees EOF when the guest, the only writer, exits. stdin goes through
/// a [`StdinRelay`], because the FIFO's writer may connect only after `start` and the guest
/// must neither see a spurious EOF before that nor wait forever after it is gone.
pub fn open_stdio(
    stdin: &str,
    stdout: &str,
    stderr: &str,
) -> Result<(GuestStdio, Option<StdinRelay>), String> {
    let out = |path: &str| -> Result<Option<File>, String> {
        if path.is_empty() {
            return Ok(None);
        }
        if let Some(file) = log_file(path)? {
            return Ok(Some(file));
        }
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map(Some)
            .map_err(|e| format!("opening {path}: {e}"))
    };
    let (guest_stdin, relay) = if stdin.is_empty() {
        (None, None)
    } else {
        let (reader, relay) = StdinRelay::start(stdin)?;
        (Some(reader), Some(relay))
    };
    Ok((
        GuestStdio {
            stdin: guest_stdin,
            stdout: out(stdout)?,
            stderr: out(stderr)?,
        },
        relay,
    ))
}

/// containerd's log URIs (`ctr run --log-uri`): `file:///path` appends the guest's stdout and
/// stderr to that file, as runc's shim does; `binary://` (a logging program the shim would
/// have to run) is refused by name. `None` for a plain FIFO path.
fn log_file(uri: &str) -> Result<Option<File>, String> {
    if let Some(path) = uri.strip_prefix("file://") {
        use std::os::unix::fs::OpenOptionsExt;
        return std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o640)
            .open(path)
            .map(Some)
            .map_err(|e| format!("opening the log file {path} (from {uri}): {e}"));
    }
    if uri.starts_with("binary://") {
        return Err(format!(
            "log URI {uri}: binary:// logging programs are not supported by wasmcell; use \
             file:///path or the default FIFOs"
        ));
    }
    Ok(None)
}

/// Copies containerd's stdin FIFO into a pipe the guest reads, on a small thread: the
/// thread's blocking open waits for containerd's writer, and the copy ends (closing the pipe,
/// so the guest sees EOF) when that writer closes.
#[derive(Debug)]
pub struct StdinRelay {
    fifo: String,
}

impl StdinRelay {
    fn start(fifo: &str) -> Result<(File, StdinRelay), String> {
        let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| format!("creating the stdin pipe: {e}"))?;
        let path = fifo.to_owned();
        std::thread::Builder::new()
            .name("stdin-relay".to_owned())
            .stack_size(64 * 1024)
            .spawn(move || {
                let mut sink = File::from(write_end);
                if let Ok(mut source) = File::open(&path) {
                    let _ = std::io::copy(&mut source, &mut sink);
                }
            })
            .map_err(|e| format!("starting the stdin relay: {e}"))?;
        Ok((
            File::from(read_end),
            StdinRelay {
                fifo: fifo.to_owned(),
            },
        ))
    }

    /// Ends the relay if containerd never connected: a writer that opens and closes at once
    /// completes the relay's pending open and gives it EOF. Harmless when it already ended.
    pub fn close(&self) {
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&self.fifo);
    }
}

/// Read-only, non-blocking handles on a container's stdout/stderr FIFOs, used only to ask the
/// kernel how many bytes still wait in them (`FIONREAD`); the shim never reads through them.
/// Holding a reader changes nothing for the guest, which holds its FIFOs read-write anyway.
#[derive(Debug)]
pub struct OutputDrain {
    fifos: Vec<File>,
}

impl OutputDrain {
    /// How long the bytes left in the FIFOs may stay without shrinking before the exit is
    /// reported anyway: the reader is gone or stuck (containerd restarted, a client killed).
    pub const STALL: Duration = Duration::from_secs(1);
    /// The longest an exit waits for a reader that is slow but still reading.
    pub const LIMIT: Duration = Duration::from_secs(10);

    /// Opens the probes; `None` when the container has no output FIFO. A FIFO that cannot be
    /// opened is skipped: the drain is a courtesy to the reader, never a reason to fail.
    pub fn open(stdout: &str, stderr: &str) -> Option<OutputDrain> {
        use std::os::unix::fs::OpenOptionsExt;
        let fifos: Vec<File> = [stdout, stderr]
            .into_iter()
            // Log URIs (file://) are files the guest appends to: nothing to drain.
            .filter(|path| !path.is_empty() && !path.contains("://"))
            .filter_map(|path| {
                std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
                    .open(path)
                    .map_err(|e| log::debug!("no output drain for {path}: {e}"))
                    .ok()
            })
            .collect();
        (!fifos.is_empty()).then_some(OutputDrain { fifos })
    }

    /// Bytes written into the FIFOs and not yet read.
    pub fn pending(&self) -> u64 {
        self.fifos
            .iter()
            .map(|fifo| rustix::io::ioctl_fionread(fifo).unwrap_or(0))
            .sum()
    }

    /// Blocks until the FIFOs are empty, they stop shrinking for `stall`, or `limit` passes.
    /// Returns what was still pending.
    pub fn wait(&self, stall: Duration, limit: Duration) -> u64 {
        let started = Instant::now();
        let mut pending = self.pending();
        let mut last_progress = started;
        while pending > 0 {
            let now = Instant::now();
            if now.duration_since(last_progress) >= stall || now.duration_since(started) >= limit {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
            let left = self.pending();
            if left < pending {
                last_progress = Instant::now();
            }
            pending = left;
        }
        pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn fifo(dir: &std::path::Path, name: &str) -> Result<String, nix::Error> {
        let path = dir.join(name);
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))?;
        Ok(path.display().to_string())
    }

    #[test]
    fn a_drain_waits_for_a_reader_and_gives_up_on_a_stalled_one() -> TestResult {
        let dir = tempfile::tempdir()?;
        let (out, err) = (fifo(dir.path(), "out")?, fifo(dir.path(), "err")?);
        let drain = OutputDrain::open(&out, &err).ok_or("no drain for two FIFOs")?;
        let (guest, _) = open_stdio("", &out, "")?;
        // Kept open, as the guest's copy is: a FIFO without a writer blocks a reader's open.
        let mut guest_stdout = guest.stdout.ok_or("no stdout")?;
        guest_stdout.write_all(&[7u8; 40_000])?;
        assert_eq!(drain.pending(), 40_000);

        // Nobody reads: the drain gives up after the stall and says what was left.
        let started = Instant::now();
        assert_eq!(
            drain.wait(Duration::from_millis(50), OutputDrain::LIMIT),
            40_000
        );
        assert!(started.elapsed() < Duration::from_secs(5));

        // A slow reader: the drain waits until it has taken every byte.
        let reader = std::thread::spawn(move || -> std::io::Result<usize> {
            let mut source = File::open(&out)?;
            let mut buf = [0u8; 1000];
            let mut total = 0;
            while total < 40_000 {
                total += source.read(&mut buf)?;
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(total)
        });
        assert_eq!(
            drain.wait(Duration::from_millis(200), OutputDrain::LIMIT),
            0
        );
        assert_eq!(reader.join().map_err(|_| "reader panicked")??, 40_000);
        Ok(())
    }

    #[test]
    fn log_uris_append_to_a_file_and_binary_ones_are_refused() -> TestResult {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("container.log");
        std::fs::write(&path, "kept\n")?;
        let uri = format!("file://{}", path.display());
        let (guest, _) = open_stdio("", &uri, &uri)?;
        guest.stdout.ok_or("no stdout")?.write_all(b"out\n")?;
        guest.stderr.ok_or("no stderr")?.write_all(b"err\n")?;
        assert_eq!(std::fs::read_to_string(&path)?, "kept\nout\nerr\n");
        assert!(
            OutputDrain::open(&uri, &uri).is_none(),
            "a file needs no drain"
        );
        let err = open_stdio("", "binary:///usr/bin/logger?x=1", "").err();
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("binary:///usr/bin/logger")
                    && e.contains("not supported by wasmcell")),
            "{err:?}"
        );
        let missing = format!("file://{}/no/such/dir/x.log", dir.path().display());
        let err = open_stdio("", &missing, "").err();
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("opening the log file")),
            "{err:?}"
        );
        Ok(())
    }

    #[test]
    fn no_fifo_no_drain() {
        assert!(OutputDrain::open("", "").is_none());
    }
}
