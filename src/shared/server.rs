//! The owner's side: the store served on its socket to the other local
//! processes (docs/SPEC.md §8). One thread accepts; each connection has a
//! thread of its own that reads a request, runs it on the owner's
//! [`SledStore`] and writes the answer, until the client hands it to the
//! save loop (`server_saves.rs`): the connections clients save on are read
//! by one thread, and their saves join the owner's write combining and
//! group commit.

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::os::{self, SocketAddress};
use super::wire::{
    self, BatchOp, FrameError, Greeting, Hello, Request, Response, ResponseRef, WireCheck,
    WireError, WireInfo, WireToken, WireTokenRef, CHUNK_BYTES,
};
use crate::backend::Backend;
use crate::batch::Batch;
use crate::engine::{Engine, Replay};
use crate::error::{Error, Result};
use crate::key::Key;
use crate::sled_store::{Found, SledStore};
use crate::store::TokenStore;
use crate::token::OAuthToken;

#[path = "server_saves.rs"]
mod saves;
use saves::SaveLoop;

/// How long a client may take to say hello, and to send the next message
/// of a batch while the owner holds every writer off for it.
const CLIENT_PATIENCE: Duration = Duration::from_secs(30);

/// A connection thread's stack: requests need little, and 64 idle clients
/// should cost the owner little.
const CONNECTION_STACK: usize = 256 << 10;

/// The refresh locks of a shared store's records, held by the owner for
/// itself and for its clients.
#[derive(Default)]
pub struct RefreshLocks {
    held: Mutex<HashSet<String>>,
    freed: Condvar,
}

/// A held refresh lock (released when dropped).
pub struct HeldRefresh {
    locks: Arc<RefreshLocks>,
    id: String,
}

impl Drop for HeldRefresh {
    fn drop(&mut self) {
        self.locks.held.lock().remove(&self.id);
        self.locks.freed.notify_all();
    }
}

impl RefreshLocks {
    /// Waits for the lock of record `id` while `go_on` holds; `None` when
    /// it stopped holding.
    pub fn acquire(self: &Arc<Self>, id: &str, go_on: &dyn Fn() -> bool) -> Option<HeldRefresh> {
        let mut held = self.held.lock();
        while held.contains(id) {
            if !go_on() {
                return None;
            }
            self.freed.wait_for(&mut held, Duration::from_millis(100));
        }
        held.insert(id.to_owned());
        Some(HeldRefresh {
            locks: Arc::clone(self),
            id: id.to_owned(),
        })
    }
}

/// What the accepting thread and every connection thread share.
struct State {
    store: Arc<SledStore>,
    key: Option<Key>,
    refresh: Arc<RefreshLocks>,
    stop: AtomicBool,
    /// A clone of every open connection, to shut it down at close; and the
    /// client's process id once it said hello.
    connections: Mutex<HashMap<u64, (UnixStream, Option<u32>)>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    next: AtomicU64,
    uid: u32,
    /// The loop that serves the connections clients save on, once one
    /// asked for it.
    saves: Mutex<Option<SaveLoop>>,
    /// Set once the close shut the reading side of every connection: the
    /// save loop reads what is left, answers it, and returns.
    reads_shut: AtomicBool,
}

