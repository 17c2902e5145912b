//! Where file bytes live: an `object_store` store, a local folder by default
//! (`<data-dir>/files`, or `PLINTH_FILES_DIR`). Writes are synced to disk before they return,
//! so bytes that a 2xx answer stands for survive a crash.

use std::sync::Arc;

use axum::body::Bytes;
use futures_util::StreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{GetOptions, ObjectStore, PutOptions, PutPayload};

use crate::http::ApiError;

#[derive(Debug, Clone)]
pub struct Files(Arc<dyn ObjectStore>);

fn failed(error: object_store::Error) -> ApiError {
    tracing::error!(%error, "file storage failed");
    ApiError::internal("file storage failed")
}

impl Files {
    /// A store in the local folder `root`, created when missing.
    pub fn local(root: &std::path::Path) -> std::io::Result<Files> {
        std::fs::create_dir_all(root)?;
        let store = LocalFileSystem::new_with_prefix(root).map_err(std::io::Error::other)?.with_fsync(true);
        Ok(Files(Arc::new(store)))
    }

    pub async fn put(&self, path: &str, bytes: Bytes) -> Result<(), ApiError> {
        let path = Path::parse(path).map_err(|e| ApiError::internal(format!("file path: {e}")))?;
        self.0.put_opts(&path, PutPayload::from(bytes), PutOptions::default()).await.map_err(failed)?;
        Ok(())
    }

    /// The file's bytes; `None` when there is no such file.
    pub async fn get(&self, path: &str) -> Result<Option<Bytes>, ApiError> {
        let path = Path::parse(path).map_err(|e| ApiError::internal(format!("file path: {e}")))?;
        match self.0.get_opts(&path, GetOptions::default()).await {
            Ok(found) => Ok(Some(found.bytes().await.map_err(failed)?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(failed(error)),
        }
    }

    /// Removes the file; a missing file is not an error.
    pub async fn delete(&self, path: &str) -> Result<(), ApiError> {
        let path = Path::parse(path).map_err(|e| ApiError::internal(format!("file path: {e}")))?;
        let mut deleted = self.0.delete_stream(futures_util::stream::once(async move { Ok(path) }).boxed());
        while let Some(result) = deleted.next().await {
            match result {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(error) => return Err(failed(error)),
            }
        }
        Ok(())
    }
}
