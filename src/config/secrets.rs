//! Secrets in the configuration: the [`Secret`] value type that never prints
//! itself, where a secret comes from ([`SecretSource`]: inline, `env:NAME`,
//! `credential:NAME`, `*_file`, `*_command`), resolving one, and the
//! permission rules (a secret file, or a config file holding an inline
//! secret, must not be readable by group or others).
//!
//! Every secret is masked from the moment the configuration is loaded:
//! inline, `env:`, `credential:` and `*_file` values are read and
//! registered with [`crate::redact`] at load ([`SecretSource::register_now`]).
//! Command secrets are run only when used, never at load (a password
//! manager prompt or a slow vault call must not delay `config check`), and
//! registered the moment their output is read.

use crate::error::{Error, Result};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long a `*_command` may take to print its secret.
pub const SECRET_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Most bytes read from a secret file or command.
const SECRET_MAX_BYTES: usize = 64 * 1024;

/// A secret value. `Debug`, `Display` and `Serialize` print `***`; read the
/// value with [`Secret::expose`] at the one place that needs it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself. Never log or print it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(crate::redact::MASK)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(crate::redact::MASK)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(crate::redact::MASK)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// A command line from the config: a string is the admin's own shell line
/// (run with `sh -c`), a list is an argv run without a shell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommandSpec {
    Shell(String),
    Argv(Vec<String>),
}

impl CommandSpec {
    /// The argv to execute (`["sh", "-c", line]` for a shell line).
    pub fn argv(&self) -> Vec<String> {
        match self {
            CommandSpec::Shell(line) => vec!["sh".into(), "-c".into(), line.clone()],
            CommandSpec::Argv(v) => v.clone(),
        }
    }

    pub fn is_empty(&self) -> bool {
        match self {
            CommandSpec::Shell(line) => line.trim().is_empty(),
            CommandSpec::Argv(v) => v.is_empty() || v[0].is_empty(),
        }
    }

    /// The program that runs, for messages.
    pub fn program(&self) -> &str {
        match self {
            CommandSpec::Shell(_) => "sh",
            CommandSpec::Argv(v) => v.first().map(String::as_str).unwrap_or(""),
        }
    }
}

impl Serialize for CommandSpec {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            CommandSpec::Shell(line) => s.serialize_str(line),
            CommandSpec::Argv(v) => v.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for CommandSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CommandSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a command: a string (run with sh -c) or a list of arguments")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<CommandSpec, E> {
                Ok(CommandSpec::Shell(v.to_string()))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> std::result::Result<CommandSpec, A::Error> {
                let mut v = Vec::new();
                while let Some(arg) = seq.next_element::<String>()? {
                    v.push(arg);
                }
                Ok(CommandSpec::Argv(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// Where a secret comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum SecretSource {
    /// Written in the config itself.
    Inline(Secret),
    /// `env:NAME`: the environment variable NAME.
    Env(String),
    /// `credential:NAME`: `$CREDENTIALS_DIRECTORY/NAME` (systemd
    /// `LoadCredential=`).
    Credential(String),
    /// `*_file`: the file's content, trailing newline removed.
    File(PathBuf),
    /// `*_command`: the command's standard output, trailing newline removed.
    Command(CommandSpec),
}

impl SecretSource {
    /// The source named by the three sibling keys `x`, `x_file`,
    /// `x_command` (validation guarantees at most one is set). An inline
    /// value `env:NAME` or `credential:NAME` is a reference, not a value.
    pub fn from_keys(
        inline: Option<&Secret>,
        file: Option<&PathBuf>,
        command: Option<&CommandSpec>,
    ) -> Option<SecretSource> {
        if let Some(s) = inline {
            let v = s.expose();
            return Some(if let Some(name) = v.strip_prefix("env:") {
                SecretSource::Env(name.to_string())
            } else if let Some(name) = v.strip_prefix("credential:") {
                SecretSource::Credential(name.to_string())
            } else {
                SecretSource::Inline(s.clone())
            });
        }
        if let Some(f) = file {
            return Some(SecretSource::File(f.clone()));
        }
        command.map(|c| SecretSource::Command(c.clone()))
    }

    /// A literal secret written in the config file (so the file itself must
    /// be private).
    pub fn is_inline(&self) -> bool {
        matches!(self, SecretSource::Inline(_))
    }

    /// At load: read the secret unless it comes from a command, and
    /// register it with [`crate::redact`], so it is masked before anything
    /// uses it. A value that cannot be read now (an unset variable, no
    /// `$CREDENTIALS_DIRECTORY` outside systemd, a file only root may read)
    /// is left alone: the error is reported where the secret is used.
    pub(crate) fn register_now(&self) {
        if !matches!(self, SecretSource::Command(_)) {
            let _ = self.resolve();
        }
    }

    /// Read the secret now and register it with [`crate::redact`] so it is
    /// masked in every log line and output from here on (a command's output
    /// is registered as soon as it is read, before anything else sees it).
    pub fn resolve(&self) -> Result<Secret> {
        let value = match self {
            SecretSource::Inline(s) => s.expose().to_string(),
            SecretSource::Env(name) => std::env::var(name).map_err(|_| {
                Error::Config(vec![format!(
                    "secret env:{name}: environment variable {name} is not set"
                )])
            })?,
            SecretSource::Credential(name) => {
                let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
                    Error::Config(vec![format!(
                        "secret credential:{name}: $CREDENTIALS_DIRECTORY is not set (use \
                         LoadCredential= in the systemd unit)"
                    )])
                })?;
                read_secret_file(&Path::new(&dir).join(name))?
            }
            SecretSource::File(path) => read_secret_file(path)?,
            SecretSource::Command(cmd) => run_secret_command(cmd)?,
        };
        crate::redact::register(&value);
        Ok(Secret(value))
    }
}

/// A secret file's content without its trailing newline.
fn read_secret_file(path: &Path) -> Result<String> {
    let mut buf = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(SECRET_MAX_BYTES as u64).read_to_end(&mut buf))
        .map_err(|e| Error::io(path, e))?;
    let text = String::from_utf8(buf).map_err(|_| {
        Error::Config(vec![format!(
            "{}: secret file is not UTF-8 text",
            path.display()
        )])
    })?;
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

/// Run a `*_command` (no stdin, bounded output, a timeout) and return its
/// stdout without the trailing newline. Its stderr is not echoed: it might
/// hold the secret.
fn run_secret_command(cmd: &CommandSpec) -> Result<String> {
    let argv = cmd.argv();
    let program = cmd.program().to_string();
    let Some((prog, args)) = argv.split_first() else {
        return Err(Error::Command {
            program,
            message: "empty command".into(),
        });
    };
    let mut child = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| Error::Command {
            program: program.clone(),
            message: e.to_string(),
        })?;
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = (&mut stdout)
            .take(SECRET_MAX_BYTES as u64)
            .read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + SECRET_COMMAND_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Timeout {
                    what: format!("secret command {program}"),
                    after: SECRET_COMMAND_TIMEOUT,
                });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                return Err(Error::Command {
                    program,
                    message: e.to_string(),
                })
            }
        }
    };
    let out = reader.join().unwrap_or_default();
    if !status.success() {
        return Err(Error::Command {
            program,
            message: format!("secret command failed ({status})"),
        });
    }
    let text = String::from_utf8(out).map_err(|_| Error::Command {
        program,
        message: "output is not UTF-8 text".into(),
    })?;
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

