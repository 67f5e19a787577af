"""Run the architecture-matrix tests and write docs/models.md from what they found.

    python scripts/models_matrix.py            # from the repository root, with the project's venv
    python scripts/models_matrix.py --workers 1

Runs tests/models/test_matrix_{train,export,serve}.py with TUNELAB_MATRIX_OUT set (each stage test writes
its outcome there as <family>.<stage>.json: ✅, or the one-line reason), then rewrites the part of
docs/models.md above the line `<!-- end of generated matrix -->` from those outcomes and
`Family.quirks`, keeping everything below that line as it is, and finally runs the docs checks of
tests/models/test_matrix_expected.py against the same outcomes. Exits with pytest's status: a stage
that differs from the test's EXPECTED table fails its test, and the page still shows what ran.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ["tests/models/test_matrix_train.py", "tests/models/test_matrix_export.py",
         "tests/models/test_matrix_serve.py"]
DOC_TEST = "tests/models/test_matrix_expected.py"
INTRO = """# Model families: what each stage of tunelab does on each architecture

Every cell is the outcome of a test run on a tiny random-weight model of the family (`tiny-<family>`,
hidden 64, 2 layers (gemma3: 6, Gemma 3's every-6th-global pattern), 4 heads, the tiny BPE tokenizer): ✅ when the stage ran and its check held,
otherwise the one line the stage gave (a refusal, a fallback) or `fails: ...` (it ran and its check did
not hold). The tests (tests/models/test_matrix_*.py) hold the same table as EXPECTED and fail when a
stage does anything else.

| stage | what ran | what is checked |
|---|---|---|
| LoRA train | `tunelab.train`, method lora, 2 steps, r 4 | every linear layer of the blocks adapted (fused ones included), every B moved off zero, finite loss; the training loss (shared opening, padding) equal to transformers' own |
| QLoRA train (NF4) | the same, method qlora | the base recorded as NF4, the same adapter checks |
| merge = peft | `tunelab merge` of the LoRA and the QLoRA run | every tensor equals peft's `merge_and_unload` of the adapter on the fp32 base (QLoRA: the NF4 base decoded), within 1e-5 |
| decode engine | `tunelab.load(run)` | 16 greedy tokens of 3 prompts in one batch (no stop token) equal to transformers' `generate`, or a fallback to `generate` with its `engine_reason` |
| GGUF f16 | `tunelab export --to gguf --quant f16` | reloaded by transformers' GGUF loader (what it does not read, taken from the file: key_length, rope_freqs): every weight within f16 rounding, logits within 0.05 of the run over the context the file declares (else the config fields the reload lost) |
| LoRA GGUF | `tunelab export --to lora-gguf` | llama.cpp adapter metadata, alpha, one A/B pair per adapted layer with the PEFT pair's shapes and product norm |
| Ollama template | `tunelab export --to ollama --check` | the Modelfile TEMPLATE renders the probe conversations as the run's template does |
| serve + openai | the app of `tunelab serve --base <the tiny model> --no-auth` | greedy chat completions through the `openai` client (3 prompts, the run and the base) equal to `tunelab.load(run)`'s replies and the base's |
"""
REPRODUCE = """## Reproduce

```
.venv/bin/python scripts/models_matrix.py     # runs the tests above, rewrites this page above the end marker
```
The tests alone (`pytest tests/models/test_matrix_*.py`) check the same outcomes without writing the page.
"""


def run_tests(out: Path, workers: int) -> int:
    env = {**os.environ, "TUNELAB_MATRIX_OUT": str(out)}
    xdist = ["-n", str(workers), "--dist", "loadfile"] if workers > 1 else []
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *xdist, *TESTS]
    return subprocess.call(cmd, cwd=ROOT, env=env)


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(results: dict[tuple[str, str], str]) -> str:
    sys.path.insert(0, str(ROOT / "tests" / "models"))
    from test_matrix_expected import DOC_END, DOC_HEADER, STAGES

    from tunelab.models.families import FAMILIES

    lines = [DOC_HEADER, "", INTRO, "## The matrix", "",
             "| family | architecture | " + " | ".join(STAGES.values()) + " |",
             "|---|---|" + "---|" * len(STAGES)]
    for name, fam in FAMILIES.items():
        cells = [cell(results.get((name, s), "not run")) for s in STAGES]
        lines.append(f"| `{name}` | {fam.display} (`{fam.architecture}`) | " + " | ".join(cells) + " |")
    lines += ["", "## Quirks", "", "What each family's forward does differently from Llama (`Family.quirks`, "
              "models/families.py): the stages above are where they are exercised.", ""]
    for name, fam in FAMILIES.items():
        lines.append(f"- `{name}`: " + (", ".join(fam.quirks) if fam.quirks else "none (the reference)")
                     + f"; built-in chat format `{fam.template}`")
    lines += ["", REPRODUCE, DOC_END]
    return "\n".join(lines) + "\n"


def write_doc(doc: Path, generated: str) -> None:
    """Replace the text up to and including the end marker; keep what follows it byte for byte."""
    end = generated.rstrip("\n").rsplit("\n", 1)[1]
    old = doc.read_text(encoding="utf-8") if doc.exists() else ""
    tail = old.split(end, 1)[1] if end in old else "\n"
    tmp = doc.with_suffix(".md.tmp")
    tmp.write_text(generated.rstrip("\n") + tail, encoding="utf-8")
    tmp.replace(doc)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2, help="pytest-xdist workers (1: no xdist)")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "models.md")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="models_matrix_") as tmp:
        out = Path(tmp)
        status = run_tests(out, args.workers)
        results = {}
        for p in out.glob("*.json"):
            r = json.loads(p.read_text(encoding="utf-8"))
            results[r["family"], r["stage"]] = r["outcome"]
        if not results:
            print("no stage outcome was written: docs/models.md left as it is", file=sys.stderr)
            return status or 1
        write_doc(args.doc, render(results))
        print(f"wrote {args.doc} ({len(results)} outcomes)")
        check = subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", DOC_TEST],
                                cwd=ROOT, env={**os.environ, "TUNELAB_MATRIX_OUT": str(out)})
    return status or check


if __name__ == "__main__":
    sys.exit(main())
