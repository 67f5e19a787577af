"""Generation with the template a run was trained with.

    gen = Generator.from_run("runs/quickstart")          # base + adapter + the run's template
    gen = Generator.from_run("runs/quickstart", base=True)  # the same base, adapter off
    gen = Generator.from_model("smollm2-135m-instruct")  # any model, its own chat template
    gen.reply([{"role": "user", "content": "hi"}])       # -> str

The prompt is tokenized segment by segment exactly as in training (`Template.segments`), and
generation stops at the tokenizer's EOS or the template's end-of-turn text.

Tokens come from the decode engine (infer/decode.py) when it computes the model exactly and its
copy of the weights fits (`engine="auto"`), else from transformers' `generate` (`engine="hf"`
forces that); `gen.engine_name` says which. Both are greedy at temperature 0.
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
    def __init__(self, model, tokenizer, template: Template, autocast_dtype: torch.dtype | None = None,
                 engine: str = "auto", weights: str = "auto"):
        if engine not in ("auto", "engine", "hf"):
            raise TunelabError(f"unknown decode engine '{engine}'", where="engine", hint="auto, engine or hf")
        self.model = model
        self.tokenizer = tokenizer
        self.template = template
        self.autocast_dtype = autocast_dtype
        from tunelab.infer.engine_choice import WEIGHTS

        if weights not in WEIGHTS:
            raise TunelabError(f"unknown engine weights '{weights}'", where="weights", hint=", ".join(WEIGHTS))
        if weights != "auto" and engine == "hf":
            raise TunelabError(f"weights '{weights}' are the decode engine's, not transformers' generate",
                               where="engine", hint="use engine auto, or weights auto")
        self._engine_choice = engine if weights == "auto" else "engine"  # a weights choice exists on the engine only
        self.weights = weights
        self._engine = None
        self.engine_reason = ""  # why transformers' generate is used, when it is
        self.tool_names: list[str] | None = None  # a call's name is spelled from these (infer/tool_names.py)
        self._token_texts: list[str] | None = None  # tool_names.token_texts(tokenizer), on first use

    @property
    def engine(self):
        """The DecodeEngine for this model, built on first use, or None (transformers' generate)."""
        if self._engine is None and self._engine_choice != "hf":
            from tunelab.infer.engine_choice import build_engine

            self._engine, self.engine_reason = build_engine(self.model, self.autocast_dtype,
                                                            required=self._engine_choice == "engine",
                                                            weights=self.weights)
            if self._engine is None:
                self._engine_choice = "hf"
        return self._engine

    @property
    def engine_name(self) -> str:
        return "tunelab" if self.engine is not None else "transformers"

    # ---- construction --------------------------------------------------------------------------------------
    @classmethod
    def from_model(cls, name: str, template: str = "auto", system: str | None = None, dtype: str = "auto",
                   device: str = "auto", **engine) -> "Generator":
        """`engine` keywords: engine ("auto" | "engine" | "hf") and weights ("auto" | "fp32" | "bf16" | "int8")."""
        from tunelab.models.load import load_causal_lm

        model, tok, _ = load_causal_lm(name, dtype=dtype, device=device)
        model.eval()
        return cls(model, tok, build_template(template, tok, system), **engine)

    @classmethod
    def from_run(cls, run_dir: str | Path, base: bool = False, device: str = "auto", **engine) -> "Generator":
        from tunelab.runs.load import load_run_model

        model, tok, template = load_run_model(Path(run_dir), with_adapter=not base, device=device)
        model.eval()
        return cls(model, tok, template, **engine)

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

    def chat(self, messages: str | list[dict], stream: bool = False, **kw):
        """`chat("hi")` -> the reply text; `chat(messages, stream=True)` -> an iterator of text pieces.
        Keyword arguments are those of `reply` / `stream` (max_new_tokens, temperature, top_p, seed)."""
        msgs = [{"role": "user", "content": messages}] if isinstance(messages, str) else list(messages)
        return self.stream(msgs, **kw) if stream else self.reply(msgs, **kw)

    def reply(self, messages: list[dict], max_new_tokens: int = 128, temperature: float = 0.0, top_p: float = 0.9,
              seed: int | None = None) -> str:
        return self.reply_batch([messages], max_new_tokens, temperature, top_p, seed=seed)[0]

    def _stop_ids(self) -> set[int]:
        return set(self._gen_kwargs(1, 0.0, 1.0)["eos_token_id"])

    @torch.no_grad()
    def reply_batch(self, conversations: list[list[dict]], max_new_tokens: int = 128, temperature: float = 0.0,
                    top_p: float = 0.9, batch_size: int = 16, seed: int | None = None) -> list[str]:
        """Replies for many conversations, generated `batch_size` at a time with left padding
        (one forward per new token for the whole batch instead of one per conversation)."""
        order = sorted(range(len(conversations)), key=lambda i: len(self.prompt_ids(conversations[i])[0]))
        replies: dict[int, str] = {}
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            prompts = [self.prompt_ids(conversations[i])[0] for i in idx]
            for i, new in zip(idx, self._new_tokens(prompts, max_new_tokens, temperature, top_p, seed)):
                replies[i] = self._clean(self.tokenizer.decode(new, skip_special_tokens=True))
        return [replies[i] for i in range(len(conversations))]

    def _new_tokens(self, prompts: list[torch.Tensor], max_new_tokens: int, temperature: float, top_p: float,
                    seed: int | None) -> list[list[int]]:
        """The generated ids of each prompt (EOS included when drawn), on the engine or transformers."""
        eng = self.engine
        if eng is not None:
            from tunelab.infer.sampling import Sampler

            self._check_context([len(p) for p in prompts], eng.max_context)
            return eng.generate([p.tolist() for p in prompts], max_new_tokens, self._stop_ids(),
                                Sampler(temperature, top_p, seed), self._name_constraints(len(prompts)))
        self._check_context([len(p) for p in prompts], self._hf_context())
        if seed is not None:
            torch.manual_seed(seed)
        pad = self.tokenizer.pad_token_id
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
        return [gen[r, n:].tolist() for r in range(len(prompts))]

    def _name_constraints(self, n: int) -> list | None:
        """With `tool_names` set, one ToolNameConstraint per row (the template's tool syntax), as the
        server decodes a request with tools; None otherwise. transformers' `generate` is not constrained."""
        if not self.tool_names:
            return None
        from tunelab.data.tool_syntax import syntax_for
        from tunelab.infer.tool_names import ToolNameConstraint, token_texts

        if self._token_texts is None:
            self._token_texts = token_texts(self.tokenizer)
        syntax = syntax_for(self.template)
        return [ToolNameConstraint.for_syntax(self.tool_names, syntax, self._token_texts) for _ in range(n)]

    def _hf_context(self) -> int | None:
        cfg = getattr(self.model, "config", None)
        return getattr(cfg, "max_position_embeddings", None)

    @staticmethod
    def _check_context(lengths: list[int], context: int | None) -> None:
        if context is not None and max(lengths) >= context:
            raise TunelabError(f"the prompt is {max(lengths)} tokens, the model's context is {context}",
                               where="prompt", hint="shorten the conversation, or /reset the chat")

    def stream(self, messages: list[dict], max_new_tokens: int = 256, temperature: float = 0.0,
               top_p: float = 0.9, seed: int | None = None) -> Iterator[str]:
        """Yield text pieces as they are generated (stops at EOS / end of turn)."""
        buf = ""
        for piece in self._raw_stream(messages, max_new_tokens, temperature, top_p, seed):
            buf += piece
            stop = next((s for s in self.template.stop_strings if s and s in buf), None)
            if stop:
                piece = piece[: max(0, len(piece) - (len(buf) - buf.index(stop)))]
                if piece:
                    yield piece
                return
            yield piece

    def _raw_stream(self, messages, max_new_tokens, temperature, top_p, seed) -> Iterator[str]:
        ids = self.prompt_ids(messages)
        eng = self.engine
        if eng is None:
            yield from self._hf_stream(ids, max_new_tokens, temperature, top_p, seed)
            return
        from tunelab.infer.sampling import Sampler

        self._check_context([ids.shape[1]], eng.max_context)
        stop, new, shown = self._stop_ids(), [], ""
        for tok in eng.stream(ids[0].tolist(), max_new_tokens, stop, Sampler(temperature, top_p, seed)):
            if tok in stop:
                break
            new.append(tok)
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            if text.endswith("\ufffd"):  # a character split across tokens: wait for its last byte
                continue
            if len(text) > len(shown):
                yield text[len(shown):]
                shown = text

    def _hf_stream(self, ids, max_new_tokens, temperature, top_p, seed) -> Iterator[str]:
        from transformers import TextIteratorStreamer

        self._check_context([ids.shape[1]], self._hf_context())
        if seed is not None:
            torch.manual_seed(seed)
        ids = ids.to(self._device)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        kw = dict(input_ids=ids, attention_mask=torch.ones_like(ids), streamer=streamer,
                  **self._gen_kwargs(max_new_tokens, temperature, top_p))

        def work():
            with torch.no_grad(), self._autocast():
                self.model.generate(**kw)

        th = threading.Thread(target=work, daemon=True)
        th.start()
        try:
            yield from streamer
        finally:
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
