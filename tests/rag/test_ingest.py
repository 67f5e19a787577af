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


# ---------------------------------------------------------------- page furniture
DOCBOOK_PAGE = (
    "<html><body><div class='navheader'><table summary='Navigation header'><tr><td><a href='ch11.html'>Prev</a>"
    "</td><td><a href='ch13.html'>Next</a></td></tr></table></div>"
    "<h1>Chapter 12. Programming</h1><p>Shell scripts are run by the shell, one command per line.</p>"
    "<div class='related' role='navigation'><ul><li><a href='index.html'>index</a></li>"
    "<li><a href='ch13.html'>next</a> |</li></ul></div>"
    "<p>To install a tool, follow these steps:</p>"
    "<ol><li>Open a terminal</li><li>Run apt install bash</li><li>Check the version</li></ol>"
    "<table><tr><td><a href='ch11.html'>Prev</a></td><td></td><td><a href='ch13.html'>Next</a></td></tr>"
    "<tr><td>Chapter 11. Data conversion</td><td><a href='index.html'>Home</a></td>"
    "<td>Chapter 13. Programming tips</td></tr></table>"
    "<ul><li><a href='a.html'>Debian tutorials</a></li><li><a href='b.html'>System initialization</a></li>"
    "<li><a href='c.html'>Authentication</a></li></ul>"
    "</body></html>"
)


def test_html_navigation_elements_and_link_lists_are_dropped(tmp_path):
    f = tmp_path / "ch12.html"
    f.write_text(DOCBOOK_PAGE)
    doc = read_document(f)
    assert [b.text for b in doc.blocks] == [
        "Shell scripts are run by the shell, one command per line.",
        "To install a tool, follow these steps:",
        "Open a terminal", "Run apt install bash", "Check the version",  # a real list of steps stays
    ]
    # navheader, role=navigation, Prev/Next + chapter row (5 blocks), 3 link-only items
    assert doc.furniture == 2 + 5 + 3
    kept = read_document(f, furniture=False)
    assert "Chapter 11. Data conversion" in kept.text and "Debian tutorials" in kept.text
    assert "index" in [b.text for b in kept.blocks] and kept.furniture == 0


def test_text_furniture_heuristic_drops_navigation_and_keeps_content(tmp_path):
    f = tmp_path / "page.md"
    f.write_text(
        "# Guide\n\nRotating keys is done with the admin tool.\n\n"
        "Chapter 11. Data conversion\nChapter 12. Programming\nChapter 13. Tips and tricks\n\n"
        "Home > Guide > Keys\n\n"
        "« Previous | Up | Next »\n\n"
        "Prev Next Chapter 11. Data conversion Home Chapter 13. Programming\n\n"
        "- [Install](install.md)\n- [Configure](configure.md)\n- [Upgrade](upgrade.md)\n\n"
        "Steps:\n\n1. Open the settings\n2. Click Save\n3. Restart the app\n\n"
        "- Install the package\n- Run tunelab init\n- Edit the config\n\n"
        "| Name | Type | Default |\n|---|---|---|\n| lr | float | 2e-4 |\n\n"
        "Call next() to get the next item; see chapter 3 for details.\n\n"
        "Chapter 3. Installation\n\n"
        "```\nnext()\n```\n"
    )
    doc = read_document(f)
    texts = [b.text for b in doc.blocks]
    assert texts == [
        "Rotating keys is done with the admin tool.",
        "Steps:", "1. Open the settings\n2. Click Save\n3. Restart the app",
        "- Install the package\n- Run tunelab init\n- Edit the config",
        "| Name | Type | Default |\n|---|---|---|\n| lr | float | 2e-4 |",
        "Call next() to get the next item; see chapter 3 for details.",
        "Chapter 3. Installation",  # one table-of-contents-like line alone is kept
        "next()",
    ]
    assert doc.furniture == 5
    assert len(read_document(f, furniture=False).blocks) == len(texts) + 5
    for b in doc.blocks:  # offsets still index the cleaned text
        assert doc.text[b.start:b.end] == b.text


def test_furniture_rule_on_blocks():
    from tunelab.rag.furniture import furniture_blocks

    def nav(*texts, link=0.0, sections=None):
        return sorted(furniture_blocks([(t, (sections or {}).get(i, ("S",)), link) for i, t in enumerate(texts)]))

    assert nav("Next") == [0] and nav("Previous topic") == [0] and nav("Back to top") == [0]
    assert nav("Next: Installation") == [0]
    assert nav("2.3. Options\n2.4. Logging\n2.5. Security") == [0]
    assert nav("2.3. Options", "2.4. Logging") == [0, 1]  # a run of one-line entries
    assert nav("Chapter 2. Options", "Options are read from the config file.") == []
    # runs do not cross sections
    assert nav("Chapter 2. Options", "Chapter 3. Logging", sections={1: ("T",)}) == []
    assert nav("Intro", "Setup", link=1.0) == []  # two lone links: kept
    assert nav("Intro", "Setup", "Usage", link=1.0) == [0, 1, 2]
    assert nav("Go up to the home page next.") == []
    assert nav("Open the settings\nClick Save\nRestart the app") == []
    # names, not navigation: a lone lowercase nav word, a table header, code with | and >
    assert nav("next") == [] and nav("Index") == [] and nav("Contents") == []
    assert nav("int | str | None") == [] and nav("x > y > z") == [] and nav("3.7 _ignore_", "3.6 Flag, auto") == []
    # links to API names are content (a table of os.* -> Path.* links, a list of types)
    assert nav("os.chmod()", "Path.chmod()", "os.mkdir()", "Path.mkdir()", link=1.0) == []
    assert nav("tuple", "list", "dict", "set", link=1.0) == []


def test_links_to_other_sites_and_code_are_not_navigation(tmp_path):
    f = tmp_path / "ide.html"
    f.write_text("<h1>IDEs</h1><p>There are a number of IDEs for Python:</p><ul>"
                 "<li><a href='https://wing.example/'>Wing IDE</a></li><li><a href='https://komodo.example/'>Komodo "
                 "IDE</a></li><li><a href='https://pycharm.example/'>Py Charm</a></li></ul>"
                 "<pre><a href='#atom'>atom</a> ::= <a href='#id'>identifier</a>\n"
                 "<a href='#lit'>literal</a> ::= <a href='#s'>stringliteral</a></pre>")
    assert [b.text for b in read_document(f).blocks][1:4] == ["Wing IDE", "Komodo IDE", "Py Charm"]
    assert "atom ::= identifier" in read_document(f).text
    m = tmp_path / "links.md"
    m.write_text("# Tools\n\n- [Wing IDE](https://wing.example/)\n- [Komodo IDE](https://komodo.example/)\n"
                 "- [Py Charm](https://pycharm.example/)\n")
    assert len(read_document(m).blocks) == 1 and read_document(m).furniture == 0
