//! Group commit: durable writers wait for the disk outside the writer
//! lock, and one flush covers every write committed before it started.

use super::*;

impl SledStore {
    /// Ends a write that was committed to sled: takes its ticket while
    /// `locks` (the writer lock and the queue guard) are still held, so
    /// tickets follow commit order, releases them, then waits until the
    /// write is durable ([`durable_through`](Self::durable_through)).
    pub(super) fn finish_write<L>(&self, locks: L) -> Result<()> {
        let ticket = {
            let mut state = self.group_commit.state.lock();
            state.committed += 1;
            state.committed
        };
        drop(locks);
        self.durable_through(ticket)
    }

    /// In durable mode, returns once the write holding `ticket` is on disk.
    ///
    /// Group commit: writers wait for the disk outside the writer lock, and
    /// one flush covers every write committed before it started. sled's
    /// flush holds off its transactions while it writes, so a writer that
    /// flushed at once would make the queued writers commit one flush at a
    /// time: a writer whose write is not covered waits while other writers
    /// are still on their way to a commit (at most `GROUP_COMMIT_WAIT`), and
    /// the last of them flushes for all. A lone writer flushes at once.
    pub(super) fn durable_through(&self, ticket: u64) -> Result<()> {
        if let Durability::Buffered { .. } = self.options.durability {
            return Ok(());
        }
        let group = &self.group_commit;
        let waiting_since = Instant::now();
        let mut state = group.state.lock();
        loop {
            if state.durable >= ticket {
                return Ok(());
            }
            if state.flushing {
                group.flushed.wait(&mut state);
                continue;
            }
            if group.queued.load(Ordering::Acquire) > 0
                && waiting_since.elapsed() < GROUP_COMMIT_WAIT
            {
                group
                    .flushed
                    .wait_until(&mut state, waiting_since + GROUP_COMMIT_WAIT);
                continue;
            }
            state.flushing = true;
            let covers = state.committed;
            drop(state);
            let flushed = self.flush();
            state = group.state.lock();
            state.flushing = false;
            if flushed.is_ok() {
                state.durable = state.durable.max(covers);
            }
            group.flushed.notify_all();
            // On failure the waiting writers retry the flush themselves, and
            // each gets its own error if it fails again.
            flushed?;
        }
    }
}

/// The state of group commit: writes counted in commit order, and how many
/// of them a finished flush covers.
#[derive(Default)]
pub(super) struct GroupCommit {
    pub(super) state: Mutex<GroupCommitState>,
    pub(super) flushed: Condvar,
    /// Writers between asking for the writer lock and their commit.
    pub(super) queued: AtomicUsize,
}

/// How long a committed durable write waits for writers queued behind it
/// to commit too, so that one flush covers them all.
pub(super) const GROUP_COMMIT_WAIT: Duration = Duration::from_millis(1);

impl GroupCommit {
    /// Counts a writer as on its way to a commit until the guard drops.
    pub(super) fn queue(&self) -> Queued<'_> {
        self.queued.fetch_add(1, Ordering::AcqRel);
        Queued(self)
    }
}

pub(super) struct Queued<'a>(&'a GroupCommit);

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        if self.0.queued.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Under the state lock, so a writer about to wait for the queue
            // cannot miss this.
            let _state = self.0.state.lock();
            self.0.flushed.notify_all();
        }
    }
}

#[derive(Default)]
pub(super) struct GroupCommitState {
    /// Writes committed to sled so far (tickets).
    pub(super) committed: u64,
    /// Writes known to be on disk: every ticket up to this one.
    pub(super) durable: u64,
    /// Whether a writer is flushing now.
    pub(super) flushing: bool,
}
