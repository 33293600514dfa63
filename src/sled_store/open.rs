//! Opening a store directory: its private directory, the lock that keeps
//! it to one handle, the sled database and its trees, the format and key
//! check, the owner-only permissions.

use super::*;

impl SledStore {
    /// Opens (creating if needed) the database directory `path` with the
    /// default [`SledOptions`]: durable writes.
    ///
    /// # Errors
    /// [`Error::Locked`] if the database is open elsewhere,
    /// [`Error::UnsupportedVersion`] if it was written by an unknown format
    /// version, [`Error::Io`] if the path cannot be used (for example it is a
    /// file), [`Error::Corruption`] if its metadata is damaged.
    pub fn open(path: impl AsRef<Path>) -> Result<SledStore> {
        Self::open_with(path, SledOptions::default())
    }

    /// Opens (creating if needed) the database directory `path`.
    ///
    /// # Errors
    /// As for [`open`](Self::open).
    pub fn open_with(path: impl AsRef<Path>, options: SledOptions) -> Result<SledStore> {
        let path = path.as_ref().to_path_buf();
        create_private_dir(&path)?;
        let lock = lock_directory(&path, options.lock_wait, options.lock_grace)?;

        let generation = layout::current_generation(&path)?;
        layout::remove_stale(&path, generation)?;
        let data_dir = layout::data_dir(&path, generation);
        let engine = Engine::open(&options, &data_dir, &path)?;

        let sealing = Sealing::new(options.encryption.as_ref());
        check_format(&engine.db, &engine.meta, &engine.records, &sealing, &path)?;
        secure_permissions(&path)?;
        let last_issued = match engine.meta.get(LAST_ISSUED_KEY).map_err(storage)? {
            None => 0,
            Some(bytes) => u64::from_be_bytes(bytes.as_ref().try_into().map_err(|_| {
                Error::corruption(None, "the stored id counter is not 8 bytes long")
            })?),
        };

        let sealed = read_sealed(&engine.db, &engine.meta, &sealing)?;

        let record_cache = options.record_cache_bytes();
        let store = SledStore {
            engine: Some(engine),
            writer: Arc::new(Mutex::new(Counters {
                last_issued,
                sealed,
            })),
            combiner: combine::Combiner::default(),
            group_commit: GroupCommit::default(),
            cache: (record_cache > 0).then(|| Arc::new(RecordCache::new(record_cache))),
            warming: Warming::default(),
            filter: Arc::default(),
            sealing: Arc::new(sealing),
            generation,
            written: AtomicU64::new(0),
            resnapshot_after: RESNAPSHOT_AFTER_WRITES,
            options,
            path,
            lock: Some(lock),
        };
        if store.options.warms_on_open() {
            store.start_warming();
        }
        Ok(store)
    }
}

pub(super) fn sled_config(options: &SledOptions, data_dir: &Path) -> sled::Config {
    let flush_every = match options.durability {
        Durability::Durable => Some(500),
        Durability::Buffered { flush_every } => Some(
            u64::try_from(flush_every.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
        ),
    };
    sled::Config::new()
        .path(data_dir)
        .cache_capacity(options.cache_capacity)
        .flush_every_ms(flush_every)
}

/// An open sled database and its trees.
pub(super) struct Engine {
    pub(super) db: sled::Db,
    pub(super) records: Tree,
    pub(super) indexes: [Tree; 4],
    pub(super) meta: Tree,
}

impl Engine {
    /// Opens (creating) the sled database in `data_dir`; `path` is the
    /// store directory, for messages.
    pub(super) fn open(options: &SledOptions, data_dir: &Path, path: &Path) -> Result<Engine> {
        let db = open_sled(&sled_config(options, data_dir), path)?;
        let open_tree = |name: &str| db.open_tree(name).map_err(storage);
        Ok(Engine {
            records: open_tree(RECORDS_TREE)?,
            indexes: [
                open_tree(&index_tree_name(IndexedField::UserName))?,
                open_tree(&index_tree_name(IndexedField::AccessToken))?,
                open_tree(&index_tree_name(IndexedField::RefreshToken))?,
                open_tree(&index_tree_name(IndexedField::GrantToken))?,
            ],
            meta: open_tree(META_TREE)?,
            db,
        })
    }
}

pub(super) fn create_private_dir(path: &Path) -> Result<()> {
    if path.exists() && !path.is_dir() {
        return Err(Error::from(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a directory; a token store is a directory",
                path.display()
            ),
        )));
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path).map_err(|e| {
        Error::from(std::io::Error::new(
            e.kind(),
            format!(
                "cannot create the token store directory {}: {e}",
                path.display()
            ),
        ))
    })
}

/// How long a sled lock still held after our own directory lock was taken
/// is waited for: see [`open_sled`].
pub(super) const SLED_LOCK_GRACE: Duration = Duration::from_secs(5);

