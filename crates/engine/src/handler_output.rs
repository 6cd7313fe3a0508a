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
//! [`FLUSH_INTERVAL`] (and at the latest when the server stops, which flushes). A stream's
//! buffer holds at most [`MAX_BUFFERED`] bytes: a write that would pass it writes the buffer
//! out first, on the handler's own thread, so a reader that does not keep up slows the
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

/// Bytes a stream buffers before a write waits for them to be written out.
pub const MAX_BUFFERED: usize = 256 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Stdout,
    Stderr,
    /// Tests: written out to nowhere.
    #[cfg(test)]
    Discard,
}

/// One of the process's two output streams, buffered. Clones share the buffer.
#[derive(Debug, Clone)]
pub(crate) struct BufferedOutput {
    target: Target,
    buffer: Arc<Mutex<Vec<u8>>>,
}

impl BufferedOutput {
    fn new(target: Target) -> Self {
        BufferedOutput {
            target,
            buffer: Arc::default(),
        }
    }

    /// Appends `bytes`, first writing the buffer out if it would pass [`MAX_BUFFERED`].
    fn append(&self, bytes: &[u8]) -> std::io::Result<()> {
        let mut buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        if buffer.len() + bytes.len() > MAX_BUFFERED {
            self.write_out(&mut buffer)?;
            if bytes.len() > MAX_BUFFERED {
                return self.write_all(bytes);
            }
        }
        buffer.extend_from_slice(bytes);
        Ok(())
    }

    /// Writes what is buffered out now.
    pub(crate) fn flush(&self) -> std::io::Result<()> {
        let mut buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        self.write_out(&mut buffer)
    }

    /// Writes `buffer` out while its lock is held, so a stream's bytes keep their order.
    fn write_out(&self, buffer: &mut Vec<u8>) -> std::io::Result<()> {
        if buffer.is_empty() {
            return Ok(());
        }
        let written = self.write_all(buffer);
        buffer.clear();
        written
    }

    fn write_all(&self, bytes: &[u8]) -> std::io::Result<()> {
        match self.target {
            Target::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(bytes).and_then(|()| out.flush())
            }
            Target::Stderr => std::io::stderr().lock().write_all(bytes),
            #[cfg(test)]
            Target::Discard => Ok(()),
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
