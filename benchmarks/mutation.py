"""Mutation testing of the pure core and trace scoring: the kill rate per module.

    python benchmarks/mutation.py                  # a fresh run as configured, then the table
    python benchmarks/mutation.py --jobs 1         # gentler on a shared machine
    python benchmarks/mutation.py "watchdog.core.heartbeat*"   # only those mutants
    python benchmarks/mutation.py --no-run         # the table from the last run (mutants/)
    python benchmarks/mutation.py --survivors      # also list every surviving mutant

What is mutated and which tests run is ``[tool.mutmut]`` in pyproject.toml
(watchdog/core/ and watchdog/sim/trace.py, against tests/core/ and
tests/sim/test_trace.py). It takes minutes, so it runs by hand before a change
to the core, never in CI. A mutant is *killed* when a test fails (a timeout or
a type-check failure counts too); one with no test covering it counts as
surviving. ``mutmut show NAME`` prints a mutant's diff.

Each run starts from a clean ``mutants/``: mutmut keeps a verdict until the
mutated function changes, so an edited test would otherwise not be rerun.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MUTANTS = ROOT / "mutants"
# mutmut's exit codes (mutmut/stats.py): what each mutant's test run ended with.
KILLED = {1, 3, 24, -24, 36, 37, 152, 255}  # tests failed, pytest error, timeout, type check
SURVIVED = {0}
NO_TESTS = {5, 33}
NOT_COUNTED = {None, 2, 34}  # not checked, interrupted, skipped


def run(jobs: int, names: list[str]) -> int:
    shutil.rmtree(MUTANTS, ignore_errors=True)
    mutmut = Path(sys.executable).with_name("mutmut")
    argv = [str(mutmut), "run", "--max-children", str(jobs), *names]
    return subprocess.run(argv, cwd=ROOT, check=False).returncode


def read() -> dict[str, dict[str, int | None]]:
    """Exit code by mutant name, per source file, from the last run."""
    out: dict[str, dict[str, int | None]] = {}
    for meta in sorted(MUTANTS.rglob("*.py.meta")):
        codes = json.loads(meta.read_text("utf-8"))["exit_code_by_key"]
        if codes:
            out[str(meta.relative_to(MUTANTS)).removesuffix(".meta")] = codes
    return out


def tally(codes: dict[str, int | None]) -> Counter[str]:
    count: Counter[str] = Counter()
    for code in codes.values():
        if code in NOT_COUNTED:
            count["unchecked"] += 1
            continue
        count["mutants"] += 1
        if code in KILLED:
            count["killed"] += 1
        elif code in NO_TESTS:
            count["no tests"] += 1
        else:  # survived, or suspicious: not caught either way
            count["survived"] += 1
    return count


def rate(count: Counter[str]) -> str:
    return f"{100 * count['killed'] / count['mutants']:.0f} %" if count["mutants"] else "-"


def table(results: dict[str, dict[str, int | None]]) -> str:
    lines = [
        "| module | mutants | killed | survived | no tests | kill rate |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    total: Counter[str] = Counter()
    for path, codes in results.items():
        count = tally(codes)
        total += count
        lines.append(
            f"| {path} | {count['mutants']} | {count['killed']} | {count['survived']} "
            f"| {count['no tests']} | {rate(count)} |"
        )
    lines.append(
        f"| **all** | {total['mutants']} | {total['killed']} | {total['survived']} "
        f"| {total['no tests']} | **{rate(total)}** |"
    )
    if total["unchecked"]:
        lines.append(f"\n{total['unchecked']} mutants not checked (interrupted or skipped).")
    return "\n".join(lines)


def survivors(results: dict[str, dict[str, int | None]]) -> list[str]:
    return [
        name
        for codes in results.values()
        for name, code in codes.items()
        if code not in KILLED and code not in NOT_COUNTED
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("names", nargs="*", help="mutant names or globs (default: all)")
    parser.add_argument("--jobs", type=int, default=2, help="test processes at once (default 2)")
    parser.add_argument("--no-run", action="store_true", help="only read the last run")
    parser.add_argument("--survivors", action="store_true", help="list surviving mutants")
    args = parser.parse_args()
    if not args.no_run:
        status = run(args.jobs, args.names)
        if status != 0:
            print(f"mutmut run failed with status {status}", file=sys.stderr)
            return status
    results = read()
    if not results:
        print("No results in mutants/: run without --no-run first.", file=sys.stderr)
        return 1
    print(table(results))
    if args.survivors:
        print("\nSurviving (see `mutmut show NAME`):")
        print("\n".join(f"  {name}" for name in survivors(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
