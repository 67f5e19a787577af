"""`/v1/files`: training files, shaped like OpenAI's Files API.

    POST   /v1/files                 multipart: file, purpose=fine-tune -> the file object
    GET    /v1/files                 ?purpose, limit (10000), order (desc | asc), after
    GET    /v1/files/{id}            the file object
    GET    /v1/files/{id}/content    the bytes as uploaded
    DELETE /v1/files/{id}            {id, object: "file", deleted: true}

An upload is copied to `files_dir/.tmp-<id><suffix>` (at most `state.upload_limit` bytes, else
413), read by the data layer exactly as `tunelab train` reads a data file, then renamed to
`files_dir/<id>` (atomic) and recorded (`ServingFiles`; the routes at the end are thin). What the data layer reads decides the file's `kind`:

    sft         chat examples (messages, sharegpt, prompt/completion, alpaca)  -> supervised jobs
    preference  {"prompt", "chosen", "rejected"}                              -> dpo jobs
    openai_dpo  OpenAI's DPO lines {"input": {"messages"}, "preferred_output",
                "non_preferred_output"}, read as preference pairs             -> dpo jobs
    prompts     OpenAI's RFT lines: `messages` ending with a user turn, with    -> reinforcement jobs
                any other fields, read as task grpo reads them (the fields go to
                the grader)

A file the data layer refuses is kept with `status: error` and `status_details` = the data
layer's message with the upload's name for the server's path ("train.jsonl:3: invalid JSON ...");
a job refuses it, until its fields are mapped (`ServingFiles.map_columns`, the Studio's column-mapping
step: {our field: the file's}, e.g. {prompt: question, completion: answer}): the file is checked again with
that mapping and, when every record reads, becomes `processed` with it as `data_columns`, which a job
from it writes as its run's `data.columns` (job_runner.job_config). The file name is a display name: `..` anywhere is refused, a directory part is
dropped (names.safe_filename), and the suffix must be a data file's (.jsonl, .json, .csv, .tsv,
.parquet).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from fastapi import Depends, Request
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from tunelab.data.formats import apply_columns, to_examples
from tunelab.data.sources import DATA_SUFFIXES, Record, read_records
from tunelab.errors import TunelabError
from tunelab.serve import jobs_db
from tunelab.serve.auth import current_tenant
from tunelab.serve.errors import APIError, not_found
from tunelab.serve.names import safe_filename
from tunelab.serve.private import open_private, private_dir
from tunelab.serve.protocol.files import PURPOSES, FileDeleted, FileList, FileObject

_CHUNK = 1 << 20


def startup(state) -> None:
    """Create the files folder (0700) and tables; drop uploads a killed server left half-copied."""
    private_dir(state.files_dir)
    jobs_db.conn(state.db_path)
    for p in state.files_dir.glob(".tmp-*"):
        p.unlink(missing_ok=True)


# ---- what the data layer reads -----------------------------------------------------------------------------
def openai_dpo_record(rec: Record) -> Record:
    """OpenAI's DPO line as tunelab's preference record: input.messages -> prompt,
    preferred_output -> chosen, non_preferred_output -> rejected (replies: one assistant message)."""
    d = rec.data
    msgs = d.get("input", {}).get("messages") if isinstance(d.get("input"), dict) else None
    if msgs is None:
        raise TunelabError("field 'input' must be an object with 'messages'", where=rec.where)
    return Record({"prompt": msgs, "chosen": d.get("preferred_output"), "rejected": d.get("non_preferred_output")},
                  rec.where)


def file_kind(data: dict) -> str:
    """sft | preference | openai_dpo | prompts, from the first record's fields."""
    if "preferred_output" in data or "non_preferred_output" in data:
        return "openai_dpo"
    if "chosen" in data or "rejected" in data:
        return "preference"
    msgs = data.get("messages")
    if isinstance(msgs, list) and msgs and isinstance(msgs[-1], dict) and msgs[-1].get("role") == "user":
        return "prompts"
    return "sft"


def check_prompts(records: list[Record]) -> None:
    """Every record a prompt row as task grpo reads it, all with the first one's other fields."""
    from tunelab.train.recipes.grpo import _row

    rows = [_row(r, i) for i, r in enumerate(records)]
    keys = set(rows[0].columns)
    for r in rows:
        if set(r.columns) != keys:
            raise TunelabError(f"fields {sorted(r.columns)} differ from the first line's {sorted(keys)}", where=r.where,
                               hint="every prompt line needs the same fields (the grader reads them as item.*)")


