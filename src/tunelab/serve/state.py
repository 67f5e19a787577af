"""What one server process knows: where its data lives, what it serves, and what it runs
(`app.state.tl`, an `AppState`; every field typed, no grab-bag dict).

    home/serve.db           keys, tenants, files, jobs, events (serve/db.py)
    home/files/<file-id>    uploaded bytes (written to a temp name, then renamed)
    runs/                   the runs of tenant "default" (--runs DIR, default ./runs)
    runs/.tenants/<t>/      the runs of every other tenant (a run name never starts with '.')

Tenant "default" is also the single tenant of `--no-auth`.

The runtime fields are set by the app and its groups, never by a request:

    pool                 the model pool (serve/model_pool.py), made at startup unless given
    upstream             a vLLM server (serve/vllm.py): the inference routes are forwarded to it
    jobs_runner          the job runner (serve/job_runner.py), started with the jobs group
    rate_limiter         the per-key limiter (serve/auth.py), made on first use
    jobs_max_concurrent  workers running at once (1; 0 pauses the queue)
    job_overrides        `key=value` config overrides applied to every job
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_TENANT = "default"


def serve_home() -> Path:
    from tunelab.models.registry import tunelab_home

    return Path(os.environ.get("TUNELAB_SERVE_HOME", tunelab_home() / "serve"))


@dataclass
class AppState:
    # The types of the runtime fields are named, not imported: those modules import this one.
    home: Path
    runs: Path
    base: str = "smollm2-135m-instruct"
    auth: bool = True
    max_adapters: int = 4
    max_tokens_cap: int = 2048
    upload_limit: int = 64 * 2**20
    body_limit: int = 2**20
    rate_per_minute: int = 600
    max_batch: int = 16  # requests the model worker decodes together (serve/batcher.py)
    weights: str = "auto"  # the decode engine's weights (infer/engine_choice.serving_engine)
    kb: Path | None = None  # knowledge bases (serve/embeddings.py); None: $TUNELAB_HOME/kb
    jobs_max_concurrent: int = 1
    job_overrides: list[str] = field(default_factory=list)
    pool: ModelPool | None = None  # noqa: F821
    upstream: Upstream | None = None  # noqa: F821
    jobs_runner: JobRunner | None = None  # noqa: F821
    rate_limiter: RateLimiter | None = None  # noqa: F821

    @property
    def db_path(self) -> Path:
        return self.home / "serve.db"

    @property
    def files_dir(self) -> Path:
        return self.home / "files"

    def tenant_runs(self, tenant: str) -> Path:
        """The folder of `tenant`'s runs (see the module docstring)."""
        return self.runs if tenant == DEFAULT_TENANT else self.runs / ".tenants" / tenant


ServeState = AppState  # the name it had: the CLI, benchmarks and tests build it by that name too
