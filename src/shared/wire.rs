//! The wire format between the owner of a shared store and its clients
//! (docs/SPEC.md §8): length-prefixed frames of bincode, with types of its
//! own (never the stored record's layout, so either can change alone).
//!
//! Every frame is a 4-byte little-endian length, then that many bytes. The
//! first frame each way opens with [`MAGIC`] and the sender's
//! [`PROTOCOL_VERSION`] as a little-endian `u32`, a layout that never
//! changes, so that two versions always understand that they differ. A frame
//! longer than [`MAX_FRAME`], a payload that does not decode, or one with
//! bytes left over is refused: the connection that sent it is closed and
//! nothing of it reaches the engine.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::token::{IndexedField, OAuthToken};

#[path = "wire_errors.rs"]
mod errors;
pub use errors::{WireCheck, WireError};

/// The first bytes of the first frame each way.
pub const MAGIC: [u8; 8] = *b"TOKSTORE";

/// The version of this wire format. Owner and client must speak the same.
pub const PROTOCOL_VERSION: u32 = 2;

/// The longest frame either side accepts: a record may take up to 16 MiB
/// encoded (`codec::MAX_RECORD_BYTES`), and a frame carries one request, or
/// a chunk of records of about 1 MiB plus at most one more record.
pub const MAX_FRAME: usize = 40 << 20;

/// Records per answer to `GetTokens` are sent in chunks of about this many
/// bytes, so that neither side holds a whole large store in one buffer.
pub const CHUNK_BYTES: usize = 1 << 20;

type Config = bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Varint,
    bincode::config::Limit<MAX_FRAME>,
>;

fn config() -> Config {
    bincode::config::standard().with_limit::<MAX_FRAME>()
}

/// A token as it crosses the socket: the record's fields, nothing else.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct WireToken {
    id: Option<String>,
    user_name: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    refresh_token: Option<String>,
    access_token: Option<String>,
    grant_token: Option<String>,
    expiry_time: Option<i64>,
    redirect_url: Option<String>,
    api_domain: Option<String>,
}

impl std::fmt::Debug for WireToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The same redaction as the record's own Debug.
        OAuthToken::from(self.clone()).fmt(f)
    }
}

impl From<OAuthToken> for WireToken {
    /// Moves the record's fields (no copy).
    fn from(token: OAuthToken) -> Self {
        // Destructured, so that a new field of the record fails to compile
        // here until the wire format (and its version) knows it.
        let OAuthToken {
            id,
            user_name,
            client_id,
            client_secret,
            refresh_token,
            access_token,
            grant_token,
            expiry_time,
            redirect_url,
            api_domain,
        } = token;
        WireToken {
            id,
            user_name,
            client_id,
            client_secret,
            refresh_token,
            access_token,
            grant_token,
            expiry_time,
            redirect_url,
            api_domain,
        }
    }
}

impl From<WireToken> for OAuthToken {
    /// Moves the fields out (no copy; what is left to zeroize is empty).
    fn from(mut wire: WireToken) -> Self {
        OAuthToken {
            id: wire.id.take(),
            user_name: wire.user_name.take(),
            client_id: wire.client_id.take(),
            client_secret: wire.client_secret.take(),
            refresh_token: wire.refresh_token.take(),
            access_token: wire.access_token.take(),
            grant_token: wire.grant_token.take(),
            expiry_time: wire.expiry_time.take(),
            redirect_url: wire.redirect_url.take(),
            api_domain: wire.api_domain.take(),
        }
    }
}

/// A [`WireToken`] borrowed from a record, encoded with the same bytes
/// (for the answers and requests on the lookup path, without copying the
/// record's strings).
#[derive(Serialize)]
pub struct WireTokenRef<'a> {
    id: Option<&'a str>,
    user_name: Option<&'a str>,
    client_id: Option<&'a str>,
    client_secret: Option<&'a str>,
    refresh_token: Option<&'a str>,
    access_token: Option<&'a str>,
    grant_token: Option<&'a str>,
    expiry_time: Option<i64>,
    redirect_url: Option<&'a str>,
    api_domain: Option<&'a str>,
}

