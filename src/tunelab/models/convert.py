"""GGUF -> safetensors, once.

transformers dequantizes a GGUF checkpoint on load but refuses to `save_pretrained` such a model,
so we rebuild the architecture from its config, copy the state dict in, and save that. The
target folder is written under a temporary name and renamed when complete (a `DONE` marker
inside), so an interrupted conversion never looks finished.
"""

from __future__ import annotations

from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.models.folder import building


def gguf_to_safetensors(folder: Path, gguf_file: str, out: Path) -> Path:
    import torch
    from rich.console import Console
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    Console(stderr=True).print(f"[dim]converting {gguf_file} to safetensors in {out} (once)...[/dim]")
    try:
        src = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=gguf_file, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf_file)
    except ImportError as e:  # gguf missing
        raise TunelabError(f"cannot read {gguf_file}: {e}", hint="pip install gguf") from e
    cfg_dict = src.config.to_dict()
    # the weights are dequantized fp32 now: a kept GGUF quantization_config would make transformers treat
    # the saved model as quantized (Trainer refuses to train it, merges inherit the claim)
    cfg_dict.pop("quantization_config", None)
    config = AutoConfig.for_model(**cfg_dict)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(src.state_dict(), strict=False)
    # tied embeddings show up as a missing lm_head.weight; anything else is a real mismatch
    real_missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if real_missing or unexpected:
        raise TunelabError(f"GGUF conversion mismatch: missing={real_missing[:3]} unexpected={unexpected[:3]}")
    with building(out, f"converted from {folder / gguf_file}\n") as tmp:
        model.save_pretrained(tmp)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        tok.save_pretrained(tmp)
    return out


def drop_gguf_quantization_config(folder: Path) -> bool:
    """Repair a cache converted by an older tunelab that kept the GGUF `quantization_config`.

    Returns True when config.json was rewritten (atomically).
    """
    import json
    import os

    cfg_path = Path(folder) / "config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    if (cfg.get("quantization_config") or {}).get("quant_method") != "gguf":
        return False
    del cfg["quantization_config"]
    tmp = cfg_path.with_name("config.json.tmp")
    tmp.write_text(json.dumps(cfg, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, cfg_path)
    return True
