//! A client's side: connections to the owner of a shared store, each used
//! by one call at a time, with the owner watched while an answer is awaited
//! (a killed owner is noticed within [`POLL`], a stopped one after the
//! client's time-out).

use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::os::{self, SocketAddress};
use super::wire::{
    self, BatchOp, FrameError, Greeting, Hello, Request, RequestRef, Response, WireToken,
    WireTokenRef,
};
use crate::batch::{Batch, Staged};
use crate::check::CheckReport;
use crate::engine::Stage;
use crate::error::{Error, Result};
use crate::key::Key;
use crate::plan::StoreView;
use crate::token::{IndexedField, OAuthToken};

/// How often a client waiting for an answer checks that the owner lives.
pub const POLL: Duration = Duration::from_millis(100);

/// Idle connections a client keeps for its next calls.
const IDLE_CONNECTIONS: usize = 8;

/// How long a refresh lock may be waited for (another process refreshing
/// that record holds it for one exchange with the accounts server).
const REFRESH_LOCK_PATIENCE: Duration = Duration::from_secs(300);

/// Why a call through the owner did not get its answer.
#[derive(Debug)]
pub enum CallError {
    /// The owner went away (or is going): `sent` if the request may have
    /// reached it.
    Lost { sent: bool },
    /// The owner lives but did not answer in time.
    TimedOut { sent: bool },
    /// The owner answered with an error (or refused this client).
    Failed(Error),
}

/// Why connecting to the owner failed.
pub enum ConnectError {
    /// Nobody serves the store now (no socket, a stale one, an owner that
    /// died or is closing): take over, or wait for whoever does.
    NoOwner,
    /// An owner serves it and refused this process (another user, another
    /// protocol version, a wrong or missing key): the error to report.
    Refused(Error),
    /// The owner lives but did not answer in time (stopped, overloaded).
    Unresponsive { pid: u32 },
}

/// One connection to the owner.
struct Conn {
    stream: UnixStream,
    owner_pid: u32,
    reader: wire::FrameReader,
    out: Vec<u8>,
}

/// The client of an owner.
pub struct Client {
    path: PathBuf,
    address: SocketAddress,
    key: Option<Key>,
    timeout: Duration,
    owner_pid: u32,
    idle: Mutex<Vec<Conn>>,
    /// Idle connections that carry only saves (served by the owner's save
    /// loop).
    savers: Mutex<Vec<Conn>>,
}

impl Client {
    /// Connects to the owner of the store at `path`, if one serves it.
    pub fn connect(
        path: &Path,
        address: SocketAddress,
        key: Option<Key>,
        timeout: Duration,
    ) -> std::result::Result<Client, ConnectError> {
        let conn = Conn::open(path, &address, key.as_ref(), timeout)?;
        let owner_pid = conn.owner_pid;
        Ok(Client {
            path: path.to_path_buf(),
            address,
            key,
            timeout,
            owner_pid,
            idle: Mutex::new(vec![conn]),
            savers: Mutex::new(Vec::new()),
        })
    }

    /// The owner's process id.
    pub fn owner_pid(&self) -> u32 {
        self.owner_pid
    }

    fn take(&self) -> std::result::Result<Conn, CallError> {
        if let Some(conn) = self.idle.lock().pop() {
            return Ok(conn);
        }
        match Conn::open(&self.path, &self.address, self.key.as_ref(), self.timeout) {
            Ok(conn) if conn.owner_pid == self.owner_pid => Ok(conn),
            // Another owner already: this client is for the one before.
            Ok(_) | Err(ConnectError::NoOwner) => Err(CallError::Lost { sent: false }),
            Err(ConnectError::Refused(e)) => Err(CallError::Failed(e)),
            Err(ConnectError::Unresponsive { .. }) => Err(CallError::TimedOut { sent: false }),
        }
    }

    fn give_back(&self, conn: Conn) {
        keep(&self.idle, conn);
    }

    /// One request, one answer.
    pub fn call<R: serde::Serialize>(
        &self,
        request: &R,
    ) -> std::result::Result<Response, CallError> {
        let mut conn = self.take()?;
        let response = conn.call(request, self.timeout)?;
        self.give_back(conn);
        self.failed(response)
    }

