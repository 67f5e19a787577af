"""benchmarks/kb_vs_sft.py in a reduced form on the real model (slow): 2 optimizer steps, 3 held-out
questions, 8 new tokens. Checks the pipeline, not the study's numbers: four contenders with every
metric, and retrieval putting the fact's own document passage into the +RAG prompts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_reduced_knowledge_study(tmp_path):
    pytest.importorskip("lancedb", reason="the rag extra is not installed")
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks/kb_vs_sft.py"), "--only", "knowledge", "--out",
                        str(tmp_path), "--limit", "3", "--max-new-tokens", "8", "--quiet",
                        "train.max_steps=2", "train.eval_every=never"],
                       cwd=ROOT, capture_output=True, text=True, timeout=3600, check=False)
    assert p.returncode == 0, p.stderr[-2000:]
    summary = json.loads(p.stdout)
    know = summary["sets"]["knowledge"]
    assert list(know["results"]) == ["base", "base+RAG", "SFT", "SFT+RAG"] and know["n_examples"] == 3
    for row in know["results"].values():
        assert set(row) == {"nll", "keywords", "rouge_l", "length"}
        assert 0.0 <= row["keywords"]["value"] <= 1.0
    res = json.loads((tmp_path / "knowledge" / "results.json").read_text(encoding="utf-8"))
    heldout = [json.loads(x) for x in (ROOT / "examples/data/knowledge-tolvaris/heldout.jsonl").read_text().splitlines()]
    for ex, want in zip(res["examples"], heldout):
        sent = ex["models"]["tolvaris-facts (base)+rag"]["prompt_sent"]
        assert all(k.casefold() in sent.casefold() for k in want["keywords"])  # the fact was retrieved (k=2)
        assert "prompt_sent" not in ex["models"]["tolvaris-facts"]
