use super::*;
use std::fs::{File, OpenOptions};
use std::process::Command;

fn counter() -> impl FnMut() -> [u8; 16] {
    let mut n = 0u8;
    move || {
        n += 1;
        [n; 16]
    }
}

/// A sparse image file holding the layout's table.
fn image(dir: &std::path::Path) -> (std::path::PathBuf, Gpt) {
    let path = dir.join("disk.img");
    let mut f = File::create(&path).expect("create");
    f.set_len(layout::DISK_SIZE).expect("set_len");
    let gpt = Gpt::for_layout(layout::DISK_SIZE, counter()).expect("layout fits");
    gpt.write(&mut f).expect("write");
    (path, gpt)
}

fn run(cmd: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn sgdisk_and_sfdisk_accept_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, _) = image(dir.path());
    let p = path.to_str().expect("utf8 path");
    let (ok, text) = run("sgdisk", &["-v", p]);
    assert!(
        ok && text.contains("No problems found"),
        "sgdisk -v: {text}"
    );
    let (ok, text) = run("sfdisk", &["--verify", p]);
    assert!(ok, "sfdisk --verify: {text}");
    let (ok, json) = run("sfdisk", &["--json", p]);
    assert!(ok, "{json}");
    let json: String = json.chars().filter(|c| !c.is_whitespace()).collect();
    for spec in layout::PARTITIONS {
        assert!(
            json.contains(&format!("\"name\":\"{}\"", spec.label)),
            "{} missing: {json}",
            spec.label
        );
        let ty = format!("\"type\":\"{}\"", spec.type_guid);
        assert!(json.contains(&ty), "{ty} missing: {json}");
    }
    // The ESP starts at 2 MiB (sector 4096): after the 1 MiB BIOS boot partition.
    assert!(json.contains("\"start\":4096,\"size\":131072"), "{json}");
}

#[test]
fn reads_back_what_it_wrote() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, gpt) = image(dir.path());
    let report = Gpt::read_path(&path).expect("read");
    assert!(report.fully_valid(), "{report:?}");
    assert_eq!(report.gpt, gpt);
    let slot_b = report.gpt.find(layout::LABEL_SLOT_B).expect("SLOT-B");
    let i = layout::index_of(layout::LABEL_SLOT_B).expect("in layout");
    assert_eq!(slot_b.offset(), layout::partition_offset(i));
    assert_eq!(slot_b.size(), layout::partition_size(i));
    assert_eq!(slot_b.number as usize, i + 1);
    assert!(report.gpt.find("NOPE").is_none());
}

fn corrupt(path: &std::path::Path, offset: u64) {
    let mut f = OpenOptions::new()
        .write(true)
        .read(true)
        .open(path)
        .expect("open");
    f.seek(SeekFrom::Start(offset)).expect("seek");
    let mut b = [0u8; 1];
    f.read_exact(&mut b).expect("read");
    f.seek(SeekFrom::Start(offset)).expect("seek");
    f.write_all(&[b[0] ^ 0xff]).expect("write");
}

#[test]
fn detects_a_damaged_primary_and_falls_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, gpt) = image(dir.path());
    corrupt(&path, SECTOR + 60); // inside the disk GUID
    let report = Gpt::read_path(&path).expect("backup still readable");
    assert!(
        matches!(&report.primary, CopyStatus::Invalid(why) if why.contains("header CRC")),
        "{report:?}"
    );
    assert_eq!(report.backup, CopyStatus::Valid);
    assert_eq!(report.gpt, gpt);
    assert!(!report.fully_valid());
}

#[test]
fn detects_damaged_entries_in_each_copy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, _) = image(dir.path());
    let last = layout::DISK_SIZE / SECTOR - 1;
    corrupt(&path, (last - ENTRY_SECTORS) * SECTOR + 56); // backup's first name
    let report = Gpt::read_path(&path).expect("primary readable");
    assert_eq!(report.primary, CopyStatus::Valid);
    assert!(matches!(&report.backup, CopyStatus::Invalid(why) if why.contains("entry array CRC")));
    corrupt(&path, 2 * SECTOR + 56); // primary's first name
    match Gpt::read_path(&path) {
        Err(GptError::NoValidHeader { .. }) => {}
        other => panic!("expected NoValidHeader, got {other:?}"),
    }
}

#[test]
fn reads_a_table_written_by_sgdisk() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sg.img");
    File::create(&path)
        .expect("create")
        .set_len(16 << 20)
        .expect("set_len");
    let p = path.to_str().expect("utf8");
    let (ok, text) = run(
        "sgdisk",
        &[
            "-a", "2048", "-n", "1:0:+4M", "-t", "1:EF00", "-c", "1:ESP", "-n", "2:0:0", "-c",
            "2:SLOT-A", p,
        ],
    );
    assert!(ok, "{text}");
    let report = Gpt::read_path(&path).expect("read");
    assert!(report.fully_valid(), "{report:?}");
    let esp = report.gpt.find("ESP").expect("ESP");
    assert_eq!(esp.type_guid, layout::TYPE_ESP);
    assert_eq!((esp.first_lba, esp.size()), (2048, 4 << 20));
    assert_eq!(report.gpt.find("SLOT-A").map(|p| p.number), Some(2));
}

#[test]
fn rejects_overlaps_and_long_labels() {
    let mut gpt = Gpt::for_layout(layout::DISK_SIZE, counter()).expect("layout");
    gpt.partitions[1].first_lba = gpt.partitions[0].last_lba;
    assert!(matches!(gpt.check(), Err(GptError::Overlap { .. })));
    let mut gpt = Gpt::for_layout(layout::DISK_SIZE, counter()).expect("layout");
    gpt.partitions[0].label = "X".repeat(37);
    assert!(matches!(gpt.check(), Err(GptError::LabelTooLong(_))));
    assert!(matches!(
        Gpt::for_layout(4096, counter()),
        Err(GptError::TooSmall(_))
    ));
    let mut gpt = Gpt::for_layout(layout::DISK_SIZE, counter()).expect("layout");
    gpt.partitions[6].last_lba = gpt.last_usable_lba + 1;
    assert!(matches!(gpt.check(), Err(GptError::OutOfRange { .. })));
}

#[test]
fn a_resized_disk_is_read_without_io_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, gpt) = image(dir.path());
    // Grown: the backup stays where the primary says it is.
    let f = OpenOptions::new().write(true).open(&path).expect("open");
    f.set_len(layout::DISK_SIZE + (1 << 20)).expect("grow");
    let report = Gpt::read_path(&path).expect("both copies readable");
    assert_eq!(report.primary, CopyStatus::Valid);
    assert_eq!(report.gpt.partitions, gpt.partitions);
    // Shrunk below the table's usable range: reported, not an I/O error.
    f.set_len(layout::DISK_SIZE - (1 << 20)).expect("shrink");
    match Gpt::read_path(&path) {
        Err(GptError::NoValidHeader { primary, .. }) => {
            assert!(primary.contains("outside the disk"), "{primary}")
        }
        other => panic!("expected NoValidHeader, got {other:?}"),
    }
}
