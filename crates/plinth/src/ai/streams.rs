//! Streamed answers on their way to the client: OpenAI-wire streams passed through frame by
//! frame, Anthropic's translated event by event, each metered for usage however it ends.

use std::collections::VecDeque;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue};
use axum::response::Response;
use eventsource_stream::Eventsource;
use futures_util::stream::{self, BoxStream, StreamExt};
use serde_json::{json, Value};

use super::anthropic::StreamTranslator;
use super::calls::openai_usage;
use super::usage::{Call, Estimate, CLIENT_GONE};
use crate::limits::{STREAM_FRAME_MAX_BYTES, STREAM_MAX_BYTES};

/// A stream's usage record: written once when the stream ends, or, when the client goes away
/// first, as the stream is dropped, with what was counted so far (the provider's figures, else
/// the text sent at about four characters a token).
struct Meter {
    call: Option<Call>,
    /// The provider's figures, as far as they came.
    usage: (u64, u64),
    /// Characters of answer sent to the client.
    sent_chars: usize,
}

impl Meter {
    fn new(call: Call) -> Meter {
        Meter { call: Some(call), usage: (0, 0), sent_chars: 0 }
    }

    /// Counts the text of an OpenAI-format chunk sent to the client.
    fn sent(&mut self, chunk: &Value) {
        for choice in chunk["choices"].as_array().into_iter().flatten() {
            let delta = &choice["delta"];
            self.sent_chars += delta["content"].as_str().map_or(0, str::len);
            for call in delta["tool_calls"].as_array().into_iter().flatten() {
                self.sent_chars += call["function"]["arguments"].as_str().map_or(0, str::len);
            }
        }
    }

    /// `whole`: the stream ended with the provider's last event, so its count stands; a stream
    /// cut short counts at least the text sent.
    fn finish(&mut self, status: u16, whole: bool) {
        let Some(call) = self.call.take() else { return };
        let (input, output) = self.usage;
        let sent = Estimate::of_text(self.sent_chars);
        let output = if whole && output > 0 { output } else { output.max(sent) };
        // Without the provider's input count, the reservation's estimate stands for it.
        let input = if input > 0 { input } else { call.reserved_input() };
        call.record_used(status, Some((input, output)));
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        // Dropped before its end: the client went away.
        self.finish(CLIENT_GONE, false);
    }
}

/// A provider's stream, at most `STREAM_MAX_BYTES` of it: past that it ends with an error.
fn capped(answer: reqwest::Response) -> BoxStream<'static, Result<Bytes, String>> {
    answer
        .bytes_stream()
        .scan(0usize, |read, chunk| {
            let chunk = chunk.map_err(|error| crate::outbound::describe(&error)).and_then(|bytes| {
                *read += bytes.len();
                if *read > STREAM_MAX_BYTES {
                    Err(format!("the stream passed {STREAM_MAX_BYTES} bytes"))
                } else {
                    Ok(bytes)
                }
            });
            let stop = chunk.is_err();
            async move { Some((chunk, stop)) }
        })
        .scan(false, |ended, (chunk, stop)| {
            let item = if *ended { None } else { Some(chunk) };
            *ended |= stop;
            async move { item }
        })
        .boxed()
}

/// Where a passed-through stream is: whole frames are forwarded as they complete.
struct Metering {
    bytes: BoxStream<'static, Result<Bytes, String>>,
    pending: String,
    ready: VecDeque<Bytes>,
    wants_usage: bool,
    finished: bool,
    meter: Meter,
}

