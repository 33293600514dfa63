//! Keys: from `--key-file` or `TOKENSTORE_KEY`, `keygen`, and `encrypt`,
//! `rekey`, `decrypt` (a store's key changed in place, with a progress
//! bar); owner-only files for keys and exports.

use std::path::Path;

use serde_json::json;
use tokenstore::{AnyStore, Key};

use crate::failure::{CliError, CliResult};
use crate::{progress_bar, Output};

/// The key from --key-file, else from TOKENSTORE_KEY, else none.
pub(crate) fn current_key(path: Option<&Path>) -> CliResult<Option<Key>> {
    if let Some(path) = path {
        return key_file(path).map(Some);
    }
    match std::env::var("TOKENSTORE_KEY") {
        Ok(text) if !text.trim().is_empty() => Key::from_base64(&text)
            .map(Some)
            .map_err(|e| CliError::input(format!("TOKENSTORE_KEY: {e}"))),
        _ => Ok(None),
    }
}

/// The key in the file at `path`; a file that cannot be read is bad input
/// (exit 2), not a failing store.
pub(crate) fn key_file(path: &Path) -> CliResult<Key> {
    Key::from_file(path).map_err(|e| match e {
        tokenstore::Error::Io(_) => CliError::input(e.to_string()),
        e => CliError::from(e),
    })
}

pub(crate) fn keygen(output: Option<&Path>) -> CliResult {
    let key = Key::generate()?;
    let Some(path) = output else {
        // Printing the key is what was asked for.
        println!("{}", key.to_base64());
        return Ok(());
    };
    let text = zeroize::Zeroizing::new(format!("{}\n", key.to_base64()));
    create_private(path, false)
        .and_then(|mut file| {
            std::io::Write::write_all(&mut file, text.as_bytes())?;
            file.sync_all()
        })
        .map_err(|e| {
            CliError::input(format!(
                "cannot create the key file {}: {e}",
                path.display()
            ))
        })?;
    eprintln!(
        "wrote a new key to {} (keep it: without it the store cannot be read)",
        path.display()
    );
    Ok(())
}

/// Creates `path` readable and writable by its owner only (0600 on Unix,
/// whatever the umask), replacing an existing file only with `replace`.
pub(crate) fn create_private(path: &Path, replace: bool) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if replace {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)
}

/// Encrypts, re-encrypts or decrypts the store, with a progress bar.
pub(crate) fn change_key(
    mut store: AnyStore,
    key: Option<Key>,
    done: &str,
    out: Output,
) -> CliResult {
    let bar = progress_bar(
        store.count()?,
        "rewriting [{bar:40}] {pos}/{len} records ({eta} left)",
    );
    let result = store.set_encryption(key, &mut |n, _| bar.set_position(n as u64));
    bar.finish_and_clear();
    result?;
    let records = store.count()?;
    let encrypted = store.info()?.encrypted;
    out.print(
        json!({ "records": records, "encrypted": encrypted }),
        || format!("{done} {records} records in {}", store.location()),
    );
    Ok(())
}
