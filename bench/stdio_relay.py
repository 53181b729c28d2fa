"""A do-nothing stdio relay, the floor under any stdio MCP gateway written in Python: starts COMMAND and copies
lines between its own stdin/stdout and the child's, on one asyncio event loop, parsing nothing and checking
nothing. bench/bench_mcp_proxy.py times a call through it beside the direct call and the gateway, so what the
two extra stdio hops alone cost on this host is printed next to what the gateway adds.

    python bench/stdio_relay.py -- COMMAND ARGS...
"""
from __future__ import annotations

import asyncio
import os
import sys


async def main(command: list[str]) -> int:
    loop = asyncio.get_running_loop()
    child = await asyncio.create_subprocess_exec(*command, stdin=asyncio.subprocess.PIPE,
                                                 stdout=asyncio.subprocess.PIPE, limit=64 * 1024 * 1024)
    reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(os.dup(0), "rb", 0))
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin,
                                                        os.fdopen(os.dup(1), "wb", 0))
    out = asyncio.StreamWriter(transport, protocol, None, loop)

    async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        while line := await src.readline():
            dst.write(line)
            await dst.drain()

    assert child.stdin is not None and child.stdout is not None
    to_child = asyncio.ensure_future(copy(reader, child.stdin))
    to_parent = asyncio.ensure_future(copy(child.stdout, out))
    await asyncio.wait([to_child, to_parent], return_when=asyncio.FIRST_COMPLETED)
    child.stdin.close()
    try:
        return await asyncio.wait_for(child.wait(), 5)
    except asyncio.TimeoutError:
        child.kill()
        return await child.wait()


if __name__ == "__main__":
    argv = sys.argv[1:]
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print("usage: stdio_relay.py -- COMMAND ARGS...", file=sys.stderr)
        sys.exit(2)
    sys.exit(asyncio.run(main(argv)))
