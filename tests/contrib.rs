//! The early-start files of `contrib/` (the initramfs-tools hook and
//! scripts, the systemd unit) are well formed. That they start tsem-stream
//! early and lose nothing is tested on the real kernel
//! (`real_kernel.rs`, `the_shipped_early_start_…`).

use std::path::{Path, PathBuf};
use std::process::Command;

fn contrib() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib")
}

/// Each initramfs-tools script parses as POSIX sh and answers `prereqs`
/// with nothing (it depends on no other script), as initramfs-tools asks.
#[test]
fn the_initramfs_scripts_parse_and_answer_prereqs() {
    for script in [
        "initramfs-tools/hooks/tsem-stream",
        "initramfs-tools/scripts/init-top/tsem-stream",
        "initramfs-tools/scripts/init-bottom/tsem-stream",
    ] {
        let path = contrib().join(script);
        let parse = Command::new("sh")
            .arg("-n")
            .arg(&path)
            .output()
            .expect("sh");
        assert!(
            parse.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&parse.stderr)
        );
        let prereqs = Command::new("sh")
            .arg(&path)
            .arg("prereqs")
            .output()
            .expect("sh");
        assert!(prereqs.status.success(), "{script} prereqs");
        assert_eq!(
            String::from_utf8_lossy(&prereqs.stdout).trim(),
            "",
            "{script}"
        );
    }
}

/// `systemd-analyze verify` accepts the unit (skipped where systemd is not
/// installed). The unit names `/usr/bin/tsem-stream`, which need not exist
/// here: the copy checked names the binary under test instead.
#[test]
fn the_systemd_unit_verifies() {
    let Some(analyze) = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
    else {
        eprintln!("skipped: no systemd-analyze");
        return;
    };
    let unit = std::fs::read_to_string(contrib().join("systemd/tsem-stream-host.service"))
        .expect("the unit");
    assert!(
        unit.contains("ExecStart=/usr/bin/tsem-stream run "),
        "{unit}"
    );
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("contrib-unit");
    std::fs::create_dir_all(&dir).expect("a folder for the unit");
    let copy = dir.join("tsem-stream-host.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/bin/tsem-stream", env!("CARGO_BIN_EXE_tsem-stream")),
    )
    .expect("write the unit");
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze");
    // Warnings (an unknown key, say) leave the status 0: any line about the
    // unit fails too; lines about the host's own units do not.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stderr.contains("tsem-stream-host.service"),
        "systemd-analyze verify: {}{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
}
