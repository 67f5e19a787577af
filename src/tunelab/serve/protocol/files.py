"""`/v1/files`: the file object, a page of them, a deletion (the upload itself is a multipart form,
read in serve/files_api.py)."""

from __future__ import annotations

from typing import Literal

from tunelab.serve.protocol.common import Deleted, Page, Response

PURPOSES = ("fine-tune",)


class FileObject(Response):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: Literal["uploaded", "processed", "error"]
    status_details: str | None = None
    expires_at: int | None = None

    @classmethod
    def from_row(cls, r: dict) -> FileObject:
        return cls(id=r["id"], bytes=r["bytes"], created_at=r["created_at"], filename=r["filename"],
                   purpose=r["purpose"], status=r["status"], status_details=r["status_details"])


class FileList(Page[FileObject]):
    pass


class FileDeleted(Deleted):
    object: Literal["file"] = "file"
