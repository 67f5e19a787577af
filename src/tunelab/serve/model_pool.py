"""The served models: one base in memory, up to `max_adapters` LoRA adapters on it, one batcher.

    pool = ModelPool(state)            # loads the base (state.base) once, starts the model worker
    target = pool.target(tenant, "my-run")   # the base, or a finished run of that tenant (404 / 400)
    key = pool.acquire(target)         # its adapter on the engine (loaded if needed), held
    pool.submit(GenRequest(...))       # decoded with the other requests in flight (serve/batcher.py)
    pool.release(key)

Adapters are kept least-recently-used first: loading one more than `max_adapters` drops the
least recently used adapter no request holds; when every slot is held, `acquire` waits up to
`ADAPTER_WAIT` seconds for one, then answers 429. Loading an adapter reads its safetensors file
and adds A.T, s B.T beside the base's matrices (serve/adapters.py): the base is never reloaded.

Engine dtype: the base's own (`load_causal_lm` dtype auto: fp32 on CPU, bf16 on CUDA).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from tunelab.errors import TunelabError
from tunelab.serve import adapters as ad
from tunelab.serve.batcher import Batcher, GenRequest
from tunelab.serve.errors import APIError
from tunelab.serve.model_names import base_names, model_not_found
from tunelab.serve.names import check_name

ADAPTER_WAIT = 30.0


@dataclass
class Target:
    """What a request's `model` names: the base (run None) or a run of the caller's tenant."""

    model: str
    template: object
    run: ad.RunInfo | None = None


class ModelPool:
    def __init__(self, state, device: str = "auto"):
        from tunelab.data.templates import build_template
        from tunelab.infer.decode import Unsupported
        from tunelab.infer.engine_choice import serving_engine
        from tunelab.models.load import load_causal_lm

        self.state = state
        check_safetensors(state.base)
        model, tok, _ = load_causal_lm(state.base, device=device)
        model.eval()
        try:  # the fastest setting that keeps the base's weights (infer/engine_choice.py), or --weights
            self.engine = serving_engine(model, getattr(state, "weights", "auto"))
        except Unsupported as e:
            raise TunelabError(f"the server's decode engine cannot run this base: {e}", where="--base") from None
        self.tokenizer = tok  # the transformers model is dropped: the engine holds every weight it uses
        self.template = build_template("auto", tok)
        del model
        self.context = self.engine.max_context
        self.batcher = Batcher(self.engine, max_batch=getattr(state, "max_batch", 16))
        self._adapters: OrderedDict[str, int] = OrderedDict()  # key -> requests holding it; LRU first
        self._cond = threading.Condition()
        self._stop_ids: dict[tuple, frozenset] = {}  # the template's stop strings -> ids
        self._token_texts: list[str] | None = None  # token_texts(), decoded on the first request with tools
        self.loads = 0  # adapters read from disk (tests: the LRU)

    def close(self) -> None:
        self.batcher.close()

    # ---- names ------------------------------------------------------------------------------------------------
    def runs(self, tenant: str) -> list[tuple[str, int]]:
        """(run folder name, finished at, unix s) of every finished run of `tenant`, by name."""
        from tunelab.runs.kinds import run_task

        root = self.state.tenant_runs(tenant)
        out = []
        try:
            entries = sorted(root.iterdir()) if root.is_dir() else []
        except OSError:
            entries = []
        for d in entries:
            if d.name.startswith(".") or not d.is_dir() or not (d / "DONE").is_file():
                continue
            try:
                if run_task(d) is None:
                    continue
            except TunelabError:  # an unreadable config.yaml: not listed
                continue
            out.append((d.name, int((d / "DONE").stat().st_mtime)))
        return out

    def target(self, tenant: str, model) -> Target:
        """The base or a finished run of `tenant` named `model`: 404 for an unknown name (also
        another tenant's run), 400 for an invalid name or a run that cannot be served (adapters.py)."""
        if not isinstance(model, str) or not model:
            raise APIError(400, "'model' must be a non-empty string", param="model", code="invalid_type")
        if model == self.state.base:
            return Target(model, self.template)
        check_name(model, "model")
        root = self.state.tenant_runs(tenant)
        path = root / model
        if not (path / "config.yaml").is_file():
            raise model_not_found(model, base_names(self.state) + [name for name, _ in self.runs(tenant)])
        if not (path / "DONE").is_file():
            raise ad.refuse(model, "the run has not finished (no DONE marker)")
        return Target(model, None, ad.open_run(model, path, self.state.base))

    def template_of(self, target: Target):
        return target.run.template if target.run is not None else target.template

    def token_texts(self) -> list[str]:
        """Every token's text on its own (infer/tool_names.token_texts), decoded once per server."""
        if self._token_texts is None:
            from tunelab.infer.tool_names import token_texts

            self._token_texts = token_texts(self.tokenizer)
        return self._token_texts

    def stop_ids(self, template) -> frozenset:
        """EOS and the template's end-of-turn texts that are one token (as the Generator stops)."""
        stops = tuple(template.stop_strings)
        got = self._stop_ids.get(stops)
        if got is None:
            ids = {self.tokenizer.eos_token_id}
            for s in stops:
                t = self.tokenizer(s, add_special_tokens=False)["input_ids"]
                if len(t) == 1:
                    ids.add(t[0])
            got = self._stop_ids[stops] = frozenset(i for i in ids if i is not None)
        return got

    # ---- adapters ----------------------------------------------------------------------------------------------
    @property
    def loaded(self) -> list[str]:
        with self._cond:
            return list(self._adapters)

    def acquire(self, target: Target) -> str | None:
        """The engine name of the target's adapter, loaded (LRU) and held; None for the base.
        Blocking (up to ADAPTER_WAIT s when every slot is held): call it from a worker thread."""
        if target.run is None:
            return None
        key = target.run.key
        deadline = time.monotonic() + ADAPTER_WAIT
        with self._cond:
            while True:
                if key in self._adapters:
                    self._adapters[key] += 1
                    self._adapters.move_to_end(key)
                    return key
                if len(self._adapters) < max(1, self.state.max_adapters):
                    break
                idle = next((k for k, n in self._adapters.items() if n == 0), None)
                if idle is not None:
                    ad.detach(self.engine.w, idle)
                    del self._adapters[idle]
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise APIError(429, f"all {self.state.max_adapters} adapter slots are in use; retry soon",
                                   param="model", code="adapter_slots_busy")
                self._cond.wait(left)
            loras = ad.read_adapter(target.model, target.run.adapter_dir, self.engine.w)
            ad.attach(self.engine.w, key, loras)
            self._adapters[key] = 1
            self.loads += 1
            return key

    def unload(self, key: str) -> None:
        """Take a deleted run's adapter off the engine (a request holding it finishes first: the run's
        folder is gone, so no new one can)."""
        with self._cond:
            if self._adapters.get(key) == 0:
                ad.detach(self.engine.w, key)
                del self._adapters[key]
                self._cond.notify_all()

    def release(self, key: str | None) -> None:
        if key is None:
            return
        with self._cond:
            if key in self._adapters:
                self._adapters[key] = max(0, self._adapters[key] - 1)
            self._cond.notify_all()

    # ---- generation --------------------------------------------------------------------------------------------
    def budget(self, n_prompt: int, max_new: int, param: str = "messages") -> int:
        """New tokens that fit after an n-token prompt: min(max_new, context - n); 400 if none."""
        if n_prompt < 1:
            raise APIError(400, "the prompt is empty", param=param, code="empty_prompt")
        if n_prompt >= self.context:
            raise APIError(400, f"the prompt is {n_prompt} tokens; the model's context is {self.context}",
                           param=param, code="context_length_exceeded")
        return min(max_new, self.context - n_prompt)

    def submit(self, req: GenRequest) -> None:
        self.batcher.submit(req)


def check_safetensors(name: str) -> None:
    """The server loads safetensors weights only: a model folder holding only pickled `.bin`
    weights (which can run code when loaded) is refused in one line."""
    from pathlib import Path

    from tunelab.models.registry import resolve

    path = Path(resolve(name, where="--base").path)
    if path.is_dir() and not any(path.glob("*.safetensors")):
        raise TunelabError(f"{name} has no .safetensors weights; the server loads safetensors only",
                           where="--base", hint="convert it: load it in transformers and save_pretrained()")
