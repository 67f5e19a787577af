"""A whole (non-streamed) reply stops being made when its client leaves.

    return await until_gone(request, ServingChat(state).create(tenant, body))

runs the route's work and, beside it, waits for the client's `http.disconnect`. If the client goes
first, the work is cancelled: a generation's `pieces()` then cancels its row on the model worker and
frees its adapter, as a closed stream does (serve/generation.py), and the reply is a bare 499 that no
one reads. A streamed reply is returned at once (its StreamingResponse watches the connection itself).
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.requests import Request
from starlette.responses import Response

CLIENT_GONE = 499  # nginx's "client closed request"


async def _gone(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def until_gone(request: Request, work):
    """The result of awaiting `work`, or a 499 once the client has disconnected (module docstring)."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_gone(request.receive))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):  # no one is left to tell
            await task
        return Response(status_code=CLIENT_GONE)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
