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


RERANK = typer.Option(False, "--rerank", help="Rerank the 4 x k candidates with a small LLM (log P(yes) that a passage answers; seconds per query on CPU).")
RERANK_MODEL = typer.Option("smollm2-135m-instruct", "--rerank-model", help="Model that judges the candidates for --rerank.")


def _reranker(rerank: bool, model: str):
    """The LLMReranker for `--rerank` (None without it)."""
    if not rerank:
        return None
    from tunelab.rag.rerank import LLMReranker

    return LLMReranker.load(model)


class _RerankedSearch:
    """`ask` retrieves through `rewriter.query` when given one: this adds the reranker to that search
    (or to the plain one)."""

    def __init__(self, rewriter, reranker):
        self.rewriter, self.reranker = rewriter, reranker

    def query(self, kb, question, **kw):
        from tunelab.rag import query

        return (self.rewriter.query if self.rewriter is not None else query)(kb, question, reranker=self.reranker, **kw)


def _rewriter(rewrite: str | None, model: str, generator=None):
    """A QueryRewriter for `--rewrite` (None without it); the kind is checked before any model loads."""
    if rewrite is None:
        return None
    from tunelab.rag.ask import load_generator
    from tunelab.rag.rewrite import QueryRewriter, rewrite_kind

    rewrite_kind(rewrite)
    return QueryRewriter(rewrite, generator if generator is not None else load_generator(None, model))


@app.command("index")
def index_cmd(
    docs: List[Path] = typer.Argument(..., help="Files or folders (txt, md, rst, html, pdf)."),
    kb: Optional[str] = typer.Option(None, "--kb", help="Knowledge base name."),
    directory: Optional[Path] = KB_DIR,
    embedder: str = typer.Option("minilm-l6", "--embedder", help="Embedding model alias, folder or hub id."),
    size: int = typer.Option(256, "--chunk-size", help="Chunk size in embedder tokens."),
    overlap: int = typer.Option(25, "--overlap", help="Tokens shared by consecutive chunks."),
    drop: Optional[List[str]] = typer.Option(None, "--drop", help="Regex of junk paragraphs to drop (repeatable; replaces the defaults)."),
    headings: bool = typer.Option(True, "--headings/--no-headings", help="Prefix each chunk's context when embedding (--no-headings = --context none)."),
    context: Optional[str] = typer.Option(None, "--context", help="What is written above each chunk for embedding and BM25: none, path, title+path (default)."),
    keep_furniture: bool = typer.Option(False, "--keep-furniture", help="Keep page navigation (Next/Previous bars, link lists, breadcrumbs)."),
    sentences: bool = typer.Option(False, "--sentences/--no-sentences", help="Also embed every sentence of each chunk: queries mix the chunk's and its best sentence's similarity (finds answers asked in other words)."),
    as_json: bool = typer.Option(False, "--json"),
):
    """Index DOCS into a knowledge base; re-indexing only re-embeds changed files."""
    from tunelab.errors import TunelabError
    from tunelab.rag import index

    if kb is None and directory is None:
        raise TunelabError("give --kb NAME or --dir FOLDER", where="rag index")
    rep = index(docs, kb, directory=directory, embedder=embedder, size=size, overlap=overlap,
                drop=drop or None, headings=headings, furniture=not keep_furniture, context=context,
                sentences=sentences, log=None if as_json else typer.echo)
    if as_json:
        _echo_json(rep.to_dict())
    else:
        typer.echo(f"{rep.kb}: {rep.files} files ({rep.added} new, {rep.changed} changed, {rep.unchanged} unchanged, "
                   f"{rep.removed} removed), {rep.chunks_embedded} chunks embedded, {rep.chunks_total} in total, "
                   f"{rep.furniture_dropped} navigation blocks dropped"
                   + (f", {rep.sentences} sentence vectors" if rep.sentences is not None else "") + f", {rep.seconds:.1f} s")


