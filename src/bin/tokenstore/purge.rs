//! `tokenstore purge`: removes the records whose access token expired more
//! than N days ago (the session-timeout policy of Zoho's guide), in one
//! atomic batch.

use serde_json::json;
use tokenstore::{now_ms, Backend, OAuthToken};

use crate::{render, sorted_tokens, CliResult, Output};

/// What a purge removed (or, in a dry run, would remove), and the records
/// it listed as idle but left alone because another writer changed them
/// before its batch.
#[derive(Debug, Default)]
pub struct Purged {
    /// The records removed, in id order, as they were when removed.
    pub removed: Vec<OAuthToken>,
    /// Listed as idle, no longer idle in the batch (refreshed meanwhile): kept.
    pub refreshed: usize,
    /// Listed as idle, already deleted by another writer before the batch.
    pub gone: usize,
}

/// Whether `token` has been idle since before `cutoff`: its access token
/// expired before it. A record without an expiry time never is.
fn is_idle(token: &OAuthToken, cutoff: i64) -> bool {
    token.expiry_time.is_some_and(|e| e < cutoff)
}

/// Removes every record idle since before `cutoff` (milliseconds since the
/// epoch) in one batch; with `dry_run`, the batch is discarded.
///
/// A batch cannot list the store, so the candidates come from a read before
/// it. On a shared store another process may refresh (or delete) one of them
/// in between, so each is read again inside the batch, where no other writer
/// can change it, and removed only if it is still idle.
pub fn purge_idle(store: &dyn Backend, cutoff: i64, dry_run: bool) -> CliResult<Purged> {
    let candidates: Vec<String> = sorted_tokens(store)?
        .into_iter()
        .filter(|t| is_idle(t, cutoff))
        .filter_map(|t| t.id)
        .collect();
    let purged = store.batch(|batch| {
        let mut purged = Purged::default();
        for id in &candidates {
            match batch.find_token_by_id(id)? {
                Some(current) if is_idle(&current, cutoff) => {
                    batch.delete_token(id)?;
                    purged.removed.push(current);
                }
                Some(_) => purged.refreshed += 1,
                None => purged.gone += 1,
            }
        }
        if dry_run {
            batch.discard();
        }
        Ok::<_, tokenstore::Error>(purged)
    })?;
    Ok(purged)
}

