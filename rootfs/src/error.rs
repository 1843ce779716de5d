//! One error type for image building. Every variant names the file,
//! partition or command involved, and where there is an obvious next step,
//! says what it is.

use std::path::{Path, PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot run `{program}`: {source}; {hint}")]
    Spawn {
        program: String,
        hint: String,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "`{command}` failed ({status}){}{}",
        stderr_block(stderr),
        hint_line(hint)
    )]
    Command {
        command: String,
        status: String,
        stderr: String,
        hint: String,
    },

    #[error("kernel modules: {0}")]
    Modules(#[from] crate::modules::ModulesError),

    #[error("partition table of {}: {source}", path.display())]
    Gpt {
        path: PathBuf,
        #[source]
        source: crate::gpt::GptError,
    },

    #[error(
        "{what} ({} is {size} bytes) does not fit partition {partition} ({capacity} bytes): \
         make it smaller or raise the size in boot/src/layout.rs",
        path.display()
    )]
    TooBig {
        what: &'static str,
        path: PathBuf,
        partition: &'static str,
        size: u64,
        capacity: u64,
    },

    #[error("shared libraries of {}: {reason}", binary.display())]
    Libraries { binary: PathBuf, reason: String },

    #[error("generating {file}: {source}")]
    GrubCfg {
        file: &'static str,
        #[source]
        source: bascule_boot::grubcfg::GrubCfgError,
    },

    #[error("generating {file}: {source}")]
    GrubEnv {
        file: &'static str,
        #[source]
        source: bascule_boot::grubenv::GrubEnvError,
    },

    #[error("generating {file}: {source}")]
    Bls {
        file: String,
        #[source]
        source: bascule_boot::bls::BlsError,
    },

    #[error("upgrade bundle: {0}")]
    Bundle(#[from] bascule_bundle::BundleError),

    #[error(transparent)]
    Key(#[from] bascule_bundle::keys::KeyError),

    #[error("{0}")]
    Invalid(String),
}

fn stderr_block(stderr: &str) -> String {
    if stderr.trim().is_empty() {
        String::new()
    } else {
        format!(":\n{}", stderr.trim_end())
    }
}

fn hint_line(hint: &str) -> String {
    if hint.is_empty() {
        String::new()
    } else {
        format!("\nhint: {hint}")
    }
}

/// Attaches the action and path to an `io::Error`.
pub trait IoContext<T> {
    fn io(self, action: &'static str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn io(self, action: &'static str, path: &Path) -> Result<T> {
        self.map_err(|source| Error::Io {
            action,
            path: path.to_path_buf(),
            source,
        })
    }
}