/// Opens sled. Our directory lock is already held, so no other tokenstore
/// handle is live; if sled's own lock is still taken, it is a handle of this
/// process that was just dropped and whose background tasks are finishing
/// (sled releases its lock when they end), or a foreign sled user. Wait a
/// bounded time for the first, then report `Locked`.
pub(super) fn open_sled(config: &sled::Config, path: &Path) -> Result<sled::Db> {
    let started = std::time::Instant::now();
    loop {
        match config.open() {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(io)) if io.to_string().contains("could not acquire lock") => {
                if started.elapsed() >= SLED_LOCK_GRACE {
                    return Err(Error::Locked {
                        path: path.to_path_buf(),
                    });
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(other) => return Err(storage(other)),
        }
    }
}

/// How long even a fail-fast open waits out a lock held for an instant: a
/// child process of this one, between its fork and its exec, briefly holds a
/// copy of the lock file's descriptor after the handle that took the lock
/// was dropped. Another process's open store holds the lock far longer.
pub(super) const LOCK_GRACE: Duration = Duration::from_millis(250);

/// Takes the store directory's lock file, waiting up to `wait` (at least
/// [`LOCK_GRACE`]) for another process to release it.
pub(super) fn lock_directory(path: &Path, wait: Duration, grace: bool) -> Result<File> {
    let wait = if grace { wait.max(LOCK_GRACE) } else { wait };
    let lock_path = path.join(LOCK_FILE);
    let mut open = OpenOptions::new();
    open.create(true).truncate(false).write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
    let file = open.open(&lock_path).map_err(|e| {
        Error::from(std::io::Error::new(
            e.kind(),
            format!("cannot open the lock file {}: {e}", lock_path.display()),
        ))
    })?;
    let started = std::time::Instant::now();
    let mut pause = Duration::from_millis(2);
    loop {
        match file.try_lock() {
            Ok(()) => {
                let waited = started.elapsed();
                if waited > LOCK_WAIT_NOTICE {
                    log::info!(
                        target: STORE,
                        "waited {} for the lock of the store {} (another process had it open)",
                        Secs(waited),
                        path.display()
                    );
                }
                return Ok(file);
            }
            Err(TryLockError::WouldBlock) => {
                let waited = started.elapsed();
                if waited >= wait {
                    if waited > LOCK_WAIT_NOTICE {
                        log::warn!(
                            target: STORE,
                            "gave up after waiting {} for the lock of the store {} (another \
                             process has it open)",
                            Secs(waited),
                            path.display()
                        );
                    }
                    return Err(Error::Locked {
                        path: path.to_path_buf(),
                    });
                }
                std::thread::sleep(pause.min(wait - waited));
                pause = (pause * 2).min(Duration::from_millis(100));
            }
            Err(TryLockError::Error(e)) => return Err(Error::from(e)),
        }
    }
}

/// Checks the stored format version against the key given: a plain store
/// (version 1) opens without a key, an encrypted one (version 2) only with
/// the key whose check value it holds. A new store is stamped with the
/// version (and key check value) of `sealing`.
pub(super) fn check_format(
    db: &sled::Db,
    meta: &Tree,
    records: &Tree,
    sealing: &Sealing,
    path: &Path,
) -> Result<()> {
    match meta.get(FORMAT_VERSION_KEY).map_err(storage)? {
        Some(bytes) => {
            let found = u32::from_be_bytes(bytes.as_ref().try_into().map_err(|_| {
                Error::corruption(None, "the stored format version is not 4 bytes long")
            })?);
            let key_check = meta.get(KEY_CHECK_KEY).map_err(storage)?;
            sealing.check_stored(found, key_check.as_deref(), path)
        }
        None if records.is_empty() => {
            meta.transaction(|meta| {
                meta.insert(
                    FORMAT_VERSION_KEY,
                    &u32::from(sealing.format_version()).to_be_bytes(),
                )?;
                if let Some(check) = sealing.key_check() {
                    meta.insert(KEY_CHECK_KEY, check.as_slice())?;
                }
                Ok::<_, ConflictableTransactionError<Error>>(())
            })
            .map_err(transaction_error)?;
            db.flush().map_err(storage)?;
            Ok(())
        }
        None => Err(Error::corruption(
            None,
            "the database holds records but no format version; it was not written by tokenstore",
        )),
    }
}

/// Makes the store directory (and its subdirectories) 0700 and every file
/// in it 0600, whatever the umask the storage engine created them under.
#[cfg(unix)]
pub(super) fn secure_permissions(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let fail = |e: std::io::Error, at: &Path| {
        Error::from(std::io::Error::new(
            e.kind(),
            format!("cannot restrict the permissions of {}: {e}", at.display()),
        ))
    };
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(|e| fail(e, &dir))?;
        for entry in fs::read_dir(&dir).map_err(|e| fail(e, &dir))? {
            let entry = entry.map_err(|e| fail(e, &dir))?;
            let path = entry.path();
            let kind = entry.file_type().map_err(|e| fail(e, &path))?;
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_file() {
                let mode = entry
                    .metadata()
                    .map_err(|e| fail(e, &path))?
                    .permissions()
                    .mode();
                if mode & 0o777 != 0o600 {
                    fs::set_permissions(&path, fs::Permissions::from_mode(0o600))
                        .map_err(|e| fail(e, &path))?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(not(unix))]
pub(super) fn secure_permissions(_dir: &Path) -> Result<()> {
    Ok(())
}

/// The seal count of an encrypted store: kept in the metadata since the
/// count moved into the write transaction; a store written before keeps
/// it in sled's id generator, read once here.
pub(super) fn read_sealed(db: &sled::Db, meta: &Tree, sealing: &Sealing) -> Result<u64> {
    if !sealing.counts_seals() {
        return Ok(0);
    }
    match meta.get(SEALED_KEY).map_err(storage)? {
        Some(bytes) => Ok(u64::from_be_bytes(bytes.as_ref().try_into().map_err(
            |_| Error::corruption(None, "the stored seal count is not 8 bytes long"),
        )?)),
        None => db.generate_id().map_err(storage),
    }
}
