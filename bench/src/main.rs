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
use serde_json::{json, Value};

const ADMIN_KEY: &str = "plk_admin_bench_0123456789abcdefghijklmnopqrstuvwx";

struct Options {
    requests: usize,
    concurrency: usize,
    database_url: Option<String>,
    binary: String,
}

fn options() -> anyhow::Result<Options> {
    let mut options =
        Options { requests: 20_000, concurrency: 32, database_url: None, binary: "target/release/plinth".into() };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().context("a flag needs a value");
        match arg.as_str() {
            "--requests" => options.requests = value()?.parse()?,
            "--concurrency" => options.concurrency = value()?.parse()?,
            "--database-url" => options.database_url = Some(value()?),
            "--binary" => options.binary = value()?,
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(options)
}

#[derive(Clone)]
struct Scenario {
    name: &'static str,
    method: reqwest::Method,
    path: String,
    token: Option<String>,
    body: Option<Value>,
}

struct Outcome {
    latencies: Vec<Duration>,
    elapsed: Duration,
    failures: usize,
}

async fn drive(client: &reqwest::Client, base: &str, scenario: &Scenario, options: &Options) -> Outcome {
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

fn percentile(sorted: &[Duration], p: f64) -> Duration {
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = options()?;
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
    let mut server = command.spawn().with_context(|| format!("starting {} (build it first)", options.binary))?;
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

    // An enterprise tenant (no monthly call limit) whose key allows far more than the run sends.
    let body = json!({ "name": "Bench", "tier": "enterprise" });
    let tenant = call(&client, reqwest::Method::POST, format!("{base}/v1/tenants"), ADMIN_KEY, body).await?;
    let key = tenant["data"]["api_key"].as_str().context("api_key")?.to_string();
    let key_id = tenant["data"]["api_key_id"].as_str().context("api_key_id")?.to_string();
    // Only the platform admin may raise a key above its plan.
    let tenant_id = tenant["data"]["id"].as_str().context("tenant id")?.to_string();
    let raised = client
        .patch(format!("{base}/v1/keys/{key_id}"))
        .bearer_auth(ADMIN_KEY)
        .header("x-tenant-id", tenant_id)
        .json(&json!({ "rate_limit": 10_000_000 }))
        .send()
        .await?;
    if !raised.status().is_success() {
        bail!("raising the bench key's rate limit failed: {}", raised.text().await?);
    }
    let token =
        call(&client, reqwest::Method::POST, format!("{base}/v1/token"), &key, json!({ "api_key": key })).await?;
    let token = token["data"]["token"].as_str().context("token")?.to_string();

    let scenarios = vec![
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
            token: Some(key.clone()),
            body: None,
        },
        Scenario {
            name: "GET /v1/keys/{id} (access token)",
            method: reqwest::Method::GET,
            path: format!("/v1/keys/{key_id}"),
            token: Some(token.clone()),
            body: None,
        },
        Scenario {
            name: "GET /v1/keys?limit=20 (API key)",
            method: reqwest::Method::GET,
            path: "/v1/keys?limit=20".into(),
            token: Some(key.clone()),
            body: None,
        },
        Scenario {
            name: "POST /v1/keys (API key, write)",
            method: reqwest::Method::POST,
            path: "/v1/keys".into(),
            token: Some(key.clone()),
            body: Some(json!({ "label": "bench", "scopes": ["read"] })),
        },
    ];

    let backend = if options.database_url.is_some() { "postgres" } else { "sqlite" };
    println!("plinth {backend}: {} requests per scenario, concurrency {}", options.requests, options.concurrency);
    println!("{:<36} {:>10} {:>10} {:>12} {:>8}", "scenario", "median", "p99", "req/s", "failed");
    for scenario in &scenarios {
        // Warm the connection pool and caches first.
        let warm = Options {
            requests: options.concurrency * 4,
            ..Options { binary: String::new(), database_url: None, ..options }
        };
        drive(&client, &base, scenario, &warm).await;
        let mut outcome = drive(&client, &base, scenario, &options).await;
        outcome.latencies.sort();
        let throughput = outcome.latencies.len() as f64 / outcome.elapsed.as_secs_f64();
        println!(
            "{:<36} {:>8.0}µs {:>8.0}µs {:>12.0} {:>8}",
            scenario.name,
            percentile(&outcome.latencies, 0.5).as_secs_f64() * 1e6,
            percentile(&outcome.latencies, 0.99).as_secs_f64() * 1e6,
            throughput,
            outcome.failures,
        );
    }

    server.start_kill()?;
    let _ = server.wait().await;
    let _ = std::fs::remove_dir_all(&data_dir);
    Ok(())
}
