//! The shim's own log. containerd reads a shim's log from the `log` FIFO in a container's
//! bundle — one FIFO per container the shim is handed, each read only while its container
//! exists. A shim that serves several containers (a pod, or a namespace under
//! `group = "namespace"`) therefore writes each line to the FIFO of its oldest live container
//! and moves to the next when containerd stops reading one, so its lines reach containerd's
//! log for as long as the shim runs, not only until the first container is deleted.
//!
//! Lines have the format of the containerd-shim crate's logger (`time="…" level=… msg="…"`),
//! each in one `write`, so containerd's relay never splits one. The level is `RUST_LOG`, else
//! `info`, and `debug` when containerd runs with debug logging.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::str::FromStr as _;
use std::sync::{Mutex, OnceLock};

use log::{LevelFilter, Log, Metadata, Record};

/// The FIFO each container's bundle holds for the shim's log.
const LOG_FIFO: &str = "log";

/// Where lines go: the FIFOs of the containers this shim serves, oldest first.
#[derive(Debug, Default)]
struct FollowingLogger {
    sinks: Mutex<VecDeque<(String, File)>>,
}

static LOGGER: OnceLock<FollowingLogger> = OnceLock::new();

/// Installs the logger, writing to the `log` FIFO of the container `id` whose `start`
/// launched this shim (the working directory is its bundle); in a spare server that served
/// before, adds that FIFO to the installed logger.
pub fn init(debug: bool, id: &str) -> std::io::Result<()> {
    let first = open_fifo(Path::new(LOG_FIFO))?;
    let logger = LOGGER.get_or_init(FollowingLogger::default);
    logger.push(id, first);
    let level = std::env::var("RUST_LOG")
        .ok()
        .and_then(|text| LevelFilter::from_str(&text).ok())
        .unwrap_or(LevelFilter::Info);
    log::set_max_level(if debug {
        level.max(LevelFilter::Debug)
    } else {
        level
    });
    // A spare server ([`crate::spare`]) installs it once, and only adds each next container's
    // FIFO to it.
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    let mut installed = Ok(());
    INSTALLED.call_once(|| installed = log::set_logger(logger).map_err(std::io::Error::other));
    installed
}

/// Also writes to container `id`'s FIFO in `bundle`, once the containers before it are gone.
/// A bundle without one (nothing reads it) is skipped.
pub fn follow(id: &str, bundle: &Path) {
    let Some(logger) = LOGGER.get() else {
        return;
    };
    if let Ok(fifo) = open_fifo(&bundle.join(LOG_FIFO)) {
        logger.push(id, fifo);
    }
}

/// Stops writing to container `id`'s FIFO: it is being deleted, and containerd with it stops
/// reading.
pub fn forget(id: &str) {
    if let Some(logger) = LOGGER.get() {
        logger.lock().retain(|(owner, _)| owner != id);
    }
}

/// Opens a FIFO for writing without blocking: if nothing reads it, the open fails rather than
/// waiting, and a write to a full FIFO drops the line rather than stalling the shim.
fn open_fifo(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
}

impl FollowingLogger {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(String, File)>> {
        self.sinks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn push(&self, id: &str, file: File) {
        let mut sinks = self.lock();
        sinks.retain(|(owner, _)| owner != id);
        sinks.push_back((id.to_owned(), file));
    }

    /// Writes `line` to the oldest FIFO still read; FIFOs whose reader is gone are dropped.
    fn write_line(&self, line: &[u8]) {
        let mut sinks = self.lock();
        while let Some((_, file)) = sinks.front_mut() {
            match file.write(line) {
                Ok(_) => return,
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                    sinks.pop_front();
                }
                // Full (containerd is not keeping up) or interrupted: the line is dropped.
                Err(_) => return,
            }
        }
    }
}

impl Log for FollowingLogger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        // Quoted, so a newline or quote in the message cannot end the field or fake a record.
        let message = serde_json::to_string(&record.args().to_string())
            .unwrap_or_else(|_| "\"(unprintable)\"".to_owned());
        let line = format!(
            "time=\"{}\" level={} msg={message}\n",
            rfc3339_now(),
            record.level().as_str().to_lowercase()
        );
        self.write_line(line.as_bytes());
    }

    fn flush(&self) {}
}

/// The current UTC time as RFC 3339 with nanoseconds, as containerd writes its own.
fn rfc3339_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(now.as_secs(), now.subsec_nanos())
}

fn rfc3339(unix_seconds: u64, nanos: u32) -> String {
    let days = unix_seconds / 86_400;
    let seconds = unix_seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

/// (year, month, day) of the proleptic Gregorian calendar for days since 1970-01-01
/// (Howard Hinnant's `civil_from_days`, restricted to dates after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339(951_782_400, 5), "2000-02-29T00:00:00.000000005Z");
        assert_eq!(rfc3339(1_796_428_799, 0), "2026-12-04T23:59:59.000000000Z");
    }

    #[test]
    fn lines_move_to_the_next_fifo_when_a_reader_goes() -> std::io::Result<()> {
        let dir = tempfile::tempdir()?;
        let fifo = |name: &str| -> std::io::Result<(std::path::PathBuf, File)> {
            let path = dir.path().join(name);
            nix::unistd::mkfifo(&path, nix::sys::stat::Mode::S_IRWXU)
                .map_err(std::io::Error::from)?;
            // The reader, as containerd opens it.
            let reader = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&path)?;
            Ok((path, reader))
        };
        let (first_path, first_reader) = fifo("first")?;
        let (second_path, second_reader) = fifo("second")?;
        let logger = FollowingLogger::default();
        logger.push("a", open_fifo(&first_path)?);
        logger.push("b", open_fifo(&second_path)?);
        let read = |mut reader: &File| {
            let mut buf = [0u8; 256];
            let n = std::io::Read::read(&mut reader, &mut buf).unwrap_or(0);
            String::from_utf8_lossy(&buf[..n]).into_owned()
        };
        logger.write_line(b"one\n");
        assert_eq!(read(&first_reader), "one\n");
        assert_eq!(read(&second_reader), "");
        // containerd deleted the first container: its reader is closed.
        drop(first_reader);
        logger.write_line(b"two\n");
        assert_eq!(read(&second_reader), "two\n");
        assert_eq!(logger.lock().len(), 1, "the closed FIFO is dropped");
        // With none left, a line goes nowhere and nothing fails.
        logger.lock().retain(|(owner, _)| owner != "b");
        logger.write_line(b"three\n");
        assert_eq!(read(&second_reader), "");
        Ok(())
    }
}
