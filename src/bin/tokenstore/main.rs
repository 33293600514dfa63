//! `tokenstore`: look inside a token store, repair it, clean it up, and
//! migrate tokens in from the Zoho SDKs' stores (and back out).
//!
//! Exit codes (`EXIT_*`, and [`exit_code`] for the library's errors): 0
//! success; 1 problems found or an operation refused; 2 bad usage or input;
//! 3 the store failed.

mod export;
mod failure;
mod import;
mod keys;
mod logs;
#[cfg(feature = "oauth")]
mod oauth;
mod purge;
mod render;

use failure::{hint, CliError, CliResult};
use keys::{change_key, current_key, key_file, keygen};

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde_json::json;
use tokenstore::{lookup_key, now_ms, AnyStore, Backend, Key, OAuthToken, OpenOptions, StoreKind};

/// Where the store is when neither `--db` nor `TOKENSTORE_DB` says.
const DEFAULT_DB: &str = "tokenstore-db";

#[derive(Parser)]
#[command(
    name = "tokenstore",
    version,
    about = "Inspect, repair, clean up and migrate a tokenstore OAuth token store",
    long_about = "Inspect, repair, clean up and migrate a tokenstore OAuth token store.\n\n\
        Secrets (client secret, access, refresh and grant tokens) are never printed \
        unless a command is asked with --show-secrets or --include-secrets.",
    after_help = "Examples:\n  \
        tokenstore --db ./tokens import zohooauth.db --from sqlite\n  \
        tokenstore --db ./tokens list\n  \
        tokenstore --db ./tokens find --user ana@example.com\n  \
        echo \"$REFRESH\" | tokenstore find --refresh - --client-id 1000.X --client-secret x\n  \
        tokenstore purge --idle-days 90 --dry-run\n  \
        tokenstore export --format zoho-csv --include-secrets --output tokens.csv\n\n\
        Exit codes:\n  \
        0  success\n  \
        1  problems found or refused: `check` found problems, no such record, no --yes,\n     \
           an import or copy conflict, the accounts server refused the grant code,\n     \
           the refresh token or the client, or is rate limiting\n  \
        2  bad usage or input: arguments, files, no store at --db, a missing or wrong key,\n     \
           the store locked by another process, the accounts server unreachable\n  \
        3  the store failed: a damaged record, an on-disk format this build cannot read,\n     \
           a disk or database server error"
)]
struct Cli {
    /// The token store: a directory (the embedded store, shared with the
    /// other local processes that have it open: this command then uses it
    /// through the one that owns it) or a postgres://user:password@host/database
    /// URL (shared by any number of processes on any number of machines).
    #[arg(long, global = true, env = "TOKENSTORE_DB", default_value = DEFAULT_DB, value_name = "DIR|URL")]
    db: String,

    /// Print machine-readable JSON on stdout instead of text.
    #[arg(long, global = true)]
    json: bool,

    /// The key of an encrypted store: a file holding it in base64 (or as 32
    /// raw bytes), readable by its owner only. Without it, the base64 key in
    /// the TOKENSTORE_KEY environment variable is used, if set.
    #[arg(long, global = true, value_name = "PATH")]
    key_file: Option<PathBuf>,

    /// When another process holds an embedded store without serving it
    /// (opened for itself alone, or still opening it), wait up to SECS for
    /// it to serve or close the store instead of failing (0: fail at once).
    #[arg(long, global = true, value_name = "SECS", default_value_t = 10.0)]
    lock_timeout: f64,

