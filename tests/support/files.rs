//! File-mode checks shared by the library and command-line tests.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Asserts that `dir` and every directory under it are 0700 and every file
/// under it 0600; returns how many files there are.
pub fn assert_owner_only(dir: &Path) -> usize {
    let mut files = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", dir.display());
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files += 1;
                let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{}", path.display());
            }
        }
    }
    files
}
