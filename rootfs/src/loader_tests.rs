use super::*;
use crate::cmd::Cmd;
use crate::esp::{self, EspFile};
use crate::grub;
use bascule_boot::grubcfg::model_boot;
use bascule_boot::slot::root_partuuid;
use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

fn entries() -> Vec<BootEntry> {
    vec![
        BootEntry {
            slot: Slot::A,
            version: "1".into(),
        },
        BootEntry {
            slot: Slot::B,
            version: "2".into(),
        },
    ]
}

/// A table with known GUIDs: call N of the generator gives N in every byte,
/// so SLOT-A (partition 4) is 04040404-0404-4404-8404-040404040404.
fn table() -> Gpt {
    let mut n = 0u8;
    Gpt::for_layout(layout::DISK_SIZE, || {
        n += 1;
        [n; 16]
    })
    .expect("layout fits")
}

const PARTUUID_A: &str = "04040404-0404-4404-8404-040404040404";
const PARTUUID_B: &str = "05050505-0505-4505-8505-050505050505";

fn partuuid(slot: Slot) -> &'static str {
    match slot {
        Slot::A => PARTUUID_A,
        Slot::B => PARTUUID_B,
    }
}

fn text(f: &ConfigFile) -> String {
    String::from_utf8_lossy(&f.contents).into_owned()
}

#[test]
fn grub_cfg_from_the_generator() {
    let files = loader_files(
        Bootloader::Grub,
        &entries(),
        Slot::B,
        &table(),
        KERNEL_PARAMS,
    )
    .expect("grub files");
    let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["/grub/grub.cfg", "/grub/grubenv"]);
    let cfg = text(&files[0]);
    assert!(cfg.contains("\nset default=B\n"), "{cfg}");
    assert!(cfg.contains("load_env saved_entry next_entry bascule_trying\n"));
    assert!(cfg.contains("if save_env next_entry bascule_trying; then"));
    for e in entries() {
        let l = e.slot.layout();
        assert!(
            cfg.contains(&format!(
                "  linux {} bascule.slot={} bascule.version={} root=PARTUUID={} \
                 console=ttyS0 quiet panic=10\n  initrd {}\n",
                l.esp_kernel,
                e.slot,
                e.version,
                partuuid(e.slot),
                l.esp_initrd
            )),
            "{cfg}"
        );
    }
    assert!(cfg.contains("terminal_output serial console"));
    // An empty slot B still has its (never default) menu entry, without a
    // version.
    let cfg = grub_cfg(&entries()[..1], Slot::A, &table(), KERNEL_PARAMS).expect("slot A only");
    assert!(cfg.contains(&format!(
        "  linux /bascule/B/vmlinuz bascule.slot=B root=PARTUUID={PARTUUID_B} \
         console=ttyS0 quiet panic=10\n"
    )));
}

#[test]
fn default_must_hold_an_image() {
    for bootloader in [Bootloader::Grub, Bootloader::SdBoot] {
        let err = loader_files(
            bootloader,
            &entries()[..1],
            Slot::B,
            &table(),
            KERNEL_PARAMS,
        )
        .expect_err("B is empty");
        assert!(err.to_string().contains("default slot B"), "{err}");
    }
}

#[test]
fn bad_version_is_reported_with_the_file() {
    let bad = [BootEntry {
        slot: Slot::A,
        version: "1 0".into(),
    }];
    let err =
        loader_files(Bootloader::Grub, &bad, Slot::A, &table(), KERNEL_PARAMS).expect_err("grub");
    assert!(
        err.to_string().starts_with("generating /grub/grub.cfg: "),
        "{err}"
    );
    let err = loader_files(Bootloader::SdBoot, &bad, Slot::A, &table(), KERNEL_PARAMS)
        .expect_err("sd-boot");
    assert!(
        err.to_string()
            .starts_with("generating /loader/entries/bascule-a.conf: "),
        "{err}"
    );
}

