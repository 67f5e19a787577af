"""A model pool whose replies are scripted texts: the real pool (tokenizer, templates, adapters, budget, decoding when `script` is None),
only `submit` emits the script's tokens instead of decoding, through the request's own sink, so the
server's whole path (Generation, TextAssembler, the reply parser, SSE, the openai client) runs as for
the model's own tokens. Tests set `pool.script` before a request and read `pool.prompts` after it."""

from __future__ import annotations

import threading

from tunelab.serve.model_pool import ModelPool


class ScriptedPool:
    """`state`: whose runs `target` names (the server's own), else the pool's."""

    target = ModelPool.target  # resolved against self.state
    runs = ModelPool.runs

    def __init__(self, pool, state=None):
        self._pool = pool
        self.state = state or pool.state
        self.script = ""
        self.prompts: list[list[int]] = []

    def __getattr__(self, name):
        return getattr(self._pool, name)

    def prompt_text(self) -> str:
        return self._pool.tokenizer.decode(self.prompts[-1])

    def submit(self, req) -> None:
        """The script's tokens; with `script` None, the model's own (the real batcher decodes)."""
        self.prompts.append(list(req.prompt))
        if self.script is None:
            self._pool.submit(req)
            return
        tok = self._pool.tokenizer
        ids = tok(self.script, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]  # then end of turn

        def run():
            for n, t in enumerate(ids, 1):
                if req.cancelled:
                    req.sink(("end", "cancelled"))
                    return
                req.sink(("token", t))
                if t in req.stop_ids:
                    req.sink(("end", "stop"))
                    return
                if n >= req.max_new:
                    req.sink(("end", "length"))
                    return
            req.sink(("end", "stop"))

        threading.Thread(target=run, daemon=True).start()
