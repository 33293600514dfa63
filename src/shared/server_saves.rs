//! The owner's save loop: the connections on which clients save are read
//! by one thread, through epoll ([`mio`]), instead of a thread each. A
//! client asks for such a connection ([`Request::SavesOnly`]) at its first
//! save and keeps it for its next saves; everything else it asks goes on
//! its other connections, each served by a thread of its own.
//!
//! The saves one wake-up reads, and those that arrive until as many as the
//! owner's last rounds took ([`SledStore::round_target`], for at most
//! [`LINGER`] after the first), go through the owner's write combiner as
//! one round ([`SledStore::save_together`]) with whatever its own threads
//! queued, and are answered from here once it is durable. The linger is
//! waited for to the microsecond ([`os::wait_readable`]): `epoll_wait`
//! counts whole milliseconds, and a round short of its target would wait
//! twice as long as the owner's own threads do.
//!
//! Why: with a thread per connection, each save of a client woke two of
//! the owner's threads (its connection's, for the request and again for
//! the answer), and on a machine with few cores those wake-ups, not the
//! flush, kept 8 client processes' saves at 0.7 to 0.9 of the rate of the
//! owner's own 8 threads (BENCHMARKS.md, issue 18). Lookups stay on the
//! threads: a lookup is one short round trip, and an `epoll_wait` on top
//! of it would cost it more than the wake-up it saves.
//!
//! A connection that sends anything but a save, or a frame that does not
//! decode, is closed (its saves not yet applied are dropped, so nothing of
//! it reaches the engine); one whose answers the socket does not take is
//! not read again until it does.

use std::collections::HashMap;
use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::UnixStream as LoopStream;
use mio::{Events, Interest, Poll, Token, Waker};
use parking_lot::Mutex;

use super::os;
use super::wire::{self, Request, WireTokenRef};
use super::State;
use crate::error::Result;
use crate::sled_store::{combined_panicked, SledStore, LINGER};
use crate::token::OAuthToken;

/// The waker's token (connections use their number, which never gets
/// there).
const WAKER: Token = Token(usize::MAX);

/// The most saves one round takes from the sockets, and the most bytes of
/// requests (one save may be larger alone); a connection with more waiting
/// is read again for the next round.
const ROUND_MOST: usize = 256;
const ROUND_BYTES: usize = 4 << 20;

/// A connection handed to the loop: its number in `State::connections`,
/// the stream, and what its reader already buffered.
type Handed = (u64, UnixStream, wire::FrameReader);

/// The save loop of a server (started at the first connection handed to
/// it).
pub struct SaveLoop {
    incoming: Arc<Mutex<Vec<Handed>>>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
}

impl SaveLoop {
    /// Starts the loop's thread.
    pub fn start(state: &Arc<State>) -> io::Result<SaveLoop> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let incoming: Arc<Mutex<Vec<Handed>>> = Arc::default();
        let thread = {
            let state = Arc::clone(state);
            let incoming = Arc::clone(&incoming);
            std::thread::Builder::new()
                .name("tokenstore-saves".into())
                .stack_size(super::CONNECTION_STACK)
                .spawn(move || Loop::new(&state, poll, &incoming).run())?
        };
        Ok(SaveLoop {
            incoming,
            waker,
            thread: Some(thread),
        })
    }

    /// Hands connection `n` (its handshake done, `SavesOnly` answered) to
    /// the loop.
    pub fn hand(&self, n: u64, stream: UnixStream, reader: wire::FrameReader) -> io::Result<()> {
        self.incoming.lock().push((n, stream, reader));
        self.waker.wake()
    }

    /// Wakes the loop (to see that the server stops).
    pub fn wake(&self) {
        let _ = self.waker.wake();
    }

    /// Waits for the loop to return (the server set `reads_shut`); the
    /// connections still handed to it are closed.
    pub fn stop(mut self) {
        self.wake();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.incoming.lock().clear();
    }
}

/// One connection of the loop.
struct Conn {
    n: u64,
    stream: LoopStream,
    reader: wire::FrameReader,
    /// Answers not yet taken by the socket.
    unsent: Vec<u8>,
    /// How much of `unsent` the socket took.
    sent: usize,
    /// The socket may hold more than the last read took (the round was
    /// full): read it again without waiting for an event.
    more: bool,
    /// The client's end is closed (or the server shut the reading side):
    /// closed once its answers are written.
    ended: bool,
    /// Registered for writability too (only while answers wait for the
    /// socket: else every answer the client reads would wake the loop).
    watching_writes: bool,
}

