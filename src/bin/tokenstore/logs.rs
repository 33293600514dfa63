//! The command's log records on stderr: none by default, `-v` INFO, `-vv`
//! DEBUG, `-vvv` TRACE, or `RUST_LOG` (env_logger's syntax, e.g.
//! `RUST_LOG=tokenstore::oauth=debug`), which says more where it names a
//! target. Whatever is asked, no dependency's record goes past
//! [`tokenstore::logging::ceiling`]: sled, ureq and the database clients
//! print stored data and request bytes below it.

use log::{LevelFilter, Log, Metadata, Record};
use tokenstore::logging::ceiling;

/// env_logger, with every record above its target's ceiling dropped.
struct Capped(env_logger::Logger);

impl Log for Capped {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= ceiling(metadata.target()) && self.0.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        if self.enabled(record.metadata()) {
            self.0.log(record);
        }
    }

    fn flush(&self) {
        self.0.flush();
    }
}

/// The `-v` flag, given up to three times.
#[derive(clap::Args)]
pub struct Verbosity {
    /// Print what the store does on stderr: -v refreshes, logins, revokes,
    /// lock waits, take-overs; -vv also opening, closing, warm-up and every
    /// refresh that worked; -vvv everything. RUST_LOG (e.g.
    /// RUST_LOG=tokenstore::oauth=debug) chooses by target. Never a secret.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
}

impl Verbosity {
    /// Installs the logger; with neither `-v` nor `RUST_LOG`, none (the
    /// command stays quiet).
    pub fn init(&self) {
        init(self.verbose);
    }
}

fn init(verbose: u8) {
    let from_env = std::env::var_os("RUST_LOG").is_some_and(|v| !v.is_empty());
    if verbose == 0 && !from_env {
        return;
    }
    let mut builder = env_logger::Builder::new();
    builder.filter_level(match verbose {
        0 => LevelFilter::Off,
        1 => LevelFilter::Info,
        2 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    });
    if from_env {
        builder.parse_env("RUST_LOG");
    }
    let logger = builder.build();
    let max = logger.filter();
    if log::set_boxed_logger(Box::new(Capped(logger))).is_ok() {
        log::set_max_level(max);
    }
}
