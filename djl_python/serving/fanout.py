"""Several engine requests answered as one HTTP response (a completions ``prompt`` list).

``submit(engine, requests, request_id)`` is what ``http_common.serve`` streams:
one ``AsyncEngine.generate`` for a single request (its id is the HTTP request's),
else one per request (``api.openai_render.sub_request_id``) merged into one
stream of outputs in the order they arrive. Every request is admitted before
the first output is yielded, so a refusal of any of them (400, 503) is the
response's status; closing the merged stream closes, and so aborts, every
request that has not finished.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import AsyncIterator, Sequence, Union

from djl_python.api.openai_render import sub_request_id
from djl_python.api.prompt import EngineRequest
from djl_python.engine.request import RequestOutput
from djl_python.serving.async_engine import AsyncEngine


def submit(engine: AsyncEngine, requests: Union[EngineRequest, Sequence[EngineRequest]],
           request_id: str) -> AsyncIterator[RequestOutput]:
    if isinstance(requests, EngineRequest):
        return engine.generate(requests.prompt_ids, requests.params, request_id)
    if len(requests) == 1:
        return engine.generate(requests[0].prompt_ids, requests[0].params, request_id)
    return _merged(engine, requests, request_id)


async def _merged(engine: AsyncEngine, requests: Sequence[EngineRequest],
                  request_id: str) -> AsyncIterator[RequestOutput]:
    streams = [engine.generate(r.prompt_ids, r.params, sub_request_id(request_id, i))
               for i, r in enumerate(requests)]
    queue: asyncio.Queue = asyncio.Queue()
    tasks: list[asyncio.Task] = []

    async def pump(stream: AsyncIterator[RequestOutput]) -> None:
        try:
            async for out in stream:
                queue.put_nowait(out)
        except Exception as err:  # noqa: BLE001 - handed to the consumer, which raises it
            queue.put_nowait(err)

    try:
        firsts = [await stream.__anext__() for stream in streams]  # admission of every prompt first
        running = [stream for stream, first in zip(streams, firsts) if not first.finished]
        for first in firsts:
            yield first
        tasks = [asyncio.create_task(pump(stream)) for stream in running]
        remaining = len(tasks)
        while remaining:
            item = await queue.get()
            if isinstance(item, BaseException):
                raise item
            remaining -= item.finished
            yield item
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
        for stream in streams:
            await stream.aclose()  # type: ignore[attr-defined]  # aborts what has not finished