    #[command(flatten)]
    logs: logs::Verbosity,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List every record: id, user, client id, which tokens it has, expiry.
    #[command(after_help = "Example:\n  tokenstore list --json")]
    List {
        /// Also print the secret values.
        #[arg(long)]
        show_secrets: bool,
    },
    /// Show one record by id.
    #[command(after_help = "Example:\n  tokenstore show 3")]
    Show {
        /// The record's id.
        id: String,
        /// Also print the secret values.
        #[arg(long)]
        show_secrets: bool,
    },
    /// Find the record the Zoho SDK would find for these values (SPEC.md §2).
    ///
    /// Rules, first that applies decides: --user; else --access without
    /// client credentials; else --grant (then --refresh) with both
    /// --client-id and --client-secret (only their presence counts); else --id.
    /// A secret given as `-` is read from stdin, one line per `-`, in the
    /// order --access, --refresh, --grant, --client-secret.
    #[command(after_help = "Examples:\n  \
        tokenstore find --user ana@example.com\n  \
        tokenstore find --refresh - --client-id 1000.X --client-secret - < secrets.txt")]
    Find(FindArgs),
    /// Delete one record by id.
    Delete {
        /// The record's id.
        id: String,
    },
    /// Delete every record (refused without --yes).
    Clear {
        /// Really delete everything.
        #[arg(long)]
        yes: bool,
    },
    /// Check that records and indexes agree; exit 1 if anything is wrong.
    Check,
    /// Counts: records, token kinds, expired and expiring access tokens, size.
    Stats,
    /// Remove records whose access token expired more than N days ago.
    ///
    /// Such a record has not been refreshed for N days: the user's session is
    /// over (the session-timeout policy of Zoho's guide). Records without an
    /// expiry time are kept.
    #[command(after_help = "Example:\n  tokenstore purge --idle-days 90 --dry-run")]
    Purge {
        /// Idle days after the access token's expiry.
        #[arg(long, value_name = "N")]
        idle_days: u32,
        /// Only list what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Import tokens from a Zoho SDK store or an export (creates the store).
    ///
    /// Every source row is saved with the store's rules: duplicate rows for
    /// one user merge into one record (the newest expiry_time wins), a source
    /// id already used by another record gets a new id. The import is
    /// all-or-nothing unless --on-conflict skip.
    #[command(after_help = "Examples:\n  \
        tokenstore import tokens.csv --from zoho-csv\n  \
        tokenstore import zohooauth.db --from sqlite --dry-run\n  \
        tokenstore import backup.json --from json --on-conflict overwrite")]
    Import(import::ImportArgs),
    /// Copy every record from one store to another (sled or postgres://),
    /// keeping ids and the id counter, all-or-nothing.
    ///
    /// The way from the embedded store to PostgreSQL when an app outgrows one
    /// process, and back. A target that already holds records is refused
    /// unless --on-conflict says how to merge.
    #[command(after_help = "Examples:\n  \
        tokenstore copy --from ./tokens --to postgres://app@127.0.0.1/tokens\n  \
        tokenstore copy --from postgres://app@127.0.0.1/tokens --to ./backup\n  \
        tokenstore copy --from ./plain --to ./sealed --to-key-file tokenstore.key")]
    Copy(import::CopyArgs),
    /// Write every record as JSON or as a Zoho FileStore CSV.
    ///
    /// Secrets are left out unless --include-secrets; a file written with
    /// them is created readable by its owner only.
    #[command(after_help = "Examples:\n  \
        tokenstore export > tokens.json\n  \
        tokenstore export --format zoho-csv --include-secrets --output tokens.csv")]
    Export(export::ExportArgs),
    /// Make a new random key for an encrypted store.
    #[command(after_help = "Examples:\n  \
        tokenstore keygen --output tokenstore.key\n  \
        export TOKENSTORE_KEY=$(tokenstore keygen)")]
    Keygen {
        /// Write the key to this new file (mode 600) instead of stdout.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Encrypt a plain store with the key in FILE.
    ///
    /// Every record is rewritten sealed into a new database in the store
    /// directory, which replaces the old one atomically; the old files,
    /// plaintext included, are deleted. Killed halfway, the store is still
    /// the plain one.
    #[command(after_help = "Example:\n  \
        tokenstore keygen --output tokenstore.key && tokenstore encrypt --new-key-file tokenstore.key")]
    Encrypt {
        /// The key to encrypt with (see `keygen`).
        #[arg(long, value_name = "FILE")]
        new_key_file: PathBuf,
    },
    /// Re-encrypt an encrypted store with a new key (the current one from
    /// --key-file or TOKENSTORE_KEY). Killed halfway, the old key still opens it.
    #[command(after_help = "Example:\n  \
        tokenstore --key-file old.key rekey --new-key-file new.key")]
    Rekey {
        /// The new key (see `keygen`).
        #[arg(long, value_name = "FILE")]
        new_key_file: PathBuf,
    },
    /// Turn an encrypted store back into a plain one (its key from
    /// --key-file or TOKENSTORE_KEY). Tokens are then stored in plaintext.
    Decrypt {
        /// Really store the tokens in plaintext.
        #[arg(long)]
        yes: bool,
    },
    /// Own and serve an embedded store in the foreground until SIGTERM or
    /// SIGINT, for systemd or a container sidecar: every app process that
    /// opens the store meanwhile uses it through this one, so that no app
    /// worker has to own it. Prints one line once it serves.
    #[command(after_help = "Example:\n  \
        tokenstore --db /var/lib/myapp/tokens serve")]
    Serve,
    /// Log a user in: exchange a grant code at Zoho's accounts server and
    /// save the tokens under --user (creates the store). Prints the record's
    /// id and user, never a secret.
    ///
    /// A secret given as `-` is read from stdin, one line per `-`, in the
    /// order --client-secret, --grant-token.
    #[cfg(feature = "oauth")]
    #[command(after_help = "Example:\n  \
        tokenstore login --user ana@example.com --client-id 1000.X --client-secret - --grant-token - --dc eu < secrets.txt")]
    Login(oauth::LoginArgs),
    /// Print a valid access token alone on stdout, refreshing it first if it
    /// expires within 5 s (or --min-valid). The one command that prints a
    /// secret: for scripts.
    #[cfg(feature = "oauth")]
    #[command(after_help = "Example:\n  \
        curl -H \"Authorization: Zoho-oauthtoken $(tokenstore token --user ana@example.com)\" \
        https://www.zohoapis.com/crm/v8/users")]
    Token(oauth::TokenArgs),
    /// Refresh a record's access token now (prints its expiry, not the token).
    #[cfg(feature = "oauth")]
    Refresh(oauth::RefreshArgs),
    /// Revoke a record's refresh token at the accounts server, then delete
    /// the record.
    #[cfg(feature = "oauth")]
    Revoke(oauth::RevokeArgs),
}

