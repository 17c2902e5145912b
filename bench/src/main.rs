//! The benchmark harness: starts `target/release/plinth serve` on a fresh data folder (SQLite, or
//! PostgreSQL with `--database-url`), sets up a tenant, a key and a token over HTTP, then drives
//! each scenario with a fixed number of requests at a fixed concurrency over loopback and prints
//! the median and p99 latency and the throughput.
//!
//! ```sh
//! cargo build --release -p plinth && cargo run --release -p plinth-bench -- [--requests N]
//!     [--concurrency C] [--database-url postgres://...]
//! ```

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

mod auth;
mod data;
mod events;
mod files;
mod gateway;
mod isolation;
mod jobs;
mod litellm;
mod pocketbase;
mod record;
use serde_json::{json, Value};

const ADMIN_KEY: &str = "plk_admin_bench_0123456789abcdefghijklmnopqrstuvwx";

#[derive(Clone)]
pub(crate) struct Options {
    requests: usize,
    concurrency: usize,
    database_url: Option<String>,
    binary: String,
    /// Objects to load for the data-store scenarios; 0 runs the default scenarios.
    store: usize,
    /// Seconds to wait after loading, so that PostgreSQL's autovacuum analyses the new rows.
    settle: u64,
    /// Measure event recording, webhook delivery and realtime latency instead.
    events: bool,
    /// Measure what the AI gateway adds to a call against a fake provider instead.
    gateway: bool,
    /// Measure end-user sign-in (and the timing of known against unknown addresses) instead.
    auth: bool,
    /// Measure the jobs engine on its own, with this many no-op jobs, instead.
    jobs: usize,
    /// Measure another tenant's writes while a property of a type with this many objects is
    /// changed, instead.
    isolation: usize,
    /// The change `--isolation` makes: `sortable` (an index), `unique` (a unique index) or
    /// `required` (a new required property whose default fills every object).
    change: String,
    /// Compare with another server in the same run: `pocketbase` or `litellm`.
    vs: Option<String>,
    /// Whether `--requests` was given (the comparison with LiteLLM sends fewer by default).
    requests_given: bool,
    /// A PocketBase binary to use instead of installing the pinned one.
    pocketbase: Option<String>,
    /// A `litellm` command to use instead of installing the pinned one.
    litellm: Option<String>,
    /// The server's `--durability` (its default when absent).
    durability: Option<String>,
    /// Only the scenarios whose name holds this text (for profiling one of them).
    only: Option<String>,
    /// With `--vs pocketbase`: file uploads, downloads and thumbnails instead of records.
    files: bool,
    /// Measure imports, `include` lists, a `GROUP BY` in SQL and exports over this many objects
    /// instead.
    data: usize,
}

impl Options {
    /// The defaults, before any flag.
    pub(crate) fn plain() -> Options {
        Options {
            requests: 20_000,
            concurrency: 32,
            database_url: None,
            binary: "target/release/plinth".into(),
            store: 0,
            settle: 0,
            events: false,
            gateway: false,
            auth: false,
            jobs: 0,
            isolation: 0,
            change: "sortable".into(),
            vs: None,
            requests_given: false,
            pocketbase: None,
            litellm: None,
            durability: None,
            only: None,
            files: false,
            data: 0,
        }
    }
}

