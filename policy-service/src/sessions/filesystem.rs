//! `SESSION_TYPE=filesystem`: one JSON file per session under `SESSION_FILE_DIR`.
//!
//! A file is named by the SHA-256 (hex) of `SESSION_KEY_PREFIX` + the session id,
//! never the id itself, and holds the prefix, the user and the times. Every write
//! goes to a temporary file in the same directory that is then renamed over the
//! target, so a reader sees the old or the new content, never half of it.
//! Expired files (and temporary files left by a crash) are swept at most every
//! `SWEEP_EVERY_SECONDS`, on sign-in.
//!
//! Replicas share these sessions only if they share the directory.

use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use super::{NewSession, SessionStore, SessionStoreError, StoreFuture, Stored};
use crate::store::{IdpGrant, SessionRecord, Store};

const BACKEND: &str = "filesystem";
/// Least time between two sweeps of expired session files.
pub const SWEEP_EVERY_SECONDS: i64 = 300;
/// Temporary files older than this are left by a crash: swept.
const STALE_TEMP_SECONDS: u64 = 3600;
const TEMP_PREFIX: &str = ".tmp-";

pub struct FilesystemSessions {
    dir: Arc<PathBuf>,
    prefix: Arc<str>,
    store: Store,
    last_sweep: AtomicI64,
}

fn io_error(what: &str, path: &Path, err: std::io::Error) -> SessionStoreError {
    SessionStoreError::unavailable(BACKEND, format!("{what} {}: {err}", path.display()))
}

/// The file name of a session: hex SHA-256 of prefix + id.
pub fn file_name(prefix: &str, id: &str) -> String {
    let digest = hmac_sha256::Hash::hash(format!("{prefix}{id}").as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `bytes` to `dir/name` atomically: a temporary file in `dir`, flushed to
/// disk, then renamed over the target. Files are readable by their owner only.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!("{TEMP_PREFIX}{:016x}", rand::random::<u64>()));
    let result = (|| {
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, dir.join(name))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The session in `path`; `None` when there is no such file, or when it is not a
/// session of this prefix (unreadable content is logged and ignored).
fn read(path: &Path, prefix: &str) -> Result<Option<Stored>, SessionStoreError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error("cannot read", path, e)),
    };
    match serde_json::from_slice::<Stored>(&bytes) {
        Ok(stored) if stored.key_prefix == prefix => Ok(Some(stored)),
        Ok(_) => Ok(None),
        Err(e) => {
            tracing::warn!(path = %path.display(), "ignoring an unreadable session file: {e}");
            Ok(None)
        }
    }
}

fn write(dir: &Path, name: &str, stored: &Stored) -> Result<(), SessionStoreError> {
    let bytes =
        serde_json::to_vec(stored).map_err(|e| SessionStoreError::unavailable(BACKEND, e))?;
    write_atomically(dir, name, &bytes).map_err(|e| io_error("cannot write", &dir.join(name), e))
}

/// Session file names in `dir` (temporary files left out).
fn session_files(dir: &Path) -> Result<Vec<PathBuf>, SessionStoreError> {
    let entries = fs::read_dir(dir).map_err(|e| io_error("cannot list", dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error("cannot list", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
            files.push(entry.path());
        }
    }
    Ok(files)
}

/// Removes expired session files of this prefix and stale temporary files.
fn sweep(dir: &Path, prefix: &str, now: i64) -> Result<usize, SessionStoreError> {
    let mut removed = 0;
    for path in session_files(dir)? {
        if let Some(stored) = read(&path, prefix)? {
            if stored.expires_at <= now && fs::remove_file(&path).is_ok() {
                removed += 1;
            }
        }
    }
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            let is_temp = entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(TEMP_PREFIX));
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age.as_secs() > STALE_TEMP_SECONDS);
            if is_temp && old {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
    Ok(removed)
}

/// Runs file work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, SessionStoreError> + Send + 'static,
) -> Result<T, SessionStoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| SessionStoreError::unavailable(BACKEND, e))?
}

impl FilesystemSessions {
    /// Uses `dir`, creating it (owner-only) when missing; refuses a directory it
    /// cannot write to.
    pub fn open(dir: PathBuf, prefix: String, store: Store) -> Result<Self, SessionStoreError> {
        let cannot = |e: std::io::Error| {
            SessionStoreError::unavailable(
                BACKEND,
                format!("SESSION_FILE_DIR {} cannot be used: {e}", dir.display()),
            )
        };
        if !dir.is_dir() {
            let mut builder = fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder.create(&dir).map_err(cannot)?;
        }
        // Fails now rather than at the first sign-in.
        let probe = format!("{TEMP_PREFIX}probe-{:016x}", rand::random::<u64>());
        write_atomically(&dir, &probe, b"").map_err(cannot)?;
        fs::remove_file(dir.join(&probe)).map_err(cannot)?;
        Ok(FilesystemSessions {
            dir: Arc::new(dir),
            prefix: prefix.into(),
            store,
            last_sweep: AtomicI64::new(0),
        })
    }

    /// Sweeps expired sessions now; how many files were removed.
    pub async fn sweep(&self, now: i64) -> Result<usize, SessionStoreError> {
        let (dir, prefix) = (self.dir.clone(), self.prefix.clone());
        blocking(move || sweep(&dir, &prefix, now)).await
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(file_name(&self.prefix, id))
    }
}

