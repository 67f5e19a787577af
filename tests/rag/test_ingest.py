"""Reading and cleaning each format into sectioned paragraphs."""

from __future__ import annotations

import pytest

from tunelab.errors import TunelabError
from tunelab.rag.ingest import read_document


def test_rst_sections_directives_and_inline_markup(docs):
    doc = read_document(docs / "manual.rst")
    got = [(b.section_path, b.text) for b in doc.blocks]
    assert got == [
        (("Bicycle maintenance", "Chain lubrication"),
         "Clean the chain with a rag and apply one drop of lubricant to each roller."),
        (("Bicycle maintenance", "Chain lubrication"), "Wipe off the excess oil."),
        (("Bicycle maintenance", "How much air goes in the tyres?"),
         "Inflate road bike tyres to 80 to 100 psi and check the pressure weekly."),
    ]
    assert "index::" not in doc.text and "chain, tyres" not in doc.text


def test_rst_markup_across_lines_code_blocks_and_literal_markers(tmp_path):
    f = tmp_path / "x.rst"
    f.write_text("Title\n=====\n\nRun ``chmod +x\nscript`` then see :func:`os.chmod`. A good choice is::\n\n"
                 "   #!/usr/bin/env python3\n\n.. code-block:: shell-session\n\n   $ ./script\n")
    doc = read_document(f)
    assert [b.text for b in doc.blocks] == [
        "Run chmod +x\nscript then see os.chmod. A good choice is:", "#!/usr/bin/env python3", "$ ./script"]


def test_markdown_headings_and_links(docs):
    doc = read_document(docs / "guide.md")
    assert [b.section for b in doc.blocks] == ["Gardening", "Tomatoes", "Roses"]
    assert doc.blocks[2].section_path == ("Gardening", "Roses")
    assert doc.blocks[2].text.endswith("See the rose society.")  # link reduced to its text


def test_markdown_setext_headings_rules_and_code(tmp_path):
    f = tmp_path / "s.md"
    f.write_text("Title\n=====\n\nIntro.\n\n---\n\nPart two\n--------\n\n```\nx = 1\n\ny = 2\n```\n")
    doc = read_document(f)
    assert [(b.section_path, b.text) for b in doc.blocks] == [
        (("Title",), "Intro."), (("Title", "Part two"), "x = 1\n\ny = 2")]


def test_html_drops_navigation_scripts_and_footer(docs):
    doc = read_document(docs / "page.html")
    assert [(b.section, b.text) for b in doc.blocks] == [
        ("Volcanoes", "Magma rises through the crust and erupts as lava from a volcano."),
        ("Eruptions", "Explosive eruptions throw ash high into the stratosphere."),
    ]


def test_generated_pdf_pages_become_sections(docs):
    pytest.importorskip("pypdf")
    doc = read_document(docs / "report.pdf")
    assert [b.section for b in doc.blocks] == ["page 1", "page 2"]
    assert "twelve percent" in doc.blocks[0].text and "four hundred engineers" in doc.blocks[1].text


def test_default_and_custom_drop_patterns(docs):
    assert [b.text[:9] for b in read_document(docs / "notes.txt").blocks] == ["Sourdough", "Feed the "]
    kept = read_document(docs / "notes.txt", drop=[])
    assert len(kept.blocks) == 3 and kept.blocks[2].text.startswith("Related articles")
    custom = read_document(docs / "notes.txt", drop=[r"feed the starter"])
    assert [b.text[:9] for b in custom.blocks] == ["Sourdough", "Related a"]


def test_offsets_index_the_cleaned_text(docs):
    doc = read_document(docs / "guide.md")
    for b in doc.blocks:
        assert doc.text[b.start:b.end] == b.text


def test_bad_inputs_raise_one_line_errors(tmp_path):
    with pytest.raises(TunelabError, match="unsupported file type"):
        read_document(tmp_path / "x.docx")
    with pytest.raises(TunelabError, match="cannot read file"):
        read_document(tmp_path / "missing.txt")
    pytest.importorskip("pypdf")
    bad = tmp_path / "broken.pdf"
    bad.write_bytes(b"not a pdf at all")
    with pytest.raises(TunelabError, match="not a readable PDF") as e:
        read_document(bad)
    assert "\n" not in e.value.one_line()