fn options() -> anyhow::Result<Options> {
    let mut options = Options::plain();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().context("a flag needs a value");
        match arg.as_str() {
            "--requests" => {
                options.requests = value()?.parse()?;
                options.requests_given = true;
            }
            "--concurrency" => options.concurrency = value()?.parse()?,
            "--database-url" => options.database_url = Some(value()?),
            "--binary" => options.binary = value()?,
            "--store" => options.store = value()?.parse()?,
            "--settle" => options.settle = value()?.parse()?,
            "--events" => options.events = true,
            "--gateway" => options.gateway = true,
            "--auth" => options.auth = true,
            "--jobs" => options.jobs = value()?.parse()?,
            "--isolation" => options.isolation = value()?.parse()?,
            "--change" => match value()?.as_str() {
                other @ ("sortable" | "unique" | "required") => options.change = other.into(),
                other => bail!("--change takes sortable, unique or required, not {other}"),
            },
            "--vs" => match value()?.as_str() {
                other @ ("pocketbase" | "litellm") => options.vs = Some(other.into()),
                other => bail!("--vs takes pocketbase or litellm, not {other}"),
            },
            "--pocketbase" => options.pocketbase = Some(value()?),
            "--litellm" => options.litellm = Some(value()?),
            "--durability" => options.durability = Some(value()?),
            "--only" => options.only = Some(value()?),
            "--files" => options.files = true,
            "--data" => options.data = value()?.parse()?,
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(options)
}

/// A running Plinth server with an enterprise tenant's key.
pub(crate) struct Plinth {
    base: String,
    key: String,
}

#[derive(Clone)]
pub(crate) struct Scenario {
    name: &'static str,
    method: reqwest::Method,
    path: String,
    token: Option<String>,
    body: Option<Value>,
}

pub(crate) struct Outcome {
    latencies: Vec<Duration>,
    elapsed: Duration,
    failures: usize,
}

pub(crate) async fn drive(client: &reqwest::Client, base: &str, scenario: &Scenario, options: &Options) -> Outcome {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..options.concurrency {
        let (client, next, scenario) = (client.clone(), next.clone(), scenario.clone());
        let url = format!("{base}{}", scenario.path);
        let total = options.requests;
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = 0;
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < total {
                let mut request = client.request(scenario.method.clone(), &url);
                if let Some(token) = &scenario.token {
                    request = request.bearer_auth(token);
                }
                if let Some(body) = &scenario.body {
                    request = request.json(body);
                }
                let sent = Instant::now();
                match request.send().await {
                    Ok(response) if response.status().is_success() => {
                        let _ = response.bytes().await;
                        latencies.push(sent.elapsed());
                    }
                    _ => failures += 1,
                }
            }
            (latencies, failures)
        }));
    }
    let mut latencies = Vec::with_capacity(options.requests);
    let mut failures = 0;
    for worker in workers {
        if let Ok((mut l, f)) = worker.await {
            latencies.append(&mut l);
            failures += f;
        }
    }
    Outcome { latencies, elapsed: started.elapsed(), failures }
}

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: &str,
    body: Value,
) -> anyhow::Result<Value> {
    let response = client.request(method, url).bearer_auth(token).json(&body).send().await?;
    let status = response.status();
    let value: Value = response.json().await?;
    if !status.is_success() {
        bail!("setup call failed: {status} {value}");
    }
    Ok(value)
}

