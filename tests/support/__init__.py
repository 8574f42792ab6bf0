"""Helpers the test modules share; fixtures stay in tests/conftest.py. A test module imports
helpers from here, never from another test module.

- ``nodes``: PKI, configs and running nodes (a province, cities, a federation), channels,
  ``govnode serve`` as a process;
- ``databases``: the storage backends (SQLite always, PostgreSQL when configured);
- ``entries``: catalog test data (agency codes and identities, entries, items);
- ``sharing``: the example catalog on a province, registering and submitting;
- ``access``: applications and grants, and calls under them;
- ``exchange`` and ``routed_exchange``: Exchange and Subscribe on one node and across the
  federation;
- ``cli``: the govnode command as a subprocess and in-process;
- ``federation``: quick heartbeats, joining online;
- ``oracle``: the Verify oracle's limits, and the retry information of a refusal;
- ``testers``: conformance testers' resources and calls;
- ``conformance_targets``: cities broken on purpose for the conformance suite;
- ``hostile_maps``: requests whose one map is costly to parse.
"""
