"""The relay's batched writes: the messages of one turn of the event loop go out in one write, in order,
bounded in size, flushed before the end; through a real pipe the reader gets exactly the bytes written."""

from __future__ import annotations

import asyncio
import os

import pytest

from regoguard.proxy.batched import FLUSH_AT, Batched


class Recorder:
    """The writer underneath: records each write it is given (what a system call would send)."""

    def __init__(self, closing: bool = False, fail: bool = False) -> None:
        self.writes: list[bytes] = []
        self.closing = closing
        self.fail = fail

    def write(self, data: bytes) -> None:
        if self.fail:
            raise BrokenPipeError("the reader is gone")
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closing

    async def drain(self) -> None:
        return None


def test_the_writes_of_one_turn_go_out_as_one_in_order():
    async def main() -> Recorder:
        rec = Recorder()
        out = Batched(rec, asyncio.get_running_loop())
        for i in range(5):
            out.write(b'{"id":%d}\n' % i)
            await out.drain()  # as the relay does after each message: no yield, no write yet
        assert rec.writes == []
        await asyncio.sleep(0)  # the turn ends
        out.write(b'{"id":5}\n')
        await asyncio.sleep(0)
        return rec

    rec = asyncio.run(main())
    assert rec.writes == [b"".join(b'{"id":%d}\n' % i for i in range(5)), b'{"id":5}\n']


def test_a_burst_never_holds_more_than_the_bound():
    async def main() -> Recorder:
        rec = Recorder()
        out = Batched(rec, asyncio.get_running_loop())
        chunk = b"x" * (FLUSH_AT // 4)
        for _ in range(9):
            out.write(chunk)
        assert sum(map(len, rec.writes)) == 8 * len(chunk)  # two full batches went out at once
        await asyncio.sleep(0)
        return rec

    rec = asyncio.run(main())
    assert b"".join(rec.writes) == b"x" * (9 * (FLUSH_AT // 4))
    assert all(len(w) <= FLUSH_AT for w in rec.writes)


def test_flush_sends_now_and_a_closing_writer_gets_nothing():
    async def main() -> tuple[Recorder, Recorder]:
        loop = asyncio.get_running_loop()
        rec, gone = Recorder(), Recorder(closing=True)
        out, dead = Batched(rec, loop), Batched(gone, loop)
        out.write(b"a\n")
        out.flush()
        assert rec.writes == [b"a\n"]
        dead.write(b"b\n")
        await asyncio.sleep(0)
        return rec, gone

    rec, gone = asyncio.run(main())
    assert rec.writes == [b"a\n"] and gone.writes == []


def test_a_failed_batch_is_raised_at_the_next_use_not_lost_in_the_loop():
    async def main() -> None:
        out = Batched(Recorder(fail=True), asyncio.get_running_loop())
        out.write(b"a\n")
        await asyncio.sleep(0)
        with pytest.raises(BrokenPipeError):
            await out.drain()

    asyncio.run(main())


def test_through_a_real_pipe_the_reader_gets_exactly_the_bytes_written():
    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        r, w = os.pipe()
        transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, os.fdopen(w, "wb"))
        out = Batched(asyncio.StreamWriter(transport, protocol, None, loop), loop)

        def read_all() -> bytes:
            got = b""
            while chunk := os.read(r, 1 << 16):
                got += chunk
            os.close(r)
            return got

        reading = loop.run_in_executor(None, read_all)
        lines = [b'{"jsonrpc":"2.0","id":%d,"result":{}}\n' % i for i in range(200)]
        for i, line in enumerate(lines):
            out.write(line)
            if i % 7 == 0:
                await asyncio.sleep(0)
        out.flush()
        await out.drain()
        transport.close()
        return await asyncio.wait_for(reading, 10)  # the loop closes the pipe while the reader waits for EOF

    got = asyncio.run(main())
    assert got == b"".join(b'{"jsonrpc":"2.0","id":%d,"result":{}}\n' % i for i in range(200))
