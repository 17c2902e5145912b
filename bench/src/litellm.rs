//! `--vs litellm`: the same chat completion through LiteLLM's proxy and through Plinth, against
//! one fake provider (a process of its own), one request at a time and sixteen at once, printed
//! side by side with what each adds to a call straight at the provider.
//!
//! LiteLLM comes from PyPI, pinned below 1.82.7 (releases 1.82.7, 1.82.8 and 1.107.0 were
//! compromised), installed into `target/litellm` unless `--litellm PATH` names its `litellm`
//! command. It runs with a master key and no database (so it writes no spend logs; Plinth
//! checks the budget and writes a usage row for every call).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::json;

use crate::record::{Comparison, Figure};
use crate::{drive, Options, Plinth, Scenario};

/// The release the comparison is pinned to: below 1.82.7.
const LITELLM_VERSION: &str = "1.82.6";
const MASTER_KEY: &str = "sk-litellm-bench-master-0123456789";
/// Requests per scenario unless `--requests` says: LiteLLM serves a few hundred a second.
const REQUESTS: usize = 2_000;

pub(crate) async fn run(
    client: &reqwest::Client,
    plinth: &Plinth,
    provider: &str,
    options: &Options,
) -> anyhow::Result<()> {
    let command = match &options.litellm {
        Some(path) => PathBuf::from(path),
        None => install()?,
    };
    let folder = std::env::temp_dir().join(format!("plinth-bench-litellm-{}", std::process::id()));
    let litellm = LiteLlm::start(&command, &folder, provider).await?;
    let result = compare(client, plinth, &litellm, provider, options).await;
    drop(litellm);
    let _ = std::fs::remove_dir_all(&folder);
    result
}

async fn compare(
    client: &reqwest::Client,
    plinth: &Plinth,
    litellm: &LiteLlm,
    provider: &str,
    options: &Options,
) -> anyhow::Result<()> {
    crate::gateway::store_credentials(client, &plinth.base, &plinth.key).await?;
    let requests = if options.requests_given { options.requests } else { REQUESTS };
    let mut comparison = Comparison::new(
        "vs-litellm".into(),
        "LiteLLM",
        json!({ "litellm": LITELLM_VERSION, "requests": requests, "plinth_binary": options.binary }),
    );
    println!("LiteLLM {LITELLM_VERSION} and Plinth (SQLite), one fake provider: {requests} requests per scenario");
    comparison.header();
    let body = json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": "Say hello." }] });
    let chat = |name: &'static str, token: &str| Scenario {
        name,
        method: reqwest::Method::POST,
        path: "/v1/chat/completions".into(),
        token: Some(token.into()),
        body: Some(body.clone()),
    };
    let direct = chat("direct", "sk-bench-0123456789abcdef");
    let through_litellm = chat("LiteLLM", MASTER_KEY);
    let through_plinth = chat("Plinth", &plinth.key);
    for concurrency in [1, 16] {
        let options = Options { requests, concurrency, ..options.clone() };
        let warm = Options { requests: concurrency * 8, ..options.clone() };
        let measure = async |base: &str, scenario: &Scenario| {
            drive(client, base, scenario, &warm).await;
            Figure::of(drive(client, base, scenario, &options).await)
        };
        let straight = measure(provider, &direct).await;
        let theirs = measure(&litellm.base, &through_litellm).await;
        let ours = measure(&plinth.base, &through_plinth).await;
        comparison.add(&format!("chat completion, concurrency {concurrency}"), theirs, ours);
        let added = |via: &Figure| json!({ "median_us": via.median_us - straight.median_us, "p99_us": via.p99_us - straight.p99_us });
        println!(
            "{:<46} direct {:.0}µs; added at the median: LiteLLM {:.0}µs, Plinth {:.0}µs; at p99: LiteLLM {:.0}µs, Plinth {:.0}µs",
            "",
            straight.median_us,
            theirs.median_us - straight.median_us,
            ours.median_us - straight.median_us,
            theirs.p99_us - straight.p99_us,
            ours.p99_us - straight.p99_us,
        );
        comparison.note(
            &format!("concurrency {concurrency}"),
            json!({ "direct": { "median_us": straight.median_us, "p99_us": straight.p99_us, "per_second": straight.per_second },
                    "litellm_added": added(&theirs), "plinth_added": added(&ours) }),
        );
    }
    comparison.finish()
}

/// A LiteLLM proxy on loopback, with one model routed to the fake provider.
struct LiteLlm {
    base: String,
    child: tokio::process::Child,
}

impl LiteLlm {
    async fn start(command: &Path, folder: &Path, provider: &str) -> anyhow::Result<LiteLlm> {
        std::fs::create_dir_all(folder)?;
        let config = folder.join("config.yaml");
        std::fs::write(
            &config,
            format!(
                "model_list:\n  - model_name: gpt-4o-mini\n    litellm_params:\n      model: openai/gpt-4o-mini\n      \
                 api_base: {provider}/v1\n      api_key: sk-bench-0123456789abcdef\n\
                 general_settings:\n  master_key: {MASTER_KEY}\n\
                 litellm_settings:\n  telemetry: false\n  drop_params: true\n"
            ),
        )?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log = std::fs::File::create(folder.join("litellm.log"))?;
        let child = tokio::process::Command::new(command)
            .arg("--config")
            .arg(&config)
            .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--num_workers", "1"])
            .current_dir(folder)
            // The model price map from the package, not from the network.
            .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            .env("LITELLM_LOG", "ERROR")
            .env("NO_DOCS", "True")
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", command.display()))?;
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::builder().no_proxy().build()?;
        for _ in 0..600 {
            let ready = client.get(format!("{base}/health/liveliness")).send().await;
            if ready.is_ok_and(|r| r.status().is_success()) {
                return Ok(LiteLlm { base, child });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let log = std::fs::read_to_string(folder.join("litellm.log")).unwrap_or_default();
        bail!("LiteLLM did not become ready in two minutes:\n{}", tail(&log, 40))
    }
}

impl Drop for LiteLlm {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Installs the pinned LiteLLM proxy into `target/litellm` (once) and answers its command.
fn install() -> anyhow::Result<PathBuf> {
    let installed = |root: &Path| {
        let version = std::process::Command::new(root.join("bin/python"))
            .args(["-c", "import importlib.metadata as m; print(m.version('litellm'))"])
            .output();
        root.join("bin/litellm").exists()
            && version
                .is_ok_and(|out| out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == LITELLM_VERSION)
    };
    let root = crate::pip_install("litellm", &format!("litellm[proxy]=={LITELLM_VERSION}"), installed)?;
    Ok(root.join("bin/litellm"))
}
