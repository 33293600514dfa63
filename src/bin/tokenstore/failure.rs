//! How a failure reaches the user: the exit code (from the library's error
//! kind), the one-line message, and the command's own hint.

use crate::{Cli, Command};

/// A failure, with the exit code it maps to. The message is one line and
/// never holds a secret.
#[derive(Debug)]
pub(crate) struct CliError {
    pub(crate) code: u8,
    pub(crate) message: String,
    /// The library error it comes from, which may call for a hint naming
    /// the command to run (see [`hint`]).
    pub(crate) error: Option<tokenstore::Error>,
}

/// Problems found, or an operation refused by the store's or the accounts
/// server's state.
pub(crate) const EXIT_REFUSED: u8 = 1;
/// Bad usage or input: arguments, files, the store named, its key.
pub(crate) const EXIT_INPUT: u8 = 2;
/// The store failed: damaged, of a format this build cannot read, or its
/// disk or database server failing.
pub(crate) const EXIT_STORE: u8 = 3;

impl CliError {
    /// Problems found, or an operation refused: exit 1.
    pub(crate) fn refused(message: impl Into<String>) -> Self {
        CliError {
            code: EXIT_REFUSED,
            message: message.into(),
            error: None,
        }
    }

    /// Bad usage, bad input: exit 2.
    pub(crate) fn input(message: impl Into<String>) -> Self {
        CliError {
            code: EXIT_INPUT,
            message: message.into(),
            error: None,
        }
    }

    /// The same failure, its message prefixed with what it concerns.
    pub(crate) fn within(mut self, what: &str) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }
}

/// The exit code of a library error: the one mapping, by kind (the accounts
/// server's refusals are told apart from its other failures within `OAuth`).
pub(crate) fn exit_code(error: &tokenstore::Error) -> u8 {
    use tokenstore::{Error as E, ErrorKind as K};
    match error.kind() {
        K::Conflict | K::NotFound | K::NotRefreshable | K::GrantRefused => EXIT_REFUSED,
        K::OAuth => match error {
            E::InvalidClient { .. } | E::RateLimited { .. } => EXIT_REFUSED,
            _ => EXIT_INPUT,
        },
        K::InvalidToken | K::InvalidLocation | K::Unsupported | K::Key | K::Locked => EXIT_INPUT,
        K::Corruption | K::UnsupportedVersion | K::Storage => EXIT_STORE,
        // A kind added to the library after this was written.
        _ => EXIT_INPUT,
    }
}

impl From<tokenstore::Error> for CliError {
    fn from(e: tokenstore::Error) -> Self {
        CliError {
            code: exit_code(&e),
            message: e.to_string(),
            error: Some(e),
        }
    }
}

pub(crate) type CliResult<T = ()> = Result<T, CliError>;

pub(crate) const LOGIN: &str =
    "`tokenstore login --user USER --client-id ID --client-secret - --grant-token -`";

/// The command's own advice on a library error (whose message names only
/// the library's remedies): the command or option to use, if there is one.
pub(crate) fn hint(error: &tokenstore::Error, cli: &Cli) -> Option<String> {
    use tokenstore::Error as E;
    let keys = match cli.command {
        Command::Copy(_) => {
            "--from-key-file FILE / --to-key-file FILE (or --key-file FILE or TOKENSTORE_KEY for both)"
        }
        _ => "--key-file FILE or TOKENSTORE_KEY",
    };
    Some(match error {
        E::Corruption { .. } => "run `tokenstore check` to list every problem".to_owned(),
        E::KeyRequired { .. } => format!("give the store's key: {keys}"),
        E::WrongKey { .. } => {
            format!("give the key the store was encrypted or last rekeyed with: {keys}")
        }
        E::NotEncrypted { .. } => format!(
            "open it without a key (no {keys}), or encrypt it first: \
             `tokenstore encrypt --new-key-file FILE`"
        ),
        E::RekeyRequired { .. } => {
            "give the store a new key: `tokenstore keygen --output new.key`, then \
             `tokenstore --key-file CURRENT.key rekey --new-key-file new.key`"
                .to_owned()
        }
        E::Locked { .. } => format!(
            "wait longer for the other process with --lock-timeout SECS (this run waited {} s)",
            cli.lock_timeout
        ),
        E::Unsupported { .. }
            if matches!(
                cli.command,
                Command::Encrypt { .. } | Command::Rekey { .. } | Command::Decrypt { .. }
            ) =>
        {
            "copy the records into a new store opened with the key wanted instead: \
             `tokenstore copy --from DB --to NEW [--to-key-file FILE]`"
                .to_owned()
        }
        #[cfg(feature = "oauth")]
        E::NotFound { .. } if matches!(cli.command, Command::Revoke(_)) => {
            "`tokenstore list` shows the records' ids".to_owned()
        }
        #[cfg(feature = "oauth")]
        E::GrantRefused { .. } if matches!(cli.command, Command::Revoke(_)) => {
            "the refresh token no longer works anyway: `tokenstore delete ID` removes the record"
                .to_owned()
        }
        #[cfg(feature = "oauth")]
        E::NotFound { .. } => format!("log the user in first: {LOGIN}"),
        #[cfg(feature = "oauth")]
        E::NotRefreshable { .. } | E::GrantRefused { .. } => {
            format!("log the user in again with a new grant code: {LOGIN}")
        }
        _ => return None,
    })
}
