//! `--vs pocketbase --files`: file upload and download throughput for 1 MiB and 50 MiB files,
//! and image thumbnails on first render and from the cache, through PocketBase's file field and
//! `?thumb=` and through Plinth's file store, in one run.
//!
//! Plinth takes 1 MiB files as a direct multipart upload; 50 MiB is past its direct limit
//! (25 MiB), so there it is the presigned flow, all three requests timed (open the slot, send
//! the bytes, complete). PocketBase takes both as a multipart record create.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::pocketbase::PocketBase;
use crate::record::{Comparison, Figure};
use crate::{percentile, Options, Plinth};

const BOUNDARY: &str = "plinth-bench-boundary";
const MIB: usize = 1024 * 1024;

fn form(fields: &[(&str, &str)], filename: &str, content_type: &str, bytes: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(bytes.len() + 1024);
    for (name, value) in fields {
        body.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes(),
        );
    }
    body.extend_from_slice(
        format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\nContent-Type: {content_type}\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    body
}

/// Bytes that are no image and compress badly.
fn blob(size: usize, seed: usize) -> Vec<u8> {
    let mut state = seed as u64 * 6_364_136_223_846_793_005 + 1;
    (0..size)
        .map(|_| {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            (state >> 56) as u8
        })
        .collect()
}

/// A 1600 x 1200 JPEG photo-like gradient, different for each `seed`.
fn photo(seed: u32) -> Vec<u8> {
    let image = image::RgbImage::from_fn(1600, 1200, |x, y| {
        image::Rgb([((x + seed * 7) % 256) as u8, ((y + seed * 13) % 256) as u8, ((x ^ y) % 256) as u8])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85);
    image::DynamicImage::ImageRgb8(image).write_with_encoder(encoder).unwrap_or_default();
    out.into_inner()
}

/// Runs `count` operations, `concurrency` at a time; each answers the bytes it moved. The figure's
/// rate is MiB/s when `bytes` is set, else operations per second.
async fn timed<F, Fut>(count: usize, concurrency: usize, bytes: bool, operation: F) -> anyhow::Result<Figure>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<usize>> + Send,
{
    let operation = Arc::new(operation);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (operation, next) = (operation.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut moved = 0usize;
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= count {
                    return anyhow::Ok((latencies, moved));
                }
                let sent = Instant::now();
                moved += operation(n).await?;
                latencies.push(sent.elapsed());
            }
        }));
    }
    let mut latencies: Vec<Duration> = Vec::new();
    let mut moved = 0;
    for worker in workers {
        let (mut l, m) = worker.await??;
        latencies.append(&mut l);
        moved += m;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let per_second = if bytes { moved as f64 / MIB as f64 / elapsed } else { count as f64 / elapsed };
    Ok(Figure {
        median_us: percentile(&latencies, 0.5).as_secs_f64() * 1e6,
        p99_us: percentile(&latencies, 0.99).as_secs_f64() * 1e6,
        per_second,
        failures: 0,
    })
}

async fn checked(response: reqwest::Response) -> anyhow::Result<reqwest::Response> {
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        bail!("{status}: {}", text.chars().take(300).collect::<String>());
    }
    Ok(response)
}

/// Uploads `bytes` to PocketBase as a new `docs` record; its id and stored filename.
async fn pocketbase_upload(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    name: &str,
    content_type: &str,
    bytes: &[u8],
) -> anyhow::Result<(String, String)> {
    let response = client
        .post(format!("{base}/api/collections/docs/records"))
        .bearer_auth(token)
        .header("content-type", format!("multipart/form-data; boundary={BOUNDARY}"))
        .body(form(&[("title", name)], name, content_type, bytes))
        .send()
        .await?;
    let record: Value = checked(response).await?.json().await?;
    Ok((record["id"].as_str().context("record id")?.to_string(), record["file"].as_str().context("file")?.to_string()))
}

/// Uploads `bytes` to Plinth directly; the file's id.
async fn plinth_upload(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    name: &str,
    content_type: &str,
    bytes: &[u8],
) -> anyhow::Result<String> {
    let response = client
        .post(format!("{base}/v1/files/upload"))
        .bearer_auth(key)
        .header("content-type", format!("multipart/form-data; boundary={BOUNDARY}"))
        .body(form(&[], name, content_type, bytes))
        .send()
        .await?;
    let file: Value = checked(response).await?.json().await?;
    Ok(file["data"]["id"].as_str().context("file id")?.to_string())
}

