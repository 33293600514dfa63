//! Where the sled database lives inside the store directory.
//!
//! A store starts with sled's files directly in its directory (generation
//! 0). Changing the encryption key writes a complete new database into
//! `data-N` and then atomically replaces the file `CURRENT` (which names the
//! live generation) before deleting the old files, so that no old plaintext
//! or old-key page survives in a log segment. A crash at any point leaves
//! `CURRENT` naming either the old generation or the new, complete one;
//! whatever else is left over is removed at the next open.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const CURRENT: &str = "CURRENT";
const CURRENT_TMP: &str = "CURRENT.tmp";
const DATA_PREFIX: &str = "data-";
/// sled 0.34's files, in a generation-0 store.
const SLED_FILES: [&str; 3] = ["conf", "db", "blobs"];
const SLED_SNAPSHOT_PREFIX: &str = "snap.";

fn io(e: std::io::Error, what: &str, at: &Path) -> Error {
    Error::from(std::io::Error::new(
        e.kind(),
        format!("cannot {what} {}: {e}", at.display()),
    ))
}

/// The live generation: what `CURRENT` names, or 0 without it.
pub(super) fn current_generation(store: &Path) -> Result<u64> {
    let path = store.join(CURRENT);
    match fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .strip_prefix(DATA_PREFIX)
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| {
                Error::corruption(
                    None,
                    format!("{} does not name a data directory", path.display()),
                )
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io(e, "read", &path)),
    }
}

/// The directory holding generation `generation`'s sled database.
pub(super) fn data_dir(store: &Path, generation: u64) -> PathBuf {
    match generation {
        0 => store.to_path_buf(),
        n => store.join(format!("{DATA_PREFIX}{n}")),
    }
}

/// Removes what an interrupted or finished key change left behind: data
/// directories of other generations, a half-written `CURRENT.tmp`, and the
/// generation-0 files once a later generation is live.
pub(super) fn remove_stale(store: &Path, live: u64) -> Result<()> {
    for entry in fs::read_dir(store).map_err(|e| io(e, "list", store))? {
        let entry = entry.map_err(|e| io(e, "list", store))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let stale = match name.strip_prefix(DATA_PREFIX).map(str::parse::<u64>) {
            Some(Ok(n)) => n != live,
            _ => {
                name == CURRENT_TMP
                    || (live > 0
                        && (SLED_FILES.contains(&name.as_str())
                            || name.starts_with(SLED_SNAPSHOT_PREFIX)))
            }
        };
        if stale {
            remove(&entry.path())?;
        }
    }
    Ok(())
}

pub(super) fn remove(path: &Path) -> Result<()> {
    let result = if path.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    match result {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(e, "remove", path)),
        _ => Ok(()),
    }
}

/// Makes `generation` the live one: `CURRENT` is replaced atomically and
/// the directory entry made durable.
pub(super) fn switch_to(store: &Path, generation: u64) -> Result<()> {
    let tmp = store.join(CURRENT_TMP);
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp).map_err(|e| io(e, "write", &tmp))?;
    file.write_all(format!("{DATA_PREFIX}{generation}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| io(e, "write", &tmp))?;
    let current = store.join(CURRENT);
    fs::rename(&tmp, &current).map_err(|e| io(e, "replace", &current))?;
    fs::File::open(store)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| io(e, "sync", store))
}
