"""``/viewer/<job id>/``: the job's viser server, forwarded through the app's own port.

A Space (or any reverse proxy) exposes one port. viser's web client is one self-contained
``index.html`` that opens its websocket at the page's own URL, path included (``ws://host/viewer/
<job id>``), so forwarding that path's HTTP requests and its websocket to the local viser port is
all it takes; the viewer can then be embedded in an iframe of the Gradio page. The websocket
carries viser's version subprotocol, which is passed through both ways.

The job id in the path is the capability: ids are random (see :mod:`app.jobs`), unknown or
malformed ids get a 404 and never reach the file system.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import httpx
from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import PlainTextResponse, RedirectResponse, Response, StreamingResponse

logger = logging.getLogger(__name__)

PortResolver = Callable[[str], "int | None"]
PASSED_RESPONSE_HEADERS = ("content-type", "content-encoding", "cache-control", "last-modified", "etag")


def mount_viewer_proxy(
    app: FastAPI, resolve_port: PortResolver, prefix: str = "/viewer"
) -> Callable[[], Awaitable[None]]:
    """Add the HTTP and websocket routes of ``prefix/<job id>/...`` to ``app`` (before Gradio is
    mounted at ``/``, so these routes win). ``resolve_port(job_id)`` gives the viser port or None;
    it may block (it can start a viewer), so it runs in a worker thread. Returns the coroutine
    function that closes the HTTP client (call it at shutdown)."""
    client = httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=5.0))

    async def port_for(job_id: str) -> int | None:
        return await asyncio.to_thread(resolve_port, job_id)

    @app.get(prefix + "/{job_id}", include_in_schema=False)
    async def viewer_root(job_id: str, request: Request) -> Response:
        query = f"?{request.url.query}" if request.url.query else ""
        return RedirectResponse(f"{prefix}/{job_id}/{query}", status_code=307)

    @app.get(prefix + "/{job_id}/{path:path}", include_in_schema=False)
    async def viewer_http(job_id: str, path: str, request: Request) -> Response:
        port = await port_for(job_id)
        if port is None:
            return PlainTextResponse("no such viewer", status_code=404)
        headers = {}
        if "accept-encoding" in request.headers:
            headers["accept-encoding"] = request.headers["accept-encoding"]
        upstream = client.build_request(
            "GET", f"http://127.0.0.1:{port}/{path}", headers=headers, params=request.query_params
        )
        try:
            response = await client.send(upstream, stream=True)
        except httpx.HTTPError as err:
            return PlainTextResponse(f"viewer unavailable ({type(err).__name__})", status_code=502)
        passed = {k: v for k, v in response.headers.items() if k.lower() in PASSED_RESPONSE_HEADERS}

        async def body():
            try:
                async for chunk in response.aiter_raw():
                    yield chunk
            finally:
                await response.aclose()

        return StreamingResponse(body(), status_code=response.status_code, headers=passed)

    async def viewer_socket(websocket: WebSocket, job_id: str, path: str = "") -> None:
        import websockets.asyncio.client
        from websockets.exceptions import ConnectionClosed

        port = await port_for(job_id)
        if port is None:
            await websocket.close(code=1008)
            return
        subprotocols = list(websocket.scope.get("subprotocols") or [])
        try:
            upstream = await websockets.asyncio.client.connect(
                f"ws://127.0.0.1:{port}/{path}",
                subprotocols=subprotocols or None,  # type: ignore[arg-type]
                max_size=None,
                compression=None,
                open_timeout=10,
            )
        except (OSError, ConnectionClosed, asyncio.TimeoutError) as err:
            logger.warning("viewer %s: upstream websocket failed (%s)", job_id, err)
            await websocket.close(code=1011)
            return
        await websocket.accept(subprotocol=upstream.subprotocol)

        async def downstream() -> None:
            async for message in upstream:
                if isinstance(message, bytes):
                    await websocket.send_bytes(message)
                else:
                    await websocket.send_text(message)

        async def upstream_pump() -> None:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("bytes") is not None:
                    await upstream.send(message["bytes"])
                elif message.get("text") is not None:
                    await upstream.send(message["text"])

        tasks = [asyncio.create_task(downstream()), asyncio.create_task(upstream_pump())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task
            await upstream.close()
            with contextlib.suppress(BaseException):
                await websocket.close()

    app.add_api_websocket_route(prefix + "/{job_id}", viewer_socket)
    app.add_api_websocket_route(prefix + "/{job_id}/{path:path}", viewer_socket)
    return client.aclose


__all__ = ["mount_viewer_proxy"]
