//! [`SharedStore`]: one embedded store used by every local process that
//! opens it (docs/SPEC.md §8).
//!
//! The first process to open a store directory owns it: it holds the
//! [`SledStore`] (the lock, the caches, the group commit) and serves it on
//! a Unix socket in the directory (`server`). Every other process of the
//! same user that opens the directory meanwhile is a client (`client`):
//! the same operations, answered by the owner over the socket (`wire`).
//! When the owner goes away, the processes left elect a new one by the
//! only rule that cannot be raced, the store's lock: whoever takes it owns
//! the store and serves it, the others connect to it. A store opened before
//! `fork()` is followed in the child through the owner (`os`).

mod client;
mod os;
mod server;
pub mod wire;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use crate::backend::{Backend, Role, Sharing, StoreInfo};
use crate::check::CheckReport;
use crate::engine::Stage;
use crate::error::{Error, Result};
use crate::key::Key;
use crate::logging::{Secs, LOCK_WAIT_NOTICE, SHARED};
use crate::sled_store::{SledOptions, SledStore};
use crate::store::{RefreshLock, TokenStore};
use crate::token::OAuthToken;
use client::{CallError, Client, ConnectError};
use os::SocketAddress;
use server::{RefreshLocks, Server};
use wire::{Request, RequestRef, Response, WireTokenRef};

/// How long, by default, a client waits for the owner's answer, and for a
/// new owner after the last one went away
/// ([`OpenOptions::owner_timeout`](crate::OpenOptions::owner_timeout)).
pub const DEFAULT_OWNER_TIMEOUT: Duration = Duration::from_secs(10);

/// The part this process plays now, and in which process it was decided.
struct Current {
    role: Part,
    /// [`os::forks`] when the part was taken: a fork's child sees a
    /// greater count and must not touch its parent's part.
    forks: u64,
    /// Held while a replacement for this part is elected.
    electing: Mutex<()>,
}

enum Part {
    Owner(Owner),
    Client(Client),
}

/// The owner's part: the store and its server.
struct Owner {
    server: Option<Server>,
    /// Descriptors of the store's files that forked children close.
    inherited: Vec<i32>,
    forks: u64,
}

impl Owner {
    fn store(&self) -> &SledStore {
        self.server
            .as_ref()
            .expect("an owner serves until dropped")
            .store()
    }

    /// Stops serving and hands back the store (for closing, or for a key
    /// change).
    fn stop(&mut self) -> Option<SledStore> {
        let server = self.server.take()?;
        let store = Arc::clone(server.store());
        server.stop();
        os::forget_in_children(&self.inherited);
        Arc::try_unwrap(store).ok()
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        if os::forks() != self.forks {
            // A fork's child: the store is the parent's; its threads do not
            // exist here, and its files were closed at the fork.
            std::mem::forget(self.server.take());
            return;
        }
        if let Some(store) = self.stop() {
            let _ = store.close();
        }
    }
}

/// An embedded store shared by every local process that opens it: the
/// owner's [`SledStore`] in the process that owns it, a client of that
/// owner in the others, and a take-over when the owner goes away.
///
/// `tokenstore::open(dir)` returns one (behind [`AnyStore`](crate::AnyStore)):
///
/// ```
/// use tokenstore::{OAuthToken, Role, TokenStore};
///
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("tokens");
/// let path = path.to_str().unwrap();
/// let store = tokenstore::open(path)?; // the first to open it: the owner
/// assert_eq!(store.info()?.sharing.map(|s| s.role), Some(Role::Owner));
/// store.save_token(&mut OAuthToken::new().with_user_name("ana").with_refresh_token("1000.r"))?;
/// // Another process opening `path` now is a client of this one, and sees
/// // the same records; when this one closes, one of the others takes over.
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct SharedStore {
    path: PathBuf,
    options: SledOptions,
    timeout: Duration,
    current: ArcSwap<Current>,
    refresh: Arc<RefreshLocks>,
}

