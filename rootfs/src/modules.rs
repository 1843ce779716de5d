//! Which kernel modules go into the initramfs, and in which order the init
//! loads them: the closure of a wanted list over modules.dep, dependencies
//! first, plus the soft dependencies modules.dep does not record.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::Path;

/// What the init needs from Debian's generic kernel, where every one of
/// these is a module (none is built in): virtio PCI transport, disk,
/// console/serial port (the API channel) and network; squashfs for the slot
/// root; vfat + the default codepage/iocharset for the ESP; ext4 for STATE
/// and EPHEMERAL; efivarfs for systemd-boot's variables; the QEMU watchdog;
/// loop for mounting images.
pub const WANTED: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_console",
    "virtio_net",
    "squashfs",
    "vfat",
    "nls_cp437",
    "nls_ascii",
    "ext4",
    "efivarfs",
    "i6300esb",
    "loop",
];

/// `(module, load this first)` pairs that modules.dep does not list.
/// ext4 has a softdep on "crc32c", which resolves to crc32c-intel first on
/// x86; that one fails under TCG ("No such device"), so name the generic
/// implementation explicitly.
pub const SOFTDEPS: &[(&str, &str)] = &[("ext4", "crc32c_generic")];

#[derive(Debug, thiserror::Error)]
pub enum ModulesError {
    #[error("cannot read {path}: {source}; run depmod on the kernel tree (the kernel cache may be damaged: delete it)")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("modules.dep line {line}: {problem}")]
    Parse { line: usize, problem: String },
    #[error("module {name} (needed by {needed_by}) is neither in modules.dep nor built in; check the name against the kernel package")]
    Unknown { name: String, needed_by: String },
    #[error("dependency cycle through module {0}")]
    Cycle(String),
}

/// A module to load, with its path relative to `/lib/modules/<version>/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    pub name: String,
    pub path: String,
}

struct Entry {
    path: String,
    deps: Vec<String>,
}

/// modules.dep (and modules.builtin) of one kernel, parsed.
pub struct ModuleDb {
    modules: HashMap<String, Entry>,
    builtin: HashSet<String>,
}

/// The canonical module name of a path: the file name without `.ko` and
/// compression suffix, `-` folded to `_` (the kernel treats them alike).
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = [".ko.xz", ".ko.zst", ".ko.gz", ".ko"]
        .iter()
        .find_map(|suffix| file.strip_suffix(suffix))
        .unwrap_or(file);
    normalize(stem)
}

fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

impl ModuleDb {
    /// Parses modules.dep text (`path: dep-path dep-path...`) and, when
    /// given, modules.builtin (one path per line).
    pub fn parse(
        modules_dep: &str,
        modules_builtin: Option<&str>,
    ) -> Result<ModuleDb, ModulesError> {
        let mut modules = HashMap::new();
        for (i, line) in modules_dep.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (path, deps) = line.split_once(':').ok_or_else(|| ModulesError::Parse {
                line: i + 1,
                problem: format!("no ':' in {line:?}"),
            })?;
            let path = path.trim().to_string();
            let deps = deps.split_whitespace().map(module_name).collect();
            modules.insert(module_name(&path), Entry { path, deps });
        }
        let builtin = modules_builtin
            .unwrap_or("")
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(module_name)
            .collect();
        Ok(ModuleDb { modules, builtin })
    }

    /// Reads modules.dep and modules.builtin from a `/lib/modules/<version>`
    /// directory.
    pub fn load(modules_dir: &Path) -> Result<ModuleDb, ModulesError> {
        let read = |name: &str| {
            let path = modules_dir.join(name);
            fs::read_to_string(&path).map_err(|source| ModulesError::Read {
                path: path.display().to_string(),
                source,
            })
        };
        let dep = read("modules.dep")?;
        // Absent in some trees; then nothing counts as built in.
        let builtin = read("modules.builtin").ok();
        ModuleDb::parse(&dep, builtin.as_deref())
    }

    /// The modules to load for `wanted`, each after everything it depends on
    /// (hard dependencies from modules.dep and `softdeps` pairs), each once.
    /// Built-in modules are skipped; unknown ones are an error.
    pub fn resolve(
        &self,
        wanted: &[&str],
        softdeps: &[(&str, &str)],
    ) -> Result<Vec<Module>, ModulesError> {
        let mut r = Resolver {
            db: self,
            softdeps,
            done: HashSet::new(),
            visiting: HashSet::new(),
            order: Vec::new(),
        };
        for w in wanted {
            r.visit(&normalize(w), "the wanted list")?;
        }
        Ok(r.order)
    }
}

struct Resolver<'a> {
    db: &'a ModuleDb,
    softdeps: &'a [(&'a str, &'a str)],
    done: HashSet<String>,
    visiting: HashSet<String>,
    order: Vec<Module>,
}