impl<'a> From<&'a OAuthToken> for WireTokenRef<'a> {
    fn from(token: &'a OAuthToken) -> Self {
        WireTokenRef::from_fields(
            token.string_fields().map(|f| f.as_deref()),
            token.expiry_time,
        )
    }
}

impl<'a> WireTokenRef<'a> {
    /// A record's text fields in the order of `OAuthToken::string_fields`,
    /// and its expiry time.
    pub fn from_fields(text: [Option<&'a str>; 9], expiry_time: Option<i64>) -> Self {
        let [id, user_name, client_id, client_secret, refresh_token, access_token, grant_token, redirect_url, api_domain] =
            text;
        WireTokenRef {
            id,
            user_name,
            client_id,
            client_secret,
            refresh_token,
            access_token,
            grant_token,
            expiry_time,
            redirect_url,
            api_domain,
        }
    }
}

/// The first variants of [`Request`], borrowed: the same bytes as the
/// owned request (a test holds them to it).
#[derive(Serialize)]
pub enum RequestRef<'a> {
    Find(WireTokenRef<'a>),
    FindById(&'a str),
    Save(WireTokenRef<'a>),
}

/// The first variants of [`Response`], borrowed: the same bytes as the
/// owned answer (a test holds them to it).
#[derive(Serialize)]
pub enum ResponseRef<'a> {
    /// Never sent borrowed: it holds `Token` at the index `Response` gives it.
    #[allow(dead_code)]
    Ready,
    Token(Option<WireTokenRef<'a>>),
}

/// An [`IndexedField`] on the wire: its place in [`IndexedField::ALL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireField(u8);

impl From<IndexedField> for WireField {
    fn from(field: IndexedField) -> Self {
        let at = IndexedField::ALL
            .iter()
            .position(|f| *f == field)
            .expect("every indexed field is in ALL");
        WireField(at as u8)
    }
}

impl WireField {
    /// The field, if the number names one.
    pub fn field(self) -> Option<IndexedField> {
        IndexedField::ALL.get(usize::from(self.0)).copied()
    }
}

/// The owner's first frame (after the magic and version).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Greeting {
    /// The owner serves this connection once the client has said hello.
    Welcome {
        /// The owner's process id.
        pid: u32,
        /// Random bytes the client proves its key over.
        challenge: [u8; 32],
    },
    /// The owner will not serve this connection (why, without secrets).
    Refused { reason: String },
}

/// The client's first frame (after the magic and version).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The client's process id (for the owner's count of clients).
    pub pid: u32,
    /// With a key: the keyed proof over the owner's challenge
    /// (`Key::proof`); the key itself never crosses the socket.
    pub proof: Option<[u8; 32]>,
}

/// One staged operation of a batch, replayed by the owner in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BatchOp {
    Save(Box<WireToken>),
    Delete(String),
    SkipIdsThrough(u64),
}

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    Find(WireToken),
    FindById(String),
    Save(WireToken),
    Delete(String),
    GetTokens,
    DeleteTokens,
    Count,
    LastIssued,
    Check,
    Info,
    /// Takes the refresh lock of a record, held for this connection until
    /// `RefreshUnlock` or the connection closes.
    RefreshLock(String),
    RefreshUnlock,
    /// Starts a batch: the owner excludes every other writer until
    /// `BatchCommit` or `BatchAbort`, and answers the `View*` reads of the
    /// batch's stage from the committed state.
    BatchBegin,
    ViewRecord(String),
    ViewContains(String),
    ViewRecordWith(WireField, String),
    BatchCommit(Vec<BatchOp>),
    BatchAbort,
    /// From now on this connection carries only `Save`s, read and answered
    /// by the owner's save loop (answered `Done` first). Added in version 2.
    SavesOnly,
}

/// The sizes and state of the store, for `info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireInfo {
    pub size_bytes: Option<u64>,
    pub format_version: u32,
    pub encrypted: bool,
    pub owner_pid: u32,
    pub clients: u64,
}

