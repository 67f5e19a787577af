"""A scripted OpenAI-compatible chat server for the synth tests (127.0.0.1, random free port, one thread).

Each request's last user message is searched for an item key `item-<digits>`; the server answers the
n-th request for that key with `script[key][n]` (the last action repeats), default "ok":

    ok           200, reply "Generated text for <key>." with usage (prompt/completion = word counts)
    slow         sleep `slow_s` seconds (beyond the client timeout), then reply as ok
    429          HTTP 429 with Retry-After: 1
    500          HTTP 500
    badjson      200 with a body that is not JSON
    nochoices    200 with JSON that has no choices
    refuse       200, reply "I'm sorry, but I can't help with that."
    empty        200, reply ""
    same         200, reply "The same text." (identical for every key)
    401          HTTP 401 (stops a run)

`delay_s` (default 0) is added before every reply. Request counts per key are kept in `calls`.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KEY = re.compile(r"item-\d+")


class ScriptedServer:
    def __init__(self, script: dict[str, list[str]] | None = None, delay_s: float = 0.0, slow_s: float = 1.0):
        self.script = script or {}
        self.delay_s, self.slow_s = delay_s, slow_s
        self.calls: Counter = Counter()
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    def __enter__(self) -> "ScriptedServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def action(self, key: str) -> str:
        with self.lock:
            n = self.calls[key]
            self.calls[key] += 1
        steps = self.script.get(key, ["ok"])
        return steps[min(n, len(steps) - 1)]

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _send(self, code: int, body: bytes, headers: dict | None = None) -> None:
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/v1/chat/completions":
                    return self._send(404, b'{"error": "not found"}')
                user = [m["content"] for m in body["messages"] if m["role"] == "user"][-1]
                m = KEY.search(user)
                key = m.group(0) if m else "?"
                act = server.action(key)
                time.sleep(server.delay_s)
                if act == "slow":
                    time.sleep(server.slow_s)
                if act in ("429", "500", "401"):
                    return self._send(int(act), b'{"error": "scripted"}', {"Retry-After": "1"} if act == "429" else None)
                if act == "badjson":
                    return self._send(200, b'{"choices": [{"message": ')
                if act == "nochoices":
                    return self._send(200, b'{"object": "chat.completion"}')
                text = {"refuse": "I'm sorry, but I can't help with that.", "empty": "",
                        "same": "The same text."}.get(act, f"Generated text for {key}.")
                reply = {"id": "x", "object": "chat.completion", "model": body.get("model"),
                         "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                      "finish_reason": "stop"}],
                         "usage": {"prompt_tokens": len(user.split()), "completion_tokens": len(text.split())}}
                return self._send(200, json.dumps(reply).encode())

        return Handler


if __name__ == "__main__":  # python tests/data/synth_server.py: serve until Ctrl-C (for trying the CLI by hand)
    import sys

    script = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    with ScriptedServer(script, delay_s=float(sys.argv[2]) if len(sys.argv) > 2 else 0.0) as s:
        print(s.base_url, flush=True)
        threading.Event().wait()
