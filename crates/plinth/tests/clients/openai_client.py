"""The official openai client against Plinth's OpenAI-compatible endpoint: a plain, a
tool-calling and a streaming completion. Prints what it got as one JSON object."""

import json
import os

from openai import OpenAI

client = OpenAI(base_url=os.environ["PLINTH_BASE_URL"] + "/v1", api_key=os.environ["PLINTH_API_KEY"], max_retries=0)
model = os.environ.get("PLINTH_MODEL", "claude-sonnet-4-6")
tools = [{
    "type": "function",
    "function": {
        "name": "weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}]
out = {}

plain = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
out["plain"] = {
    "content": plain.choices[0].message.content,
    "finish_reason": plain.choices[0].finish_reason,
    "total_tokens": plain.usage.total_tokens,
}

called = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "Weather in Paris and Oslo?"}], tools=tools
)
out["tools"] = {
    "finish_reason": called.choices[0].finish_reason,
    "calls": [
        {"id": c.id, "name": c.function.name, "arguments": json.loads(c.function.arguments)}
        for c in called.choices[0].message.tool_calls
    ],
}

stream = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "go"}],
    tools=tools,
    stream=True,
    stream_options={"include_usage": True},
)
text, calls, finish, usage = "", {}, None, None
for chunk in stream:
    if chunk.usage:
        usage = chunk.usage.total_tokens
    for choice in chunk.choices:
        delta = choice.delta
        if delta.content:
            text += delta.content
        for call in delta.tool_calls or []:
            entry = calls.setdefault(call.index, {"id": None, "name": None, "arguments": ""})
            if call.id:
                entry["id"] = call.id
            if call.function and call.function.name:
                entry["name"] = call.function.name
            if call.function and call.function.arguments:
                entry["arguments"] += call.function.arguments
        if choice.finish_reason:
            finish = choice.finish_reason
out["stream"] = {
    "text": text,
    "finish_reason": finish,
    "usage": usage,
    "calls": [dict(call, arguments=json.loads(call["arguments"])) for _, call in sorted(calls.items())],
}
print(json.dumps(out))