/// What the owner answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The handshake is done.
    Ready,
    Token(Option<WireToken>),
    Bool(bool),
    Number(u64),
    /// A chunk of `GetTokens`; more chunks follow while `more`.
    Records {
        chunk: Vec<WireToken>,
        more: bool,
    },
    Check(WireCheck),
    Info(WireInfo),
    /// A batch began; its stage starts from this id counter.
    BatchStarted {
        last_issued: u64,
    },
    Done,
    Failed(WireError),
    /// The owner is closing the store and did not run the request: ask
    /// the next owner.
    Closing,
}

/// What is wrong with a frame that was received.
#[derive(Debug)]
pub enum FrameError {
    /// The connection failed or closed (`UnexpectedEof` before a frame).
    Io(io::Error),
    /// Longer than [`MAX_FRAME`].
    TooLong(usize),
    /// Does not decode, or has bytes left over.
    Malformed(String),
    /// The peer speaks another version of this format (or is not
    /// tokenstore at all: `None`).
    Version(Option<u32>),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Io(e) => write!(f, "{e}"),
            FrameError::TooLong(n) => {
                write!(f, "a frame of {n} bytes, more than the {MAX_FRAME} allowed")
            }
            FrameError::Malformed(why) => write!(f, "a malformed frame ({why})"),
            FrameError::Version(Some(v)) => write!(
                f,
                "the other side speaks version {v} of the shared-store protocol, this one \
                 version {PROTOCOL_VERSION}"
            ),
            FrameError::Version(None) => {
                f.write_str("the other side does not speak the shared-store protocol")
            }
        }
    }
}

impl From<io::Error> for FrameError {
    fn from(e: io::Error) -> Self {
        FrameError::Io(e)
    }
}

/// Encodes `message` as one frame (length prefix included), after
/// `header` (the magic and version of a first frame, or nothing).
pub fn encode<T: Serialize>(header: bool, message: &T, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&[0; 4]);
    if header {
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    }
    // Writing into a Vec cannot fail, and every message type encodes.
    bincode::serde::encode_into_std_write(message, out, config())
        .expect("wire messages always encode");
    let len = u32::try_from(out.len() - 4).expect("a frame fits in u32");
    out[..4].copy_from_slice(&len.to_le_bytes());
}

/// Decodes one frame's payload (without its length prefix): a first frame
/// (`header`) must open with [`MAGIC`] and [`PROTOCOL_VERSION`].
///
/// This is the only way bytes from the socket become messages (and the
/// fuzz target `wire_frames` feeds it arbitrary bytes).
pub fn decode<T: serde::de::DeserializeOwned>(
    header: bool,
    payload: &[u8],
) -> Result<T, FrameError> {
    let mut body = payload;
    if header {
        if body.len() < 12 || body[..8] != MAGIC {
            return Err(FrameError::Version(None));
        }
        let version = u32::from_le_bytes(body[8..12].try_into().expect("4 bytes"));
        if version != PROTOCOL_VERSION {
            return Err(FrameError::Version(Some(version)));
        }
        body = &body[12..];
    }
    let (message, used) = bincode::serde::decode_from_slice(body, config())
        .map_err(|e| FrameError::Malformed(e.to_string()))?;
    if used != body.len() {
        return Err(FrameError::Malformed(format!(
            "{} bytes left over",
            body.len() - used
        )));
    }
    Ok(message)
}

/// Frames read from a stream through one buffer: most messages arrive in
/// one `read` with their length prefix (one system call, where reading the
/// prefix first would take two), and bytes after a frame wait for the next
/// one. The buffer grows as bytes arrive (doubling, never to a length a
/// peer merely claims) up to [`MAX_FRAME`], and shrinks back when idle.
pub struct FrameReader {
    buf: Vec<u8>,
    /// Unconsumed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    /// The last frame taken.
    frame: std::ops::Range<usize>,
}

const READER_START: usize = 16 << 10;

impl Default for FrameReader {
    fn default() -> Self {
        FrameReader {
            buf: vec![0; READER_START],
            start: 0,
            end: 0,
            frame: 0..0,
        }
    }
}

