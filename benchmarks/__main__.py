"""``python -m benchmarks``: run the load benchmarks and print (or record) the results."""

from __future__ import annotations

import argparse
import shlex
import sys
from typing import Final

from benchmarks.args import add_load_options
from benchmarks.processes import LoadProcessError
from benchmarks.report import DOC, results_section, table, write_doc
from benchmarks.servers import ServerError
from benchmarks.suite import BENCHMARKS, Options, run_suite
from benchmarks.wrk import WrkError

QUICK: Final = Options(duration=3.0, repeat=1, samples=50)
FULL: Final = Options()


def parse_args(argv: list[str]) -> tuple[Options, bool]:
    """The options of a run, and whether to write the results into docs/benchmarks.md."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Load benchmarks of a real `recloop serve` against a bare ASGI ceiling.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a smoke run: {QUICK.repeat} repetition, {QUICK.duration:.0f} s loads, "
        f"{QUICK.samples} latency samples",
    )
    add_load_options(parser, FULL, "duration", "repeat", "samples", preset=True)
    add_load_options(parser, FULL, "clients")
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(BENCHMARKS),
        default=[],
        metavar="NAME",
        help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}",
    )
    parser.add_argument(
        "--no-wrk",
        action="store_true",
        help="use the Python load generator for single events and read paths",
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an extra environment variable for recloop serve, e.g. RECLOOP_VECTORS__DIM=32",
    )
    parser.add_argument(
        "--write", action="store_true", help=f"rewrite the results section of {DOC.name}"
    )
    args = parser.parse_args(argv)
    if args.write and args.only:
        parser.error("--write records the whole suite; it cannot be combined with --only")
    base = QUICK if args.quick else FULL
    server_env = {}
    for pair in args.server_env:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            parser.error(f"--server-env expects KEY=VALUE, got {pair!r}")
        server_env[key] = value
    options = Options(
        duration=args.duration or base.duration,
        repeat=args.repeat or base.repeat,
        clients=args.clients,
        samples=args.samples or base.samples,
        only=tuple(args.only),
        use_wrk=not args.no_wrk,
        server_env=server_env,
    )
    return options, args.write


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    options, write = parse_args(argv)
    try:
        suite = run_suite(options)
    except (ServerError, LoadProcessError, WrkError) as exc:
        print(f"benchmarks failed: {exc}", file=sys.stderr)
        return 1
    print(table(suite))
    for note in suite.notes:
        print(f"- {note}")
    if write:
        command = " ".join(["python -m benchmarks", shlex.join(argv)]).strip()
        write_doc(results_section(suite, command))
        print(f"results written to {DOC}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