    /// A save, on a connection that carries only saves: the owner reads
    /// those of every client with one thread, so that saves arriving
    /// together are read in one wake-up (`server_saves.rs`). The first save
    /// asks for one; it is kept for the next.
    pub fn save(&self, token: &OAuthToken) -> std::result::Result<Response, CallError> {
        let saver = self.savers.lock().pop();
        let mut conn = match saver {
            Some(conn) => conn,
            None => {
                let mut conn = self.take()?;
                // Nothing is written by this request: losing its answer
                // leaves the save unsent.
                let unsent = |e| match e {
                    CallError::Lost { .. } => CallError::Lost { sent: false },
                    CallError::TimedOut { .. } => CallError::TimedOut { sent: false },
                    failed => failed,
                };
                match self.failed(
                    conn.call(&Request::SavesOnly, self.timeout)
                        .map_err(unsent)?,
                )? {
                    Response::Done => conn,
                    _ => return Err(CallError::Lost { sent: false }),
                }
            }
        };
        let response = conn.call(&RequestRef::Save(WireTokenRef::from(token)), self.timeout)?;
        keep(&self.savers, conn);
        self.failed(response)
    }

    fn failed(&self, response: Response) -> std::result::Result<Response, CallError> {
        match response {
            Response::Failed(e) => Err(CallError::Failed(e.into_error(&self.path))),
            other => Ok(other),
        }
    }

    /// Every record (answered in chunks).
    pub fn records(&self) -> std::result::Result<Vec<OAuthToken>, CallError> {
        let mut conn = self.take()?;
        conn.send(&Request::GetTokens)?;
        let mut records = Vec::new();
        loop {
            match self.failed(conn.receive(self.timeout, true)?)? {
                Response::Records { chunk, more } => {
                    records.extend(chunk.into_iter().map(OAuthToken::from));
                    if !more {
                        break;
                    }
                }
                _ => return Err(CallError::Lost { sent: true }),
            }
        }
        self.give_back(conn);
        Ok(records)
    }

    /// The check report.
    pub fn check(&self) -> std::result::Result<CheckReport, CallError> {
        match self.call(&Request::Check)? {
            Response::Check(report) => Ok(report.into_report()),
            _ => Err(CallError::Lost { sent: true }),
        }
    }

    /// Takes the refresh lock of record `id` in the owner; it is held until
    /// the returned connection is dropped (or given back unlocked).
    pub fn refresh_lock(&self, id: &str) -> std::result::Result<HeldRemotely, CallError> {
        let mut conn = self.take()?;
        let timeout = self.timeout.max(REFRESH_LOCK_PATIENCE);
        match self.failed(conn.call(&Request::RefreshLock(id.to_owned()), timeout)?)? {
            Response::Done => Ok(HeldRemotely { conn: Some(conn) }),
            _ => Err(CallError::Lost { sent: true }),
        }
    }

    /// A batch: `stage` runs here, over reads answered by the owner while it
    /// excludes every other writer; the operations it staged are replayed
    /// and applied by the owner. `stage` runs once whatever happens, so a
    /// lost owner is an error here, never a retry.
    pub fn batch(&self, stage: &mut Stage<'_>) -> Result<()> {
        // One request on the batch's own connection; `write` when it may
        // commit (then a lost answer may have committed).
        let ask = |conn: &mut Conn, request: &Request, write: bool, what: &str| {
            conn.call(request, self.timeout)
                .and_then(|answer| self.failed(answer))
                .map_err(|e| self.error(e, write, what))
        };
        let out_of_turn = |write: bool| {
            self.error(
                CallError::Lost { sent: true },
                write,
                "applying a batch (the owner answered out of turn)",
            )
        };
        let mut conn = self
            .take()
            .map_err(|e| self.error(e, false, "starting a batch"))?;
        let last_issued = match ask(&mut conn, &Request::BatchBegin, false, "starting a batch")? {
            Response::BatchStarted { last_issued } => last_issued,
            _ => return Err(out_of_turn(false)),
        };
        let view = RemoteView {
            conn: Mutex::new(conn),
            broken: Mutex::new(false),
            timeout: self.timeout,
            path: &self.path,
        };
        let mut batch = Batch::journaled(&view, last_issued);
        let staged = stage(&mut batch);
        let journal = batch.into_journal();
        let mut conn = view.conn.into_inner();
        if *view.broken.lock() {
            // The owner aborts a batch whose connection broke: nothing
            // was written.
            return Err(self.error(CallError::Lost { sent: true }, false, "reading for a batch"));
        }
        let request = match (&staged, journal) {
            (Ok(()), Some(ops)) => Request::BatchCommit(ops.into_iter().map(wire_op).collect()),
            _ => Request::BatchAbort,
        };
        let committing = matches!(request, Request::BatchCommit(_));
        match ask(&mut conn, &request, committing, "applying a batch")? {
            Response::Done => {
                self.give_back(conn);
                staged
            }
            _ => Err(out_of_turn(committing)),
        }
    }

