//! A tiny disk for tests of what happens when a write runs out of space: a
//! tmpfs of a given size, mounted on a fresh folder and unmounted on drop.
//! Mounting needs root; elsewhere `mount` returns `None` and says why, so a
//! test can skip with a printed reason instead of passing vacuously.
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    /// A tmpfs of `bytes` (rounded up to whole pages by the kernel).
    pub fn mount(tag: &str, bytes: u64) -> Option<Self> {
        let dir = std::env::temp_dir().join(format!("small-disk-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok()?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(&dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Self { dir }),
            Ok(o) => {
                println!(
                    "skipped: cannot mount a tmpfs ({}): needs root",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                let _ = std::fs::remove_dir(&dir);
                None
            }
            Err(e) => {
                println!("skipped: cannot run mount ({e})");
                let _ = std::fs::remove_dir(&dir);
                None
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
