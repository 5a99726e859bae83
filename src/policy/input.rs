//! Reading the files a policy is made of (policy files, policy.json, key files) so that no path
//! can hang a load or fill memory: only regular files are read (symlinks are followed, as
//! ConfigMap mounts need), the open never waits, and no read goes past the file's bound.
//!
//! Why this matters: a load blocked on a FIFO never finishes, so a reload that would have
//! applied a revocation never does; `/dev/zero` would be read until memory runs out.

use std::fs::{File, Metadata, OpenOptions};
use std::io::Read as _;
use std::os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _};
use std::path::Path;

use super::limits::{MAX_KEY_FILE, MAX_POLICY_FILE};

/// A policy file or policy.json, as text. Errors name what is wrong, not the path: callers
/// report them against the file (or the rule that names it).
pub(super) fn read_policy_file(path: &Path) -> Result<String, String> {
    read_bounded_text(path, MAX_POLICY_FILE, "policy file")
}

/// A key file's bytes (PEM, parsed by the caller).
pub(super) fn read_key_file(path: &Path) -> Result<Vec<u8>, String> {
    read_bounded(path, MAX_KEY_FILE, "key file")
}

/// Any other file pullgate reads as text (a trusted root, a bundle), within `limit` bytes;
/// `what` names it in the error.
pub fn read_bounded_text(path: &Path, limit: u64, what: &str) -> Result<String, String> {
    let bytes = read_bounded(path, limit, what)?;
    String::from_utf8(bytes)
        .map_err(|e| format!("is not UTF-8 text (invalid byte at offset {})", e.utf8_error().valid_up_to()))
}

/// Also used for containerd's `hosts.toml` (`registry::hosts`), which has the same hazards.
pub(crate) fn read_bounded(path: &Path, limit: u64, what: &str) -> Result<Vec<u8>, String> {
    // Why look before opening: opening a socket fails with a bare ENXIO, and opening some
    // devices has effects of its own; this way neither is ever opened.
    let found = std::fs::metadata(path).map_err(|e| format!("cannot open: {e}"))?;
    regular(&found)?;
    let file = open_nonblocking(path).map_err(|e| format!("cannot open: {e}"))?;
    // The path may have been replaced since it was looked at; what counts is what was opened.
    regular(&file.metadata().map_err(|e| format!("cannot read: {e}"))?)?;
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes).map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > limit {
        return Err(format!("is larger than {}, the limit for a {what}", size(limit)));
    }
    Ok(bytes)
}

/// O_NONBLOCK: should the path become a FIFO between the look and the open, the open returns
/// at once instead of waiting for a writer. It changes nothing for reading a regular file.
fn open_nonblocking(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY).open(path)
}

fn regular(meta: &Metadata) -> Result<(), String> {
    let kind = meta.file_type();
    let what = if kind.is_file() {
        return Ok(());
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO (named pipe)"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else {
        "not a file"
    };
    Err(format!("is {what}, not a regular file"))
}

