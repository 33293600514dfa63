//! Random operations run on a `SledStore` and a `MemoryStore` side by side,
//! every answer compared: the model check shared by the proptest in
//! `tests/model_check.rs` and the `ops_vs_model` fuzz target (which includes
//! this file by path).
//!
//! Values come from small pools so that keys collide, rules shadow each other
//! and conflicts happen often; the pools include the empty string.

use std::path::PathBuf;

use arbitrary::Arbitrary;
use tokenstore::{Durability, Error, MemoryStore, OAuthToken, Options, SledStore, TokenStore};

const IDS: [&str; 8] = ["1", "2", "3", "4", "5", "12", "", "x"];
const USERS: [&str; 5] = [
    "ana@example.com",
    "bob@example.com",
    "O'Brien",
    "ANA@example.com",
    "",
];
const CLIENT: [&str; 3] = ["1000.CLIENT", "other", ""];
const TOKENS: [&str; 6] = [
    "1000.t0",
    "1000.t1",
    "1000.t2",
    "1000.t3",
    "'; DROP TABLE x; --",
    "",
];

/// One field choice: absent, or an index into that field's pool.
type Pick = Option<u8>;

fn pick(pool: &[&str], choice: Pick) -> Option<String> {
    choice.map(|i| pool[usize::from(i) % pool.len()].to_owned())
}

/// A token whose fields are drawn from the pools.
#[derive(Debug, Clone, Arbitrary)]
pub struct TokenSpec {
    id: Pick,
    user_name: Pick,
    client_id: Pick,
    client_secret: Pick,
    refresh_token: Pick,
    access_token: Pick,
    grant_token: Pick,
    expiry_time: Option<i8>,
    api_domain: Pick,
}

impl TokenSpec {
    pub fn token(&self) -> OAuthToken {
        OAuthToken {
            id: pick(&IDS, self.id),
            user_name: pick(&USERS, self.user_name),
            client_id: pick(&CLIENT, self.client_id),
            client_secret: pick(&CLIENT, self.client_secret),
            refresh_token: pick(&TOKENS, self.refresh_token),
            access_token: pick(&TOKENS, self.access_token),
            grant_token: pick(&TOKENS, self.grant_token),
            expiry_time: self.expiry_time.map(i64::from),
            redirect_url: None,
            api_domain: pick(
                &["https://www.zohoapis.com", "https://www.zohoapis.eu", ""],
                self.api_domain,
            ),
        }
    }
}

/// One operation of the `TokenStore` trait, or a reopen of the sled store.
#[derive(Debug, Clone, Arbitrary)]
pub enum Op {
    Save(TokenSpec),
    Find(TokenSpec),
    FindById(u8),
    Delete(u8),
    DeleteAll,
    GetAll,
    Reopen,
    /// The saves, finds and deletes among `ops` staged in one
    /// `SledStore::batch` (the other ops are left out). With `abort`, the
    /// batch ends in an error: nothing of it may be written.
    Batch {
        ops: Vec<Op>,
        abort: bool,
    },
}

/// The sled store under test, its model, and the directory they live in.
pub struct Pair {
    _dir: tempfile::TempDir,
    path: PathBuf,
    options: Options,
    sled: Option<SledStore>,
    model: MemoryStore,
}

/// Errors compared by what a caller can match on.
fn kind(result: &Result<impl std::fmt::Debug, Error>) -> String {
    match result {
        Ok(_) => "ok".into(),
        Err(Error::InvalidToken { .. }) => "invalid".into(),
        Err(Error::Conflict { field, id }) => format!("conflict {field} {id}"),
        Err(other) => format!("unexpected error: {other}"),
    }
}

fn sorted(mut tokens: Vec<OAuthToken>) -> Vec<OAuthToken> {
    tokens.sort_by(|a, b| a.id.cmp(&b.id));
    tokens
}

impl Pair {
    /// A fresh pair; `buffered` picks the sled store's durability.
    pub fn new(buffered: bool) -> Pair {
        let options = if buffered {
            Options::default().durability(Durability::BUFFERED)
        } else {
            Options::default()
        };
        Pair::with_options(options)
    }

    /// A fresh pair whose sled store is opened with `options`.
    pub fn with_options(options: Options) -> Pair {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("db");
        let sled = SledStore::open_with(&path, options.clone()).expect("open");
        Pair {
            _dir: dir,
            path,
            options,
            sled: Some(sled),
            model: MemoryStore::new(),
        }
    }

    fn sled(&self) -> &SledStore {
        self.sled.as_ref().expect("open")
    }

