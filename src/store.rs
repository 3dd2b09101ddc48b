//! The state-file seam: where a stopping gateway saves its handover and the next boot finds it.
//!
//! The daemon stores the handover through a [`StateStore`]: [`FileStore`] on disk, or
//! [`MemoryStore`] in tests and simulated worlds, where a "restart" must find what the previous
//! boot saved without touching the file system. The store moves opaque bytes; encoding, the
//! version check and deciding that a file is corrupt belong to the caller.

use std::fmt;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Durable storage for one state file.
///
/// Methods take `&mut self` because one store belongs to one gateway; nothing shares it.
pub trait StateStore: Send {
    /// Reads the saved bytes; `None` when nothing is saved (a first boot, or after `remove`).
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when the file exists but cannot be read.
    fn load(&mut self) -> Result<Option<Vec<u8>>, StoreError>;

    /// Replaces the saved bytes with `bytes`.
    ///
    /// Crash safe: a crash at any moment leaves either the old content or the new one, whole,
    /// never a mix and never nothing where there was something.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when the bytes could not be made durable; the old content is then kept.
    fn save(&mut self, bytes: &[u8]) -> Result<(), StoreError>;

    /// Forgets the saved bytes, after a boot has restored them, so they are restored only once.
    ///
    /// Removing when nothing is saved succeeds.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when the saved bytes could not be removed.
    fn remove(&mut self) -> Result<(), StoreError>;

    /// Moves the saved bytes out of the way, keeping them for a person to inspect.
    ///
    /// The caller uses it for a corrupt or unknown-version file, so the daemon can start empty
    /// without destroying what might still be recovered by hand. `why` (for instance `corrupt`)
    /// goes into the new name. Returns where the bytes went, for the error log.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] when nothing is saved or the bytes could not be moved.
    fn set_aside(&mut self, why: &str) -> Result<String, StoreError>;
}

/// What a store was doing when it failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreOp {
    /// Opening or locking the lock file.
    Lock,
    /// Reading the state file.
    Load,
    /// Writing, syncing or renaming into place.
    Save,
    /// Removing the state file.
    Remove,
    /// Moving the state file aside.
    SetAside,
}

impl fmt::Display for StoreOp {
    /// The operation as a lowercase verb, for error messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = match self {
            Self::Lock => "lock",
            Self::Load => "load",
            Self::Save => "save",
            Self::Remove => "remove",
            Self::SetAside => "set aside",
        };
        f.write_str(verb)
    }
}

/// Why a [`StateStore`] operation failed, naming the file and the operation.
#[derive(Debug)]
pub enum StoreError {
    /// Another store (usually another daemon) holds the lock on this state file.
    Locked {
        /// The state file whose lock is taken.
        path: PathBuf,
    },
    /// An operation on a file or directory failed.
    Io {
        /// What the store was doing.
        op: StoreOp,
        /// The file or directory the failing call touched.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
}

impl StoreError {
    /// Wraps an I/O error with the operation and the path it happened on.
    fn io(op: StoreOp, path: &Path, source: io::Error) -> Self {
        Self::Io { op, path: path.to_path_buf(), source }
    }
}

impl fmt::Display for StoreError {
    /// One line naming the operation, the path and the cause.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Locked { path } => write!(
                f,
                "state file {} is locked by another process (is another daemon running?)",
                path.display()
            ),
            Self::Io { op, path, source } => {
                write!(f, "state store could not {op} {}: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for StoreError {
    /// The underlying I/O error, if any.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Locked { .. } => None,
            Self::Io { source, .. } => Some(source),
        }
    }
}

/// A [`StateStore`] on one file, locked against a second store for the life of this value.
///
/// Beside the state file `<path>` it uses `<path>.lock` (kept after the store is dropped:
/// removing a lock file while another process may be opening it would break the lock),
/// `<path>.tmp` while saving, and `<path>.<why>.<n>` for set-aside copies. The directory must
/// exist.
///
/// # Limitations
///
/// The lock is an advisory `flock`: it keeps two quiesce daemons apart, not a process that
/// writes the file without asking. On network file systems such locks may not hold.
#[derive(Debug)]
pub struct FileStore {
    /// The state file.
    path: PathBuf,
    /// The open lock file; the exclusive lock lasts as long as this handle.
    _lock: File,
}

