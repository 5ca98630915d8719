//! SQLite's failures as the store's.

use crate::store::StoreError;
use rusqlite::ErrorCode;

/// The store's error for a SQLite failure: a full disk and a read-only file are told apart,
/// since the caller answers them differently.
pub(crate) fn backend(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    let code = (&e as &dyn std::any::Any)
        .downcast_ref::<rusqlite::Error>()
        .and_then(rusqlite::Error::sqlite_error_code);
    match code {
        Some(ErrorCode::DiskFull) => StoreError::Full,
        Some(ErrorCode::ReadOnly) => StoreError::ReadOnly,
        _ => StoreError::Backend(Box::new(e)),
    }
}
