"""A whole (non-streamed) reply stops decoding when its client leaves (serve/disconnect.py), as a closed
stream does (tests/serve/test_inference_openai.py::test_a_closed_stream_stops_its_row)."""

from __future__ import annotations

import http.client
import json
import time


def test_a_client_that_leaves_stops_its_whole_reply(server):
    batcher = server.pool.batcher
    steps = batcher.steps
    for path, body in (("/v1/completions", {"model": "tuned", "prompt": "The quick brown", "max_tokens": 2000,
                                            "temperature": 0}),
                       ("/v1/chat/completions", {"model": "tuned", "max_tokens": 2000, "temperature": 0,
                                                 "messages": [{"role": "user", "content": "The quick brown"}]})):
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        conn.request("POST", path, body=json.dumps(body), headers={
            "Content-Type": "application/json", "Authorization": f"Bearer {server.keys['alice']}"})
        deadline = time.monotonic() + 30
        while not batcher.rows and time.monotonic() < deadline:  # decoding has begun
            time.sleep(0.01)
        assert batcher.rows, "the request never reached the model worker"
        conn.sock.close()  # the client leaves before the reply
        conn.close()
        deadline = time.monotonic() + 10
        while batcher.rows and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not batcher.rows, path
    assert batcher.steps - steps < 1000  # cancelled, not decoded to the end (2 x 2000 steps)
    # the adapter slot was freed: the next request is served as usual
    r = server.client(server.keys["alice"]).completions.create(model="tuned", prompt="hi", max_tokens=2)
    assert r.usage.completion_tokens >= 1
