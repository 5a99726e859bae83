//! The Unix socket the kubelet connects to.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::{UnixListener, UnixStream};

/// Owner and group (containerd's and the kubelet's, both root on a node) may connect; nobody else.
const SOCKET_MODE: u32 = 0o660;

#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("cannot create {}: {source}", path.display())]
    Directory { path: PathBuf, source: io::Error },
    #[error("{} is in use by another live process; refusing to take it over", path.display())]
    InUse { path: PathBuf },
    #[error("{} exists and is not a socket; refusing to replace it", path.display())]
    NotASocket { path: PathBuf },
    #[error("cannot bind {}: {source}", path.display())]
    Bind { path: PathBuf, source: io::Error },
}

/// Binds `path`, creating its directory and replacing a socket file that nobody serves anymore.
pub async fn bind(path: &Path) -> Result<UnixListener, SocketError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| SocketError::Directory { path: parent.to_owned(), source })?;
    }
    remove_stale(path).await?;
    let bind_error = |source| SocketError::Bind { path: path.to_owned(), source };
    let listener = UnixListener::bind(path).map_err(bind_error)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(SOCKET_MODE)).map_err(bind_error)?;
    Ok(listener)
}

async fn remove_stale(path: &Path) -> Result<(), SocketError> {
    let metadata = match std::fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(SocketError::Bind { path: path.to_owned(), source }),
    };
    if !metadata.file_type().is_socket() {
        return Err(SocketError::NotASocket { path: path.to_owned() });
    }
    // A connect that succeeds means a live server owns the socket (another pullgate, or a
    // misconfigured listen path pointing at containerd itself).
    if UnixStream::connect(path).await.is_ok() {
        return Err(SocketError::InUse { path: path.to_owned() });
    }
    std::fs::remove_file(path).map_err(|source| SocketError::Bind { path: path.to_owned(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn creates_directory_and_sets_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/dir/pullgate.sock");
        let _listener = bind(&path).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, SOCKET_MODE);
    }

    #[tokio::test]
    async fn replaces_a_stale_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pullgate.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        assert!(bind(&path).await.is_ok());
    }

    #[tokio::test]
    async fn refuses_a_live_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pullgate.sock");
        let _held = UnixListener::bind(&path).unwrap();
        assert!(matches!(bind(&path).await, Err(SocketError::InUse { .. })));
    }

    #[tokio::test]
    async fn refuses_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pullgate.sock");
        std::fs::write(&path, b"data").unwrap();
        assert!(matches!(bind(&path).await, Err(SocketError::NotASocket { .. })));
        assert_eq!(std::fs::read(&path).unwrap(), b"data");
    }
}
