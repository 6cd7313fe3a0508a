//! A container's stdio: containerd's FIFOs opened so that no open ever blocks on a missing
//! peer, and the stdin relay. The guest writes stdout/stderr straight into containerd's FIFOs,
//! so the shim holds no output buffer: a slow reader slows the guest (the pipe fills and its
//! writes block), never grows the shim.

use std::fs::File;

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