    /// A call's failure as the caller sees it.
    pub fn error(&self, e: CallError, write: bool, what: &str) -> Error {
        match e {
            CallError::Failed(e) => e,
            CallError::Lost { sent } => Error::Unavailable {
                what: format!(
                    "{what} through the owner of the store at {}",
                    self.path.display()
                ),
                detail: format!("the owner (pid {}) went away", self.owner_pid),
                maybe_committed: write && sent,
            },
            CallError::TimedOut { sent } => Error::Unavailable {
                what: format!(
                    "{what} through the owner of the store at {}",
                    self.path.display()
                ),
                detail: format!(
                    "the owner (pid {}) did not answer within {:?} (is it stopped, or \
                     overloaded?); OpenOptions::owner_timeout sets how long to wait",
                    self.owner_pid, self.timeout
                ),
                maybe_committed: write && sent,
            },
        }
    }
}

/// Keeps `conn` in `pool` for a later call, unless the pool holds
/// [`IDLE_CONNECTIONS`] already.
fn keep(pool: &Mutex<Vec<Conn>>, conn: Conn) {
    let mut idle = pool.lock();
    if idle.len() < IDLE_CONNECTIONS {
        idle.push(conn);
    }
}

fn wire_op(op: Staged) -> BatchOp {
    match op {
        Staged::Save(token) => BatchOp::Save(Box::new(WireToken::from(*token))),
        Staged::Delete(id) => BatchOp::Delete(id),
        Staged::SkipIdsThrough(n) => BatchOp::SkipIdsThrough(n),
    }
}

/// A refresh lock the owner holds for this process, over a connection of
/// its own; dropping it closes that connection, which releases the lock.
pub struct HeldRemotely {
    conn: Option<Conn>,
}

impl Drop for HeldRemotely {
    fn drop(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            let _ = conn.send(&Request::RefreshUnlock);
        }
    }
}

/// The reads of a client's batch, answered by the owner.
struct RemoteView<'p> {
    conn: Mutex<Conn>,
    broken: Mutex<bool>,
    timeout: Duration,
    path: &'p Path,
}

impl RemoteView<'_> {
    fn ask(&self, request: &Request) -> Result<Response> {
        let unavailable = || Error::Unavailable {
            what: "reading for a batch through the owner of the store".into(),
            detail: "the owner went away or did not answer".into(),
            maybe_committed: false,
        };
        if *self.broken.lock() {
            return Err(unavailable());
        }
        match self.conn.lock().call(request, self.timeout) {
            Ok(Response::Failed(e)) => Err(e.into_error(self.path)),
            Ok(response) => Ok(response),
            Err(_) => {
                *self.broken.lock() = true;
                Err(unavailable())
            }
        }
    }

    fn token(&self, request: &Request) -> Result<Option<OAuthToken>> {
        match self.ask(request)? {
            Response::Token(token) => Ok(token.map(OAuthToken::from)),
            _ => Err(Error::corruption(
                None,
                "the owner answered a read out of turn",
            )),
        }
    }
}

impl StoreView for RemoteView<'_> {
    fn record(&self, id: &str) -> Result<Option<OAuthToken>> {
        self.token(&Request::ViewRecord(id.to_owned()))
    }
    fn contains(&self, id: &str) -> Result<bool> {
        match self.ask(&Request::ViewContains(id.to_owned()))? {
            Response::Bool(b) => Ok(b),
            _ => Err(Error::corruption(
                None,
                "the owner answered a read out of turn",
            )),
        }
    }
    fn record_with(&self, field: IndexedField, value: &str) -> Result<Option<OAuthToken>> {
        self.token(&Request::ViewRecordWith(field.into(), value.to_owned()))
    }
}