@app.command("query")
def query_cmd(
    kb: str = typer.Argument(..., help="Knowledge base name (or any label with --dir)."),
    question: str = typer.Argument(...),
    k: int = typer.Option(3, "-k", help="Number of chunks."),
    cutoff: Optional[float] = typer.Option(None, "--cutoff", help="Minimum cosine similarity."),
    hybrid: bool = typer.Option(False, "--hybrid", help="Fuse BM25 and vector rankings."),
    rerank: bool = RERANK,
    rerank_model: str = RERANK_MODEL,
    rewrite: Optional[str] = typer.Option(None, "--rewrite", help="Rewrite the question with a local model first: multi (rephrasings, rank fusion) or hyde (a hypothetical answer)."),
    rewrite_model: str = typer.Option("smollm2-135m-instruct", "--rewrite-model", help="Model that writes the rewrite."),
    directory: Optional[Path] = KB_DIR,
    as_json: bool = typer.Option(False, "--json"),
):
    """Ranked chunks with scores and sources."""
    from tunelab.rag import query

    rw = _rewriter(rewrite, rewrite_model)
    search = rw.query if rw is not None else query
    hits = search(None if directory else kb, question, k=k, cutoff=cutoff, hybrid=hybrid, directory=directory,
                  reranker=_reranker(rerank, rerank_model))
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
    rerank: bool = RERANK,
    rerank_model: str = RERANK_MODEL,
    rewrite: Optional[str] = typer.Option(None, "--rewrite", help="Rewrite the question with a local model first: multi (rephrasings, rank fusion) or hyde (a hypothetical answer)."),
    rewrite_model: str = typer.Option("smollm2-135m-instruct", "--rewrite-model", help="Model that writes the rewrite."),
    max_new_tokens: int = typer.Option(256, "--max-new-tokens"),
    directory: Optional[Path] = KB_DIR,
    as_json: bool = typer.Option(False, "--json"),
):
    """Answer from the knowledge base with numbered citations [1], [2]."""
    from tunelab.rag import ask

    if run is not None:
        from tunelab.runs.kinds import GENERATIVE_TASKS, require_run

        require_run(run, GENERATIVE_TASKS, "rag ask", where="--run")
    gen = rw = None
    if rewrite is not None:  # the answering model writes the rewrite too when it is the same model
        from tunelab.rag.ask import load_generator

        gen = load_generator(run, model) if run is None and (model or rewrite_model) == rewrite_model else None
        rw = _rewriter(rewrite, rewrite_model, gen)
    if rerank:
        rw = _RerankedSearch(rw, _reranker(rerank, rerank_model))
    ans = ask(None if directory else kb, question, run=run, model=model, k=k, cutoff=cutoff, hybrid=hybrid,
              directory=directory, max_new_tokens=max_new_tokens, generator=gen, rewriter=rw)
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
    rerank: bool = RERANK,
    rerank_model: str = RERANK_MODEL,
    rewrite: Optional[str] = typer.Option(None, "--rewrite", help="Rewrite the question with a local model first: multi (rephrasings, rank fusion) or hyde (a hypothetical answer)."),
    rewrite_model: str = typer.Option("smollm2-135m-instruct", "--rewrite-model", help="Model that writes the rewrite."),
    directory: Optional[Path] = KB_DIR,
):
    """recall@k and MRR against gold sources; prints JSON."""
    from tunelab.rag import evaluate

    res = evaluate(None if directory else kb, questions, k=k, hybrid=hybrid, directory=directory,
                   rewriter=_rewriter(rewrite, rewrite_model), reranker=_reranker(rerank, rerank_model))
    if not per_question:
        res.pop("per_question")
    _echo_json(res)