/// The saves a round took so far, and their requests' bytes.
#[derive(Default)]
struct Round {
    saves: Vec<(usize, OAuthToken)>,
    bytes: usize,
}

impl Round {
    fn full(&self) -> bool {
        self.saves.len() >= ROUND_MOST || self.bytes >= ROUND_BYTES
    }
}

/// What reading a connection found.
enum Read {
    /// Everything that arrived was read (or the round is full).
    Open,
    /// Garbage, a request other than a save, or a broken socket: close it.
    Broken,
}

impl Conn {
    /// Writes what the socket takes of the unsent answers; `Ok(true)` once
    /// nothing is left.
    fn flush(&mut self) -> io::Result<bool> {
        while self.sent < self.unsent.len() {
            match self.stream.write(&self.unsent[self.sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.unsent.clear();
        self.sent = 0;
        wire::trim_output(&mut self.unsent);
        self.reader.shrink();
        Ok(true)
    }

    /// Reads what arrived and takes the saves it completes into `round`
    /// (as `token`'s), until the round is full. Not while answers wait for
    /// the socket: the client reads them first.
    fn read(&mut self, token: usize, round: &mut Round) -> Read {
        self.more = false;
        if !self.unsent.is_empty() || self.ended {
            return Read::Open;
        }
        let mut drained = false;
        loop {
            loop {
                if round.full() {
                    self.more = true;
                    return Read::Open;
                }
                match self.reader.take() {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(_) => return Read::Broken,
                }
                round.bytes += self.reader.payload().len();
                match wire::decode::<Request>(false, self.reader.payload()) {
                    Ok(Request::Save(saved)) => round.saves.push((token, OAuthToken::from(saved))),
                    _ => return Read::Broken,
                }
            }
            if drained {
                return Read::Open;
            }
            match self.reader.fill(&mut self.stream) {
                Ok(0) => {
                    self.ended = true;
                    return Read::Open;
                }
                // A read that did not fill the buffer took all there was:
                // what arrives later raises a new event (epoll's edge).
                Ok(_) => drained = !self.reader.is_full(),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Read::Open,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Read::Broken,
            }
        }
    }

    /// Queues the answer to one save.
    fn answer(&mut self, outcome: &Result<OAuthToken>, out: &mut Vec<u8>) {
        super::encode_token_answer(outcome.as_ref().map(|t| Some(WireTokenRef::from(t))), out);
        self.unsent.extend_from_slice(out);
    }
}

/// The loop's thread.
struct Loop<'a> {
    state: &'a State,
    poll: Poll,
    incoming: &'a Mutex<Vec<Handed>>,
    conns: HashMap<usize, Conn>,
    out: Vec<u8>,
}

impl<'a> Loop<'a> {
    fn new(state: &'a State, poll: Poll, incoming: &'a Mutex<Vec<Handed>>) -> Self {
        Loop {
            state,
            poll,
            incoming,
            conns: HashMap::new(),
            out: Vec::new(),
        }
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(64);
        loop {
            let finishing = self.state.reads_shut.load(Ordering::SeqCst);
            let round = self.gather(&mut events, finishing);
            self.apply(round);
            if finishing && !self.conns.values().any(|conn| conn.more) {
                // The server stops: every connection was read to its end
                // (the server shut their reading side first) and answered
                // as far as its socket takes.
                for (_, conn) in self.conns.drain() {
                    self.state.connections.lock().remove(&conn.n);
                }
                return;
            }
        }
    }

    /// Reads the next round's saves: those of one wake-up, then more until
    /// the round has as many as the last rounds took or [`LINGER`] has
    /// passed since the first. When `finishing`, every connection is read
    /// (to its end, or until the round is full) and that is the round.
    fn gather(&mut self, events: &mut Events, finishing: bool) -> Round {
        let mut round = Round::default();
        let mut deadline: Option<Instant> = None;
        loop {
            let carried = self.conns.values().any(|conn| conn.more);
            let timeout = if finishing || carried {
                Some(Duration::ZERO)
            } else {
                deadline.map(|d| d.saturating_duration_since(Instant::now()))
            };
            // A linger is waited for to the microsecond (mio would round it
            // up to a millisecond), then the events are taken at once.
            let polled = match timeout {
                Some(linger) if !linger.is_zero() => os::wait_readable(&self.poll, linger)
                    .and_then(|_| self.poll.poll(events, Some(Duration::ZERO))),
                timeout => self.poll.poll(events, timeout),
            };
            match polled {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // Nothing to do about it but try again shortly.
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
            let mut ready: Vec<usize> = Vec::new();
            for event in events.iter() {
                if event.token() == WAKER {
                    ready.extend(self.adopt());
                } else {
                    ready.push(event.token().0);
                }
            }
            if finishing {
                ready.extend(self.adopt());
                ready.extend(self.conns.keys().copied());
            } else {
                ready.extend(
                    self.conns
                        .iter()
                        .filter(|(_, conn)| conn.more)
                        .map(|(token, _)| *token),
                );
            }
            ready.sort_unstable();
            ready.dedup();
            for token in ready {
                self.serve(token, &mut round);
            }
            if finishing || self.state.reads_shut.load(Ordering::SeqCst) {
                return round;
            }
            if round.saves.is_empty() {
                deadline = None;
                continue;
            }
            let now = Instant::now();
            let deadline = *deadline.get_or_insert(now + LINGER);
            if round.full()
                || round.saves.len() >= self.state.store.round_target()
                || now >= deadline
            {
                return round;
            }
        }
    }

    /// Registers the connections handed over since the last wake-up;
    /// their tokens (each is read at once: bytes may have come first).
    fn adopt(&mut self) -> Vec<usize> {
        let handed = std::mem::take(&mut *self.incoming.lock());
        let mut tokens = Vec::new();
        for (n, stream, reader) in handed {
            let token = n as usize;
            let registered = stream.set_nonblocking(true).and_then(|()| {
                let mut stream = LoopStream::from_std(stream);
                self.poll
                    .registry()
                    .register(&mut stream, Token(token), Interest::READABLE)
                    .map(|()| stream)
            });
            match registered {
                Ok(stream) => {
                    self.conns.insert(
                        token,
                        Conn {
                            n,
                            stream,
                            reader,
                            unsent: Vec::new(),
                            sent: 0,
                            more: true,
                            ended: false,
                            watching_writes: false,
                        },
                    );
                    tokens.push(token);
                }
                Err(_) => {
                    self.state.connections.lock().remove(&n);
                }
            }
        }
        tokens
    }

    /// A ready connection: its answers written, then its saves read.
    fn serve(&mut self, token: usize, round: &mut Round) {
        if !self.conns.contains_key(&token) {
            return;
        }
        let broken = match self.flush(token) {
            Ok(()) => match self.conns.get_mut(&token) {
                Some(conn) => matches!(conn.read(token, round), Read::Broken),
                None => return,
            },
            Err(()) => true,
        };
        if broken {
            round.saves.retain(|(t, _)| *t != token);
            self.close(token);
        } else if self.conns.get(&token).is_some_and(|conn| {
            conn.ended && conn.unsent.is_empty() && !round.saves.iter().any(|(t, _)| *t == token)
        }) {
            self.close(token);
        }
    }

    /// Writes what the socket of `token` takes of its answers, watching for
    /// writability while some wait (and no longer once none do).
    fn flush(&mut self, token: usize) -> std::result::Result<(), ()> {
        let Some(conn) = self.conns.get_mut(&token) else {
            return Ok(());
        };
        let done = conn.flush().map_err(|_| ())?;
        if done == conn.watching_writes {
            let interest = if done {
                Interest::READABLE
            } else {
                Interest::READABLE | Interest::WRITABLE
            };
            // Reregistering looks at the socket's state afresh: no edge
            // is missed.
            self.poll
                .registry()
                .reregister(&mut conn.stream, Token(token), interest)
                .map_err(|_| ())?;
            conn.watching_writes = !done;
        }
        Ok(())
    }

    fn close(&mut self, token: usize) {
        if let Some(mut conn) = self.conns.remove(&token) {
            let _ = self.poll.registry().deregister(&mut conn.stream);
            self.state.connections.lock().remove(&conn.n);
        }
    }

    /// Applies a round and answers each save of it.
    fn apply(&mut self, round: Round) {
        if round.saves.is_empty() {
            return;
        }
        let (tokens, records): (Vec<usize>, Vec<OAuthToken>) = round.saves.into_iter().unzip();
        let outcomes = save_together(&self.state.store, records);
        for (token, outcome) in tokens.iter().zip(&outcomes) {
            if let Some(conn) = self.conns.get_mut(token) {
                conn.answer(outcome, &mut self.out);
            }
        }
        let mut answered = tokens;
        answered.sort_unstable();
        answered.dedup();
        for token in answered {
            let gone = match self.flush(token) {
                Ok(()) => self
                    .conns
                    .get(&token)
                    .is_some_and(|conn| conn.ended && conn.unsent.is_empty()),
                Err(()) => true,
            };
            if gone {
                self.close(token);
            }
        }
        wire::trim_output(&mut self.out);
    }
}

/// The round through the combiner; a panic in it (a bug) fails the round's
/// saves instead of ending the loop.
fn save_together(store: &SledStore, records: Vec<OAuthToken>) -> Vec<Result<OAuthToken>> {
    let n = records.len();
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        store.save_together(records, false)
    }))
    .unwrap_or_else(|_| (0..n).map(|_| Err(combined_panicked())).collect())
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::{Arc, Barrier};
    use std::time::Duration;

