"""See what will be trained: split counts, token lengths, truncation, and the exact learned tokens.

`inspect_config(cfg)` tokenizes the data exactly as `tunelab train` would (same template, same
masking, same max_length) and returns a `DataReport`; `render_example` shows one example with
learned tokens in green and masked ones dim.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tunelab.config import RunConfig
from tunelab.data.dataset import load_splits
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

    @property
    def mean(self) -> float:
        return sum(self.lengths) / max(len(self.lengths), 1)


@dataclass
class DataReport:
    template: Template
    splits: list[SplitStats]
    examples: list[TokenizedExample] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


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
    toks = [tokenize_example(e, template, tok, d.max_length, d.truncation_side, d.train_on) for e in examples]
    return SplitStats(name=name, count=len(toks), lengths=[len(t.input_ids) + t.truncated for t in toks],
                      truncated=sum(1 for t in toks if t.truncated), tokens_cut=sum(t.truncated for t in toks),
                      no_target=sum(1 for t in toks if t.n_target == 0),
                      learned_tokens=sum(t.n_target for t in toks)), toks


def inspect_config(cfg: RunConfig, tokenizer=None) -> DataReport:
    if tokenizer is None:
        from tunelab.models.load import load_tokenizer
        from tunelab.models.registry import resolve

        tokenizer = load_tokenizer(resolve(cfg.model.name))
    template = build_template(cfg.data.template, tokenizer, cfg.data.system, cfg.data.custom_template)
    train, val = load_splits(cfg)
    s_train, t_train = _stats("train", train, template, tokenizer, cfg)
    splits = [s_train]
    if val:
        splits.append(_stats("validation", val, template, tokenizer, cfg)[0])
    return DataReport(template, splits, t_train, template_warnings(template, tokenizer))


def histogram(lengths: list[int], bins: int = 10, width: int = 40) -> list[str]:
    """Text histogram lines: '  64-127 | ######## 12'."""
    if not lengths:
        return []
    lo, hi = min(lengths), max(lengths)
    step = max(1, -(-(hi - lo + 1) // bins))
    counts = [0] * bins
    for x in lengths:
        counts[min((x - lo) // step, bins - 1)] += 1
    top = max(counts)
    return [f"{lo + i * step:>6}-{lo + (i + 1) * step - 1:<6}| {'#' * round(width * c / top):<{width}} {c}"
            for i, c in enumerate(counts) if c or i < bins]


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