    /// Runs `op` on both stores and panics on any disagreement, or if the
    /// sled store's integrity check finds a problem afterwards.
    pub fn step(&mut self, op: &Op) {
        match op {
            Op::Save(spec) => {
                let mut in_sled = spec.token();
                let mut in_model = in_sled.clone();
                let got = self.sled().save_token(&mut in_sled);
                let want = self.model.save_token(&mut in_model);
                assert_eq!(kind(&got), kind(&want), "save {op:?}");
                assert_eq!(in_sled, in_model, "token after save {op:?}");
            }
            Op::Find(spec) => {
                let query = spec.token();
                let got = self.sled().find_token(&query).expect("sled find");
                let want = self.model.find_token(&query).expect("model find");
                assert_eq!(got, want, "find {query:?}");
            }
            Op::FindById(i) => {
                let id = IDS[usize::from(*i) % IDS.len()];
                let got = self.sled().find_token_by_id(id).expect("sled find by id");
                assert_eq!(
                    got,
                    self.model.find_token_by_id(id).unwrap(),
                    "find_by_id {id:?}"
                );
            }
            Op::Delete(i) => {
                let id = IDS[usize::from(*i) % IDS.len()];
                let got = self.sled().delete_token(id).expect("sled delete");
                assert_eq!(got, self.model.delete_token(id).unwrap(), "delete {id:?}");
            }
            Op::DeleteAll => {
                let got = self.sled().delete_tokens().expect("sled delete all");
                assert_eq!(got, self.model.delete_tokens().unwrap(), "delete_tokens");
            }
            Op::GetAll => {
                let got = sorted(self.sled().get_tokens().expect("sled get all"));
                assert_eq!(got, sorted(self.model.get_tokens().unwrap()), "get_tokens");
            }
            Op::Batch { ops, abort } => self.batch(ops, *abort),
            Op::Reopen => {
                drop(self.sled.take());
                self.sled =
                    Some(SledStore::open_with(&self.path, self.options.clone()).expect("reopen"));
            }
        }
        let report = self.sled().check().expect("check");
        assert!(report.is_ok(), "after {op:?}: {report}");
    }

    /// Runs the saves, finds and deletes of `ops` in one batch on the sled
    /// store, and one by one on the model (unless the batch is aborted).
    fn batch(&mut self, ops: &[Op], abort: bool) {
        let before = sorted(self.sled().get_tokens().expect("sled get all"));
        let sled = self.sled.as_ref().expect("open");
        let model = &self.model;
        let result = sled.batch(|batch| {
            for op in ops {
                match op {
                    Op::Save(spec) => {
                        let mut in_batch = spec.token();
                        let got = batch.save_token(&mut in_batch);
                        if !abort {
                            let mut in_model = spec.token();
                            let want = model.save_token(&mut in_model);
                            assert_eq!(kind(&got), kind(&want), "batch save {op:?}");
                            assert_eq!(in_batch, in_model, "token after batch save {op:?}");
                        }
                    }
                    Op::Find(spec) if !abort => {
                        let query = spec.token();
                        let got = batch.find_token(&query).expect("batch find");
                        assert_eq!(
                            got,
                            model.find_token(&query).unwrap(),
                            "batch find {query:?}"
                        );
                    }
                    Op::FindById(i) if !abort => {
                        let id = IDS[usize::from(*i) % IDS.len()];
                        let got = batch.find_token_by_id(id).expect("batch find by id");
                        assert_eq!(
                            got,
                            model.find_token_by_id(id).unwrap(),
                            "batch find_by_id {id:?}"
                        );
                    }
                    Op::Delete(i) => {
                        let id = IDS[usize::from(*i) % IDS.len()];
                        let got = batch.delete_token(id).expect("batch delete");
                        if !abort {
                            assert_eq!(got, model.delete_token(id).unwrap(), "batch delete {id:?}");
                        }
                    }
                    _ => {}
                }
            }
            if abort {
                Err(Error::InvalidToken {
                    reason: "aborted by the test".into(),
                })
            } else {
                Ok(())
            }
        });
        assert_eq!(result.is_err(), abort, "batch result {result:?}");
        if abort {
            let after = sorted(self.sled().get_tokens().expect("sled get all"));
            assert_eq!(after, before, "an aborted batch wrote something");
        }
    }

    /// Runs every op, then compares the whole contents.
    pub fn run(&mut self, ops: &[Op]) {
        for op in ops {
            self.step(op);
        }
        self.step(&Op::GetAll);
    }
}