/// Uploads `bytes` to Plinth through a presigned slot (open, send, complete); the file's id.
async fn plinth_presigned(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    bytes: Arc<Vec<u8>>,
) -> anyhow::Result<String> {
    let slot = client
        .post(format!("{base}/v1/files/upload-url"))
        .bearer_auth(key)
        .json(&json!({ "filename": "big.bin", "size_bytes": bytes.len() }))
        .send()
        .await?;
    let slot: Value = checked(slot).await?.json().await?;
    let id = slot["data"]["file_id"].as_str().context("slot file id")?.to_string();
    let endpoint = slot["data"]["upload_endpoint"].as_str().context("upload endpoint")?.to_string();
    checked(client.post(endpoint).body(reqwest::Body::from(bytes.as_ref().clone())).send().await?).await?;
    let done =
        client.post(format!("{base}/v1/files/{id}/upload-complete")).bearer_auth(key).json(&json!({})).send().await?;
    checked(done).await?;
    Ok(id)
}

async fn fetch_len(client: &reqwest::Client, url: &str, token: Option<&str>) -> anyhow::Result<usize> {
    let mut request = client.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = checked(request.send().await?).await?;
    Ok(response.bytes().await?.len())
}

pub(crate) async fn run(
    client: &reqwest::Client,
    plinth: &Plinth,
    pocketbase: &PocketBase,
    options: &Options,
) -> anyhow::Result<()> {
    let token = pocketbase.superuser_token(client).await?;
    let collection = json!({
        "name": "docs",
        "type": "base",
        "listRule": "", "viewRule": "",
        "fields": [
            { "name": "title", "type": "text" },
            { "name": "file", "type": "file", "maxSelect": 1, "maxSize": 100 * MIB, "thumbs": ["200x200"] },
        ],
    });
    crate::call(client, reqwest::Method::POST, format!("{}/api/collections", pocketbase.base), &token, collection)
        .await?;
    let backend = if options.database_url.is_some() { "postgres" } else { "sqlite" };
    let small_count = (options.requests / 10).clamp(50, 400);
    let mut comparison = Comparison::new(
        format!("vs-pocketbase-files-{backend}"),
        "PocketBase",
        json!({ "pocketbase": crate::pocketbase::POCKETBASE_VERSION, "plinth_backend": backend,
                "small_files": small_count, "large_files": 6, "thumbnails": 24 }),
    );
    println!("PocketBase and Plinth ({backend}): files");
    comparison.header();
    let (pb, pb_token) = (Arc::new(pocketbase.base.clone()), Arc::new(token.clone()));
    let (ours, key) = (Arc::new(plinth.base.clone()), Arc::new(plinth.key.clone()));

    // 1 MiB uploads, 4 at a time.
    let small = Arc::new(blob(MIB, 1));
    let theirs = {
        let (client, pb, pb_token, small) = (client.clone(), pb.clone(), pb_token.clone(), small.clone());
        timed(small_count, 4, true, move |n| {
            let (client, pb, pb_token, small) = (client.clone(), pb.clone(), pb_token.clone(), small.clone());
            async move {
                pocketbase_upload(&client, &pb, &pb_token, &format!("s{n}.bin"), "application/octet-stream", &small)
                    .await?;
                Ok(small.len())
            }
        })
        .await?
    };
    let mine = {
        let (client, ours, key, small) = (client.clone(), ours.clone(), key.clone(), small.clone());
        timed(small_count, 4, true, move |n| {
            let (client, ours, key, small) = (client.clone(), ours.clone(), key.clone(), small.clone());
            async move {
                plinth_upload(&client, &ours, &key, &format!("s{n}.bin"), "application/octet-stream", &small).await?;
                Ok(small.len())
            }
        })
        .await?
    };
    comparison.add("upload 1 MiB, 4 at a time (MiB/s)", theirs, mine);

    // 1 MiB downloads, 8 at a time, of one file.
    let (their_id, their_name) =
        pocketbase_upload(client, &pb, &pb_token, "one.bin", "application/octet-stream", &small).await?;
    let their_url = Arc::new(format!("{pb}/api/files/docs/{their_id}/{their_name}"));
    let our_id = plinth_upload(client, &ours, &key, "one.bin", "application/octet-stream", &small).await?;
    let our_url = Arc::new(format!("{ours}/v1/files/{our_id}/content"));
    let download = |url: Arc<String>, token: Option<Arc<String>>, count: usize, concurrency: usize| {
        let client = client.clone();
        timed(count, concurrency, true, move |_| {
            let (client, url, token) = (client.clone(), url.clone(), token.clone());
            async move { fetch_len(&client, &url, token.as_deref().map(String::as_str)).await }
        })
    };
    let theirs = download(their_url.clone(), None, small_count * 2, 8).await?;
    let mine = download(our_url.clone(), Some(key.clone()), small_count * 2, 8).await?;
    comparison.add("download 1 MiB, 8 at a time (MiB/s)", theirs, mine);

    // 50 MiB uploads and downloads, 2 at a time.
    let large = Arc::new(blob(50 * MIB, 2));
    let theirs = {
        let (client, pb, pb_token, large) = (client.clone(), pb.clone(), pb_token.clone(), large.clone());
        timed(6, 2, true, move |n| {
            let (client, pb, pb_token, large) = (client.clone(), pb.clone(), pb_token.clone(), large.clone());
            async move {
                pocketbase_upload(&client, &pb, &pb_token, &format!("l{n}.bin"), "application/octet-stream", &large)
                    .await?;
                Ok(large.len())
            }
        })
        .await?
    };
    let mine = {
        let (client, ours, key, large) = (client.clone(), ours.clone(), key.clone(), large.clone());
        timed(6, 2, true, move |_| {
            let (client, ours, key, large) = (client.clone(), ours.clone(), key.clone(), large.clone());
            async move {
                plinth_presigned(&client, &ours, &key, large.clone()).await?;
                Ok(large.len())
            }
        })
        .await?
    };
    comparison.add("upload 50 MiB, 2 at a time (MiB/s)", theirs, mine);
    let (their_id, their_name) =
        pocketbase_upload(client, &pb, &pb_token, "big.bin", "application/octet-stream", &large).await?;
    let their_url = Arc::new(format!("{pb}/api/files/docs/{their_id}/{their_name}"));
    let our_id = plinth_presigned(client, &ours, &key, large.clone()).await?;
    let our_url = Arc::new(format!("{ours}/v1/files/{our_id}/content"));
    let theirs = download(their_url, None, 12, 2).await?;
    let mine = download(our_url, Some(key.clone()), 12, 2).await?;
    comparison.add("download 50 MiB, 2 at a time (MiB/s)", theirs, mine);

    // Thumbnails: 24 photos each side, each thumb rendered once (first render), then one
    // thumb asked again and again (cached).
    let photos: Vec<Vec<u8>> = (0..24).map(photo).collect();
    let mut their_thumbs = Vec::new();
    let mut our_thumbs = Vec::new();
    for (n, bytes) in photos.iter().enumerate() {
        let (id, name) = pocketbase_upload(client, &pb, &pb_token, &format!("p{n}.jpg"), "image/jpeg", bytes).await?;
        their_thumbs.push(format!("{pb}/api/files/docs/{id}/{name}?thumb=200x200"));
        let id = plinth_upload(client, &ours, &key, &format!("p{n}.jpg"), "image/jpeg", bytes).await?;
        our_thumbs.push(format!("{ours}/v1/files/{id}/variants/thumb"));
    }
    let first = |urls: Vec<String>, token: Option<Arc<String>>| {
        let (client, urls) = (client.clone(), Arc::new(urls));
        timed(urls.len(), 2, false, move |n| {
            let (client, urls, token) = (client.clone(), urls.clone(), token.clone());
            async move { fetch_len(&client, &urls[n], token.as_deref().map(String::as_str)).await }
        })
    };
    let theirs = first(their_thumbs.clone(), None).await?;
    let mine = first(our_thumbs.clone(), Some(key.clone())).await?;
    comparison.add("thumbnail 200x200 of a 1600x1200 JPEG, first (req/s)", theirs, mine);
    let cached = |url: String, token: Option<Arc<String>>| {
        let (client, url) = (client.clone(), Arc::new(url));
        timed(small_count * 5, 8, false, move |_| {
            let (client, url, token) = (client.clone(), url.clone(), token.clone());
            async move { fetch_len(&client, &url, token.as_deref().map(String::as_str)).await }
        })
    };
    let theirs = cached(their_thumbs[0].clone(), None).await?;
    let mine = cached(our_thumbs[0].clone(), Some(key.clone())).await?;
    comparison.add("thumbnail again, cached, 8 at a time (req/s)", theirs, mine);
    comparison.finish()
}