/// A store being served.
pub struct Server {
    state: Arc<State>,
    address: SocketAddress,
    /// The listening socket's descriptor (owned by the accepting thread).
    listener: RawFd,
    /// Whether forked children close it (see `os::close_fd_in_children`).
    listener_registered: bool,
    accepting: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds the socket of the store and serves `store` on it. The caller
    /// holds the store's lock, so a socket file already there is stale (its
    /// owner is gone) and is replaced.
    pub fn start(
        store: Arc<SledStore>,
        key: Option<Key>,
        address: SocketAddress,
        refresh: Arc<RefreshLocks>,
    ) -> Result<Server> {
        match std::fs::remove_file(&address.file) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(socket_error(&address, "remove the stale socket", e)),
        }
        let listener = UnixListener::bind(&address.address)
            .map_err(|e| socket_error(&address, "bind the socket", e))?;
        std::fs::set_permissions(&address.file, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| socket_error(&address, "restrict the socket to its owner", e))?;
        let state = Arc::new(State {
            store,
            key,
            refresh,
            stop: AtomicBool::new(false),
            connections: Mutex::new(HashMap::new()),
            threads: Mutex::new(Vec::new()),
            next: AtomicU64::new(0),
            uid: os::my_uid(),
            saves: Mutex::new(None),
            reads_shut: AtomicBool::new(false),
        });
        let listener_fd = listener.as_raw_fd();
        // A forked child must not keep the socket listening after this
        // process dies: connections would queue where nobody accepts.
        let listener_registered = os::close_fd_in_children(listener_fd);
        let accepting = {
            let state = Arc::clone(&state);
            std::thread::Builder::new()
                .name("tokenstore-owner".into())
                .spawn(move || accept_loop(&state, &listener))
                .map_err(Error::from)?
        };
        Ok(Server {
            state,
            address,
            listener: listener_fd,
            listener_registered,
            accepting: Some(accepting),
        })
    }

    /// The store served.
    pub fn store(&self) -> &Arc<SledStore> {
        &self.state.store
    }

    /// How many client processes are connected.
    pub fn clients(&self) -> usize {
        distinct_clients(&self.state)
    }

    /// Stops serving: no new connection is accepted, the socket file is
    /// removed, every connection finishes the request it is running and is
    /// closed. Returns once no thread of the server runs.
    pub fn stop(mut self) {
        self.shut_down();
    }

    fn shut_down(&mut self) {
        let Some(accepting) = self.accepting.take() else {
            return;
        };
        self.state.stop.store(true, Ordering::SeqCst);
        // Wake the accepting thread (it sees `stop` and returns): a
        // listening socket shut down fails its `accept` at once, even when
        // the socket file is gone (the directory removed under the store).
        // SAFETY: the descriptor stays open until the accepting thread,
        // joined below, returns; shutdown does not close it.
        unsafe {
            libc::shutdown(self.listener, libc::SHUT_RDWR);
        }
        // Later clients find no socket, and take over once the lock is
        // released.
        let _ = std::fs::remove_file(&self.address.file);
        if self.listener_registered {
            os::forget_in_children(&[self.listener]);
        }
        let _ = accepting.join();
        for (stream, _) in self.state.connections.lock().values() {
            let _ = stream.shutdown(Shutdown::Read);
        }
        {
            // Under the loop's lock: a connection is handed to the loop (or
            // the loop started) only before this, and the loop's last pass
            // then finds it.
            let saves = self.state.saves.lock();
            self.state.reads_shut.store(true, Ordering::SeqCst);
            if let Some(saves) = &*saves {
                saves.wake();
            }
        }
        let threads = std::mem::take(&mut *self.state.threads.lock());
        for thread in threads {
            let _ = thread.join();
        }
        // No connection thread is left to hand one over: the loop's last.
        let saves = self.state.saves.lock().take();
        if let Some(saves) = saves {
            saves.stop();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shut_down();
    }
}

fn accept_loop(state: &Arc<State>, listener: &UnixListener) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                if state.stop.load(Ordering::SeqCst) {
                    return;
                }
                spawn_connection(state, stream);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                if state.stop.load(Ordering::SeqCst) {
                    return;
                }
                // Out of descriptors or memory: try again shortly.
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// The most connections an owner serves at once (a thread each); more are
/// refused with a message, so that a runaway client cannot exhaust the
/// owner.
const MAX_CONNECTIONS: usize = 1024;

fn spawn_connection(state: &Arc<State>, mut stream: UnixStream) {
    if state.connections.lock().len() >= MAX_CONNECTIONS {
        let mut frame = Vec::new();
        let refused = Greeting::Refused {
            reason: format!(
                "the owner already serves {MAX_CONNECTIONS} connections, the most it serves"
            ),
        };
        wire::encode(true, &refused, &mut frame);
        let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
        let _ = wire::write_frame(&mut stream, &frame);
        return;
    }
    let n = state.next.fetch_add(1, Ordering::Relaxed);
    let Ok(clone) = stream.try_clone() else {
        return;
    };
    state.connections.lock().insert(n, (clone, None));
    let thread_state = Arc::clone(state);
    let spawned = std::thread::Builder::new()
        .name("tokenstore-client".into())
        .stack_size(CONNECTION_STACK)
        .spawn(move || {
            let mut connection = Connection {
                state: &thread_state,
                n,
                stream,
                reader: wire::FrameReader::default(),
                out: Vec::new(),
                refresh: None,
                handed: false,
            };
            connection.serve();
            let handed = connection.handed;
            drop(connection);
            if !handed {
                thread_state.connections.lock().remove(&n);
            }
        });
    match spawned {
        Ok(handle) => {
            let mut threads = state.threads.lock();
            threads.retain(|t| !t.is_finished());
            threads.push(handle);
        }
        Err(_) => {
            state.connections.lock().remove(&n);
        }
    }
}

