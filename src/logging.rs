//! Logging: stderr (plain under systemd: when stderr is the journal stream
//! named by `$JOURNAL_STREAM`, no ANSI, no timestamps, and each line starts
//! with its syslog priority, `<3>` error … `<7>` debug, as sd-daemon(3)
//! describes, so `journalctl -p warning` works; `--log-format json` for
//! shippers), `main.log` in the log dir, and one file per workflow
//! (`backup.log`, ...) while a run goes on. The files rotate by size
//! (`global.logging`). Every line passes through [`crate::redact::scrub`]
//! first.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::Mutex;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

static MAIN_LOG: Mutex<Option<LogFile>> = Mutex::new(None);
static WORKFLOW_LOG: Mutex<Option<LogFile>> = Mutex::new(None);

/// Which sink a [`SinkWriter`] writes to.
#[derive(Clone, Copy)]
enum Sink {
    Stderr,
    /// stderr is the journal: each line gets its syslog priority prefix.
    Journal,
    Main,
    Workflow,
}

/// A writer that scrubs secrets from each formatted line before writing it.
/// `priority` is the sd-daemon prefix of the event's level (journal only).
pub struct SinkWriter {
    sink: Sink,
    priority: Option<&'static str>,
}

impl Write for SinkWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let clean = crate::redact::scrub(&text);
        match self.sink {
            Sink::Stderr => crate::progress::suspend(|| io::stderr().write_all(clean.as_bytes()))?,
            Sink::Journal => {
                // The fmt layer writes one event per call; a multi-line
                // message gets the prefix on each line.
                let prefix = self.priority.unwrap_or("<6>");
                let mut out = String::with_capacity(clean.len() + 8);
                for line in clean.split_inclusive('\n') {
                    out.push_str(prefix);
                    out.push_str(line);
                }
                crate::progress::suspend(|| io::stderr().write_all(out.as_bytes()))?
            }
            Sink::Main | Sink::Workflow => {
                let slot = if matches!(self.sink, Sink::Main) {
                    &MAIN_LOG
                } else {
                    &WORKFLOW_LOG
                };
                let mut guard = slot.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(f) = guard.as_mut() {
                    f.append(clean.as_bytes());
                }
            }
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Clone, Copy)]
struct MakeSink(Sink);

impl<'a> MakeWriter<'a> for MakeSink {
    type Writer = SinkWriter;
    fn make_writer(&'a self) -> SinkWriter {
        SinkWriter {
            sink: self.0,
            priority: None,
        }
    }
    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> SinkWriter {
        SinkWriter {
            sink: self.0,
            priority: Some(priority(meta.level())),
        }
    }
}

/// The syslog priority prefix (sd-daemon(3)) of a tracing level.
fn priority(level: &tracing::Level) -> &'static str {
    match *level {
        tracing::Level::ERROR => "<3>",
        tracing::Level::WARN => "<4>",
        tracing::Level::INFO => "<6>",
        _ => "<7>",
    }
}

/// Whether stderr is the journal stream systemd set up for this service:
/// `$JOURNAL_STREAM` is `DEVICE:INODE` of that stream, and only counts when
/// stderr is still it (a child whose stderr was redirected inherits the
/// variable; systemd.exec(5), "Environment Variables Set by the Service
/// Manager").
pub fn stderr_is_journal() -> bool {
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let v = v.to_string_lossy();
    let Some((dev, ino)) = v.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) =
        std::fs::metadata("/proc/self/fd/2").or_else(|_| std::fs::metadata("/dev/stderr"))
    else {
        return false;
    };
    meta.dev() == dev && meta.ino() == ino
}

/// An append-only log file that rotates by size: `NAME` → `NAME.1` → …
/// → `NAME.keep`, the oldest removed.
struct LogFile {
    path: std::path::PathBuf,
    file: File,
    size: u64,
    max: u64,
    keep: u32,
}

impl LogFile {
    fn open(path: &Path, rotation: Rotation) -> io::Result<LogFile> {
        let file = open_append(path)?;
        let size = file.metadata()?.len();
        let mut f = LogFile {
            path: path.to_path_buf(),
            file,
            size,
            max: rotation.max_bytes,
            keep: rotation.keep,
        };
        if f.size >= f.max {
            f.rotate();
        }
        Ok(f)
    }