impl Resolver<'_> {
    /// Depth-first post-order: a module is emitted after all it needs,
    /// which is a valid load order for any acyclic dependency graph.
    fn visit(&mut self, name: &str, needed_by: &str) -> Result<(), ModulesError> {
        if self.done.contains(name) || self.db.builtin.contains(name) {
            return Ok(());
        }
        let entry = self
            .db
            .modules
            .get(name)
            .ok_or_else(|| ModulesError::Unknown {
                name: name.to_string(),
                needed_by: needed_by.to_string(),
            })?;
        if !self.visiting.insert(name.to_string()) {
            return Err(ModulesError::Cycle(name.to_string()));
        }
        let soft: Vec<String> = self
            .softdeps
            .iter()
            .filter(|(m, _)| normalize(m) == name)
            .map(|(_, pre)| normalize(pre))
            .collect();
        for pre in &soft {
            self.visit(pre, name)?;
        }
        // modules.dep lists what modprobe loads last first; walking it
        // backwards keeps our order close to modprobe's.
        for dep in entry.deps.iter().rev() {
            self.visit(dep, name)?;
        }
        self.visiting.remove(name);
        self.done.insert(name.to_string());
        self.order.push(Module {
            name: name.to_string(),
            path: entry.path.clone(),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Shaped like Debian 6.1's modules.dep for the modules we want.
    const DEP: &str = "\
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/net/core/failover.ko:
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko
kernel/lib/crc16.ko:
kernel/crypto/crc32c_generic.ko:
kernel/fs/mbcache.ko:
kernel/fs/jbd2/jbd2.ko:
kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/fs/fat/fat.ko:
kernel/fs/fat/vfat.ko: kernel/fs/fat/fat.ko
kernel/fs/nls/nls_cp437.ko:
kernel/drivers/watchdog/i6300esb.ko: kernel/drivers/watchdog/watchdog.ko
kernel/drivers/watchdog/watchdog.ko:
kernel/arch/x86/crypto/crc32c-intel.ko:
";
    const BUILTIN: &str = "kernel/fs/nls/nls_base.ko\nkernel/fs/efivarfs/efivarfs.ko\n";

    fn db() -> ModuleDb {
        ModuleDb::parse(DEP, Some(BUILTIN)).expect("fixture parses")
    }

    fn names(mods: &[Module]) -> Vec<&str> {
        mods.iter().map(|m| m.name.as_str()).collect()
    }

    fn pos(mods: &[Module], name: &str) -> usize {
        mods.iter()
            .position(|m| m.name == name)
            .unwrap_or_else(|| panic!("{name} missing"))
    }

    #[test]
    fn dependencies_come_first_and_once() {
        let mods = db()
            .resolve(&["virtio_pci", "virtio_blk", "virtio_net"], &[])
            .expect("resolves");
        let n = names(&mods);
        assert_eq!(n.iter().filter(|x| **x == "virtio").count(), 1);
        assert!(pos(&mods, "virtio") < pos(&mods, "virtio_pci"));
        assert!(pos(&mods, "virtio_ring") < pos(&mods, "virtio_blk"));
        assert!(pos(&mods, "failover") < pos(&mods, "net_failover"));
        assert!(pos(&mods, "net_failover") < pos(&mods, "virtio_net"));
        assert_eq!(n.len(), 9);
        assert_eq!(
            mods[pos(&mods, "virtio_blk")].path,
            "kernel/drivers/block/virtio_blk.ko"
        );
    }

    #[test]
    fn softdep_loads_before_and_dashes_fold() {
        let mods = db()
            .resolve(&["ext4", "crc32c-intel"], SOFTDEPS)
            .expect("resolves");
        assert_eq!(
            names(&mods),
            [
                "crc32c_generic",
                "jbd2",
                "mbcache",
                "crc16",
                "ext4",
                "crc32c_intel"
            ]
        );
    }

    #[test]
    fn builtin_is_skipped_unknown_is_an_error() {
        let mods = db()
            .resolve(&["efivarfs", "nls_cp437"], &[])
            .expect("resolves");
        assert_eq!(names(&mods), ["nls_cp437"]);
        match db().resolve(&["vfat", "nope"], &[]) {
            Err(ModulesError::Unknown { name, .. }) => assert_eq!(name, "nope"),
            other => panic!("expected Unknown, got {other:?}"),
        }
        let broken = ModuleDb::parse("a.ko: b.ko\n", None).expect("parses");
        assert!(matches!(
            broken.resolve(&["a"], &[]),
            Err(ModulesError::Unknown { .. })
        ));
    }

    #[test]
    fn cycles_are_reported() {
        let db = ModuleDb::parse("kernel/a.ko: kernel/b.ko\nkernel/b.ko: kernel/a.ko\n", None)
            .expect("parses");
        assert!(matches!(
            db.resolve(&["a"], &[]),
            Err(ModulesError::Cycle(_))
        ));
    }

    #[test]
    fn names_from_paths() {
        assert_eq!(
            module_name("kernel/arch/x86/crypto/crc32c-intel.ko"),
            "crc32c_intel"
        );
        assert_eq!(module_name("kernel/fs/ext4/ext4.ko.xz"), "ext4");
        assert!(ModuleDb::parse("garbage line\n", None).is_err());
    }
}
