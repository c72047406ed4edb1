"""Mutation testing: how many small wrong versions of the gradients and kernels the tests catch.

    python -m tools.mutation                          # everything (slow: hours for the kernels)
    python -m tools.mutation gradflow/ops             # modules or folders by prefix
    python -m tools.mutation gradflow/kernels/cpu --sample 40 --seed 1   # a random sample per module
    python -m tools.mutation --list gradflow/ops/softmax.py             # print the mutants only

Each mutant (tools/mutation/mutants.py) is written into a private copy of the package
(one per worker, never the working tree), the module's tests (tools/mutation/targets.py)
run against it with a timeout, and the mutant counts as killed when they fail, crash or
time out. Hypothesis runs the "ci" profile from a fixed seed, so a verdict is
reproducible. Survivors listed in tools/mutation/equivalent.txt (with the reason they
cannot change any result) are reported apart and left out of the score.
"""
import argparse
import collections
import concurrent.futures
import json
import os
import pathlib
import random
import shutil
import subprocess
import sys
import tempfile
import time

from tools.mutation.mutants import generate
from tools.mutation.targets import targets

ROOT = pathlib.Path(__file__).resolve().parents[2]
EQUIVALENT = pathlib.Path(__file__).with_name("equivalent.txt")
MAX_JOBS = 2   # the machine this runs on is shared: never more than two test processes at once
COPIED = ("gradflow", "tests", "pyproject.toml")


def load_equivalent(path=EQUIVALENT):
    """{mutant key: reason} from lines `key  # reason` (blank lines and lines starting with # skipped)."""
    out = {}
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, _, reason = line.partition("  # ")
        out[key.strip()] = reason.strip()
    return out


class Worker:
    """A private copy of the package with its own numba cache; runs one test command at a time."""

    def __init__(self, base, index, seed, timeout):
        self.dir = base / f"worker{index}"
        self.cache = base / f"numba-cache{index}"
        self.seed, self.timeout = seed, timeout
        for name in COPIED:
            source = ROOT / name
            if source.is_dir():
                shutil.copytree(source, self.dir / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                self.dir.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, self.dir / name)

    def run_tests(self, tests, cache=None, timeout=None):
        env = dict(os.environ, PYTHONPATH=str(self.dir), NUMBA_CACHE_DIR=str(cache or self.cache),
                   HYPOTHESIS_PROFILE="ci", HYPOTHESIS_SEED=str(self.seed), GRADFLOW_DEBUG="1",
                   NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
                   GRADFLOW_DEVICE="cpu")
        start = time.monotonic()
        try:
            done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "--tb=line", "-p", "no:cacheprovider",
                                   *tests], cwd=self.dir, env=env, capture_output=True, text=True,
                                  timeout=timeout or self.timeout)
            return done.returncode, time.monotonic() - start, (done.stdout + done.stderr)[-2000:]
        except subprocess.TimeoutExpired:
            return "timeout", time.monotonic() - start, ""

    def run_mutant(self, mutant, tests, timeout):
        target = self.dir / mutant.path
        original = (ROOT / mutant.path).read_text()
        target.write_text(mutant.apply(original))
        # a mutated kernel compiles into a throw-away copy of the cache, so the shared one
        # keeps the original's machine code
        scratch = None
        if "/kernels/" in mutant.path:
            scratch = self.cache.with_name(self.cache.name + "-scratch")
            shutil.rmtree(scratch, ignore_errors=True)
            if self.cache.exists():
                shutil.copytree(self.cache, scratch)
        try:
            code, seconds, output = self.run_tests(tests, cache=scratch, timeout=timeout)
        finally:
            shutil.copy2(ROOT / mutant.path, target)   # the original back, with its timestamp
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
        verdict = "survived" if code == 0 else ("timeout" if code == "timeout" else "killed")
        if code == 5:
            verdict = "no-tests"
        return verdict, seconds, output


