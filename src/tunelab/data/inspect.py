"""See what will be trained: split counts, token lengths, truncation, and the exact learned tokens.

`inspect_config(cfg)` loads the data of `cfg.task` and returns a `DataReport`:
  sft       tokenized exactly as `tunelab train` does (same template, masking, max_length);
            `render_example` shows one example with learned tokens green and masked ones dim
  pretrain  tokens per document and in all (lengths are not truncated: documents are packed)
  classify  text tokens per example and the count of each label
  reward/dpo  pairs; prompt (rendered by the template), chosen and rejected token lengths
plus what loading did: examples per dataset of a mixture, duplicates dropped (data.dedupe).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tunelab.config import RunConfig
from tunelab.data.dataset import DataSplits, load_data
from tunelab.data.templates import Template, build_template
from tunelab.data.tokenize import IGNORE, TokenizedExample, tokenize_example


@dataclass
class SplitStats:
    name: str
    count: int
    lengths: list[int]  # tokens per example before truncation
    truncated: int  # examples cut by max_length
    tokens_cut: int  # tokens removed in all
    no_target: int  # examples left with no learned token (dropped in training)
    learned_tokens: int
    labels: Counter = field(default_factory=Counter)  # classify: examples per label
    pair_means: tuple[float, float, float] | None = None  # reward/dpo: mean (prompt, chosen, rejected) tokens

    @property
    def mean(self) -> float:
        return sum(self.lengths) / max(len(self.lengths), 1)


@dataclass
class DataReport:
    template: Template
    splits: list[SplitStats]
    examples: list[TokenizedExample] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    task: str = "sft"
    notes: list[str] = field(default_factory=list)  # mixture and dedupe lines


def template_warnings(template: Template, tokenizer) -> list[str]:
    """The 'model never stops' and 'no pad token' checks."""
    out = []
    eos = tokenizer.eos_token
    if tokenizer.pad_token is None or tokenizer.pad_token_id is None:
        out.append("the tokenizer has no pad token: tunelab pads with EOS (masked from the loss)")
    probe = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]
    reply = "".join(t for t, tgt in template.segments(probe) if tgt)
    if not eos:
        out.append("the tokenizer has no EOS token: generation will only stop at max_new_tokens")
    elif eos not in reply:
        out.append(f"the template's end of turn does not contain the model's EOS {eos!r}: the tuned model may never stop")
    return out


def _stats(name: str, examples, template, tok, cfg: RunConfig) -> tuple[SplitStats, list[TokenizedExample]]:
    d = cfg.data
    toks = [tokenize_example(e, template, tok, d.max_length, d.truncation_side, d.train_on, d.reasoning,
                             d.earlier_reasoning) for e in examples]
    return SplitStats(name=name, count=len(toks), lengths=[len(t.input_ids) + t.truncated for t in toks],
                      truncated=sum(1 for t in toks if t.truncated), tokens_cut=sum(t.truncated for t in toks),
                      no_target=sum(1 for t in toks if t.n_target == 0),
                      learned_tokens=sum(t.n_target for t in toks)), toks


def _n_tokens(tok, text: str) -> int:
    return len(tok(text, add_special_tokens=False)["input_ids"])


def _plain_stats(name: str, lengths: list[int], max_length: int, learned: int, cut: bool = True) -> SplitStats:
    over = [x - max_length for x in lengths if x > max_length] if cut else []
    return SplitStats(name, len(lengths), lengths, len(over), sum(over), 0, learned)


def _task_stats(name: str, examples, template, tok, cfg: RunConfig) -> SplitStats:
    """pretrain / classify / reward / dpo: token lengths and the task's counts."""
    L = cfg.data.max_length
    if cfg.task == "pretrain":
        lengths = [_n_tokens(tok, e.text) for e in examples]
        return _plain_stats(name, lengths, L, sum(lengths), cut=False)  # every token is learned
    if cfg.task == "classify":
        s = _plain_stats(name, [_n_tokens(tok, e.text) for e in examples], L, 0)
        s.labels = Counter(e.label for e in examples)
        return s
    prompts = [_n_tokens(tok, template.prompt_text(e.prompt)) for e in examples]
    chosen = [_n_tokens(tok, e.chosen) for e in examples]
    rejected = [_n_tokens(tok, e.rejected) for e in examples]
    pairs = [p + max(c, r) for p, c, r in zip(prompts, chosen, rejected)]  # the longer sequence of each pair
    s = _plain_stats(name, pairs, L, sum(chosen) + sum(rejected))
    n = max(len(examples), 1)
    s.pair_means = (sum(prompts) / n, sum(chosen) / n, sum(rejected) / n)
    return s


