//! Fuzz body (`fuzz/fuzz_targets/service_file.rs`), also a property test.

use std::path::Path;

/// A service file's text: parses or is refused with an error naming the
/// file, never panics.
pub fn service_file(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/etc/bascule/services/fuzz.toml");
    if let Err(e) = crate::spec::parse_str("fuzz", path, text) {
        assert!(e.to_string().contains("fuzz"), "{e}");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn service_file_holds_for_generated_input() {
        let full = "exec = [\"/usr/bin/web\", \"--port\", \"80\"]\nuser = \"nobody\"\ndepends_on = [\"db\"]\nrestart = \"always\"\n[env]\nA = \"1\"\n[readiness]\ntcp = 80\ninterval_ms = 50\n[health]\nexec = [\"true\"]\nfailures = 3\n[stop]\nsignal = \"SIGINT\"\ngrace_ms = 100\n[backoff]\ninitial_ms = 10\n";
        let notify = "exec = [\"x\"]\nreadiness = \"notify\"\nclass = \"workload\"\n";
        for case in bascule_testgen::cases(&[full.as_bytes(), notify.as_bytes()], 3000, 2) {
            super::service_file(&case);
        }
    }
}
