"""The Studio's JSON routes (`/studio/api/...`; its HTML pages and fragments are not JSON)."""

from __future__ import annotations

from typing import Any, Literal

from tunelab.serve.protocol.common import Response


class WhoAmI(Response):
    tenant: str
    auth: bool


class RunSummary(Response):
    name: str
    status: Literal["finished", "incomplete"]
    task: str
    model: str
    method: str
    final_valid_loss: int | float | None = None
    steps: int | None = None
    mtime: int


class RunList(Response):
    object: Literal["list"] = "list"
    data: list[RunSummary]


class Metrics(Response):
    """The curves of a run: [step, loss] pairs; `base`: the base model's validation loss at step 0 (or none)."""

    name: str
    train: list[list[int | float]]
    valid: list[list[int | float]]
    base: list[list[int | float]] = []


class ExportedFile(Response):
    name: str
    bytes: int
    url: str


class FileColumns(Response):
    """A file's column mapping, as set (serve/studio/columns_view.py): the file is then `processed`."""

    id: str
    object: Literal["file.columns"] = "file.columns"
    status: str
    kind: str | None = None
    columns: dict[str, str]


class ExportResult(Response):
    """What an export wrote; a target adds its own details (extra keys)."""

    to: str
    quant: str | None = None
    out: str
    files: list[ExportedFile]
    notes: list[str]


Number = int | float  # kept as given: an int stays an int in the JSON


class MemoryRow(Response):
    component: str
    bytes: Number
    how: str


class MemoryEstimate(Response):
    model: str
    method: str
    batch: int
    seq: int
    r: int
    device: str
    total: Number
    available: Number | None = None
    fits: bool | None = None
    params: Number
    trainable: Number
    rows: list[MemoryRow]


class SplitStats(Response):
    name: str
    count: int
    mean: int | float
    max: int
    truncated: int
    learned_tokens: int
    bins: list[list[int]]


class InspectExample(Response):
    where: str
    tokens: list[list[Any]]  # [text, learned, n_tokens] pieces
    shown: int
    total: int


class InspectReport(Response):
    file: str
    filename: str
    kind: str | None = None
    task: str
    model: str
    template: str
    max_length: int
    splits: list[SplitStats]
    example: InspectExample | None = None
    warnings: list[str]