def data_notes(data: DataSplits) -> list[str]:
    """One line per dataset of a mixture, and what dedupe dropped."""
    out = []
    if len(data.sources) > 1:
        out += [f"{s.path}: {s.read} read, weight {s.weight:g} -> {s.taken} in train" for s in data.sources]
    if data.duplicates_dropped or data.overlap_dropped:
        out.append(f"dedupe: dropped {data.duplicates_dropped} exact duplicates and {data.overlap_dropped} train "
                   "examples identical to a validation example")
    return out


def control_char_warnings(examples, split: str) -> list[str]:
    """One line when text holds control characters other than newline, tab and carriage return (a stray
    backspace or escape from a copy-paste): they are tokenized as they are, and rarely meant to be."""
    import unicodedata
    from dataclasses import asdict

    def strings(x):
        if isinstance(x, str):
            yield x
        elif isinstance(x, dict):
            for v in x.values():
                yield from strings(v)
        elif isinstance(x, (list, tuple)):
            for v in x:
                yield from strings(v)

    hits, first = 0, None
    for ex in examples:
        fields = {k: v for k, v in asdict(ex).items() if k not in ("where", "meta")}
        bad = {c for text in strings(fields) for c in text if c not in "\n\t\r" and unicodedata.category(c) == "Cc"}
        if bad:
            hits += 1
            if first is None:
                c = min(bad)
                name = unicodedata.name(c, {"\b": "BACKSPACE", "\x1b": "ESCAPE"}.get(c, "control character"))
                first = f"U+{ord(c):04X} {name} at {getattr(ex, 'where', '?')}"
    if not hits:
        return []
    return [f"{split}: {hits} example{'s hold' if hits > 1 else ' holds'} control characters (first: {first}); they are "
            "trained on as they are - remove them if they are not meant to be there"]


def inspect_config(cfg: RunConfig, tokenizer=None) -> DataReport:
    if tokenizer is None:
        from tunelab.models.load import load_tokenizer
        from tunelab.models.registry import resolve

        tokenizer = load_tokenizer(resolve(cfg.model.name))
    template = build_template(cfg.data.template, tokenizer, cfg.data.system, cfg.data.custom_template)
    data = load_data(cfg)
    splits_in = [("train", data.train)] + ([("validation", data.validation)] if data.validation else [])
    controls = [w for name, exs in splits_in for w in control_char_warnings(exs, name)]
    if cfg.task != "sft":
        splits = [_task_stats(name, exs, template, tokenizer, cfg) for name, exs in splits_in]
        warnings = template_warnings(template, tokenizer) if cfg.task == "dpo" else []
        return DataReport(template, splits, [], warnings + controls, cfg.task, data_notes(data))
    s_train, t_train = _stats("train", data.train, template, tokenizer, cfg)
    splits = [s_train]
    if data.validation:
        splits.append(_stats("validation", data.validation, template, tokenizer, cfg)[0])
    parts = parts_line(data.train, template, tokenizer, cfg.data.reasoning, cfg.data.earlier_reasoning)
    return DataReport(template, splits, t_train, template_warnings(template, tokenizer) + controls, "sft",
                      data_notes(data) + ([parts] if parts else []))


# ---- what is learned in tool calls and reasoning ----------------------------------------------------------------
Part = tuple[str, str, bool]  # (part, text, learned)


