//! An embedded, crash-safe store for OAuth tokens, with the semantics of the
//! Zoho CRM SDKs' `TokenStore` done right: indexed lookups, no string-built
//! queries, atomic upserts, no duplicate rows, no cross-user mix-ups, and
//! secrets that are never printed.
//!
//! Backends implementing [`TokenStore`]: [`SledStore`], durable on disk and
//! owned by one process; `PostgresStore` (cargo feature `postgres`), the same
//! contract on a PostgreSQL database that many processes share; and
//! [`MemoryStore`], in process memory. [`open`] picks one from a string.
//!
//! ```
//! use tokenstore::{OAuthToken, SledStore, TokenStore};
//!
//! let dir = tempfile::tempdir()?;
//! let store = SledStore::open(dir.path().join("tokens"))?;
//!
//! // After the OAuth login: save what the token endpoint returned.
//! let mut token = OAuthToken::new()
//!     .with_user_name("ana@example.com")
//!     .with_client_id("1000.CLIENTID")
//!     .with_client_secret("client-secret")
//!     .with_refresh_token("1000.refresh")
//!     .with_access_token("1000.access")
//!     .with_expiry_time(tokenstore::now_ms() + 3_600_000);
//! store.save_token(&mut token)?;
//!
//! // Before each API call: look the token up again.
//! let id = token.id.as_deref().unwrap();
//! let current = store.find_token_by_id(id)?.expect("just saved");
//! assert!(!current.is_expired_now());
//! // Secrets never show in Debug output.
//! assert!(!format!("{current:?}").contains("1000.access"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

mod backend;
mod batch;
mod check;
mod codec;
mod engine;
mod error;
mod key;
pub mod logging;
mod memory;
#[cfg(feature = "mysql")]
mod mysql_store;
#[cfg(feature = "oauth")]
pub mod oauth;
mod open;
mod plan;
#[cfg(feature = "postgres")]
mod postgres_store;
#[cfg(any(feature = "postgres", feature = "mysql"))]
mod retry;
mod rules;
#[cfg(target_os = "linux")]
mod shared;
mod sled_store;
mod store;
mod token;

pub use backend::{Backend, Role, Sharing, StoreInfo};
pub use batch::Batch;
pub use check::{CheckReport, Problem};
pub use engine::Stage as BatchStage;
pub use error::{Error, ErrorKind, Result};
pub use key::Key;
pub use memory::MemoryStore;
#[cfg(feature = "mysql")]
pub use mysql_store::{MysqlOptions, MysqlStore};
pub use open::{open, open_with, AnyStore, OpenOptions, StoreKind};
#[cfg(feature = "postgres")]
pub use postgres_store::{PostgresOptions, PostgresStore};
pub use rules::{lookup_key, LookupKey};
#[cfg(target_os = "linux")]
pub use shared::SharedStore;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub use sled_store::fuzzing;
pub use sled_store::{Durability, Options, SledOptions, SledStore};
pub use store::{RefreshLock, TokenStore};
pub use token::{now_ms, Field, IndexedField, OAuthToken, DEFAULT_EXPIRY_MARGIN_MS};

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

// Stores are shared across threads behind the trait object.
const _: () = {
    const fn assert_send_sync<T: Send + Sync + ?Sized>() {}
    assert_send_sync::<MemoryStore>();
    assert_send_sync::<SledStore>();
    #[cfg(feature = "postgres")]
    assert_send_sync::<PostgresStore>();
    assert_send_sync::<dyn TokenStore + Send + Sync>();
    assert_send_sync::<Error>();
    assert_send_sync::<AnyStore>();
};
