//! Where a served handler's stdout and stderr go: a buffer per stream, shared by every request,
//! written to the process's own stdout or stderr (the container's log) by a thread of its own
//! every [`FLUSH_INTERVAL`].
//!
//! Why: one log line per request written straight through costs a `write` on the request's
//! path and a wake-up of the log's reader for each line, which measured at about a fifth of
//! the server's throughput. Gathered, the log costs one `write` per interval however many
//! requests ran.
//!
//! What a reader of the log sees: each stream keeps the order its bytes were written in, and
//! one guest write is never split or interleaved with another; a line shows up within
//! [`FLUSH_INTERVAL`] (and at the latest when the server stops, which flushes). The buffer is
//! taken out from under its lock before it is written, so a write to the log that stalls (page
//! cache writeback, a slow reader) never holds up a handler's append: handlers wait only once
//! a stream holds [`MAX_BUFFERED`] bytes, and then the write that would pass it writes the
//! buffer out on the handler's own thread, so a reader that does not keep up slows the
//! handlers that write (as a full pipe would) instead of growing memory. A process killed with
//! SIGKILL loses what was not yet written: at most one interval's worth.

use std::io::Write;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

/// How often buffered output is written out.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(10);

/// Bytes a stream buffers before a write waits for them to be written out: at a line per
/// request and tens of thousands of requests a second, about half a second of log, which
/// rides out a stalled write to the log.
pub const MAX_BUFFERED: usize = 1 << 20;

#[derive(Debug, Clone)]
enum Target {
    Stdout,
    Stderr,
    /// Tests: written out to nowhere.
    #[cfg(test)]
    Discard,
    /// Tests: a write that says it started, then waits until it is let go.
    #[cfg(test)]
    Stalled {
        started: std::sync::mpsc::SyncSender<()>,
        release: Arc<Mutex<std::sync::mpsc::Receiver<()>>>,
    },
}

/// One of the process's two output streams, buffered. Clones share the buffer.
#[derive(Debug, Clone)]
pub(crate) struct BufferedOutput {
    target: Target,
    buffer: Arc<Mutex<Vec<u8>>>,
    /// Held while bytes are written out, so what was taken from the buffer reaches the stream
    /// in the order it was taken; never held by an append that fits.
    writing: Arc<Mutex<()>>,
}

impl BufferedOutput {
    fn new(target: Target) -> Self {
        BufferedOutput {
            target,
            buffer: Arc::default(),
            writing: Arc::default(),
        }
    }

    /// Appends `bytes`; if they would take the buffer past [`MAX_BUFFERED`], writes the buffer
    /// out first (and `bytes` too when they alone pass it).
    fn append(&self, bytes: &[u8]) -> std::io::Result<()> {
        {
            let mut buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
            if buffer.len() + bytes.len() <= MAX_BUFFERED {
                buffer.extend_from_slice(bytes);
                return Ok(());
            }
        }
        let _writing = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        self.write_out_taken()?;
        if bytes.len() > MAX_BUFFERED {
            return self.write_all(bytes);
        }
        let mut buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        buffer.extend_from_slice(bytes);
        Ok(())
    }

    /// Writes what is buffered out now.
    pub(crate) fn flush(&self) -> std::io::Result<()> {
        let _writing = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        self.write_out_taken()
    }

    /// Takes the buffer's bytes (a moment under its lock) and writes them out; the caller
    /// holds `writing`.
    fn write_out_taken(&self) -> std::io::Result<()> {
        let taken = {
            let mut buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::take(&mut *buffer)
        };
        if taken.is_empty() {
            return Ok(());
        }
        self.write_all(&taken)
    }

    fn write_all(&self, bytes: &[u8]) -> std::io::Result<()> {
        match &self.target {
            Target::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(bytes).and_then(|()| out.flush())
            }
            Target::Stderr => std::io::stderr().lock().write_all(bytes),
            #[cfg(test)]
            Target::Discard => Ok(()),
            #[cfg(test)]
            Target::Stalled { started, release } => {
                let _ = started.send(());
                let release = release.lock().unwrap_or_else(|e| e.into_inner());
                release.recv().map_err(std::io::Error::other)
            }
        }
    }
}

/// The server's handler output: both streams and the thread that writes them out.
pub(crate) struct HandlerOutput {
    pub(crate) stdout: BufferedOutput,
    pub(crate) stderr: BufferedOutput,
    stop: Arc<AtomicBool>,
    flusher: Option<std::thread::JoinHandle<()>>,
}

