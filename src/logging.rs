//! Logging: stderr (plain under systemd: no ANSI, no timestamps when
//! `$JOURNAL_STREAM` is set; `--log-format json` for shippers), `main.log`
//! in the log dir, and one file per workflow (`backup.log`, ...) while a run
//! goes on. Every line passes through [`crate::redact::scrub`] first.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::Mutex;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

static MAIN_LOG: Mutex<Option<File>> = Mutex::new(None);
static WORKFLOW_LOG: Mutex<Option<File>> = Mutex::new(None);

/// Which sink a [`SinkWriter`] writes to.
#[derive(Clone, Copy)]
enum Sink {
    Stderr,
    Main,
    Workflow,
}

/// A writer that scrubs secrets from each formatted line before writing it.
pub struct SinkWriter(Sink);

impl Write for SinkWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let clean = crate::redact::scrub(&text);
        match self.0 {
            Sink::Stderr => io::stderr().write_all(clean.as_bytes())?,
            Sink::Main | Sink::Workflow => {
                let slot = if matches!(self.0, Sink::Main) {
                    &MAIN_LOG
                } else {
                    &WORKFLOW_LOG
                };
                let mut guard = slot.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(f) = guard.as_mut() {
                    // A full disk must not kill the run; stderr still has it.
                    let _ = f.write_all(clean.as_bytes());
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
        SinkWriter(self.0)
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
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
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
            .with_writer(MakeSink(Sink::Stderr))
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
pub fn open_main_log(dir: &Path) -> crate::Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| crate::Error::io(dir, e))?;
    let path = dir.join("main.log");
    let f = open_append(&path).map_err(|e| crate::Error::io(&path, e))?;
    *MAIN_LOG.lock().unwrap_or_else(|e| e.into_inner()) = Some(f);
    Ok(())
}

/// Start writing `<workflow>.log` in `dir` for the rest of this process.
pub fn open_workflow_log(dir: &Path, workflow: &str) -> crate::Result<()> {
    let path = dir.join(format!("{workflow}.log"));
    let f = open_append(&path).map_err(|e| crate::Error::io(&path, e))?;
    *WORKFLOW_LOG.lock().unwrap_or_else(|e| e.into_inner()) = Some(f);
    Ok(())
}