    use super::super::Server;
    use crate::error::Error;
    use crate::shared::client::{CallError, Client, ConnectError};
    use crate::shared::os::SocketAddress;
    use crate::shared::wire::Response;
    use crate::sled_store::SledStore;
    use crate::store::TokenStore;
    use crate::token::OAuthToken;

    /// A server of a store in `dir`, run by this process (its clients are
    /// threads here, as client processes would be).
    fn serve(dir: &Path) -> Server {
        let store = SledStore::open(dir).unwrap();
        let address = SocketAddress::of(dir).unwrap();
        Server::start(Arc::new(store), None, address, Arc::default()).unwrap()
    }

    fn client(dir: &Path) -> Client {
        let address = SocketAddress::of(dir).unwrap();
        match Client::connect(dir, address, None, Duration::from_secs(10)) {
            Ok(client) => client,
            Err(ConnectError::Refused(e)) => panic!("refused: {e}"),
            Err(_) => panic!("no owner answered"),
        }
    }

    fn saved(client: &Client, token: &OAuthToken) -> Result<OAuthToken, Error> {
        match client.save(token) {
            Ok(Response::Token(Some(token))) => Ok(token.into()),
            Ok(_) => panic!("a save answered out of turn"),
            Err(CallError::Failed(e)) => Err(e),
            Err(e) => panic!("a save not answered: {e:?}"),
        }
    }