def check_training_file(path: Path, display: str, columns: dict[str, str] | None = None
                        ) -> tuple[str | None, str | None]:
    """(kind, None) when every record of `path` (its fields renamed by `columns`, as data.columns does)
    is an example of one kind; (None, message) else, the message naming `display` (and the line) where
    the data layer named `path`."""
    try:
        records = read_records(path, field="file")
        kind = file_kind(apply_columns(records[0], columns).data)
        if kind == "prompts":
            check_prompts([apply_columns(r, columns) for r in records])
            return kind, None
        if kind == "openai_dpo" and not columns:
            records = [openai_dpo_record(r) for r in records]
        to_examples(records, "auto", "sft" if kind == "sft" else "dpo", columns=columns or None)
    except TunelabError as e:
        return None, e.one_line().replace(str(path), display)
    return kind, None


def materialize(state, file_row: dict, dest_stem: Path) -> Path:
    """The file's bytes where the data layer reads them, `dest_stem` + its suffix (a hard link, or a
    copy); an openai_dpo file is written as preference lines (.jsonl). Returns the path."""
    src = state.files_dir / file_row["id"]
    if not src.is_file():
        raise TunelabError(f"the bytes of file {file_row['id']} are gone", where=file_row["id"])
    suffix = Path(file_row["filename"]).suffix.lower()
    if file_row["kind"] == "openai_dpo":
        dest = dest_stem.with_suffix(".jsonl")
        tmp_in = dest_stem.with_name(dest_stem.name + ".openai" + suffix)
        shutil.copyfile(src, tmp_in)
        recs = [openai_dpo_record(r) for r in read_records(tmp_in, field="file")]
        tmp_in.unlink()
        dest.write_text("".join(json.dumps(r.data) + "\n" for r in recs), encoding="utf-8")
        return dest
    dest = dest_stem.with_suffix(suffix)
    dest.unlink(missing_ok=True)
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)
    return dest


# ---- storing an upload -------------------------------------------------------------------------------------
def display_name(raw) -> str:
    if not isinstance(raw, str) or not raw:
        raise APIError(400, "the uploaded file has no name", param="file", code="invalid_name")
    if ".." in raw:
        raise APIError(400, f"invalid file name '{raw}': '..' is not allowed", param="file", code="invalid_name")
    name = safe_filename(raw)
    if Path(name).suffix.lower() not in DATA_SUFFIXES:
        raise APIError(400, f"invalid file name '{name}': a training file is {', '.join(DATA_SUFFIXES)}",
                       param="file", code="invalid_file_format")
    return name


