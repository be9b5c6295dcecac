"""`foclip bench generate|detect`: benchmarks that print figures (ratios against a baseline run side by side)."""

from __future__ import annotations

import importlib

# Each module defines add_parser(bench_subparsers) and keeps torch imports inside its run function.
BENCH_MODULES = ("foclip_train.bench", "foclip.benchmarks.detect")


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="benchmarks: `foclip bench generate`, `foclip bench detect`")
    bsub = p.add_subparsers(dest="bench_command", required=True, metavar="BENCH")
    for name in BENCH_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                continue  # benchmark not built yet
            raise
        module.add_parser(bsub)
