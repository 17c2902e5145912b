//! The OpenAI-compatible endpoint against fake providers: routing, pass-through, Anthropic
//! translation both ways (answers and streams), errors in OpenAI's shape.

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::{TestApp, TestTenant};
use crate::fakes::Fake;
use crate::on_both_backends;

struct Providers {
    openai: Fake,
    anthropic: Fake,
    openrouter: Fake,
}

async fn gateway(backend: crate::common::Backend) -> (TestApp, Providers) {
    gateway_with(backend, |_| {}).await
}

async fn gateway_with(
    backend: crate::common::Backend,
    change: impl FnOnce(&mut plinth::config::Config) + Send + 'static,
) -> (TestApp, Providers) {
    let providers = Providers {
        openai: Fake::openai().await,
        anthropic: Fake::anthropic().await,
        openrouter: Fake::openai().await,
    };
    let (openai, anthropic, openrouter) = (
        providers.openai.base_url.clone(),
        providers.anthropic.base_url.clone(),
        providers.openrouter.base_url.clone(),
    );
    let app = TestApp::spawn_with(backend, move |config| {
        config.outbound_allow_private = true;
        config.ai.openai_base_url = openai;
        config.ai.anthropic_base_url = anthropic;
        config.ai.openrouter_base_url = openrouter;
        change(config);
    })
    .await;
    (app, providers)
}

async fn credentials(app: &TestApp, tenant: &TestTenant) {
    for (service, body) in [
        ("openai", json!({ "api_key": "sk-openai-test-key-0001", "organization": "org-7" })),
        ("anthropic", json!({ "api_key": "sk-ant-test-key-0002" })),
        (
            "openrouter",
            json!({ "api_key": "sk-or-test-key-0003", "referer": "https://app.example", "app_title": "Plinth tests" }),
        ),
    ] {
        let resp = app
            .send(app.request(Method::PUT, &format!("/v1/credentials/{service}"), Some(&tenant.key)).json(&body))
            .await;
        resp.expect(201);
    }
}

async fn complete(app: &TestApp, path: &str, key: Option<&str>, body: Value) -> crate::common::Resp {
    app.send(app.request(Method::POST, path, key).json(&body)).await
}

