"""`logdist bench`: the end-to-end benchmark (logdist memory/wal against nginx and HAProxy).

A thin wrapper: the runner is bench/e2e.py in the source tree (with the nginx/HAProxy
templates and the wrk script next to it). The flags live in `logdist.tools.benchargs`, which
e2e.py imports too; this module loads e2e.py by path and calls its `run`, and e2e.py never
imports this module back.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys

from logdist.tools.benchargs import add_arguments as add_arguments  # the `logdist bench` flags
from logdist.tools.benchargs import find_bench_dir


def run(args: argparse.Namespace) -> int:
    bench_dir = find_bench_dir(args.bench_dir)
    if bench_dir is None:
        print(
            "logdist bench needs the source tree's bench/ directory (e2e.py, nginx/, haproxy/, wrk/): "
            "run it from the repository or pass --bench-dir",
            file=sys.stderr,
        )
        return 2
    spec = importlib.util.spec_from_file_location("logdist_bench_e2e", bench_dir / "e2e.py")
    if spec is None or spec.loader is None:
        print(f"cannot load {bench_dir / 'e2e.py'}", file=sys.stderr)
        return 2
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return int(module.run(args))
