//! Files: direct and presigned uploads, content with ranges and validators, signed links,
//! image variants, versions, trash and purge, folders, search, batches, quotas under
//! concurrency, end users' reach and tenant isolation; on SQLite, PostgreSQL and an
//! S3-compatible bucket.

use std::io::Cursor;

use hmac::Mac;
use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{Resp, TestApp, TestTenant, ADMIN_KEY};
use crate::files_backends;

pub(crate) const BOUNDARY: &str = "plinth-files-boundary";

/// One part of a multipart form: name, filename, content type, bytes.
pub(crate) type Part<'a> = (&'a str, Option<&'a str>, Option<&'a str>, &'a [u8]);

pub(crate) fn form(parts: &[Part<'_>]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, filename, content_type, bytes) in parts {
        body.extend_from_slice(format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"").as_bytes());
        if let Some(filename) = filename {
            body.extend_from_slice(format!("; filename=\"{filename}\"").as_bytes());
        }
        body.extend_from_slice(b"\r\n");
        if let Some(content_type) = content_type {
            body.extend_from_slice(format!("Content-Type: {content_type}\r\n").as_bytes());
        }
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

async fn upload_form(app: &TestApp, token: &str, parts: &[Part<'_>]) -> Resp {
    let request = app.request(Method::POST, "/v1/files/upload", Some(token));
    let content_type = format!("multipart/form-data; boundary={BOUNDARY}");
    app.send(request.header("content-type", content_type).body(form(parts))).await
}

/// Uploads `bytes` as `filename` with extra text fields; the file's JSON.
async fn upload(app: &TestApp, token: &str, filename: &str, bytes: &[u8], fields: &[(&str, &str)]) -> Value {
    let mut parts: Vec<Part<'_>> = vec![("file", Some(filename), None, bytes)];
    for (name, value) in fields {
        parts.push((name, None, None, value.as_bytes()));
    }
    let made = upload_form(app, token, &parts).await;
    made.expect(201);
    made.data().clone()
}

fn image_bytes(width: u32, height: u32, format: image::ImageFormat) -> Vec<u8> {
    let image = image::RgbImage::from_fn(width, height, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 90]));
    let mut out = Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(image).write_to(&mut out, format).unwrap();
    out.into_inner()
}

fn png(width: u32, height: u32) -> Vec<u8> {
    image_bytes(width, height, image::ImageFormat::Png)
}