impl FileStore {
    /// Opens the store for the state file at `path`, taking its exclusive lock.
    ///
    /// Does not read the file; call [`StateStore::load`].
    ///
    /// # Errors
    ///
    /// [`StoreError::Locked`] when another store holds the lock; [`StoreError::Io`] when the
    /// lock file cannot be created or locked.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, StoreError> {
        let path = path.into();
        let lock_path = sibling(&path, "lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| StoreError::io(StoreOp::Lock, &lock_path, e))?;

        lock.try_lock().map_err(|e| match e {
            TryLockError::WouldBlock => StoreError::Locked { path: path.clone() },
            TryLockError::Error(e) => StoreError::io(StoreOp::Lock, &lock_path, e),
        })?;

        tracing::debug!(path = %path.display(), "state file locked");
        Ok(Self { path, _lock: lock })
    }

    /// The state file this store reads and writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory holding the state file, which must be synced after a rename or removal.
    fn dir(&self) -> &Path {
        match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        }
    }

    /// Makes the directory's entries durable, so a rename or removal survives a crash.
    fn sync_dir(&self, op: StoreOp) -> Result<(), StoreError> {
        let dir = self.dir();
        File::open(dir).and_then(|d| d.sync_all()).map_err(|e| StoreError::io(op, dir, e))
    }

    /// Writes `bytes` to `tmp` and syncs it, so that only a complete file is ever renamed.
    ///
    /// The file is readable by its owner only: it holds the text of accepted messages.
    fn write_synced(tmp: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        let write = || -> io::Result<()> {
            let mut file =
                OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(tmp)?;
            file.write_all(bytes)?;
            file.sync_all()
        };
        write().map_err(|e| StoreError::io(StoreOp::Save, tmp, e))
    }

    /// The first `<path>.<why>.<n>` that does not exist yet.
    fn aside_path(&self, why: &str) -> Result<PathBuf, StoreError> {
        let label = sanitize(why);
        for n in 1..=u32::MAX {
            let candidate = sibling(&self.path, &format!("{label}.{n}"));
            let taken = candidate
                .try_exists()
                .map_err(|e| StoreError::io(StoreOp::SetAside, &candidate, e))?;
            if !taken {
                return Ok(candidate);
            }
        }
        let full = io::Error::other("every set-aside name is taken");
        Err(StoreError::io(StoreOp::SetAside, &self.path, full))
    }
}

impl StateStore for FileStore {
    fn load(&mut self) -> Result<Option<Vec<u8>>, StoreError> {
        match fs::read(&self.path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io(StoreOp::Load, &self.path, e)),
        }
    }

    /// Writes a temporary file beside the state file, syncs it, renames it over the state
    /// file and syncs the directory.
    ///
    /// The rename is atomic, so a crash leaves the old file or the new one. A temporary file
    /// left by a crash is never read, and the next save overwrites it.
    fn save(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        let tmp = sibling(&self.path, "tmp");
        if let Err(e) = Self::write_synced(&tmp, bytes) {
            let _ignored = fs::remove_file(&tmp);
            return Err(e);
        }

        fs::rename(&tmp, &self.path).map_err(|e| StoreError::io(StoreOp::Save, &self.path, e))?;
        self.sync_dir(StoreOp::Save)?;

        tracing::debug!(path = %self.path.display(), bytes = bytes.len(), "state file saved");
        Ok(())
    }

    /// Removes the file and syncs the directory, so a crash cannot bring it back to be
    /// restored twice.
    fn remove(&mut self) -> Result<(), StoreError> {
        match fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(StoreError::io(StoreOp::Remove, &self.path, e)),
        }
        self.sync_dir(StoreOp::Remove)?;

        tracing::debug!(path = %self.path.display(), "state file removed");
        Ok(())
    }

    /// Renames the state file to the first free `<path>.<why>.<n>`, counting `n` from 1.
    ///
    /// `why` is reduced to ASCII letters, digits, `-` and `_` so it cannot leave the directory.
    fn set_aside(&mut self, why: &str) -> Result<String, StoreError> {
        let aside = self.aside_path(why)?;
        fs::rename(&self.path, &aside)
            .map_err(|e| StoreError::io(StoreOp::SetAside, &self.path, e))?;
        self.sync_dir(StoreOp::SetAside)?;

        let (path, aside) = (self.path.display(), aside.display());
        tracing::debug!(path = %path, aside = %aside, "state file set aside");
        Ok(aside.to_string())
    }
}

/// `<path>.<suffix>`: a file beside the state file, in the same directory so renames are atomic.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}

/// `why` reduced to characters that are safe in a file name; `aside` if nothing is left.
fn sanitize(why: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    let label: String = why.chars().map(|c| if safe(c) { c } else { '-' }).collect();
    if label.is_empty() { "aside".to_owned() } else { label }
}

