"""A classifier made of a sentence encoder and a linear head on its pooled vectors (`classify.setfit` runs).

    logits(x) = W e(x) + b        e(x) = normalize(sum_t m_t h_t / sum_t m_t)   (tunelab.ops.mean_pool)

h_t is the encoder's last hidden state of token t and m_t its attention mask; W (K x d) and b (K) are a
logistic-regression head (train/setfit.py fits them). `forward(input_ids, attention_mask)` returns an
object with `.logits`, as a transformers sequence classifier does, so `infer.classify.batched_logits`,
`Classifier` and the offsets work on it unchanged.

Saved in a run folder as `embedder/` (the encoder, transformers' `save_pretrained`: config.json and
model.safetensors) and `pooled_head.safetensors` (`weight` K x d, `bias` K, fp32). `Classifier.from_run`
picks this form when the run has `embedder/`.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch

EMBEDDER_DIR = "embedder"
HEAD_FILE = "pooled_head.safetensors"


class PooledHeadClassifier(torch.nn.Module):
    """encoder + `torch.nn.Linear` head over its unit mean-pooled vectors; see the module docstring."""

    def __init__(self, encoder, head: torch.nn.Linear):
        super().__init__()
        self.encoder = encoder
        self.head = head
        self.config = SimpleNamespace(num_labels=head.out_features)  # what batched_logits reads on no input

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Unit sentence vectors e(x), (batch, d)."""
        from tunelab.ops.mean_pool import mean_pool

        return mean_pool(self.encoder, {"input_ids": input_ids, "attention_mask": attention_mask})

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_):
        e = self.embed(input_ids, attention_mask).float()
        return SimpleNamespace(logits=torch.nn.functional.linear(e, self.head.weight.float(), self.head.bias.float()))

    def save(self, run_path: str | Path) -> None:
        from safetensors.torch import save_file

        run_path = Path(run_path)
        self.encoder.save_pretrained(str(run_path / EMBEDDER_DIR))
        save_file({"weight": self.head.weight.detach().float().contiguous().cpu(),
                   "bias": self.head.bias.detach().float().contiguous().cpu()}, str(run_path / HEAD_FILE))

    @classmethod
    def load(cls, run_path: str | Path, device: str = "auto") -> "PooledHeadClassifier":
        from safetensors.torch import load_file
        from transformers import AutoModel

        from tunelab.models.load import pick_device

        run_path = Path(run_path)
        encoder = AutoModel.from_pretrained(str(run_path / EMBEDDER_DIR))
        w = load_file(str(run_path / HEAD_FILE))
        head = torch.nn.Linear(w["weight"].shape[1], w["weight"].shape[0])
        head.load_state_dict(w)
        return cls(encoder, head).to(pick_device(device)).eval()


def has_pooled_head(run_path: str | Path) -> bool:
    return (Path(run_path) / EMBEDDER_DIR).is_dir()