/// "4 MiB", "64 KiB" or "100 bytes": the limits are round numbers.
fn size(bytes: u64) -> String {
    const KIB: u64 = 1024;
    const MIB: u64 = KIB * KIB;
    match bytes {
        b if b >= MIB && b % MIB == 0 => format!("{} MiB", b / MIB),
        b if b >= KIB && b % KIB == 0 => format!("{} KiB", b / KIB),
        b => format!("{b} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;
    use std::process::Command;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::policy::test_support::{KEY_A, TestDir};

    /// Far above a refusal (microseconds), far below what a test runner would call a hang.
    const PROMPT: Duration = Duration::from_secs(2);

    fn mkfifo(path: &Path) {
        let status = Command::new("mkfifo").arg(path).status().expect("run mkfifo");
        assert!(status.success(), "mkfifo {}", path.display());
    }

    /// Reads `path` as a key file on another thread, so a test of a hang fails instead of hanging.
    fn read_key_promptly(path: &Path) -> Result<Vec<u8>, String> {
        let (path, started) = (path.to_owned(), Instant::now());
        let (done, result) = std::sync::mpsc::channel();
        std::thread::spawn(move || done.send(read_key_file(&path)));
        let read = result.recv_timeout(PROMPT).unwrap_or_else(|_| panic!("still reading after {PROMPT:?}"));
        assert!(started.elapsed() < PROMPT);
        read
    }

    #[test]
    fn a_regular_file_and_a_symlink_to_one_are_read() {
        let dir = TestDir::new();
        let key = dir.write("keys/a.pub", KEY_A);
        assert_eq!(read_key_promptly(&key).unwrap(), KEY_A.as_bytes());
        // A ConfigMap volume: the name is a symlink into a `..data` directory.
        symlink(&key, dir.path("linked.pub")).unwrap();
        assert_eq!(read_key_promptly(&dir.path("linked.pub")).unwrap(), KEY_A.as_bytes());
    }

    #[test]
    fn a_fifo_is_refused_at_once_directly_or_through_a_symlink() {
        let dir = TestDir::new();
        let fifo = dir.path("a.pub");
        mkfifo(&fifo);
        assert_eq!(read_key_promptly(&fifo), Err("is a FIFO (named pipe), not a regular file".into()));
        symlink(&fifo, dir.path("linked.pub")).unwrap();
        assert_eq!(
            read_key_promptly(&dir.path("linked.pub")),
            Err("is a FIFO (named pipe), not a regular file".into())
        );
    }

    #[test]
    fn devices_directories_and_sockets_are_refused() {
        let dir = TestDir::new();
        let (socket, directory) = (dir.path("s.sock"), dir.path("sub"));
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        std::fs::create_dir(&directory).unwrap();
        let cases = [
            (Path::new("/dev/zero"), "is a character device, not a regular file"),
            (directory.as_path(), "is a directory, not a regular file"),
            (socket.as_path(), "is a socket, not a regular file"),
        ];
        for (path, expected) in cases {
            assert_eq!(read_key_promptly(path), Err(expected.to_owned()), "{}", path.display());
            assert_eq!(read_policy_file(path), Err(expected.to_owned()), "{}", path.display());
        }
    }

    #[test]
    fn reads_stop_at_the_limit() {
        let dir = TestDir::new();
        let at_limit = dir.write("at.pub", &"k".repeat(MAX_KEY_FILE as usize));
        assert_eq!(read_key_promptly(&at_limit).map(|b| b.len()), Ok(MAX_KEY_FILE as usize));
        let over = dir.write("over.pub", &"k".repeat(MAX_KEY_FILE as usize + 1));
        assert_eq!(read_key_promptly(&over), Err("is larger than 64 KiB, the limit for a key file".into()));
        let policy = dir.write("big.toml", &"#".repeat(MAX_POLICY_FILE as usize + 1));
        assert_eq!(read_policy_file(&policy), Err("is larger than 4 MiB, the limit for a policy file".into()));
    }

    #[test]
    fn policy_text_must_be_utf8() {
        let dir = TestDir::new();
        let path = dir.path("a.toml");
        std::fs::write(&path, b"# ok\n\xff").unwrap();
        assert_eq!(read_policy_file(&path), Err("is not UTF-8 text (invalid byte at offset 5)".into()));
    }

    #[test]
    fn missing_files_say_so() {
        let dir = TestDir::new();
        let err = read_key_file(&dir.path("gone.pub")).unwrap_err();
        assert!(err.starts_with("cannot open: "), "{err}");
    }

    #[test]
    fn sizes_read_as_round_numbers() {
        assert_eq!(size(4 * 1024 * 1024), "4 MiB");
        assert_eq!(size(64 * 1024), "64 KiB");
        assert_eq!(size(1000), "1000 bytes");
    }
}
