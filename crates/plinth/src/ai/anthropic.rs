//! OpenAI's chat completion wire format to Anthropic's Messages API and back: requests, answers,
//! and streams event by event. Pure functions; the gateway does the calling.

use serde_json::{json, Map, Value};

/// Anthropic requires `max_tokens`; this is sent when the request names none.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;
/// The API version sent as `anthropic-version`.
pub const API_VERSION: &str = "2023-06-01";

/// Why a request cannot be translated (answered as 400 `invalid_request_error`).
pub type Invalid = String;

fn text_of(content: &Value) -> String {
    match content {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| if p["type"] == "text" { p["text"].as_str() } else { None })
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// An OpenAI image part's URL as an Anthropic image source: a data URL becomes base64.
fn image_block(url: &str) -> Result<Value, Invalid> {
    if let Some(rest) = url.strip_prefix("data:") {
        let (meta, data) = rest.split_once(',').ok_or("a data URL needs a comma before its data")?;
        let media_type = meta.strip_suffix(";base64").ok_or("only base64 data URLs are supported for images")?;
        return Ok(json!({ "type": "image", "source": { "type": "base64", "media_type": media_type, "data": data } }));
    }
    Ok(json!({ "type": "image", "source": { "type": "url", "url": url } }))
}

fn user_blocks(content: &Value) -> Result<Vec<Value>, Invalid> {
    match content {
        Value::String(text) => Ok(vec![json!({ "type": "text", "text": text })]),
        Value::Array(parts) => parts
            .iter()
            .map(|part| match part["type"].as_str() {
                Some("text") => Ok(json!({ "type": "text", "text": part["text"].as_str().unwrap_or_default() })),
                Some("image_url") => {
                    let url = part["image_url"]["url"].as_str().or(part["image_url"].as_str());
                    image_block(url.ok_or("an image_url part needs image_url.url")?)
                }
                other => Err(format!("content parts of type {other:?} are not supported")),
            })
            .collect(),
        Value::Null => Ok(Vec::new()),
        _ => Err("message content must be a string or an array of parts".into()),
    }
}

/// Appends blocks as a message of `role`, merged into the previous one of the same role
/// (Anthropic wants the roles to alternate).
fn push(messages: &mut Vec<Value>, role: &str, blocks: Vec<Value>) {
    if blocks.is_empty() {
        return;
    }
    if let Some(last) = messages.last_mut() {
        if last["role"] == role {
            if let Some(existing) = last["content"].as_array_mut() {
                existing.extend(blocks);
                return;
            }
        }
    }
    messages.push(json!({ "role": role, "content": blocks }));
}

fn tool_choice(choice: &Value, parallel: Option<bool>) -> Result<Option<Value>, Invalid> {
    let mut translated = match choice {
        Value::Null => {
            if parallel == Some(false) {
                json!({ "type": "auto" })
            } else {
                return Ok(None);
            }
        }
        Value::String(mode) => match mode.as_str() {
            "auto" => json!({ "type": "auto" }),
            "none" => json!({ "type": "none" }),
            "required" => json!({ "type": "any" }),
            other => return Err(format!("tool_choice `{other}` is not supported")),
        },
        Value::Object(_) => {
            let name = choice["function"]["name"].as_str().ok_or("tool_choice needs function.name")?;
            json!({ "type": "tool", "name": name })
        }
        _ => return Err("tool_choice must be a string or an object".into()),
    };
    if parallel == Some(false) && translated["type"] != "none" {
        translated["disable_parallel_tool_use"] = json!(true);
    }
    Ok(Some(translated))
}

/// An OpenAI chat completion request as an Anthropic Messages request for `model`.
pub fn request(body: &Value, model: &str) -> Result<Value, Invalid> {
    let messages = body["messages"].as_array().ok_or("`messages` must be an array")?;
    let mut system: Vec<String> = Vec::new();
    let mut out: Vec<Value> = Vec::new();
    for message in messages {
        match message["role"].as_str() {
            Some("system" | "developer") => system.push(text_of(&message["content"])),
            Some("user") => push(&mut out, "user", user_blocks(&message["content"])?),
            Some("assistant") => {
                let mut blocks = Vec::new();
                let text = text_of(&message["content"]);
                if !text.is_empty() {
                    blocks.push(json!({ "type": "text", "text": text }));
                }
                for call in message["tool_calls"].as_array().into_iter().flatten() {
                    let arguments = call["function"]["arguments"].as_str().unwrap_or("{}");
                    let input: Value = serde_json::from_str(if arguments.trim().is_empty() { "{}" } else { arguments })
                        .map_err(|_| "tool_calls[].function.arguments must be a JSON-encoded string")?;
                    blocks.push(json!({
                        "type": "tool_use",
                        "id": call["id"],
                        "name": call["function"]["name"],
                        "input": input,
                    }));
                }
                push(&mut out, "assistant", blocks);
            }
            Some("tool") => {
                let id = message["tool_call_id"].as_str().ok_or("a tool message needs tool_call_id")?;
                let block =
                    json!({ "type": "tool_result", "tool_use_id": id, "content": text_of(&message["content"]) });
                push(&mut out, "user", vec![block]);
            }
            other => return Err(format!("messages of role {other:?} are not supported")),
        }
    }
    if out.is_empty() {
        return Err("`messages` needs at least one user message".into());
    }
    let max_tokens =
        body["max_tokens"].as_u64().or(body["max_completion_tokens"].as_u64()).unwrap_or(DEFAULT_MAX_TOKENS);
    let mut request = Map::new();
    request.insert("model".into(), json!(model));
    request.insert("max_tokens".into(), json!(max_tokens));
    request.insert("messages".into(), Value::Array(out));
    if !system.is_empty() {
        request.insert("system".into(), json!(system.join("\n\n")));
    }
    for name in ["temperature", "top_p"] {
        if body[name].is_number() {
            request.insert(name.into(), body[name].clone());
        }
    }
    match &body["stop"] {
        Value::String(stop) => {
            request.insert("stop_sequences".into(), json!([stop]));
        }
        Value::Array(stops) if !stops.is_empty() => {
            request.insert("stop_sequences".into(), json!(stops));
        }
        _ => {}
    }
    if let Some(tools) = body["tools"].as_array().filter(|t| !t.is_empty()) {
        let translated: Vec<Value> = tools
            .iter()
            .map(|tool| {
                let function = &tool["function"];
                let mut out = json!({
                    "name": function["name"].as_str().ok_or("tools[].function.name is required")?,
                    "input_schema": if function["parameters"].is_object() {
                        function["parameters"].clone()
                    } else {
                        json!({ "type": "object", "properties": {} })
                    },
                });
                if let Some(description) = function["description"].as_str() {
                    out["description"] = json!(description);
                }
                Ok(out)
            })
            .collect::<Result<_, Invalid>>()?;
        request.insert("tools".into(), Value::Array(translated));
    }
    if let Some(choice) = tool_choice(&body["tool_choice"], body["parallel_tool_calls"].as_bool())? {
        request.insert("tool_choice".into(), choice);
    }
    if body["stream"] == true {
        request.insert("stream".into(), json!(true));
    }
    Ok(Value::Object(request))
}

/// Anthropic's `stop_reason` as OpenAI's `finish_reason`.
pub fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        _ => "stop",
    }
}