class ServingFiles:
    """The files of one tenant: upload (copy, check, rename, record), list, retrieve, content, delete."""

    def __init__(self, state, tenant: str):
        self.state, self.tenant = state, tenant

    def _db(self):
        return jobs_db.conn(self.state.db_path)

    def upload(self, stream, raw_name, purpose) -> FileObject:
        """Copy, check, rename and record one upload (see the module docstring; blocking)."""
        state = self.state
        if not purpose:
            raise APIError(400, "Missing required parameter: 'purpose'", param="purpose",
                           code="missing_required_parameter")
        if purpose not in PURPOSES:
            raise APIError(400, f"purpose '{purpose}' is not served here: use {', '.join(PURPOSES)}", param="purpose",
                           code="invalid_value")
        name = display_name(raw_name)
        fid = jobs_db.new_id("file")
        private_dir(state.files_dir)
        tmp = state.files_dir / f".tmp-{fid}{Path(name).suffix.lower()}"
        try:
            size = 0
            with open_private(tmp) as out:  # 0600
                while chunk := stream.read(_CHUNK):
                    size += len(chunk)
                    if size > state.upload_limit:
                        raise APIError(413, f"the file is larger than the server's limit of {state.upload_limit} "
                                            "bytes", param="file", code="file_too_large")
                    out.write(chunk)
            kind, details = check_training_file(tmp, name)
            os.replace(tmp, state.files_dir / fid)
        finally:
            tmp.unlink(missing_ok=True)
        row = {"id": fid, "tenant": self.tenant, "bytes": size, "created_at": jobs_db.now(), "filename": name,
               "purpose": purpose, "status": "processed" if kind else "error", "status_details": details,
               "kind": kind}
        try:
            jobs_db.insert_file(self._db(), row)
        except Exception:
            (state.files_dir / fid).unlink(missing_ok=True)
            raise
        return FileObject.from_row(row)

    def records(self, file_id: str) -> tuple[dict, list[Record]]:
        """(the file's row, its records as the data layer reads them, fields not renamed); a file the
        data layer cannot read at all (not JSON, empty) is a 400 with its message."""
        row = jobs_db.get_file(self._db(), self.tenant, file_id)
        with tempfile.TemporaryDirectory(prefix="columns-") as tmp:
            path = None
            try:
                path = materialize(self.state, {**row, "kind": None}, Path(tmp) / "data")
                return row, read_records(path, field="file")
            except TunelabError as e:
                msg = e.one_line().replace(str(path), row["filename"]) if path is not None else e.one_line()
                raise APIError(400, msg, param="file", code="invalid_file") from None

    def map_columns(self, file_id: str, columns: dict[str, str]) -> dict:
        """Check the file again with `columns` ({our field: the file's}); when every record reads, the file
        is `processed` with them (its `data_columns`), else a 400 with the data layer's message and the
        file is left as it was. A file read without a mapping is not remapped (409)."""
        c = self._db()
        row = jobs_db.get_file(c, self.tenant, file_id)
        if row["status"] == "processed" and not row.get("data_columns"):
            raise APIError(409, f"{row['filename']} is read as it is ({row['kind']}): it needs no column mapping",
                           param="file", code="file_needs_no_mapping")
        with tempfile.TemporaryDirectory(prefix="columns-") as tmp:
            path = materialize(self.state, {**row, "kind": None}, Path(tmp) / "data")
            kind, details = check_training_file(path, row["filename"], columns)
        if kind is None:
            raise APIError(400, details, param="columns", code="invalid_file")
        jobs_db.set_file(c, self.tenant, file_id, status="processed", status_details=None, kind=kind,
                         data_columns=columns)
        return jobs_db.get_file(c, self.tenant, file_id)

    def list(self, purpose: str | None, limit: int, order: str, after: str | None) -> FileList:
        if order not in ("asc", "desc"):
            raise APIError(400, f"order must be 'asc' or 'desc', got '{order}'", param="order")
        where, args = "tenant = ?", (self.tenant,)
        if purpose:
            where, args = where + " AND purpose = ?", (self.tenant, purpose)
        rows, more = jobs_db.page(self._db(), "files", where, args, after, limit, order == "desc", kind="file")
        return FileList.of([FileObject.from_row(r) for r in rows], more)

    def retrieve(self, file_id: str) -> FileObject:
        return FileObject.from_row(jobs_db.get_file(self._db(), self.tenant, file_id))

    def content(self, file_id: str) -> tuple[Path, str]:
        """(the bytes' path, the display name)."""
        row = jobs_db.get_file(self._db(), self.tenant, file_id)
        path = self.state.files_dir / row["id"]
        if not path.is_file():
            raise not_found("file", file_id)
        return path, row["filename"]

    def delete(self, file_id: str) -> FileDeleted:
        c = self._db()
        jobs_db.get_file(c, self.tenant, file_id)
        jobs_db.delete_file(c, self.tenant, file_id)  # the row first: no row ever names missing bytes
        (self.state.files_dir / file_id).unlink(missing_ok=True)
        return FileDeleted(id=file_id, deleted=True)


# ---- routes (serve/routes.py mounts them) ------------------------------------------------------------------
def _files(request: Request, tenant: str) -> ServingFiles:
    return ServingFiles(request.app.state.tl, tenant)


async def create_file(request: Request, tenant: str = Depends(current_tenant)) -> FileObject:
    """multipart: file, purpose (a form, not JSON: read here, checked by ServingFiles.upload)."""
    state = request.app.state.tl
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > state.upload_limit + _CHUNK:  # the multipart framing
        raise APIError(413, f"the upload is larger than the server's limit of {state.upload_limit} bytes",
                       param="file", code="file_too_large")
    try:
        form = await request.form()
    except Exception as e:  # not multipart, a broken body: python-multipart's errors vary
        raise APIError(400, f"could not read the multipart form: {e}", code="invalid_body") from None
    try:
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise APIError(400, "Missing required parameter: 'file' (a multipart file part)", param="file",
                           code="missing_required_parameter")
        return await run_in_threadpool(_files(request, tenant).upload, upload.file, upload.filename,
                                       form.get("purpose"))
    finally:
        await form.close()


def list_files(request: Request, purpose: str | None = None, limit: int = 10000, order: str = "desc",
               after: str | None = None, tenant: str = Depends(current_tenant)) -> FileList:
    return _files(request, tenant).list(purpose, limit, order, after)


def retrieve_file(request: Request, file_id: str, tenant: str = Depends(current_tenant)) -> FileObject:
    return _files(request, tenant).retrieve(file_id)


def file_content(request: Request, file_id: str, tenant: str = Depends(current_tenant)) -> FileResponse:
    path, name = _files(request, tenant).content(file_id)
    return FileResponse(path, media_type="application/octet-stream", filename=name)


def delete_file(request: Request, file_id: str, tenant: str = Depends(current_tenant)) -> FileDeleted:
    return _files(request, tenant).delete(file_id)
