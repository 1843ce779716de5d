//! Loading kernel modules with finit_module(2), in the order the image
//! builder resolved from modules.dep.

use std::ffi::CString;
use std::fs::File;

/// A module that could not be loaded, and why.
#[derive(Debug)]
pub struct ModuleFailure {
    pub path: String,
    pub error: std::io::Error,
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
        let result = File::open(path).and_then(|f| {
            let params = CString::new(params).map_err(|_| std::io::ErrorKind::InvalidInput)?;
            match rustix::system::finit_module(&f, &params, 0) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => Ok(()),
                Err(e) => Err(e.into()),
            }
        });
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