impl FrameReader {
    /// The payload of the last frame taken.
    pub fn payload(&self) -> &[u8] {
        &self.buf[self.frame.clone()]
    }

    /// Takes the next frame if it is all buffered (`Ok(true)`).
    pub fn take(&mut self) -> Result<bool, FrameError> {
        let have = self.end - self.start;
        if have < 4 {
            return Ok(false);
        }
        let len = u32::from_le_bytes(
            self.buf[self.start..self.start + 4]
                .try_into()
                .expect("4 bytes"),
        ) as usize;
        if len > MAX_FRAME {
            return Err(FrameError::TooLong(len));
        }
        if have < 4 + len {
            return Ok(false);
        }
        self.frame = self.start + 4..self.start + 4 + len;
        self.start += 4 + len;
        Ok(true)
    }

    /// One `read` from `stream` into the buffer (making room first);
    /// `Ok(0)` at the end of the stream.
    pub fn fill(&mut self, stream: &mut impl Read) -> io::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                let grown = (self.buf.len() * 2).min(MAX_FRAME + 4);
                self.buf.resize(grown.max(self.buf.len()), 0);
            }
        }
        let n = stream.read(&mut self.buf[self.end..])?;
        self.end += n;
        Ok(n)
    }

    /// Whether the last `fill` filled the buffer to its end (the stream
    /// may hold more).
    pub fn is_full(&self) -> bool {
        self.end == self.buf.len()
    }

    /// Reads the next frame from a blocking stream.
    pub fn read(&mut self, stream: &mut impl Read) -> Result<(), FrameError> {
        loop {
            if self.take()? {
                return Ok(());
            }
            match self.fill(stream) {
                Ok(0) => return Err(FrameError::Io(io::ErrorKind::UnexpectedEof.into())),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(FrameError::Io(e)),
            }
        }
    }

    /// Gives back the memory a large frame took, once nothing is pending,
    /// so that an idle connection holds little.
    pub fn shrink(&mut self) {
        if self.start == self.end && self.buf.len() > 4 * READER_START {
            self.buf = vec![0; READER_START];
            self.start = 0;
            self.end = 0;
            self.frame = 0..0;
        }
    }
}

/// How much of an output buffer a connection keeps between messages.
const KEPT_OUTPUT: usize = 64 << 10;

/// Gives back an output buffer that a large message grew beyond
/// [`KEPT_OUTPUT`], so that an idle connection holds little.
pub fn trim_output(buf: &mut Vec<u8>) {
    if buf.capacity() > KEPT_OUTPUT {
        *buf = Vec::new();
    }
}

/// Writes an encoded frame.
pub fn write_frame(stream: &mut impl Write, frame: &[u8]) -> io::Result<()> {
    stream.write_all(frame)
}

/// The fuzz target `wire_frames`: `bytes` read as a stream of frames the
/// way an owner reads a client (the first frame a hello, then requests),
/// and each frame also as the client reads the owner. Every message that
/// decodes must encode to a frame that decodes to the same message.
#[cfg(feature = "fuzzing")]
pub fn fuzz_frames(bytes: &[u8]) {
    fn again<T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(
        header: bool,
        message: &T,
    ) {
        let mut frame = Vec::new();
        encode(header, message, &mut frame);
        let back: T = decode(header, &frame[4..]).expect("an encoded message decodes");
        assert_eq!(&back, message);
    }
    let mut stream = bytes;
    let mut reader = FrameReader::default();
    let mut first = true;
    while reader.read(&mut stream).is_ok() {
        let buf = reader.payload();
        assert!(buf.len() <= MAX_FRAME);
        if first {
            if let Ok(hello) = decode::<Hello>(true, buf) {
                again(true, &hello);
            }
            if let Ok(greeting) = decode::<Greeting>(true, buf) {
                again(true, &greeting);
            }
            first = false;
        }
        if let Ok(request) = decode::<Request>(false, buf) {
            again(false, &request);
        }
        if let Ok(response) = decode::<Response>(false, buf) {
            again(false, &response);
        }
    }
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
