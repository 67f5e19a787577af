"""What one server process knows: where its data lives and what it serves (`app.state.tl`).

    home/serve.db           keys, tenants, files, jobs, events (serve/db.py)
    home/files/<file-id>    uploaded bytes (written to a temp name, then renamed)
    runs/                   the runs of tenant "default" (--runs DIR, default ./runs)
    runs/.tenants/<t>/      the runs of every other tenant (a run name never starts with '.')

Tenant "default" is also the single tenant of `--no-auth`.
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
class ServeState:
    home: Path
    runs: Path
    base: str = "smollm2-135m-instruct"
    auth: bool = True
    max_adapters: int = 4
    max_tokens_cap: int = 2048
    upload_limit: int = 64 * 2**20
    body_limit: int = 2**20
    rate_per_minute: int = 600
    extra: dict = field(default_factory=dict)
    max_batch: int = 16  # requests the model worker decodes together (serve/batcher.py)
    kb: Path | None = None  # knowledge bases (serve/embeddings.py); None: $TUNELAB_HOME/kb

    @property
    def db_path(self) -> Path:
        return self.home / "serve.db"

    @property
    def files_dir(self) -> Path:
        return self.home / "files"

    def tenant_runs(self, tenant: str) -> Path:
        """The folder of `tenant`'s runs (see the module docstring)."""
        return self.runs if tenant == DEFAULT_TENANT else self.runs / ".tenants" / tenant