    fn append(&mut self, bytes: &[u8]) {
        // A full disk must not kill the run; stderr still has the line.
        if self.file.write_all(bytes).is_ok() {
            self.size += bytes.len() as u64;
        }
        if self.size >= self.max {
            self.rotate();
        }
    }

    fn rotate(&mut self) {
        let name = |n: u32| {
            let mut s = self.path.clone().into_os_string();
            s.push(format!(".{n}"));
            std::path::PathBuf::from(s)
        };
        if self.keep == 0 {
            let _ = std::fs::remove_file(&self.path);
        } else {
            let _ = std::fs::remove_file(name(self.keep));
            for n in (1..self.keep).rev() {
                let _ = std::fs::rename(name(n), name(n + 1));
            }
            let _ = std::fs::rename(&self.path, name(1));
        }
        if let Ok(f) = open_append(&self.path) {
            self.file = f;
            self.size = 0;
        }
    }
}

/// When the log files rotate (`global.logging`).
#[derive(Debug, Clone, Copy)]
pub struct Rotation {
    pub max_bytes: u64,
    pub keep: u32,
}

impl Rotation {
    pub fn from_config(c: &crate::config::LoggingConfig) -> Rotation {
        Rotation {
            max_bytes: c.max_size_mb.max(1) * 1024 * 1024,
            keep: c.keep,
        }
    }
}

/// Whether the log files are written, per `global.logging.files`.
pub fn files_wanted(c: &crate::config::LoggingConfig) -> bool {
    use crate::config::LogFiles;
    match c.files {
        LogFiles::On => true,
        LogFiles::Off => false,
        LogFiles::Auto => !stderr_is_journal(),
    }
}

/// How much to log on stderr, and in which format.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogOptions {
    /// 0: info, 1: debug, 2 and more: trace (the files get debug too).
    pub verbose: u8,
    /// Only warnings and errors on stderr.
    pub quiet: bool,
    /// One JSON object per line on stderr, for log shippers.
    pub json: bool,
}

/// Install the global subscriber. File sinks start closed; see
/// [`open_main_log`] and [`open_workflow_log`].
pub fn init(args: &LogOptions) {
    let level = if args.quiet {
        LevelFilter::WARN
    } else {
        match args.verbose {
            0 => LevelFilter::INFO,
            1 => LevelFilter::DEBUG,
            _ => LevelFilter::TRACE,
        }
    };
    let journal = stderr_is_journal();
    let ansi = !journal && io::IsTerminal::is_terminal(&io::stderr());
    let stderr_layer: Box<dyn Layer<_> + Send + Sync> = match args.json {
        true => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(MakeSink(Sink::Stderr))
            .with_filter(level)
            .boxed(),
        false if journal => tracing_subscriber::fmt::layer()
            .without_time()
            .with_ansi(false)
            .with_target(false)
            .with_level(false)
            .with_writer(MakeSink(Sink::Journal))
            .with_filter(level)
            .boxed(),
        false => tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_target(false)
            .with_writer(MakeSink(Sink::Stderr))
            .with_filter(level)
            .boxed(),
    };
    let file_level = if args.verbose > 0 {
        level
    } else {
        LevelFilter::INFO
    };
    let main_layer = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_target(false)
        .with_writer(MakeSink(Sink::Main))
        .with_filter(file_level);
    let wf_layer = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_target(false)
        .with_writer(MakeSink(Sink::Workflow))
        .with_filter(file_level);
    let _ = tracing_subscriber::registry()
        .with(stderr_layer)
        .with(main_layer)
        .with(wf_layer)
        .try_init();
}

fn open_append(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

/// Start writing `main.log` in `dir` (created if missing).
pub fn open_main_log(dir: &Path, rotation: Rotation) -> crate::Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| crate::Error::io(dir, e))?;
    let path = dir.join("main.log");
    let f = LogFile::open(&path, rotation).map_err(|e| crate::Error::io(&path, e))?;
    *MAIN_LOG.lock().unwrap_or_else(|e| e.into_inner()) = Some(f);
    Ok(())
}

/// Start writing `<workflow>.log` in `dir` for the rest of this process.
pub fn open_workflow_log(dir: &Path, workflow: &str, rotation: Rotation) -> crate::Result<()> {
    let path = dir.join(format!("{workflow}.log"));
    let f = LogFile::open(&path, rotation).map_err(|e| crate::Error::io(&path, e))?;
    *WORKFLOW_LOG.lock().unwrap_or_else(|e| e.into_inner()) = Some(f);
    Ok(())
}
