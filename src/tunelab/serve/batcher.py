"""Continuous batching: one worker thread decodes every request in flight, one token per row per step.

    loop:
        admit waiting requests while rows < max_batch:   prefill their prompts into free cache rows
                                                         (one forward for several, right-padded),
                                                         sample each one's first token
        one step for all rows:                           row r feeds its last token at slot len_r
                                                         (DecodeEngine.step_ragged), samples the next
        rows that stopped (a stop id, max_new tokens, cancelled) leave; the last row moves into the hole

A row's sequence sits in slots 0..len_r-1 of its cache row, so rows of any length share one
batch and a request joins or leaves between any two steps; each row attends to its own slots only
(mask slot <= len_r). Rows carry their own adapter: the step's route lists, per adapter, the rows
that use it (one route entry for all rows when they share it; base rows get none).

The cache is [rows, kv heads, slots, head dim] per block and grows by doubling (rows up to
max_batch, slots up to the model's context); an idle batcher frees a cache over 256 MiB.

Events go to each request's `sink(event)` from the worker thread: ("token", id) per new token,
then ("end", "stop" | "length") or ("error", message). Per row, sampling uses the request's own
Sampler (its own seeded generator): a seeded request draws the same tokens whenever its logits
are the same; another batch can change them by float rounding (a batched matrix product sums in
another order), which greedy decoding shrugs off but a near-tie of a sampled draw may not.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from tunelab.infer.sampling import Sampler

log = logging.getLogger("tunelab.serve")
FREE_IDLE_CACHE = 256 * 2**20


@dataclass
class GenRequest:
    prompt: list[int]
    max_new: int
    stop_ids: frozenset
    sampler: Sampler
    sink: Callable[[tuple], None]
    adapter: str | None = None  # the engine's name of the row's adapter (Proj.named), None = the base
    constraint: object = None  # infer/tool_names.ToolNameConstraint: what tokens the row may draw
    cancelled: bool = False
    n_new: int = field(default=0, init=False)

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class _Row:
    req: GenRequest
    slot: int  # tokens in the cache = the slot (and position) of `tok`
    tok: int  # the last sampled token, fed at the next step


def _pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


class Batcher:
    def __init__(self, engine, max_batch: int = 16, start: bool = True):
        """`start=False`: no worker thread; `drain()` runs the loop in the caller (tests)."""
        self.engine = engine
        self.max_batch = max_batch
        self.queue: queue.Queue = queue.Queue()
        self.rows: list[_Row] = []
        self.pending: deque = deque()
        self.cache: list | None = None
        self.cap = (0, 0)  # (rows, slots) of the cache
        self.steps = 0  # decode steps taken (tests, benchmarks)
        self.max_rows_seen = 0
        self._stop = threading.Event()
        self._thread = None
        if start:
            self._thread = threading.Thread(target=self._loop, name="tunelab-model-worker", daemon=True)
            self._thread.start()

    # ---- public ------------------------------------------------------------------------------------------------
    def submit(self, req: GenRequest) -> None:
        if self._stop.is_set():
            req.sink(("error", "the server is shutting down"))
            return
        self.queue.put(req)

    def close(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.queue.put(None)
        if self._thread is not None:
            self._thread.join(timeout)

    def drain(self) -> None:
        """Run the loop here until nothing is waiting or in flight (a batcher made with start=False)."""
        with torch.inference_mode():
            self._once(block=False)
            while self.rows or self.pending:
                self._once(block=False)

    # ---- the worker --------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        with torch.inference_mode():
            while not self._stop.is_set():
                self._once(block=not self.rows and not self.pending)
            for req in [r.req for r in self.rows] + list(self.pending):
                req.sink(("error", "the server is shutting down"))

    def _once(self, block: bool) -> None:
        """Take what waits, admit while there is room, one step for every row."""
        try:
            self._take(block)
            self._admit_waiting()
            if self.rows:
                self._step()
            elif self.cache is not None and self._cache_bytes() > FREE_IDLE_CACHE:
                self.cache, self.cap = None, (0, 0)
        except Exception as e:  # a fault of the server: fail the rows in flight, keep serving
            log.exception("model worker step failed")
            for row in self.rows:
                row.req.sink(("error", f"internal error in the model worker ({type(e).__name__})"))
            self.rows, self.cache, self.cap = [], None, (0, 0)

    def _take(self, block: bool) -> None:
        try:
            item = self.queue.get(timeout=0.5) if block else self.queue.get_nowait()
        except queue.Empty:
            return
        while item is not None:
            self.pending.append(item)
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                return

    def _views(self, n: int) -> list:
        return [(k[:n], v[:n]) for k, v in self.cache]

    def _cache_bytes(self) -> int:
        return sum(k.numel() * k.element_size() * 2 for k, _ in self.cache or [])

    def _ensure(self, rows: int, slots: int) -> None:
        """Cache room for `rows` rows of `slots` slots; grown by doubling, live rows copied over."""
        cap_r, cap_s = self.cap
        if rows <= cap_r and slots <= cap_s:
            return
        new_r = min(max(cap_r, _pow2(rows), 4), self.max_batch)
        new_s = min(max(cap_s, _pow2(slots), 256), self.engine.max_context)
        cache = self.engine.new_cache(new_r, new_s)
        n = len(self.rows)
        if self.cache is not None and n:
            for (k, v), (k0, v0) in zip(cache, self.cache):
                k[:n, :, :cap_s] = k0[:n]
                v[:n, :, :cap_s] = v0[:n]
        self.cache, self.cap = cache, (new_r, new_s)

    def _emit(self, row: _Row, tok: int) -> bool:
        """Send `tok`; True when the row is finished (stop id, max_new reached)."""
        req = row.req
        req.n_new += 1
        req.sink(("token", tok))
        if tok in req.stop_ids:
            req.sink(("end", "stop"))
            return True
        if req.n_new >= req.max_new:
            req.sink(("end", "length"))
            return True
        return False

    @staticmethod
    def _pick(req: GenRequest, logits: torch.Tensor, greedy: int) -> int:
        if req.sampler.temperature == 0:
            tok = greedy
        else:
            tok = int(req.sampler.pick(logits.float().cpu().unsqueeze(0))[0])
        return tok if req.constraint is None else req.constraint.draw(logits, req.sampler, tok)

    def _admit_waiting(self) -> None:
        """Prefill waiting requests into free rows, several prompts per forward: shortest first,
        a group closed when padding it to its longest prompt would more than double its tokens."""
        room = self.max_batch - len(self.rows)
        joining = []
        while self.pending and len(joining) < room:
            req = self.pending.popleft()
            if req.cancelled:
                req.sink(("end", "cancelled"))
            else:
                joining.append(req)
        joining.sort(key=lambda r: len(r.prompt))
        group: list[GenRequest] = []
        for req in joining:
            longest = len(req.prompt)  # sorted: the newcomer is the longest of the group
            if group and longest * (len(group) + 1) > 2 * (sum(len(r.prompt) for r in group) + longest) + 64:
                self._admit(group)
                group = []
            group.append(req)
        if group:
            self._admit(group)

    def _admit(self, reqs: list[GenRequest]) -> None:
        """One prefill for `reqs` into cache rows n..n+k-1; each samples its first token."""
        n, k = len(self.rows), len(reqs)
        self._ensure(n + k, max(len(r.prompt) for r in reqs) + 1)
        route = self._route_of([r.adapter for r in reqs])
        views = [(kc[n:n + k], vc[n:n + k]) for kc, vc in self.cache]
        logits = self.engine.prefill([r.prompt for r in reqs], views, route)
        greedy = logits.argmax(-1).tolist()
        for i, req in enumerate(reqs):
            row = _Row(req, len(req.prompt), 0)
            row.tok = self._pick(req, logits[i], greedy[i])
            if not self._emit(row, row.tok):
                self.rows.append(row)
        self.max_rows_seen = max(self.max_rows_seen, len(self.rows))

    def _route_of(self, adapters: list[str | None]) -> list | None:
        """The route of a batch whose row i uses adapters[i] (None: the base)."""
        groups: dict[str, list[int]] = {}
        for i, name in enumerate(adapters):
            if name:
                groups.setdefault(name, []).append(i)
        if not groups:
            return None
        dev = self.engine.device
        return [(name, None if len(idx) == len(adapters) else torch.tensor(idx, device=dev))
                for name, idx in groups.items()]

    def _step(self) -> None:
        live = [i for i, r in enumerate(self.rows) if r.req.cancelled]
        for i in reversed(live):
            self.rows[i].req.sink(("end", "cancelled"))
            self._remove(i)
        if not self.rows:
            return
        n = len(self.rows)
        self._ensure(n, max(r.slot for r in self.rows) + 1)
        dev = self.engine.device
        tokens = torch.tensor([r.tok for r in self.rows], dtype=torch.long, device=dev)
        slots = torch.tensor([r.slot for r in self.rows], dtype=torch.long, device=dev)
        logits = self.engine.step_ragged(tokens, slots, self._views(n),
                                         self._route_of([r.req.adapter for r in self.rows]))
        greedy = logits.argmax(-1).tolist()
        self.steps += 1
        done = []
        for i, row in enumerate(self.rows):
            row.slot += 1
            row.tok = self._pick(row.req, logits[i], greedy[i])
            if self._emit(row, row.tok):
                done.append(i)
        for i in reversed(done):
            self._remove(i)

    def _remove(self, i: int) -> None:
        """Drop row i; the last row moves into its cache row (its slots 0..len-1 copied)."""
        last = len(self.rows) - 1
        if i != last:
            length = self.rows[last].slot
            for k, v in self.cache:
                k[i, :, :length] = k[last, :, :length]
                v[i, :, :length] = v[last, :, :length]
            self.rows[i] = self.rows[last]
        self.rows.pop()