    fn user(name: &str, refresh: &str) -> OAuthToken {
        OAuthToken::new()
            .with_user_name(name.to_owned())
            .with_refresh_token(refresh.to_owned())
    }

    #[test]
    fn saves_of_many_clients_at_once_are_each_answered_with_their_own_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let server = serve(&path);
        let writers = 8;
        let saves = 40;
        let start = Arc::new(Barrier::new(writers));
        let threads: Vec<_> = (0..writers)
            .map(|t| {
                let path = path.clone();
                let start = Arc::clone(&start);
                std::thread::spawn(move || {
                    let client = client(&path);
                    start.wait();
                    // Every writer claims one refresh token for a new user
                    // of its own at once: exactly one may have it.
                    let claim = saved(&client, &user(&format!("claim{t}"), "1000.contested"));
                    let mut last = None;
                    for i in 0..saves {
                        let token = user(&format!("u{t}"), &format!("1000.r{t}.{i}"));
                        let record = saved(&client, &token).expect("a save of its own user");
                        assert_eq!(record.user_name, token.user_name);
                        assert_eq!(record.refresh_token, token.refresh_token);
                        assert!(record.id.is_some(), "the answer carries the record's id");
                        last = Some(record);
                    }
                    (claim, last.unwrap())
                })
            })
            .collect();
        let outcomes: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let claimed: Vec<_> = outcomes.iter().filter(|(claim, _)| claim.is_ok()).collect();
        assert_eq!(claimed.len(), 1, "one claim succeeds");
        for (claim, _) in &outcomes {
            if let Err(e) = claim {
                assert!(
                    matches!(e, Error::Conflict { .. }),
                    "the others conflict: {e:?}"
                );
            }
        }
        {
            let store = server.store();
            assert_eq!(store.len(), writers + 1);
            for (_, last) in &outcomes {
                let found = store.find_token_by_id(last.id.as_deref().unwrap()).unwrap();
                assert_eq!(
                    found.as_ref(),
                    Some(last),
                    "each writer's last save is stored"
                );
            }
            assert!(SledStore::check(store).unwrap().is_ok());
        }
        // The close ends the loop (joined), and a save afterwards is lost,
        // not hung.
        let late = client(&path);
        saved(&late, &user("late", "1000.late")).unwrap();
        server.stop();
        assert!(matches!(
            late.save(&user("later", "1000.later")),
            Err(CallError::Lost { .. })
        ));
    }
}