/// A [`StateStore`] in memory, for tests and simulated worlds.
///
/// Clones are handles on the same content: keep one in the test, give another to the gateway,
/// and after a simulated stop hand a clone to the next boot or look at what was saved. There is
/// no lock; sharing is the point. Nothing can fail, so every method returns `Ok`, except
/// `set_aside` when nothing is saved.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    /// The content every handle shares.
    shared: Arc<Mutex<MemoryContent>>,
}

/// What a [`MemoryStore`] holds.
#[derive(Debug, Default)]
struct MemoryContent {
    /// The saved bytes, if any.
    saved: Option<Vec<u8>>,
    /// What `set_aside` moved away, with the name it got, oldest first.
    aside: Vec<(String, Vec<u8>)>,
}

impl MemoryStore {
    /// An empty store: a first boot.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store that already holds `bytes`, as if a previous boot had saved them (or as a
    /// corrupt file, for a test of `set_aside`).
    pub fn with_saved(bytes: impl Into<Vec<u8>>) -> Self {
        let store = Self::new();
        store.content().saved = Some(bytes.into());
        store
    }

    /// The bytes currently saved, for a test to inspect.
    pub fn saved(&self) -> Option<Vec<u8>> {
        self.content().saved.clone()
    }

    /// Everything set aside so far, as `(name, bytes)`, oldest first.
    pub fn set_aside_entries(&self) -> Vec<(String, Vec<u8>)> {
        self.content().aside.clone()
    }

    /// Locks the shared content; a panic in another handle's holder cannot leave it half
    /// changed (every change is one assignment), so a poisoned lock is still usable.
    fn content(&self) -> MutexGuard<'_, MemoryContent> {
        self.shared.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl StateStore for MemoryStore {
    fn load(&mut self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.saved())
    }

    /// Replaces the content in one step, which is as crash safe as memory gets.
    fn save(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.content().saved = Some(bytes.to_vec());
        Ok(())
    }

    fn remove(&mut self) -> Result<(), StoreError> {
        self.content().saved = None;
        Ok(())
    }

