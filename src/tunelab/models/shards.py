"""Safetensors checkpoints read one tensor at a time (memory-mapped) and written one shard at a time.

A safetensors file is: 8 bytes (little-endian u64) N, N bytes of JSON header
{name: {"dtype", "shape", "data_offsets": [begin, end]}}, then the data; offsets count from the end
of the header. A sharded checkpoint adds `model.safetensors.index.json` {"weight_map": {name: file}}.

`ShardReader.tensor(name)` returns a zero-copy view of the tensor's bytes in a private memory map of
its shard. Those pages count in the process's resident set (RSS) for as long as they stay mapped, so
a caller that converts the view into what it keeps calls `release(name)`, which drops them again
(madvise MADV_DONTNEED): reading a whole checkpoint then costs one tensor's pages at a time, not the
file (`safetensors.safe_open` keeps every page it read resident until the file is closed).

`ShardWriter.add(name, tensor)` collects tensors into a shard and writes it once it reaches
`max_shard_bytes`; `close()` writes the last one and the index (a single shard is named
`model.safetensors`, as transformers' `save_pretrained` does), so at most one shard is held.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
from pathlib import Path

import torch

from tunelab.errors import TunelabError

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
ST_DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32, "F64": torch.float64,
             "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
             "BOOL": torch.bool}
PAGE = mmap.PAGESIZE
# Linux maps up to `fault_around_bytes` (64 KiB) of already-cached file pages around each faulting
# address, so reading one tensor also maps pages of its neighbours: `release` drops this much around it too
FAULT_AROUND = 256 * 1024


def checkpoint_files(folder: str | Path) -> dict[str, Path] | None:
    """name -> shard path of a safetensors checkpoint folder (index or single file), None when it has neither."""
    folder = Path(folder)
    if (folder / INDEX).is_file():
        try:
            wmap = json.loads((folder / INDEX).read_text(encoding="utf-8"))["weight_map"]
        except (OSError, json.JSONDecodeError, KeyError) as e:
            raise TunelabError(f"unreadable index ({type(e).__name__}: {e})", where=str(folder / INDEX)) from e
        return {name: folder / f for name, f in wmap.items()}
    if (folder / SINGLE).is_file():
        return {name: folder / SINGLE for name in read_header(folder / SINGLE)[0]}
    return None


def read_header(path: Path) -> tuple[dict[str, dict], int]:
    """(tensor entries without __metadata__, byte offset where the data starts)."""
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
    except (OSError, struct.error, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TunelabError(f"not a safetensors file ({type(e).__name__})", where=str(path)) from e
    header.pop("__metadata__", None)
    return header, 8 + n


class _Shard:
    def __init__(self, path: Path):
        self.path = path
        self.header, self.data_start = read_header(path)
        self.file = open(path, "rb")  # noqa: SIM115 - open as long as the map is
        size = os.fstat(self.file.fileno()).st_size
        # ACCESS_COPY: a private, writable mapping (torch.frombuffer wants a writable buffer); nothing writes to it
        self.map = mmap.mmap(self.file.fileno(), size, access=mmap.ACCESS_COPY) if size else None

    def close(self) -> None:
        if self.map is not None:
            try:
                self.map.close()
            except BufferError:  # a view is still alive somewhere: the map goes with it
                pass
        self.file.close()


class ShardReader:
    """Tensors of a safetensors checkpoint, one memory-mapped view at a time (see the module docstring)."""

    def __init__(self, folder: str | Path):
        files = checkpoint_files(folder)
        if files is None:
            raise TunelabError(f"{folder} has no model.safetensors or {INDEX}", where=str(folder))
        self.folder = Path(folder)
        self.files = files
        self._shards: dict[Path, _Shard] = {}

    def names(self) -> list[str]:
        return list(self.files)

    def _shard(self, name: str) -> _Shard:
        path = self.files[name]
        if path not in self._shards:
            self._shards[path] = _Shard(path)
        return self._shards[path]

    def _entry(self, name: str) -> tuple[_Shard, dict]:
        if name not in self.files:
            raise KeyError(name)
        shard = self._shard(name)
        if name not in shard.header:
            raise TunelabError(f"tensor {name} is listed in the index but not in {shard.path.name}", where=str(shard.path))
        return shard, shard.header[name]

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._entry(name)[1]["shape"])

    def nbytes(self, name: str) -> int:
        begin, end = self._entry(name)[1]["data_offsets"]
        return end - begin

    def tensor(self, name: str) -> torch.Tensor:
        """A zero-copy view of `name` in its shard's map (do not write to it; `release(name)` afterwards)."""
        shard, e = self._entry(name)
        if e["dtype"] not in ST_DTYPES:
            raise TunelabError(f"tensor {name}: dtype {e['dtype']} is not supported", where=str(shard.path))
        dtype = ST_DTYPES[e["dtype"]]
        begin, end = e["data_offsets"]
        count = (end - begin) // torch.empty((), dtype=dtype).element_size()
        if count == 0:
            return torch.empty(e["shape"], dtype=dtype)
        flat = torch.frombuffer(shard.map, dtype=dtype, count=count, offset=shard.data_start + begin)
        return flat.view(e["shape"])

    def release(self, name: str) -> None:
        """Drop the pages of `name` from this process's resident set (the file's page cache keeps them)."""
        shard, e = self._entry(name)
        if shard.map is None:
            return
        begin, end = (shard.data_start + o for o in e["data_offsets"])
        start = max(0, begin - FAULT_AROUND)
        start -= start % PAGE
        end = min(len(shard.map), end + FAULT_AROUND)
        if end > start:
            shard.map.madvise(mmap.MADV_DONTNEED, start, end - start)

    def close(self) -> None:
        for s in self._shards.values():
            s.close()
        self._shards.clear()

    def __enter__(self) -> ShardReader:  # noqa: PYI034
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ShardWriter:
    """Write tensors into `folder` as shards of about `max_shard_bytes`, holding one shard at most."""

    def __init__(self, folder: str | Path, max_shard_bytes: int = 2 * 1024**3, metadata: dict | None = None):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_shard_bytes = max_shard_bytes
        self.metadata = {"format": "pt", **(metadata or {})}
        self._pending: dict[str, torch.Tensor] = {}
        self._pending_bytes = 0
        self._written: list[tuple[str, list[str]]] = []  # (temporary file name, tensor names)
        self.total_bytes = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        nbytes = tensor.numel() * tensor.element_size()
        if self._pending and self._pending_bytes + nbytes > self.max_shard_bytes:
            self.flush()
        self._pending[name] = tensor.detach().contiguous()
        self._pending_bytes += nbytes
        self.total_bytes += nbytes

    def flush(self) -> None:
        """Write the pending tensors as the next shard."""
        from safetensors.torch import save_file

        if not self._pending:
            return
        tmp = f"shard-{len(self._written) + 1:05d}.tmp"
        save_file(self._pending, str(self.folder / tmp), metadata=self.metadata)
        self._written.append((tmp, list(self._pending)))
        self._pending, self._pending_bytes = {}, 0

    def close(self) -> list[Path]:
        """Write the last shard, name the shards `model-0000i-of-0000n.safetensors` (or `model.safetensors`
        when there is one) and the index; returns the shard paths."""
        self.flush()
        n = len(self._written)
        paths, weight_map = [], {}
        for i, (tmp, names) in enumerate(self._written, start=1):
            final = SINGLE if n == 1 else f"model-{i:05d}-of-{n:05d}.safetensors"
            os.replace(self.folder / tmp, self.folder / final)
            paths.append(self.folder / final)
            weight_map.update({k: final for k in names})
        if n > 1:
            index = {"metadata": {"total_size": self.total_bytes}, "weight_map": weight_map}
            (self.folder / INDEX).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
        return paths