/// The sides and format of an image's bytes.
fn decoded(bytes: &[u8]) -> (u32, u32, image::ImageFormat) {
    let reader = image::ImageReader::new(Cursor::new(bytes)).with_guessed_format().unwrap();
    let format = reader.format().unwrap();
    let image = reader.decode().unwrap();
    (image.width(), image.height(), format)
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for byte in bytes {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// A PNG whose header claims 100,000 x 100,000 pixels: a decompression bomb's shape.
fn bomb() -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&100_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    bytes.extend_from_slice(&13u32.to_be_bytes());
    bytes.extend_from_slice(&ihdr);
    bytes.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    bytes
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

async fn raw(app: &TestApp, request: reqwest::RequestBuilder) -> reqwest::Response {
    let _ = app;
    request.send().await.unwrap()
}

/// The keys under a file's folder of the store (versions and variants).
async fn stored_keys(app: &TestApp, tenant: &TestTenant, file_id: &str) -> Vec<String> {
    app.app.files.list(&format!("files/{}/{file_id}", tenant.id)).await.unwrap().into_iter().map(|(k, _)| k).collect()
}

/// Runs due background jobs until none is left (the purge of bytes).
async fn settle_jobs(app: &TestApp) {
    for _ in 0..200 {
        if app.count("SELECT COUNT(*) FROM jobs WHERE kind = 'file.purge' AND status <> 'dead'").await == 0 {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("the purge jobs did not run");
}

async fn events_of(app: &TestApp, file_id: &str) -> Vec<String> {
    let rows: Vec<(String,)> = sqlx::query_as("SELECT type FROM events WHERE resource_id = $1 ORDER BY id")
        .bind(file_id)
        .fetch_all(app.app.db.pool())
        .await
        .unwrap();
    rows.into_iter().map(|(t,)| t).collect()
}

async fn storage_used(app: &TestApp, tenant: &TestTenant) -> i64 {
    let entitlements = format!("/v1/tenants/{}/entitlements", tenant.id);
    app.get(&entitlements, ADMIN_KEY).await.data()["entitlements"]["storage"]["used"].as_i64().unwrap()
}

fn link_token(app: &TestApp, purpose: &str, file_id: &str, version: i64, expires: i64) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&app.app.link_key).unwrap();
    mac.update(format!("{purpose}\n{file_id}\n{version}\n{expires}").as_bytes());
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// Signs a new end user up and in: their id and access token.
async fn signed_in(app: &TestApp, tenant: &TestTenant, email: &str) -> (String, String) {
    let body = json!({ "email": email, "password": "granite-otter-harbour-42" });
    let request = |path: &str| app.request(Method::POST, path, None).header("x-tenant-id", &tenant.id).json(&body);
    app.send(request("/v1/auth/signup")).await.expect(201);
    let login = app.send(request("/v1/auth/login")).await;
    (
        login.data()["user"]["id"].as_str().unwrap().to_string(),
        login.data()["access_token"].as_str().unwrap().to_string(),
    )
}

files_backends! {
    async fn uploads_are_typed_by_their_bytes_and_read_back_with_ranges(app) {
        let tenant = app.tenant("Files").await;
        let image = png(64, 48);
        let file = upload(&app, &tenant.key, "../../photo.png", &image, &[("folder", "/team//photos/"), ("access", "private"), ("meta", r#"{"album": "summer"}"#)]).await;
        let id = file["id"].as_str().unwrap().to_string();
        assert!(id.starts_with("file_"), "{id}");
        assert_eq!(file["object"], "file");
        assert_eq!(file["filename"], "photo.png");
        assert_eq!(file["mime_type"], "image/png");
        assert_eq!(file["size_bytes"], image.len());
        assert_eq!(file["sha256"], sha256(&image));
        assert_eq!(file["status"], "ready");
        assert_eq!(file["version"], 1);
        assert_eq!(file["width"], 64);
        assert_eq!(file["height"], 48);
        assert_eq!(file["folder"], "team/photos");
        assert_eq!(file["meta"]["album"], "summer");
        assert_eq!(file["uploaded_by"], tenant.key_id);
        assert_eq!(app.get(&format!("/v1/files/{id}"), &tenant.key).await.expect(200).data()["sha256"], sha256(&image));

        // The content: the bytes, typed, named, with a strong validator.
        let content = raw(&app, app.request(Method::GET, &format!("/v1/files/{id}/content"), Some(&tenant.key))).await;
        assert_eq!(content.status(), 200);
        let etag = content.headers()["etag"].to_str().unwrap().to_string();
        assert_eq!(etag, format!("\"{}\"", sha256(&image)));
        assert_eq!(content.headers()["content-type"], "image/png");
        assert_eq!(content.headers()["accept-ranges"], "bytes");
        assert_eq!(content.headers()["x-content-type-options"], "nosniff");
        assert!(content.headers()["content-disposition"].to_str().unwrap().starts_with("inline; filename=\"photo.png\""));
        assert_eq!(content.bytes().await.unwrap().to_vec(), image);
        let unchanged = raw(&app, app.request(Method::GET, &format!("/v1/files/{id}/content"), Some(&tenant.key)).header("if-none-match", &etag)).await;
        assert_eq!(unchanged.status(), 304);
        let download = raw(&app, app.request(Method::GET, &format!("/v1/files/{id}/content?download=true"), Some(&tenant.key))).await;
        assert!(download.headers()["content-disposition"].to_str().unwrap().starts_with("attachment;"));

        // Ranges, byte for byte.
        let size = image.len();
        for (header, start, end) in [("bytes=0-9", 0, 10), ("bytes=-7", size - 7, size), ("bytes=100-", 100, size), ("bytes=5-5", 5, 6)] {
            let part = raw(&app, app.request(Method::GET, &format!("/v1/files/{id}/content"), Some(&tenant.key)).header("range", header)).await;
            assert_eq!(part.status(), 206, "{header}");
            assert_eq!(part.headers()["content-range"].to_str().unwrap(), format!("bytes {start}-{}/{size}", end - 1));
            assert_eq!(part.headers()["content-length"].to_str().unwrap(), (end - start).to_string());
            assert_eq!(part.bytes().await.unwrap().to_vec(), image[start..end].to_vec(), "{header}");
        }
        let outside = app.send(app.request(Method::GET, &format!("/v1/files/{id}/content"), Some(&tenant.key)).header("range", format!("bytes={size}-"))).await;
        outside.expect_error(416, "RANGE_NOT_SATISFIABLE");
        // A range against a changed file (`If-Range` with another tag) gets the whole file.
        let whole = raw(&app, app.request(Method::GET, &format!("/v1/files/{id}/content"), Some(&tenant.key)).header("range", "bytes=0-9").header("if-range", "\"other\"")).await;
        assert_eq!(whole.status(), 200);

        // The type comes from the bytes: a declaration that contradicts them is refused.
        let lying = upload_form(&app, &tenant.key, &[("file", Some("a.jpg"), Some("image/jpeg"), &image)]).await;
        lying.expect_error(422, "VALIDATION_FAILED");
        let pretending = upload_form(&app, &tenant.key, &[("file", Some("x.png"), Some("image/png"), b"just text")]).await;
        pretending.expect_error(422, "VALIDATION_FAILED");
        let csv = upload(&app, &tenant.key, "data.csv", b"a,b\n1,2\n", &[("mime_type", "text/csv")]).await;
        assert_eq!(csv["mime_type"], "text/csv");
        let html = upload(&app, &tenant.key, "page.html", b"<html><script>alert(1)</script></html>", &[("mime_type", "text/html")]).await;
        let served = raw(&app, app.request(Method::GET, &format!("/v1/files/{}/content", html["id"].as_str().unwrap()), Some(&tenant.key))).await;
        assert!(served.headers()["content-disposition"].to_str().unwrap().starts_with("attachment;"), "markup is never shown inline");
        assert!(served.headers()["content-security-policy"].to_str().unwrap().contains("sandbox"));
        let unknown = upload(&app, &tenant.key, "blob.bin", &[0, 159, 146, 150, 1, 2], &[]).await;
        assert_eq!(unknown["mime_type"], "application/octet-stream");
        // A decompression bomb is refused from its header, never decoded.
        upload_form(&app, &tenant.key, &[("file", Some("bomb.png"), None, &bomb())]).await.expect_error(422, "VALIDATION_FAILED");

        // Bad forms, and nothing kept of them.
        let before = app.count("SELECT COUNT(*) FROM files").await;
        upload_form(&app, &tenant.key, &[("file", Some("empty.txt"), None, b"")]).await.expect_error(422, "VALIDATION_FAILED");
        upload_form(&app, &tenant.key, &[("folder", None, None, b"x")]).await.expect_error(422, "VALIDATION_FAILED");
        upload_form(&app, &tenant.key, &[("file", Some("a.txt"), None, b"hi"), ("access", None, None, b"everyone")]).await.expect_error(422, "VALIDATION_FAILED");
        upload_form(&app, &tenant.key, &[("file", Some("a.txt"), None, b"hi"), ("folder", None, None, b"a/../b")]).await.expect_error(422, "VALIDATION_FAILED");
        upload_form(&app, &tenant.key, &[("file", Some("a.txt"), None, b"hi"), ("meta", None, None, b"[1]")]).await.expect_error(422, "VALIDATION_FAILED");
        upload_form(&app, &tenant.key, &[("file", Some("a.txt"), None, b"hi"), ("object_id", None, None, b"obj_x")]).await.expect_error(422, "VALIDATION_FAILED");
        app.post("/v1/files/upload", &tenant.key, json!({})).await.expect_error(415, "UNSUPPORTED_MEDIA_TYPE");
        let mut huge = vec![b'a'; 25 * 1024 * 1024 + 1];
        huge[0] = b'b';
        let request = app.request(Method::POST, "/v1/files/upload", Some(&tenant.key)).header("content-type", format!("multipart/form-data; boundary={BOUNDARY}"));
        if let Ok(refused) = request.body(form(&[("file", Some("big.txt"), None, &huge)])).send().await {
            assert_eq!(refused.status(), 413);
        }
        assert_eq!(app.count("SELECT COUNT(*) FROM files").await, before);
        assert_eq!(app.count("SELECT COUNT(*) FROM file_versions WHERE status <> 'ready'").await, 0);

        // Scopes: reading needs `files:read`, writing `files:write`.
        let (_, reader) = app.key(&tenant, json!({ "scopes": ["files:read"] })).await;
        app.get(&format!("/v1/files/{id}"), &reader).await.expect(200);
        upload_form(&app, &reader, &[("file", Some("a.txt"), None, b"hi")]).await.expect_error(403, "INSUFFICIENT_SCOPE");
        app.delete(&format!("/v1/files/{id}"), &reader).await.expect_error(403, "INSUFFICIENT_SCOPE");
        let (_, data_key) = app.key(&tenant, json!({ "scopes": ["objects:read"] })).await;
        app.get(&format!("/v1/files/{id}"), &data_key).await.expect_error(403, "INSUFFICIENT_SCOPE");
        app.get_public(&format!("/v1/files/{id}")).await.expect_error(401, "UNAUTHORIZED");
        // Private content without a credential is not there (its existence is not told); a bad
        // credential stays a 401.
        app.get_public(&format!("/v1/files/{id}/content")).await.expect_error(404, "NOT_FOUND");
        app.get(&format!("/v1/files/{id}/content"), "plk_not_a_key").await.expect_error(401, "UNAUTHORIZED");

        assert_eq!(events_of(&app, &id).await, vec!["file.uploaded"]);
        // The bytes are in the store, and usage counts them.
        assert_eq!(stored_keys(&app, &tenant, &id).await.len(), 1);
        let usage = app.get("/v1/usage", &tenant.key).await;
        assert_eq!(usage.data()["used_storage_bytes"].as_i64().unwrap(), storage_used(&app, &tenant).await);
        assert!(storage_used(&app, &tenant).await >= image.len() as i64);
    }

    async fn signed_links_work_without_a_credential_until_they_expire_or_the_file_changes(app) {
        let tenant = app.tenant("Links").await;
        let first = b"version one of the notes".to_vec();
        let file = upload(&app, &tenant.key, "notes.txt", &first, &[]).await;
        let id = file["id"].as_str().unwrap().to_string();
        let signed = app.post(&format!("/v1/files/{id}/signed-url"), &tenant.key, json!({ "expires_in": 60 })).await;
        signed.expect(200);
        assert_eq!(signed.data()["ttl"], 60);
        let url = signed.data()["url"].as_str().unwrap().to_string();
        let fetched = reqwest::get(&url).await.unwrap();
        assert_eq!(fetched.status(), 200);
        assert_eq!(fetched.headers()["content-type"], "text/plain");
        assert_eq!(fetched.bytes().await.unwrap().to_vec(), first);
        // Ranges work through a link too.
        let part = app.client.get(&url).header("range", "bytes=0-6").send().await.unwrap();
        assert_eq!(part.status(), 206);
        assert_eq!(part.bytes().await.unwrap().to_vec(), first[..7].to_vec());
        // Default lifetime, and the bounds.
        assert_eq!(app.post(&format!("/v1/files/{id}/signed-url"), &tenant.key, json!({})).await.expect(200).data()["ttl"], 3600);
        app.post(&format!("/v1/files/{id}/signed-url"), &tenant.key, json!({ "expires_in": 59 })).await.expect_error(422, "VALIDATION_FAILED");
        app.post(&format!("/v1/files/{id}/signed-url"), &tenant.key, json!({ "expires_in": 86_401 })).await.expect_error(422, "VALIDATION_FAILED");

        // Altered or expired links are refused.
        let path = url.strip_prefix(&app.base).unwrap().to_string();
        let (_, query) = path.split_once('?').unwrap();
        let expires: i64 = query.split('&').find_map(|p| p.strip_prefix("expires=")).unwrap().parse().unwrap();
        let token = query.split('&').find_map(|p| p.strip_prefix("token=")).unwrap().to_string();
        for altered in [
            format!("/v1/files/{id}/content?token={token}&expires={}&t=1", expires + 1),
            format!("/v1/files/{id}/content?token={}&expires={expires}&t=1", "0".repeat(64)),
            format!("/v1/files/{id}/content?token={token}&expires={expires}&t=2"),
            format!("/v1/files/{id}/content?token={token}&expires={expires}"),
        ] {
            app.get_public(&altered).await.expect_error(403, "FORBIDDEN");
        }
        let past = chrono::Utc::now().timestamp() - 5;
        let expired = format!("/v1/files/{id}/content?token={}&expires={past}&t=1", link_token(&app, "file-read", &id, 1, past));
        let refused = app.get_public(&expired).await;
        refused.expect_error(403, "FORBIDDEN");
        assert!(refused.body["error"]["message"].as_str().unwrap().contains("expired"));

        // A re-upload keeps the earlier version and ends the old link.
        let second = b"version two, longer than the first one".to_vec();
        let renewed = upload(&app, &tenant.key, "notes-v2.txt", &second, &[("file_id", &id)]).await;
        assert_eq!(renewed["id"], id);
        assert_eq!(renewed["version"], 2);
        assert_eq!(renewed["filename"], "notes-v2.txt");
        assert_eq!(renewed["size_bytes"], second.len());
        let stale = app.get_public(&path).await;
        stale.expect_error(403, "FORBIDDEN");
        assert!(stale.body["error"]["message"].as_str().unwrap().contains("changed"));
        let content = raw(&app, app.request(Method::GET, &format!("/v1/files/{id}/content"), Some(&tenant.key))).await;
        assert_eq!(content.bytes().await.unwrap().to_vec(), second);
        let versions = app.get(&format!("/v1/files/{id}/versions"), &tenant.key).await;
        versions.expect(200);
        let versions = versions.data().as_array().unwrap().clone();
        assert_eq!(versions.len(), 2);
        assert_eq!((versions[0]["version"].clone(), versions[0]["current"].clone()), (json!(2), json!(true)));
        assert_eq!((versions[1]["version"].clone(), versions[1]["sha256"].clone()), (json!(1), json!(sha256(&first))));
        assert_eq!(stored_keys(&app, &tenant, &id).await.len(), 2, "both versions' bytes are kept");
        // Both versions count against storage.
        assert_eq!(storage_used(&app, &tenant).await, (first.len() + second.len()) as i64);
        assert_eq!(events_of(&app, &id).await, vec!["file.uploaded", "file.uploaded"]);

        // Public files need no link; trashed ones serve nothing.
        app.get_public(&format!("/v1/files/{id}/content")).await.expect_error(404, "NOT_FOUND");
        app.patch(&format!("/v1/files/{id}"), &tenant.key, json!({ "access": "public" })).await.expect(200);
        let open = reqwest::get(app.url(&format!("/v1/files/{id}/content"))).await.unwrap();
        assert_eq!(open.status(), 200);
        assert!(open.headers()["cache-control"].to_str().unwrap().starts_with("public"));
        let fresh = app.post(&format!("/v1/files/{id}/signed-url"), &tenant.key, json!({})).await.data()["url"].as_str().unwrap().to_string();
        app.delete(&format!("/v1/files/{id}"), &tenant.key).await.expect(200);
        assert_eq!(reqwest::get(&fresh).await.unwrap().status(), 404);
        assert_eq!(reqwest::get(app.url(&format!("/v1/files/{id}/content"))).await.unwrap().status(), 404);
        app.post(&format!("/v1/files/{id}/signed-url"), &tenant.key, json!({})).await.expect_error(409, "CONFLICT");
    }

    async fn variants_are_rendered_cached_and_renewed_with_each_version(app) {
        let tenant = app.tenant("Variants").await;
        let jpeg = image_bytes(400, 300, image::ImageFormat::Jpeg);
        let file = upload(&app, &tenant.key, "photo.jpg", &jpeg, &[]).await;
        let id = file["id"].as_str().unwrap().to_string();
        assert_eq!((file["mime_type"].as_str().unwrap(), file["width"].as_i64().unwrap()), ("image/jpeg", 400));

        let get = |query: String| {
            let request = app.request(Method::GET, &format!("/v1/files/{id}/variants/{query}"), Some(&tenant.key));
            raw(&app, request)
        };
        let thumb = get("thumb".into()).await;
        assert_eq!(thumb.status(), 200);
        assert_eq!(thumb.headers()["x-cache"], "miss");
        assert_eq!(thumb.headers()["content-type"], "image/jpeg");
        let etag = thumb.headers()["etag"].to_str().unwrap().to_string();
        assert_eq!(decoded(&thumb.bytes().await.unwrap()), (200, 200, image::ImageFormat::Jpeg));
        let again = get("thumb".into()).await;
        assert_eq!(again.headers()["x-cache"], "hit", "the rendering is cached");
        assert_eq!(decoded(&again.bytes().await.unwrap()), (200, 200, image::ImageFormat::Jpeg));
        let unchanged = raw(&app, app.request(Method::GET, &format!("/v1/files/{id}/variants/thumb"), Some(&tenant.key)).header("if-none-match", &etag)).await;
        assert_eq!(unchanged.status(), 304);

        for (query, expected) in [
            ("small", (320, 240, image::ImageFormat::Jpeg)),
            ("custom?w=100&format=webp", (100, 75, image::ImageFormat::WebP)),
            ("custom?h=30&format=png", (40, 30, image::ImageFormat::Png)),
            ("custom?w=50&h=20&fit=fill&format=gif", (50, 20, image::ImageFormat::Gif)),
            ("custom?w=50&h=50&fit=cover", (50, 50, image::ImageFormat::Jpeg)),
            ("custom?w=50&h=50", (50, 38, image::ImageFormat::Jpeg)),
        ] {
            let variant = get(query.into()).await;
            assert_eq!(variant.status(), 200, "{query}");
            assert_eq!(decoded(&variant.bytes().await.unwrap()), expected, "{query}");
        }
        for bad in ["custom?w=5000", "custom", "huge", "custom?w=10&fit=stretch", "custom?w=10&format=bmp", "custom?w=0"] {
            let refused = app.get(&format!("/v1/files/{id}/variants/{bad}"), &tenant.key).await;
            assert!(refused.status == 422 || refused.status == 400, "{bad}: {}", refused.text);
        }
        let text = upload(&app, &tenant.key, "a.txt", b"not an image", &[]).await;
        app.get(&format!("/v1/files/{}/variants/thumb", text["id"].as_str().unwrap()), &tenant.key).await.expect_error(422, "VALIDATION_FAILED");
        // GIF and WebP sources too.
        for format in [image::ImageFormat::Gif, image::ImageFormat::WebP, image::ImageFormat::Png] {
            let source = upload(&app, &tenant.key, "source", &image_bytes(90, 60, format), &[]).await;
            let variant = app.request(Method::GET, &format!("/v1/files/{}/variants/custom?w=30", source["id"].as_str().unwrap()), Some(&tenant.key));
            let variant = raw(&app, variant).await;
            assert_eq!(variant.status(), 200, "{format:?}");
            assert_eq!(decoded(&variant.bytes().await.unwrap()), (30, 20, format), "{format:?}");
        }

        // A new version renders afresh, at its own size.
        let wide = image_bytes(600, 200, image::ImageFormat::Png);
        upload(&app, &tenant.key, "photo.png", &wide, &[("file_id", &id)]).await;
        let renewed = get("custom?w=300".into()).await;
        assert_eq!(renewed.headers()["x-cache"], "miss");
        assert_eq!(renewed.headers()["content-type"], "image/png");
        assert_eq!(decoded(&renewed.bytes().await.unwrap()), (300, 100, image::ImageFormat::Png));
        assert_ne!(get("thumb".into()).await.headers()["etag"].to_str().unwrap(), etag);

        // Variants are read as the content is: by a signed link, not by anyone.
        app.get_public(&format!("/v1/files/{id}/variants/thumb")).await.expect_error(404, "NOT_FOUND");
        let link = app.post(&format!("/v1/files/{id}/signed-url"), &tenant.key, json!({})).await.data()["url"].as_str().unwrap().to_string();
        let (_, query) = link.split_once('?').unwrap();
        let by_link = reqwest::get(app.url(&format!("/v1/files/{id}/variants/thumb?{query}"))).await.unwrap();
        assert_eq!(by_link.status(), 200);
        assert_eq!(decoded(&by_link.bytes().await.unwrap()).0, 200);
    }

    async fn presigned_uploads_take_large_files_checked_for_size_and_checksum(app) {
        let tenant = app.tenant_on("Presigned", "pro").await;
        let size = 60 * 1024 * 1024;
        let bytes: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let checksum = sha256(&bytes);
        let slot = app.post("/v1/files/upload-url", &tenant.key, json!({
            "filename": "dataset.bin", "mime_type": "application/octet-stream", "size_bytes": size,
            "sha256": checksum, "folder": "big", "access": "private"
        })).await;
        slot.expect(201);
        let id = slot.data()["file_id"].as_str().unwrap().to_string();
        let endpoint = slot.data()["upload_endpoint"].as_str().unwrap().to_string();
        assert!(endpoint.starts_with(&format!("{}/v1/files/{id}/upload-put?token=", app.base)), "{endpoint}");
        let pending = app.get(&format!("/v1/files/{id}"), &tenant.key).await;
        assert_eq!(pending.data()["status"], "pending");
        assert_eq!(storage_used(&app, &tenant).await, size as i64, "the announced size is reserved");
        // Not readable, not completable, until its bytes come.
        app.get(&format!("/v1/files/{id}/content"), &tenant.key).await.expect_error(404, "NOT_FOUND");
        app.post(&format!("/v1/files/{id}/upload-complete"), &tenant.key, json!({})).await.expect_error(409, "CONFLICT");

        // Short and long bodies are refused and leave the slot open.
        let short = app.send(app.client.post(&endpoint).body(bytes[..1000].to_vec())).await;
        short.expect_error(422, "VALIDATION_FAILED");
        let mut long = bytes[..2 * 1024 * 1024].to_vec();
        long.resize(size + 1, 0);
        let long = app.client.post(&endpoint).body(long).send().await;
        if let Ok(long) = long {
            assert_eq!(long.status(), 413);
        }
        // Without a credential the signed endpoint is the way; a forged one is not.
        let forged = endpoint.replace("token=", "token=0").replace("&expires", "x&expires");
        assert_eq!(app.client.post(&forged).body(b"x".to_vec()).send().await.unwrap().status(), 403);
        app.send(app.request(Method::POST, &format!("/v1/files/{id}/upload-put"), None).body(b"x".to_vec())).await.expect_error(401, "UNAUTHORIZED");

        let put = app.send(app.client.post(&endpoint).header("content-type", "application/octet-stream").body(bytes.clone())).await;
        put.expect(200);
        // Once received, the slot takes no other bytes.
        app.send(app.client.post(&endpoint).body(bytes[..10].to_vec())).await.expect_error(409, "CONFLICT");
        let done = app.post(&format!("/v1/files/{id}/upload-complete"), &tenant.key, json!({})).await;
        done.expect(200);
        assert_eq!(done.data()["status"], "ready");
        assert_eq!(done.data()["size_bytes"], size);
        assert_eq!(done.data()["sha256"], checksum);
        assert_eq!(events_of(&app, &id).await, vec!["file.uploaded"]);
        assert_eq!(storage_used(&app, &tenant).await, size as i64);
        let tail = app.send(app.request(Method::GET, &format!("/v1/files/{id}/content"), Some(&tenant.key)).header("range", "bytes=-4096")).await;
        assert_eq!(tail.status, 206);
        let whole = raw(&app, app.request(Method::GET, &format!("/v1/files/{id}/content"), Some(&tenant.key))).await;
        assert_eq!(whole.headers()["content-length"].to_str().unwrap(), size.to_string());
        assert_eq!(sha256(&whole.bytes().await.unwrap()), checksum);

        // A checksum that differs is refused at completion; an expired slot takes nothing.
        let small = b"0123456789".to_vec();
        let slot = app.post("/v1/files/upload-url", &tenant.key, json!({ "filename": "s.txt", "size_bytes": 10, "sha256": "a".repeat(64) })).await;
        let other = slot.data()["file_id"].as_str().unwrap().to_string();
        let endpoint = slot.data()["upload_endpoint"].as_str().unwrap().to_string();
        app.send(app.client.post(&endpoint).body(small.clone())).await.expect(200);
        app.post(&format!("/v1/files/{other}/upload-complete"), &tenant.key, json!({})).await.expect_error(422, "VALIDATION_FAILED");
        app.post(&format!("/v1/files/{other}/upload-complete"), &tenant.key, json!({ "sha256": sha256(&small) })).await.expect_error(422, "VALIDATION_FAILED");
        // With a credential, the bytes can go again; the declared type is checked against them.
        let typed = app.post("/v1/files/upload-url", &tenant.key, json!({ "filename": "p.png", "mime_type": "image/png", "size_bytes": 10 })).await;
        let typed_id = typed.data()["file_id"].as_str().unwrap().to_string();
        let put = app.send(app.request(Method::POST, &format!("/v1/files/{typed_id}/upload-put"), Some(&tenant.key)).body(small.clone())).await;
        put.expect_error(422, "VALIDATION_FAILED");
        sqlx::query("UPDATE files SET upload_expires_at = $1 WHERE id = $2").bind("2020-01-01T00:00:00.000000Z").bind(&typed_id).execute(app.app.db.pool()).await.unwrap();
        let late = app.send(app.request(Method::POST, &format!("/v1/files/{typed_id}/upload-put"), Some(&tenant.key)).body(small.clone())).await;
        late.expect_error(409, "CONFLICT");

        // Bad slots.
        for bad in [
            json!({ "filename": "x", "size_bytes": 0 }),
            json!({ "filename": "x", "size_bytes": 6_000_000_000_i64 }),
            json!({ "filename": "", "size_bytes": 5 }),
            json!({ "filename": "x", "size_bytes": 5, "sha256": "nothex" }),
            json!({ "filename": "x", "size_bytes": 5, "access": "world" }),
            json!({ "filename": "x", "size_bytes": 5, "mime_type": "nothing" }),
        ] {
            app.post("/v1/files/upload-url", &tenant.key, bad.clone()).await.expect_error(422, "VALIDATION_FAILED");
        }
        app.post("/v1/files/upload-url", &tenant.key, json!({ "filename": "x", "size_bytes": 5, "colour": "red" })).await.expect(422);

        // A presigned new version of a ready file: one upload of a file at a time.
        let next = app.post("/v1/files/upload-url", &tenant.key, json!({ "filename": "s2.txt", "size_bytes": 10, "file_id": id })).await;
        next.expect(201);
        assert_eq!(next.data()["version"], 2);
        app.post("/v1/files/upload-url", &tenant.key, json!({ "filename": "s3.txt", "size_bytes": 10, "file_id": id })).await.expect_error(409, "CONFLICT");
        upload_form(&app, &tenant.key, &[("file", Some("s3.txt"), None, b"direct"), ("file_id", None, None, id.as_bytes())]).await.expect_error(409, "CONFLICT");
        let endpoint = next.data()["upload_endpoint"].as_str().unwrap().to_string();
        app.send(app.client.post(&endpoint).body(small.clone())).await.expect(200);
        assert_eq!(app.get(&format!("/v1/files/{id}"), &tenant.key).await.data()["version"], 1, "until completed, the old version stays current");
        let done = app.post(&format!("/v1/files/{id}/upload-complete"), &tenant.key, json!({ "sha256": sha256(&small) })).await;
        done.expect(200);
        assert_eq!((done.data()["version"].clone(), done.data()["size_bytes"].clone()), (json!(2), json!(10)));
    }

    async fn quotas_hold_under_concurrent_uploads_and_deletion_gives_bytes_back(app) {
        let tenant = app.tenant("Quota").await;
        let size = 100_000usize;
        let entitlements = format!("/v1/tenants/{}/entitlements", tenant.id);
        app.patch(&entitlements, ADMIN_KEY, json!({ "limits": { "storage": 5 * size + 50 } })).await.expect(200);
        let uploads = (0..10).map(|i| {
            let bytes: Vec<u8> = (0..size).map(|j| ((i * 31 + j) % 97 + 32) as u8).collect();
            let request = app.request(Method::POST, "/v1/files/upload", Some(&tenant.key))
                .header("content-type", format!("multipart/form-data; boundary={BOUNDARY}"))
                .body(form(&[("file", Some("part.txt"), None, &bytes)]));
            app.send(request)
        });
        let answers = futures::future::join_all(uploads).await;
        let made = answers.iter().filter(|a| a.status == 201).count();
        let refused = answers.iter().filter(|a| a.status == 403 && a.error_code() == "FEATURE_LIMIT_REACHED").count();
        assert_eq!((made, refused), (5, 5), "{:?}", answers.iter().map(|a| a.status).collect::<Vec<_>>());
        assert_eq!(storage_used(&app, &tenant).await, 5 * size as i64);
        assert_eq!(app.count(&format!("SELECT COUNT(*) FROM files WHERE tenant_id = '{}'", tenant.id)).await, 5);
        let stats = app.get("/v1/files/stats", &tenant.key).await;
        stats.expect(200);
        assert_eq!(stats.data()["total_files"], 5);
        assert_eq!(stats.data()["used_bytes"], 5 * size);
        assert_eq!(stats.data()["quota_bytes"], 5 * size + 50);
        assert_eq!(stats.data()["remaining_bytes"], 50);
        let presigned = app.post("/v1/files/upload-url", &tenant.key, json!({ "filename": "x", "size_bytes": 51 })).await;
        presigned.expect_error(403, "FEATURE_LIMIT_REACHED");

        // Deleting gives the bytes back (the trash does not count); restoring counts them again,
        // and is refused when they no longer fit.
        let ids: Vec<String> = answers.iter().filter(|a| a.status == 201).map(|a| a.data()["id"].as_str().unwrap().to_string()).collect();
        let id = ids[0].clone();
        app.delete(&format!("/v1/files/{id}"), &tenant.key).await.expect(200);
        assert_eq!(storage_used(&app, &tenant).await, 4 * size as i64);
        app.post(&format!("/v1/files/{id}/restore"), &tenant.key, json!({})).await.expect(200);
        assert_eq!(storage_used(&app, &tenant).await, 5 * size as i64);
        app.delete(&format!("/v1/files/{id}"), &tenant.key).await.expect(200);
        let filler = upload(&app, &tenant.key, "filler.txt", &vec![b'f'; size], &[]).await;
        app.post(&format!("/v1/files/{id}/restore"), &tenant.key, json!({})).await.expect_error(403, "FEATURE_LIMIT_REACHED");
        assert_eq!(app.get(&format!("/v1/files/{id}"), &tenant.key).await.data()["is_deleted"], true, "nothing restored");
        app.delete(&format!("/v1/files/{}?force=true", filler["id"].as_str().unwrap()), &tenant.key).await.expect(200);
        assert_eq!(storage_used(&app, &tenant).await, 4 * size as i64);
        // A purge of a live file gives its bytes back, and removes them in the background.
        app.post(&format!("/v1/files/{id}/restore"), &tenant.key, json!({})).await.expect(200);
        app.delete(&format!("/v1/files/{id}?force=true"), &tenant.key).await.expect(200);
        assert_eq!(storage_used(&app, &tenant).await, 4 * size as i64);
        assert_eq!(app.get("/v1/usage", &tenant.key).await.data()["used_storage_bytes"], 4 * size);
        settle_jobs(&app).await;
        assert!(stored_keys(&app, &tenant, &id).await.is_empty(), "the purged bytes are removed");
        app.get(&format!("/v1/files/{id}"), &tenant.key).await.expect_error(404, "NOT_FOUND");
        assert_eq!(events_of(&app, &id).await, vec!["file.uploaded", "file.deleted", "file.restored", "file.deleted", "file.restored", "file.deleted"]);
    }

    async fn trash_restore_purge_and_the_sweeper(app) {
        let tenant = app.tenant("Trash").await;
        let file = upload(&app, &tenant.key, "a.txt", b"alpha", &[("folder", "docs")]).await;
        let id = file["id"].as_str().unwrap().to_string();
        let deleted = app.delete(&format!("/v1/files/{id}"), &tenant.key).await;
        deleted.expect(200);
        assert_eq!(deleted.data(), &json!({ "id": id, "deleted": true }));
        let shown = app.get(&format!("/v1/files/{id}"), &tenant.key).await;
        assert_eq!(shown.data()["is_deleted"], true);
        app.get(&format!("/v1/files/{id}/content"), &tenant.key).await.expect_error(404, "NOT_FOUND");
        let trash = app.get("/v1/files/trash", &tenant.key).await;
        trash.expect(200);
        assert_eq!(trash.data()["total"], 1);
        assert_eq!(trash.data()["results"][0]["id"], id);
        let search = app.post("/v1/files/search", &tenant.key, json!({})).await;
        assert_eq!(search.data()["total"], 0, "trashed files are not searched");
        // Deleting again is the same answer; restoring brings it back.
        app.delete(&format!("/v1/files/{id}"), &tenant.key).await.expect(200);
        let restored = app.post(&format!("/v1/files/{id}/restore"), &tenant.key, json!({})).await;
        restored.expect(200);
        assert_eq!(restored.data()["is_deleted"], false);
        app.post(&format!("/v1/files/{id}/restore"), &tenant.key, json!({})).await.expect_error(409, "CONFLICT");
        assert_eq!(events_of(&app, &id).await, vec!["file.uploaded", "file.deleted", "file.restored"]);

        // A file attached to a live object is purged only with a confirm token.
        app.post("/v1/object-types", &tenant.key, json!({ "name": "deals" })).await.expect(201);
        let deal = app.post("/v1/objects/deals", &tenant.key, json!({ "properties": {} })).await;
        let deal_id = deal.data()["id"].as_str().unwrap().to_string();
        let linked = app.patch(&format!("/v1/files/{id}"), &tenant.key, json!({ "object_type_id": "deals", "object_id": deal_id })).await;
        linked.expect(200);
        assert!(linked.data()["object_type_id"].as_str().unwrap().starts_with("ot_"));
        assert_eq!(linked.data()["object_id"], deal_id);
        app.patch(&format!("/v1/files/{id}"), &tenant.key, json!({ "object_type_id": "deals", "object_id": "obj_missing" })).await.expect_error(422, "VALIDATION_FAILED");
        app.patch(&format!("/v1/files/{id}"), &tenant.key, json!({ "object_id": null })).await.expect_error(422, "VALIDATION_FAILED");
        let asked = app.delete(&format!("/v1/files/{id}?force=true"), &tenant.key).await;
        asked.expect_error(409, "DEPENDENCY_EXISTS");
        assert_eq!(asked.body["error"]["dependencies"][0]["count"], 1);
        let confirm = asked.body["error"]["confirm_token"].as_str().unwrap().to_string();
        app.delete(&format!("/v1/files/{id}?force=true&confirm_token={confirm}"), &tenant.key).await.expect(200);
        assert_eq!(app.count(&format!("SELECT COUNT(*) FROM files WHERE id = '{id}'")).await, 0);
        assert_eq!(app.count(&format!("SELECT COUNT(*) FROM file_versions WHERE file_id = '{id}'")).await, 0);
        settle_jobs(&app).await;
        assert!(stored_keys(&app, &tenant, &id).await.is_empty());

        // The sweeper: trash past its retention, uploads never completed, expired files, and
        // bytes no row names.
        let old = upload(&app, &tenant.key, "old.txt", b"old bytes", &[]).await;
        let old_id = old["id"].as_str().unwrap().to_string();
        app.delete(&format!("/v1/files/{old_id}"), &tenant.key).await.expect(200);
        let kept = upload(&app, &tenant.key, "kept.txt", b"kept", &[]).await;
        app.delete(&format!("/v1/files/{}", kept["id"].as_str().unwrap()), &tenant.key).await.expect(200);
        sqlx::query("UPDATE files SET deleted_at = $1 WHERE id = $2").bind("2020-01-01T00:00:00.000000Z").bind(&old_id).execute(app.app.db.pool()).await.unwrap();
        let slot = app.post("/v1/files/upload-url", &tenant.key, json!({ "filename": "never.bin", "size_bytes": 1000 })).await;
        let never = slot.data()["file_id"].as_str().unwrap().to_string();
        assert_eq!(app.post(&format!("/v1/files/{never}/stale-cleanup"), &tenant.key, json!({})).await.expect(200).data()["cleaned"], 0, "a fresh slot is not stale");
        sqlx::query("UPDATE files SET created_at = $1 WHERE id = $2").bind("2020-01-01T00:00:00.000000Z").bind(&never).execute(app.app.db.pool()).await.unwrap();
        let before = storage_used(&app, &tenant).await;
        let cleaned = app.post(&format!("/v1/files/{never}/stale-cleanup"), &tenant.key, json!({})).await;
        assert_eq!(cleaned.expect(200).data()["cleaned"], 1);
        assert_eq!(storage_used(&app, &tenant).await, before - 1000);
        app.get(&format!("/v1/files/{never}"), &tenant.key).await.expect_error(404, "NOT_FOUND");
        // A pending new version of a ready file, abandoned.
        let live = upload(&app, &tenant.key, "live.txt", b"live", &[]).await;
        let live_id = live["id"].as_str().unwrap().to_string();
        app.post("/v1/files/upload-url", &tenant.key, json!({ "filename": "v2", "size_bytes": 300, "file_id": live_id })).await.expect(201);
        sqlx::query("UPDATE file_versions SET created_at = $1 WHERE file_id = $2 AND version = 2").bind("2020-01-01T00:00:00.000000Z").bind(&live_id).execute(app.app.db.pool()).await.unwrap();
        let orphan = format!("files/{}/file_orphan/1-abc", tenant.id);
        app.app.files.put(&orphan, axum::body::Bytes::from_static(b"nobody's")).await.unwrap();
        let before = storage_used(&app, &tenant).await;
        let swept = plinth::files::purge::sweep(&app.app, 30, Some(chrono::Duration::zero())).await.unwrap();
        assert!(swept >= 3, "{swept}");
        assert_eq!(app.count(&format!("SELECT COUNT(*) FROM files WHERE id = '{old_id}'")).await, 0, "past the retention");
        assert_eq!(app.count(&format!("SELECT COUNT(*) FROM files WHERE id = '{}'", kept["id"].as_str().unwrap())).await, 1, "within it");
        assert_eq!(app.count(&format!("SELECT COUNT(*) FROM file_versions WHERE file_id = '{live_id}'")).await, 1);
        assert_eq!(storage_used(&app, &tenant).await, before - 300, "the trashed file's bytes were given back when it was deleted");
        assert!(app.app.files.get(&orphan).await.unwrap().is_none(), "the orphan bytes are gone");
        settle_jobs(&app).await;
        assert!(stored_keys(&app, &tenant, &old_id).await.is_empty());
        assert_eq!(stored_keys(&app, &tenant, &live_id).await.len(), 1);
    }

    async fn search_folders_stats_and_batches(app) {
        let tenant = app.tenant("Search").await;
        let mut ids = Vec::new();
        for (name, folder, bytes) in [
            ("Report-Q1.pdf", "reports", b"%PDF-1.4 first quarter".to_vec()),
            ("report-q2.txt", "reports", b"second quarter, longer text".to_vec()),
            ("logo.png", "brand", png(8, 8)),
            ("notes.md", "", b"# notes".to_vec()),
            ("big_report.txt", "reports/archive", vec![b'x'; 5000]),
        ] {
            ids.push(upload(&app, &tenant.key, name, &bytes, &[("folder", folder)]).await["id"].as_str().unwrap().to_string());
        }
        let search = |body: Value| app.post("/v1/files/search", &tenant.key, body);
        let names = |page: &Resp| -> Vec<String> {
            page.data()["results"].as_array().unwrap().iter().map(|f| f["filename"].as_str().unwrap().to_string()).collect()
        };
        let found = search(json!({ "filename": "REPORT" })).await;
        found.expect(200);
        assert_eq!(found.data()["total"], 3);
        assert_eq!(names(&search(json!({ "folder": "reports", "sort": "filename", "sort_dir": "asc" })).await), vec!["Report-Q1.pdf", "report-q2.txt"]);
        assert_eq!(names(&search(json!({ "mime_category": "image" })).await), vec!["logo.png"]);
        assert_eq!(names(&search(json!({ "mime_type": "application/pdf" })).await), vec!["Report-Q1.pdf"]);
        assert_eq!(names(&search(json!({ "filename": "_" })).await), vec!["big_report.txt"], "LIKE's wildcards are taken literally");
        assert_eq!(search(json!({ "created_after": "2999-01-01T00:00:00Z" })).await.data()["total"], 0);
        // Pages by cursor, sorted by size, cover every file once.
        let mut seen = Vec::new();
        let mut cursor = Value::Null;
        loop {
            let page = search(json!({ "sort": "size_bytes", "sort_dir": "asc", "limit": 2, "cursor": cursor })).await;
            page.expect(200);
            assert_eq!(page.data()["total"], 5);
            for file in page.data()["results"].as_array().unwrap() {
                seen.push((file["size_bytes"].as_i64().unwrap(), file["id"].as_str().unwrap().to_string()));
            }
            cursor = page.data()["next_cursor"].clone();
            if cursor.is_null() {
                break;
            }
            search(json!({ "sort": "filename", "limit": 2, "cursor": cursor })).await.expect_error(400, "BAD_REQUEST");
        }
        assert_eq!(seen.len(), 5);
        assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0), "{seen:?}");
        for bad in [json!({ "sort": "colour" }), json!({ "sort_dir": "up" }), json!({ "limit": 101 }), json!({ "status": "gone" }), json!({ "access": "x" }), json!({ "mime_category": "a/b" })] {
            assert_eq!(search(bad.clone()).await.status, 422, "{bad}");
        }
        search(json!({ "cursor": "forged" })).await.expect_error(400, "BAD_REQUEST");

        let folders = app.get("/v1/files/folders", &tenant.key).await;
        folders.expect(200);
        let folders: Vec<(String, i64)> = folders.data().as_array().unwrap().iter().map(|f| (f["folder"].as_str().unwrap().to_string(), f["file_count"].as_i64().unwrap())).collect();
        assert_eq!(folders, vec![("".to_string(), 1), ("brand".into(), 1), ("reports".into(), 2), ("reports/archive".into(), 1)]);
        let paged = app.get("/v1/files/folders?limit=1&offset=2", &tenant.key).await;
        assert_eq!(paged.data()[0]["folder"], "reports");
        let stats = app.get("/v1/files/stats", &tenant.key).await;
        assert_eq!(stats.data()["total_files"], 5);
        assert_eq!(stats.data()["by_category"]["image"], 1);
        assert_eq!(stats.data()["by_category"]["text"], 3);

        // Batches: in order, all or nothing.
        let read = app.post("/v1/files/batch/read", &tenant.key, json!({ "file_ids": [ids[2], ids[0]] })).await;
        read.expect(200);
        assert_eq!(read.data()[0]["id"], ids[2]);
        assert_eq!(read.data()[1]["id"], ids[0]);
        app.post("/v1/files/batch/read", &tenant.key, json!({ "file_ids": [ids[0], "file_missing"] })).await.expect_error(404, "NOT_FOUND");
        app.post("/v1/files/batch/read", &tenant.key, json!({ "file_ids": [] })).await.expect_error(422, "VALIDATION_FAILED");
        app.post("/v1/files/batch/read", &tenant.key, json!({ "file_ids": [ids[0], ids[0]] })).await.expect_error(422, "VALIDATION_FAILED");
        let many: Vec<String> = (0..101).map(|i| format!("file_{i}")).collect();
        app.post("/v1/files/batch/read", &tenant.key, json!({ "file_ids": many })).await.expect_error(422, "VALIDATION_FAILED");
        let updated = app.post("/v1/files/batch/update", &tenant.key, json!({ "file_ids": [ids[0], ids[1]], "folder": "shared", "access": "authenticated" })).await;
        updated.expect(200);
        assert_eq!(updated.data()["updated"], 2);
        assert_eq!(app.get(&format!("/v1/files/{}", ids[1]), &tenant.key).await.data()["folder"], "shared");
        assert_eq!(events_of(&app, &ids[0]).await, vec!["file.uploaded", "file.updated"]);
        let refused = app.post("/v1/files/batch/update", &tenant.key, json!({ "file_ids": [ids[2], "file_missing"], "folder": "elsewhere" })).await;
        refused.expect_error(404, "NOT_FOUND");
        assert_eq!(app.get(&format!("/v1/files/{}", ids[2]), &tenant.key).await.data()["folder"], "brand", "nothing applied");
        app.post("/v1/files/batch/update", &tenant.key, json!({ "file_ids": [ids[2]] })).await.expect_error(422, "VALIDATION_FAILED");
        app.post("/v1/files/batch/delete", &tenant.key, json!({ "file_ids": [ids[3], "file_missing"] })).await.expect_error(404, "NOT_FOUND");
        assert_eq!(app.get("/v1/files/trash", &tenant.key).await.data()["total"], 0);
        let deleted = app.post("/v1/files/batch/delete", &tenant.key, json!({ "file_ids": [ids[3], ids[4]] })).await;
        deleted.expect(200);
        assert_eq!(deleted.data()["count"], 2);
        assert_eq!(app.get("/v1/files/trash", &tenant.key).await.data()["total"], 2);
        let stats = app.get("/v1/files/stats", &tenant.key).await;
        assert_eq!((stats.data()["total_files"].clone(), stats.data()["trashed_files"].clone()), (json!(3), json!(2)));
    }

    async fn end_users_reach_files_through_their_roles_and_the_objects_policies(app) {
        let tenant = app.tenant("People").await;
        let (alice_id, alice) = signed_in(&app, &tenant, "alice@example.com").await;
        let (_, bob) = signed_in(&app, &tenant, "bob@example.com").await;
        // No grant, no files.
        upload_form(&app, &alice, &[("file", Some("a.txt"), None, b"alice's")]).await.expect_error(403, "INSUFFICIENT_SCOPE");
        app.send(app.request(Method::PUT, "/v1/roles/authenticated/permissions", Some(&tenant.key)).json(&json!({ "permissions": ["files:*", "objects.notes:*"] }))).await.expect(200);

        let mine = upload(&app, &alice, "diary.txt", b"alice's diary", &[]).await;
        let mine_id = mine["id"].as_str().unwrap().to_string();
        assert_eq!(mine["uploaded_by"], alice_id);
        assert_eq!(mine["uploaded_by_type"], "user");
        let theirs = upload(&app, &bob, "bob.txt", b"bob's", &[]).await;
        let theirs_id = theirs["id"].as_str().unwrap().to_string();
        // Private files are their uploader's.
        app.get(&format!("/v1/files/{theirs_id}"), &alice).await.expect_error(404, "NOT_FOUND");
        app.get(&format!("/v1/files/{theirs_id}/content"), &alice).await.expect_error(404, "NOT_FOUND");
        app.delete(&format!("/v1/files/{theirs_id}"), &alice).await.expect_error(404, "NOT_FOUND");
        app.post("/v1/files/batch/read", &alice, json!({ "file_ids": [mine_id, theirs_id] })).await.expect_error(404, "NOT_FOUND");
        let listed = app.post("/v1/files/search", &alice, json!({})).await;
        assert_eq!(listed.data()["total"], 1);
        assert_eq!(listed.data()["results"][0]["id"], mine_id);
        assert_eq!(app.get("/v1/files/stats", &alice).await.data()["total_files"], 1);
        // Shared with the signed-in: readable, not changeable.
        app.patch(&format!("/v1/files/{theirs_id}"), &bob, json!({ "access": "authenticated" })).await.expect(200);
        app.get(&format!("/v1/files/{theirs_id}/content"), &alice).await.expect(200);
        app.patch(&format!("/v1/files/{theirs_id}"), &alice, json!({ "filename": "mine.txt" })).await.expect_error(403, "FORBIDDEN");
        app.delete(&format!("/v1/files/{theirs_id}"), &alice).await.expect_error(403, "FORBIDDEN");
        upload(&app, &alice, "x.txt", b"new version", &[]).await;
        upload_form(&app, &alice, &[("file", Some("x.txt"), None, b"hijack"), ("file_id", None, None, theirs_id.as_bytes())]).await.expect_error(403, "FORBIDDEN");
        assert_eq!(app.post("/v1/files/search", &alice, json!({})).await.data()["total"], 3);

        // Files of an object follow the object's policies: the owner recipe on `notes`.
        app.post("/v1/object-types", &tenant.key, json!({ "name": "notes" })).await.expect(201);
        let policy = json!({ "name": "owners", "action": "all", "condition_json": { "property": "created_by", "op": "eq", "value": "$auth.user_id" } });
        app.post("/v1/object-types/notes/policies", &tenant.key, policy).await.expect(201);
        let note = app.post("/v1/objects/notes", &alice, json!({ "properties": {} })).await;
        note.expect(201);
        let note_id = note.data()["id"].as_str().unwrap().to_string();
        let attached = upload(&app, &tenant.key, "contract.txt", b"signed", &[("object_type_id", "notes"), ("object_id", &note_id)]).await;
        let attached_id = attached["id"].as_str().unwrap().to_string();
        app.get(&format!("/v1/files/{attached_id}"), &alice).await.expect(200);
        app.patch(&format!("/v1/files/{attached_id}"), &alice, json!({ "meta": { "seen": true } })).await.expect(200);
        app.get(&format!("/v1/files/{attached_id}"), &bob).await.expect_error(404, "NOT_FOUND");
        let bobs = app.post("/v1/files/search", &bob, json!({ "object_id": note_id })).await;
        assert_eq!(bobs.data()["total"], 0);
        assert_eq!(app.post("/v1/files/search", &alice, json!({ "object_id": note_id })).await.data()["total"], 1);
        // Bob cannot attach files to Alice's note either.
        upload_form(&app, &bob, &[("file", Some("b.txt"), None, b"b"), ("object_type_id", None, None, b"notes"), ("object_id", None, None, note_id.as_bytes())]).await.expect_error(422, "VALIDATION_FAILED");
        // Service routes stay closed to end users whatever their roles say: usage is a key's.
        app.get("/v1/usage", &alice).await.expect_error(403, "FORBIDDEN");
    }

    async fn another_tenants_file_is_404_on_every_route(app) {
        let owner = app.tenant("Owner").await;
        let other = app.tenant("Other").await;
        let file = upload(&app, &owner.key, "secret.png", &png(10, 10), &[]).await;
        let id = file["id"].as_str().unwrap().to_string();
        let slot = app.post("/v1/files/upload-url", &owner.key, json!({ "filename": "p.bin", "size_bytes": 4 })).await;
        let pending = slot.data()["file_id"].as_str().unwrap().to_string();
        let key = &other.key;
        for resp in [
            app.get(&format!("/v1/files/{id}"), key).await,
            app.patch(&format!("/v1/files/{id}"), key, json!({ "filename": "mine" })).await,
            app.delete(&format!("/v1/files/{id}"), key).await,
            app.delete(&format!("/v1/files/{id}?force=true"), key).await,
            app.get(&format!("/v1/files/{id}/content"), key).await,
            app.get(&format!("/v1/files/{id}/variants/thumb"), key).await,
            app.post(&format!("/v1/files/{id}/signed-url"), key, json!({})).await,
            app.get(&format!("/v1/files/{id}/versions"), key).await,
            app.post(&format!("/v1/files/{id}/restore"), key, json!({})).await,
            app.post(&format!("/v1/files/{id}/stale-cleanup"), key, json!({})).await,
            app.post(&format!("/v1/files/{pending}/upload-complete"), key, json!({})).await,
            app.send(app.request(Method::POST, &format!("/v1/files/{pending}/upload-put"), Some(key)).body(b"abcd".to_vec())).await,
            app.post("/v1/files/batch/read", key, json!({ "file_ids": [id] })).await,
            app.post("/v1/files/batch/update", key, json!({ "file_ids": [id], "folder": "x" })).await,
            app.post("/v1/files/batch/delete", key, json!({ "file_ids": [id] })).await,
            app.post("/v1/files/upload-url", key, json!({ "filename": "v2", "size_bytes": 4, "file_id": id })).await,
            upload_form(&app, key, &[("file", Some("v2.txt"), None, b"v2"), ("file_id", None, None, id.as_bytes())]).await,
        ] {
            resp.expect_error(404, "NOT_FOUND");
        }
        assert_eq!(app.post("/v1/files/search", key, json!({})).await.data()["total"], 0);
        assert_eq!(app.get("/v1/files/trash", key).await.data()["total"], 0);
        assert_eq!(app.get("/v1/files/folders", key).await.data().as_array().unwrap().len(), 0);
        assert_eq!(app.get("/v1/files/stats", key).await.data()["total_files"], 0);
        // Nothing changed for the owner.
        let still = app.get(&format!("/v1/files/{id}"), &owner.key).await;
        assert_eq!((still.data()["filename"].clone(), still.data()["is_deleted"].clone(), still.data()["version"].clone()), (json!("secret.png"), json!(false), json!(1)));
        assert_eq!(events_of(&app, &id).await, vec!["file.uploaded"]);
    }
}

crate::on_both_backends! {
    async fn file_events_reach_webhooks_and_realtime(backend) {
        let app = TestApp::spawn_with(backend, |config| config.outbound_allow_private = true).await;
        let receiver = crate::receiver::Receiver::start().await;
        let tenant = app.tenant("Events").await;
        let hook = app.post("/v1/webhooks", &tenant.key, json!({ "url": receiver.url("/files"), "events": ["file.*"] })).await;
        hook.expect(201);
        let secret = hook.data()["secret"].as_str().unwrap().to_string();
        let mut socket = crate::realtime::open_socket(&app, &tenant.key).await;
        let subscribed = crate::realtime::command(&mut socket, json!({ "type": "subscribe", "channel": "files:docs" })).await;
        assert_eq!(subscribed["type"], "subscribed");

        upload(&app, &tenant.key, "elsewhere.txt", b"not in docs", &[("folder", "other")]).await;
        let file = upload(&app, &tenant.key, "plan.txt", b"the plan", &[("folder", "docs")]).await;
        let id = file["id"].as_str().unwrap().to_string();
        let frame = crate::realtime::next_frame(&mut socket).await;
        assert_eq!(frame["channel"], "files:docs");
        assert_eq!(frame["event"]["type"], "file.uploaded");
        assert_eq!(frame["event"]["data"]["file"]["id"], id.as_str());

        app.patch(&format!("/v1/files/{id}"), &tenant.key, json!({ "access": "authenticated" })).await.expect(200);
        app.delete(&format!("/v1/files/{id}"), &tenant.key).await.expect(200);
        app.post(&format!("/v1/files/{id}/restore"), &tenant.key, json!({})).await.expect(200);
        for kind in ["file.updated", "file.deleted", "file.restored"] {
            assert_eq!(crate::realtime::next_frame(&mut socket).await["event"]["type"], kind);
        }
        let got = receiver.wait_for(5).await;
        let kinds: Vec<String> = got.iter().map(|r| r.json()["type"].as_str().unwrap().to_string()).collect();
        assert_eq!(kinds.iter().filter(|k| *k == "file.uploaded").count(), 2);
        for kind in ["file.updated", "file.deleted", "file.restored"] {
            assert!(kinds.contains(&kind.to_string()), "{kinds:?}");
        }
        assert!(got.iter().all(|r| crate::receiver::verifies(&secret, r)));
        let updated = got.iter().find(|r| r.json()["type"] == "file.updated").unwrap().json();
        assert_eq!(updated["data"]["changed"], json!(["access"]));
        assert_eq!(updated["data"]["file"]["access"], "authenticated");
    }
}
