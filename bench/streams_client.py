#!/usr/bin/env python3
"""Holds exactly N streamed chat requests open against an OpenAI-compatible endpoint until a
deadline, for bench/streams.sh.

Each of N slots keeps one keep-alive HTTP/1.1 connection and sends one streamed request after
another on it, reading every chunk of every reply. A slot whose request fails backs off for
half a second and opens a new connection. At the deadline every connection still streaming is
closed mid-reply (clients that hang up). Plain asyncio over raw sockets: no packages needed.

Counts: started, completed (a 200 whose stream ended in `data: [DONE]` with the expected
number of events), events, and errors by kind. Writes one status line to --status-file every
second (`open completed errors events`) and a JSON summary to stdout at the end.
"""
import argparse
import asyncio
import json
import os
import sys
import time


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--streams", type=int, default=1000)
    p.add_argument("--duration", type=float, default=600)
    p.add_argument("--ramp", type=float, default=10, help="seconds over which slots start")
    p.add_argument("--model", default="chat-stream")
    p.add_argument("--max-tokens", type=int, default=240)
    p.add_argument("--expect-events", type=int, default=0,
                   help="SSE events a complete reply has (0: do not check)")
    p.add_argument("--idle-timeout", type=float, default=30,
                   help="a stream with no bytes for this long counts as stalled")
    p.add_argument("--status-file", required=True)
    return p.parse_args()


A = parse_args()
BODY = json.dumps({
    "model": A.model, "stream": True, "max_tokens": A.max_tokens,
    "messages": [{"role": "user", "content": "hold this stream open"}],
}).encode()
REQUEST = (
    b"POST /v1/chat/completions HTTP/1.1\r\nhost: %s:%d\r\ncontent-type: application/json\r\n"
    b"authorization: Bearer sk-streams\r\ncontent-length: %d\r\n\r\n"
    % (A.host.encode(), A.port, len(BODY)) + BODY
)

stats = {"started": 0, "completed": 0, "events": 0, "open": 0, "cut_at_deadline": 0}
errors = {}


def error(kind):
    errors[kind] = errors.get(kind, 0) + 1


class Slot:
    __slots__ = ("reader", "writer", "last", "streaming", "stalled")

    def __init__(self):
        self.reader = self.writer = None
        self.last = time.monotonic()
        self.streaming = self.stalled = False

    def close(self):
        if self.writer is not None:
            self.writer.transport.abort()
        self.reader = self.writer = None


class Failed(Exception):
    pass


async def headers(r):
    status = await r.readline()
    if not status:
        raise Failed("closed_before_status")
    parts = status.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise Failed("bad_status_line")
    code, chunked, length, close = int(parts[1]), False, 0, False
    while True:
        line = await r.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip().lower()
        if name == b"transfer-encoding" and b"chunked" in value:
            chunked = True
        elif name == b"content-length":
            length = int(value)
        elif name == b"connection" and value == b"close":
            close = True
    return code, chunked, length, close


async def one(slot):
    """One request on the slot's connection; returns whether the connection can be reused."""
    r, w = slot.reader, slot.writer
    w.write(REQUEST)
    slot.streaming = True
    code, chunked, length, close = await headers(r)
    slot.last = time.monotonic()
    if code != 200:
        if chunked:
            raise Failed(f"status_{code}")
        await r.readexactly(length)
        error(f"status_{code}")
        return not close
    if not chunked:
        raise Failed("not_chunked")
    events, tail, last = 0, b"", b""
    while True:
        size_line = await r.readline()
        if not size_line:
            raise Failed("closed_mid_stream")
        size = int(size_line.split(b";", 1)[0], 16)
        if size == 0:
            await r.readline()  # the empty trailer section
            break
        chunk = await r.readexactly(size + 2)
        slot.last = time.monotonic()
        # switchyard writes whole SSE events per chunk; `tail` keeps a split one countable.
        data = tail + chunk[:-2]
        n = data.count(b"\n\n")
        events += n
        stats["events"] += n
        tail = data[data.rfind(b"\n\n") + 2:] if n else data
        if b'{"error"' in data:
            raise Failed("error_event")
        last = data
    slot.streaming = False
    if b"data: [DONE]" not in last:
        error("no_done")
    elif A.expect_events and events != A.expect_events:
        error(f"events_{events}_not_{A.expect_events}")
    else:
        stats["completed"] += 1
    return not close


async def run_slot(i, slot, end):
    await asyncio.sleep(A.ramp * i / A.streams)
    while time.monotonic() < end:
        try:
            if slot.writer is None:
                slot.reader, slot.writer = await asyncio.open_connection(A.host, A.port)
            stats["started"] += 1
            stats["open"] += 1
            try:
                reuse = await one(slot)
            finally:
                stats["open"] -= 1
                slot.streaming = False
            if not reuse:
                slot.close()
        except asyncio.CancelledError:
            raise
        except (Failed, OSError, asyncio.IncompleteReadError, ValueError) as e:
            error("stalled" if slot.stalled else str(e) if isinstance(e, Failed) else type(e).__name__)
            slot.stalled = False
            slot.close()
            await asyncio.sleep(0.5)


async def watchdog(slots, end):
    """Cuts streams that went quiet (so a stall is counted, not waited on forever)."""
    while time.monotonic() < end:
        await asyncio.sleep(1)
        now = time.monotonic()
        for s in slots:
            if s.streaming and now - s.last > A.idle_timeout:
                s.stalled = True
                s.last = now
                s.close()


async def status(end):
    while True:
        with open(A.status_file + ".tmp", "w") as f:
            f.write(f"{stats['open']} {stats['completed']} {sum(errors.values())} {stats['events']}\n")
        os.replace(A.status_file + ".tmp", A.status_file)
        if time.monotonic() >= end:
            return
        await asyncio.sleep(1)


async def main():
    end = time.monotonic() + A.duration
    slots = [Slot() for _ in range(A.streams)]
    tasks = [asyncio.create_task(run_slot(i, s, end)) for i, s in enumerate(slots)]
    dog = asyncio.create_task(watchdog(slots, end))
    reporter = asyncio.create_task(status(end))
    await asyncio.sleep(max(0.0, end - time.monotonic()))
    stats["cut_at_deadline"] = sum(1 for s in slots if s.streaming)
    for t in tasks + [dog]:
        t.cancel()
    await asyncio.gather(*tasks, dog, return_exceptions=True)
    for s in slots:
        s.close()
    await reporter
    stats["open"] = 0
    await status(end)
    print(json.dumps({**stats, "errors": errors}, sort_keys=True))


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
