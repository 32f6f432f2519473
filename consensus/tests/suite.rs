//! openraft's storage conformance suite, run against the redb store. Each
//! test of the suite gets a fresh store in its own temporary directory.

use consensus::store::{self, LogStore, StateMachineStore};
use consensus::types::{MemberId, TypeConfig};
use openraft::StorageError;
use openraft::testing::{StoreBuilder, Suite};
use tempfile::TempDir;

struct RedbBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for RedbBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<MemberId>> {
        let dir = TempDir::new().expect("a temporary directory");
        let (log, sm) = store::open(dir.path()).await.expect("a fresh store opens");
        Ok((dir, log, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    if let Err(e) = Suite::test_all(RedbBuilder) {
        panic!("the redb store fails openraft's storage suite: {e}");
    }
}
