"""`POST /v1/fine_tuning/alpha/graders/run` and `/validate`: OpenAI's grader endpoints over train/graders.

    validate  the grader checked (validate_grader): 200 {grader} as sent, or 400 naming the bad field
    run       the grader on one sample: reward, metadata (errors flags, execution_time, name, type,
              scores, sampled_model_name, token_usage), sub_rewards (multi), token usage per judge model

Services the graders get here (GradeContext): text_similarity cosine embeds with the server's MiniLM
(serve/embeddings.py, the one /v1/embeddings loads); score_model calls OPENAI_BASE_URL / OPENAI_API_KEY
when the server's environment sets them, else this server itself, at the address the request came to,
with the caller's key (the judge is then one of the models it serves); python graders run in a child
process, 10 s a grade. A grade that fails scores 0 with its flag set (a 200, as OpenAI answers).
"""

from __future__ import annotations

import os
import time

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from tunelab.errors import TunelabError
from tunelab.serve.auth import current_tenant
from tunelab.serve.errors import APIError
from tunelab.serve.protocol.graders import (GraderErrors, GraderRunMetadata, GraderRunRequest, GraderRunResponse,
                                            GraderValidateRequest, GraderValidateResponse)
from tunelab.train.graders import GradeContext, run_grader, validate_grader

EMBEDDER = "minilm-l6"
JUDGE_TIMEOUT_S = 120.0


def _check(grader: dict) -> None:
    try:
        validate_grader(grader, "grader")
    except TunelabError as e:
        raise APIError(400, e.one_line(), param=e.where, code="invalid_grader") from None


def _context(request: Request) -> GradeContext:
    """Embedder and judge client for this request (see the module docstring)."""
    from tunelab.serve.embeddings import embedder

    def embed(texts):
        return embedder(EMBEDDER).encode(list(texts))

    base_url = None if os.environ.get("OPENAI_BASE_URL") else str(request.base_url).rstrip("/") + "/v1"
    auth = request.headers.get("authorization", "")
    key = auth.split(" ", 1)[1].strip() if auth.lower().startswith("bearer ") else None

    def client():
        try:
            import openai
        except ImportError:
            raise APIError(400, "score_model graders need the openai package on the server", param="grader",
                           code="invalid_grader") from None
        if base_url is None:
            return openai.OpenAI(timeout=JUDGE_TIMEOUT_S, max_retries=0)
        return openai.OpenAI(base_url=base_url, api_key=key or "none", timeout=JUDGE_TIMEOUT_S, max_retries=0)

    return GradeContext(embed=embed, client=client)


def run(body: GraderRunRequest, ctx: GradeContext) -> GraderRunResponse:
    """One grade in OpenAI's GraderRunResponse shape (blocking: run it in a worker thread)."""
    grader = body.grader
    _check(grader)
    t0 = time.perf_counter()
    try:
        g = run_grader(grader, [body.model_sample], [body.item or {}], ctx)[0]
    except TunelabError as e:
        raise APIError(400, e.one_line(), param="grader", code="invalid_grader") from None
    total = sum(int(u.get("total_tokens", 0)) for u in g.token_usage.values())
    name = str(grader.get("name", ""))
    meta = GraderRunMetadata(
        errors=GraderErrors(**g.errors), execution_time=time.perf_counter() - t0, name=name,
        sampled_model_name=g.sampled_model_name, scores=dict(g.sub) if g.sub else {name: g.score},
        token_usage=total if g.token_usage else None, type=grader["type"])
    return GraderRunResponse(reward=g.score, metadata=meta, sub_rewards=dict(g.sub),
                             model_grader_token_usage_per_model=g.token_usage)


# ---- routes (serve/routes.py mounts them) ------------------------------------------------------------------
async def run_grader_route(body: GraderRunRequest, request: Request,
                           tenant: str = Depends(current_tenant)) -> GraderRunResponse:
    return await run_in_threadpool(run, body, _context(request))


async def validate_grader_route(body: GraderValidateRequest, request: Request,
                                tenant: str = Depends(current_tenant)) -> GraderValidateResponse:
    await run_in_threadpool(_check, body.grader)
    return GraderValidateResponse(grader=body.grader)