/// An OpenAI-format stream passed through frame by frame, its usage frame read for the record
/// (and dropped when the client did not ask for it).
pub fn metered_stream(call: Call, answer: reqwest::Response, wants_usage: bool) -> Response {
    let content_type = answer.headers().get(reqwest::header::CONTENT_TYPE).cloned();
    let state = Metering {
        bytes: capped(answer),
        pending: String::new(),
        ready: VecDeque::new(),
        wants_usage,
        finished: false,
        meter: Meter::new(call),
    };
    let body = stream::unfold(state, |mut state| async move {
        loop {
            if let Some(bytes) = state.ready.pop_front() {
                return Some((Ok::<Bytes, std::convert::Infallible>(bytes), state));
            }
            if state.finished {
                return None;
            }
            match state.bytes.next().await {
                Some(Ok(chunk)) => {
                    state.pending.push_str(&String::from_utf8_lossy(&chunk));
                    while let Some(end) = state.pending.find("\n\n") {
                        let frame: String = state.pending.drain(..end + 2).collect();
                        let data = frame.lines().find_map(|l| l.strip_prefix("data:")).map(str::trim);
                        let parsed = data.and_then(|d| serde_json::from_str::<Value>(d).ok());
                        let usage_only = parsed.as_ref().is_some_and(|v| {
                            v["usage"].is_object() && v["choices"].as_array().is_some_and(|c| c.is_empty())
                        });
                        if let Some(usage) = parsed.as_ref().map(|v| &v["usage"]).filter(|u| u.is_object()) {
                            state.meter.usage = openai_usage(usage);
                        }
                        if let Some(chunk) = &parsed {
                            state.meter.sent(chunk);
                        }
                        if !usage_only || state.wants_usage {
                            state.ready.push_back(Bytes::from(frame));
                        }
                    }
                    if state.pending.len() > STREAM_FRAME_MAX_BYTES {
                        // One event this long is not a chat answer: the stream ends here.
                        state.pending.clear();
                        let frame = json!({ "error": { "message": "the provider sent an event over 1 MiB", "type": "upstream_error", "code": "stream_interrupted" } });
                        state.ready.push_back(Bytes::from(format!("data: {frame}\n\ndata: [DONE]\n\n")));
                        state.finished = true;
                        state.meter.finish(502, false);
                    }
                }
                ended => {
                    let broken = matches!(ended, Some(Err(_)));
                    if !state.pending.trim().is_empty() {
                        state.ready.push_back(Bytes::from(std::mem::take(&mut state.pending)));
                    }
                    if let Some(Err(error)) = ended {
                        // Broken mid-stream: said as an error frame, never retried elsewhere.
                        let message = format!("the provider's stream broke: {error}");
                        let frame = json!({ "error": { "message": message, "type": "upstream_error", "code": "stream_interrupted" } });
                        state.ready.push_back(Bytes::from(format!("data: {frame}\n\ndata: [DONE]\n\n")));
                    }
                    state.finished = true;
                    if broken {
                        state.meter.finish(502, false);
                    } else {
                        state.meter.finish(200, true);
                    }
                }
            }
        }
    });
    let mut response = Response::new(Body::from_stream(body));
    let content_type = content_type
        .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok())
        .unwrap_or(HeaderValue::from_static("text/event-stream"));
    response.headers_mut().insert(header::CONTENT_TYPE, content_type);
    response
}

/// Where a translated stream is.
pub struct Translating {
    events: BoxStream<'static, Result<eventsource_stream::Event, String>>,
    translator: StreamTranslator,
    ready: VecDeque<Bytes>,
    done: bool,
    /// Ended without the provider's last event.
    broken: bool,
    meter: Meter,
}

pub fn frame(chunk: &Value) -> Bytes {
    match chunk.as_str() {
        Some(done) => Bytes::from(format!("data: {done}\n\n")),
        None => Bytes::from(format!("data: {chunk}\n\n")),
    }
}

/// Anthropic's stream as OpenAI chunks, each sent as soon as its event arrives; an error in the
/// middle becomes an error frame and `[DONE]`.
pub fn translate_stream(call: Call, answer: reqwest::Response, model: &str, include_usage: bool) -> Response {
    let events = capped(answer).eventsource().map(|event| event.map_err(|e| e.to_string())).boxed();
    let state = Translating {
        events,
        translator: StreamTranslator::new(model, crate::time::now().timestamp(), include_usage),
        ready: VecDeque::new(),
        done: false,
        broken: false,
        meter: Meter::new(call),
    };
    let body = stream::unfold(state, |mut state| async move {
        loop {
            if let Some(bytes) = state.ready.pop_front() {
                return Some((Ok::<Bytes, std::convert::Infallible>(bytes), state));
            }
            if state.done {
                if state.broken {
                    state.meter.finish(502, false);
                } else {
                    state.meter.finish(200, true);
                }
                return None;
            }
            match state.events.next().await {
                Some(Ok(event)) => {
                    let data: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
                    let kind = if event.event.is_empty() {
                        data["type"].as_str().unwrap_or_default().to_string()
                    } else {
                        event.event
                    };
                    for chunk in state.translator.event(&kind, &data) {
                        state.done |= chunk == "[DONE]";
                        state.meter.sent(&chunk);
                        state.ready.push_back(frame(&chunk));
                    }
                    state.meter.usage = state.translator.usage();
                }
                Some(Err(error)) => {
                    let error = json!({ "error": { "message": format!("the provider's stream broke: {error}"), "type": "upstream_error", "code": "stream_interrupted" } });
                    state.ready.push_back(frame(&error));
                    state.ready.push_back(frame(&json!("[DONE]")));
                    state.done = true;
                    state.broken = true;
                }
                None => {
                    // Ended without `message_stop`: close the stream the OpenAI way.
                    state.ready.push_back(frame(&json!("[DONE]")));
                    state.done = true;
                    state.broken = true;
                }
            }
        }
    });
    let mut response = Response::new(Body::from_stream(body));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
