"""`tunelab rag`: index documents, query, ask with citations, evaluate retrieval.

Thin wrappers over `tunelab.rag` (same names, same defaults); `--json` prints machine-readable
output. Bad input raises TunelabError, which the root command prints as one line (exit 2).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(help="Knowledge bases: index documents, query, ask with citations, evaluate.",
                  no_args_is_help=True)

KB_DIR = typer.Option(None, "--dir", help="Knowledge base folder (default $TUNELAB_HOME/kb/NAME).")


def _echo_json(obj) -> None:
    typer.echo(json.dumps(obj, indent=1, ensure_ascii=False))


@app.command("index")
def index_cmd(
    docs: List[Path] = typer.Argument(..., help="Files or folders (txt, md, rst, html, pdf)."),
    kb: Optional[str] = typer.Option(None, "--kb", help="Knowledge base name."),
    directory: Optional[Path] = KB_DIR,
    embedder: str = typer.Option("minilm-l6", "--embedder", help="Embedding model alias, folder or hub id."),
    size: int = typer.Option(256, "--chunk-size", help="Chunk size in embedder tokens."),
    overlap: int = typer.Option(25, "--overlap", help="Tokens shared by consecutive chunks."),
    drop: Optional[List[str]] = typer.Option(None, "--drop", help="Regex of junk paragraphs to drop (repeatable; replaces the defaults)."),
    headings: bool = typer.Option(True, "--headings/--no-headings", help="Prefix each chunk's heading path when embedding."),
    keep_furniture: bool = typer.Option(False, "--keep-furniture", help="Keep page navigation (Next/Previous bars, link lists, breadcrumbs)."),
    as_json: bool = typer.Option(False, "--json"),
):
    """Index DOCS into a knowledge base; re-indexing only re-embeds changed files."""
    from tunelab.errors import TunelabError
    from tunelab.rag import index

    if kb is None and directory is None:
        raise TunelabError("give --kb NAME or --dir FOLDER", where="rag index")
    rep = index(docs, kb, directory=directory, embedder=embedder, size=size, overlap=overlap,
                drop=drop or None, headings=headings, furniture=not keep_furniture, log=None if as_json else typer.echo)
    if as_json:
        _echo_json(rep.to_dict())
    else:
        typer.echo(f"{rep.kb}: {rep.files} files ({rep.added} new, {rep.changed} changed, {rep.unchanged} unchanged, "
                   f"{rep.removed} removed), {rep.chunks_embedded} chunks embedded, {rep.chunks_total} in total, "
                   f"{rep.furniture_dropped} navigation blocks dropped, {rep.seconds:.1f} s")


@app.command("query")
def query_cmd(
    kb: str = typer.Argument(..., help="Knowledge base name (or any label with --dir)."),
    question: str = typer.Argument(...),
    k: int = typer.Option(3, "-k", help="Number of chunks."),
    cutoff: Optional[float] = typer.Option(None, "--cutoff", help="Minimum cosine similarity."),
    hybrid: bool = typer.Option(False, "--hybrid", help="Fuse BM25 and vector rankings."),
    directory: Optional[Path] = KB_DIR,
    as_json: bool = typer.Option(False, "--json"),
):
    """Ranked chunks with scores and sources."""
    from tunelab.rag import query

    hits = query(None if directory else kb, question, k=k, cutoff=cutoff, hybrid=hybrid, directory=directory)
    if as_json:
        _echo_json([h.to_dict() for h in hits])
        return
    if not hits:
        typer.echo("no chunk matched" + (f" above similarity {cutoff}" if cutoff is not None else ""))
    for h in hits:
        typer.echo(f"[{h.rank}] score {h.score:.3f}  similarity {h.similarity:.3f}  {h.cite()}  "
                   f"(chars {h.start}-{h.end})")
        snippet = " ".join(h.text.split())
        typer.echo("    " + (snippet[:300] + ("..." if len(snippet) > 300 else "")))


@app.command("ask")
def ask_cmd(
    kb: str = typer.Argument(...),
    question: str = typer.Argument(...),
    run: Optional[Path] = typer.Option(None, "--run", help="Run directory (fine-tuned model + its template)."),
    model: Optional[str] = typer.Option(None, "--model", help="Model alias/folder/hub id (default smollm2-135m-instruct)."),
    k: int = typer.Option(3, "-k"),
    cutoff: Optional[float] = typer.Option(None, "--cutoff"),
    hybrid: bool = typer.Option(False, "--hybrid"),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens"),
    directory: Optional[Path] = KB_DIR,
    as_json: bool = typer.Option(False, "--json"),
):
    """Answer from the knowledge base with numbered citations [1], [2]."""
    from tunelab.rag import ask

    if run is not None:
        from tunelab.runs.kinds import GENERATIVE_TASKS, require_run

        require_run(run, GENERATIVE_TASKS, "rag ask", where="--run")
    ans = ask(None if directory else kb, question, run=run, model=model, k=k, cutoff=cutoff, hybrid=hybrid,
              directory=directory, max_new_tokens=max_new_tokens)
    if as_json:
        _echo_json(ans.to_dict())
    else:
        typer.echo(ans.format())


@app.command("eval")
def eval_cmd(
    kb: str = typer.Argument(...),
    questions: Path = typer.Option(..., "--questions", help="qa.jsonl: question, source[, section] per line."),
    k: int = typer.Option(3, "-k"),
    hybrid: bool = typer.Option(False, "--hybrid"),
    per_question: bool = typer.Option(False, "--per-question", help="Include each question's rank and top hits."),
    directory: Optional[Path] = KB_DIR,
):
    """recall@k and MRR against gold sources; prints JSON."""
    from tunelab.rag import evaluate

    res = evaluate(None if directory else kb, questions, k=k, hybrid=hybrid, directory=directory)
    if not per_question:
        res.pop("per_question")
    _echo_json(res)
