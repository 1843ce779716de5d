//! Running the host tools the build shells out to (apt-get, depmod,
//! mksquashfs, mkfs.*, mtools, grub-mkimage, zstd, cargo), with errors that
//! carry the command line, its stderr and a hint.

use crate::error::{Error, Result};
use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};

/// How many trailing stderr lines an error keeps: enough for the cause,
/// not a screenful of progress output.
const STDERR_TAIL_LINES: usize = 25;

pub struct Cmd {
    command: Command,
    display: Vec<String>,
    hint: String,
}

impl Cmd {
    pub fn new(program: impl AsRef<OsStr>) -> Cmd {
        let program = program.as_ref();
        Cmd {
            command: Command::new(program),
            display: vec![program.to_string_lossy().into_owned()],
            hint: String::new(),
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Cmd {
        self.display
            .push(arg.as_ref().to_string_lossy().into_owned());
        self.command.arg(arg);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for a in args {
            self = self.arg(a);
        }
        self
    }

    pub fn current_dir(mut self, dir: &Path) -> Cmd {
        self.command.current_dir(dir);
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Cmd {
        self.command.env(key, value);
        self
    }

    pub fn env_remove(mut self, key: &str) -> Cmd {
        self.command.env_remove(key);
        self
    }

    /// What to tell the user when this command fails.
    pub fn hint(mut self, hint: impl Into<String>) -> Cmd {
        self.hint = hint.into();
        self
    }

    pub fn command_line(&self) -> String {
        self.display.join(" ")
    }

    /// Runs it, capturing stdout (returned) and stderr (kept for the error).
    pub fn output(mut self) -> Result<Vec<u8>> {
        let out = self
            .command
            .stdin(Stdio::null())
            .output()
            .map_err(|source| self.spawn_error(source))?;
        if !out.status.success() {
            return Err(self.failed(
                out.status.to_string(),
                &String::from_utf8_lossy(&out.stderr),
            ));
        }
        Ok(out.stdout)
    }

    /// Runs it, capturing output; for tools whose output is noise unless
    /// they fail.
    pub fn run(self) -> Result<()> {
        self.output().map(drop)
    }

    /// Runs it with stdout/stderr on the terminal, for long builds whose
    /// progress the user wants to see (cargo).
    pub fn run_visible(mut self) -> Result<()> {
        let status = self
            .command
            .stdin(Stdio::null())
            .status()
            .map_err(|source| self.spawn_error(source))?;
        if !status.success() {
            return Err(self.failed(status.to_string(), ""));
        }
        Ok(())
    }

    fn spawn_error(&self, source: std::io::Error) -> Error {
        let hint = if self.hint.is_empty() {
            "is it installed? `cargo xtask deps` installs the host packages".to_string()
        } else {
            self.hint.clone()
        };
        Error::Spawn {
            program: self.display[0].clone(),
            hint,
            source,
        }
    }

    fn failed(&self, status: String, stderr: &str) -> Error {
        let lines: Vec<&str> = stderr.lines().collect();
        let tail = lines[lines.len().saturating_sub(STDERR_TAIL_LINES)..].join("\n");
        Error::Command {
            command: self.command_line(),
            status,
            stderr: tail,
            hint: self.hint.clone(),
        }
    }
}
