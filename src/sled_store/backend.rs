//! The embedded store's [`Backend`] capabilities.

use super::SledStore;
use crate::backend::{Backend, StoreInfo};
use crate::check::CheckReport;
use crate::engine::{self, Stage};
use crate::error::Result;
use crate::key::Key;

impl Backend for SledStore {
    fn kind(&self) -> &'static str {
        "sled"
    }
    fn location(&self) -> String {
        self.path().display().to_string()
    }
    fn count(&self) -> Result<usize> {
        Ok(self.len())
    }
    fn last_issued_id(&self) -> Result<u64> {
        Ok(SledStore::last_issued_id(self))
    }
    fn check(&self) -> Result<CheckReport> {
        SledStore::check(self)
    }
    fn apply_batch(&self, stage: &mut Stage<'_>) -> Result<()> {
        engine::apply_batch(self, stage)
    }
    fn info(&self) -> Result<StoreInfo> {
        Ok(StoreInfo::new(
            Some(self.size_on_disk()?),
            self.format_version(),
            self.is_encrypted(),
        ))
    }
    fn set_encryption(
        &mut self,
        key: Option<Key>,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<()> {
        self.set_encryption_with_progress(key, progress)
    }
}