/// Why a file may not hold secrets, if it may not: readable by group or
/// others (mode & 0o044), as ssh refuses a private key.
pub(crate) fn insecure_mode(path: &Path) -> std::io::Result<Option<String>> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o7777;
    if mode & 0o044 != 0 {
        Ok(Some(format!(
            "mode {mode:04o} is readable by group or others (chmod 600)"
        )))
    } else {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn secrets_never_print_themselves() {
        let s = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{s} {s:?}"), "*** ***");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"***\"");
        assert_eq!(s.expose(), "hunter2-very-secret");
    }

    #[test]
    fn sources_resolve_and_register_for_redaction() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "file-secret-4711\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(insecure_mode(&file).unwrap(), None);

        let from_file = SecretSource::from_keys(None, Some(&file), None).unwrap();
        assert_eq!(from_file.resolve().unwrap().expose(), "file-secret-4711");
        assert_eq!(crate::redact::scrub("x file-secret-4711 y"), "x *** y");

        let shell = CommandSpec::Shell("printf 'cmd-secret-%s\\n' 42".into());
        let from_cmd = SecretSource::from_keys(None, None, Some(&shell)).unwrap();
        assert_eq!(from_cmd.resolve().unwrap().expose(), "cmd-secret-42");

        let argv = CommandSpec::Argv(vec!["echo".into(), "argv-secret-43".into()]);
        assert_eq!(
            SecretSource::Command(argv).resolve().unwrap().expose(),
            "argv-secret-43"
        );

        let failing = CommandSpec::Argv(vec!["false".into()]);
        assert!(matches!(
            SecretSource::Command(failing).resolve(),
            Err(Error::Command { .. })
        ));

        std::env::set_var("HA_TEST_SECRET_ENV", "env-secret-44");
        let env = Secret::new("env:HA_TEST_SECRET_ENV");
        let src = SecretSource::from_keys(Some(&env), None, None).unwrap();
        assert_eq!(src, SecretSource::Env("HA_TEST_SECRET_ENV".into()));
        assert!(!src.is_inline());
        assert_eq!(src.resolve().unwrap().expose(), "env-secret-44");

        let cred = Secret::new("credential:pve_token");
        let src = SecretSource::from_keys(Some(&cred), None, None).unwrap();
        assert_eq!(src, SecretSource::Credential("pve_token".into()));

        let inline = SecretSource::from_keys(Some(&Secret::new("plain")), None, None).unwrap();
        assert!(inline.is_inline());
    }

    #[test]
    fn group_readable_files_are_insecure() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s");
        std::fs::write(&file, "x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(insecure_mode(&file).unwrap().unwrap().contains("mode 0644"));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(insecure_mode(&file).unwrap().is_some());
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(insecure_mode(&file).unwrap().is_none());
    }
}
