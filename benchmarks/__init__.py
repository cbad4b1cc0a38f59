"""Load benchmarks of a real ``recloop serve`` process; ``python -m benchmarks`` runs them.

Modules, in the order a run uses them:

- ``servers``: the ``recloop serve`` process under test and the bare ASGI
  ceiling (``bare``), each a subprocess on a free port of 127.0.0.1;
- ``workload``: the events, items, readers and request plans the load is made of;
- ``client``: a lean keep-alive HTTP/1.1 client for the Python load generators;
- ``processes``: runs a load generator in its own (spawned) process;
- ``loadgen``: the load generators and probes themselves;
- ``wrk``: the single-event and read-path loads through ``wrk``, and their Lua
  scripts (``single_event.lua``, ``replay.lua``);
- ``suite``: the benchmarks, their metrics and targets, and the repetitions;
- ``report``: the markdown table and the results section of docs/benchmarks.md.

What every command shares (this suite, ``distributed``, ``learning`` and the others):
``harness`` (progress lines, the machine line, CPU from ``/proc``, stopping a process,
the figures' format, the command that prints and writes a section of
docs/benchmarks.md) and ``args`` (argument types, the shared load options, ``--write``).
"""
