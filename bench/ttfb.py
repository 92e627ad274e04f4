#!/usr/bin/env python3
"""Time to first byte of streamed chat completions, one keep-alive connection, sequential.

    bench/ttfb.py URL BODY_JSON N [HEADER ...] [--any]

--any: also accept non-streamed replies (content-length bodies); used by bench/instructions.sh
to drive N requests of either kind.

For each of N requests: the time from writing the request to reading the first SSE `data:`
bytes of the body, and to the end of the stream (which must hold `data: [DONE]`). Prints one
JSON object: p50/p90/p99 of both, in milliseconds. The client's own cost is the same for every
target, so differences between targets measured by this script are the proxies' own.
"""
import json
import socket
import sys
import time
from urllib.parse import urlsplit


def percentile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main():
    url, body, n = sys.argv[1], sys.argv[2].encode(), int(sys.argv[3])
    any_reply = "--any" in sys.argv[4:]
    extra = [h for h in sys.argv[4:] if h and h != "--any"]
    u = urlsplit(url)
    head = [
        f"POST {u.path} HTTP/1.1",
        f"host: {u.netloc}",
        "content-type: application/json",
        "accept: text/event-stream",
        f"content-length: {len(body)}",
        *extra,
        "",
        "",
    ]
    req = "\r\n".join(head).encode() + body
    sock = socket.create_connection((u.hostname, u.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    first, total = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        sock.sendall(req)
        buf = b""
        t_first = None
        head_end = -1
        length = None
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                raise SystemExit("connection closed mid-response")
            buf += chunk
            if head_end < 0:
                head_end = buf.find(b"\r\n\r\n")
                if head_end < 0:
                    continue
                head = buf[:head_end].lower()
                if not head.startswith(b"http/1.1 200"):
                    raise SystemExit("status: %r" % buf[:200])
                for line in head.split(b"\r\n")[1:]:
                    if line.startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
            body_so_far = len(buf) - head_end - 4
            if t_first is None and (b"data:" in buf[head_end:] or (length and body_so_far > 0)):
                t_first = time.perf_counter()
            if length is not None:
                if body_so_far >= length:
                    break
            elif t_first is not None and buf.endswith(b"0\r\n\r\n"):
                break  # chunked streams end with the zero-length chunk
        t1 = time.perf_counter()
        if length is not None and not any_reply:
            raise SystemExit("not a stream (content-length reply)")
        if length is None and b"data: [DONE]" not in buf:
            raise SystemExit("stream without data: [DONE]")
        first.append((t_first - t0) * 1e3)
        total.append((t1 - t0) * 1e3)
    print(json.dumps({
        "n": n,
        "ttfb_p50": percentile(first, 0.5), "ttfb_p90": percentile(first, 0.9),
        "ttfb_p99": percentile(first, 0.99),
        "total_p50": percentile(total, 0.5), "total_p99": percentile(total, 0.99),
    }))


if __name__ == "__main__":
    main()