#[test]
fn initial_grubenv_names_the_default() {
    for default in Slot::ALL {
        let block = initial_grubenv(default).expect("grubenv");
        assert_eq!(block.len(), 1024);
        let env = GrubEnv::parse(&block).expect("parse");
        assert_eq!(
            GrubSlotVars::from_env(&env),
            GrubSlotVars {
                saved_entry: Some(default),
                next_entry: None,
                trying: None
            }
        );
        // What grub.cfg does with it: boot the default, write nothing.
        let boot = model_boot(Some(&env), default.other(), true);
        assert_eq!((boot.slot, boot.env_after), (default, None));
    }
}

#[test]
fn grub_tools_accept_the_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    for default in Slot::ALL {
        let files = loader_files(
            Bootloader::Grub,
            &entries(),
            default,
            &table(),
            KERNEL_PARAMS,
        )
        .expect("files");
        let cfg = dir.path().join("grub.cfg");
        fs::write(&cfg, &files[0].contents).expect("write grub.cfg");
        Cmd::new("grub-script-check")
            .arg(&cfg)
            .run()
            .expect("grub-script-check accepts grub.cfg");
        let env = dir.path().join("grubenv");
        fs::write(&env, &files[1].contents).expect("write grubenv");
        assert_eq!(
            editenv_list(&env),
            format!("saved_entry={default}\nnext_entry=\nbascule_trying=\n")
        );
    }
}

fn editenv_list(file: &Path) -> String {
    let out = Cmd::new("grub-editenv")
        .arg(file)
        .arg("list")
        .output()
        .expect("grub-editenv list");
    String::from_utf8_lossy(&out).into_owned()
}

/// The commands a GRUB script runs: the first word of each line, or the one
/// after `if`/`elif`/`while`.
fn script_commands(cfg: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in cfg.lines() {
        for w in line.split_whitespace() {
            match w {
                "if" | "elif" | "while" | "then" | "else" | "do" | "!" => continue,
                "fi" | "done" | "}" => break,
                w if w.starts_with('#') => break,
                w => {
                    out.insert(w.to_string());
                    break;
                }
            }
        }
    }
    out
}

/// `module: deps…` (moddep.lst) or `[*]command: module` (command.lst).
fn lst(dir: &str, file: &str) -> Vec<(String, Vec<String>)> {
    let path = Path::new(dir).join(file);
    fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| {
            (
                k.trim_start_matches('*').to_string(),
                v.split_whitespace().map(str::to_string).collect(),
            )
        })
        .collect()
}

/// Every command of the generated grub.cfg is provided by a module built
/// into the GRUB images (or their dependencies): the ESP has no module
/// directory to load one from.
#[test]
fn grub_cfg_uses_only_built_in_commands() {
    let cfg = grub_cfg(&entries(), Slot::A, &table(), KERNEL_PARAMS).expect("grub.cfg");
    let used = script_commands(&cfg);
    for must in [
        "[",
        "load_env",
        "save_env",
        "menuentry",
        "linux",
        "initrd",
        "echo",
    ] {
        assert!(used.contains(must), "{must} not found in {used:?}");
    }
    // The kernel's own commands (grub-core/kern/corecmd.c).
    let core = ["set", "unset", "ls", "insmod"];
    for (dir, modules) in [
        (grub::I386_PC_DIR, grub::BIOS_MODULES),
        (grub::X86_64_EFI_DIR, grub::EFI_MODULES),
    ] {
        let deps = lst(dir, "moddep.lst");
        let mut have: BTreeSet<String> = modules.iter().map(|m| m.to_string()).collect();
        loop {
            let more: Vec<String> = deps
                .iter()
                .filter(|(m, _)| have.contains(m))
                .flat_map(|(_, d)| d.iter().cloned())
                .filter(|d| !have.contains(d))
                .collect();
            if more.is_empty() {
                break;
            }
            have.extend(more);
        }
        let commands = lst(dir, "command.lst");
        for c in &used {
            if core.contains(&c.as_str()) {
                continue;
            }
            let module = commands
                .iter()
                .find(|(name, _)| name == c)
                .and_then(|(_, m)| m.first())
                .unwrap_or_else(|| panic!("{c}: not a GRUB command ({dir}/command.lst)"));
            assert!(
                have.contains(module),
                "{c} needs module {module}, not built into the {dir} image"
            );
        }
    }
}