fn distinct_clients(state: &State) -> usize {
    state
        .connections
        .lock()
        .values()
        .filter_map(|(_, pid)| *pid)
        .collect::<HashSet<_>>()
        .len()
}

/// One client's connection, on its own thread.
struct Connection<'s> {
    state: &'s Arc<State>,
    n: u64,
    stream: UnixStream,
    reader: wire::FrameReader,
    out: Vec<u8>,
    /// The refresh lock this client holds, if any.
    refresh: Option<HeldRefresh>,
    /// The connection went to the save loop (`Request::SavesOnly`).
    handed: bool,
}

impl Connection<'_> {
    fn serve(&mut self) {
        if self.handshake().is_err() {
            return;
        }
        loop {
            self.reader.shrink();
            if self.reader.read(&mut self.stream).is_err() {
                if self.state.stop.load(Ordering::SeqCst) {
                    // Shut down for the close: a request that arrived
                    // meanwhile was not run, and the client learns so.
                    let _ = self.send(&Response::Closing);
                }
                return;
            }
            let request: Request = match wire::decode(false, self.reader.payload()) {
                Ok(request) => request,
                // Garbage: this client is disconnected; nothing reached the
                // store.
                Err(_) => return,
            };
            if self.handle(request).is_err() || self.handed {
                return;
            }
        }
    }

    fn handshake(&mut self) -> io::Result<()> {
        let peer = os::peer(&self.stream)?;
        if peer.uid != self.state.uid {
            let refused = Greeting::Refused {
                reason: format!(
                    "the store is served by a process of uid {}, and only processes of that \
                     user may use it (this one runs as uid {})",
                    self.state.uid, peer.uid
                ),
            };
            self.send_first(&refused)?;
            return Err(io::ErrorKind::PermissionDenied.into());
        }
        let challenge = os::random::<32>().map_err(|e| io::Error::other(e.to_string()))?;
        self.send_first(&Greeting::Welcome {
            pid: std::process::id(),
            challenge,
        })?;
        self.stream.set_read_timeout(Some(CLIENT_PATIENCE))?;
        self.reader.read(&mut self.stream).map_err(frame_io)?;
        let hello: Hello = match wire::decode(true, self.reader.payload()) {
            Ok(hello) => hello,
            Err(e @ FrameError::Version(_)) => {
                // Told in a first frame, the layout every version reads.
                let refused = Greeting::Refused {
                    reason: e.to_string(),
                };
                self.send_first(&refused)?;
                return Err(io::ErrorKind::InvalidData.into());
            }
            Err(_) => return Err(io::ErrorKind::InvalidData.into()),
        };
        self.stream.set_read_timeout(None)?;
        let verdict = match (&self.state.key, hello.proof) {
            (None, None) => Ok(()),
            (None, Some(_)) => Err(WireError::NotEncrypted),
            (Some(_), None) => Err(WireError::KeyRequired),
            (Some(key), Some(proof)) => {
                let expected = blake3::Hash::from(key.proof(&challenge));
                // Hash equality is constant-time.
                if expected == blake3::Hash::from(proof) {
                    Ok(())
                } else {
                    Err(WireError::WrongKey)
                }
            }
        };
        match verdict {
            Ok(()) => {
                if let Some(entry) = self.state.connections.lock().get_mut(&self.n) {
                    entry.1 = Some(hello.pid);
                }
                self.send(&Response::Ready)
            }
            Err(refusal) => {
                self.send(&Response::Failed(refusal))?;
                Err(io::ErrorKind::PermissionDenied.into())
            }
        }
    }

    fn send_first<T: serde::Serialize>(&mut self, message: &T) -> io::Result<()> {
        wire::encode(true, message, &mut self.out);
        wire::write_frame(&mut self.stream, &self.out)
    }

    fn send(&mut self, response: &Response) -> io::Result<()> {
        wire::encode(false, response, &mut self.out);
        let sent = wire::write_frame(&mut self.stream, &self.out);
        wire::trim_output(&mut self.out);
        sent
    }

    /// A token answer, encoded from the record without copying it.
    fn answer_token(&mut self, result: Result<Option<OAuthToken>>) -> io::Result<()> {
        encode_token_answer(
            result.as_ref().map(|t| t.as_ref().map(WireTokenRef::from)),
            &mut self.out,
        );
        self.send_out()
    }

    fn answer_found(&mut self, result: Result<Option<Found>>) -> io::Result<()> {
        let fields = result.as_ref().map(|f| f.as_ref().map(Found::fields));
        encode_token_answer(
            fields.map(|f| f.map(|(text, expiry)| WireTokenRef::from_fields(text, expiry))),
            &mut self.out,
        );
        self.send_out()
    }

    fn send_out(&mut self) -> io::Result<()> {
        let sent = wire::write_frame(&mut self.stream, &self.out);
        wire::trim_output(&mut self.out);
        sent
    }

    fn answer<T>(&mut self, result: Result<T>, ok: impl FnOnce(T) -> Response) -> io::Result<()> {
        let response = match result {
            Ok(value) => ok(value),
            Err(e) => Response::Failed(WireError::from_error(&e)),
        };
        self.send(&response)
    }

    fn handle(&mut self, request: Request) -> io::Result<()> {
        let store = Arc::clone(&self.state.store);
        match request {
            // A found record is encoded as the record cache holds it.
            Request::Find(query) => {
                let found = store.find_found(&OAuthToken::from(query));
                self.answer_found(found)
            }
            Request::FindById(id) => {
                let found = store.find_found_by_id(&id);
                self.answer_found(found)
            }
            Request::Save(token) => {
                let mut token = OAuthToken::from(token);
                let saved = store.save_token(&mut token).map(|()| Some(token));
                self.answer_token(saved)
            }
            Request::Delete(id) => {
                let deleted = store.delete_token(&id);
                self.answer(deleted, Response::Bool)
            }
            Request::DeleteTokens => {
                let n = store.delete_tokens();
                self.answer(n, |n| Response::Number(n as u64))
            }
            Request::GetTokens => self.send_records(&store),
            Request::Count => self.answer(Ok(store.len()), |n| Response::Number(n as u64)),
            Request::LastIssued => self.answer(Ok(store.last_issued_id()), Response::Number),
            Request::Check => {
                let report = SledStore::check(&store);
                self.answer(report, |r| Response::Check(WireCheck::from(&r)))
            }
            Request::Info => {
                let info = Backend::info(&*store);
                let clients = distinct_clients(self.state) as u64;
                self.answer(info, |info| {
                    Response::Info(WireInfo {
                        size_bytes: info.size_bytes,
                        format_version: info.format_version,
                        encrypted: info.encrypted,
                        owner_pid: std::process::id(),
                        clients,
                    })
                })
            }
            Request::RefreshLock(id) => {
                self.refresh = None;
                let state = Arc::clone(self.state);
                let go_on = || !state.stop.load(Ordering::SeqCst);
                match self.state.refresh.acquire(&id, &go_on) {
                    Some(held) => {
                        self.refresh = Some(held);
                        self.send(&Response::Done)
                    }
                    None => Err(io::ErrorKind::Interrupted.into()),
                }
            }
            Request::RefreshUnlock => {
                self.refresh = None;
                self.send(&Response::Done)
            }
            Request::BatchBegin => self.batch(&store),
            Request::SavesOnly => self.hand_to_save_loop(),
            // A batch's messages outside a batch: a confused client.
            Request::ViewRecord(_)
            | Request::ViewContains(_)
            | Request::ViewRecordWith(..)
            | Request::BatchCommit(_)
            | Request::BatchAbort => Err(io::ErrorKind::InvalidData.into()),
        }
    }

    /// `SavesOnly`: answered here, then the connection is the save loop's
    /// (started for the first one).
    fn hand_to_save_loop(&mut self) -> io::Result<()> {
        self.refresh = None;
        let stream = self.stream.try_clone()?;
        let mut saves = self.state.saves.lock();
        if self.state.reads_shut.load(Ordering::SeqCst) {
            // Closing: the client asks the next owner.
            self.send(&Response::Closing)?;
            return Err(io::ErrorKind::Interrupted.into());
        }
        self.send(&Response::Done)?;
        if saves.is_none() {
            *saves = Some(SaveLoop::start(self.state)?);
        }
        let save_loop = saves.as_ref().expect("started above");
        save_loop.hand(self.n, stream, std::mem::take(&mut self.reader))?;
        self.handed = true;
        Ok(())
    }

    fn send_records(&mut self, store: &SledStore) -> io::Result<()> {
        let records = match store.get_tokens() {
            Ok(records) => records,
            Err(e) => return self.send(&Response::Failed(WireError::from_error(&e))),
        };
        if records.is_empty() {
            return self.send(&Response::Records {
                chunk: Vec::new(),
                more: false,
            });
        }
        let mut chunk = Vec::new();
        let mut bytes = 0;
        let mut records = records.into_iter().peekable();
        while let Some(record) = records.next() {
            bytes += approximate_size(&record);
            chunk.push(WireToken::from(record));
            let more = records.peek().is_some();
            if bytes >= CHUNK_BYTES || !more {
                self.send(&Response::Records {
                    chunk: std::mem::take(&mut chunk),
                    more,
                })?;
                bytes = 0;
            }
        }
        Ok(())
    }

    /// A client's batch: every other writer waits while the client's stage
    /// reads (answered here from the committed state) and stages; its
    /// staged operations are then replayed here, by the owner's own rules,
    /// and applied as one write set. A client that goes silent for
    /// [`CLIENT_PATIENCE`] or disconnects ends the batch with nothing
    /// written.
    fn batch(&mut self, store: &SledStore) -> io::Result<()> {
        let mut link_lost = false;
        let stream = &mut self.stream;
        let reader = &mut self.reader;
        let out = &mut self.out;
        let outcome = Engine::write(store, Replay::Never, &mut |view, last_issued| {
            let mut lost = |e: io::Error| {
                link_lost = true;
                Error::from(e)
            };
            wire::encode(false, &Response::BatchStarted { last_issued }, out);
            wire::write_frame(stream, out).map_err(&mut lost)?;
            stream
                .set_read_timeout(Some(CLIENT_PATIENCE))
                .map_err(&mut lost)?;
            loop {
                reader.read(stream).map_err(|e| lost(frame_io(e)))?;
                let request: Request = wire::decode(false, reader.payload())
                    .map_err(|e| lost(io::Error::new(io::ErrorKind::InvalidData, e.to_string())))?;
                let response = match request {
                    Request::ViewRecord(id) => view_answer(view.record(&id), |t| {
                        Response::Token(t.map(WireToken::from))
                    }),
                    Request::ViewContains(id) => view_answer(view.contains(&id), Response::Bool),
                    Request::ViewRecordWith(field, value) => match field.field() {
                        Some(field) => view_answer(view.record_with(field, &value), |t| {
                            Response::Token(t.map(WireToken::from))
                        }),
                        None => return Err(lost(io::ErrorKind::InvalidData.into())),
                    },
                    Request::BatchCommit(ops) => {
                        let mut batch = Batch::new(view, last_issued);
                        replay(&mut batch, ops)?;
                        return Ok(((), batch.finish()));
                    }
                    Request::BatchAbort => return Ok(((), None)),
                    _ => return Err(lost(io::ErrorKind::InvalidData.into())),
                };
                wire::encode(false, &response, out);
                wire::write_frame(stream, out).map_err(&mut lost)?;
            }
        });
        if link_lost {
            // The client is gone, silent or confused: nothing was written.
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        self.stream.set_read_timeout(None)?;
        self.answer(outcome, |()| Response::Done)
    }
}