def learned_parts(segments: list[tuple[str, bool]], messages: list[dict], template: Template) -> list[Part]:
    """Each segment cut into labelled pieces (part, text, learned): part is "reasoning" (a think block),
    "tool call" (the template's call syntax, data/tool_syntax.py, in learned text), "tool output" (a tool
    message's content found in the text), "reply" (the rest of a learned segment) or "prompt" (the rest of a
    masked one)."""
    import json
    import re

    from tunelab.data.reasoning import CLOSE, OPEN
    from tunelab.data.tool_syntax import syntax_for

    think = re.escape(OPEN) + r".*?" + re.escape(CLOSE) + r"\s*"
    pats = [("reasoning", think), ("tool call", syntax_for(template).pattern)]
    # a tool's output as written, or as a JSON string (Llama 3.1's template writes it so)
    outputs = sorted({v for m in messages if m["role"] == "tool" and m["content"]
                      for v in (m["content"], json.dumps(m["content"], ensure_ascii=False))}, key=len, reverse=True)
    pats += [("tool output", "|".join(re.escape(o) for o in outputs))] if outputs else []
    names = {f"p{i}": part for i, (part, p) in enumerate(pats) if p}
    # calls are looked for in learned text only (a masked prompt may quote the syntax, as Qwen's tools text does)
    rx = {flag: re.compile("|".join(f"(?P<p{i}>{p})" for i, (part, p) in enumerate(pats)
                                    if p and (flag or part != "tool call")), re.S) for flag in (True, False)}
    out: list[Part] = []
    for text, learned in segments:
        rest, pos = "reply" if learned else "prompt", 0
        for m in rx[learned].finditer(text):
            out += [(rest, text[pos:m.start()], learned), (names[m.lastgroup], m.group(0), learned)]
            pos = m.end()
        out.append((rest, text[pos:], learned))
    return [p for p in out if p[1]]


def parts_line(examples, template: Template, tok, reasoning: str = "learn", earlier_reasoning: str = "drop") -> str:
    """One line: learned and masked tokens of replies, tool calls, reasoning and tool outputs over the examples
    that have tool calls or reasoning ("" when none has): what `train` learns of each."""
    from tunelab.data.tokenize import example_segments

    counts: Counter = Counter()
    n = 0
    for ex in examples:
        if not any(m.get("tool_calls") or m.get("reasoning_content") is not None for m in ex.messages):
            continue
        n += 1
        segs = example_segments(ex, template, reasoning, earlier_reasoning)
        for part, text, learned in learned_parts(segs, ex.messages, template):
            if part != "prompt":
                counts[(part, learned)] += _n_tokens(tok, text)
    if not n:
        return ""
    order = ["reply", "tool call", "reasoning", "tool output"]

    def listed(flag: bool) -> str:
        return ", ".join(f"{p} {counts[(p, flag)]}" for p in order if counts[(p, flag)]) or "nothing"

    return f"tool calls and reasoning in {n} train examples: learned tokens: {listed(True)}; masked: {listed(False)}"


def length_bins(lengths: list[int], bins: int = 10) -> list[tuple[int, int, int]]:
    """(low, high, count) for `bins` equal integer bins from min(lengths):
    step = ceil((max - min + 1) / bins); x falls in bin min((x - min) // step, bins - 1)."""
    if not lengths:
        return []
    lo, hi = min(lengths), max(lengths)
    step = max(1, -(-(hi - lo + 1) // bins))
    counts = [0] * bins
    for x in lengths:
        counts[min((x - lo) // step, bins - 1)] += 1
    return [(lo + i * step, lo + (i + 1) * step - 1, c) for i, c in enumerate(counts)]


def histogram(lengths: list[int], bins: int = 10, width: int = 40) -> list[str]:
    """Text histogram lines of `length_bins`: '  64-127 | ######## 12'."""
    rows = length_bins(lengths, bins)
    if not rows:
        return []
    top = max(c for _, _, c in rows)
    return [f"{low:>6}-{high:<6}| {'#' * round(width * c / top):<{width}} {c}" for low, high, c in rows]


def plot_histogram(report: DataReport, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for s in report.splits:
        ax.hist(s.lengths, bins=30, alpha=0.6, label=f"{s.name} ({s.count})")
    ax.set_xlabel("tokens per example")
    ax.set_ylabel("examples")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def render_example(ex: TokenizedExample, tokenizer):
    """A rich Text: learned tokens green, masked tokens dim (decoded token by token)."""
    from rich.text import Text

    text = Text()
    for tid, lab in zip(ex.input_ids, ex.labels):
        piece = tokenizer.decode([tid])
        text.append(piece, style="bold green" if lab != IGNORE else "dim")
    return text
