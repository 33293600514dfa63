//! `tokenstore purge`: removes the records whose access token expired more
//! than N days ago (the session-timeout policy of Zoho's guide), in one
//! atomic batch.

use serde_json::json;
use tokenstore::{now_ms, Backend, OAuthToken};

use crate::{render, sorted_tokens, CliResult, Output};

/// What a purge removed (or, in a dry run, would remove).
#[derive(Debug, Default)]
pub struct Purged {
    /// The records removed, in id order.
    pub removed: Vec<OAuthToken>,
}

/// Whether `token` has been idle since before `cutoff`: its access token
/// expired before it. A record without an expiry time never is.
fn is_idle(token: &OAuthToken, cutoff: i64) -> bool {
    token.expiry_time.is_some_and(|e| e < cutoff)
}

/// Removes every record idle since before `cutoff` (milliseconds since the
/// epoch) in one batch; with `dry_run`, the batch is discarded.
pub fn purge_idle(store: &dyn Backend, cutoff: i64, dry_run: bool) -> CliResult<Purged> {
    let idle: Vec<OAuthToken> = sorted_tokens(store)?
        .into_iter()
        .filter(|t| is_idle(t, cutoff))
        .collect();
    store.batch(|batch| {
        for token in &idle {
            batch.delete_token(token.id.as_deref().unwrap_or_default())?;
        }
        if dry_run {
            batch.discard();
        }
        Ok::<_, tokenstore::Error>(())
    })?;
    Ok(Purged { removed: idle })
}

pub fn run(store: &dyn Backend, idle_days: u32, dry_run: bool, out: Output) -> CliResult {
    let now = now_ms();
    let cutoff = now - i64::from(idle_days) * 86_400_000;
    let idle = purge_idle(store, cutoff, dry_run)?.removed;
    let verb = if dry_run { "would purge" } else { "purged" };
    out.print(
        json!({
            "dry_run": dry_run,
            "idle_days": idle_days,
            "purged": idle.iter().map(|t| render::token_json(t, false, now)).collect::<Vec<_>>(),
        }),
        || {
            let mut text = format!(
                "{verb} {} record(s) whose access token expired more than {idle_days} day(s) ago\n",
                idle.len()
            );
            if !idle.is_empty() {
                text.push_str(&render::token_table(&idle, false, now));
            }
            text
        },
    );
    Ok(())
}