@app.command("tune")
def tune_cmd(
    kb: str = typer.Argument(..., help="Knowledge base name (or any label with --dir)."),
    directory: Optional[Path] = KB_DIR,
    teacher: Optional[str] = typer.Option(None, "--teacher", help="Local teacher writing the questions: model alias, folder or run (default smollm2-135m-instruct)."),
    base_url: Optional[str] = typer.Option(None, "--base-url", help="OpenAI-compatible teacher endpoint, e.g. http://host:8000/v1."),
    model: Optional[str] = typer.Option(None, "--model", help="Model name sent to --base-url."),
    api_key_env: str = typer.Option("OPENAI_API_KEY", "--api-key-env", help="Env var holding the API key."),
    sources: Optional[List[str]] = typer.Option(None, "--sources", help="Only chunks whose source matches this glob (repeatable), e.g. 'faq/*'."),
    max_chunks: int = typer.Option(0, "--max-chunks", help="At most this many chunks get questions (0 = all)."),
    per_chunk: int = typer.Option(1, "--questions-per-chunk", help="Questions the teacher writes per chunk."),
    holdout: float = typer.Option(0.2, "--holdout", help="Fraction of the chunks whose questions are held out."),
    epochs: int = typer.Option(1, "--epochs"),
    batch_size: int = typer.Option(32, "--batch-size", help="Pairs per step (the in-batch negatives)."),
    lr: float = typer.Option(2e-5, "--lr"),
    k: int = typer.Option(3, "-k", help="recall@k reported on the held-out questions."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the KB's tuned embedder."),
    keep_if_worse: bool = typer.Option(False, "--keep-if-worse", help="Install even if held-out recall drops."),
    as_json: bool = typer.Option(False, "--json"),
):
    """Fine-tune the KB's embedder on questions a teacher writes about its chunks, then re-embed the KB."""
    from tunelab.errors import TunelabError
    from tunelab.rag.tune import TuneOptions, tune

    if teacher is not None and base_url is not None:
        raise TunelabError("give one teacher", where="--teacher/--base-url",
                           hint="--teacher smollm2-135m-instruct (local) or --base-url URL --model NAME (remote)")
    if base_url is not None:
        from tunelab.cli.data import endpoint_key
        from tunelab.synth.teachers import OpenAITeacher

        key = endpoint_key(model, api_key_env)
        t = OpenAITeacher(base_url, model, key, max_tokens=96, temperature=0.7)
    else:
        t = teacher or "smollm2-135m-instruct"
    opts = TuneOptions(sources=sources or None, max_chunks=max_chunks, per_chunk=per_chunk, holdout=holdout,
                       epochs=epochs, batch_size=batch_size, lr=lr, k=k, overwrite=overwrite,
                       keep_if_worse=keep_if_worse)
    rep = tune(None if directory else kb, directory=directory, teacher=t, options=opts,
               log=None if as_json else typer.echo)
    if as_json:
        _echo_json(rep.to_dict())
        return
    key = f"recall@{rep.k}"
    typer.echo(f"{rep.chunks_with_questions} chunks with questions ({rep.train_pairs} training pairs, "
               f"{rep.heldout_questions} held-out questions); held-out {key} {rep.before.get(key, '?')} -> "
               f"{rep.after[key]}, MRR {rep.before.get('mrr', '?')} -> {rep.after['mrr']}; "
               + (f"installed {rep.embedder_dir}" if rep.installed else "not installed (the KB is unchanged)"))


@app.command("fusion")
def fusion_cmd(
    kb: str = typer.Argument(...),
    questions: Path = typer.Option(..., "--questions", help="Held-out qa.jsonl (question, source[, section]; or chunk_id)."),
    k: int = typer.Option(3, "-k"),
    directory: Optional[Path] = KB_DIR,
    sentence_weight: bool = typer.Option(False, "--sentence-weight", help="On a KB indexed with --sentences, fit the sentence weight too."),
):
    """Fit the KB's hybrid weight on held-out questions (never below vectors alone on them); prints JSON."""
    from tunelab.rag.fusion import fit_fusion

    _echo_json(fit_fusion(None if directory else kb, questions, k=k, directory=directory,
                          sentence_weight=sentence_weight))
