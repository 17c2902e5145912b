//! Where file bytes live: one `object_store` store, a local folder by default (`<data-dir>/files`,
//! or `PLINTH_FILES_DIR`) or any S3-compatible bucket by URL (`--files-url s3://bucket/prefix`,
//! with the usual `AWS_*` credentials and `AWS_ENDPOINT_URL`), which is how several nodes share
//! files. Local writes are synced to disk before they return, so bytes that a 2xx answer stands
//! for survive a crash.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{GetOptions, GetRange, ObjectStore, PutPayload, WriteMultipart};

use crate::http::ApiError;

/// Parts of a streamed write: S3's smallest part is 5 MiB.
const PART_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct Files {
    store: Arc<dyn ObjectStore>,
    /// The folder of a local store, whose writes are synced.
    local_root: Option<PathBuf>,
    /// Turns to render image variants: CPU work, a few at a time.
    renders: Arc<tokio::sync::Semaphore>,
}

/// Variants rendered at once.
const RENDERS: usize = 2;

/// A stored object's bytes, streamed, with what was asked of them.
pub struct Fetched {
    pub stream: BoxStream<'static, object_store::Result<Bytes>>,
    /// The byte range answered.
    pub range: Range<u64>,
    /// The whole object's size.
    pub size: u64,
}

fn failed(error: object_store::Error) -> ApiError {
    tracing::error!(%error, "file storage failed");
    ApiError::internal("file storage failed")
}

fn path_of(path: &str) -> Result<Path, ApiError> {
    Path::parse(path).map_err(|e| ApiError::internal(format!("file path: {e}")))
}

/// Bytes a local read hands on at once: large reads, few trips to the blocking pool.
const READ_CHUNK: usize = 1024 * 1024;

/// `range` of a local file, streamed in large chunks (`object_store`'s local stream reads 8 KiB
/// at a time, each on the blocking pool).
async fn local_range(file: PathBuf, range: Option<Range<u64>>) -> Result<Option<Fetched>, ApiError> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let io_failed = |error: std::io::Error| {
        tracing::error!(%error, "reading a stored file failed");
        ApiError::internal("file storage failed")
    };
    let mut handle = match tokio::fs::File::open(&file).await {
        Ok(handle) => handle,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io_failed(error)),
    };
    let size = handle.metadata().await.map_err(io_failed)?.len();
    let range = range.map_or(0..size, |r| r.start.min(size)..r.end.min(size));
    if range.start > 0 {
        handle.seek(std::io::SeekFrom::Start(range.start)).await.map_err(io_failed)?;
    }
    let left = range.end - range.start;
    let stream = futures_util::stream::try_unfold((handle, left), |(mut handle, left)| async move {
        if left == 0 {
            return Ok(None);
        }
        let mut buffer = Vec::with_capacity(READ_CHUNK.min(left as usize));
        let read = (&mut handle).take(left.min(READ_CHUNK as u64)).read_to_end(&mut buffer).await;
        let read = read.map_err(|e| object_store::Error::Generic { store: "local", source: Box::new(e) })?;
        if read == 0 {
            let short = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the file is shorter than it was");
            return Err(object_store::Error::Generic { store: "local", source: Box::new(short) });
        }
        Ok(Some((Bytes::from(buffer), (handle, left - read as u64))))
    });
    Ok(Some(Fetched { stream: stream.boxed(), range, size }))
}

impl Files {
    /// A store in the local folder `root`, created when missing.
    pub fn local(root: &std::path::Path) -> std::io::Result<Files> {
        std::fs::create_dir_all(root)?;
        let root = root.canonicalize()?;
        let store = LocalFileSystem::new_with_prefix(&root).map_err(std::io::Error::other)?;
        Ok(Files {
            store: Arc::new(store),
            local_root: Some(root),
            renders: Arc::new(tokio::sync::Semaphore::new(RENDERS)),
        })
    }

    /// A store in an S3-compatible bucket, `s3://bucket[/prefix]`; credentials, region and
    /// endpoint from the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_REGION`, `AWS_ENDPOINT_URL`).
    pub fn s3(url: &str) -> Result<Files, String> {
        let parsed = url::Url::parse(url).map_err(|e| format!("--files-url: {e}"))?;
        if parsed.scheme() != "s3" {
            return Err("--files-url must be s3://bucket[/prefix]".into());
        }
        let bucket = parsed.host_str().filter(|b| !b.is_empty()).ok_or("--files-url names no bucket")?;
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        let endpoint = std::env::var("AWS_ENDPOINT_URL").or_else(|_| std::env::var("AWS_ENDPOINT")).ok();
        if let Some(endpoint) = endpoint.filter(|e| !e.is_empty()) {
            // A local S3-compatible server is reached over plain HTTP, path-style.
            builder = builder
                .with_allow_http(endpoint.starts_with("http://"))
                .with_endpoint(endpoint)
                .with_virtual_hosted_style_request(false);
        }
        let store = builder.build().map_err(|e| format!("--files-url: {e}"))?;
        let prefix = parsed.path().trim_matches('/');
        let store: Arc<dyn ObjectStore> =
            if prefix.is_empty() { Arc::new(store) } else { Arc::new(PrefixStore::new(store, prefix)) };
        Ok(Files { store, local_root: None, renders: Arc::new(tokio::sync::Semaphore::new(RENDERS)) })
    }

