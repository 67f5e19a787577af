"""Generation with the template a run was trained with.

    gen = Generator.from_run("runs/quickstart")          # base + adapter + the run's template
    gen = Generator.from_run("runs/quickstart", base=True)  # the same base, adapter off
    gen = Generator.from_model("smollm2-135m-instruct")  # any model, its own chat template
    gen.reply([{"role": "user", "content": "hi"}])       # -> str

The prompt is tokenized segment by segment exactly as in training (`Template.segments`), and
generation stops at the tokenizer's EOS or the template's end-of-turn text.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Iterator

import torch

from tunelab.data.templates import Template, build_template
from tunelab.data.tokenize import encode_segments
from tunelab.errors import TunelabError


class Generator:
    def __init__(self, model, tokenizer, template: Template, autocast_dtype: torch.dtype | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.template = template
        self.autocast_dtype = autocast_dtype

    # ---- construction --------------------------------------------------------------------------------------
    @classmethod
    def from_model(cls, name: str, template: str = "auto", system: str | None = None, dtype: str = "auto",
                   device: str = "auto") -> "Generator":
        from tunelab.models.load import load_causal_lm

        model, tok, _ = load_causal_lm(name, dtype=dtype, device=device)
        model.eval()
        return cls(model, tok, build_template(template, tok, system))

    @classmethod
    def from_run(cls, run_dir: str | Path, base: bool = False, device: str = "auto") -> "Generator":
        from tunelab.runs.load import load_run_model

        model, tok, template = load_run_model(Path(run_dir), with_adapter=not base, device=device)
        model.eval()
        return cls(model, tok, template)

    # ---- generation ----------------------------------------------------------------------------------------
    def prompt_ids(self, messages: list[dict]) -> torch.Tensor:
        ids, _ = encode_segments(self.tokenizer, self.template.segments(messages, add_generation_prompt=True))
        return torch.tensor([ids])

    def _gen_kwargs(self, max_new_tokens: int, temperature: float, top_p: float) -> dict:
        eos_ids = {self.tokenizer.eos_token_id}
        for s in self.template.stop_strings:
            t = self.tokenizer(s, add_special_tokens=False)["input_ids"]
            if len(t) == 1:
                eos_ids.add(t[0])
        kw = dict(max_new_tokens=max_new_tokens, eos_token_id=sorted(i for i in eos_ids if i is not None),
                  pad_token_id=self.tokenizer.pad_token_id, do_sample=temperature > 0)
        if temperature > 0:
            kw.update(temperature=temperature, top_p=top_p)
        return kw

    def _clean(self, text: str) -> str:
        for s in self.template.stop_strings:
            if s and s in text:
                text = text[: text.index(s)]
        return text.strip()

    def reply(self, messages: list[dict], max_new_tokens: int = 128, temperature: float = 0.0, top_p: float = 0.9) -> str:
        return self.reply_batch([messages], max_new_tokens, temperature, top_p)[0]

    @torch.no_grad()
    def reply_batch(self, conversations: list[list[dict]], max_new_tokens: int = 128, temperature: float = 0.0,
                    top_p: float = 0.9, batch_size: int = 16) -> list[str]:
        """Replies for many conversations, generated `batch_size` at a time with left padding
        (one forward per new token for the whole batch instead of one per conversation)."""
        pad = self.tokenizer.pad_token_id
        order = sorted(range(len(conversations)), key=lambda i: len(self.prompt_ids(conversations[i])[0]))
        replies: dict[int, str] = {}
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            prompts = [self.prompt_ids(conversations[i])[0] for i in idx]
            n = max(len(p) for p in prompts)
            ids = torch.full((len(prompts), n), pad, dtype=torch.long)
            mask = torch.zeros((len(prompts), n), dtype=torch.long)
            for r, p in enumerate(prompts):
                ids[r, n - len(p):] = p
                mask[r, n - len(p):] = 1
            ids, mask = ids.to(self._device), mask.to(self._device)
            with self._autocast():
                gen = self.model.generate(input_ids=ids, attention_mask=mask,
                                          **self._gen_kwargs(max_new_tokens, temperature, top_p))
            for r, i in enumerate(idx):
                replies[i] = self._clean(self.tokenizer.decode(gen[r, n:], skip_special_tokens=True))
        return [replies[i] for i in range(len(conversations))]

    def stream(self, messages: list[dict], max_new_tokens: int = 256, temperature: float = 0.0,
               top_p: float = 0.9) -> Iterator[str]:
        """Yield text pieces as they are generated (stops at EOS / end of turn)."""
        from transformers import TextIteratorStreamer

        ids = self.prompt_ids(messages).to(self._device)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        kw = dict(input_ids=ids, attention_mask=torch.ones_like(ids), streamer=streamer,
                  **self._gen_kwargs(max_new_tokens, temperature, top_p))

        def work():
            with torch.no_grad(), self._autocast():
                self.model.generate(**kw)

        th = threading.Thread(target=work, daemon=True)
        th.start()
        buf = ""
        for piece in streamer:
            buf += piece
            stop = next((s for s in self.template.stop_strings if s and s in buf), None)
            if stop:
                piece = piece[: max(0, len(piece) - (len(buf) - buf.index(stop)))]
                if piece:
                    yield piece
                break
            yield piece
        th.join()

    @property
    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _autocast(self):
        dt = self.autocast_dtype
        return torch.autocast(self._device.type, dtype=dt, enabled=dt is not None)


def read_prompts(path: str | Path) -> list[str]:
    """Prompts from a .txt (one a line) or .jsonl (`prompt` or first user message) file."""
    p = Path(path)
    if not p.is_file():
        raise TunelabError(f"file not found: {p}", where="--prompts")
    if p.suffix == ".jsonl":
        out = []
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                d = json.loads(line)
            except json.JSONDecodeError as e:
                raise TunelabError(f"invalid JSON ({e.msg})", where=f"{p}:{i}") from None
            if "prompt" in d:
                out.append(d["prompt"])
            elif "messages" in d:
                out.append(next(m["content"] for m in d["messages"] if m["role"] == "user"))
            else:
                raise TunelabError("needs 'prompt' or 'messages'", where=f"{p}:{i}")
        return out
    return [line for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