impl SessionStore for FilesystemSessions {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn create<'a>(&'a self, session: &'a NewSession) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let (dir, name) = (self.dir.clone(), file_name(&self.prefix, &session.id));
            let stored = Stored::new(session, &self.prefix);
            blocking(move || write(&dir, &name, &stored)).await?;
            let now = session.created_at;
            let last = self.last_sweep.load(Ordering::Relaxed);
            if now - last >= SWEEP_EVERY_SECONDS
                && self
                    .last_sweep
                    .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                match self.sweep(now).await {
                    Ok(n) if n > 0 => tracing::debug!(removed = n, "swept expired session files"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!("cannot sweep expired session files: {e}"),
                }
            }
            Ok(())
        })
    }

    fn get<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<SessionRecord>> {
        Box::pin(async move {
            let (path, prefix) = (self.path(id), self.prefix.clone());
            let Some(stored) = blocking(move || read(&path, &prefix)).await? else {
                return Ok(None);
            };
            Ok(Some(stored.into_record(id, &self.store).await?))
        })
    }

    fn revoke<'a>(&'a self, id: &'a str, now: i64) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let (dir, prefix) = (self.dir.clone(), self.prefix.clone());
            let name = file_name(&prefix, id);
            blocking(move || {
                let path = dir.join(&name);
                match read(&path, &prefix)? {
                    Some(mut stored) if stored.revoked_at.is_none() => {
                        stored.revoked_at = Some(now);
                        write(&dir, &name, &stored)?;
                        Ok(true)
                    }
                    _ => Ok(false),
                }
            })
            .await
        })
    }

    fn set_grant<'a>(&'a self, id: &'a str, grant: &'a IdpGrant, _now: i64) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let (dir, prefix) = (self.dir.clone(), self.prefix.clone());
            let name = file_name(&prefix, id);
            let grant = grant.clone();
            blocking(move || {
                let path = dir.join(&name);
                if let Some(mut stored) = read(&path, &prefix)? {
                    stored.grant = Some(grant);
                    write(&dir, &name, &stored)?;
                }
                Ok(())
            })
            .await
        })
    }

    fn revoke_all_of_user(&self, user_id: i64, now: i64) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let (dir, prefix) = (self.dir.clone(), self.prefix.clone());
            blocking(move || {
                let mut ended = 0;
                for path in session_files(&dir)? {
                    let Some(mut stored) = read(&path, &prefix)? else {
                        continue;
                    };
                    if stored.user_id != user_id
                        || stored.revoked_at.is_some()
                        || stored.expires_at <= now
                    {
                        continue;
                    }
                    stored.revoked_at = Some(now);
                    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                        continue;
                    };
                    write(&dir, name, &stored)?;
                    ended += 1;
                }
                Ok(ended)
            })
            .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::contract;
    use crate::store::now;

    fn files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn contract() {
        let tmp = tempfile::tempdir().unwrap();
        let store = contract::store().await;
        let sessions = FilesystemSessions::open(
            tmp.path().join("sessions"),
            "mlflow_oidc:".into(),
            store.clone(),
        )
        .unwrap();
        contract::check(&sessions, &store).await;
    }

    #[tokio::test]
    async fn files_are_named_by_a_hash_and_hold_no_id() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("nested/flask_session");
        let store = contract::store().await;
        let sessions = FilesystemSessions::open(dir.clone(), "p1:".into(), store.clone()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
                0o700
            );
        }
        let id = "the-session-id-Abc123";
        let t = now();
        sessions
            .create(&contract::new_session(id, 1, "alice", t))
            .await
            .unwrap();
        let names = files(&dir);
        assert_eq!(
            names,
            vec![file_name("p1:", id)],
            "only the session file, no temp file"
        );
        assert_eq!(names[0].len(), 64);
        assert_ne!(file_name("p1:", id), file_name("p2:", id));
        let path = dir.join(&names[0]);
        let content = fs::read_to_string(&path).unwrap();
        assert!(!content.contains(id), "{content}");
        assert!(content.contains("\"key_prefix\":\"p1:\""), "{content}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }

        // Another prefix does not see the session; garbage is no session.
        let other = FilesystemSessions::open(dir.clone(), "p2:".into(), store.clone()).unwrap();
        assert!(other.get(id).await.unwrap().is_none());
        fs::write(dir.join(file_name("p1:", "junk")), b"{not json").unwrap();
        assert!(sessions.get("junk").await.unwrap().is_none());

        // A revocation rewrites the file in place of the old one.
        assert!(sessions.revoke(id, t + 1).await.unwrap());
        assert_eq!(files(&dir).len(), 2);
        let stored: Stored = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(stored.revoked_at, Some(t + 1));
    }

    #[tokio::test]
    async fn expired_files_are_swept() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let store = contract::store().await;
        let sessions = FilesystemSessions::open(dir.clone(), "p:".into(), store).unwrap();
        let t = now();
        // (The first sign-in sweeps; the second, dated earlier, does not.)
        sessions
            .create(&contract::new_session("live", 1, "a", t))
            .await
            .unwrap();
        let mut old = contract::new_session("old", 1, "a", t - 7200);
        old.expires_at = t - 10;
        sessions.create(&old).await.unwrap();
        assert_eq!(files(&dir).len(), 2);
        let stale = dir.join(format!("{TEMP_PREFIX}0000"));
        fs::write(&stale, b"x").unwrap();
        let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        fs::File::options()
            .write(true)
            .open(&stale)
            .unwrap()
            .set_modified(two_hours_ago)
            .unwrap();
        assert_eq!(sessions.sweep(t).await.unwrap(), 1);
        assert_eq!(files(&dir), vec![file_name("p:", "live")]);
    }

    #[test]
    fn an_unwritable_directory_stops_start_up() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("a-file");
        fs::write(&file, b"").unwrap();
        let store = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(contract::store());
        let Err(err) = FilesystemSessions::open(file.join("sub"), "p:".into(), store) else {
            panic!("opened a directory below a file");
        };
        let message = err.to_string();
        assert!(message.contains("SESSION_FILE_DIR"), "{message}");
        assert!(message.contains("SESSION_TYPE=filesystem"), "{message}");
    }
}
