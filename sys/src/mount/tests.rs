use super::*;

use rustix::mount::{mount_change, MountPropagationFlags};
use rustix::thread::UnshareFlags;

#[test]
fn order_and_escapes() {
    let mi = "1 0 0:1 / / rw - ext4 /dev/vda rw\n2 1 0:2 / /var rw - ext4 /dev/vdb rw\n3 2 0:3 / /var/my\\040dir rw - tmpfs t rw\n";
    let want: Vec<PathBuf> = ["/var/my dir", "/var", "/"]
        .iter()
        .map(Into::into)
        .collect();
    assert_eq!(mount_points_deepest_first(mi), want);
}

#[test]
fn a_mount_moved_under_a_later_one_goes_first_and_stacked_mounts_top_first() {
    // /t/a was mounted first, then moved under /t/b (which came later);
    // /s carries two mounts, id 6 on top of id 5.
    let mi = "1 0 0:1 / / rw - ext4 d rw\n\
              4 7 0:4 / /t/b/a rw - tmpfs t rw\n\
              5 1 0:5 / /s rw - tmpfs t rw\n\
              6 5 0:6 / /s rw - tmpfs t rw\n\
              7 1 0:7 / /t/b rw - tmpfs t rw\n";
    let order: Vec<u32> = deepest_first(mountinfo::parse(mi))
        .iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(order, [4, 7, 6, 5, 1]);
}

/// Runs `f` on a thread of its own in a private mount namespace, so its
/// mounts are invisible to the host and vanish with the thread.
fn in_private_mount_namespace(f: impl FnOnce() + Send + 'static) {
    std::thread::spawn(move || {
        // SAFETY: NEWNS (with the FS it implies) gives this thread its own
        // mount namespace, cwd and root; no file descriptor table is unshared.
        unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWNS) }.unwrap();
        mount_change(
            "/",
            MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
        )
        .unwrap();
        f();
    })
    .join()
    .unwrap();
}

fn tmpfs(at: &Path) {
    std::fs::create_dir_all(at).unwrap();
    mount("tmpfs", at, "tmpfs", MountFlags::empty(), None).unwrap();
}

fn mounts_under(root: &Path) -> Vec<PathBuf> {
    mountinfo::read_own()
        .unwrap()
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|p| p.starts_with(root))
        .collect()
}

#[test]
fn unmount_tree_removes_nested_mounts_deepest_first() {
    in_private_mount_namespace(|| {
        let dir = tempfile::tempdir().unwrap();
        let base = std::fs::canonicalize(dir.path()).unwrap();
        let top = base.join("a");
        tmpfs(&top);
        tmpfs(&top.join("b"));
        tmpfs(&top.join("b/c"));
        // A sibling outside the tree must stay.
        tmpfs(&base.join("other"));
        assert_eq!(mounts_under(&top).len(), 3);
        let failures = unmount_tree(&top);
        assert!(failures.is_empty(), "{failures:?}");
        assert_eq!(mounts_under(&top), Vec::<PathBuf>::new());
        assert_eq!(mounts_under(&base), vec![base.join("other")]);
        assert!(unmount_tree(&base).is_empty());
    });
}

#[test]
fn a_busy_mount_is_reported_by_its_mount_point() {
    in_private_mount_namespace(|| {
        let dir = tempfile::tempdir().unwrap();
        let top = std::fs::canonicalize(dir.path()).unwrap().join("busy");
        tmpfs(&top);
        tmpfs(&top.join("inner"));
        let held = std::fs::File::create(top.join("held")).unwrap();
        let failures = unmount_tree(&top);
        assert_eq!(failures.len(), 1, "{failures:?}");
        assert_eq!(failures[0].mount_point, top);
        assert_eq!(failures[0].error.errno(), Some(Errno::BUSY));
        let msg = failures[0].to_string();
        assert!(
            msg.starts_with(&format!("umount2 {}: ", top.display())),
            "{msg}"
        );
        // The inner mount was not busy: it is gone.
        assert_eq!(mounts_under(&top), vec![top.clone()]);
        drop(held);
        // Another test's fork may hold a copy of the fd until its exec:
        // once that is gone, the mount must unmount.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !unmount_tree(&top).is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "still busy after the file closed"
            );
            std::thread::yield_now();
        }
        assert!(mounts_under(&top).is_empty());
    });
}

#[test]
fn an_api_filesystem_already_mounted_is_left_as_it_is() {
    in_private_mount_namespace(|| {
        let dir = tempfile::tempdir().unwrap();
        let run = std::fs::canonicalize(dir.path()).unwrap().join("run");
        tmpfs(&run);
        std::fs::write(run.join("handed-over"), b"x").unwrap();
        let target: &'static str = Box::leak(run.display().to_string().into_boxed_str());
        let m = ApiMount {
            source: "tmpfs",
            target,
            fstype: "tmpfs",
            flags: MountFlags::NOSUID,
            data: c"",
            data_fallback: None,
        };
        mount_api(&m).unwrap();
        assert!(
            run.join("handed-over").exists(),
            "a second tmpfs hid the first"
        );
        assert_eq!(mounts_under(&run).len(), 1);
        assert!(unmount_tree(&run).is_empty());
    });
}

#[test]
fn an_option_the_kernel_refuses_falls_back_to_the_plain_mount() {
    in_private_mount_namespace(|| {
        let dir = tempfile::tempdir().unwrap();
        let at = std::fs::canonicalize(dir.path()).unwrap().join("t");
        let target: &'static str = Box::leak(at.display().to_string().into_boxed_str());
        let mut m = ApiMount {
            source: "tmpfs",
            target,
            fstype: "tmpfs",
            flags: MountFlags::NOSUID,
            data: c"no-such-option",
            data_fallback: None,
        };
        assert!(mount_api(&m).is_err(), "tmpfs refuses an unknown option");
        m.data_fallback = Some(c"mode=0700");
        mount_api(&m).unwrap();
        assert_eq!(mounts_under(&at).len(), 1);
        assert!(unmount_tree(&at).is_empty());
    });
}
