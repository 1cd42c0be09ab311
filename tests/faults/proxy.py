"""A TCP proxy between controllers and the broker that partitions, delays and resets.

A real partition does not drop bytes from inside a TCP stream (TCP retransmits them);
it holds them until the path heals or one side gives up. So:

- ``hold()``: stop forwarding in both directions (nothing is read; senders back up);
  ``release()`` forwards what was held.
- ``reset()``: close every proxied connection at once (a NAT entry or a link lost);
  with ``refuse=True`` new connections are closed on arrival until ``release()``.
- ``delay``: seconds added before each forwarded chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from tests.fixtures import free_port


class TcpProxy:
    host = "127.0.0.1"

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port(self.host)
        self.delay = 0.0
        self.refusing = False
        self.connections = 0
        self._flowing: asyncio.Event
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tcp-proxy", daemon=True)
        self._thread.start()
        self._ready.wait(10)

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._flowing = asyncio.Event()
        self._flowing.set()
        server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, self.host, self.port)
        )
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.connections += 1
        self._writers |= {writer, up_writer}
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        self._writers -= {writer, up_writer}

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await self._flowing.wait()
                chunk = await reader.read(65536)
                if not chunk:
                    break
                await self._flowing.wait()
                if self.delay:
                    await asyncio.sleep(self.delay)
                writer.write(chunk)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                writer.close()

    def _call(self, action: object) -> None:
        done = threading.Event()

        def run() -> None:
            action()  # type: ignore[operator]
            done.set()

        self._loop.call_soon_threadsafe(run)
        done.wait(5)

    def hold(self) -> None:
        self._call(self._flowing.clear)

    def release(self) -> None:
        self.refusing = False
        self._call(self._flowing.set)

    def reset(self, *, refuse: bool = False) -> None:
        self.refusing = refuse

        def close_all() -> None:
            for writer in list(self._writers):
                writer.transport.abort()
            self._writers.clear()

        self._call(close_all)

    def close(self) -> None:
        self.reset(refuse=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