def select_mutants(prefixes, sample, seed):
    plan = []
    for path, select, tests in targets(ROOT):
        if prefixes and not any(path.startswith(p.rstrip("/")) for p in prefixes):
            continue
        mutants = generate(path, (ROOT / path).read_text(), select)
        total = len(mutants)
        if sample and len(mutants) > sample:
            mutants = random.Random(f"{seed}:{path}").sample(mutants, sample)
            mutants.sort(key=lambda m: m.span)
        plan.append((path, tests, mutants, total))
    return plan


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tools.mutation", description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help="module paths or folder prefixes (default: all targets)")
    parser.add_argument("--jobs", type=int, default=2, help=f"parallel test runs (at most {MAX_JOBS})")
    parser.add_argument("--sample", type=int, default=0, help="mutants per module, drawn at random (0: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample and of hypothesis")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per test run, at most")
    parser.add_argument("--report", type=pathlib.Path, help="write every verdict here (JSON)")
    parser.add_argument("--list", action="store_true", help="print the mutants and stop")
    args = parser.parse_args(argv)
    jobs = max(1, min(args.jobs, MAX_JOBS))

    plan = select_mutants(args.modules, args.sample, args.seed)
    if args.list:
        for path, tests, mutants, total in plan:
            print(f"{path}: {len(mutants)} of {total} mutants, judged by {tests}")
            for m in mutants:
                print(f"  line {m.line} [{m.operator}] {m.key}")
        return 0
    missing = [path for path, tests, mutants, _ in plan if mutants and not tests]
    if missing:
        print(f"no tests mapped for {missing}: add them to tools/mutation/targets.py", file=sys.stderr)
        return 2
    equivalent = load_equivalent()
    base = pathlib.Path(tempfile.mkdtemp(prefix="gradflow-mutation-"))
    results = []
    try:
        workers = [Worker(base, i, args.seed, args.timeout) for i in range(jobs)]
        pool = concurrent.futures.ThreadPoolExecutor(jobs)
        idle = collections.deque(workers)

        def on_worker(fn, *a):
            worker = idle.popleft()
            try:
                return fn(worker, *a)
            finally:
                idle.append(worker)

        for path, tests, mutants, total in plan:
            if not mutants:
                continue
            # baseline on every worker: the unmutated tests must pass (and warm each numba cache)
            baselines = list(pool.map(lambda w: w.run_tests(tests), workers))
            failing = [b for b in baselines if b[0] != 0]
            if failing:
                print(f"{path}: the tests fail without any mutant ({failing[0][0]}):\n{failing[0][2]}", file=sys.stderr)
                return 2
            slowest = max(b[1] for b in baselines)
            timeout = min(args.timeout, 3 * slowest + 60)
            print(f"{path}: {len(mutants)} of {total} mutants; tests {' '.join(tests)} take {slowest:.0f} s "
                  f"(timeout {timeout:.0f} s)", flush=True)
            futures = [pool.submit(on_worker, lambda w, m=m: w.run_mutant(m, tests, timeout)) for m in mutants]
            for mutant, future in zip(mutants, futures):
                verdict, seconds, output = future.result()
                if verdict == "survived" and mutant.key in equivalent:
                    verdict = "equivalent"
                results.append(dict(path=path, key=mutant.key, line=mutant.line, operator=mutant.operator,
                                    verdict=verdict, seconds=round(seconds, 1), total_in_module=total))
                if verdict in ("survived", "no-tests"):
                    print(f"  SURVIVED line {mutant.line} [{mutant.operator}] {mutant.key}", flush=True)
        pool.shutdown()
    finally:
        shutil.rmtree(base, ignore_errors=True)
        if args.report:
            args.report.write_text(json.dumps(results, indent=1) + "\n")
    print(summary(results, args.sample))
    return 0


def summary(results, sample=0):
    """A markdown table: per module, mutants run, killed, equivalent, survived, score."""
    rows = collections.OrderedDict()
    for r in results:
        row = rows.setdefault(r["path"], collections.Counter(total=r["total_in_module"]))
        row["run"] += 1
        row[r["verdict"]] += 1
    lines = ["| module | mutants (run / all) | killed | equivalent | survived | score |",
             "|---|---|---|---|---|---|"]
    for path, row in rows.items():
        killed = row["killed"] + row["timeout"]
        judged = row["run"] - row["equivalent"]
        score = f"{100 * killed / judged:.1f}%" if judged else "-"
        lines.append(f"| {path} | {row['run']} / {row['total']} | {killed} | {row['equivalent']} | "
                     f"{row['survived'] + row['no-tests']} | {score} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
