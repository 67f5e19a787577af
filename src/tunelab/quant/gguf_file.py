"""A GGUF file's scalar metadata and tensor table, read without parsing its vocabulary.

gguf.GGUFReader builds a numpy view for every element of every array field; SmolLM2's 49,152-token
vocabulary and its merges make that ~6 s (30 s on a loaded machine) before the first tensor is
read. Here arrays are skipped (their length is walked, nothing is built), scalars and strings are
decoded, and each tensor's bytes are a memory map of the file (GGUF v2/v3 layout):

    header   b"GGUF", u32 version, u64 tensor count, u64 key count
    key      string key, u32 type, value          (string = u64 length + UTF-8 bytes;
                                                    array = u32 element type, u64 count, elements)
    tensor   string name, u32 n_dims, u64 ne[n_dims] (ne[0] = the row length), u32 ggml type, u64 offset
    data     starts at the next multiple of general.alignment (32 unless set), + each tensor's offset
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9


@dataclass
class TensorInfo:
    name: str
    ne: tuple[int, ...]  # ggml order: ne[0] is the row length
    tensor_type: object  # gguf.GGMLQuantizationType
    n_bytes: int
    data: np.ndarray  # read-only memory map: uint8 [rows, row_bytes] for block types, else [rows, ne0] values

    @property
    def shape(self) -> tuple[int, ...]:
        """numpy / torch order (ne reversed)."""
        return tuple(reversed(self.ne))


@dataclass
class GGUFFile:
    path: Path
    fields: dict = field(default_factory=dict)  # scalar and string values; arrays as None
    tensors: list[TensorInfo] = field(default_factory=list)

    def get(self, key: str, default=None):
        v = self.fields.get(key)
        return default if v is None else v


class _Cursor:
    def __init__(self, buf: memoryview):
        self.buf, self.pos = buf, 0

    def take(self, fmt: str):
        (v,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += struct.calcsize(fmt)
        return v

    def string(self) -> str:
        n = self.take("<Q")
        s = bytes(self.buf[self.pos:self.pos + n]).decode("utf-8", errors="replace")
        self.pos += n
        return s

    def skip_string(self) -> None:
        self.pos += 8 + struct.unpack_from("<Q", self.buf, self.pos)[0]

    def value(self, vtype: int):
        if vtype in _SCALARS:
            return self.take(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            etype, count = self.take("<I"), self.take("<Q")
            if etype in _SCALARS:
                self.pos += count * struct.calcsize(_SCALARS[etype])
            else:
                for _ in range(count):
                    self.value(etype) if etype == _ARRAY else self.skip_string()
            return None
        raise ValueError(f"unknown GGUF value type {vtype}")


def read_gguf(path: str | Path) -> GGUFFile:
    """Metadata (scalars, strings) and tensor table of a GGUF file; tensor data memory-mapped."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    path = Path(path)
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    cur = _Cursor(memoryview(mm))
    if bytes(cur.buf[:4]) != b"GGUF":
        raise ValueError(f"{path} is not a GGUF file")
    cur.pos = 4
    version, n_tensors, n_kv = cur.take("<I"), cur.take("<Q"), cur.take("<Q")
    if version < 2:
        raise ValueError(f"{path}: GGUF version {version} is not supported (2 or 3)")
    out = GGUFFile(path)
    for _ in range(n_kv):
        key = cur.string()
        out.fields[key] = cur.value(cur.take("<I"))
    infos = []
    for _ in range(n_tensors):
        name = cur.string()
        ne = tuple(cur.take("<Q") for _ in range(cur.take("<I")))
        infos.append((name, ne, GGMLQuantizationType(cur.take("<I")), cur.take("<Q")))
    align = int(out.get("general.alignment", 32))
    start = -(-cur.pos // align) * align
    for name, ne, qtype, offset in infos:
        block, size = GGML_QUANT_SIZES[qtype]
        rows = int(np.prod(ne[1:], dtype=np.int64)) if len(ne) > 1 else 1
        row_bytes = ne[0] // block * size
        raw = mm[start + offset: start + offset + rows * row_bytes]
        if qtype.name in ("F32", "F16"):
            data = raw.view(np.float32 if qtype.name == "F32" else np.float16).reshape(tuple(reversed(ne)))
        else:
            data = raw.reshape(rows, row_bytes)
        out.tensors.append(TensorInfo(name, ne, qtype, rows * row_bytes, data))
    return out
