//! An exclusive lock on a folder: a file holding the owner's PID, created
//! only if absent (`O_EXCL`), removed when the lock is dropped. A lock left
//! by a process that no longer runs (killed with `kill -9`) is taken over.
use crate::outputs::pid_alive;
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct FolderLock {
    path: PathBuf,
}

/// What [`FolderLock::take`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Taken {
    /// The folder was free.
    Free,
    /// A lock of this PID, no longer running, was replaced.
    Stale(u32),
}

impl FolderLock {
    /// The lock file in `dir`.
    pub fn file(dir: &Path) -> PathBuf {
        dir.join(".lock")
    }

    /// Takes the lock on `dir` (which must exist) for this process. `what`
    /// names the holder in the message another process gets ("training run").
    pub fn take(dir: &Path, what: &str) -> Result<(Self, Taken)> {
        let path = Self::file(dir);
        let mut taken = Taken::Free;
        for _ in 0..3 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    write!(f, "{}", std::process::id())
                        .and_then(|_| f.sync_all())
                        .with_context(|| format!("cannot write the lock {}", path.display()))?;
                    return Ok((Self { path }, taken));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    match text.trim().parse::<u32>() {
                        Ok(pid) if pid_alive(pid) => bail!(
                            "{} is in use by another {what} (PID {pid}, lock file {}): wait for it to finish or choose another folder",
                            dir.display(),
                            path.display()
                        ),
                        Ok(pid) => {
                            // Its owner is gone: take it over.
                            let _ = std::fs::remove_file(&path);
                            taken = Taken::Stale(pid);
                        }
                        Err(_) if text.is_empty() => {
                            // Being written by a process that just created it.
                            std::thread::sleep(std::time::Duration::from_millis(50));
                        }
                        Err(_) => bail!(
                            "{} holds '{}', not a PID: remove it if no other {what} uses {}",
                            path.display(),
                            text.trim(),
                            dir.display()
                        ),
                    }
                }
                Err(e) => bail!("cannot create the lock {} ({e})", path.display()),
            }
        }
        bail!(
            "cannot take the lock {}: another {what} keeps taking it",
            path.display()
        )
    }
}

impl Drop for FolderLock {
    fn drop(&mut self) {
        // Only our own lock: never one that another process took over.
        let ours = std::fs::read_to_string(&self.path)
            .is_ok_and(|t| t.trim() == std::process::id().to_string());
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_taker_is_refused_and_a_dead_owner_is_replaced() {
        let d = std::env::temp_dir().join(format!("util-lock-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let (lock, how) = FolderLock::take(&d, "training run").unwrap();
        assert_eq!(how, Taken::Free);
        // This process holds it, so a second take is refused naming the PID.
        let err = FolderLock::take(&d, "training run")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("PID {}", std::process::id())),
            "{err}"
        );
        drop(lock);
        assert!(!FolderLock::file(&d).exists());
        std::fs::write(FolderLock::file(&d), "4999999").unwrap(); // no such process
        let (_lock, how) = FolderLock::take(&d, "training run").unwrap();
        assert_eq!(how, Taken::Stale(4_999_999));
        drop(_lock);
        std::fs::remove_dir_all(d).unwrap();
    }
}
