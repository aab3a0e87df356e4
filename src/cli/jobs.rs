//! Which files `encode` and `decode` read and write: folders expanded, one output per
//! input, and each output written whole or not at all, never over a file the user did
//! not give up with --force.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use oscar_wgpu::image_io::extension;

/// Files to process and where their results go.
pub struct Jobs {
    pub inputs: Vec<PathBuf>,
    /// A file for one input file; a folder for a folder or several inputs, or where it
    /// ends in a separator.
    pub output: Option<PathBuf>,
    pub force: bool,
}

impl Jobs {
    /// (input, output) pairs: folders expand to the files in them with one of
    /// `extensions`; outputs get `new_extension`. Refuses, before anything runs, two
    /// inputs with one output and (without --force) outputs that exist.
    pub fn pairs(
        &self,
        extensions: &[&str],
        new_extension: &str,
    ) -> Result<Vec<(PathBuf, PathBuf)>> {
        let files = self.input_files(extensions)?;
        if self.output.as_deref() == Some(Path::new("-")) {
            bail!("-o - (standard output) is not supported; name a file, or /dev/stdout");
        }
        // `-o coded/` names a folder even before it exists.
        let names_a_folder =
            |o: &Path| o.is_dir() || o.to_string_lossy().ends_with(std::path::is_separator);
        let into_folder = match &self.output {
            Some(o) => {
                files.len() > 1 || self.inputs.iter().any(|i| i.is_dir()) || names_a_folder(o)
            }
            None => false,
        };
        let pairs: Vec<(PathBuf, PathBuf)> = files
            .into_iter()
            .map(|input| {
                let output = match &self.output {
                    Some(dir) if into_folder => dir
                        .join(input.file_name().unwrap_or_default())
                        .with_extension(new_extension),
                    Some(file) => file.clone(),
                    None => input.with_extension(new_extension),
                };
                (input, output)
            })
            .collect();
        let mut writers: HashMap<&Path, &Path> = HashMap::new();
        for (input, output) in &pairs {
            if let Some(first) = writers.insert(output, input) {
                bail!(
                    "{} and {} would both be written to {}; rename one or give them different folders",
                    first.display(),
                    input.display(),
                    output.display()
                );
            }
        }
        if !self.force {
            if let Some((_, existing)) = pairs.iter().find(|(_, o)| occupant(o) == Occupant::File) {
                return Err(exists(existing));
            }
        }
        if let Some(dir) = self.output.as_ref().filter(|_| into_folder) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        // Here rather than after the model has run.
        for (_, output) in &pairs {
            let folder = output.parent().filter(|p| !p.as_os_str().is_empty());
            if let Some(folder) = folder.filter(|f| !f.is_dir()) {
                let why = if folder.exists() {
                    "is not a folder"
                } else {
                    "does not exist"
                };
                bail!(
                    "cannot write {}: {} {why}",
                    output.display(),
                    folder.display()
                );
            }
        }
        Ok(pairs)
    }

    fn input_files(&self, extensions: &[&str]) -> Result<Vec<PathBuf>> {
        let mut files = Vec::new();
        for input in &self.inputs {
            if input.is_dir() {
                let mut found: Vec<PathBuf> = std::fs::read_dir(input)
                    .with_context(|| format!("cannot list {}", input.display()))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| extension(p).is_some_and(|e| extensions.contains(&e.as_str())))
                    .collect();
                found.sort();
                files.extend(found);
            } else if input.exists() {
                files.push(input.clone());
            } else if input == Path::new("-") {
                bail!("- (standard input) is not supported; name a file");
            } else {
                bail!("{} does not exist", input.display());
            }
        }
        if files.is_empty() {
            bail!("no input files (looked for {})", extensions.join(", "));
        }
        Ok(files)
    }

    /// Writes one output through a new hidden file beside it, renamed into place, so an
    /// interrupted run never leaves half a file where the user's was. Without --force it
    /// refuses a file that appeared since `pairs` looked (on a case-insensitive disk,
    /// `a.png` and `A.png` have one output). A device or a pipe (`/dev/null`,
    /// `/dev/stdout`) is written into, not replaced.
    pub fn write(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let cannot = || format!("cannot write {}", path.display());
        match occupant(path) {
            Occupant::Special => {
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(path)
                    .with_context(cannot)?;
                return file
                    .write_all(bytes)
                    .and_then(|()| file.flush())
                    .with_context(cannot);
            }
            Occupant::File if !self.force => return Err(exists(path)),
            _ => {}
        }
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let tmp = path.with_file_name(format!(".{name}.{}.partial", std::process::id()));
        // create_new: never someone else's file, so the one removed below is this run's.
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .with_context(cannot)?;
        let written = file.write_all(bytes).and_then(|()| {
            drop(file); // closed before it is renamed, as Windows wants
            std::fs::rename(&tmp, path)
        });
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.with_context(cannot)
    }
}

