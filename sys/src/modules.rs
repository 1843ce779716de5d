//! Loading kernel modules with finit_module(2), in the order the image
//! builder resolved from modules.dep.

use std::ffi::CString;
use std::fs::File;
use std::path::Path;

use rustix::io::Errno;

use crate::error::{Context, Error, Op};

/// A module that could not be loaded, and why.
#[derive(Debug)]
pub struct ModuleFailure {
    /// The module file, as the list names it.
    pub path: String,
    /// What failed (its message names the file too).
    pub error: Error,
}

/// Loads every module listed in `list` (one path per line, optional
/// parameters after a space, `#` comments). Already-loaded modules are fine.
pub fn load_list(list: &str) -> (usize, Vec<ModuleFailure>) {
    let mut loaded = 0;
    let mut failures = Vec::new();
    for line in list
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (path, params) = line.split_once(' ').unwrap_or((line, ""));
        let result = load_one(Path::new(path), params);
        match result {
            Ok(()) => loaded += 1,
            Err(error) => failures.push(ModuleFailure {
                path: path.to_owned(),
                error,
            }),
        }
    }
    (loaded, failures)
}

/// finit_module of one file; already loaded (EEXIST) is success.
fn load_one(path: &Path, params: &str) -> Result<(), Error> {
    let f = File::open(path).at(Op::Open, path)?;
    let params = CString::new(params).map_err(|e| Error::NulByte {
        what: "module parameters",
        at: e.nul_position(),
    })?;
    match rustix::system::finit_module(&f, &params, 0) {
        Ok(()) | Err(Errno::EXIST) => Ok(()),
        Err(e) => Err(Error::os(Op::FinitModule, path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_name_the_module_file() {
        let (loaded, failures) = load_list("# comment\n\n/nonexistent/x.ko opt=1\n");
        assert_eq!(loaded, 0);
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].path, "/nonexistent/x.ko");
        assert_eq!(failures[0].error.raw_os_error(), Some(libc::ENOENT));
        let msg = failures[0].error.to_string();
        assert!(msg.starts_with("open /nonexistent/x.ko: "), "{msg}");
    }
}