    /// `local` or `s3`, for logs and health.
    pub fn kind(&self) -> &'static str {
        if self.local_root.is_some() {
            "local"
        } else {
            "s3"
        }
    }

    /// A turn to render a variant; held while it renders.
    pub async fn render_turn(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.renders.acquire().await.ok()
    }

    /// Makes a local write durable: the file and its folder synced.
    async fn sync(&self, path: &str) -> Result<(), ApiError> {
        let Some(root) = &self.local_root else { return Ok(()) };
        let file = root.join(path);
        tokio::task::spawn_blocking(move || {
            std::fs::File::open(&file)?.sync_all()?;
            if let Some(folder) = file.parent() {
                std::fs::File::open(folder)?.sync_all()?;
            }
            std::io::Result::Ok(())
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| {
            tracing::error!(error = %e, "syncing a stored file failed");
            ApiError::internal("file storage failed")
        })
    }

    pub async fn put(&self, path: &str, bytes: Bytes) -> Result<(), ApiError> {
        self.store.put(&path_of(path)?, PutPayload::from(bytes)).await.map_err(failed)?;
        self.sync(path).await
    }

    /// Writes the chunks of `body` as one object, in parts, without holding it whole. `each`
    /// sees every chunk first and may refuse it (too many bytes); the write is then aborted and
    /// nothing is kept.
    pub async fn put_stream<S, E>(
        &self,
        path: &str,
        mut body: S,
        mut each: impl FnMut(&Bytes) -> Result<(), ApiError>,
    ) -> Result<(), ApiError>
    where
        S: futures_util::Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let location = path_of(path)?;
        let upload = self.store.put_multipart(&location).await.map_err(failed)?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
        let outcome = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| ApiError::bad_request(format!("the upload was cut short: {e}")))?;
                each(&chunk)?;
                writer.wait_for_capacity(2).await.map_err(failed)?;
                writer.put(chunk);
            }
            Ok(())
        }
        .await;
        match outcome {
            Ok(()) => {
                writer.finish().await.map_err(failed)?;
                self.sync(path).await
            }
            Err(error) => {
                if let Err(abort) = writer.abort().await {
                    tracing::warn!(%abort, "aborting a refused upload failed");
                }
                Err(error)
            }
        }
    }

    /// The file's bytes; `None` when there is no such file.
    pub async fn get(&self, path: &str) -> Result<Option<Bytes>, ApiError> {
        match self.store.get(&path_of(path)?).await {
            Ok(found) => Ok(Some(found.bytes().await.map_err(failed)?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(failed(error)),
        }
    }

    /// `range` of the file's bytes (all of them when `None`), streamed; `None` when there is no
    /// such file.
    pub async fn get_range(&self, path: &str, range: Option<Range<u64>>) -> Result<Option<Fetched>, ApiError> {
        if let Some(root) = &self.local_root {
            return local_range(root.join(path_of(path)?.as_ref()), range).await;
        }
        let options = GetOptions { range: range.map(GetRange::Bounded), ..GetOptions::default() };
        match self.store.get_opts(&path_of(path)?, options).await {
            Ok(found) => {
                let size = found.meta.size;
                let range = found.range.clone();
                Ok(Some(Fetched { stream: found.into_stream(), range, size }))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(failed(error)),
        }
    }

    /// The size of the stored file; `None` when there is none.
    pub async fn size(&self, path: &str) -> Result<Option<u64>, ApiError> {
        match self.store.head(&path_of(path)?).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(failed(error)),
        }
    }

    /// Removes the file; a missing file is not an error.
    pub async fn delete(&self, path: &str) -> Result<(), ApiError> {
        match self.store.delete(&path_of(path)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(failed(error)),
        }
    }

    /// Removes every file under `prefix` (a folder of the store), or the file `prefix` names.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<u64, ApiError> {
        if let Some(root) = &self.local_root {
            // A local folder goes whole, its emptied folders with it.
            let target = root.join(prefix);
            return tokio::task::spawn_blocking(move || {
                let removed =
                    if target.is_dir() { std::fs::remove_dir_all(&target) } else { std::fs::remove_file(&target) };
                match removed {
                    Ok(()) => Ok(1),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
                    Err(e) => {
                        tracing::error!(error = %e, "removing stored files failed");
                        Err(ApiError::internal("file storage failed"))
                    }
                }
            })
            .await
            .map_err(ApiError::internal)?;
        }
        self.delete(prefix).await?;
        let prefix = path_of(prefix)?;
        let locations = self.store.list(Some(&prefix)).map_ok(|meta| meta.location).boxed();
        let mut deleted = self.store.delete_stream(locations);
        let mut count = 0;
        while let Some(result) = deleted.next().await {
            match result {
                Ok(_) => count += 1,
                Err(object_store::Error::NotFound { .. }) => {}
                Err(error) => return Err(failed(error)),
            }
        }
        Ok(count)
    }

    /// Every file under `prefix`: its path and when it was last written.
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, chrono::DateTime<chrono::Utc>)>, ApiError> {
        let prefix = path_of(prefix)?;
        self.store
            .list(Some(&prefix))
            .map_ok(|meta| (meta.location.to_string(), meta.last_modified))
            .try_collect()
            .await
            .map_err(failed)
    }
}
