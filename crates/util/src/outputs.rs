//! A command's outputs, checked before the work starts and written
//! all-or-nothing.
//!
//! A command registers its inputs and every file it will write, then does
//! its (slow) work, then hands each output's bytes to the set and commits:
//!
//! ```no_run
//! # extern crate util; // required for mdbook test
//! # fn main() -> anyhow::Result<()> {
//! use util::outputs::{Format, OutputSet};
//! let mut outs = OutputSet::new();
//! outs.input("--checkpoint", "model.safetensors".as_ref())?;
//! let png = outs.output("--out", "samples.png".as_ref(), Format::Png)?;
//! // … sampling …
//! outs.write(png, b"...")?;
//! outs.commit()?;
//! # Ok(()) }
//! ```
//!
//! Registration refuses, before any work: an output that is an input or
//! another output (compared after resolving `..` and symbolic links, and by
//! inode for existing files), an extension that is not the format written,
//! an output that is a folder, and a folder that does not exist as a folder
//! or cannot be written (probed by creating and removing a file). `write`
//! puts the bytes in a temporary `.NAME.tmpPID` beside the target and
//! fsyncs it; `commit` renames every temporary onto its target. Until the
//! commit, no target is touched: a failure, or dropping the set, removes the
//! temporaries and leaves every existing file as it was.
use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Component, Path, PathBuf};

/// The file formats the examples write, each with the extensions it accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Png,
    Gif,
    Csv,
    Markdown,
    Safetensors,
    Json,
}

impl Format {
    pub fn extensions(self) -> &'static [&'static str] {
        match self {
            Format::Png => &["png"],
            Format::Gif => &["gif"],
            Format::Csv => &["csv"],
            Format::Markdown => &["md"],
            Format::Safetensors => &["safetensors"],
            Format::Json => &["json"],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Png => "PNG",
            Format::Gif => "GIF",
            Format::Csv => "CSV",
            Format::Markdown => "Markdown",
            Format::Safetensors => "safetensors",
            Format::Json => "JSON",
        }
    }
}

/// One registered output: pass it back to [`OutputSet::write`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputId(usize);

#[derive(Debug)]
struct Entry {
    flag: String,
    given: PathBuf,
    resolved: PathBuf,
}

#[derive(Debug)]
struct Output {
    entry: Entry,
    tmp: Option<PathBuf>,
}

/// Inputs and outputs of one command run. See the module documentation.
#[derive(Debug, Default)]
pub struct OutputSet {
    inputs: Vec<Entry>,
    outputs: Vec<Output>,
    /// Folders that `write` created, outermost first (removed again, if
    /// empty, when the set is dropped without a commit).
    created: Vec<PathBuf>,
    committed: bool,
}

/// `path` with `.` and `..` resolved and symbolic links followed, for a path
/// that may not exist yet: the longest existing prefix is canonicalised and
/// the rest appended. Also returns that existing prefix.
pub fn resolve(path: &Path) -> Result<(PathBuf, PathBuf)> {
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .context("cannot read the current folder")?
            .join(path)
    };
    // Lexically drop `.`; `..` is kept until a real folder is found, where
    // canonicalize resolves it through any symbolic link.
    let parts: Vec<Component> = abs.components().collect();
    for k in (1..=parts.len()).rev() {
        let prefix: PathBuf = parts[..k].iter().collect();
        if let Ok(canon) = prefix.canonicalize() {
            let mut out = canon.clone();
            for c in &parts[k..] {
                match c {
                    Component::CurDir => {}
                    Component::ParentDir => {
                        out.pop();
                    }
                    c => out.push(c),
                }
            }
            return Ok((out, canon));
        }
    }
    bail!("{}: cannot resolve this path", path.display())
}

