"""Benchmarks for govnode, run on demand with ``make bench`` (``python -m bench``).

The machines are shared and noisy, so no figure stands alone: every govnode measurement sits
next to a baseline measured in the same run on the same machine (a bare grpc.aio mutual-TLS
echo server for Verify, raw ``sqlite3`` ``executemany`` for Submit), and the figures that
matter are the ratios. Servers and the load generator run as separate processes so they do
not share a GIL. Nothing here asserts a timing; the test suite never runs it.

Modules, one job each:

- :mod:`bench.dataset`: the records the benchmark submits and verifies against.
- :mod:`bench.procs`: child processes that always get cleaned up.
- :mod:`bench.province`: a fresh province node (PKI, config, process, resource registration).
- :mod:`bench.echo`: the baseline server (``python -m bench.echo``).
- :mod:`bench.load`: the load generator (``python -m bench.load``).
- :mod:`bench.sqlite_baseline`: raw sqlite3 inserts with the node's pragmas.
- :mod:`bench.opendata_publish`: open-data publication over a million records, per phase
  (``python -m bench.opendata_publish``; the ``opendata-publish`` scenario runs it smaller).
- :mod:`bench.opendata_download`: CSV downloads through the public portal against a bare
  aiohttp HTTPS server (``python -m bench.opendata_download``; the ``opendata-download``
  scenario runs it smaller), with :mod:`bench.bare_http`, that baseline server.
- :mod:`bench.scenarios`: what is measured; add a scenario to :data:`SCENARIOS` to extend.
- :mod:`bench.report`: the table and the final JSON line.
- :mod:`bench.run`: the command line and the orchestration.
"""
