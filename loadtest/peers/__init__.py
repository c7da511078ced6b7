"""The peers the benchmark runs beside our server: P1 asyncio streams, P2 uvloop, P3 threads, P4 the seed."""