#[derive(Args)]
struct FindArgs {
    /// User name (rule 1).
    #[arg(long)]
    user: Option<String>,
    /// Access token (rule 2), or `-` to read it from stdin.
    #[arg(long)]
    access: Option<String>,
    /// Refresh token (rule 3), or `-`.
    #[arg(long)]
    refresh: Option<String>,
    /// Grant token (rule 3), or `-`.
    #[arg(long)]
    grant: Option<String>,
    /// Client id (presence only).
    #[arg(long)]
    client_id: Option<String>,
    /// Client secret (presence only), or `-`.
    #[arg(long)]
    client_secret: Option<String>,
    /// Record id (rule 4).
    #[arg(long)]
    id: Option<String>,
    /// Also print the secret values of the record found.
    #[arg(long)]
    show_secrets: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli.logs.init();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tokenstore: {}", e.message);
            if let Some(hint) = e.error.as_ref().and_then(|error| hint(error, &cli)) {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(e.code)
        }
    }
}

/// How `login` is run, for the hints that call for it.
#[cfg(feature = "oauth")]
fn run(cli: &Cli) -> CliResult {
    let out = Output { json: cli.json };
    let key = || current_key(cli.key_file.as_deref());
    let lock_wait = Duration::try_from_secs_f64(cli.lock_timeout)
        .map_err(|_| CliError::input("--lock-timeout must be a number of seconds, 0 or more"))?;
    let open = |spec: &str, create: bool, key: Option<Key>| open(spec, create, key, lock_wait);
    match &cli.command {
        Command::Import(args) => import::run(&*open(&cli.db, true, key()?)?, args, out),
        #[cfg(feature = "oauth")]
        Command::Login(args) => {
            oauth::login(std::sync::Arc::new(open(&cli.db, true, key()?)?), args, out)
        }
        #[cfg(feature = "oauth")]
        Command::Token(args) => oauth::token(
            std::sync::Arc::new(open(&cli.db, false, key()?)?),
            args,
            out,
        ),
        #[cfg(feature = "oauth")]
        Command::Refresh(args) => oauth::refresh(
            std::sync::Arc::new(open(&cli.db, false, key()?)?),
            args,
            out,
        ),
        #[cfg(feature = "oauth")]
        Command::Revoke(args) => oauth::revoke(
            std::sync::Arc::new(open(&cli.db, false, key()?)?),
            args,
            out,
        ),
        Command::Keygen { output } => keygen(output.as_deref()),
        Command::Serve => serve(&cli.db, key()?, out),
        Command::Copy(args) => {
            let from_key = match args.from_key_file.as_deref() {
                Some(path) => Some(key_file(path)?),
                None => key()?,
            };
            let to_key = match args.to_key_file.as_deref() {
                Some(path) => Some(key_file(path)?),
                None => key()?,
            };
            if StoreKind::of(&args.from)? == StoreKind::of(&args.to)?
                && same_place(&args.from, &args.to)
            {
                return Err(CliError::input(
                    "--from and --to name the same store; copy into another one",
                ));
            }
            let source = open(&args.from, false, from_key)?;
            let target = open(&args.to, true, to_key)?;
            import::copy(&*source, &*target, args, out)
        }
        Command::Encrypt { new_key_file } => {
            let new = key_file(new_key_file)?;
            change_key(open(&cli.db, false, None)?, Some(new), "encrypted", out)
        }
        Command::Rekey { new_key_file } => {
            let current = key()?.ok_or_else(|| {
                CliError::input("rekey needs the current key: --key-file PATH or TOKENSTORE_KEY")
            })?;
            let new = key_file(new_key_file)?;
            change_key(
                open(&cli.db, false, Some(current))?,
                Some(new),
                "re-encrypted",
                out,
            )
        }
        Command::Decrypt { yes } => {
            if !yes {
                return Err(CliError::refused(
                    "refusing to store the tokens in plaintext without --yes",
                ));
            }
            let current = key()?.ok_or_else(|| {
                CliError::input("decrypt needs the current key: --key-file PATH or TOKENSTORE_KEY")
            })?;
            change_key(open(&cli.db, false, Some(current))?, None, "decrypted", out)
        }
        command => {
            let store = open(&cli.db, false, key()?)?;
            let store = &*store;
            match command {
                Command::List { show_secrets } => list(store, *show_secrets, out),
                Command::Show { id, show_secrets } => show(store, id, *show_secrets, out),
                Command::Find(args) => find(store, args, out),
                Command::Delete { id } => delete(store, id, out),
                Command::Clear { yes } => clear(store, *yes, out),
                Command::Check => check(store, out),
                Command::Stats => stats(store, out),
                Command::Purge { idle_days, dry_run } => {
                    purge::run(store, *idle_days, *dry_run, out)
                }
                Command::Export(args) => export::run(store, args),
                Command::Import(_)
                | Command::Keygen { .. }
                | Command::Serve
                | Command::Copy(_)
                | Command::Encrypt { .. }
                | Command::Rekey { .. }
                | Command::Decrypt { .. } => unreachable!("handled above"),
                #[cfg(feature = "oauth")]
                Command::Login(_)
                | Command::Token(_)
                | Command::Refresh(_)
                | Command::Revoke(_) => {
                    unreachable!("handled above")
                }
            }
        }
    }
}