    /// Moves the content to the set-aside list under the name `memory.<why>.<n>`.
    fn set_aside(&mut self, why: &str) -> Result<String, StoreError> {
        let mut content = self.content();
        let Some(bytes) = content.saved.take() else {
            let missing = io::Error::new(io::ErrorKind::NotFound, "nothing is saved");
            return Err(StoreError::io(StoreOp::SetAside, Path::new("memory"), missing));
        };

        let name = format!("memory.{}.{}", sanitize(why), content.aside.len() + 1);
        content.aside.push((name.clone(), bytes));
        Ok(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tempfile::TempDir;

    /// A fresh directory and the state file path inside it.
    fn state_path() -> (TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("state.json");
        (dir, path)
    }

    fn open(path: &Path) -> FileStore {
        FileStore::open(path).expect("the store opens")
    }

    #[test]
    fn file_store_starts_empty() {
        let (_dir, path) = state_path();

        assert_eq!(open(&path).load().ok(), Some(None));
    }

    #[test]
    fn file_store_roundtrips_saves() {
        let (_dir, path) = state_path();
        let mut store = open(&path);

        store.save(b"first").expect("first save");
        assert_eq!(store.load().ok(), Some(Some(b"first".to_vec())));

        store.save(b"second").expect("second save");
        assert_eq!(store.load().ok(), Some(Some(b"second".to_vec())));
    }

    #[test]
    fn file_store_remove_forgets_content() {
        let (_dir, path) = state_path();
        let mut store = open(&path);
        store.save(b"handover").expect("save");

        store.remove().expect("remove");
        assert_eq!(store.load().ok(), Some(None));
        assert!(!path.exists());
        assert!(store.remove().is_ok(), "a second remove must succeed");
    }

    #[test]
    fn next_boot_loads_what_was_saved() {
        let (_dir, path) = state_path();
        open(&path).save(b"handover").expect("save");

        assert_eq!(open(&path).load().ok(), Some(Some(b"handover".to_vec())));
    }

    #[test]
    fn save_leaves_no_temp_file() {
        let (dir, path) = state_path();
        open(&path).save(b"handover").expect("save");

        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("the directory lists")
            .map(|entry| entry.expect("an entry").file_name())
            .collect();
        assert!(!names.iter().any(|name| name == "state.json.tmp"), "left: {names:?}");
    }

    #[test]
    fn crashed_save_keeps_old_content() {
        let (_dir, path) = state_path();
        let mut store = open(&path);
        store.save(b"old").expect("save");

        fs::write(sibling(&path, "tmp"), b"half a new fi").expect("a torn temp file");
        assert_eq!(store.load().ok(), Some(Some(b"old".to_vec())));

        store.save(b"new").expect("save over the torn temp file");
        assert_eq!(store.load().ok(), Some(Some(b"new".to_vec())));
    }

    #[test]
    fn second_store_on_one_path_is_locked() {
        let (_dir, path) = state_path();
        let _first = open(&path);

        let second = FileStore::open(&path);

        assert!(matches!(&second, Err(StoreError::Locked { path: p }) if *p == path));
        let message = second.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains(&path.display().to_string()), "message: {message}");
        assert!(message.contains("locked"), "message: {message}");
    }

    #[test]
    fn dropped_store_releases_lock() {
        let (_dir, path) = state_path();
        drop(open(&path));

        assert!(FileStore::open(&path).is_ok());
    }

    #[test]
    fn set_aside_moves_content_away() {
        let (_dir, path) = state_path();
        let mut store = open(&path);
        store.save(b"{not json").expect("save");

        let aside = store.set_aside("corrupt").expect("set aside");

        assert_eq!(aside, format!("{}.corrupt.1", path.display()));
        assert_eq!(fs::read(&aside).ok(), Some(b"{not json".to_vec()));
        assert_eq!(store.load().ok(), Some(None));
    }

    #[test]
    fn set_aside_never_overwrites() {
        let (_dir, path) = state_path();
        let mut store = open(&path);
        store.save(b"one").expect("save");
        let first = store.set_aside("corrupt").expect("first set aside");
        store.save(b"two").expect("save");

        let second = store.set_aside("corrupt").expect("second set aside");

        assert_eq!(second, format!("{}.corrupt.2", path.display()));
        assert_eq!(fs::read(&first).ok(), Some(b"one".to_vec()));
        assert_eq!(fs::read(&second).ok(), Some(b"two".to_vec()));
    }

    #[test]
    fn set_aside_name_stays_in_directory() {
        let (_dir, path) = state_path();
        let mut store = open(&path);
        store.save(b"x").expect("save");

        let aside = store.set_aside("../version 9").expect("set aside");

        assert_eq!(aside, format!("{}.---version-9.1", path.display()));
    }

    #[test]
    fn set_aside_without_content_fails() {
        let (_dir, path) = state_path();

        let error = open(&path).set_aside("corrupt");

        assert!(matches!(error, Err(StoreError::Io { op: StoreOp::SetAside, .. })));
    }

    #[test]
    fn io_error_names_operation_and_path() {
        let (dir, _path) = state_path();
        let path = dir.path().join("missing").join("state.json");

        let error = FileStore::open(&path).err().map(|e| e.to_string()).unwrap_or_default();

        let lock_path = format!("{}.lock", path.display());
        assert!(error.starts_with(&format!("state store could not lock {lock_path}: ")), "{error}");
    }

    #[test]
    fn unreadable_state_file_is_a_load_error() {
        let (_dir, path) = state_path();
        let mut store = open(&path);
        fs::create_dir(&path).expect("a directory where the file should be");

        assert!(matches!(store.load(), Err(StoreError::Io { op: StoreOp::Load, .. })));
    }

    #[test]
    fn memory_store_shares_content_across_clones() {
        let observer = MemoryStore::new();
        let mut first_boot = observer.clone();

        first_boot.save(b"handover").expect("save");
        drop(first_boot);

        assert_eq!(observer.saved(), Some(b"handover".to_vec()));
        assert_eq!(observer.clone().load().ok(), Some(Some(b"handover".to_vec())));
    }

    #[test]
    fn memory_store_remove_forgets_content() {
        let mut store = MemoryStore::with_saved(*b"handover");

        store.remove().expect("remove");

        assert_eq!(store.load().ok(), Some(None));
    }

    #[test]
    fn memory_store_keeps_set_aside_bytes() {
        let observer = MemoryStore::with_saved(*b"{not json");
        let mut store = observer.clone();

        let name = store.set_aside("corrupt").expect("set aside");

        assert_eq!(name, "memory.corrupt.1");
        assert_eq!(observer.saved(), None);
        assert_eq!(observer.set_aside_entries(), [(name, b"{not json".to_vec())]);
        assert!(store.set_aside("corrupt").is_err(), "nothing is left to set aside");
    }
}