/// A pinned package from PyPI in a virtual environment of its own, `target/<folder>`: answers
/// the folder, installing `requirement` (`name==version`) first unless `installed` finds it there.
pub(crate) fn pip_install(
    folder: &str,
    requirement: &str,
    installed: impl Fn(&std::path::Path) -> bool,
) -> anyhow::Result<std::path::PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target").join(folder);
    if installed(&root) {
        return Ok(root);
    }
    println!("installing {requirement} from PyPI into {} (once)", root.display());
    let status = std::process::Command::new("python3").arg("-m").arg("venv").arg(&root).status()?;
    if !status.success() {
        bail!("python3 -m venv {} failed", root.display());
    }
    let status = std::process::Command::new(root.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check", requirement])
        .status()?;
    if !status.success() {
        bail!("pip install {requirement} failed");
    }
    Ok(root)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("--fake-provider") {
        return gateway::serve_fake_provider().await;
    }
    let options = options()?;
    if options.jobs > 0 {
        return jobs::run(options.database_url.as_deref(), options.jobs, options.concurrency).await;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let data_dir = std::env::temp_dir().join(format!("plinth-bench-{}", std::process::id()));
    let mut command = tokio::process::Command::new(&options.binary);
    command
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(&data_dir)
        .env("PLINTH_ADMIN_KEY", ADMIN_KEY)
        .env("PLINTH_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    if let Some(url) = &options.database_url {
        command.args(["--database-url", url]);
    }
    if let Some(durability) = &options.durability {
        command.args(["--durability", durability]);
    }
    if options.events {
        // Webhooks go to a receiver on loopback.
        command.env("PLINTH_OUTBOUND_ALLOW_PRIVATE", "true");
        // The backlog scenario holds deliveries at the receiver while it queues more.
        command.env("PLINTH_WEBHOOK_TIMEOUT_SECS", "120");
    }
    let litellm = options.vs.as_deref() == Some("litellm");
    let fake = if options.gateway || litellm { Some(gateway::spawn_fake_provider().await?) } else { None };
    let provider = fake.as_ref().map(|(_, base)| base.clone());
    if let Some(provider) = &provider {
        command.env("PLINTH_OPENAI_BASE_URL", format!("{provider}/v1"));
        command.env("PLINTH_ANTHROPIC_BASE_URL", provider);
    }
    let server = command.spawn().with_context(|| format!("starting {} (build it first)", options.binary))?;
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder().no_proxy().pool_max_idle_per_host(options.concurrency).build()?;
    let mut ready = false;
    for _ in 0..200 {
        if client.get(format!("{base}/ready")).send().await.is_ok_and(|r| r.status().is_success()) {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !ready {
        bail!("the server did not become ready");
    }

    let BenchTenant { key, key_id, tenant_id } = bench_tenant(&client, &base, "Bench").await?;
    if options.auth {
        auth::run(&client, &base, &key, &tenant_id, options.requests).await?;
        return stop(server, &data_dir).await;
    }
    if options.data > 0 {
        data::run(&client, &base, &key, &options).await?;
        return stop(server, &data_dir).await;
    }
    if options.vs.is_some() {
        let plinth = Plinth { base: base.clone(), key: key.clone() };
        match &provider {
            Some(provider) if litellm => litellm::run(&client, &plinth, provider, &options).await?,
            _ => pocketbase::run(&client, &plinth, &options).await?,
        }
        return stop(server, &data_dir).await;
    }
    let token =
        call(&client, reqwest::Method::POST, format!("{base}/v1/token"), &key, json!({ "api_key": key })).await?;
    let token = token["data"]["token"].as_str().context("token")?.to_string();

    if let Some(provider) = &provider {
        gateway::run(&client, &base, provider, &key, &options).await?;
        return stop(server, &data_dir).await;
    }
    if options.isolation > 0 {
        isolation::run(&client, &base, &key, &options).await?;
        return stop(server, &data_dir).await;
    }
    if options.events {
        events::run(&client, &base, &key, options.requests, options.concurrency).await?;
        return stop(server, &data_dir).await;
    }
    let scenarios = if options.store > 0 {
        store_scenarios(&client, &base, &key, &options).await?
    } else {
        default_scenarios(&key, &key_id, &token)
    };

    let backend = if options.database_url.is_some() { "postgres" } else { "sqlite" };
    println!("plinth {backend}: {} requests per scenario, concurrency {}", options.requests, options.concurrency);
    println!("{:<44} {:>10} {:>10} {:>12} {:>8}", "scenario", "median", "p99", "req/s", "failed");
    let chosen = |s: &&Scenario| options.only.as_deref().is_none_or(|only| s.name.contains(only));
    for scenario in scenarios.iter().filter(chosen) {
        // Warm the connection pool and caches first.
        let warm = Options { requests: options.concurrency * 4, ..options.clone() };
        drive(&client, &base, scenario, &warm).await;
        let mut outcome = drive(&client, &base, scenario, &options).await;
        outcome.latencies.sort();
        let throughput = outcome.latencies.len() as f64 / outcome.elapsed.as_secs_f64();
        println!(
            "{:<44} {:>8.0}µs {:>8.0}µs {:>12.0} {:>8}",
            scenario.name,
            percentile(&outcome.latencies, 0.5).as_secs_f64() * 1e6,
            percentile(&outcome.latencies, 0.99).as_secs_f64() * 1e6,
            throughput,
            outcome.failures,
        );
    }

    stop(server, &data_dir).await
}

/// Stops the server and removes its data folder (kept with `PLINTH_BENCH_KEEP` set).
async fn stop(mut server: tokio::process::Child, data_dir: &std::path::Path) -> anyhow::Result<()> {
    server.start_kill()?;
    let _ = server.wait().await;
    if std::env::var_os("PLINTH_BENCH_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(data_dir);
    } else {
        println!("data kept in {}", data_dir.display());
    }
    Ok(())
}

/// A tenant of the run, its first key and its id.
pub(crate) struct BenchTenant {
    pub(crate) key: String,
    pub(crate) key_id: String,
    pub(crate) tenant_id: String,
}

/// An enterprise tenant (no monthly call limit) whose key allows far more than the run sends.
pub(crate) async fn bench_tenant(client: &reqwest::Client, base: &str, name: &str) -> anyhow::Result<BenchTenant> {
    let body = json!({ "name": name, "tier": "enterprise" });
    let tenant = call(client, reqwest::Method::POST, format!("{base}/v1/tenants"), ADMIN_KEY, body).await?;
    let key = tenant["data"]["api_key"].as_str().context("api_key")?.to_string();
    let key_id = tenant["data"]["api_key_id"].as_str().context("api_key_id")?.to_string();
    let tenant_id = tenant["data"]["id"].as_str().context("tenant id")?.to_string();
    // Only the platform admin may raise a key above its plan.
    let raised = client
        .patch(format!("{base}/v1/keys/{key_id}"))
        .bearer_auth(ADMIN_KEY)
        .header("x-tenant-id", &tenant_id)
        .json(&json!({ "rate_limit": 10_000_000 }))
        .send()
        .await?;
    if !raised.status().is_success() {
        bail!("raising the bench key's rate limit failed: {}", raised.text().await?);
    }
    Ok(BenchTenant { key, key_id, tenant_id })
}

/// The data store: a type with indexed and sortable properties, `options.store` objects loaded
/// in batches of 100 (reported as objects per second), then one create, one get by id, a
/// filtered and sorted list page, and a full-text search.
async fn store_scenarios(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    options: &Options,
) -> anyhow::Result<Vec<Scenario>> {
    let post = reqwest::Method::POST;
    pocketbase::define(client, base, key).await?;
    let item = pocketbase::object;
    let started = Instant::now();
    let (load_base, load_key) = (base.to_string(), key.to_string());
    let loaded = pocketbase::load(client, options.store, move |batch| {
        let objects: Vec<Value> = batch.map(item).collect();
        (format!("{load_base}/v1/objects/items/batch/create"), load_key.clone(), json!({ "objects": objects }))
    })
    .await?;
    println!(
        "loaded {} objects in batches of 100 (4 at a time): {:.1} s, {:.0} objects/s",
        options.store,
        started.elapsed().as_secs_f64(),
        loaded.per_second
    );
    // An end user who owns some of the items, under the owner recipe: a permission on the
    // built-in role and one policy on `created_by`.
    let owned = (options.store / 100).clamp(100, 1000);
    let user = owner(client, base, key, owned, &item).await?;
    tokio::time::sleep(Duration::from_secs(options.settle)).await;
    let one = call(client, post.clone(), format!("{base}/v1/objects/items"), key, item(options.store)).await?;
    let id = one["data"]["id"].as_str().context("object id")?.to_string();
    let theirs = call(client, post.clone(), format!("{base}/v1/objects/items"), &user, item(options.store + 1)).await?;
    let their_id = theirs["data"]["id"].as_str().context("object id")?.to_string();
    let as_user = |name: &'static str, path: String| Scenario {
        name,
        method: reqwest::Method::GET,
        path,
        token: Some(user.clone()),
        body: None,
    };
    let mut scenarios = vec![
        Scenario {
            name: "GET /v1/objects/items/{id} (key)",
            method: reqwest::Method::GET,
            path: format!("/v1/objects/items/{id}"),
            token: Some(key.into()),
            body: None,
        },
        as_user("GET /v1/objects/items/{id} (user, owner)", format!("/v1/objects/items/{their_id}")),
        Scenario {
            name: "GET list limit=20 (key)",
            method: reqwest::Method::GET,
            path: "/v1/objects/items/list?limit=20".into(),
            token: Some(key.into()),
            body: None,
        },
        as_user("GET list limit=20 (user, owner)", "/v1/objects/items/list?limit=20".into()),
        // As many rows as the user owns (1%), through an index, for a like-for-like list.
        Scenario {
            name: "GET list filter[qty][lt]=10 (key, 1%)",
            method: reqwest::Method::GET,
            path: "/v1/objects/items/list?filter[qty][lt]=10&limit=20".into(),
            token: Some(key.into()),
            body: None,
        },
        as_user(
            "GET list filter+sort (user, owner)",
            "/v1/objects/items/list?filter[qty][gte]=990&sort=-price&limit=20".into(),
        ),
    ];
    println!("the user owns {owned} of the items");
    scenarios.extend(vec![
        Scenario {
            name: "POST /v1/objects/items (create one)",
            method: post.clone(),
            path: "/v1/objects/items".into(),
            token: Some(key.into()),
            body: Some(item(7)),
        },
        Scenario {
            name: "GET list filter[qty][gte]=990&sort=-price",
            method: reqwest::Method::GET,
            path: "/v1/objects/items/list?filter[qty][gte]=990&sort=-price&limit=20".into(),
            token: Some(key.into()),
            body: None,
        },
        Scenario {
            name: "GET list sort=-qty (first page)",
            method: reqwest::Method::GET,
            path: "/v1/objects/items/list?sort=-qty&limit=20".into(),
            token: Some(key.into()),
            body: None,
        },
        Scenario {
            name: "POST search query",
            method: post.clone(),
            path: "/v1/objects/items/search".into(),
            token: Some(key.into()),
            body: Some(json!({ "query": "charlie delta", "limit": 20 })),
        },
        Scenario {
            name: "POST search query + filter",
            method: post,
            path: "/v1/objects/items/search".into(),
            token: Some(key.into()),
            body: Some(json!({
                "query": "charlie delta", "filters": [{ "property": "qty", "op": "lt", "value": 100 }], "limit": 20
            })),
        },
    ]);
    Ok(scenarios)
}

/// Makes a signed-in end user who may reach the items they create, has them create `owned`
/// items, and answers their access token.
async fn owner(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    owned: usize,
    item: &dyn Fn(usize) -> Value,
) -> anyhow::Result<String> {
    let post = reqwest::Method::POST;
    let permissions = json!({ "permissions": ["objects.items:*"] });
    call(client, reqwest::Method::PUT, format!("{base}/v1/roles/authenticated/permissions"), key, permissions).await?;
    let policy = json!({ "name": "owners", "action": "all",
        "condition_json": { "property": "created_by", "op": "eq", "value": "$auth.user_id" } });
    call(client, post.clone(), format!("{base}/v1/object-types/items/policies"), key, policy).await?;
    let credentials = json!({ "email": "owner@bench.example", "password": "granite-otter-harbour-42" });
    call(client, post.clone(), format!("{base}/v1/users"), key, credentials.clone()).await?;
    let signed_in = client
        .post(format!("{base}/v1/auth/login"))
        .header("x-tenant-id", tenant_of(client, base, key).await?)
        .json(&credentials)
        .send()
        .await?;
    let signed_in: Value = signed_in.json().await?;
    let user = signed_in["data"]["access_token"].as_str().context("the owner's access token")?.to_string();
    for batch in 0..owned.div_ceil(100) {
        let objects: Vec<Value> = (batch * 100..((batch + 1) * 100).min(owned)).map(|n| item(1_000_000 + n)).collect();
        call(
            client,
            post.clone(),
            format!("{base}/v1/objects/items/batch/create"),
            &user,
            json!({ "objects": objects }),
        )
        .await?;
    }
    Ok(user)
}

/// The tenant of `key`, from the key's own answer.
async fn tenant_of(client: &reqwest::Client, base: &str, key: &str) -> anyhow::Result<String> {
    let keys = call(client, reqwest::Method::GET, format!("{base}/v1/keys?limit=1"), key, Value::Null).await?;
    Ok(keys["data"]["results"][0]["tenant_id"].as_str().context("tenant id")?.to_string())
}

fn default_scenarios(key: &str, key_id: &str, token: &str) -> Vec<Scenario> {
    vec![
        Scenario {
            name: "GET /health (no auth)",
            method: reqwest::Method::GET,
            path: "/health".into(),
            token: None,
            body: None,
        },
        Scenario {
            name: "GET /v1/keys/{id} (API key)",
            method: reqwest::Method::GET,
            path: format!("/v1/keys/{key_id}"),
            token: Some(key.into()),
            body: None,
        },
        Scenario {
            name: "GET /v1/keys/{id} (access token)",
            method: reqwest::Method::GET,
            path: format!("/v1/keys/{key_id}"),
            token: Some(token.into()),
            body: None,
        },
        Scenario {
            name: "GET /v1/keys?limit=20 (API key)",
            method: reqwest::Method::GET,
            path: "/v1/keys?limit=20".into(),
            token: Some(key.into()),
            body: None,
        },
        Scenario {
            name: "POST /v1/keys (API key, write)",
            method: reqwest::Method::POST,
            path: "/v1/keys".into(),
            token: Some(key.into()),
            body: Some(json!({ "label": "bench", "scopes": ["read"] })),
        },
    ]
}