/// How results are printed.
#[derive(Clone, Copy)]
struct Output {
    json: bool,
}

impl Output {
    /// Prints `value` as JSON, or `text()` as text.
    fn print(self, value: serde_json::Value, text: impl FnOnce() -> String) {
        if self.json {
            println!("{value:#}");
        } else {
            let text = text();
            if !text.is_empty() {
                println!("{}", text.trim_end());
            }
        }
    }
}

/// Opens the store `spec` names (encrypted when a key is given), waiting up
/// to `lock_wait` for another process to close an embedded one; only
/// `import`, `copy` (its target) and `login` create a store that does not
/// exist (an embedded store's directory, a database's tables).
fn open(spec: &str, create: bool, key: Option<Key>, lock_wait: Duration) -> CliResult<AnyStore> {
    let options = OpenOptions::new()
        .maybe_key(key)
        .wait_for_lock(lock_wait)
        .create(create);
    tokenstore::open_with(spec, options).map_err(|e| {
        let mut failure = CliError::from(e);
        if let Some(tokenstore::Error::StoreNotFound { location }) = &failure.error {
            failure.message = format!(
                "no token store at {location}; pass --db DIR|URL or set TOKENSTORE_DB \
                 (`tokenstore import` or `tokenstore login` creates one)"
            );
        }
        failure
    })
}

/// Whether two store strings name the same store (same directory, or the
/// same URL).
fn same_place(a: &str, b: &str) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a.trim_end_matches('/') == b.trim_end_matches('/'),
    }
}

/// A progress bar of `len` steps on stderr, drawn only when it is a terminal.
fn progress_bar(len: usize, template: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len as u64);
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Records in id order: numeric ids by value, then the others.
fn sorted_tokens(store: &dyn Backend) -> CliResult<Vec<OAuthToken>> {
    let mut tokens = store.get_tokens()?;
    tokens.sort_by(|a, b| render::id_order(a.id.as_deref(), b.id.as_deref()));
    Ok(tokens)
}