pub fn run(store: &dyn Backend, idle_days: u32, dry_run: bool, out: Output) -> CliResult {
    let now = now_ms();
    let cutoff = now - i64::from(idle_days) * 86_400_000;
    let purged = purge_idle(store, cutoff, dry_run)?;
    let idle = &purged.removed;
    let verb = if dry_run { "would purge" } else { "purged" };
    out.print(
        json!({
            "dry_run": dry_run,
            "idle_days": idle_days,
            "purged": idle.iter().map(|t| render::token_json(t, false, now)).collect::<Vec<_>>(),
            "kept_refreshed_meanwhile": purged.refreshed,
            "deleted_meanwhile": purged.gone,
        }),
        || {
            let mut text = format!(
                "{verb} {} record(s) whose access token expired more than {idle_days} day(s) ago\n",
                idle.len()
            );
            if purged.refreshed > 0 {
                text.push_str(&format!(
                    "kept {} record(s) refreshed after they were listed\n",
                    purged.refreshed
                ));
            }
            if purged.gone > 0 {
                text.push_str(&format!(
                    "{} record(s) listed were deleted by another writer meanwhile\n",
                    purged.gone
                ));
            }
            if !idle.is_empty() {
                text.push_str(&render::token_table(idle, false, now));
            }
            text
        },
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenstore::{AnyStore, Batch, CheckReport, StoreInfo, TokenStore};

    const DAY: i64 = 86_400_000;

    /// A store on which another writer acts right after each full read
    /// (`get_tokens`): the moment between purge's listing and its batch, when
    /// on a shared store another process may refresh or delete a record.
    struct WriterAfterRead {
        inner: AnyStore,
        after_read: fn(&AnyStore),
    }

    impl std::fmt::Debug for WriterAfterRead {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("WriterAfterRead")
                .field("inner", &self.inner)
                .finish_non_exhaustive()
        }
    }

    impl TokenStore for WriterAfterRead {
        fn find_token(&self, query: &OAuthToken) -> tokenstore::Result<Option<OAuthToken>> {
            self.inner.find_token(query)
        }
        fn save_token(&self, token: &mut OAuthToken) -> tokenstore::Result<()> {
            self.inner.save_token(token)
        }
        fn delete_token(&self, id: &str) -> tokenstore::Result<bool> {
            self.inner.delete_token(id)
        }
        fn get_tokens(&self) -> tokenstore::Result<Vec<OAuthToken>> {
            let tokens = self.inner.get_tokens()?;
            (self.after_read)(&self.inner);
            Ok(tokens)
        }
        fn delete_tokens(&self) -> tokenstore::Result<usize> {
            self.inner.delete_tokens()
        }
        fn find_token_by_id(&self, id: &str) -> tokenstore::Result<Option<OAuthToken>> {
            self.inner.find_token_by_id(id)
        }
    }

    impl Backend for WriterAfterRead {
        fn kind(&self) -> &'static str {
            self.inner.kind()
        }
        fn location(&self) -> String {
            self.inner.location()
        }
        fn count(&self) -> tokenstore::Result<usize> {
            self.inner.count()
        }
        fn last_issued_id(&self) -> tokenstore::Result<u64> {
            self.inner.last_issued_id()
        }
        fn check(&self) -> tokenstore::Result<CheckReport> {
            self.inner.check()
        }
        fn apply_batch(
            &self,
            stage: &mut (dyn FnMut(&mut Batch<'_>) -> tokenstore::Result<()> + Send + '_),
        ) -> tokenstore::Result<()> {
            self.inner.apply_batch(stage)
        }
        fn info(&self) -> tokenstore::Result<StoreInfo> {
            self.inner.info()
        }
    }

    /// A memory store holding ids 1 and 2, idle for 100 days, and 3, live;
    /// `after_read` runs after each listing.
    fn store(after_read: fn(&AnyStore)) -> WriterAfterRead {
        let inner = tokenstore::open("memory:").unwrap();
        let now = now_ms();
        for (user, expiry) in [
            ("one", now - 100 * DAY),
            ("two", now - 100 * DAY),
            ("three", now + DAY),
        ] {
            let mut token = OAuthToken::new()
                .with_user_name(format!("{user}@example.com"))
                .with_refresh_token(format!("1000.refresh-{user}"))
                .with_access_token(format!("1000.access-{user}"))
                .with_expiry_time(expiry);
            inner.save_token(&mut token).unwrap();
        }
        WriterAfterRead { inner, after_read }
    }

    fn ids(tokens: &[OAuthToken]) -> Vec<&str> {
        tokens.iter().filter_map(|t| t.id.as_deref()).collect()
    }

    #[test]
    fn a_record_refreshed_after_the_listing_is_kept() {
        let store = store(|inner| {
            // Another worker refreshes record 2 between purge's read and its batch.
            let mut two = inner.find_token_by_id("2").unwrap().unwrap();
            two.access_token = Some("1000.access-two-refreshed".into());
            two.expiry_time = Some(now_ms() + 3_600_000);
            inner.save_token(&mut two).unwrap();
        });
        let purged = purge_idle(&store, now_ms() - 30 * DAY, false).unwrap();
        assert_eq!(ids(&purged.removed), ["1"]);
        assert_eq!((purged.refreshed, purged.gone), (1, 0));
        let two = store.inner.find_token_by_id("2").unwrap();
        assert_eq!(
            two.and_then(|t| t.access_token).as_deref(),
            Some("1000.access-two-refreshed"),
            "the refreshed record was purged"
        );
        assert_eq!(store.inner.find_token_by_id("1").unwrap(), None);
        assert_eq!(store.inner.count().unwrap(), 2);
    }

    #[test]
    fn a_record_deleted_after_the_listing_is_not_reported_as_purged() {
        let store = store(|inner| {
            assert!(inner.delete_token("2").unwrap());
        });
        let purged = purge_idle(&store, now_ms() - 30 * DAY, false).unwrap();
        assert_eq!(ids(&purged.removed), ["1"]);
        assert_eq!((purged.refreshed, purged.gone), (0, 1));
        assert_eq!(ids(&store.inner.get_tokens().unwrap()), ["3"]);
    }

    #[test]
    fn a_dry_run_reports_what_is_still_idle_and_removes_nothing() {
        let store = store(|inner| {
            let mut two = inner.find_token_by_id("2").unwrap().unwrap();
            two.expiry_time = Some(now_ms());
            inner.save_token(&mut two).unwrap();
        });
        let purged = purge_idle(&store, now_ms() - 30 * DAY, true).unwrap();
        assert_eq!(ids(&purged.removed), ["1"]);
        assert_eq!((purged.refreshed, purged.gone), (1, 0));
        assert_eq!(store.inner.count().unwrap(), 3);
    }
}
