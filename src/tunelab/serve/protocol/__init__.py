"""The serve protocol layer: pydantic request and response models of every route, in OpenAI's shapes.

    common.py       Request / Response bases, Page[T], Deleted, ErrorResponse, json_body(Model)
    sampling.py     what chat and completions share (sampling fields, unknown-field policy, Usage)
    chat.py         /v1/chat/completions: ChatRequest, ChatCompletion, ChatCompletionChunk
    completions.py  /v1/completions: CompletionRequest, Completion (reply and chunk)
    embeddings.py   /v1/embeddings: EmbeddingRequest, EmbeddingResponse
    models.py       /v1/models: Model, ModelList
    files.py        /v1/files: FileObject, FileList, FileDeleted
    jobs.py         /v1/fine_tuning/jobs: FineTuningJobCreate (its own refusal messages), FineTuningJob,
                    JobEvent, JobCheckpoint and their pages
    knowledge.py    /studio/api/kbs: KnowledgeBase, KnowledgeBaseList, KnowledgeBaseCreated, the deletions
    studio.py       the Studio's other JSON routes

Models only: no route, no state, no I/O. The serving classes (serve/<group>.py) take and return them.
"""

from tunelab.serve.protocol.chat import ChatCompletion, ChatCompletionChunk, ChatRequest, Citation, Message, TextPart
from tunelab.serve.protocol.common import Deleted, ErrorResponse, Page, Request, Response, json_body
from tunelab.serve.protocol.completions import Completion, CompletionRequest
from tunelab.serve.protocol.embeddings import EmbeddingRequest, EmbeddingResponse
from tunelab.serve.protocol.files import FileDeleted, FileList, FileObject
from tunelab.serve.protocol.jobs import (
    CheckpointList,
    EventList,
    FineTuningJob,
    FineTuningJobCreate,
    JobCheckpoint,
    JobEvent,
    JobList,
)
from tunelab.serve.protocol.knowledge import (
    DocumentDeleted,
    KnowledgeBase,
    KnowledgeBaseCreated,
    KnowledgeBaseDeleted,
    KnowledgeBaseList,
)
from tunelab.serve.protocol.models import Model, ModelList
from tunelab.serve.protocol.sampling import StreamOptions, Usage

__all__ = ["ChatCompletion", "ChatCompletionChunk", "ChatRequest", "CheckpointList", "Citation", "Completion",
           "CompletionRequest", "Deleted", "DocumentDeleted", "EmbeddingRequest", "EmbeddingResponse",
           "ErrorResponse", "EventList", "FileDeleted", "FileList", "FileObject", "FineTuningJob",
           "FineTuningJobCreate", "JobCheckpoint", "JobEvent", "JobList", "KnowledgeBase", "KnowledgeBaseCreated",
           "KnowledgeBaseDeleted", "KnowledgeBaseList", "Message", "Model", "ModelList", "Page", "Request",
           "Response", "StreamOptions", "TextPart", "Usage", "json_body"]