fn usage(input: u64, output: u64) -> Value {
    json!({ "prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output })
}

/// An Anthropic Messages answer as an OpenAI chat completion.
pub fn response(answer: &Value, created: i64) -> Value {
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in answer["content"].as_array().into_iter().flatten() {
        match block["type"].as_str() {
            Some("text") => text.push_str(block["text"].as_str().unwrap_or_default()),
            Some("tool_use") => calls.push(json!({
                "id": block["id"],
                "type": "function",
                "function": { "name": block["name"], "arguments": block["input"].to_string() },
            })),
            _ => {}
        }
    }
    let mut message = json!({ "role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { json!(text) } });
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    let input = answer["usage"]["input_tokens"].as_u64().unwrap_or(0);
    let output = answer["usage"]["output_tokens"].as_u64().unwrap_or(0);
    json!({
        "id": format!("chatcmpl-{}", answer["id"].as_str().unwrap_or_default()),
        "object": "chat.completion",
        "created": created,
        "model": answer["model"],
        "choices": [{
            "index": 0,
            "message": message,
            "finish_reason": finish_reason(answer["stop_reason"].as_str().unwrap_or("end_turn")),
            "logprobs": null,
        }],
        "usage": usage(input, output),
    })
}

/// An Anthropic error body as OpenAI's `{error: {message, type, code}}`.
pub fn error(body: &Value) -> Value {
    json!({ "error": {
        "message": body["error"]["message"].as_str().unwrap_or("the provider refused the request"),
        "type": body["error"]["type"].as_str().unwrap_or("upstream_error"),
        "code": null,
    } })
}

/// Turns Anthropic's stream events into OpenAI chunks, one event at a time.
#[derive(Debug)]
pub struct StreamTranslator {
    id: String,
    model: String,
    created: i64,
    /// Anthropic's content block index -> OpenAI's tool call index.
    tool_indexes: Vec<(u64, usize)>,
    input_tokens: u64,
    output_tokens: u64,
    include_usage: bool,
}

impl StreamTranslator {
    pub fn new(model: &str, created: i64, include_usage: bool) -> Self {
        StreamTranslator {
            id: String::new(),
            model: model.to_string(),
            created,
            tool_indexes: Vec::new(),
            input_tokens: 0,
            output_tokens: 0,
            include_usage,
        }
    }

    fn chunk(&self, delta: Value, finish_reason: Option<&str>) -> Value {
        json!({
            "id": format!("chatcmpl-{}", self.id),
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": null }],
        })
    }

    /// The chunks (as JSON) for one Anthropic event; `[DONE]` comes as the string `"[DONE]"`.
    pub fn event(&mut self, kind: &str, data: &Value) -> Vec<Value> {
        match kind {
            "message_start" => {
                self.id = data["message"]["id"].as_str().unwrap_or_default().to_string();
                if let Some(model) = data["message"]["model"].as_str() {
                    self.model = model.to_string();
                }
                self.input_tokens = data["message"]["usage"]["input_tokens"].as_u64().unwrap_or(0);
                vec![self.chunk(json!({ "role": "assistant", "content": "" }), None)]
            }
            "content_block_start" if data["content_block"]["type"] == "tool_use" => {
                let index = self.tool_indexes.len();
                self.tool_indexes.push((data["index"].as_u64().unwrap_or(0), index));
                let call = json!({
                    "index": index,
                    "id": data["content_block"]["id"],
                    "type": "function",
                    "function": { "name": data["content_block"]["name"], "arguments": "" },
                });
                vec![self.chunk(json!({ "tool_calls": [call] }), None)]
            }
            "content_block_delta" => match data["delta"]["type"].as_str() {
                Some("text_delta") => vec![self.chunk(json!({ "content": data["delta"]["text"] }), None)],
                Some("input_json_delta") => {
                    let block = data["index"].as_u64().unwrap_or(0);
                    let Some(&(_, index)) = self.tool_indexes.iter().find(|(b, _)| *b == block) else {
                        return Vec::new();
                    };
                    let call = json!({ "index": index, "function": { "arguments": data["delta"]["partial_json"] } });
                    vec![self.chunk(json!({ "tool_calls": [call] }), None)]
                }
                _ => Vec::new(),
            },
            "message_delta" => {
                self.output_tokens = data["usage"]["output_tokens"].as_u64().unwrap_or(self.output_tokens);
                match data["delta"]["stop_reason"].as_str() {
                    Some(reason) => vec![self.chunk(json!({}), Some(finish_reason(reason)))],
                    None => Vec::new(),
                }
            }
            "message_stop" => {
                let mut out = Vec::new();
                if self.include_usage {
                    let mut last = self.chunk(json!({}), None);
                    last["choices"] = json!([]);
                    last["usage"] = usage(self.input_tokens, self.output_tokens);
                    out.push(last);
                }
                out.push(json!("[DONE]"));
                out
            }
            "error" => vec![error(data), json!("[DONE]")],
            _ => Vec::new(),
        }
    }

    /// Tokens counted so far: (input, output).
    pub fn usage(&self) -> (u64, u64) {
        (self.input_tokens, self.output_tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_translate_roles_tools_images_and_parameters() {
        let body = json!({
            "model": "claude-sonnet-4-6",
            "messages": [
                { "role": "system", "content": "Be brief." },
                { "role": "user", "content": [
                    { "type": "text", "text": "What is in these?" },
                    { "type": "image_url", "image_url": { "url": "https://example.com/a.png" } },
                    { "type": "image_url", "image_url": { "url": "data:image/png;base64,iVBORw0KGgo=" } }
                ] },
                { "role": "assistant", "content": null, "tool_calls": [
                    { "id": "call_1", "type": "function", "function": { "name": "weather", "arguments": "{\"city\":\"Paris\"}" } },
                    { "id": "call_2", "type": "function", "function": { "name": "weather", "arguments": "{\"city\":\"Oslo\"}" } }
                ] },
                { "role": "tool", "tool_call_id": "call_1", "content": "sunny" },
                { "role": "tool", "tool_call_id": "call_2", "content": "snow" }
            ],
            "tools": [{ "type": "function", "function": { "name": "weather", "description": "Weather now",
                "parameters": { "type": "object", "properties": { "city": { "type": "string" } } } } }],
            "tool_choice": "required",
            "max_tokens": 300, "temperature": 0.2, "top_p": 0.9, "stop": "END",
            "logprobs": true, "n": 1, "seed": 7, "user": "u1", "service_tier": "auto", "logit_bias": {}
        });
        let out = request(&body, "claude-sonnet-4-6").unwrap();
        assert_eq!(out["system"], "Be brief.");
        assert_eq!(out["max_tokens"], 300);
        assert_eq!(out["temperature"], 0.2);
        assert_eq!(out["top_p"], 0.9);
        assert_eq!(out["stop_sequences"], json!(["END"]));
        assert_eq!(out["tool_choice"], json!({ "type": "any" }));
        assert_eq!(out["tools"][0]["input_schema"]["properties"]["city"]["type"], "string");
        assert_eq!(out["tools"][0]["description"], "Weather now");
        let messages = out["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 3, "the two tool results merge into one user message");
        assert_eq!(
            messages[0]["content"][1],
            json!({ "type": "image", "source": { "type": "url", "url": "https://example.com/a.png" } })
        );
        assert_eq!(
            messages[0]["content"][2]["source"],
            json!({ "type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo=" })
        );
        assert_eq!(
            messages[1]["content"][1],
            json!({ "type": "tool_use", "id": "call_2", "name": "weather", "input": { "city": "Oslo" } })
        );
        assert_eq!(
            messages[2]["content"][0],
            json!({ "type": "tool_result", "tool_use_id": "call_1", "content": "sunny" })
        );
        assert_eq!(messages[2]["content"][1]["tool_use_id"], "call_2");
        for ignored in ["logprobs", "n", "seed", "user", "service_tier", "logit_bias"] {
            assert!(out.get(ignored).is_none(), "{ignored}");
        }
        let forced = request(
            &json!({ "messages": [{ "role": "user", "content": "x" }],
            "tool_choice": { "type": "function", "function": { "name": "weather" } }, "parallel_tool_calls": false }),
            "m",
        )
        .unwrap();
        assert_eq!(
            forced["tool_choice"],
            json!({ "type": "tool", "name": "weather", "disable_parallel_tool_use": true })
        );
        assert_eq!(forced["max_tokens"], DEFAULT_MAX_TOKENS);
        assert!(request(&json!({ "messages": [{ "role": "system", "content": "x" }] }), "m").is_err());
        assert!(request(&json!({ "messages": [{ "role": "wizard", "content": "x" }] }), "m").is_err());
    }

    #[test]
    fn answers_translate_text_tool_calls_reasons_and_usage() {
        let answer = json!({
            "id": "msg_1", "model": "claude-sonnet-4-6", "stop_reason": "tool_use",
            "content": [
                { "type": "text", "text": "Checking." },
                { "type": "tool_use", "id": "toolu_1", "name": "weather", "input": { "city": "Paris" } },
                { "type": "tool_use", "id": "toolu_2", "name": "weather", "input": { "city": "Oslo" } }
            ],
            "usage": { "input_tokens": 12, "output_tokens": 30 }
        });
        let out = response(&answer, 1700000000);
        assert_eq!(out["object"], "chat.completion");
        assert_eq!(out["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(out["choices"][0]["message"]["content"], "Checking.");
        let calls = out["choices"][0]["message"]["tool_calls"].as_array().unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[1]["function"]["arguments"], "{\"city\":\"Oslo\"}");
        assert_eq!(out["usage"], json!({ "prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42 }));
        for (reason, finish) in
            [("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("refusal", "content_filter")]
        {
            assert_eq!(finish_reason(reason), finish);
        }
    }

    #[test]
    fn streams_translate_event_by_event() {
        let mut t = StreamTranslator::new("claude-sonnet-4-6", 1, true);
        let start = t.event(
            "message_start",
            &json!({ "message": { "id": "msg_9", "model": "claude-sonnet-4-6", "usage": { "input_tokens": 5 } } }),
        );
        assert_eq!(start[0]["choices"][0]["delta"], json!({ "role": "assistant", "content": "" }));
        assert!(t
            .event("content_block_start", &json!({ "index": 0, "content_block": { "type": "text", "text": "" } }))
            .is_empty());
        let text =
            t.event("content_block_delta", &json!({ "index": 0, "delta": { "type": "text_delta", "text": "Hi" } }));
        assert_eq!(text[0]["choices"][0]["delta"]["content"], "Hi");
        let call = t.event("content_block_start", &json!({ "index": 1, "content_block": { "type": "tool_use", "id": "toolu_1", "name": "weather", "input": {} } }));
        assert_eq!(
            call[0]["choices"][0]["delta"]["tool_calls"][0],
            json!({ "index": 0, "id": "toolu_1", "type": "function", "function": { "name": "weather", "arguments": "" } })
        );
        let args = t.event(
            "content_block_delta",
            &json!({ "index": 1, "delta": { "type": "input_json_delta", "partial_json": "{\"city\":" } }),
        );
        assert_eq!(
            args[0]["choices"][0]["delta"]["tool_calls"][0],
            json!({ "index": 0, "function": { "arguments": "{\"city\":" } })
        );
        t.event(
            "content_block_start",
            &json!({ "index": 2, "content_block": { "type": "tool_use", "id": "toolu_2", "name": "time" } }),
        );
        let second = t.event(
            "content_block_delta",
            &json!({ "index": 2, "delta": { "type": "input_json_delta", "partial_json": "{}" } }),
        );
        assert_eq!(second[0]["choices"][0]["delta"]["tool_calls"][0]["index"], 1);
        let end = t.event(
            "message_delta",
            &json!({ "delta": { "stop_reason": "tool_use" }, "usage": { "output_tokens": 17 } }),
        );
        assert_eq!(end[0]["choices"][0]["finish_reason"], "tool_calls");
        let stop = t.event("message_stop", &json!({}));
        assert_eq!(stop[0]["usage"], json!({ "prompt_tokens": 5, "completion_tokens": 17, "total_tokens": 22 }));
        assert_eq!(stop[1], json!("[DONE]"));
        assert_eq!(start[0]["id"], "chatcmpl-msg_9");
        assert!(t.event("ping", &json!({})).is_empty());
    }
}