/// What an output's path holds now.
#[derive(PartialEq)]
enum Occupant {
    Nothing,
    /// A file, a folder, or a link (even a dangling one): the user's, kept without --force.
    File,
    /// A device or a pipe, or a link to one: written into, nothing to lose.
    Special,
}

fn occupant(path: &Path) -> Occupant {
    let Ok(own) = std::fs::symlink_metadata(path) else {
        return Occupant::Nothing;
    };
    let plain = |m: &std::fs::Metadata| m.is_file() || m.is_dir();
    match std::fs::metadata(path) {
        Ok(target) if !plain(&target) => Occupant::Special,
        _ if own.is_symlink() || plain(&own) => Occupant::File,
        _ => Occupant::Special,
    }
}

fn exists(path: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "{} exists; pass --force to overwrite it, or -o to write elsewhere",
        path.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An empty folder of the system's temporary folder for one test.
    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("oscar-wgpu-jobs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn jobs(inputs: &[&Path], output: Option<&Path>, force: bool) -> Jobs {
        Jobs {
            inputs: inputs.iter().map(|p| p.to_path_buf()).collect(),
            output: output.map(Path::to_path_buf),
            force,
        }
    }

    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_folder_goes_to_a_folder_even_with_one_picture() {
        let dir = scratch("one");
        std::fs::create_dir(dir.join("in")).unwrap();
        std::fs::write(dir.join("in/a.png"), b"").unwrap();
        let out = dir.join("coded");
        let pairs = jobs(&[&dir.join("in")], Some(&out), false)
            .pairs(&["png"], "oscar")
            .unwrap();
        assert_eq!(pairs, [(dir.join("in/a.png"), out.join("a.oscar"))]);
        assert!(out.is_dir());
        // One file and a new name: that name is the output file.
        let pairs = jobs(&[&dir.join("in/a.png")], Some(&dir.join("x.oscar")), false)
            .pairs(&["png"], "oscar")
            .unwrap();
        assert_eq!(pairs, [(dir.join("in/a.png"), dir.join("x.oscar"))]);
        // A new name ending in a separator is a folder.
        let pairs = jobs(&[&dir.join("in/a.png")], Some(&dir.join("new/")), false)
            .pairs(&["png"], "oscar")
            .unwrap();
        assert_eq!(pairs, [(dir.join("in/a.png"), dir.join("new/a.oscar"))]);
        assert!(dir.join("new").is_dir());
        // …in a folder that exists, and is a folder.
        let refusal = |output: &str| {
            jobs(&[&dir.join("in/a.png")], Some(&dir.join(output)), false)
                .pairs(&["png"], "oscar")
                .unwrap_err()
                .to_string()
        };
        let err = refusal("no/x.oscar");
        assert!(err.ends_with("no does not exist"), "{err}");
        let err = refusal("in/a.png/x.oscar");
        assert!(err.ends_with("a.png is not a folder"), "{err}");
    }

    #[test]
    fn two_inputs_with_one_output_are_refused_before_anything_runs() {
        let dir = scratch("clash");
        for name in ["a.png", "a.PNG", "b.webp"] {
            std::fs::write(dir.join(name), b"").unwrap();
        }
        let out = dir.join("coded");
        for force in [false, true] {
            let err = jobs(&[&dir], Some(&out), force)
                .pairs(&["png", "webp"], "oscar")
                .unwrap_err()
                .to_string();
            assert!(err.contains("a.PNG") && err.contains("a.png"), "{err}");
            assert!(err.contains("coded/a.oscar"), "{err}");
        }
        // Nor beside the inputs.
        assert!(jobs(&[&dir], None, true).pairs(&["png"], "oscar").is_err());
        assert!(!out.exists());
    }

    #[test]
    fn existing_outputs_need_force() {
        let dir = scratch("exists");
        std::fs::write(dir.join("a.png"), b"").unwrap();
        std::fs::write(dir.join("a.oscar"), b"precious").unwrap();
        let err = jobs(&[&dir.join("a.png")], None, false)
            .pairs(&["png"], "oscar")
            .unwrap_err();
        assert!(err.to_string().contains("--force"), "{err}");
        let pairs = jobs(&[&dir.join("a.png")], None, true)
            .pairs(&["png"], "oscar")
            .unwrap();
        assert_eq!(pairs, [(dir.join("a.png"), dir.join("a.oscar"))]);
    }

    /// `-o` a pipe or a device (`/dev/null`, `/dev/stdout`) is written into: replacing
    /// it by a file destroyed it (as root, /dev/null itself). A link that leads nowhere
    /// is the user's, like a file.
    #[cfg(unix)]
    #[test]
    fn pipes_are_written_into_and_dangling_links_kept() {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::FileTypeExt;
        let dir = scratch("special");
        let fifo = dir.join("pipe.oscar");
        let name = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || std::fs::read(fifo).unwrap())
        };
        jobs(&[], None, false).write(&fifo, b"bytes").unwrap();
        assert_eq!(reader.join().unwrap(), b"bytes");
        let kind = std::fs::symlink_metadata(&fifo).unwrap().file_type();
        assert!(kind.is_fifo(), "{kind:?}");
        let link = dir.join("a.oscar");
        std::os::unix::fs::symlink(dir.join("nowhere"), &link).unwrap();
        std::fs::write(dir.join("a.png"), b"").unwrap();
        let refused = jobs(&[&dir.join("a.png")], None, false).pairs(&["png"], "oscar");
        assert!(refused.unwrap_err().to_string().contains("--force"));
        let refused = jobs(&[], None, false).write(&link, b"new");
        assert!(refused.unwrap_err().to_string().contains("--force"));
        assert!(link.is_symlink());
    }

    #[test]
    fn standard_input_and_output_are_named_as_unsupported() {
        let err = jobs(&[Path::new("-")], None, false).pairs(&["png"], "oscar");
        assert!(err.unwrap_err().to_string().contains("standard input"));
        let dir = scratch("dash");
        std::fs::write(dir.join("a.png"), b"").unwrap();
        let err = jobs(&[&dir.join("a.png")], Some(Path::new("-")), false).pairs(&["png"], "oscar");
        assert!(err.unwrap_err().to_string().contains("standard output"));
    }

    #[test]
    fn writes_leave_only_the_output_and_spare_the_users_files() {
        let dir = scratch("write");
        // Files a careless temporary name could take.
        std::fs::write(dir.join("a.partial"), b"mine").unwrap();
        std::fs::write(dir.join("b.oscar"), b"old").unwrap();
        let output = dir.join("a.oscar");
        jobs(&[], None, false).write(&output, b"new").unwrap();
        assert_eq!(std::fs::read(&output).unwrap(), b"new");
        assert_eq!(std::fs::read(dir.join("a.partial")).unwrap(), b"mine");
        assert_eq!(files_in(&dir), ["a.oscar", "a.partial", "b.oscar"]);
        // A file that appeared after the check: kept without --force, replaced with it.
        let refused = jobs(&[], None, false).write(&dir.join("b.oscar"), b"new");
        assert!(refused.unwrap_err().to_string().contains("--force"));
        assert_eq!(std::fs::read(dir.join("b.oscar")).unwrap(), b"old");
        jobs(&[], None, true)
            .write(&dir.join("b.oscar"), b"new")
            .unwrap();
        assert_eq!(std::fs::read(dir.join("b.oscar")).unwrap(), b"new");
        // A failed write names the output and leaves nothing behind.
        let err = jobs(&[], None, false)
            .write(&dir.join("missing/c.oscar"), b"new")
            .unwrap_err();
        assert!(format!("{err:#}").contains("missing/c.oscar"), "{err:#}");
        assert_eq!(files_in(&dir), ["a.oscar", "a.partial", "b.oscar"]);
    }
}
