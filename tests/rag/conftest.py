"""A small document set written here (txt, md, rst, html and a generated PDF) and one KB built from it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


def make_pdf(pages: list[str]) -> bytes:
    """A minimal valid PDF: one Helvetica text line per page (objects, xref table, trailer)."""
    objs = ["<< /Type /Catalog /Pages 2 0 R >>", None, "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    kids = []
    for text in pages:
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
        objs.append(f"<< /Length {len(stream)} >>\nstream\n{stream.decode()}\nendstream")
        objs.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
                    f"/Resources << /Font << /F1 3 0 R >> >> /Contents {len(objs)} 0 R >>")
        kids.append(f"{len(objs)} 0 R")
    objs[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(kids)} >>"
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objs, 1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n{body}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objs) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{o:010d} 00000 n \n" for o in offsets).encode()
    out += f"trailer\n<< /Size {len(objs) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


DOCS = {
    "notes.txt": (
        "Sourdough bread needs a lively starter made of flour and water.\n\n"
        "Feed the starter every day and keep the dough hydration near seventy percent.\n\n"
        "Related articles: ten breads you will love\n"
    ),
    "guide.md": (
        "# Gardening\n\nA short guide for the garden.\n\n"
        "## Tomatoes\n\nWater tomato plants deeply twice a week and stake them when they grow tall.\n\n"
        "## Roses\n\nPrune roses in late winter, cutting above an outward-facing bud. "
        "See [the rose society](https://example.org/roses).\n"
    ),
    "manual.rst": (
        "Bicycle maintenance\n===================\n\n"
        ".. index:: chain, tyres\n\n"
        "Chain lubrication\n-----------------\n\n"
        "Clean the chain with a rag and apply one drop of :term:`lubricant` to each roller.\n\n"
        ".. note:: Wipe off the excess oil.\n\n"
        "How much air goes in the tyres?\n-------------------------------\n\n"
        "Inflate road bike tyres to ``80`` to ``100`` psi and check the pressure weekly.\n"
    ),
    "page.html": (
        "<html><head><title>Volcanoes</title><script>var tracking = 1;</script>"
        "<style>p {color: red}</style></head><body>"
        "<nav>Home | About | Contact</nav>"
        "<h1>Volcanoes</h1><p>Magma rises through the crust and erupts as lava from a volcano.</p>"
        "<h2>Eruptions</h2><p>Explosive eruptions throw ash high into the stratosphere.</p>"
        "<footer>Copyright 2024 Example Corp</footer></body></html>"
    ),
}
PDF_PAGES = ["Quarterly revenue of the Acme widget company grew by twelve percent.",
             "Acme employee headcount reached four hundred engineers in March."]


def write_docs(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in DOCS.items():
        (folder / name).write_text(text)
    (folder / "report.pdf").write_bytes(make_pdf(PDF_PAGES))
    return folder


@pytest.fixture
def docs(tmp_path) -> Path:
    return write_docs(tmp_path / "docs")


@pytest.fixture(scope="session")
def built_kb(tmp_path_factory):
    """(docs folder, kb folder) indexed once per test session with the real minilm-l6."""
    pytest.importorskip("lancedb", reason="the rag extra is not installed")
    from tunelab.rag import index

    root = tmp_path_factory.mktemp("rag")
    d = write_docs(root / "docs")
    kb = root / "kb"
    index([d], directory=kb)
    yield d, kb
    shutil.rmtree(root, ignore_errors=True)
