//! `make install` / `make uninstall` into a staging root (DESTDIR), with the binary cargo built
//! for this test run (BIN=…) so the Makefile never calls cargo (CARGO=false proves it).

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const BIN: &str = env!("CARGO_BIN_EXE_pullgate");

/// Runs `make TARGET DESTDIR=root BIN=… CARGO=false extra…`; returns stdout, panics on failure.
fn make(target: &str, root: &Path, extra: &[&str]) -> String {
    let out = Command::new("make")
        .arg("--no-print-directory")
        .arg("-C")
        .arg(REPO)
        .arg(target)
        .arg(format!("DESTDIR={}", root.display()))
        .arg(format!("BIN={BIN}"))
        .arg("CARGO=false")
        .args(extra)
        .output()
        .expect("run make (is it installed?)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "make {target} failed\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

fn mode(path: &Path) -> u32 {
    let meta = fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    meta.permissions().mode() & 0o7777
}

#[test]
fn install_places_every_file_and_prints_the_kubelet_setting() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    let stdout = make("install", root, &[]);

    let bin = root.join("usr/local/bin/pullgate");
    assert_eq!(fs::read(&bin).unwrap(), fs::read(BIN).unwrap(), "installed binary is BIN");
    assert_eq!(mode(&bin), 0o755);

    let unit = root.join("etc/systemd/system/pullgate.service");
    assert_eq!(mode(&unit), 0o644);
    let unit_text = fs::read_to_string(&unit).unwrap();
    assert!(
        unit_text.contains("\nExecStart=/usr/local/bin/pullgate serve --config /etc/pullgate/pullgate.toml\n"),
        "{unit_text}"
    );
    assert_eq!(unit_text, fs::read_to_string(Path::new(REPO).join("systemd/pullgate.service")).unwrap());

    let config = root.join("etc/pullgate/pullgate.toml");
    assert_eq!(mode(&config), 0o644);
    assert_eq!(fs::read(&config).unwrap(), fs::read(Path::new(REPO).join("config/pullgate.toml")).unwrap());

    let policy_dir = root.join("etc/pullgate/policy.d");
    assert!(policy_dir.is_dir());
    assert_eq!(mode(&policy_dir), 0o755);
    assert_eq!(fs::read_dir(&policy_dir).unwrap().count(), 0, "policy.d starts empty");
    // Every example in docs/policy.md keeps keys here.
    let keys = root.join("etc/pullgate/keys");
    assert!(keys.is_dir() && mode(&keys) == 0o755, "{}", keys.display());
    assert!(!root.join("etc/systemd/system/pullgate.service.tmp").exists());

    assert!(stdout.contains("imageServiceEndpoint: unix:///run/pullgate/pullgate.sock"), "{stdout}");
    assert!(stdout.contains("--image-service-endpoint=unix:///run/pullgate/pullgate.sock"), "{stdout}");
    assert!(stdout.contains("pullgate policy check") && stdout.contains("pullgate verify IMAGE"), "{stdout}");
    assert!(stdout.contains("containerd's own pulls (the pause"), "{stdout}");
}

#[test]
fn reinstall_keeps_the_operators_config_and_reports_its_socket() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    make("install", root, &[]);
    let config = root.join("etc/pullgate/pullgate.toml");
    let edited = "# edited by the operator\nlisten = \"/run/custom/image.sock\"\n";
    fs::write(&config, edited).unwrap();
    fs::write(root.join("etc/pullgate/policy.d/site.toml"), "# site policy\n").unwrap();

    let stdout = make("install", root, &[]);
    assert_eq!(fs::read_to_string(&config).unwrap(), edited, "existing config is never overwritten");
    assert!(root.join("etc/pullgate/policy.d/site.toml").exists(), "policy files survive a reinstall");
    assert!(stdout.contains("keeping existing"), "{stdout}");
    assert!(stdout.contains("imageServiceEndpoint: unix:///run/custom/image.sock"), "{stdout}");
}

#[test]
fn prefix_moves_the_binary_and_the_units_exec_start() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    make("install", root, &["PREFIX=/opt/pullgate"]);
    assert!(root.join("opt/pullgate/bin/pullgate").is_file());
    assert!(!root.join("usr/local/bin/pullgate").exists());
    let unit = fs::read_to_string(root.join("etc/systemd/system/pullgate.service")).unwrap();
    assert!(unit.contains("\nExecStart=/opt/pullgate/bin/pullgate serve "), "{unit}");
    assert!(!unit.contains("/usr/local/bin"), "{unit}");
}

#[test]
fn uninstall_removes_binary_and_unit_but_keeps_config_and_policy() {
    let root = tempfile::tempdir().unwrap();
    let root = root.path();
    make("install", root, &[]);
    fs::write(root.join("etc/pullgate/policy.d/site.toml"), "# site policy\n").unwrap();
    let stdout = make("uninstall", root, &[]);
    let (warning, removal) = (stdout.find("Roll back before uninstalling"), stdout.find("rm -f "));
    assert!(warning.is_some() && removal.is_some() && warning < removal, "warn before removing:\n{stdout}");
    assert!(!root.join("usr/local/bin/pullgate").exists());
    assert!(!root.join("etc/systemd/system/pullgate.service").exists());
    assert!(root.join("etc/pullgate/pullgate.toml").exists());
    assert!(root.join("etc/pullgate/policy.d/site.toml").exists());
}
