//! The engine's log records into Python's `logging`: a record of target
//! `tokenstore::oauth` goes to the logger `tokenstore.oauth` (a child of
//! `tokenstore`, so an app's configuration of `tokenstore` covers it; ureq's
//! go to `ureq.…`), at the same level (TRACE as 5).
//!
//! `pyo3-log` does the mapping (its 0.13 line supports pyo3 0.26 to 0.30);
//! this bridge wraps it for what a long-lived app server needs:
//!
//! - **No secret whatever the configuration**: records past
//!   [`tokenstore::logging::ceiling`] (sled's TRACE, ureq's TRACE, the
//!   database clients' DEBUG, which print stored data and request bytes)
//!   are dropped before Python sees them, even with the root logger at 1.
//! - **Levels asked each time** (`Caching::Loggers`): Django and Flask
//!   configure logging after imports, often after a store was opened; a
//!   cached level would hide or show the wrong records. The cost is one
//!   GIL acquisition per record, and the engine logs only events (a
//!   refresh, a login, a lock wait), never per lookup; sled's records below
//!   INFO are refused in Rust, without the GIL.
//! - **Threads without the GIL** (the warm-up, refresh ahead, the shared
//!   store's server) attach to the interpreter for the record, as any
//!   Python thread would; the package releases the GIL around every call
//!   into the engine and while closing a store, so no thread holding it
//!   waits for one that logs.
//! - **Interpreter shutdown**: from the `atexit` hook on, records are
//!   dropped: attaching a thread to a finalizing interpreter can hang it,
//!   and a store closed at exit joins its threads.
//! - **Fork**: the bridge holds no lock of its own; Python re-creates its
//!   GIL and its logging locks in a child, and the cached logger objects
//!   are the child's copies.
//! - A logging handler that raises is Python's to report (`handleError`);
//!   no exception is left behind on the calling thread.

use std::sync::atomic::{AtomicBool, Ordering};

use log::{LevelFilter, Log, Metadata, Record};
use pyo3::prelude::*;
use pyo3_log::{Caching, Logger};
use tokenstore::logging::ceiling;

/// Set by the `atexit` hook: the interpreter is shutting down.
static SHUTTING_DOWN: AtomicBool = AtomicBool::new(false);

struct Bridge(Logger);

impl Log for Bridge {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= ceiling(metadata.target())
            && !SHUTTING_DOWN.load(Ordering::Acquire)
            && self.0.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        // `None`: the interpreter is gone or finalizing; nowhere to go.
        let _ = Python::try_attach(|py| {
            let pending = PyErr::take(py);
            self.0.log(record);
            // A failure of logging itself (reported by Python already).
            drop(PyErr::take(py));
            if let Some(pending) = pending {
                pending.restore(py);
            }
        });
    }

    fn flush(&self) {}
}

#[pyfunction]
fn _stop_logging() {
    SHUTTING_DOWN.store(true, Ordering::Release);
}

/// Installs the bridge as the process's `log` logger, unless another
/// extension installed one first (then that one gets the records).
pub fn install(module: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = module.py();
    // Nothing this crate or ureq logs is at TRACE: DEBUG keeps sled's TRACE
    // calls at one atomic load.
    let logger = Logger::new(py, Caching::Loggers)?.filter(LevelFilter::Debug);
    if log::set_boxed_logger(Box::new(Bridge(logger))).is_ok() {
        log::set_max_level(LevelFilter::Debug);
        let stop = wrap_pyfunction!(_stop_logging, module)?;
        py.import("atexit")?.call_method1("register", (stop,))?;
    }
    Ok(())
}
