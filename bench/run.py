"""Run every benchmark and print its table: ``python bench/run.py [NAME ...] [-- ARGS]``.

The anchors other than git and raw ``flock`` are libraries the product does not use:
``pip install -e '.[bench]'`` installs them (filelock, portalocker).

Each benchmark module has ``main(argv) -> int`` and measures its anchors in the same run, so the
ratios it prints are comparable across machines.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

BENCHMARKS = {
    "locks": "bench.bench_locks",
    "hook": "bench.bench_hook",
    "agents": "bench.bench_agents",
    "checkpoints": "bench.bench_checkpoints",
    "monitor": "bench.bench_monitor",
    "waves": "bench.bench_waves",
    "globs": "bench.bench_globs",
    "strict": "bench.bench_strict",
    "pg": "bench.bench_pg",
}


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    names = [a for a in argv if not a.startswith("-")] or list(BENCHMARKS)
    status = 0
    for name in names:
        if name not in BENCHMARKS:
            print(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}")
            return 2
        try:
            module = importlib.import_module(BENCHMARKS[name])
        except ModuleNotFoundError as exc:
            print(f"== {name}: not available ({exc})")
            continue
        print(f"== {name}")
        status |= module.main([])
        print()
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