impl Conn {
    fn open(
        path: &Path,
        address: &SocketAddress,
        key: Option<&Key>,
        timeout: Duration,
    ) -> std::result::Result<Conn, ConnectError> {
        let stream = match UnixStream::connect(&address.address) {
            Ok(stream) => stream,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                return Err(ConnectError::Refused(Error::from(io::Error::new(
                    e.kind(),
                    format!(
                        "cannot reach the socket of the token store at {}: {e}; only the \
                         user that owns the store may use it",
                        path.display()
                    ),
                ))))
            }
            Err(_) => return Err(ConnectError::NoOwner),
        };
        let peer = os::peer(&stream).map_err(|_| ConnectError::NoOwner)?;
        if !os::alive(peer.pid) {
            // A listener a dead owner left in a forked child.
            return Err(ConnectError::NoOwner);
        }
        if peer.uid != os::my_uid() {
            return Err(ConnectError::Refused(Error::from(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "the socket of the token store at {} is served by uid {}, not this user \
                     (uid {}); refusing to use it",
                    path.display(),
                    peer.uid,
                    os::my_uid()
                ),
            ))));
        }
        if stream.set_read_timeout(Some(POLL)).is_err()
            || stream.set_write_timeout(Some(timeout)).is_err()
        {
            return Err(ConnectError::NoOwner);
        }
        let mut conn = Conn {
            stream,
            owner_pid: peer.pid,
            reader: wire::FrameReader::default(),
            out: Vec::new(),
        };
        let refused = |e: Error| ConnectError::Refused(e);
        let unanswered = |e: CallError| match e {
            CallError::TimedOut { .. } => ConnectError::Unresponsive { pid: peer.pid },
            _ => ConnectError::NoOwner,
        };
        conn.read_patiently(timeout, true).map_err(unanswered)?;
        let challenge = match wire::decode::<Greeting>(true, conn.reader.payload()) {
            Ok(Greeting::Welcome { challenge, .. }) => challenge,
            Ok(Greeting::Refused { reason }) => {
                return Err(refused(Error::from(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "the owner of the token store at {} refused this process: {reason}",
                        path.display()
                    ),
                ))))
            }
            Err(e @ FrameError::Version(_)) => {
                return Err(refused(Error::Unsupported {
                    operation: format!(
                        "sharing the store at {} with its owner (pid {}): {e}",
                        path.display(),
                        peer.pid
                    ),
                    backend: "this version of tokenstore",
                    instead: "run the same tokenstore version in every process that shares \
                              a store"
                        .into(),
                }))
            }
            Err(_) => return Err(ConnectError::NoOwner),
        };
        let hello = Hello {
            pid: std::process::id(),
            proof: key.map(|key| key.proof(&challenge)),
        };
        wire::encode(true, &hello, &mut conn.out);
        if conn.stream.write_all(&conn.out).is_err() {
            return Err(ConnectError::NoOwner);
        }
        match conn.receive(timeout, false) {
            Ok(Response::Ready) => Ok(conn),
            Ok(Response::Failed(e)) => Err(refused(e.into_error(path))),
            Ok(_) => Err(ConnectError::NoOwner),
            Err(e) => Err(unanswered(e)),
        }
    }

    fn send<R: serde::Serialize>(&mut self, request: &R) -> std::result::Result<(), CallError> {
        wire::encode(false, request, &mut self.out);
        if self.out.len() > wire::MAX_FRAME + 4 {
            return Err(CallError::Failed(Error::invalid(
                "the request is larger than the most a shared store's owner accepts",
            )));
        }
        let sent = self.stream.write_all(&self.out);
        wire::trim_output(&mut self.out);
        sent.map_err(|_| CallError::Lost { sent: false })
    }

    fn call<R: serde::Serialize>(
        &mut self,
        request: &R,
        timeout: Duration,
    ) -> std::result::Result<Response, CallError> {
        self.send(request)?;
        self.receive(timeout, true)
    }

    /// The next answer; `sent` says whether a request is awaiting it.
    fn receive(
        &mut self,
        timeout: Duration,
        sent: bool,
    ) -> std::result::Result<Response, CallError> {
        self.read_patiently(timeout, sent)?;
        let response = wire::decode::<Response>(false, self.reader.payload())
            .map_err(|_| CallError::Lost { sent })?;
        self.reader.shrink();
        match response {
            // The owner is closing and did not run the request.
            Response::Closing => Err(CallError::Lost { sent: false }),
            other => Ok(other),
        }
    }

    /// Reads one frame, however the owner's answer is cut into reads, while
    /// checking every [`POLL`] that the owner still lives.
    fn read_patiently(
        &mut self,
        timeout: Duration,
        sent: bool,
    ) -> std::result::Result<(), CallError> {
        let started = Instant::now();
        loop {
            match self.reader.take() {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(_) => return Err(CallError::Lost { sent }),
            }
            match self.reader.fill(&mut self.stream) {
                Ok(0) => return Err(CallError::Lost { sent }),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if !os::alive(self.owner_pid) {
                        return Err(CallError::Lost { sent });
                    }
                    if started.elapsed() >= timeout {
                        return Err(CallError::TimedOut { sent });
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Err(CallError::Lost { sent }),
            }
        }
    }
}
