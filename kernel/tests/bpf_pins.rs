//! Pin directories against the real kernel's bpffs: what portd makes is private, and a
//! directory another account prepared is refused. Needs root.

mod support;

use portd_kernel::bpf::{BpfError, Dataplane};
use support::*;

#[test]
fn a_pin_directory_another_account_made_or_may_write_is_refused() {
    require_root();
    use std::os::unix::fs::{symlink, PermissionsExt};
    // A bpffs mounted without a mode is writable by every account (1777): one that made
    // portd's directories first would own its pins, or keep it from pinning.
    let (pair, bpffs) = (Pair::new(), Bpffs::new());
    let pin = bpffs.pin_dir();
    let (parent, mount) = (pin.parent().expect("parent"), pin.parent().and_then(|p| p.parent()).expect("mount"));
    assert_eq!(std::fs::metadata(mount).expect("mount").permissions().mode() & 0o7777, 0o1777);
    let open = || pair.srv.run(None, || Dataplane::open(&pin).map(|_| ()));
    let refused = |want: &str| match open() {
        Err(e @ BpfError::UnsafePinDir { .. }) => assert!(e.to_string().contains(want), "{e}"),
        other => panic!("want UnsafePinDir ({want}), got {other:?}"),
    };
    std::fs::create_dir(parent).expect("mkdir");
    std::os::unix::fs::chown(parent, Some(OTHER), Some(OTHER)).expect("chown");
    refused(&format!("belongs to uid {OTHER}"));
    std::os::unix::fs::chown(parent, Some(0), Some(0)).expect("chown");
    std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    refused("writable by other accounts (mode 777)");
    std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    // The pin directory a symlink to another instance's: refused, by remove too.
    let elsewhere = mount.join("other");
    std::fs::create_dir(&elsewhere).expect("mkdir");
    symlink(&elsewhere, &pin).expect("symlink");
    refused("is a symbolic link");
    let err = Dataplane::remove(&pin).expect_err("remove through a symlink");
    assert!(matches!(err, BpfError::UnsafePinDir { .. }), "{err}");
    assert!(elsewhere.exists());
    std::fs::remove_file(&pin).expect("unlink");
    // What portd makes itself is its own and private.
    open().expect("open");
    for dir in [pin.clone(), pin.join("maps"), pin.join("links")] {
        let m = std::fs::symlink_metadata(&dir).expect("made");
        assert_eq!(
            (m.permissions().mode() & 0o7777, std::os::unix::fs::MetadataExt::uid(&m)),
            (0o700, 0),
            "{}",
            dir.display()
        );
    }
    // The packaged layout: the tree belongs to the `portd` system account, and root's
    // `--remove-table` takes it away.
    for dir in [parent.to_path_buf(), pin.clone(), pin.join("maps"), pin.join("links")] {
        std::os::unix::fs::chown(&dir, Some(999), Some(999)).expect("chown");
    }
    assert!(Dataplane::remove(&pin).expect("root removes the portd account's pins"));
}
