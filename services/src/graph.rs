//! Loading a config directory and checking the dependency graph. Bad files,
//! unknown dependencies and cycles reject only the services involved (and
//! what depends on them); every other service still starts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::spec::{self, ServiceSpec, SpecError};

/// A service that will not run, and why, for the log and the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub name: String,
    pub source: PathBuf,
    pub reason: String,
}

#[derive(Debug, Default)]
pub struct Catalog {
    pub specs: BTreeMap<String, ServiceSpec>,
    pub rejected: Vec<Rejected>,
}

/// Reads every `*.toml` in `dir`, in name order.
pub fn load_dir(dir: &Path) -> Result<Catalog, SpecError> {
    load_dirs(dir, None)
}

/// Reads every `*.toml` in `dir`, then in `generated` (files PID 1 wrote at
/// boot from the machine configuration, e.g. the etcd of a control-plane
/// node), each in name order. `dir` must be readable; a missing `generated`
/// adds nothing. A generated file replaces the image's file of the same name.
pub fn load_dirs(dir: &Path, generated: Option<&Path>) -> Result<Catalog, SpecError> {
    let mut paths = toml_files(dir)?;
    if let Some(gen) = generated {
        match toml_files(gen) {
            Ok(more) => {
                let stems: BTreeSet<_> = more.iter().filter_map(|p| p.file_stem()).collect();
                paths.retain(|p| !p.file_stem().is_some_and(|s| stems.contains(s)));
                paths.extend(more.iter().cloned());
            }
            Err(_) if !gen.exists() => {}
            Err(e) => return Err(e),
        }
    }
    let mut parsed = Vec::new();
    let mut rejected = Vec::new();
    for path in paths {
        match spec::parse_file(&path) {
            Ok(s) => parsed.push(s),
            Err(e) => rejected.push(Rejected {
                name: path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                source: path.clone(),
                reason: e.to_string(),
            }),
        }
    }
    let mut catalog = check(parsed);
    rejected.append(&mut catalog.rejected);
    catalog.rejected = rejected;
    Ok(catalog)
}