/// (device, inode) of an existing file, to catch two names for one file.
fn inode(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

fn same_file(a: &Path, b: &Path) -> bool {
    a == b || matches!((inode(a), inode(b)), (Some(x), Some(y)) if x == y)
}

/// The temporary beside `target` that this process writes: `.NAME.tmpPID`.
pub fn temp_path(target: &Path) -> Result<PathBuf> {
    let dir = folder_of(target);
    let name = target
        .file_name()
        .with_context(|| format!("{}: no file name", target.display()))?
        .to_string_lossy();
    Ok(dir.join(format!(".{name}.tmp{}", std::process::id())))
}

fn folder_of(path: &Path) -> PathBuf {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf()
}

/// Whether process `pid` exists (a process we may not signal still exists).
pub fn pid_alive(pid: u32) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    // SAFETY: signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid as i32, 0) };
    r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Removes `.NAME.tmpPID` files in `dir` whose writer is no longer running
/// (left by a process that was killed mid-write). Returns how many went.
pub fn remove_stale_temps(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(pid) = stale_temp_pid(name) else {
            continue;
        };
        if pid != std::process::id()
            && !pid_alive(pid)
            && e.file_type().is_ok_and(|t| t.is_file())
            && std::fs::remove_file(e.path()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

/// The PID in a temporary's name `.NAME.tmpPID`, if `name` is one.
fn stale_temp_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?;
    let (stem, pid) = rest.rsplit_once(".tmp")?;
    if stem.is_empty() || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Checks that files can be created in `dir` by creating and removing one.
fn probe_writable(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".write-probe.tmp{}", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    std::fs::remove_file(&probe)
}

fn fsync_dir(dir: &Path) {
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

impl OutputSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a file the command reads (`flag` names it in messages).
    /// Register every input before the outputs.
    pub fn input(&mut self, flag: &str, path: &Path) -> Result<()> {
        let (resolved, _) = resolve(path)?;
        self.inputs.push(Entry {
            flag: flag.into(),
            given: path.to_path_buf(),
            resolved,
        });
        Ok(())
    }

    /// [`OutputSet::output`] for an optional flag: `None` registers nothing.
    pub fn output_if(
        &mut self,
        flag: &str,
        path: Option<&std::path::PathBuf>,
        format: Format,
    ) -> Result<Option<OutputId>> {
        path.map(|p| self.output(flag, p, format)).transpose()
    }

    /// Registers a file the command will write in `format`, and checks it
    /// now: see the module documentation.
    pub fn output(&mut self, flag: &str, path: &Path, format: Format) -> Result<OutputId> {
        let shown = path.display();
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let exts = format.extensions();
        if !ext.as_deref().is_some_and(|e| exts.contains(&e)) {
            bail!(
                "{flag} {shown}: this output is written as {}, so its name must end in .{} (refusing to write {} bytes under another extension)",
                format.name(),
                exts[0],
                format.name()
            );
        }
        let (resolved, existing) = resolve(path)?;
        if resolved == existing {
            // The output itself exists: it must be a file we may replace.
            if resolved.is_dir() {
                bail!("{flag} {shown} is a folder: give a file name");
            }
        } else if !existing.is_dir() {
            bail!(
                "{flag} {shown}: {} is a file, not a folder: choose another path",
                existing.display()
            );
        }
        for i in &self.inputs {
            if same_file(&resolved, &i.resolved) {
                bail!(
                    "{flag} {shown} is the input {} {}: writing it would destroy the input; choose another file name",
                    i.flag,
                    i.given.display()
                );
            }
        }
        for o in &self.outputs {
            if same_file(&resolved, &o.entry.resolved) {
                bail!(
                    "{flag} {shown} and {} {} name the same file: give each output its own name",
                    o.entry.flag,
                    o.entry.given.display()
                );
            }
        }
        let folder = if resolved == existing {
            folder_of(&resolved)
        } else {
            // The deepest existing folder: the rest is created at write time.
            existing.clone()
        };
        probe_writable(&folder).map_err(|e| {
            anyhow::anyhow!(
                "{flag} {shown}: cannot write into {} ({e}): choose a writable folder",
                folder.display()
            )
        })?;
        self.outputs.push(Output {
            entry: Entry {
                flag: flag.into(),
                given: path.to_path_buf(),
                resolved,
            },
            tmp: None,
        });
        Ok(OutputId(self.outputs.len() - 1))
    }

    /// The path of an output, as it was given.
    pub fn path(&self, id: OutputId) -> &Path {
        &self.outputs[id.0].entry.given
    }

    /// Writes an output's bytes to its temporary file (fsynced); the target
    /// is replaced only by [`OutputSet::commit`].
    pub fn write(&mut self, id: OutputId, bytes: &[u8]) -> Result<()> {
        let target = self.outputs[id.0].entry.resolved.clone();
        let shown = self.outputs[id.0].entry.given.display().to_string();
        let dir = folder_of(&target);
        if !dir.is_dir() {
            let mut missing = Vec::new();
            for a in dir.ancestors() {
                if a.exists() {
                    break;
                }
                missing.push(a.to_path_buf());
            }
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create folder {}", dir.display()))?;
            self.created.extend(missing.into_iter().rev());
        }
        remove_stale_temps(&dir);
        let tmp = temp_path(&target)?;
        let result = (|| -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            bail!("cannot write {shown} ({e}): no output of this run was written");
        }
        self.outputs[id.0].tmp = Some(tmp);
        Ok(())
    }

    /// Renames every temporary onto its target. Every registered output must
    /// have been written.
    pub fn commit(mut self) -> Result<()> {
        if let Some(o) = self.outputs.iter().find(|o| o.tmp.is_none()) {
            bail!(
                "{} {} was never written: no output of this run was written",
                o.entry.flag,
                o.entry.given.display()
            );
        }
        for o in &mut self.outputs {
            let tmp = o.tmp.take().expect("checked above");
            if let Err(e) = std::fs::rename(&tmp, &o.entry.resolved) {
                let _ = std::fs::remove_file(&tmp);
                bail!("cannot write {} ({e})", o.entry.given.display());
            }
            fsync_dir(&folder_of(&o.entry.resolved));
        }
        self.committed = true;
        Ok(())
    }
}

impl Drop for OutputSet {
    fn drop(&mut self) {
        for o in &self.outputs {
            if let Some(tmp) = &o.tmp {
                let _ = std::fs::remove_file(tmp);
            }
        }
        if !self.committed {
            for d in self.created.iter().rev() {
                let _ = std::fs::remove_dir(d); // only if empty
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("outputs-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn an_output_that_is_an_input_or_another_output_is_refused() {
        let d = scratch("clash");
        let m = d.join("m.safetensors");
        std::fs::write(&m, b"model").unwrap();
        let mut s = OutputSet::new();
        s.input("--checkpoint", &m).unwrap();
        // The same file by another spelling, and by a hard link.
        let other = d.join("sub/../m.safetensors");
        std::fs::create_dir(d.join("sub")).unwrap();
        let err = s.output("--save-tensors", &other, Format::Safetensors);
        assert!(format!("{:#}", err.unwrap_err()).contains("is the input --checkpoint"));
        std::fs::hard_link(&m, d.join("link.safetensors")).unwrap();
        let err = s.output(
            "--save-tensors",
            &d.join("link.safetensors"),
            Format::Safetensors,
        );
        assert!(err.is_err());
        s.output("--out", &d.join("a.png"), Format::Png).unwrap();
        let err = s.output("--trajectory", &d.join("./a.png"), Format::Png);
        assert!(format!("{:#}", err.unwrap_err()).contains("name the same file"));
        assert_eq!(std::fs::read(&m).unwrap(), b"model");
    }

    #[test]
    fn extension_folder_and_permissions_are_checked_first() {
        let d = scratch("checks");
        let mut s = OutputSet::new();
        let e = s
            .output("--out", &d.join("s.jpg"), Format::Png)
            .unwrap_err();
        assert!(e.to_string().contains("must end in .png"), "{e}");
        let e = s.output("--out", &d, Format::Png);
        assert!(e.is_err());
        std::fs::write(d.join("f"), b"").unwrap();
        let e = s
            .output("--out", &d.join("f/x.png"), Format::Png)
            .unwrap_err();
        assert!(e.to_string().contains("not a folder"), "{e}");
        assert!(s
            .output("--out", &d.join("new/deep/x.png"), Format::Png)
            .is_ok());
        assert_eq!(names(&d), ["f"], "nothing created before the work");
    }

    #[test]
    fn all_or_nothing_and_stale_temps_go() {
        let d = scratch("commit");
        std::fs::write(d.join("a.png"), b"old a").unwrap();
        // A temporary left by a process that no longer runs.
        std::fs::write(d.join(".x.png.tmp4999999"), b"stale").unwrap();
        {
            let mut s = OutputSet::new();
            let a = s.output("--out", &d.join("a.png"), Format::Png).unwrap();
            let _b = s.output("--gif", &d.join("b.gif"), Format::Gif).unwrap();
            s.write(a, b"new a").unwrap();
            // b is never written: dropping the set leaves everything as it was.
        }
        assert_eq!(names(&d), ["a.png"]);
        assert_eq!(std::fs::read(d.join("a.png")).unwrap(), b"old a");
        let mut s = OutputSet::new();
        let a = s.output("--out", &d.join("a.png"), Format::Png).unwrap();
        let b = s
            .output("--gif", &d.join("new/b.gif"), Format::Gif)
            .unwrap();
        s.write(a, b"new a").unwrap();
        s.write(b, b"b").unwrap();
        s.commit().unwrap();
        assert_eq!(std::fs::read(d.join("a.png")).unwrap(), b"new a");
        assert_eq!(names(&d), ["a.png", "new"]);
    }

    #[test]
    fn temp_names_parse() {
        assert_eq!(stale_temp_pid(".a.png.tmp123"), Some(123));
        assert_eq!(stale_temp_pid("a.png.tmp123"), None);
        assert_eq!(stale_temp_pid(".a.png.tmp"), None);
        assert_eq!(stale_temp_pid(".a.tmp12x"), None);
        assert!(pid_alive(std::process::id()));
    }
}
