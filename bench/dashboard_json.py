"""frps's dashboard list of 100,000 tcp proxies (~40 MB), parsed as it arrives in 64 KiB
pieces: the adapter's parser (`plugin.dashboard._ProxyListing`) against ijson's C backend
(yajl2_c), in the same run. Prints the total time, and the longest a single piece held the
loop (what a plugin call may wait), median of `--rounds`.

    python bench/dashboard_json.py [--proxies 100000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import ijson  # type: ignore[import-untyped]  # no types published

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from plugin.dashboard import _PIECE, _ProxyListing

Parse = Callable[[list[bytes]], tuple[int, float]]


def answer(proxies: int) -> bytes:
    """frps 0.65's `/api/proxy/tcp` answer, as its dashboard writes it."""
    items = [
        {
            "name": f"node{i}.ssh",
            "conf": {"name": f"node{i}.ssh", "type": "tcp", "remotePort": 20000 + i % 40000},
            "clientVersion": "0.65.0",
            "todayTrafficIn": i,
            "todayTrafficOut": i * 2,
            "curConns": 0,
            "lastStartTime": "11-03 10:00:00",
            "lastCloseTime": "",
            "status": "online",
        }
        for i in range(proxies)
    ]
    return json.dumps({"proxies": items}, indent=2).encode()


def pieces(body: bytes) -> list[bytes]:
    return [body[i : i + _PIECE] for i in range(0, len(body), _PIECE)]


def timed(feed: Callable[[bytes], int], chunks: list[bytes]) -> tuple[int, float]:
    found, longest = 0, 0.0
    for chunk in chunks:
        start = time.perf_counter()
        found += feed(chunk)
        longest = max(longest, time.perf_counter() - start)
    return found, longest


def ours(chunks: list[bytes]) -> tuple[int, float]:
    listing = _ProxyListing()
    result = timed(lambda chunk: len(listing.feed(chunk)), chunks)
    listing.close()
    return result


def with_ijson(chunks: list[bytes]) -> tuple[int, float]:
    items = ijson.sendable_list()
    parser = ijson.items_coro(items, "proxies.item", use_float=True)

    def feed(chunk: bytes) -> int:
        parser.send(chunk)
        found = len(items)
        items.clear()
        return found

    result = timed(feed, chunks)
    parser.close()
    return result


def rounds(parse: Parse, chunks: list[bytes], count: int) -> Iterator[tuple[float, float]]:
    for _ in range(count):
        start = time.perf_counter()
        found, longest = parse(chunks)
        assert found > 0
        yield time.perf_counter() - start, longest


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--proxies", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    chunks = pieces(answer(args.proxies))
    size = sum(map(len, chunks)) / 1e6
    print(f"{args.proxies} proxies, {size:.1f} MB in {len(chunks)} pieces of {_PIECE} bytes")
    results = {}
    for name, parse in (("ours", ours), ("ijson yajl2_c", with_ijson)):
        runs = list(rounds(parse, chunks, args.rounds))
        total = statistics.median(run[0] for run in runs)
        longest = statistics.median(run[1] for run in runs)
        results[name] = (total, longest)
        print(f"{name:>14}: {total * 1000:8.1f} ms in all, {longest * 1000:6.2f} ms longest piece")
    (a, b), (c, d) = results["ours"], results["ijson yajl2_c"]
    print(f"{'ratio':>14}: ours / ijson = {a / c:.2f} in all, {b / d:.2f} longest piece")


if __name__ == "__main__":
    main()
