//! The wire format's own tests.
use super::*;
use crate::error::Error;

fn round_trip<T: Serialize + serde::de::DeserializeOwned>(header: bool, message: &T) -> T {
    let mut frame = Vec::new();
    encode(header, message, &mut frame);
    let mut reader = FrameReader::default();
    reader.read(&mut &frame[..]).unwrap();
    decode(header, reader.payload()).unwrap()
}

#[test]
fn every_field_of_a_token_crosses_unchanged() {
    let token = OAuthToken::new()
        .with_id("7")
        .with_user_name("ana")
        .with_client_id("c")
        .with_client_secret("s")
        .with_refresh_token("r")
        .with_access_token("a")
        .with_grant_token("g")
        .with_expiry_time(-5)
        .with_redirect_url("u")
        .with_api_domain("d");
    let mut empty = OAuthToken::new();
    empty.user_name = Some(String::new());
    for token in [token, empty] {
        let back = round_trip(false, &Request::Save(WireToken::from(token.clone())));
        let Request::Save(wire) = back else {
            panic!("not a save")
        };
        assert_eq!(OAuthToken::from(wire), token);
    }
}

#[test]
fn a_first_frame_names_the_version_it_speaks() {
    let mut frame = Vec::new();
    encode(
        true,
        &Hello {
            pid: 1,
            proof: None,
        },
        &mut frame,
    );
    let mut payload = frame[4..].to_vec();
    payload[8..12].copy_from_slice(&7u32.to_le_bytes());
    match decode::<Hello>(true, &payload) {
        Err(e @ FrameError::Version(Some(7))) => {
            let text = e.to_string();
            assert!(
                text.contains("version 7") && text.contains(&format!("version {PROTOCOL_VERSION}")),
                "{text}"
            );
        }
        other => panic!("expected a version error, got {other:?}"),
    }
    assert!(matches!(
        decode::<Hello>(true, b"GET / HTTP/1.1\r\n"),
        Err(FrameError::Version(None))
    ));
}

#[test]
fn oversized_truncated_and_trailing_frames_are_refused() {
    let huge = (MAX_FRAME as u32 + 1).to_le_bytes();
    assert!(matches!(
        FrameReader::default().read(&mut &huge[..]),
        Err(FrameError::TooLong(_))
    ));
    // A length that promises more than arrives: an end of stream, and no
    // buffer of the length claimed.
    let mut short = (MAX_FRAME as u32).to_le_bytes().to_vec();
    short.extend_from_slice(&[1, 2, 3]);
    let mut reader = FrameReader::default();
    assert!(matches!(
        reader.read(&mut &short[..]),
        Err(FrameError::Io(_))
    ));
    assert!(
        reader.buf.len() <= READER_START,
        "grown by bytes, not claims"
    );
    // A valid message with a byte more.
    let mut frame = Vec::new();
    encode(false, &Request::Count, &mut frame);
    let mut payload = frame[4..].to_vec();
    payload.push(0);
    assert!(matches!(
        decode::<Request>(false, &payload),
        Err(FrameError::Malformed(_))
    ));
    // A string length far past the frame.
    let bogus = [3u8, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F];
    assert!(decode::<Request>(false, &bogus).is_err());
}

#[test]
fn errors_cross_as_the_same_variant() {
    let path = std::path::Path::new("/tmp/x");
    let conflict = Error::Conflict {
        field: IndexedField::AccessToken,
        id: "3".into(),
    };
    let back = WireError::from_error(&conflict).into_error(path);
    assert!(matches!(
        back,
        Error::Conflict { field: IndexedField::AccessToken, ref id } if id == "3"
    ));
    let invalid = Error::invalid("no token");
    assert_eq!(
        WireError::from_error(&invalid).into_error(path).to_string(),
        invalid.to_string()
    );
}