impl fmt::Debug for SharedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let current = self.current.load();
        f.debug_struct("SharedStore")
            .field("path", &self.path)
            .field(
                "role",
                &match current.role {
                    Part::Owner(_) => Role::Owner,
                    Part::Client(_) => Role::Client,
                },
            )
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl SharedStore {
    /// Opens the store at `path` (creating it if needed): owns it if no
    /// other process does, else becomes a client of its owner.
    ///
    /// # Errors
    /// The errors of [`SledStore::open_with`] (except `Locked`: a store
    /// owned elsewhere is used through its owner); the owner's refusal (a
    /// wrong or missing key: [`Error::WrongKey`], [`Error::KeyRequired`],
    /// [`Error::NotEncrypted`]; another tokenstore version:
    /// [`Error::Unsupported`]); [`Error::Unsupported`] on a network file
    /// system; [`Error::Unavailable`] if no owner answers within `timeout`.
    pub fn open(path: impl AsRef<Path>, options: SledOptions, timeout: Duration) -> Result<Self> {
        let wait = options.lock_wait().max(timeout);
        Self::open_waiting(path, options, timeout, wait)
    }

    /// [`open`](Self::open), waiting up to `wait` (not `timeout`) for a
    /// process that holds the lock to serve the store.
    pub(crate) fn open_waiting(
        path: impl AsRef<Path>,
        options: SledOptions,
        timeout: Duration,
        wait: Duration,
    ) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if !path.exists() {
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true);
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder.create(&path).map_err(|e| {
                Error::from(std::io::Error::new(
                    e.kind(),
                    format!(
                        "cannot create the token store directory {}: {e}",
                        path.display()
                    ),
                ))
            })?;
        }
        if path.is_dir() {
            os::check_owner(&path)?;
            os::check_shareable(&path)?;
        }
        let refresh = Arc::new(RefreshLocks::default());
        let forks = os::fork_generation();
        let role = elect(&path, &options, timeout, wait, &refresh)?;
        Ok(SharedStore {
            path,
            options,
            timeout,
            current: ArcSwap::from_pointee(Current {
                role,
                forks,
                electing: Mutex::new(()),
            }),
            refresh,
        })
    }

    /// The part this process plays now, the owner's pid and how many
    /// clients it serves (as far as this process knows without asking).
    pub fn sharing(&self) -> Result<Sharing> {
        let current = self.current()?;
        Ok(match &current.role {
            Part::Owner(owner) => Sharing {
                role: Role::Owner,
                owner_pid: std::process::id(),
                clients: owner.server.as_ref().map_or(0, Server::clients),
            },
            Part::Client(client) => Sharing {
                role: Role::Client,
                owner_pid: client.owner_pid(),
                clients: 0,
            },
        })
    }

    /// The directory, as it was named.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The part of this process, after a fork: a child of the process that
    /// took the part leaves it alone (never dropped: it is the parent's) and
    /// elects its own, which finds the parent (or whoever owns the store).
    fn current(&self) -> Result<Arc<Current>> {
        let current = self.current.load_full();
        if current.forks == os::forks() {
            return Ok(current);
        }
        // Never dropped in this process.
        std::mem::forget(Arc::clone(&current));
        let fresh = self.elect_again(os::forks())?;
        let previous = self.current.compare_and_swap(&current, Arc::clone(&fresh));
        if Arc::ptr_eq(&previous, &current) {
            Ok(fresh)
        } else {
            // Another thread of this child got there first.
            drop(fresh);
            Ok(self.current.load_full())
        }
    }

    /// Replaces a client part whose owner went away (unless another thread
    /// already did).
    fn replace(&self, stale: &Arc<Current>) -> Result<()> {
        let _electing = stale.electing.lock();
        if !Arc::ptr_eq(&self.current.load(), stale) {
            return Ok(());
        }
        let started = Instant::now();
        let gone = match &stale.role {
            Part::Client(client) => client.owner_pid(),
            Part::Owner(_) => std::process::id(),
        };
        let elected = self.elect_again(stale.forks);
        let took = Secs(started.elapsed());
        let path = self.path.display();
        match elected.as_ref().map(|current| &current.role) {
            Ok(Part::Owner(_)) => log::info!(
                target: SHARED,
                "the owner (pid {gone}) of the shared store {path} went away; this process \
                 (pid {}) took over in {took}",
                std::process::id()
            ),
            Ok(Part::Client(client)) => log::info!(
                target: SHARED,
                "the owner (pid {gone}) of the shared store {path} went away; pid {} took \
                 over, followed after {took}",
                client.owner_pid()
            ),
            Err(e) => log::warn!(
                target: SHARED,
                "the owner (pid {gone}) of the shared store {path} went away; no new owner \
                 after {took}: {e}"
            ),
        }
        self.current.store(elected?);
        Ok(())
    }

    /// A part elected anew (after a fork, or after the owner went away).
    fn elect_again(&self, forks: u64) -> Result<Arc<Current>> {
        let role = elect(
            &self.path,
            &self.options,
            self.timeout,
            self.timeout,
            &self.refresh,
        )?;
        Ok(Arc::new(Current {
            role,
            forks,
            electing: Mutex::new(()),
        }))
    }

    /// Runs an operation: in the owner directly, in a client through the
    /// owner, following a take-over. A read whose owner went away is run
    /// again by the next owner; a write is only when it never reached the
    /// one that went away (else it is `Unavailable { maybe_committed: true }`).
    fn run<T>(
        &self,
        write: bool,
        what: &str,
        owner: impl Fn(&SledStore) -> Result<T>,
        client: impl Fn(&Client) -> std::result::Result<T, CallError>,
    ) -> Result<T> {
        loop {
            let current = self.current()?;
            let client_part = match &current.role {
                Part::Owner(part) => return owner(part.store()),
                Part::Client(part) => part,
            };
            match client(client_part) {
                Ok(value) => return Ok(value),
                Err(CallError::Lost { sent }) => {
                    let lost = client_part.error(CallError::Lost { sent }, write, what);
                    let replaced = self.replace(&current);
                    if write && sent {
                        // Never sent again: it may have been applied.
                        return Err(lost);
                    }
                    replaced?;
                }
                Err(e) => return Err(client_part.error(e, write, what)),
            }
        }
    }

    fn call<T, R: serde::Serialize>(
        &self,
        write: bool,
        what: &str,
        owner: impl Fn(&SledStore) -> Result<T>,
        request: impl Fn() -> R,
        answer: impl Fn(Response) -> Option<T>,
    ) -> Result<T> {
        self.run(write, what, owner, |client| {
            let response = client.call(&request())?;
            answer(response).ok_or(CallError::Lost { sent: true })
        })
    }
}