/// On a FAT32 ESP built like the image's, grubenv is a 1024-byte file with
/// clusters allocated for all of it (GRUB's `save_env` writes through its
/// block list and refuses holes), and reads back as written.
#[test]
fn grubenv_on_the_esp_is_allocated_and_listable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let img = dir.path().join("esp.img");
    let files: Vec<EspFile> = loader_files(
        Bootloader::Grub,
        &entries(),
        Slot::A,
        &table(),
        KERNEL_PARAMS,
    )
    .expect("files")
    .into_iter()
    .map(|f| EspFile::from_bytes(&f.path, f.contents))
    .collect();
    esp::build(&img, 64 << 20, "ESP", &files, &dir.path().join("work")).expect("ESP");
    let img_s = img.to_str().expect("utf8");
    let out = dir.path().join("grubenv");
    check_grubenv_on_fat(img_s, &out);
    assert_eq!(
        fs::read(&out).expect("copied out"),
        initial_grubenv(Slot::A).expect("grubenv")
    );
    assert_eq!(
        editenv_list(&out),
        "saved_entry=A\nnext_entry=\nbascule_trying=\n"
    );
}

/// Copies grubenv out of the FAT image `image` (`FILE` or `FILE@@OFFSET`)
/// into `out` and checks its size and cluster allocation.
pub(crate) fn check_grubenv_on_fat(image: &str, out: &Path) {
    let mtools = |program: &str| {
        Cmd::new(program)
            .env("MTOOLS_SKIP_CHECK", "1")
            .args(["-i", image])
    };
    mtools("mcopy")
        .arg("-o")
        .arg(format!("::{}", layout::ESP_GRUBENV))
        .arg(out)
        .run()
        .expect("mcopy grubenv out");
    assert_eq!(fs::metadata(out).expect("grubenv").len(), 1024);
    let info = String::from_utf8_lossy(&mtools("minfo").output().expect("minfo")).into_owned();
    let number = |key: &str| -> u64 {
        info.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {key:?} in minfo:\n{info}"))
    };
    let cluster_bytes = number("sector size:") * number("cluster size:");
    let chain = mtools("mshowfat")
        .arg(format!("::{}", layout::ESP_GRUBENV))
        .output()
        .expect("mshowfat");
    let chain = String::from_utf8_lossy(&chain).into_owned();
    // `::/grub/grubenv <4-5>` or `<4> <9>`: count the clusters.
    let clusters: u64 = chain
        .split('<')
        .skip(1)
        .filter_map(|r| r.split('>').next())
        .map(|r| match r.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u64, u64) = (a.parse().expect("start"), b.parse().expect("end"));
                b - a + 1
            }
            None => 1,
        })
        .sum();
    assert!(
        clusters * cluster_bytes >= 1024,
        "grubenv's clusters ({chain:?}, {cluster_bytes} bytes each) do not cover 1024 bytes"
    );
}