fn toml_files(dir: &Path) -> Result<Vec<PathBuf>, SpecError> {
    let entries = std::fs::read_dir(dir).map_err(|e| SpecError::Read {
        path: dir.to_owned(),
        message: e.to_string(),
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    Ok(paths)
}

/// Checks dependencies: unknown names and cycles reject the services
/// involved, then anything that (transitively) depends on a rejected service.
pub fn check(specs: Vec<ServiceSpec>) -> Catalog {
    let mut good: BTreeMap<String, ServiceSpec> =
        specs.into_iter().map(|s| (s.name.clone(), s)).collect();
    let mut rejected = Vec::new();
    let mut reject = |good: &mut BTreeMap<String, ServiceSpec>, name: &str, reason: String| {
        if let Some(s) = good.remove(name) {
            rejected.push(Rejected {
                name: s.name,
                source: s.source,
                reason,
            });
        }
    };

    // Unknown dependencies.
    let known: BTreeSet<String> = good.keys().cloned().collect();
    let unknown: Vec<(String, String)> = good
        .values()
        .flat_map(|s| {
            s.depends_on
                .iter()
                .filter(|d| !known.contains(*d))
                .map(|d| (s.name.clone(), d.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    for (name, dep) in unknown {
        reject(
            &mut good,
            &name,
            format!("service {name} depends on unknown service {dep}"),
        );
    }

    // Cycles: every strongly connected cycle found is reported with its members.
    for cycle in find_cycles(&good) {
        let path = cycle.join(" -> ");
        let reason = format!("dependency cycle: {path} -> {}", cycle[0]);
        for name in &cycle {
            reject(&mut good, name, reason.clone());
        }
    }

    // Dependents of rejected services cannot start either.
    loop {
        let blocked: Vec<(String, String)> = good
            .values()
            .filter_map(|s| {
                s.depends_on
                    .iter()
                    .find(|d| !good.contains_key(*d))
                    .map(|d| (s.name.clone(), d.clone()))
            })
            .collect();
        if blocked.is_empty() {
            break;
        }
        for (name, dep) in blocked {
            reject(
                &mut good,
                &name,
                format!("service {name} depends on {dep}, which was rejected"),
            );
        }
    }
    Catalog {
        specs: good,
        rejected,
    }
}

/// Finds cycles with a depth-first search; each cycle is listed once, in
/// dependency order starting from its smallest name.
fn find_cycles(specs: &BTreeMap<String, ServiceSpec>) -> Vec<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnStack,
        Done,
    }
    let mut marks: BTreeMap<&str, Mark> = specs.keys().map(|k| (k.as_str(), Mark::New)).collect();
    let mut cycles: Vec<Vec<String>> = Vec::new();
    let mut stack: Vec<&str> = Vec::new();

    fn visit<'a>(
        n: &'a str,
        specs: &'a BTreeMap<String, ServiceSpec>,
        marks: &mut BTreeMap<&'a str, Mark>,
        stack: &mut Vec<&'a str>,
        cycles: &mut Vec<Vec<String>>,
    ) {
        marks.insert(n, Mark::OnStack);
        stack.push(n);
        if let Some(s) = specs.get(n) {
            for d in &s.depends_on {
                match marks.get(d.as_str()).copied() {
                    Some(Mark::New) => visit(d, specs, marks, stack, cycles),
                    Some(Mark::OnStack) => {
                        if let Some(pos) = stack.iter().position(|x| x == d) {
                            let mut cyc: Vec<String> =
                                stack[pos..].iter().map(|s| s.to_string()).collect();
                            let min = cyc
                                .iter()
                                .enumerate()
                                .min_by(|a, b| a.1.cmp(b.1))
                                .map(|(i, _)| i)
                                .unwrap_or(0);
                            cyc.rotate_left(min);
                            if !cycles.contains(&cyc) {
                                cycles.push(cyc);
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        stack.pop();
        marks.insert(n, Mark::Done);
    }

    let names: Vec<&str> = specs.keys().map(|k| k.as_str()).collect();
    for n in names {
        if marks.get(n) == Some(&Mark::New) {
            visit(n, specs, &mut marks, &mut stack, &mut cycles);
        }
    }
    cycles
}

/// Names in an order where every service comes after its dependencies.
/// Callers reverse it to stop. Assumes a checked (acyclic) catalog.
pub fn start_order(specs: &BTreeMap<String, ServiceSpec>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(specs.len());
    let mut placed: BTreeSet<&str> = BTreeSet::new();
    while out.len() < specs.len() {
        let before = out.len();
        for (name, s) in specs {
            if !placed.contains(name.as_str())
                && s.depends_on
                    .iter()
                    .all(|d| placed.contains(d.as_str()) || !specs.contains_key(d))
            {
                placed.insert(name);
                out.push(name.clone());
            }
        }
        if out.len() == before {
            // A cycle slipped through: append the rest rather than loop forever.
            out.extend(
                specs
                    .keys()
                    .filter(|k| !placed.contains(k.as_str()))
                    .cloned(),
            );
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, deps: &[&str]) -> ServiceSpec {
        let text = format!(
            "exec = [\"/bin/true\"]\ndepends_on = [{}]",
            deps.iter()
                .map(|d| format!("\"{d}\""))
                .collect::<Vec<_>>()
                .join(",")
        );
        spec::parse_str(name, Path::new(&format!("/s/{name}.toml")), &text).unwrap()
    }

    #[test]
    fn a_generated_file_adds_to_the_image_and_replaces_its_namesake() {
        let image = tempfile::tempdir().unwrap();
        let gen = tempfile::tempdir().unwrap();
        std::fs::write(image.path().join("web.toml"), "exec = [\"/bin/a\"]\n").unwrap();
        std::fs::write(image.path().join("etcd.toml"), "exec = [\"/bin/old\"]\n").unwrap();
        std::fs::write(gen.path().join("etcd.toml"), "exec = [\"/bin/new\"]\n").unwrap();
        let c = load_dirs(image.path(), Some(gen.path())).unwrap();
        assert_eq!(c.specs.keys().collect::<Vec<_>>(), vec!["etcd", "web"]);
        assert_eq!(c.specs["etcd"].exec, vec!["/bin/new"]);
        // No generated directory: the image's files alone.
        let c = load_dirs(image.path(), Some(&gen.path().join("missing"))).unwrap();
        assert_eq!(c.specs["etcd"].exec, vec!["/bin/old"]);
    }

    #[test]
    fn order_puts_dependencies_first() {
        let c = check(vec![
            svc("app", &["db", "net"]),
            svc("db", &["net"]),
            svc("net", &[]),
        ]);
        assert!(c.rejected.is_empty());
        assert_eq!(start_order(&c.specs), vec!["net", "db", "app"]);
    }

    #[test]
    fn unknown_dependency_rejects_service_and_dependents() {
        let c = check(vec![svc("a", &["ghost"]), svc("b", &["a"]), svc("c", &[])]);
        assert_eq!(c.specs.keys().collect::<Vec<_>>(), vec!["c"]);
        let a = c.rejected.iter().find(|r| r.name == "a").unwrap();
        assert!(a.reason.contains("unknown service ghost"), "{}", a.reason);
        let b = c.rejected.iter().find(|r| r.name == "b").unwrap();
        assert!(b.reason.contains("depends on a"), "{}", b.reason);
    }

    #[test]
    fn cycle_is_rejected_naming_its_members() {
        let c = check(vec![
            svc("x", &["y"]),
            svc("y", &["z"]),
            svc("z", &["x"]),
            svc("w", &["x"]),
            svc("ok", &[]),
        ]);
        assert_eq!(c.specs.keys().collect::<Vec<_>>(), vec!["ok"]);
        let x = c.rejected.iter().find(|r| r.name == "x").unwrap();
        assert_eq!(x.reason, "dependency cycle: x -> y -> z -> x");
        let w = c.rejected.iter().find(|r| r.name == "w").unwrap();
        assert!(w.reason.contains("depends on x"), "{}", w.reason);
    }

    #[test]
    fn load_dir_reports_bad_files_and_keeps_good_ones() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("good.toml"), "exec = [\"/bin/true\"]\n").unwrap();
        std::fs::write(dir.path().join("bad.toml"), "exec = [\"/bin/true\"\n").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let c = load_dir(dir.path()).unwrap();
        assert_eq!(c.specs.keys().collect::<Vec<_>>(), vec!["good"]);
        assert_eq!(c.rejected.len(), 1);
        assert_eq!(c.rejected[0].name, "bad");
        assert!(
            c.rejected[0].reason.contains("bad.toml:"),
            "{}",
            c.rejected[0].reason
        );
    }

    #[test]
    fn load_dir_reads_only_regular_files_of_bounded_size() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        std::fs::write(p("good.toml"), "exec = [\"/bin/true\"]\n").unwrap();
        let st = std::process::Command::new("mkfifo")
            .arg(p("fifo.toml"))
            .status()
            .unwrap();
        assert!(st.success(), "mkfifo");
        std::os::unix::fs::symlink("/dev/zero", p("zero.toml")).unwrap();
        std::fs::create_dir(p("x.toml")).unwrap();
        let huge = std::fs::File::create(p("huge.toml")).unwrap();
        huge.set_len(crate::spec::MAX_SPEC_BYTES + 1).unwrap();
        // A symlink to a regular file is read as that file.
        std::os::unix::fs::symlink(p("good.toml"), p("link.toml")).unwrap();
        // Returns at all: a FIFO would block the open, /dev/zero the read.
        let c = load_dir(dir.path()).unwrap();
        assert_eq!(
            c.specs.keys().collect::<Vec<_>>(),
            vec!["good", "link"],
            "{:?}",
            c.rejected
        );
        for (name, what) in [
            ("fifo", "a FIFO"),
            ("zero", "a character device"),
            ("x", "a directory"),
            ("huge", "limit"),
        ] {
            let r = c
                .rejected
                .iter()
                .find(|r| r.name == name)
                .unwrap_or_else(|| panic!("{name} not rejected: {:?}", c.rejected));
            let path = p(&format!("{name}.toml"));
            assert!(
                r.reason.contains(&path.display().to_string()) && r.reason.contains(what),
                "{}",
                r.reason
            );
        }
    }
}