/// The `data:` payloads of an SSE body.
fn frames(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter_map(|block| block.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(str::to_string)
        .collect()
}

on_both_backends! {
    async fn models_route_to_their_providers(backend) {
        let (app, fakes) = gateway(backend).await;
        let tenant = app.tenant("Gateway").await;
        credentials(&app, &tenant).await;
        let hello = json!([{ "role": "user", "content": "hi" }]);

        // OpenAI: passed through as it is, with the tenant's key and organization.
        let answer = complete(&app, "/v1/chat/completions", Some(&tenant.key), json!({ "model": "gpt-4o-mini", "messages": hello })).await;
        answer.expect(200);
        assert_eq!(answer.header("x-plinth-provider"), Some("openai"));
        assert_eq!(answer.body["object"], "chat.completion");
        assert_eq!(answer.body["choices"][0]["message"]["content"], "echo: hi");
        assert!(answer.body.get("success").is_none(), "no envelope");
        let seen = fakes.openai.last();
        assert_eq!(seen.path, "/v1/chat/completions");
        assert_eq!(seen.header("authorization"), "Bearer sk-openai-test-key-0001");
        assert_eq!(seen.header("openai-organization"), "org-7");
        assert_eq!(seen.body["model"], "gpt-4o-mini");
        let prefixed = complete(&app, "/v1/ai/completions", Some(&tenant.key), json!({ "model": "openai/gpt-4o", "messages": hello })).await;
        prefixed.expect(200);
        assert_eq!(fakes.openai.last().body["model"], "gpt-4o");

        // Anything else: OpenRouter, the model verbatim.
        let routed = complete(&app, "/v1/chat/completions", Some(&tenant.key), json!({ "model": "google/gemini-2.5-flash", "messages": hello })).await;
        routed.expect(200);
        assert_eq!(routed.header("x-plinth-provider"), Some("openrouter"));
        let seen = fakes.openrouter.last();
        assert_eq!(seen.body["model"], "google/gemini-2.5-flash");
        assert_eq!(seen.header("authorization"), "Bearer sk-or-test-key-0003");
        assert_eq!(seen.header("http-referer"), "https://app.example");
        assert_eq!(seen.header("x-title"), "Plinth tests");

        // Anthropic: translated there and back.
        let claude = complete(&app, "/v1/chat/completions", Some(&tenant.key), json!({
            "model": "claude-sonnet-4-6",
            "messages": [{ "role": "system", "content": "Be brief." }, { "role": "user", "content": "hi" }],
            "max_tokens": 100, "temperature": 0.5, "stop": ["END"], "n": 1, "seed": 3, "user": "u", "logprobs": false
        })).await;
        claude.expect(200);
        assert_eq!(claude.header("x-plinth-provider"), Some("anthropic"));
        assert_eq!(claude.body["object"], "chat.completion");
        assert_eq!(claude.body["id"], "chatcmpl-msg_fake");
        assert_eq!(claude.body["choices"][0]["message"]["content"], "Hello from Claude: [{\"text\":\"hi\",\"type\":\"text\"}]");
        assert_eq!(claude.body["choices"][0]["finish_reason"], "stop");
        assert_eq!(claude.body["usage"], json!({ "prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18 }));
        let seen = fakes.anthropic.last();
        assert_eq!(seen.path, "/v1/messages");
        assert_eq!(seen.header("x-api-key"), "sk-ant-test-key-0002");
        assert_eq!(seen.header("anthropic-version"), "2023-06-01");
        assert_eq!(seen.body["system"], "Be brief.");
        assert_eq!(seen.body["max_tokens"], 100);
        assert_eq!(seen.body["stop_sequences"], json!(["END"]));
        assert!(seen.body.get("seed").is_none() && seen.body.get("n").is_none());
        let prefixed = complete(&app, "/v1/chat/completions", Some(&tenant.key), json!({ "model": "anthropic/claude-3-5-haiku", "messages": hello })).await;
        prefixed.expect(200);
        assert_eq!(fakes.anthropic.last().body["model"], "claude-3-5-haiku");

        // A tenant's own provider instance, by name.
        let instance = app.post("/v1/ai-providers", &tenant.key, json!({
            "name": "local", "provider_type": "openai-compatible", "base_url": fakes.openrouter.base_url
        })).await;
        instance.expect(201);
        let local = complete(&app, "/v1/chat/completions", Some(&tenant.key), json!({ "model": "local/llama-3.1-8b", "messages": hello })).await;
        local.expect(200);
        assert_eq!(local.header("x-plinth-provider"), Some("local"));
        assert_eq!(fakes.openrouter.last().body["model"], "llama-3.1-8b");
        assert_eq!(fakes.openrouter.last().header("authorization"), "", "an instance without a key sends none");

        // Embeddings go the same way; Anthropic has none.
        let embedded = complete(&app, "/v1/embeddings", Some(&tenant.key), json!({ "model": "text-embedding-3-small", "input": "hello" })).await;
        embedded.expect(200);
        assert_eq!(embedded.body["data"][0]["embedding"], json!([0.25, -0.5, 0.75]));
        assert_eq!(fakes.openai.last().path, "/v1/embeddings");
        let refused = complete(&app, "/v1/embeddings", Some(&tenant.key), json!({ "model": "claude-sonnet-4-6", "input": "x" })).await;
        assert_eq!(refused.status, 400);
        assert_eq!(refused.body["error"]["type"], "invalid_request_error");

        // Opened credentials are kept in memory, and a change holds from the next call on.
        let id = instance.body["data"]["id"].as_str().unwrap();
        app.send(app.request(Method::PATCH, &format!("/v1/ai-providers/{id}"), Some(&tenant.key)).json(&json!({ "api_key": "sk-local-test-key-0004" }))).await.expect(200);
        complete(&app, "/v1/chat/completions", Some(&tenant.key), json!({ "model": "local/llama-3.1-8b", "messages": hello })).await.expect(200);
        assert_eq!(fakes.openrouter.last().header("authorization"), "Bearer sk-local-test-key-0004");
        app.send(app.request(Method::PUT, "/v1/credentials/openai", Some(&tenant.key)).json(&json!({ "api_key": "sk-openai-test-key-0005" }))).await.expect(200);
        complete(&app, "/v1/chat/completions", Some(&tenant.key), json!({ "model": "gpt-4o-mini", "messages": hello })).await.expect(200);
        assert_eq!(fakes.openai.last().header("authorization"), "Bearer sk-openai-test-key-0005");
        assert_eq!(fakes.openai.last().header("openai-organization"), "", "the replaced credentials had no organization");
        app.send(app.request(Method::DELETE, "/v1/credentials/anthropic", Some(&tenant.key))).await.expect(200);
        let gone = complete(&app, "/v1/chat/completions", Some(&tenant.key), json!({ "model": "claude-sonnet-4-6", "messages": hello })).await;
        assert_eq!(gone.status, 401, "{}", gone.text);
        assert_eq!(gone.body["error"]["code"], "missing_credentials");
        app.send(app.request(Method::DELETE, &format!("/v1/ai-providers/{id}"), Some(&tenant.key))).await.expect(200);
        let gone = complete(&app, "/v1/chat/completions", Some(&tenant.key), json!({ "model": "local/llama-3.1-8b", "messages": hello })).await;
        assert_ne!(gone.header("x-plinth-provider"), Some("local"), "a deleted instance is not used");
    }

    async fn tool_calls_and_streams_translate(backend) {
        let (app, fakes) = gateway(backend).await;
        let tenant = app.tenant("Tools").await;
        credentials(&app, &tenant).await;
        let tools = json!([{ "type": "function", "function": { "name": "weather", "description": "Weather now",
            "parameters": { "type": "object", "properties": { "city": { "type": "string" } }, "required": ["city"] } } }]);

        let called = complete(&app, "/v1/chat/completions", Some(&tenant.key), json!({
            "model": "claude-sonnet-4-6", "messages": [{ "role": "user", "content": "Weather in Paris and Oslo?" }],
            "tools": tools, "tool_choice": "auto"
        })).await;
        called.expect(200);
        assert_eq!(called.body["choices"][0]["finish_reason"], "tool_calls");
        let calls = called.body["choices"][0]["message"]["tool_calls"].as_array().unwrap();
        assert_eq!(calls.len(), 2, "parallel tool calls");
        assert_eq!(calls[0]["id"], "toolu_1");
        assert_eq!(calls[0]["type"], "function");
        assert_eq!(calls[0]["function"]["name"], "weather");
        assert_eq!(calls[0]["function"]["arguments"], "{\"city\":\"Paris\"}");
        let seen = fakes.anthropic.last();
        assert_eq!(seen.body["tools"][0]["input_schema"]["required"], json!(["city"]));
        assert_eq!(seen.body["tool_choice"], json!({ "type": "auto" }));

        // The loop continues with the results; they reach Anthropic as tool_result blocks.
        let answered = complete(&app, "/v1/chat/completions", Some(&tenant.key), json!({
            "model": "claude-sonnet-4-6",
            "messages": [
                { "role": "user", "content": "Weather in Paris and Oslo?" },
                called.body["choices"][0]["message"].clone(),
                { "role": "tool", "tool_call_id": "toolu_1", "content": "sunny" },
                { "role": "tool", "tool_call_id": "toolu_2", "content": "snow" }
            ]
        })).await;
        answered.expect(200);
        let sent = fakes.anthropic.last().body;
        assert_eq!(sent["messages"][1]["content"][1], json!({ "type": "tool_use", "id": "toolu_1", "name": "weather", "input": { "city": "Paris" } }));
        assert_eq!(sent["messages"][2]["content"], json!([
            { "type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny" },
            { "type": "tool_result", "tool_use_id": "toolu_2", "content": "snow" }
        ]));

        // Anthropic's stream, translated frame by frame.
        let streamed = complete(&app, "/v1/chat/completions", Some(&tenant.key), json!({
            "model": "claude-sonnet-4-6", "messages": [{ "role": "user", "content": "go" }], "tools": tools,
            "stream": true, "stream_options": { "include_usage": true }
        })).await;
        streamed.expect(200);
        assert!(streamed.header("content-type").unwrap().starts_with("text/event-stream"));
        assert_eq!(fakes.anthropic.last().body["stream"], true);
        let frames = frames(&streamed.text);
        assert_eq!(frames.last().unwrap(), "[DONE]");
        let chunks: Vec<Value> = frames[..frames.len() - 1].iter().map(|f| serde_json::from_str(f).unwrap()).collect();
        assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"));
        assert_eq!(chunks[0]["choices"][0]["delta"], json!({ "role": "assistant", "content": "" }));
        let text: String = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["content"].as_str()).collect();
        assert_eq!(text, "Hello");
        let call_start = chunks.iter().find(|c| c["choices"][0]["delta"]["tool_calls"][0]["id"] == "toolu_1").unwrap();
        assert_eq!(call_start["choices"][0]["delta"]["tool_calls"][0]["function"]["name"], "weather");
        let arguments: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
            .collect();
        assert_eq!(arguments, "{\"city\": \"Paris\"}");
        assert!(chunks.iter().any(|c| c["choices"][0]["finish_reason"] == "tool_calls"));
        let usage = chunks.last().unwrap();
        assert_eq!(usage["usage"], json!({ "prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18 }));

        // OpenAI's stream passes through untouched.
        let passed = complete(&app, "/v1/chat/completions", Some(&tenant.key), json!({
            "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": "go" }], "stream": true
        })).await;
        passed.expect(200);
        let frames = self::frames(&passed.text);
        assert_eq!(frames.len(), 5);
        assert_eq!(frames[4], "[DONE]");
        let text: String = frames[..4].iter().filter_map(|f| serde_json::from_str::<Value>(f).ok()).filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_string)).collect();
        assert_eq!(text, "Hello");
    }

    async fn gateway_errors_take_openais_shape(backend) {
        let (app, fakes) = gateway(backend).await;
        let tenant = app.tenant("Errors").await;
        let hello = json!([{ "role": "user", "content": "hi" }]);
        // No credentials for the provider the model goes to.
        let missing = complete(&app, "/v1/chat/completions", Some(&tenant.key), json!({ "model": "claude-sonnet-4-6", "messages": hello })).await;
        assert_eq!(missing.status, 401);
        assert_eq!(missing.body["error"]["code"], "missing_credentials");
        assert!(missing.body["error"]["message"].as_str().unwrap().contains("PUT /v1/credentials/anthropic"));
        assert!(fakes.anthropic.seen().is_empty());
        // Another tenant's credentials are never used.
        let other = app.tenant("Other").await;
        credentials(&app, &other).await;
        let still = complete(&app, "/v1/chat/completions", Some(&tenant.key), json!({ "model": "gpt-4o-mini", "messages": hello })).await;
        assert_eq!(still.status, 401);
        assert!(fakes.openai.seen().is_empty());

        credentials(&app, &tenant).await;
        let anonymous = complete(&app, "/v1/chat/completions", None, json!({ "model": "gpt-4o-mini", "messages": hello })).await;
        assert_eq!(anonymous.status, 401);
        assert_eq!(anonymous.body["error"]["code"], "invalid_api_key");
        assert!(anonymous.body.get("success").is_none());
        let garbled = app.send(app.request(Method::POST, "/v1/chat/completions", Some(&tenant.key)).header("content-type", "application/json").body("{nope")).await;
        assert_eq!(garbled.status, 400);
        assert_eq!(garbled.body["error"]["type"], "invalid_request_error");
        for bad in [json!({ "messages": hello }), json!({ "model": "gpt-4o-mini" }), json!({ "model": "gpt-4o-mini", "messages": [] })] {
            let resp = complete(&app, "/v1/chat/completions", Some(&tenant.key), bad.clone()).await;
            assert_eq!(resp.status, 400, "{bad}: {}", resp.text);
        }
        let (_, reader) = app.key(&tenant, json!({ "scopes": ["read"] })).await;
        let refused = complete(&app, "/v1/chat/completions", Some(&reader), json!({ "model": "gpt-4o-mini", "messages": hello })).await;
        assert_eq!(refused.status, 403);
        assert_eq!(refused.body["error"]["type"], "permission_error");

        // A provider's own errors keep their status, in OpenAI's shape.
        fakes.anthropic.fail_with(&[429]);
        let limited = complete(&app, "/v1/chat/completions", Some(&tenant.key), json!({ "model": "claude-sonnet-4-6", "messages": hello })).await;
        assert_eq!(limited.status, 429);
        assert_eq!(limited.body["error"]["type"], "rate_limit_error");
        assert_eq!(limited.body["error"]["message"], "fake failure 429");
        fakes.openai.fail_with(&[503]);
        let down = complete(&app, "/v1/chat/completions", Some(&tenant.key), json!({ "model": "gpt-4o-mini", "messages": hello })).await;
        assert_eq!(down.status, 503);
        assert_eq!(down.body["error"]["message"], "fake failure 503");
        // A provider that cannot be reached: 502.
        let instance = app.post("/v1/ai-providers", &tenant.key, json!({
            "name": "gone", "provider_type": "openai-compatible", "base_url": "http://127.0.0.1:9/v1"
        })).await;
        instance.expect(201);
        let unreachable = complete(&app, "/v1/chat/completions", Some(&tenant.key), json!({ "model": "gone/x", "messages": hello })).await;
        assert_eq!(unreachable.status, 502);
        assert_eq!(unreachable.body["error"]["code"], "upstream_unavailable");
    }

    async fn the_official_openai_client_works_through_the_gateway(backend) {
        let (app, _fakes) = gateway(backend).await;
        let tenant = app.tenant("Python").await;
        credentials(&app, &tenant).await;
        let python = std::env::var("PLINTH_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/openai_client.py");
        let output = tokio::process::Command::new(&python)
            .arg(&script)
            .env("PLINTH_BASE_URL", &app.base)
            .env("PLINTH_API_KEY", &tenant.key)
            .output()
            .await
            .unwrap_or_else(|e| panic!("running {python}: {e} (scripts/test.sh installs the openai client)"));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "the openai client failed (scripts/test.sh installs it):\n{stderr}");
        let got: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(got["plain"]["content"], "Hello from Claude: [{\"text\":\"hi\",\"type\":\"text\"}]");
        assert_eq!(got["plain"]["finish_reason"], "stop");
        assert_eq!(got["plain"]["total_tokens"], 18);
        assert_eq!(got["tools"]["finish_reason"], "tool_calls");
        assert_eq!(got["tools"]["calls"], json!([
            { "id": "toolu_1", "name": "weather", "arguments": { "city": "Paris" } },
            { "id": "toolu_2", "name": "weather", "arguments": { "city": "Oslo" } }
        ]));
        assert_eq!(got["stream"]["text"], "Hello");
        assert_eq!(got["stream"]["finish_reason"], "tool_calls");
        assert_eq!(got["stream"]["usage"], 18);
        assert_eq!(got["stream"]["calls"], json!([{ "id": "toolu_1", "name": "weather", "arguments": { "city": "Paris" } }]));
    }

    async fn streams_are_metered_when_the_client_walks_away(backend) {
        use futures::StreamExt;
        let (app, _fakes) = gateway(backend).await;
        let tenant = app.tenant("Walkaway").await;
        credentials(&app, &tenant).await;
        for model in ["gpt-4o-mini", "claude-sonnet-4-6"] {
            let body = json!({ "model": model, "messages": [{ "role": "user", "content": "hang" }], "stream": true });
            let response = app.request(Method::POST, "/v1/chat/completions", Some(&tenant.key)).json(&body).send().await.unwrap();
            assert_eq!(response.status(), 200);
            let mut stream = response.bytes_stream();
            let mut read = String::new();
            while !read.contains("goes on and on") {
                let Some(chunk) = stream.next().await else { panic!("the stream ended early: {read}") };
                read.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            }
            // The client goes away mid-answer; the provider never ends its stream.
            drop(stream);
        }
        let gone = "SELECT COUNT(*) FROM ai_usage WHERE status = 499";
        for _ in 0..300 {
            if app.count(gone).await == 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(app.count(gone).await, 2, "both walked-away streams are recorded");
        // What was sent counts: 33 characters of answer are about 9 tokens; Anthropic said its
        // input (11 tokens), OpenAI's input stands at the reservation's estimate.
        app.written().await;
        let (input, output): (i64, i64) = sqlx::query_as("SELECT input_tokens, output_tokens FROM ai_usage WHERE model = 'claude-sonnet-4-6'")
            .fetch_one(app.app.db.pool()).await.unwrap();
        assert_eq!((input, output), (11, 9));
        let (input, output, cost): (i64, i64, i64) = sqlx::query_as("SELECT input_tokens, output_tokens, cost_nano_usd FROM ai_usage WHERE model = 'gpt-4o-mini'")
            .fetch_one(app.app.db.pool()).await.unwrap();
        assert!(input > 0 && output == 9 && cost > 0, "{input} {output} {cost}");
        let used = app.get("/v1/entitlements/summary", &tenant.key).await;
        assert_eq!(used.data()["entitlements"]["ai_tokens"]["used"], json!(11 + 9 + input + 9), "{}", used.text);
    }

    async fn keyed_streams_flow_at_once_and_run_once(backend) {
        use futures::StreamExt;
        let (app, fakes) = gateway_with(backend, |config| config.idempotency_lock_secs = 1).await;
        let tenant = app.tenant("Keyed").await;
        credentials(&app, &tenant).await;
        let keyed = |key: &str, content: &str| {
            let body = json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": content }], "stream": true });
            app.request(Method::POST, "/v1/chat/completions", Some(&tenant.key)).header("idempotency-key", key).json(&body)
        };
        // The first frames arrive while the provider is still answering: nothing is held back.
        let response = keyed("stream-1", "hang").send().await.unwrap();
        assert_eq!(response.status(), 200);
        let mut stream = response.bytes_stream();
        let mut read = String::new();
        while !read.contains("goes on and on") {
            let Some(chunk) = stream.next().await else { panic!("the stream ended early: {read}") };
            read.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        }
        // Past its one-second lock the key is still held while the call runs: a retry does not
        // run it again.
        tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
        let calls = fakes.openai.seen().len();
        let retry = app.send(keyed("stream-1", "hang")).await;
        retry.expect_error(409, "IDEMPOTENCY_CONFLICT");
        assert!(retry.body["error"]["message"].as_str().unwrap().contains("still running"), "{}", retry.text);
        // The client walks away: the call is recorded as given, not replayable, and not run again.
        drop(stream);
        let settled = "SELECT COUNT(*) FROM idempotency_keys WHERE idempotency_key = 'stream-1' AND status IS NOT NULL";
        for _ in 0..300 {
            if app.count(settled).await == 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(app.count(settled).await, 1);
        let after = app.send(keyed("stream-1", "hang")).await;
        after.expect_error(409, "IDEMPOTENCY_CONFLICT");
        assert!(after.body["error"]["message"].as_str().unwrap().contains("not kept"), "{}", after.text);
        assert_eq!(fakes.openai.seen().len(), calls, "the provider was called once");

        // A whole stream is kept and replayed as it was.
        let first = app.send(keyed("stream-2", "hi")).await;
        first.expect(200);
        assert!(first.text.contains("data: [DONE]"));
        let replayed = app.send(keyed("stream-2", "hi")).await;
        replayed.expect(200);
        assert_eq!(replayed.header("idempotent-replayed"), Some("true"));
        assert_eq!(replayed.text, first.text);
        assert!(replayed.header("content-type").unwrap().starts_with("text/event-stream"));
        // With the answer's own headers: the provider that answered.
        assert_eq!(first.header("x-plinth-provider"), Some("openai"));
        assert_eq!(replayed.header("x-plinth-provider"), Some("openai"));
        assert_eq!(fakes.openai.seen().len(), calls + 1);
    }

    async fn concurrent_calls_stay_within_the_budget(backend) {
        let (app, fakes) = gateway(backend).await;
        let tenant = app.tenant("Budgeted").await;
        credentials(&app, &tenant).await;
        // 20,000 nano-dollars; each call costs 3,750 (9 input and 4 output tokens of gpt-4o-mini).
        app.send(app.request(Method::PUT, "/v1/ai/budget", Some(&tenant.key)).json(&json!({ "ai_budget_usd": "0.00002" }))).await.expect(200);
        let body = json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": "hi" }], "max_tokens": 4 });
        let calls = (0..24).map(|_| complete(&app, "/v1/chat/completions", Some(&tenant.key), body.clone()));
        let answers = futures::future::join_all(calls).await;
        let answered = answers.iter().filter(|a| a.status == 200).count();
        let refused = answers.iter().filter(|a| a.status == 403 && a.body["error"]["code"] == "budget_exceeded").count();
        assert_eq!(answered + refused, 24, "each call answered or refused for the budget");
        assert!(refused > 0 && answered > 0);
        assert_eq!(fakes.openai.seen().len(), answered, "refused calls never reached the provider");
        // The rows are written in the background, a moment after the answers, unasked.
        let mut written = 0;
        for _ in 0..200 {
            let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM ai_usage WHERE tenant_id = $1")
                .bind(&tenant.id).fetch_one(app.app.db.pool()).await.unwrap();
            written = n;
            if written == answered as i64 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(written, answered as i64, "every answered call's row is written without a reader asking");
        let (spent,): (i64,) = sqlx::query_as("SELECT CAST(SUM(cost_nano_usd) AS BIGINT) FROM ai_usage WHERE tenant_id = $1")
            .bind(&tenant.id).fetch_one(app.app.db.pool()).await.unwrap();
        assert!(spent <= 20_000 + 3_750, "spent {spent}: over the budget by more than one call");
        assert_eq!(spent, answered as i64 * 3_750);

        // A tenant deleted while its calls wait to be written: they are dropped with it, and
        // the rows of others are written all the same.
        let gone = app.tenant("Gone").await;
        credentials(&app, &gone).await;
        let other = app.tenant("Stays").await;
        credentials(&app, &other).await;
        complete(&app, "/v1/chat/completions", Some(&gone.key), body.clone()).await.expect(200);
        complete(&app, "/v1/chat/completions", Some(&other.key), body.clone()).await.expect(200);
        app.delete_confirmed(&format!("/v1/tenants/{}", gone.id), crate::common::ADMIN_KEY).await.expect(200);
        app.written().await;
        assert_eq!(app.count(&format!("SELECT COUNT(*) FROM ai_usage WHERE tenant_id = '{}'", gone.id)).await, 0);
        assert_eq!(app.count(&format!("SELECT COUNT(*) FROM ai_usage WHERE tenant_id = '{}'", other.id)).await, 1);
    }

    async fn calls_are_metered_and_budgets_hold(backend) {
        let (app, fakes) = gateway(backend).await;
        let tenant = app.tenant("Metered").await;
        credentials(&app, &tenant).await;
        let hello = json!([{ "role": "user", "content": "hi" }]);
        complete(&app, "/v1/chat/completions", Some(&tenant.key), json!({ "model": "gpt-4o-mini", "messages": hello })).await.expect(200);
        complete(&app, "/v1/chat/completions", Some(&tenant.key), json!({ "model": "claude-sonnet-4-6", "messages": hello })).await.expect(200);
        // A stream is counted although the client did not ask for usage, which it does not see.
        let streamed = complete(&app, "/v1/chat/completions", Some(&tenant.key), json!({ "model": "gpt-4o-mini", "messages": hello, "stream": true })).await;
        streamed.expect(200);
        assert_eq!(fakes.openai.last().body["stream_options"]["include_usage"], true);
        assert_eq!(frames(&streamed.text).len(), 5, "no usage frame the client did not ask for");
        let asked = complete(&app, "/v1/chat/completions", Some(&tenant.key), json!({
            "model": "gpt-4o-mini", "messages": hello, "stream": true, "stream_options": { "include_usage": true }
        })).await;
        assert_eq!(frames(&asked.text).len(), 6);
        let claude_stream = complete(&app, "/v1/chat/completions", Some(&tenant.key), json!({ "model": "claude-sonnet-4-6", "messages": hello, "stream": true })).await;
        claude_stream.expect(200);
        complete(&app, "/v1/embeddings", Some(&tenant.key), json!({ "model": "text-embedding-3-small", "input": "x" })).await.expect(200);
        fakes.anthropic.fail_with(&[500]);
        complete(&app, "/v1/chat/completions", Some(&tenant.key), json!({ "model": "claude-sonnet-4-6", "messages": hello })).await;

        // Stream records are settled as the stream ends, and written shortly after.
        let mut rows = 0;
        for _ in 0..100 {
            rows = app.count("SELECT COUNT(*) FROM ai_usage WHERE status <> 0").await;
            if rows == 7 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(rows, 7);
        let (input, output, cost): (i64, i64, i64) = sqlx::query_as(
            "SELECT input_tokens, output_tokens, cost_nano_usd FROM ai_usage WHERE model = 'claude-sonnet-4-6' AND status = 200 ORDER BY created_at LIMIT 1",
        ).fetch_one(app.app.db.pool()).await.unwrap();
        // 11 input and 7 output tokens at $3 and $15 per million.
        assert_eq!((input, output, cost), (11, 7, 138_000));
        assert_eq!(app.count("SELECT COUNT(*) FROM ai_usage WHERE model = 'gpt-4o-mini' AND input_tokens = 9 AND output_tokens = 4 AND cost_nano_usd = 3750").await, 3);
        assert_eq!(app.count("SELECT COUNT(*) FROM ai_usage WHERE model = 'claude-sonnet-4-6' AND input_tokens = 11 AND output_tokens = 7").await, 2);
        assert_eq!(app.count("SELECT COUNT(*) FROM ai_usage WHERE status = 500").await, 1);
        assert_eq!(app.count("SELECT COUNT(*) FROM ai_usage WHERE key_id IS NULL").await, 0);

        let summary = app.get("/v1/ai-usage?view=summary", &tenant.key).await;
        summary.expect(200);
        assert_eq!(summary.data()["total"]["calls"], 7);
        // 3 x 3,750 + 2 x 138,000 + 3 x 20 nano-dollars.
        assert_eq!(summary.data()["total"]["cost_usd"], "0.00028731", "{}", summary.text);
        let providers: Vec<&str> = summary.data()["by_provider"].as_array().unwrap().iter().map(|p| p["provider"].as_str().unwrap()).collect();
        assert_eq!(providers, vec!["anthropic", "openai"]);
        let daily = app.get("/v1/ai-usage", &tenant.key).await;
        daily.expect(200);
        assert!(daily.data()["usage"].as_array().unwrap().iter().any(|d| d["model"] == "text-embedding-3-small"));
        app.get("/v1/ai-usage?from=yesterday", &tenant.key).await.expect_error(422, "VALIDATION_FAILED");
        let other = app.tenant("Other").await;
        assert_eq!(app.get("/v1/ai-usage?view=summary", &other.key).await.data()["total"]["calls"], 0);

        // Over the budget: refused before any provider is called.
        let budget = app.send(app.request(Method::PUT, "/v1/ai/budget", Some(&tenant.key)).json(&json!({ "ai_budget_usd": "0.0002" }))).await;
        budget.expect(200);
        assert_eq!(budget.data()["spent_usd"], "0.00028731");
        assert_eq!(budget.data()["remaining_usd"], "0");
        let calls_before = fakes.openai.seen().len();
        let refused = complete(&app, "/v1/chat/completions", Some(&tenant.key), json!({ "model": "gpt-4o-mini", "messages": hello })).await;
        assert_eq!(refused.status, 403);
        assert_eq!(refused.body["error"]["code"], "budget_exceeded");
        assert_eq!(fakes.openai.seen().len(), calls_before);
        app.send(app.request(Method::PUT, "/v1/ai/budget", Some(&tenant.key)).json(&json!({ "ai_budget_usd": "-1" }))).await.expect_error(422, "VALIDATION_FAILED");
        app.send(app.request(Method::PUT, "/v1/ai/budget", Some(&tenant.key)).json(&json!({ "ai_budget_usd": null }))).await.expect(200);
        complete(&app, "/v1/chat/completions", Some(&tenant.key), json!({ "model": "gpt-4o-mini", "messages": hello })).await.expect(200);

        // The ai_tokens entitlement: used up, the next call is refused too.
        let path = format!("/v1/tenants/{}/entitlements", tenant.id);
        app.patch(&path, crate::common::ADMIN_KEY, json!({ "limits": { "ai_tokens": 50 } })).await.expect(200);
        let limited = complete(&app, "/v1/chat/completions", Some(&tenant.key), json!({ "model": "gpt-4o-mini", "messages": hello })).await;
        assert_eq!(limited.status, 403);
        assert_eq!(limited.body["error"]["code"], "feature_limit_reached");
    }

    async fn native_chat_fails_over_along_the_priority_list(backend) {
        let (app, fakes) = gateway(backend).await;
        let tenant = app.tenant("Failover").await;
        credentials(&app, &tenant).await;
        let order = json!({ "providers": ["anthropic", "openai", "openrouter"] });
        app.send(app.request(Method::PUT, "/v1/ai/provider-priority", Some(&tenant.key)).json(&order)).await.expect(200);

        // The first answers: its default model, the envelope, the header.
        let answered = app.post("/v1/ai/chat", &tenant.key, json!({ "prompt": "hi", "system": "Be brief.",
            "history": [{ "role": "user", "content": "earlier" }, { "role": "assistant", "content": "yes" }] })).await;
        answered.expect(200);
        assert_eq!(answered.header("x-plinth-provider"), Some("anthropic"));
        assert_eq!(answered.data()["provider"], "anthropic");
        assert_eq!(answered.data()["model"], "claude-sonnet-4-6");
        assert!(answered.data()["content"].as_str().unwrap().starts_with("Hello from Claude"));
        assert_eq!(answered.data()["usage"]["total_tokens"], 18);
        let sent = fakes.anthropic.last().body;
        assert_eq!(sent["system"], "Be brief.");
        assert_eq!(sent["messages"].as_array().unwrap().len(), 3);

        // Each failing status moves on to the next provider, which answers with its own default model.
        for status in [500, 502, 503, 401, 403, 429] {
            fakes.anthropic.fail_with(&[status]);
            let moved = app.post("/v1/ai/chat", &tenant.key, json!({ "prompt": "hi" })).await;
            moved.expect(200);
            assert_eq!(moved.data()["provider"], "openai", "after {status}");
            assert_eq!(moved.data()["model"], "gpt-4o-mini");
            assert_eq!(moved.data()["attempts"][0], json!({ "provider": "anthropic", "status": status, "error": format!("fake failure {status}") }));
            assert_eq!(fakes.openai.last().body["model"], "gpt-4o-mini");
        }
        // Two down, the third answers.
        fakes.anthropic.fail_with(&[503]);
        fakes.openai.fail_with(&[500]);
        let third = app.post("/v1/ai/chat", &tenant.key, json!({ "prompt": "hi" })).await;
        third.expect(200);
        assert_eq!(third.data()["provider"], "openrouter");
        assert_eq!(fakes.openrouter.last().body["model"], "openai/gpt-4o-mini");

        // Other 4xx answer at once; nothing else is tried.
        let before = fakes.openai.seen().len();
        for status in [400, 422] {
            fakes.anthropic.fail_with(&[status]);
            let refused = app.post("/v1/ai/chat", &tenant.key, json!({ "prompt": "hi" })).await;
            refused.expect_error(400, "BAD_REQUEST");
            assert_eq!(refused.body["error"]["attempts"].as_array().unwrap().len(), 1);
        }
        assert_eq!(fakes.openai.seen().len(), before);

        // A named provider: that one only, no failover.
        fakes.anthropic.fail_with(&[503]);
        let named = app.post("/v1/ai/chat", &tenant.key, json!({ "prompt": "hi", "provider": "anthropic" })).await;
        named.expect_error(503, "UPSTREAM_UNAVAILABLE");
        assert_eq!(fakes.openai.seen().len(), before);
        let chosen = app.post("/v1/ai/chat", &tenant.key, json!({ "prompt": "hi", "provider": "openrouter", "model": "google/gemini-2.5-flash" })).await;
        chosen.expect(200);
        assert_eq!(fakes.openrouter.last().body["model"], "google/gemini-2.5-flash");

        // All failing: 503 with every attempt.
        fakes.anthropic.fail_with(&[500]);
        fakes.openai.fail_with(&[500]);
        fakes.openrouter.fail_with(&[500]);
        let down = app.post("/v1/ai/chat", &tenant.key, json!({ "message": "hi" })).await;
        down.expect_error(503, "UPSTREAM_UNAVAILABLE");
        assert_eq!(down.body["error"]["attempts"].as_array().unwrap().len(), 3);

        // Providers without credentials are skipped; a named one without them is 401.
        let other = app.tenant("Sparse").await;
        app.send(app.request(Method::PUT, "/v1/credentials/openai", Some(&other.key)).json(&json!({ "api_key": "sk-openai-test-key-0009" }))).await.expect(201);
        let list = json!({ "providers": ["anthropic", "openai"] });
        app.send(app.request(Method::PUT, "/v1/ai/provider-priority", Some(&other.key)).json(&list)).await.expect(200);
        let skipped = app.post("/v1/ai/chat", &other.key, json!({ "prompt": "hi" })).await;
        skipped.expect(200);
        assert_eq!(skipped.data()["attempts"][0], json!({ "provider": "anthropic", "status": null, "error": "no credentials" }));
        assert_eq!(fakes.openai.last().header("authorization"), "Bearer sk-openai-test-key-0009");
        app.post("/v1/ai/chat", &other.key, json!({ "prompt": "hi", "provider": "anthropic" })).await.expect_error(401, "UNAUTHORIZED");

        for bad in [
            json!({}),
            json!({ "prompt": "a", "message": "b" }),
            json!({ "prompt": "a", "history": (0..21).map(|_| json!({ "role": "user", "content": "x" })).collect::<Vec<_>>() }),
            json!({ "prompt": "a", "history": [{ "role": "user", "content": "x".repeat(51 * 1024) }] }),
            json!({ "prompt": "a", "history": [{ "role": "system", "content": "x" }] }),
            json!({ "prompt": "a", "temperature": 3 }),
        ] {
            let resp = app.post("/v1/ai/chat", &tenant.key, bad.clone()).await;
            assert_eq!(resp.status, 422, "{}", resp.text);
        }
        assert!(app.count("SELECT COUNT(*) FROM ai_usage WHERE status = 500").await >= 4, "failed attempts are recorded");
    }

    async fn models_are_listed_live_and_kept_five_minutes(backend) {
        let (app, fakes) = gateway(backend).await;
        let tenant = app.tenant("Models").await;
        credentials(&app, &tenant).await;
        let listed = app.get("/v1/models", &tenant.key).await;
        listed.expect(200);
        assert_eq!(listed.body["object"], "list");
        let owners: Vec<(String, String)> = listed.body["data"].as_array().unwrap().iter()
            .map(|m| (m["owned_by"].as_str().unwrap().to_string(), m["id"].as_str().unwrap().to_string())).collect();
        assert!(owners.contains(&("anthropic".into(), "claude-sonnet-4-6".into())), "{owners:?}");
        assert!(owners.contains(&("openai".into(), "gpt-4o-mini".into())), "{owners:?}");
        assert!(owners.contains(&("openrouter".into(), "gpt-4o-mini".into())), "{owners:?}");
        let calls = fakes.openai.seen().len() + fakes.anthropic.seen().len();
        app.get("/v1/models", &tenant.key).await.expect(200);
        assert_eq!(fakes.openai.seen().len() + fakes.anthropic.seen().len(), calls, "the second listing comes from the cache");

        let native = app.get("/v1/ai/models?provider=anthropic", &tenant.key).await;
        native.expect(200);
        assert_eq!(native.data()["provider"], "anthropic");
        assert_eq!(native.data()["cached"], true);
        assert_eq!(native.data()["models"][0]["id"], "claude-sonnet-4-6");
        app.get("/v1/ai/models?provider=nobody", &tenant.key).await.expect_error(401, "UNAUTHORIZED");
        let other = app.tenant("Other").await;
        assert_eq!(app.get("/v1/models", &other.key).await.body["data"], json!([]));
        assert_eq!(app.get_public("/v1/models").await.body["error"]["code"], "invalid_api_key");
    }

    async fn native_generate_and_embeddings(backend) {
        let (app, fakes) = gateway(backend).await;
        let tenant = app.tenant("Native").await;
        credentials(&app, &tenant).await;
        let order = json!({ "providers": ["anthropic", "openai", "openrouter"] });
        app.send(app.request(Method::PUT, "/v1/ai/provider-priority", Some(&tenant.key)).json(&order)).await.expect(200);
        let generated = app.post("/v1/ai/generate", &tenant.key, json!({ "prompt": "a haiku" })).await;
        generated.expect(200);
        assert_eq!(generated.data()["provider"], "anthropic");

        // Anthropic has no embeddings: skipped; OpenAI answers with its default model.
        let embedded = app.post("/v1/ai/embeddings", &tenant.key, json!({ "input": "hello" })).await;
        embedded.expect(200);
        assert_eq!(embedded.data()["provider"], "openai");
        assert_eq!(embedded.data()["model"], "text-embedding-3-small");
        assert_eq!(embedded.data()["embeddings"], json!([[0.25, -0.5, 0.75]]));
        assert_eq!(fakes.openai.last().path, "/v1/embeddings");
        // OpenAI failing moves on to OpenRouter.
        fakes.openai.fail_with(&[503]);
        let moved = app.post("/v1/ai/embeddings", &tenant.key, json!({ "input": ["hello"] })).await;
        moved.expect(200);
        assert_eq!(moved.data()["provider"], "openrouter");
        assert_eq!(fakes.openrouter.last().body["model"], "openai/text-embedding-3-small");
        app.post("/v1/ai/embeddings", &tenant.key, json!({ "input": "x", "provider": "anthropic" })).await.expect_error(422, "VALIDATION_FAILED");
        app.post("/v1/ai/embeddings", &tenant.key, json!({ "input": [] })).await.expect_error(422, "VALIDATION_FAILED");
        // Two texts, but the fake answers one vector: not passed off as an answer.
        app.post("/v1/ai/embeddings", &tenant.key, json!({ "input": ["a", "b"], "provider": "openai" })).await.expect_error(503, "UPSTREAM_UNAVAILABLE");
    }

    async fn native_streams_fail_over_before_the_first_byte(backend) {
        let (app, fakes) = gateway(backend).await;
        let tenant = app.tenant("Streams").await;
        credentials(&app, &tenant).await;
        let order = json!({ "providers": ["anthropic", "openai"] });
        app.send(app.request(Method::PUT, "/v1/ai/provider-priority", Some(&tenant.key)).json(&order)).await.expect(200);
        let streamed = app.post("/v1/ai/stream", &tenant.key, json!({ "prompt": "go" })).await;
        streamed.expect(200);
        assert_eq!(streamed.header("x-plinth-provider"), Some("anthropic"));
        assert!(streamed.header("content-type").unwrap().starts_with("text/event-stream"));
        let got = frames(&streamed.text);
        assert_eq!(got.last().unwrap(), "[DONE]");
        let text: String = got[..got.len() - 1].iter().filter_map(|f| serde_json::from_str::<Value>(f).ok())
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(str::to_string)).collect();
        assert_eq!(text, "Hello");
        // The first provider refusing before any byte: the next one streams.
        fakes.anthropic.fail_with(&[529]);
        let moved = app.post("/v1/ai/stream", &tenant.key, json!({ "prompt": "go" })).await;
        moved.expect(200);
        assert_eq!(moved.header("x-plinth-provider"), Some("openai"));
        assert_eq!(frames(&moved.text).last().unwrap(), "[DONE]");
        assert_eq!(fakes.openai.last().body["stream"], true);
        // Named, no failover.
        fakes.anthropic.fail_with(&[500]);
        app.post("/v1/ai/stream", &tenant.key, json!({ "prompt": "go", "provider": "anthropic" })).await.expect_error(503, "UPSTREAM_UNAVAILABLE");
    }

    async fn vision_sends_the_image_as_the_provider_wants_it(backend) {
        let (app, fakes) = gateway(backend).await;
        let tenant = app.tenant("Vision").await;
        credentials(&app, &tenant).await;
        let seen = app.post("/v1/ai/vision", &tenant.key, json!({ "prompt": "What is this?", "image_url": "https://example.com/cat.png", "provider": "anthropic" })).await;
        seen.expect(200);
        let content = &fakes.anthropic.last().body["messages"][0]["content"];
        assert_eq!(content[1], json!({ "type": "image", "source": { "type": "url", "url": "https://example.com/cat.png" } }));
        let inline = app.post("/v1/ai/vision", &tenant.key, json!({ "prompt": "And this?", "image_base64": "iVBORw0KGgo=", "media_type": "image/png", "provider": "openai" })).await;
        inline.expect(200);
        assert_eq!(fakes.openai.last().body["messages"][0]["content"][1]["image_url"]["url"], "data:image/png;base64,iVBORw0KGgo=");
        for bad in [json!({ "prompt": "x" }), json!({ "prompt": "x", "image_url": "http://example.com/a.png" }),
                    json!({ "prompt": "x", "image_base64": "!!", "media_type": "image/png" })] {
            let resp = app.post("/v1/ai/vision", &tenant.key, bad.clone()).await;
            assert_eq!(resp.status, 422, "{bad}: {}", resp.text);
        }
    }

    async fn images_come_back_as_base64_from_either_provider(backend) {
        let (app, fakes) = gateway(backend).await;
        let tenant = app.tenant("Images").await;
        credentials(&app, &tenant).await;
        let made = app.post("/v1/ai/image", &tenant.key, json!({ "prompt": "a red fox", "provider": "openai", "size": "1024x1024" })).await;
        made.expect(200);
        assert_eq!(made.data()["model"], "gpt-image-1");
        assert_eq!(made.data()["images"], json!([{ "b64_json": "aW1hZ2U=" }]));
        let sent = fakes.openai.last();
        assert_eq!(sent.path, "/v1/images/generations");
        assert_eq!(sent.body["size"], "1024x1024");
        assert!(sent.body.get("response_format").is_none(), "gpt-image-1 takes no response_format");
        app.post("/v1/ai/image", &tenant.key, json!({ "prompt": "a fox", "provider": "openai", "model": "dall-e-3" })).await.expect(200);
        assert_eq!(fakes.openai.last().body["response_format"], "b64_json");
        let routed = app.post("/v1/ai/image", &tenant.key, json!({ "prompt": "a fox", "provider": "openrouter" })).await;
        routed.expect(200);
        assert_eq!(routed.data()["model"], "google/gemini-2.5-flash-image-preview");
        assert_eq!(routed.data()["images"], json!([{ "b64_json": "cGl4ZWxz" }]), "OpenRouter's data URLs normalised");
        // Without a provider: Anthropic (first in the list) makes no images and is skipped.
        let order = json!({ "providers": ["anthropic", "openai"] });
        app.send(app.request(Method::PUT, "/v1/ai/provider-priority", Some(&tenant.key)).json(&order)).await.expect(200);
        let listed = app.post("/v1/ai/image", &tenant.key, json!({ "prompt": "a fox" })).await;
        listed.expect(200);
        assert_eq!(listed.data()["provider"], "openai");
        assert_eq!(listed.data()["attempts"][0]["provider"], "anthropic");
        app.post("/v1/ai/image", &tenant.key, json!({ "prompt": "a fox", "provider": "anthropic" })).await.expect_error(422, "VALIDATION_FAILED");
        app.post("/v1/ai/image", &tenant.key, json!({ "prompt": "a fox", "n": 9 })).await.expect_error(422, "VALIDATION_FAILED");
    }

    async fn conversations_remember(backend) {
        let (app, fakes) = gateway(backend).await;
        let tenant = app.tenant("Memory").await;
        credentials(&app, &tenant).await;
        let started = app.post("/v1/ai/conversations", &tenant.key, json!({ "title": "Trip", "system": "You plan trips.", "provider": "anthropic" })).await;
        started.expect(201);
        let id = started.data()["id"].as_str().unwrap().to_string();
        assert!(id.starts_with("conv_"));
        let first = app.post(&format!("/v1/ai/conversations/{id}/chat"), &tenant.key, json!({ "prompt": "Paris in May?" })).await;
        first.expect(200);
        assert_eq!(first.data()["conversation_id"], id.as_str());
        assert_eq!(first.data()["provider"], "anthropic");
        app.post(&format!("/v1/ai/conversations/{id}/chat"), &tenant.key, json!({ "message": "And June?" })).await.expect(200);
        // The second turn carried the first as history, with the conversation's system text.
        let sent = fakes.anthropic.last().body;
        assert_eq!(sent["system"], "You plan trips.");
        let texts: Vec<String> = sent["messages"].as_array().unwrap().iter().map(|m| m["content"][0]["text"].as_str().unwrap_or_default().to_string()).collect();
        assert_eq!(texts.len(), 3);
        assert_eq!(texts[0], "Paris in May?");
        assert!(texts[1].starts_with("Hello from Claude"));
        assert_eq!(texts[2], "And June?");
        let read = app.get(&format!("/v1/ai/conversations/{id}"), &tenant.key).await;
        read.expect(200);
        let roles: Vec<&str> = read.data()["messages"].as_array().unwrap().iter().map(|m| m["role"].as_str().unwrap()).collect();
        assert_eq!(roles, vec!["user", "assistant", "user", "assistant"]);
        assert_eq!(read.data()["messages"][1]["provider"], "anthropic");

        // Seed 000's form starts one and continues it.
        let fresh = app.post("/v1/ai/conversation", &tenant.key, json!({ "prompt": "Hello", "provider": "openai" })).await;
        fresh.expect(200);
        let fresh_id = fresh.data()["conversation_id"].as_str().unwrap().to_string();
        app.post("/v1/ai/conversation", &tenant.key, json!({ "prompt": "Again", "conversation_id": fresh_id })).await.expect(200);
        assert_eq!(fakes.openai.last().body["messages"].as_array().unwrap().len(), 3);
        assert_eq!(app.count("SELECT COUNT(*) FROM ai_conversations").await, 2);
        // A failed first turn leaves no empty conversation behind.
        fakes.openai.fail_with(&[500]);
        app.post("/v1/ai/conversation", &tenant.key, json!({ "prompt": "Hello", "provider": "openai" })).await.expect_error(503, "UPSTREAM_UNAVAILABLE");
        assert_eq!(app.count("SELECT COUNT(*) FROM ai_conversations").await, 2);

        let renamed = app.patch(&format!("/v1/ai/conversations/{id}"), &tenant.key, json!({ "title": "Summer trip" })).await;
        renamed.expect(200);
        assert_eq!(renamed.data()["system"], "You plan trips.");
        assert_eq!(app.get("/v1/ai/conversations", &tenant.key).await.data()["total"], 2);
        let other = app.tenant("Other").await;
        app.get(&format!("/v1/ai/conversations/{id}"), &other.key).await.expect_error(404, "NOT_FOUND");
        app.post(&format!("/v1/ai/conversations/{id}/chat"), &other.key, json!({ "prompt": "x" })).await.expect_error(404, "NOT_FOUND");
        app.delete(&format!("/v1/ai/conversations/{id}"), &tenant.key).await.expect(200);
        assert_eq!(app.count(&format!("SELECT COUNT(*) FROM ai_messages WHERE conversation_id = '{id}'")).await, 0);
    }
}

/// A small PNG: the signature, then bytes.
fn png() -> Vec<u8> {
    let image = image::RgbImage::from_fn(24, 16, |x, y| image::Rgb([(x * 9) as u8, (y * 13) as u8, 200]));
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(image).write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn gif() -> Vec<u8> {
    let image = image::RgbaImage::from_pixel(3, 2, image::Rgba([10, 20, 30, 255]));
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgba8(image).write_to(&mut out, image::ImageFormat::Gif).unwrap();
    out.into_inner()
}

async fn upload_raw(app: &TestApp, key: &str, query: &str, content_type: &str, bytes: Vec<u8>) -> crate::common::Resp {
    let request = app.request(Method::POST, &format!("/v1/ai/upload{query}"), Some(key));
    app.send(request.header("content-type", content_type).body(bytes)).await
}

on_both_backends! {
    async fn uploads_answer_signed_links_and_feed_vision(backend) {
        let (app, fakes) = gateway(backend).await;
        let tenant = app.tenant("Uploads").await;
        credentials(&app, &tenant).await;
        let image = png();

        let made = upload_raw(&app, &tenant.key, "", "image/png", image.clone()).await;
        made.expect(201);
        let upload = made.data().clone();
        let id = upload["id"].as_str().unwrap().to_string();
        assert!(id.starts_with("file_"), "an upload is a file of the one store: {id}");
        assert_eq!(upload["object"], "ai_upload");
        assert_eq!(upload["content_type"], "image/png");
        assert_eq!(upload["size_bytes"], image.len());
        let url = upload["url"].as_str().unwrap().to_string();
        assert!(url.starts_with(&format!("{}/v1/files/{id}/content?token=", app.base)), "{url}");
        let file = app.get(&format!("/v1/files/{id}"), &tenant.key).await;
        assert_eq!((file.data()["folder"].clone(), file.data()["access"].clone()), (json!("ai-uploads"), json!("private")));
        assert!(file.data()["expires_at"].is_string());

        // The link works without a credential and gives the bytes back.
        let fetched = reqwest::get(&url).await.unwrap();
        assert_eq!(fetched.status(), 200);
        assert_eq!(fetched.headers()["content-type"], "image/png");
        assert_eq!(fetched.headers()["x-content-type-options"], "nosniff");
        assert_eq!(fetched.bytes().await.unwrap().to_vec(), image);
        // A link altered in any part does not.
        let (path, query) = url.strip_prefix(&app.base).unwrap().split_once('?').unwrap();
        let altered_token = query.replace("token=", "token=0").replacen("&expires", "x&expires", 1);
        app.get_public(&format!("{path}?{altered_token}")).await.expect_error(403, "FORBIDDEN");
        app.get_public(&format!("/v1/files/file_0000000000000000000000000/content?{query}")).await.expect_error(403, "FORBIDDEN");

        // A multipart form works too; anything but an image is refused and leaves nothing.
        let small = gif();
        let boundary = "plinth-test-boundary";
        let mut form = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.gif\"\r\nContent-Type: image/gif\r\n\r\n").into_bytes();
        form.extend_from_slice(&small);
        form.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let formed = upload_raw(&app, &tenant.key, "?expires_in=3600", &format!("multipart/form-data; boundary={boundary}"), form).await;
        formed.expect(201);
        assert_eq!(formed.data()["content_type"], "image/gif");
        assert_eq!(formed.data()["size_bytes"], small.len());
        let before = app.count("SELECT COUNT(*) FROM files").await;
        upload_raw(&app, &tenant.key, "", "image/png", b"<svg xmlns=\"http://www.w3.org/2000/svg\"/>".to_vec()).await.expect_error(422, "VALIDATION_FAILED");
        let mut broken = b"\x89PNG\r\n\x1a\n".to_vec();
        broken.extend_from_slice(&[0; 64]);
        upload_raw(&app, &tenant.key, "", "image/png", broken).await.expect_error(422, "VALIDATION_FAILED");
        upload_raw(&app, &tenant.key, "", "image/png", Vec::new()).await.expect_error(422, "VALIDATION_FAILED");
        upload_raw(&app, &tenant.key, "", "application/json", b"{}".to_vec()).await.expect_error(415, "UNSUPPORTED_MEDIA_TYPE");
        upload_raw(&app, &tenant.key, "?expires_in=10", "image/png", image.clone()).await.expect_error(422, "VALIDATION_FAILED");
        // Over 20 MB: refused from the declared length, often before the client has written it
        // all (then the client sees the connection close instead of the 413).
        let mut huge = png();
        huge.resize(21 * 1024 * 1024, 0);
        let request = app.request(Method::POST, "/v1/ai/upload", Some(&tenant.key)).header("content-type", "image/png");
        if let Ok(refused) = request.body(huge).send().await {
            assert_eq!(refused.status(), 413);
        }
        assert_eq!(app.count("SELECT COUNT(*) FROM files").await, before);

        // Uploads count against the tenant's storage until they expire; over the limit nothing is kept.
        let entitlements = format!("/v1/tenants/{}/entitlements", tenant.id);
        let stored = (image.len() + small.len()) as i64;
        assert_eq!(app.get(&entitlements, crate::common::ADMIN_KEY).await.data()["entitlements"]["storage"]["used"], stored);
        app.patch(&entitlements, crate::common::ADMIN_KEY, json!({ "limits": { "storage": stored + 100 } })).await.expect(200);
        upload_raw(&app, &tenant.key, "", "image/png", image.clone()).await.expect_error(403, "FEATURE_LIMIT_REACHED");
        assert_eq!(app.count("SELECT COUNT(*) FROM files").await, before);
        app.patch(&entitlements, crate::common::ADMIN_KEY, json!({ "limits": { "storage": null } })).await.expect(200);
        let (_, reader) = app.key(&tenant, json!({ "scopes": ["read"] })).await;
        upload_raw(&app, &reader, "", "image/png", image.clone()).await.expect_error(403, "INSUFFICIENT_SCOPE");
        upload_raw(&app, "plk_not_a_key", "", "image/png", image.clone()).await.expect_error(401, "UNAUTHORIZED");

        // Vision takes the upload's id, or any image file's id, and sends the bytes inline.
        let seen = app.post("/v1/ai/vision", &tenant.key, json!({ "prompt": "What is this?", "upload_id": id, "provider": "openai" })).await;
        seen.expect(200);
        use base64::Engine;
        let inline = format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(&image));
        assert_eq!(fakes.openai.last().body["messages"][0]["content"][1]["image_url"]["url"], inline);
        app.post("/v1/ai/vision", &tenant.key, json!({ "prompt": "Again", "file_id": id, "provider": "openai" })).await.expect(200);
        assert_eq!(fakes.openai.last().body["messages"][0]["content"][1]["image_url"]["url"], inline);
        let (_, ai_only) = app.key(&tenant, json!({ "scopes": ["ai"] })).await;
        app.post("/v1/ai/vision", &ai_only, json!({ "prompt": "x", "file_id": id, "provider": "openai" })).await.expect_error(403, "INSUFFICIENT_SCOPE");
        app.post("/v1/ai/vision", &tenant.key, json!({ "prompt": "x", "file_id": id, "upload_id": id, "provider": "openai" })).await.expect_error(422, "VALIDATION_FAILED");
        let other = app.tenant("Not the owner").await;
        credentials(&app, &other).await;
        app.post("/v1/ai/vision", &other.key, json!({ "prompt": "x", "upload_id": id, "provider": "openai" })).await.expect_error(422, "VALIDATION_FAILED");

        // Describe: an image file, sent inline with a describing prompt.
        let described = app.post("/v1/ai/describe", &tenant.key, json!({ "file_id": id, "provider": "openai" })).await;
        described.expect(200);
        assert_eq!(described.data()["file_id"], id.as_str());
        assert_eq!(described.data()["filename"], "image.png");
        assert_eq!(described.data()["provider"], "openai");
        assert!(!described.data()["description"].as_str().unwrap().is_empty());
        let sent = fakes.openai.last().body;
        assert_eq!(sent["messages"][0]["content"][1]["image_url"]["url"], inline);
        assert!(sent["messages"][0]["content"][0]["text"].as_str().unwrap().starts_with("Describe this image"));
        app.post("/v1/ai/describe", &tenant.key, json!({ "file_id": id, "prompt": "Count the colours", "provider": "openai" })).await.expect(200);
        assert_eq!(fakes.openai.last().body["messages"][0]["content"][0]["text"], "Count the colours");
        app.post("/v1/ai/describe", &other.key, json!({ "file_id": id, "provider": "openai" })).await.expect_error(422, "VALIDATION_FAILED");
        app.post("/v1/ai/describe", &ai_only, json!({ "file_id": id, "provider": "openai" })).await.expect_error(403, "INSUFFICIENT_SCOPE");

        // Once expired, the sweeper purges row and bytes, and gives the storage back.
        let prefix = format!("files/{}/{id}", tenant.id);
        assert_eq!(app.app.files.list(&prefix).await.unwrap().len(), 1, "the bytes are in the file store");
        sqlx::query("UPDATE files SET expires_at = $1 WHERE id = $2")
            .bind("2020-01-01T00:00:00.000000Z").bind(&id).execute(app.app.db.pool()).await.unwrap();
        assert!(plinth::files::purge::sweep(&app.app, 30, None).await.unwrap() >= 1);
        assert_eq!(reqwest::get(&url).await.unwrap().status(), 404);
        app.post("/v1/ai/vision", &tenant.key, json!({ "prompt": "x", "upload_id": id, "provider": "openai" })).await.expect_error(422, "VALIDATION_FAILED");
        assert_eq!(app.count(&format!("SELECT COUNT(*) FROM files WHERE id = '{id}'")).await, 0);
        for _ in 0..100 {
            if app.app.files.list(&prefix).await.unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(app.app.files.list(&prefix).await.unwrap().is_empty(), "the bytes are removed");
        assert_eq!(app.count("SELECT COUNT(*) FROM files").await, 1, "the unexpired upload stays");
        let used = app.get(&entitlements, crate::common::ADMIN_KEY).await.data()["entitlements"]["storage"]["used"].clone();
        assert_eq!(used, small.len(), "the expired upload's bytes no longer count");
    }

    async fn per_request_keys_win_for_one_call_and_are_never_kept(backend) {
        let (app, fakes) = gateway(backend).await;
        let tenant = app.tenant("Hybrid").await;
        credentials(&app, &tenant).await;
        const OVERRIDE: &str = "sk-override-PERREQUEST-7f6e5d4c3b2a";

        // Native route: the body's key goes to the provider as its credential, not in the body.
        let chat = app.post("/v1/ai/chat", &tenant.key, json!({ "prompt": "hi", "provider": "openai", "api_key": OVERRIDE })).await;
        chat.expect(200);
        let seen = fakes.openai.last();
        assert_eq!(seen.header("authorization"), format!("Bearer {OVERRIDE}"));
        assert!(!seen.body.to_string().contains(OVERRIDE), "{}", seen.body);
        // The vault stays the fallback for the next call.
        app.post("/v1/ai/chat", &tenant.key, json!({ "prompt": "hi", "provider": "openai" })).await.expect(200);
        assert_eq!(fakes.openai.last().header("authorization"), "Bearer sk-openai-test-key-0001");

        // A tenant with nothing in the vault can still call with its own key.
        let keyless = app.tenant("Keyless").await;
        let answered = app.post("/v1/ai/chat", &keyless.key, json!({ "prompt": "hi", "provider": "anthropic", "api_key": OVERRIDE })).await;
        answered.expect(200);
        assert_eq!(answered.data()["provider"], "anthropic");
        let seen = fakes.anthropic.last();
        assert_eq!(seen.header("x-api-key"), OVERRIDE);
        assert!(!seen.body.to_string().contains(OVERRIDE));
        app.post("/v1/ai/chat", &keyless.key, json!({ "prompt": "hi", "provider": "anthropic" })).await.expect_error(401, "UNAUTHORIZED");
        // The key is for one named provider.
        app.post("/v1/ai/chat", &tenant.key, json!({ "prompt": "hi", "api_key": OVERRIDE })).await.expect_error(422, "VALIDATION_FAILED");
        app.post("/v1/ai/chat", &tenant.key, json!({ "prompt": "hi", "provider": "openai", "api_key": "has spaces" })).await.expect_error(422, "VALIDATION_FAILED");
        let embedded = app.post("/v1/ai/embeddings", &keyless.key, json!({ "input": "hi", "provider": "openai", "api_key": OVERRIDE })).await;
        embedded.expect(200);
        assert_eq!(fakes.openai.last().header("authorization"), format!("Bearer {OVERRIDE}"));

        // The OpenAI-compatible endpoint: `api_key` in the body, for the provider the model picks.
        let hello = json!([{ "role": "user", "content": "hi" }]);
        complete(&app, "/v1/chat/completions", Some(&tenant.key), json!({ "model": "gpt-4o-mini", "messages": hello, "api_key": OVERRIDE })).await.expect(200);
        let seen = fakes.openai.last();
        assert_eq!(seen.header("authorization"), format!("Bearer {OVERRIDE}"));
        assert!(seen.body.get("api_key").is_none(), "stripped: {}", seen.body);
        let streamed = complete(&app, "/v1/chat/completions", Some(&keyless.key), json!({ "model": "claude-sonnet-4-6", "messages": hello, "api_key": OVERRIDE, "stream": true })).await;
        streamed.expect(200);
        assert!(streamed.text.contains("[DONE]"));
        let seen = fakes.anthropic.last();
        assert_eq!(seen.header("x-api-key"), OVERRIDE);
        assert!(!seen.body.to_string().contains(OVERRIDE));
        let refused = complete(&app, "/v1/chat/completions", Some(&tenant.key), json!({ "model": "gpt-4o-mini", "messages": hello, "api_key": 7 })).await;
        assert_eq!(refused.status, 400);
        assert_eq!(refused.body["error"]["type"], "invalid_request_error");

        // Counted like any call, and stored nowhere: not in usage, audit, events or anything else.
        let counted = app.count(&format!("SELECT COUNT(*) FROM ai_usage WHERE tenant_id = '{}' AND status = 200", keyless.id)).await;
        assert!(counted >= 2, "the chat and the embeddings are recorded: {counted}");
        assert!(!app.stored_anywhere(OVERRIDE).await, "the per-request key is stored");
        assert!(app.stored_anywhere(&tenant.id).await, "the check finds what is stored");
    }
}
