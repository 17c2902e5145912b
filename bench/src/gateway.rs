//! `--gateway`: what the AI gateway adds to a call. A fake provider on loopback, in a process of
//! its own, answers OpenAI's and Anthropic's formats at once; the same request is driven straight
//! at it and through Plinth (OpenAI passed through, and Anthropic translated both ways), and the
//! medians compared.

use std::time::Duration;

use serde_json::json;

use crate::{drive, percentile, Options, Scenario};

/// The fake provider in a process of its own (this harness started with `--fake-provider`), so
/// that a call straight at it crosses processes as a call through a gateway does. Answers its
/// base URL; the process ends with the handle.
pub async fn spawn_fake_provider() -> anyhow::Result<(tokio::process::Child, String)> {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .arg("--fake-provider")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("the fake provider's output"))?;
    let mut line = String::new();
    tokio::io::BufReader::new(stdout).read_line(&mut line).await?;
    anyhow::ensure!(line.starts_with("http://"), "the fake provider did not start: {line:?}");
    Ok((child, line.trim().to_string()))
}

/// `--fake-provider`: serves the fake provider until killed, its base URL printed first.
pub async fn serve_fake_provider() -> anyhow::Result<()> {
    let base = fake_provider().await?;
    println!("{base}");
    std::future::pending::<()>().await;
    Ok(())
}

/// The fake provider: a canned OpenAI chat completion at `/v1/chat/completions`, a canned
/// Anthropic message at `/v1/messages`.
pub async fn fake_provider() -> anyhow::Result<String> {
    let openai = json!({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
        "choices": [{ "index": 0, "message": { "role": "assistant", "content": "Hello there, from the bench." }, "finish_reason": "stop" }],
        "usage": { "prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20 }
    });
    let anthropic = json!({
        "id": "msg_bench", "type": "message", "role": "assistant", "model": "claude-sonnet-4-6",
        "content": [{ "type": "text", "text": "Hello there, from the bench." }],
        "stop_reason": "end_turn", "stop_sequence": null, "usage": { "input_tokens": 12, "output_tokens": 8 }
    });
    let app = axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(move || async move { axum::Json(openai) }))
        .route("/v1/messages", axum::routing::post(move || async move { axum::Json(anthropic) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(base)
}

/// Stores the fake provider's credentials in Plinth's vault, for OpenAI and Anthropic.
pub async fn store_credentials(client: &reqwest::Client, base: &str, key: &str) -> anyhow::Result<()> {
    for service in ["openai", "anthropic"] {
        let url = format!("{base}/v1/credentials/{service}");
        let response =
            client.put(url).bearer_auth(key).json(&json!({ "api_key": "sk-bench-0123456789abcdef" })).send().await?;
        anyhow::ensure!(response.status().is_success(), "storing {service} credentials: {}", response.status());
    }
    Ok(())
}

pub async fn run(
    client: &reqwest::Client,
    base: &str,
    provider: &str,
    key: &str,
    options: &Options,
) -> anyhow::Result<()> {
    store_credentials(client, base, key).await?;
    let messages = json!([{ "role": "user", "content": "Say hello." }]);
    let direct_openai = Scenario {
        name: "direct: fake OpenAI",
        method: reqwest::Method::POST,
        path: "/v1/chat/completions".into(),
        token: Some("sk-bench".into()),
        body: Some(json!({ "model": "gpt-4o-mini", "messages": messages })),
    };
    let direct_anthropic = Scenario {
        name: "direct: fake Anthropic",
        method: reqwest::Method::POST,
        path: "/v1/messages".into(),
        token: Some("sk-bench".into()),
        body: Some(json!({ "model": "claude-sonnet-4-6", "max_tokens": 100, "messages": messages })),
    };
    let via_openai = Scenario {
        name: "Plinth: gpt-4o-mini (pass-through)",
        method: reqwest::Method::POST,
        path: "/v1/chat/completions".into(),
        token: Some(key.into()),
        body: Some(json!({ "model": "gpt-4o-mini", "messages": messages })),
    };
    let via_anthropic = Scenario {
        name: "Plinth: claude-sonnet-4-6 (translated)",
        method: reqwest::Method::POST,
        path: "/v1/chat/completions".into(),
        token: Some(key.into()),
        body: Some(json!({ "model": "claude-sonnet-4-6", "messages": messages })),
    };
    println!("gateway: {} requests per scenario, concurrency {}", options.requests, options.concurrency);
    println!("{:<44} {:>10} {:>10} {:>10} {:>7}", "scenario", "median", "p99", "req/s", "failed");
    let mut medians = Vec::new();
    for (scenario, target) in
        [(&direct_openai, provider), (&via_openai, base), (&direct_anthropic, provider), (&via_anthropic, base)]
    {
        let warm = Options { requests: options.concurrency * 4, ..crate::events::options_like(options) };
        drive(client, target, scenario, &warm).await;
        let mut outcome = drive(client, target, scenario, options).await;
        outcome.latencies.sort();
        let median = percentile(&outcome.latencies, 0.5);
        medians.push(median);
        println!(
            "{:<44} {:>8.0}µs {:>8.0}µs {:>10.0} {:>7}",
            scenario.name,
            median.as_secs_f64() * 1e6,
            percentile(&outcome.latencies, 0.99).as_secs_f64() * 1e6,
            outcome.latencies.len() as f64 / outcome.elapsed.as_secs_f64(),
            outcome.failures
        );
    }
    let added = |via: Duration, direct: Duration| via.saturating_sub(direct).as_secs_f64() * 1e6;
    println!(
        "added at the median: {:.0}µs (pass-through), {:.0}µs (translated)",
        added(medians[1], medians[0]),
        added(medians[3], medians[2])
    );
    Ok(())
}