#[test]
fn sdboot_files_from_the_generator() {
    let files = loader_files(
        Bootloader::SdBoot,
        &entries(),
        Slot::A,
        &table(),
        KERNEL_PARAMS,
    )
    .expect("files");
    let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/loader/loader.conf",
            "/loader/entries/bascule-a.conf",
            "/loader/entries/bascule-b.conf"
        ]
    );
    assert_eq!(
        format!("/{}", bls::LOADER_CONF_PATH),
        layout::ESP_LOADER_CONF
    );
    assert_eq!(format!("/{}", bls::ENTRIES_DIR), layout::ESP_LOADER_ENTRIES);
    assert_eq!(text(&files[0]), "timeout 0\neditor no\ndefault bascule-*\n");
    let a = text(&files[1]);
    assert_eq!(
        a,
        "title Bascule A\nversion 1\nsort-key bascule-0-default\n\
         linux /bascule/A/vmlinuz\ninitrd /bascule/A/initrd.img\n\
         options bascule.slot=A bascule.version=1 \
         root=PARTUUID=04040404-0404-4404-8404-040404040404 console=ttyS0 quiet panic=10\n"
    );
    let b = BlsEntry::parse("bascule-b.conf", &text(&files[2])).expect("parse B");
    assert_eq!(b.sort_key.as_deref(), Some(bls::SORT_KEY_STANDBY));
    assert_eq!(
        b.options,
        format!("bascule.slot=B bascule.version=2 root=PARTUUID={PARTUUID_B} console=ttyS0 quiet panic=10")
    );
    assert_eq!(b.linux, Slot::B.layout().esp_kernel);
    assert_eq!(b.initrd, [Slot::B.layout().esp_initrd]);

    // Default B: the sort keys swap.
    let files = loader_files(
        Bootloader::SdBoot,
        &entries(),
        Slot::B,
        &table(),
        KERNEL_PARAMS,
    )
    .expect("files");
    assert!(text(&files[1]).contains("sort-key bascule-1-standby\n"));
    assert!(text(&files[2]).contains("sort-key bascule-0-default\n"));

    // An empty slot B gets no entry.
    let files = loader_files(
        Bootloader::SdBoot,
        &entries()[..1],
        Slot::A,
        &table(),
        KERNEL_PARAMS,
    )
    .expect("files");
    assert_eq!(files.len(), 2);
    assert_eq!(files[1].path, "/loader/entries/bascule-a.conf");
}

#[test]
fn boot_files_match_the_layout() {
    for slot in Slot::ALL {
        let l = slot.layout();
        assert_eq!(slot.esp_path(&boot_files().kernel), l.esp_kernel);
        assert_eq!(slot.esp_path(&boot_files().initrd), l.esp_initrd);
    }
}

/// The GUIDs the entries carry are the ones the real tools read from the
/// assembled disk, in the kernel's spelling (lowercase, first three fields
/// little-endian on disk): sfdisk reads the GPT itself, partx through
/// libblkid as udev's PARTUUID does.
#[test]
fn entries_name_the_slot_partitions_of_their_disk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let img = dir.path().join("disk.img");
    let table = crate::disk::new_table(&img).expect("table");
    crate::disk::assemble(&img, &table, &crate::disk::DiskContents::default()).expect("disk");
    let files = loader_files(
        Bootloader::SdBoot,
        &entries(),
        Slot::A,
        &table,
        KERNEL_PARAMS,
    )
    .expect("files");
    let grub = grub_cfg(&entries(), Slot::A, &table, KERNEL_PARAMS).expect("grub.cfg");
    for (slot, file) in Slot::ALL.into_iter().zip(&files[1..]) {
        let entry = BlsEntry::parse(&file.path, &text(file)).expect("entry");
        let guid = root_partuuid(&entry.options)
            .expect("valid root=")
            .expect("root=PARTUUID= in the entry");
        let text = guid.lowercase();
        assert!(
            grub.contains(&format!(
                "bascule.slot={slot} bascule.version={} root=PARTUUID={text} ",
                if slot == Slot::A { "1" } else { "2" }
            )),
            "{grub}"
        );
        let number = layout::index_of(slot.layout().partition_label).expect("slot in layout") + 1;
        let out = Cmd::new("sfdisk")
            .arg("--part-uuid")
            .arg(&img)
            .arg(number.to_string())
            .output()
            .expect("sfdisk --part-uuid");
        assert_eq!(
            String::from_utf8_lossy(&out).trim().to_ascii_lowercase(),
            text,
            "sfdisk, partition {number}"
        );
        let out = Cmd::new("partx")
            .args(["-g", "-r", "-o", "UUID", "-n"])
            .arg(number.to_string())
            .arg(&img)
            .output()
            .expect("partx");
        assert_eq!(
            String::from_utf8_lossy(&out).trim(),
            text,
            "partx, partition {number}"
        );
    }
    // Another disk gets other GUIDs: its entries would name its own slots.
    let other = crate::disk::new_table(&img).expect("table");
    assert_ne!(
        slot_partuuid(&other, Slot::A).expect("A"),
        slot_partuuid(&table, Slot::A).expect("A")
    );
}