fn list(store: &dyn Backend, show_secrets: bool, out: Output) -> CliResult {
    let tokens = sorted_tokens(store)?;
    let now = now_ms();
    out.print(
        tokens
            .iter()
            .map(|t| render::token_json(t, show_secrets, now))
            .collect(),
        || render::token_table(&tokens, show_secrets, now),
    );
    Ok(())
}

fn show(store: &dyn Backend, id: &str, show_secrets: bool, out: Output) -> CliResult {
    let token = store
        .find_token_by_id(id)?
        .ok_or_else(|| CliError::refused(format!("no record with id {id:?}")))?;
    let now = now_ms();
    out.print(render::token_json(&token, show_secrets, now), || {
        render::token_details(&token, show_secrets, now)
    });
    Ok(())
}

fn find(store: &dyn Backend, args: &FindArgs, out: Output) -> CliResult {
    let mut stdin = std::io::stdin().lock();
    let mut secret = |value: &Option<String>, name: &str| -> CliResult<Option<String>> {
        match value.as_deref() {
            Some("-") => read_secret_line(&mut stdin, name).map(Some),
            other => Ok(other.map(str::to_owned)),
        }
    };
    // Read in the documented order: access, refresh, grant, client secret.
    let access = secret(&args.access, "--access")?;
    let refresh = secret(&args.refresh, "--refresh")?;
    let grant = secret(&args.grant, "--grant")?;
    let client_secret = secret(&args.client_secret, "--client-secret")?;
    let mut query = OAuthToken::new();
    query.id = args.id.clone();
    query.user_name = args.user.clone();
    query.client_id = args.client_id.clone();
    query.client_secret = client_secret;
    query.refresh_token = refresh;
    query.access_token = access;
    query.grant_token = grant;
    let Some(rule) = lookup_key(&query) else {
        return Err(CliError::input(
            "these options select no record: give --user, or --access (without client \
             credentials), or --refresh/--grant with both --client-id and --client-secret, or --id",
        ));
    };
    let rule = render::rule_name(&rule);
    let found = store.find_token(&query)?;
    let now = now_ms();
    match found {
        Some(token) => {
            out.print(render::token_json(&token, args.show_secrets, now), || {
                format!(
                    "found by {rule}\n{}",
                    render::token_details(&token, args.show_secrets, now)
                )
            });
            Ok(())
        }
        None => Err(CliError::refused(format!(
            "no record matches (looked up by {rule})"
        ))),
    }
}

