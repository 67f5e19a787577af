"""Teachers for `tunelab data synth`: any OpenAI-compatible chat endpoint, or a local model/run.

    OpenAITeacher(base_url, model, api_key)  POST {base_url}/chat/completions, one request per item
    LocalTeacher(Generator.from_model(...))  batched greedy/sampled generation on this machine

Retries (OpenAITeacher): an attempt that times out, cannot connect, gets HTTP 429 or 5xx, or gets
a body that is not a chat completion is retried, up to `max_attempts` attempts in all. The wait
before attempt k+1 is
    Retry-After (when the server sends it)  else  backoff * 2**(k-1)      (0.5, 1, 2, 4 s ...)
capped at `max_backoff`, plus up to 10% random jitter so parallel workers do not retry in step.
HTTP 400/413/422 fail the item at once (that request will not get better); 401/403/404 stop
the whole run (bad key, model or URL would fail every item).
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from tunelab.errors import TunelabError


@dataclass
class TeacherReply:
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    attempts: int = 1


class ItemFailed(Exception):
    """The teacher could not produce a reply for this item (after `attempts` attempts)."""

    def __init__(self, message: str, attempts: int):
        super().__init__(message)
        self.attempts = attempts


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def backoff_delay(attempt: int, base: float, cap: float, retry_after: float | None = None) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based), before jitter."""
    wait = retry_after if retry_after is not None else base * 2 ** (attempt - 1)
    return max(0.0, min(cap, wait))


def _retry_after(headers) -> float | None:
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:  # an HTTP date: fall back to our own backoff
        return None


class OpenAITeacher:
    """Chat completions from an OpenAI-compatible server (OpenAI, vLLM, llama.cpp, Ollama, ...)."""

    batched = False

    def __init__(self, base_url: str, model: str, api_key: str | None = None, *, timeout: float = 60.0,
                 max_attempts: int = 5, backoff: float = 0.5, max_backoff: float = 30.0, max_tokens: int = 256,
                 temperature: float = 0.7):
        if not base_url.startswith(("http://", "https://")):
            raise TunelabError(f"not an http(s) URL: {base_url}", where="--base-url",
                               hint="e.g. http://127.0.0.1:8000/v1")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key = api_key
        self.timeout = timeout
        self.max_attempts = max(1, max_attempts)
        self.backoff, self.max_backoff = backoff, max_backoff
        self.max_tokens, self.temperature = max_tokens, temperature

    def describe(self) -> str:
        return f"{self.model} @ {self.url}"

    def complete(self, messages: list[dict]) -> TeacherReply:
        """One reply, retried as described in the module docstring; raises ItemFailed when it gives up."""
        for attempt in range(1, self.max_attempts + 1):
            try:
                reply = self._once(messages)
                reply.attempts = attempt
                return reply
            except _Retryable as e:
                if attempt == self.max_attempts:
                    raise ItemFailed(f"{e} (gave up after {attempt} attempts)", attempt) from None
                wait = backoff_delay(attempt, self.backoff, self.max_backoff, e.retry_after)
                time.sleep(wait * (1 + 0.1 * random.random()))
        raise AssertionError("unreachable")

    def _once(self, messages: list[dict]) -> TeacherReply:
        body = json.dumps({"model": self.model, "messages": messages, "max_tokens": self.max_tokens,
                           "temperature": self.temperature}).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                raw = r.read()
        except urllib.error.HTTPError as e:
            detail = e.read()[:200].decode("utf-8", "replace").replace("\n", " ")
            if e.code == 429 or e.code >= 500:
                raise _Retryable(f"HTTP {e.code}", _retry_after(e.headers)) from None
            if e.code in (401, 403, 404):
                raise TunelabError(f"the teacher refused the request: HTTP {e.code} {detail}", where="--base-url",
                                   hint="check --base-url, --model and the API key") from None
            raise ItemFailed(f"HTTP {e.code} {detail}", 1) from None
        except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError,
                http.client.HTTPException, OSError) as e:
            reason = getattr(e, "reason", e)
            raise _Retryable(f"{type(reason).__name__}: {reason}") from None
        try:
            d = json.loads(raw)
            text = d["choices"][0]["message"]["content"]
            if not isinstance(text, str):
                raise TypeError("content is not a string")
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise _Retryable(f"malformed response ({type(e).__name__})") from None
        usage = d.get("usage") or {}
        return TeacherReply(text, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))


class LocalTeacher:
    """A model on this machine through `tunelab.infer.generate.Generator`, `batch_size` prompts per generate call.

    This is `Generator.reply_batch` (left padding, the run's template, stop at EOS / end of turn)
    plus exact token counts: prompt = the prompt's tokens under the template; completion = the
    tokens generated up to and including the first stop token (padding after it is not counted).
    """

    batched = True

    def __init__(self, generator, name: str, *, max_tokens: int = 128, temperature: float = 0.0,
                 batch_size: int = 16):
        self.gen = generator
        self.name = name
        self.max_tokens, self.temperature, self.batch_size = max_tokens, temperature, max(1, batch_size)

    @classmethod
    def load(cls, name: str, **kw) -> "LocalTeacher":
        """A run directory (has config.yaml + DONE) -> Generator.from_run; anything else -> Generator.from_model."""
        from pathlib import Path

        from tunelab.infer.generate import Generator

        p = Path(name)
        if p.is_dir() and (p / "config.yaml").exists():
            if not (p / "DONE").exists():
                raise TunelabError(f"run {p} is not finished (no DONE)", where="--teacher",
                                   hint="finish or resume the training run first")
            return cls(Generator.from_run(p), name, **kw)
        return cls(Generator.from_model(name), name, **kw)

    def describe(self) -> str:
        return f"local {self.name}"

    def complete_batch(self, conversations: list[list[dict]]) -> list[TeacherReply]:
        """Replies in input order; prompts are sorted by length inside so padding stays small."""
        import torch

        g = self.gen
        prompts = [g.prompt_ids(c)[0] for c in conversations]
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        kw = g._gen_kwargs(self.max_tokens, self.temperature, 0.9)
        stops = set(kw["eos_token_id"])
        out: dict[int, TeacherReply] = {}
        for s in range(0, len(order), self.batch_size):
            idx = order[s:s + self.batch_size]
            n = max(len(prompts[i]) for i in idx)
            ids = torch.full((len(idx), n), g.tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(idx), n), dtype=torch.long)
            for r, i in enumerate(idx):  # left padding: every prompt ends at column n
                ids[r, n - len(prompts[i]):] = prompts[i]
                mask[r, n - len(prompts[i]):] = 1
            with torch.no_grad(), g._autocast():
                gen = g.model.generate(input_ids=ids.to(g._device), attention_mask=mask.to(g._device), **kw)
            for r, i in enumerate(idx):
                new = gen[r, n:].tolist()
                used = next((k + 1 for k, t in enumerate(new) if t in stops), len(new))
                text = g._clean(g.tokenizer.decode(new[:used], skip_special_tokens=True))
                out[i] = TeacherReply(text, len(prompts[i]), used)
        return [out[i] for i in range(len(conversations))]