/// Encodes the answer to a lookup or a save into `out`: the record
/// (borrowed, not copied), or the error.
fn encode_token_answer(
    result: std::result::Result<Option<WireTokenRef<'_>>, &Error>,
    out: &mut Vec<u8>,
) {
    match result {
        Ok(token) => wire::encode(false, &ResponseRef::Token(token), out),
        Err(e) => wire::encode(false, &Response::Failed(WireError::from_error(e)), out),
    }
}

fn view_answer<T>(result: Result<T>, ok: impl FnOnce(T) -> Response) -> Response {
    match result {
        Ok(value) => ok(value),
        Err(e) => Response::Failed(WireError::from_error(&e)),
    }
}

/// Replays a client's staged batch operations. Each succeeded in the
/// client over the same committed state and counter, so each succeeds here
/// the same way; one that does not is an error and nothing is written.
fn replay(batch: &mut Batch<'_>, ops: Vec<BatchOp>) -> Result<()> {
    for op in ops {
        match op {
            BatchOp::Save(token) => {
                let mut token = OAuthToken::from(*token);
                batch.save_token(&mut token)?;
            }
            BatchOp::Delete(id) => {
                batch.delete_token(&id)?;
            }
            BatchOp::SkipIdsThrough(n) => batch.skip_ids_through(n),
        }
    }
    Ok(())
}

fn approximate_size(token: &OAuthToken) -> usize {
    crate::token::Field::ALL
        .iter()
        .map(|f| f.text(token).map_or(1, |t| t.len() + 2))
        .sum()
}

fn frame_io(e: FrameError) -> io::Error {
    match e {
        FrameError::Io(io) => io,
        other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
    }
}

fn socket_error(address: &SocketAddress, what: &str, e: io::Error) -> Error {
    Error::from(io::Error::new(
        e.kind(),
        format!("cannot {what} {}: {e}", address.file.display()),
    ))
}