/// One line of stdin, without its line end, for a secret given as `-`.
fn read_secret_line(stdin: &mut impl BufRead, name: &str) -> CliResult<String> {
    let mut line = String::new();
    let read = stdin
        .read_line(&mut line)
        .map_err(|e| CliError::input(format!("cannot read {name} from stdin: {e}")))?;
    if read == 0 {
        return Err(CliError::input(format!(
            "{name} is `-` but stdin has no line left for it"
        )));
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

fn delete(store: &dyn Backend, id: &str, out: Output) -> CliResult {
    if !store.delete_token(id)? {
        return Err(CliError::refused(format!("no record with id {id:?}")));
    }
    out.print(json!({ "deleted": id }), || format!("deleted record {id}"));
    Ok(())
}

fn clear(store: &dyn Backend, yes: bool, out: Output) -> CliResult {
    if !yes {
        return Err(CliError::refused(format!(
            "refusing to delete all {} records without --yes",
            store.count()?
        )));
    }
    let count = store.delete_tokens()?;
    out.print(json!({ "deleted": count }), || {
        format!("deleted {count} records")
    });
    Ok(())
}

fn check(store: &dyn Backend, out: Output) -> CliResult {
    let report = store.check()?;
    let problems: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
    out.print(
        json!({
            "ok": report.is_ok(),
            "records": report.records,
            "index_entries": report.index_entries,
            "problems": problems,
        }),
        || report.to_string(),
    );
    if report.is_ok() {
        Ok(())
    } else {
        Err(CliError::refused(format!(
            "{} problem(s) found in {}",
            report.problems.len(),
            store.location()
        )))
    }
}

/// `serve`: owns the store and serves it until SIGTERM or SIGINT.
fn serve(spec: &str, key: Option<Key>, out: Output) -> CliResult {
    if StoreKind::of(spec)? != StoreKind::Sled {
        return Err(CliError::input(
            "serve is for an embedded store (a directory); a database server serves itself",
        ));
    }
    // The signals are taken before the store's threads start, so that they
    // reach this thread only.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .map_err(|e| CliError::input(format!("cannot wait for SIGTERM and SIGINT: {e}")))?;
    let store = tokenstore::open_with(spec, OpenOptions::new().maybe_key(key))?;
    let sharing = store.info()?.sharing;
    match sharing {
        Some(sharing) if sharing.role == tokenstore::Role::Owner => {
            let pid = std::process::id();
            out.print(json!({ "serving": store.location(), "pid": pid }), || {
                format!(
                    "serving {} (pid {pid}); stop with SIGTERM or SIGINT",
                    store.location()
                )
            });
            use std::io::Write;
            let _ = std::io::stdout().flush();
        }
        Some(sharing) => {
            return Err(CliError::refused(format!(
                "the store at {} is already owned and served by pid {}; stop that process \
                 first, or let it serve",
                store.location(),
                sharing.owner_pid
            )))
        }
        None => {
            return Err(CliError::input(
                "this store cannot be shared on this system (serve needs Linux)",
            ))
        }
    }
    let signal = signals.forever().next();
    drop(store);
    if !out.json {
        eprintln!(
            "tokenstore: stopped ({}); the store is closed",
            match signal {
                Some(signal_hook::consts::SIGTERM) => "SIGTERM",
                _ => "SIGINT",
            }
        );
    }
    Ok(())
}

fn stats(store: &dyn Backend, out: Output) -> CliResult {
    let tokens = store.get_tokens()?;
    let now = now_ms();
    let count = |f: &dyn Fn(&OAuthToken) -> bool| tokens.iter().filter(|t| f(t)).count();
    let with_access = count(&|t| t.access_token.is_some());
    let with_refresh = count(&|t| t.refresh_token.is_some());
    let with_grant = count(&|t| t.grant_token.is_some());
    let expired = count(&|t| t.expiry_time.is_some_and(|e| e <= now));
    let expiring = count(&|t| {
        t.expiry_time
            .is_some_and(|e| e > now && e <= now + 3_600_000)
    });
    let no_expiry = count(&|t| t.expiry_time.is_none());
    let info = store.info()?;
    // Who shares an embedded store: the owner's pid, and how many other
    // processes use it through the owner (this command among them when it
    // is not the owner).
    let sharing = info.sharing.as_ref().map(|s| {
        (
            s.owner_pid,
            s.clients,
            if s.role == tokenstore::Role::Owner {
                "this command (no other process had the store open)"
            } else {
                "another process"
            },
        )
    });
    out.print(
        json!({
            "owner_pid": sharing.map(|s| s.0),
            "clients": sharing.map(|s| s.1),
            "records": tokens.len(),
            "with_access_token": with_access,
            "with_refresh_token": with_refresh,
            "with_grant_token": with_grant,
            "access_expired": expired,
            "access_expiring_within_1h": expiring,
            "without_expiry": no_expiry,
            "backend": store.kind(),
            "disk_bytes": info.size_bytes,
            "format_version": info.format_version,
            "encrypted": info.encrypted,
        }),
        || {
            render::key_values(&[
                ("records", tokens.len().to_string()),
                ("with access token", with_access.to_string()),
                ("with refresh token", with_refresh.to_string()),
                ("with grant token", with_grant.to_string()),
                ("access expired", expired.to_string()),
                ("access expiring within 1 h", expiring.to_string()),
                ("without expiry time", no_expiry.to_string()),
                ("backend", store.kind().to_string()),
                (
                    "disk size",
                    info.size_bytes
                        .map_or_else(|| "-".to_string(), render::bytes),
                ),
                ("format version", info.format_version.to_string()),
                (
                    "encrypted",
                    if info.encrypted { "yes" } else { "no" }.to_string(),
                ),
                (
                    "owner",
                    sharing.map_or_else(
                        || "-".to_string(),
                        |(pid, _, who)| format!("pid {pid}: {who}"),
                    ),
                ),
                (
                    "clients connected",
                    sharing.map_or_else(|| "-".to_string(), |s| s.1.to_string()),
                ),
            ])
        },
    );
    Ok(())
}
