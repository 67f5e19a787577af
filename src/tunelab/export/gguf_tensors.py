"""The tensor side of the GGUF export: which HF tensor becomes which GGUF tensor, in which type.

    HF name (model.layers.3.self_attn.q_proj.weight) -> GGUF name (blk.3.attn_q.weight): gguf-py's
    TensorNameMap, the table llama.cpp's converter uses.
    q/k rows of Llama-family models are permuted per head (`permute_qk`, see its docstring).
    `choose_type` picks the storage type per tensor (the rules: one GgufQuant per quant, gguf_quants.py).
    `plan` lists every tensor with its shape and type from the safetensors headers alone, so the
    writer can lay out the file before a single weight is read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.export.gguf_arches import GgufArch
from tunelab.export.gguf_quants import GgufQuant, encode, gguf_quant


def read_config(model_dir: Path, where: str = "GGUF export") -> dict:
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise TunelabError(f"{model_dir} has no config.json", where=where, hint="give a transformers model folder")
    return json.loads(path.read_text(encoding="utf-8"))


def permute_qk(w, n_head: int):
    """HF -> llama.cpp row order of a q or k projection (weight rows or bias), per head of d rows:
    [0, 1, ..., d/2-1 | d/2, ..., d-1] -> [0, d/2, 1, d/2+1, ...]; convert_hf_to_gguf's
    LlamaModel.permute. `n_head` is the number of heads this matrix holds (the kv heads for k)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute_qk(w, n_head: int):
    """The inverse of permute_qk (what transformers' GGUF loader applies)."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def tensor_name_map(arch: GgufArch, n_layers: int):
    import gguf

    kind = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch.gguf)
    return gguf.get_tensor_name_map(kind, n_layers)


def choose_type(name: str, shape: tuple[int, ...], quant, tied: bool):
    """(GGMLQuantizationType, fell_back) for tensor `name` (GGUF name) of numpy `shape`: the rules of the
    quant (export/gguf_quants.py). `quant` is a quant name or a `Bound` quant (the rules that depend on the
    layer need the model's block count: `plan` binds it)."""
    q = quant if isinstance(quant, Bound) else Bound(gguf_quant(quant), 0)
    return q.quant.tensor_type(name, shape, tied, q.n_layers)


@dataclass(frozen=True)
class Bound:
    """A GgufQuant with the model's block count (for use_more_bits)."""

    quant: GgufQuant
    n_layers: int


def nbytes(shape: tuple[int, ...], qtype) -> int:
    from gguf import GGML_QUANT_SIZES

    block, size = GGML_QUANT_SIZES[qtype]
    rows = 1
    for n in shape[:-1]:
        rows *= n
    return rows * (shape[-1] // block) * size


def weight_files(model_dir: Path) -> dict[str, Path]:
    """HF tensor name -> safetensors file holding it (one file or an index of shards)."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        wm = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        return {k: model_dir / v for k, v in wm.items()}
    single = model_dir / "model.safetensors"
    if not single.is_file():
        raise TunelabError(f"{model_dir} has no model.safetensors", where="GGUF export",
                           hint="export a folder written by `tunelab merge` (safetensors weights)")
    from safetensors import safe_open

    with safe_open(str(single), framework="pt") as f:
        return {k: single for k in f.keys()}  # noqa: SIM118 (a safe_open handle, not a dict)


@dataclass
class Item:
    name: str  # GGUF name
    hf: str | None  # HF tensor name (None: generated, see `data`)
    shape: tuple[int, ...]
    qtype: object
    permute_heads: int = 0  # >0: permute_qk with this many heads
    fallback: bool = False  # llama.cpp's fallback type (Q5_0, Q8_0, F16, ...): the rows do not fit the rules' type
    data: object = None  # a generated numpy array (rope_freqs, rope factors)
    shift: float = 0.0  # added to the weights (Gemma's (1 + w) norms)


def plan(files: dict[str, Path], cfg: dict, arch: GgufArch, quant: str) -> list[Item]:
    """Every tensor of the file, in llama.cpp's order, from the safetensors headers: renamed (TensorNameMap),
    typed (`choose_type`), with the family's per-tensor transforms (q/k permutation, norm shift) recorded."""
    from safetensors import safe_open

    n_layers, tied = cfg["num_hidden_layers"], bool(cfg.get("tie_word_embeddings", False))
    n_head = cfg["num_attention_heads"]
    n_kv = cfg.get("num_key_value_heads") or n_head
    names = tensor_name_map(arch, n_layers)
    quant = Bound(gguf_quant(quant), n_layers)
    items = []
    for path in dict.fromkeys(files.values()):
        with safe_open(str(path), framework="pt") as f:
            for hf in f.keys():  # noqa: SIM118 (a safe_open handle, not a dict)
                if hf.endswith(".rotary_emb.inv_freq") or (tied and hf == "lm_head.weight"):
                    continue
                name = names.get_name(hf, try_suffixes=(".weight", ".bias"))
                if name is None:
                    raise TunelabError(f"tensor {hf} has no GGUF name for {arch.gguf}", where="GGUF export")
                shape = tuple(f.get_slice(hf).get_shape())
                qtype, fell_back = choose_type(name, shape, quant, tied and not arch.tied_output)
                heads = 0
                if arch.permute_qk and hf.endswith(("q_proj.weight", "q_proj.bias")):
                    heads = n_head
                elif arch.permute_qk and hf.endswith(("k_proj.weight", "k_proj.bias")):
                    heads = n_kv
                shift = arch.norm_shift if name.endswith("norm.weight") else 0.0
                items.append(Item(name, hf, shape, qtype, heads, fallback=fell_back, shift=shift))
                if tied and arch.tied_output and name == "token_embd.weight":
                    qtype, fell_back = choose_type("output.weight", shape, quant, False)
                    items.append(Item("output.weight", hf, shape, qtype, fallback=fell_back))
    if not tied and not any(i.name == "output.weight" for i in items):
        raise TunelabError("untied model without lm_head.weight", where="GGUF export")
    import gguf

    for name, data in arch.extra(cfg):
        items.append(Item(name, None, data.shape, gguf.GGMLQuantizationType.F32, data=data))

    def order(it: Item):  # token_embd, blocks in order, then the rest (as llama.cpp files are laid out)
        parts = it.name.split(".")
        return (0, 0) if parts[0] == "token_embd" else (1, int(parts[1])) if parts[0] == "blk" else (2, 0)

    return sorted(items, key=order)


def tensor_data(f, item: Item):
    """The tensor as written: fp32 numpy, permuted / shifted if needed, then encoded to item.qtype
    (export/gguf_quants.encode: ours for the K-quants, gguf-py's for the others)."""
    import torch

    if item.data is not None:
        return item.data
    arr = f.get_tensor(item.hf).to(torch.float32).numpy()
    if item.permute_heads:
        arr = permute_qk(arr, item.permute_heads)
    if item.shift:
        arr = arr + item.shift
    return encode(arr, item.qtype, item.name)