impl HandlerOutput {
    /// Both streams, and the flushing thread (if it cannot start, every write goes straight
    /// through, as without buffering).
    pub(crate) fn start() -> Self {
        let stdout = BufferedOutput::new(Target::Stdout);
        let stderr = BufferedOutput::new(Target::Stderr);
        let stop = Arc::new(AtomicBool::new(false));
        let flusher = {
            let (stdout, stderr, stop) = (stdout.clone(), stderr.clone(), stop.clone());
            std::thread::Builder::new()
                .name("handler-log".to_owned())
                .stack_size(64 << 10)
                .spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        std::thread::sleep(FLUSH_INTERVAL);
                        // A closed log is the reader's business; the handlers go on.
                        let _ = stdout.flush();
                        let _ = stderr.flush();
                    }
                })
        };
        let flusher = match flusher {
            Ok(thread) => Some(thread),
            Err(e) => {
                log::warn!("handler output is written unbuffered: no flushing thread: {e}");
                None
            }
        };
        HandlerOutput {
            stdout,
            stderr,
            stop,
            flusher,
        }
    }

    /// Whether writes are gathered (the flushing thread runs).
    fn buffered(&self) -> bool {
        self.flusher.is_some()
    }

    /// The stream a request's stdout (`stderr == false`) or stderr is given.
    pub(crate) fn stream(&self, stderr: bool) -> HandlerStream {
        HandlerStream {
            output: if stderr { &self.stderr } else { &self.stdout }.clone(),
            buffered: self.buffered(),
        }
    }
}

impl Drop for HandlerOutput {
    /// Stops the thread and writes out what is left.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.flusher.take() {
            let _ = thread.join();
        }
        let _ = self.stdout.flush();
        let _ = self.stderr.flush();
    }
}

/// A request's stdout or stderr.
#[derive(Debug, Clone)]
pub(crate) struct HandlerStream {
    output: BufferedOutput,
    buffered: bool,
}

impl HandlerStream {
    fn write_bytes(&self, bytes: &[u8]) -> std::io::Result<()> {
        if self.buffered {
            self.output.append(bytes)
        } else {
            self.output.write_all(bytes)
        }
    }
}

impl IsTerminal for HandlerStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for HandlerStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Pollable for HandlerStream {
    /// Always ready: a write never waits for the log (see [`MAX_BUFFERED`]).
    async fn ready(&mut self) {}
}

impl OutputStream for HandlerStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.write_bytes(&bytes)
            .map_err(|e| StreamError::LastOperationFailed(e.into()))
    }

    /// Bytes handed over are the log's: they are written out within [`FLUSH_INTERVAL`].
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(MAX_BUFFERED)
    }
}

impl tokio::io::AsyncWrite for HandlerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(self.write_bytes(buf).map(|()| buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_gathered_and_keep_their_order() -> std::io::Result<()> {
        let output = BufferedOutput::new(Target::Discard);
        let stream = HandlerStream {
            output: output.clone(),
            buffered: true,
        };
        for line in ["one\n", "two\n", "three\n"] {
            stream.write_bytes(line.as_bytes())?;
        }
        let buffered = output.buffer.lock().map(|b| b.clone()).unwrap_or_default();
        assert_eq!(buffered, b"one\ntwo\nthree\n");
        output.flush()?;
        assert!(output.buffer.lock().map(|b| b.is_empty()).unwrap_or(false));
        Ok(())
    }

    #[test]
    fn a_stalled_write_out_does_not_hold_up_appends() -> std::io::Result<()> {
        let (started, write_started) = std::sync::mpsc::sync_channel(1);
        let (let_go, release) = std::sync::mpsc::channel();
        let output = BufferedOutput::new(Target::Stalled {
            started,
            release: Arc::new(Mutex::new(release)),
        });
        output.append(b"first\n")?;
        let flusher = {
            let output = output.clone();
            std::thread::spawn(move || output.flush())
        };
        write_started.recv().map_err(std::io::Error::other)?;
        // The write out is stalled; an append that fits must not wait for it.
        let (appended, append_done) = std::sync::mpsc::channel();
        let appender = {
            let output = output.clone();
            std::thread::spawn(move || {
                let result = output.append(b"second\n");
                let _ = appended.send(());
                result
            })
        };
        let finished = append_done.recv_timeout(Duration::from_secs(10));
        let _ = let_go.send(());
        assert!(finished.is_ok(), "an append waited for a stalled write");
        appender
            .join()
            .map_err(|_| std::io::Error::other("appender panicked"))??;
        flusher
            .join()
            .map_err(|_| std::io::Error::other("flusher panicked"))??;
        let held = output.buffer.lock().map(|b| b.clone()).unwrap_or_default();
        assert_eq!(
            held, b"second\n",
            "the stalled write took only what came before it"
        );
        Ok(())
    }

    #[test]
    fn the_buffer_never_passes_its_bound() -> std::io::Result<()> {
        let output = BufferedOutput::new(Target::Discard);
        let stream = HandlerStream {
            output: output.clone(),
            buffered: true,
        };
        let line = vec![b'.'; 1000];
        for _ in 0..(MAX_BUFFERED / 1000 * 3) {
            stream.write_bytes(&line)?;
            let held = output.buffer.lock().map(|b| b.len()).unwrap_or(usize::MAX);
            assert!(held <= MAX_BUFFERED, "{held} bytes buffered");
        }
        // One write larger than the bound goes straight through.
        stream.write_bytes(&vec![b'\n'; MAX_BUFFERED + 1])?;
        let held = output.buffer.lock().map(|b| b.len()).unwrap_or(usize::MAX);
        assert_eq!(held, 0);
        Ok(())
    }
}
