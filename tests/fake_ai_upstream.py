"""A local AI provider for scripts/schemathesis.sh: OpenAI's and Anthropic's wire formats, small
fixed answers. Usage: fake_ai_upstream.py PORT_FILE (writes the port it listens on there)."""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

USAGE = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send(self, status, body, content_type="application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path.endswith("/models"):
            models = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in ("gpt-4o-mini", "claude-sonnet-4-6")]
            return self.send(200, {"object": "list", "data": models})
        self.send(404, {"error": {"message": "not found", "type": "invalid_request_error"}})

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            body = {}
        model = body.get("model") or "gpt-4o-mini"
        if self.path.endswith("/chat/completions"):
            if body.get("stream"):
                frames = [
                    {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": model,
                     "choices": [{"index": 0, "delta": {"role": "assistant", "content": "ok"}, "finish_reason": None}]},
                    {"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": model,
                     "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": USAGE},
                ]
                text = "".join(f"data: {json.dumps(f)}\n\n" for f in frames) + "data: [DONE]\n\n"
                return self.send(200, text.encode(), "text/event-stream")
            return self.send(200, {"id": "c1", "object": "chat.completion", "created": 0, "model": model,
                                   "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                                                "finish_reason": "stop"}], "usage": USAGE})
        if self.path.endswith("/embeddings"):
            inputs = body.get("input")
            count = len(inputs) if isinstance(inputs, list) else 1
            data = [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]} for i in range(count)]
            return self.send(200, {"object": "list", "data": data, "model": model,
                                   "usage": {"prompt_tokens": 3, "total_tokens": 3}})
        if self.path.endswith("/images/generations"):
            return self.send(200, {"created": 0, "data": [{"b64_json": PNG}]})
        if self.path.endswith("/messages"):
            if body.get("stream"):
                events = [
                    ("message_start", {"type": "message_start", "message": {"id": "m1", "type": "message", "role": "assistant",
                     "model": model, "content": [], "usage": {"input_tokens": 3, "output_tokens": 0}}}),
                    ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
                    ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "ok"}}),
                    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
                    ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}}),
                    ("message_stop", {"type": "message_stop"}),
                ]
                text = "".join(f"event: {e}\ndata: {json.dumps(d)}\n\n" for e, d in events)
                return self.send(200, text.encode(), "text/event-stream")
            return self.send(200, {"id": "m1", "type": "message", "role": "assistant", "model": model,
                                   "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
                                   "usage": {"input_tokens": 3, "output_tokens": 2}})
        self.send(404, {"error": {"message": "not found", "type": "invalid_request_error"}})


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with open(sys.argv[1], "w") as f:
        f.write(str(server.server_address[1]))
    server.serve_forever()