/// A client's stream: its hello, then one of each request. Each frame
/// decodes as sent; with `TOKENSTORE_WRITE_WIRE_CORPUS=DIR` the
/// streams are also written there as seeds of the `wire_frames` fuzz
/// target (fuzz/corpus/wire_frames).
#[test]
fn a_clients_stream_decodes_frame_by_frame() {
    let token = WireToken::from(
        OAuthToken::new()
            .with_user_name("ana")
            .with_refresh_token("1000.r")
            .with_expiry_time(1),
    );
    let requests = vec![
        Request::Find(token.clone()),
        Request::FindById("1".into()),
        Request::Save(token.clone()),
        Request::Delete("2".into()),
        Request::GetTokens,
        Request::Count,
        Request::RefreshLock("3".into()),
        Request::BatchBegin,
        Request::ViewRecordWith(IndexedField::GrantToken.into(), "g".into()),
        Request::BatchCommit(vec![
            BatchOp::Save(Box::new(token)),
            BatchOp::Delete("4".into()),
            BatchOp::SkipIdsThrough(9),
        ]),
    ];
    let mut stream = Vec::new();
    let mut frame = Vec::new();
    encode(
        true,
        &Hello {
            pid: 7,
            proof: Some([1; 32]),
        },
        &mut frame,
    );
    stream.extend_from_slice(&frame);
    for request in &requests {
        encode(false, request, &mut frame);
        stream.extend_from_slice(&frame);
    }
    // Read as it arrives over a socket: in pieces of any size.
    for piece in [1, 3, 7, 64, stream.len()] {
        let mut arriving = Pieces(&stream, piece);
        let mut reader = FrameReader::default();
        reader.read(&mut arriving).unwrap();
        assert_eq!(decode::<Hello>(true, reader.payload()).unwrap().pid, 7);
        for request in &requests {
            reader.read(&mut arriving).unwrap();
            assert_eq!(
                &decode::<Request>(false, reader.payload()).unwrap(),
                request
            );
        }
        assert!(arriving.0.is_empty());
        assert!(matches!(reader.read(&mut arriving), Err(FrameError::Io(_))));
    }
    if let Some(dir) = std::env::var_os("TOKENSTORE_WRITE_WIRE_CORPUS") {
        let dir = std::path::Path::new(&dir);
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("client_stream"), &stream).unwrap();
        encode(
            true,
            &Greeting::Welcome {
                pid: 1,
                challenge: [2; 32],
            },
            &mut frame,
        );
        std::fs::write(dir.join("welcome"), &frame).unwrap();
    }
}

#[test]
fn a_tokens_debug_is_redacted() {
    let wire = WireToken::from(OAuthToken::new().with_access_token("1000.sekrit"));
    assert!(!format!("{wire:?}").contains("sekrit"));
}

/// A reader that hands out at most `.1` bytes per read.
struct Pieces<'a>(&'a [u8], usize);

impl std::io::Read for Pieces<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let n = self.0.len().min(self.1).min(out.len());
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        Ok(n)
    }
}

#[test]
fn a_frame_larger_than_the_buffer_grows_it_and_it_shrinks_when_idle() {
    let big = WireToken::from(OAuthToken::new().with_access_token("x".repeat(200_000)));
    let mut frame = Vec::new();
    encode(false, &Request::Save(big.clone()), &mut frame);
    let mut reader = FrameReader::default();
    reader.read(&mut &frame[..]).unwrap();
    assert_eq!(
        decode::<Request>(false, reader.payload()).unwrap(),
        Request::Save(big)
    );
    assert!(reader.buf.len() >= frame.len());
    reader.shrink();
    assert_eq!(reader.buf.len(), READER_START);
}

#[test]
fn borrowed_messages_encode_as_the_owned_ones() {
    let token = OAuthToken::new()
        .with_id("7")
        .with_user_name("ana")
        .with_client_secret("s")
        .with_access_token("a")
        .with_expiry_time(-1)
        .with_api_domain("d");
    let bytes = |message: &dyn Fn(&mut Vec<u8>)| {
        let mut out = Vec::new();
        message(&mut out);
        out
    };
    let owned = WireToken::from(token.clone());
    let borrowed = || WireTokenRef::from(&token);
    assert_eq!(
        bytes(&|o| encode(false, &Request::Find(owned.clone()), o)),
        bytes(&|o| encode(false, &RequestRef::Find(borrowed()), o))
    );
    assert_eq!(
        bytes(&|o| encode(false, &Request::FindById("7".into()), o)),
        bytes(&|o| encode(false, &RequestRef::FindById("7"), o))
    );
    assert_eq!(
        bytes(&|o| encode(false, &Request::Save(owned.clone()), o)),
        bytes(&|o| encode(false, &RequestRef::Save(borrowed()), o))
    );
    assert_eq!(
        bytes(&|o| encode(false, &Response::Ready, o)),
        bytes(&|o| encode(false, &ResponseRef::Ready, o))
    );
    for answer in [Some(owned.clone()), None] {
        let borrowed_answer = answer.as_ref().map(|_| borrowed());
        assert_eq!(
            bytes(&|o| encode(false, &Response::Token(answer.clone()), o)),
            bytes(&|o| encode(
                false,
                &ResponseRef::Token(borrowed_answer.as_ref().map(|_| borrowed())),
                o
            ))
        );
    }
    assert_eq!(OAuthToken::from(owned), token);
}
