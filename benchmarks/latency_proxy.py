"""A TCP proxy on 127.0.0.1 that adds a fixed one-way delay in each direction.

Owns only the forwarding: every chunk read is stamped with its arrival time and written
``delay`` seconds later, in order, so the round trip grows by ``2 * delay`` while bandwidth
stays unlimited (chunks in flight overlap; nothing sleeps per byte). Each direction holds at
most ``MAX_CHUNKS_IN_FLIGHT`` chunks: a reader waits for the writer rather than buffering
without bound. It knows nothing about POP3 or TLS (the bytes pass through untouched).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

CHUNK = 256 * 1024
MAX_CHUNKS_IN_FLIGHT = 256
_EOF = b""


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    """Forward one direction: read, stamp, and let a second task write each chunk on time."""
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(MAX_CHUNKS_IN_FLIGHT)
    loop = asyncio.get_running_loop()

    async def deliver() -> None:
        while True:
            due, chunk = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if chunk == _EOF:
                with contextlib.suppress(OSError):
                    writer.write_eof()
                return
            writer.write(chunk)
            await writer.drain()

    sender = asyncio.create_task(deliver())
    try:
        while True:
            chunk = await reader.read(CHUNK)
            await queue.put((loop.time() + delay, chunk))
            if chunk == _EOF:
                break
        await sender
    except (OSError, asyncio.IncompleteReadError):
        sender.cancel()
    finally:
        if not sender.done():
            sender.cancel()


class LatencyProxy:
    """Listen on 127.0.0.1 (``port`` once started) and forward to ``target`` with a delay."""

    def __init__(self, target_host: str, target_port: int, one_way_delay: float) -> None:
        self.target = (target_host, target_port)
        self.delay = one_way_delay
        self.host = "127.0.0.1"
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None

    def start(self) -> None:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result()
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            # Let every connection's finally close its sockets before the loop stops: a
            # transport closed only by garbage collection warns (ResourceWarning).
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._server is not None:
                await self._server.wait_closed()
            for _ in range(3):
                await asyncio.sleep(0)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    async def _listen(self) -> asyncio.Server:
        return await asyncio.start_server(self._connection, self.host, 0)

    async def _connection(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.close()
            return
        try:
            await asyncio.gather(
                _pump(client_reader, server_writer, self.delay),
                _pump(server_reader, client_writer, self.delay),
            )
        except asyncio.CancelledError:
            # stop() cancels connections still delivering (a client that closed without
            # waiting for its last reply): end quietly, or asyncio logs a traceback for each.
            pass
        finally:
            for writer in (client_writer, server_writer):
                writer.close()
            for writer in (client_writer, server_writer):
                with contextlib.suppress(OSError, asyncio.CancelledError):
                    await writer.wait_closed()


@contextlib.contextmanager
def latency_proxy(host: str, port: int, one_way_delay: float) -> Iterator[LatencyProxy]:
    """A running proxy for the ``with`` block."""
    proxy = LatencyProxy(host, port, one_way_delay)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