/// Takes the part of this process: the owner if the store's lock is free,
/// else a client of whoever holds it, waiting up to `wait` for a holder
/// that does not serve yet (it is opening the store, or just died); a
/// holder that never serves opened the store for itself alone:
/// [`Error::Locked`].
fn elect(
    path: &Path,
    options: &SledOptions,
    timeout: Duration,
    wait: Duration,
    refresh: &Arc<RefreshLocks>,
) -> Result<Part> {
    let started = Instant::now();
    let mut pause = Duration::from_millis(1);
    // A fork's child of a process that ran the engine cannot run it (see
    // `os::engine_inherited`): it only follows an owner.
    let may_own = !os::engine_inherited();
    // Until the last attempt began: the time spent waiting for a holder of
    // the lock to serve (an attempt itself takes a while: it opens sled).
    let mut waited = Duration::ZERO;
    let note_wait = |waited: Duration, level: log::Level, what: &str| {
        if waited > LOCK_WAIT_NOTICE {
            log::log!(
                target: SHARED,
                level,
                "waited {} for the shared store {} (its lock's holder was not serving it yet); {what}",
                Secs(waited),
                path.display()
            );
        }
    };
    loop {
        if may_own {
            match SledStore::open_with(path, options.clone().without_lock_grace()) {
                Ok(store) => {
                    note_wait(waited, log::Level::Info, "this process owns it");
                    log::debug!(
                        target: SHARED,
                        "this process (pid {}) owns the shared store {} and serves it",
                        std::process::id(),
                        path.display()
                    );
                    return serve(path, store, options.encryption_key().cloned(), refresh);
                }
                Err(Error::Locked { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        match Client::connect(
            path,
            SocketAddress::of(path)?,
            options.encryption_key().cloned(),
            timeout,
        ) {
            Ok(client) => {
                note_wait(waited, log::Level::Info, "its owner answered");
                log::debug!(
                    target: SHARED,
                    "this process (pid {}) is a client of the shared store {}, owned by pid {}",
                    std::process::id(),
                    path.display(),
                    client.owner_pid()
                );
                return Ok(Part::Client(client));
            }
            Err(ConnectError::Refused(e)) => return Err(e),
            Err(ConnectError::Unresponsive { pid }) => {
                return Err(Error::Unavailable {
                    what: format!("connecting to the shared token store at {}", path.display()),
                    detail: format!(
                        "its owner (pid {pid}) did not answer within {timeout:?} (is it \
                         stopped, or overloaded?); OpenOptions::owner_timeout sets how long \
                         to wait"
                    ),
                    maybe_committed: false,
                })
            }
            Err(ConnectError::NoOwner) => {}
        }
        if started.elapsed() >= wait {
            note_wait(started.elapsed(), log::Level::Warn, "gave up");
            if !may_own {
                return Err(Error::Unavailable {
                    what: format!("using the shared token store at {}", path.display()),
                    detail: "no process serves it, and this one cannot take it over: it is a \
                             fork's child of a process that owned the store, and the storage \
                             engine's threads do not survive a fork; restart this process (a \
                             process started anew can own the store), or run `tokenstore serve` \
                             beside the app"
                        .into(),
                    maybe_committed: false,
                });
            }
            return Err(Error::Locked {
                path: path.to_path_buf(),
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(25));
        waited = started.elapsed();
    }
}

fn serve(
    path: &Path,
    store: SledStore,
    key: Option<Key>,
    refresh: &Arc<RefreshLocks>,
) -> Result<Part> {
    let forks = os::fork_generation();
    os::engine_started();
    let inherited = os::close_in_children(path);
    let server = Server::start(
        Arc::new(store),
        key,
        SocketAddress::of(path)?,
        Arc::clone(refresh),
    );
    match server {
        Ok(server) => Ok(Part::Owner(Owner {
            server: Some(server),
            inherited,
            forks,
        })),
        Err(e) => {
            os::forget_in_children(&inherited);
            Err(e)
        }
    }
}

fn token_answer(response: Response) -> Option<Option<OAuthToken>> {
    match response {
        Response::Token(token) => Some(token.map(OAuthToken::from)),
        _ => None,
    }
}

fn number(response: Response) -> Option<u64> {
    match response {
        Response::Number(n) => Some(n),
        _ => None,
    }
}

impl TokenStore for SharedStore {
    fn find_token(&self, query: &OAuthToken) -> Result<Option<OAuthToken>> {
        self.call(
            false,
            "finding a token",
            |store| store.find_token(query),
            || RequestRef::Find(WireTokenRef::from(query)),
            token_answer,
        )
    }

    fn save_token(&self, token: &mut OAuthToken) -> Result<()> {
        let saved = self.run(
            true,
            "saving a token",
            |store| {
                let mut saved = token.clone();
                store.save_token(&mut saved)?;
                Ok(saved)
            },
            |client| {
                // The owner's own check, so that a token too large for the
                // socket is refused as the owner refuses it.
                crate::codec::check_encodable(token).map_err(CallError::Failed)?;
                match client.save(token)? {
                    Response::Token(Some(saved)) => Ok(OAuthToken::from(saved)),
                    _ => Err(CallError::Lost { sent: true }),
                }
            },
        )?;
        *token = saved;
        Ok(())
    }

    fn delete_token(&self, id: &str) -> Result<bool> {
        if id.is_empty() {
            return Ok(false);
        }
        self.call(
            true,
            "deleting a token",
            |store| store.delete_token(id),
            || Request::Delete(id.to_owned()),
            |r| match r {
                Response::Bool(b) => Some(b),
                _ => None,
            },
        )
    }

    fn get_tokens(&self) -> Result<Vec<OAuthToken>> {
        self.run(
            false,
            "reading every token",
            TokenStore::get_tokens,
            Client::records,
        )
    }

    fn delete_tokens(&self) -> Result<usize> {
        self.call(
            true,
            "deleting every token",
            TokenStore::delete_tokens,
            || Request::DeleteTokens,
            |r| number(r).map(|n| n as usize),
        )
    }

    fn find_token_by_id(&self, id: &str) -> Result<Option<OAuthToken>> {
        self.call(
            false,
            "finding a token",
            |store| store.find_token_by_id(id),
            || RequestRef::FindById(id),
            token_answer,
        )
    }

    fn refresh_lock(&self, id: &str) -> Result<RefreshLock<'_>> {
        loop {
            let current = self.current()?;
            match &current.role {
                Part::Owner(_) => {
                    let held = self
                        .refresh
                        .acquire(id, &|| true)
                        .expect("waits until the lock is free");
                    return Ok(RefreshLock::held_by(held));
                }
                Part::Client(client) => match client.refresh_lock(id) {
                    Ok(held) => return Ok(RefreshLock::held_by(held)),
                    Err(CallError::Lost { .. }) => self.replace(&current)?,
                    Err(e) => return Err(client.error(e, false, "taking a refresh lock")),
                },
            }
        }
    }
}

impl Backend for SharedStore {
    fn kind(&self) -> &'static str {
        "sled"
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn count(&self) -> Result<usize> {
        self.call(
            false,
            "counting tokens",
            |store| Ok(store.len()),
            || Request::Count,
            |r| number(r).map(|n| n as usize),
        )
    }

    fn last_issued_id(&self) -> Result<u64> {
        self.call(
            false,
            "reading the id counter",
            |store| Ok(store.last_issued_id()),
            || Request::LastIssued,
            number,
        )
    }

    fn check(&self) -> Result<CheckReport> {
        self.run(false, "checking the store", SledStore::check, Client::check)
    }

    fn apply_batch(&self, stage: &mut Stage<'_>) -> Result<()> {
        let current = self.current()?;
        match &current.role {
            Part::Owner(owner) => Backend::apply_batch(owner.store(), stage),
            // A stage runs exactly once: a batch is not retried through
            // the next owner.
            Part::Client(client) => client.batch(stage),
        }
    }

    fn info(&self) -> Result<StoreInfo> {
        let mut info = self.call(
            false,
            "reading the store's information",
            Backend::info,
            || Request::Info,
            |r| match r {
                Response::Info(info) => {
                    let mut out =
                        StoreInfo::new(info.size_bytes, info.format_version, info.encrypted);
                    out.sharing = Some(Sharing {
                        role: Role::Client,
                        owner_pid: info.owner_pid,
                        clients: info.clients as usize,
                    });
                    Some(out)
                }
                _ => None,
            },
        )?;
        // Answered by the engine here: this process owns the store (or took
        // it over during the call).
        if info.sharing.is_none() {
            info.sharing = Some(self.sharing()?);
        }
        Ok(info)
    }

    fn set_encryption(
        &mut self,
        key: Option<Key>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<()> {
        let sharing = self.sharing()?;
        let refuse = |operation: String| Error::Unsupported {
            operation,
            backend: "a shared embedded store",
            instead: format!(
                "stop the other processes using the store (its owner is pid {}), then change \
                 the key",
                sharing.owner_pid
            ),
        };
        if sharing.role == Role::Client {
            return Err(refuse(
                "changing the key of a store another process owns".into(),
            ));
        }
        if sharing.clients > 0 {
            return Err(refuse(format!(
                "changing the key while {} other processes use the store",
                sharing.clients
            )));
        }
        // Stop serving, change the key alone, serve again.
        let current = self.current.load_full();
        let Part::Owner(_) = &current.role else {
            unreachable!("checked above");
        };
        drop(current);
        let placeholder = Arc::new(Current {
            role: Part::Owner(Owner {
                server: None,
                inherited: Vec::new(),
                forks: os::forks(),
            }),
            forks: os::forks(),
            electing: Mutex::new(()),
        });
        let current = self.current.swap(placeholder);
        let Ok(mut current) = Arc::try_unwrap(current) else {
            return Err(refuse("changing the key while the store is in use".into()));
        };
        let Part::Owner(owner) = &mut current.role else {
            unreachable!("checked above");
        };
        let mut store = owner.stop().ok_or_else(|| Error::Panicked {
            what: "stopping the store's server for a key change".into(),
        })?;
        let changed = store.set_encryption_with_progress(key.clone(), progress);
        if changed.is_ok() {
            self.options = match key {
                Some(key) => self.options.clone().encryption(key),
                None => self.options.clone().without_encryption(),
            };
        }
        let role = serve(
            &self.path,
            store,
            self.options.encryption_key().cloned(),
            &self.refresh,
        )?;
        self.current.store(Arc::new(Current {
            role,
            forks: os::forks(),
            electing: Mutex::new(()),
        }));
        changed
    }
}

impl Drop for SharedStore {
    fn drop(&mut self) {
        let current = self.current.load_full();
        if current.forks != os::forks() {
            // A fork's child: the part is the parent's.
            std::mem::forget(current);
        }
    }
}
