"""Timing, statistics and the shapes of benchmark rows, shared by every workload.

Timing rule: gradflow and PyTorch are measured in the same process, interleaved
(A B A B ...), after warm-up, each sample closed by a device synchronisation on
both sides, so drift and noise from the shared machine hit both sides alike.

With more than one CPU thread, each sample starts SPIN_SETTLE_S after the previous one,
then makes untimed calls of its own: both engines run on GNU OpenMP pools whose workers
spin after every parallel region (measured: 7-10 ms of CPU time after one convolution, in
either engine) before they sleep. Back to back, the spinning workers of one engine took a
core from the other's next sample; after a plain pause, each sample paid for waking its
own pool from sleep (on this VM up to ~3 ms for a tiny op). Untimed calls for SPIN_WAKE_S
wake it, so a sample sees what a program running one engine sees: its own pool warm, no
other. One untimed call was not enough on a 2-vCPU Intel VM: after the pause Linux at times
woke a pool worker on the calling thread's core, where its spinning and the caller shared
the core until the load balancer moved one (a 0.16 ms group-norm kernel took 4-11 ms in
some of the next calls); 10 ms of calls left no such outlier in 240 samples.
"""
import dataclasses
import gc
import math
import time
import traceback
from typing import Callable, Optional

import numpy as np


class NotAvailable(Exception):
    """The gradflow side of a row needs an op/module that does not exist yet."""


@dataclasses.dataclass
class Settings:
    device: str = "cpu"          # "cpu" or "cuda"
    quick: bool = False
    threads: int = 1
    warmup: int = 3
    repeats: int = 15
    min_sample_s: float = 0.002  # a sample loops a call until it lasts this long (tiny ops)
    batches: tuple = (1, 8, 32)
    probes: bool = True          # run the subprocess probes (memory, compile) in this worker

    @classmethod
    def make(cls, device, quick, threads, probes=True):
        if quick:
            return cls(device=device, quick=True, threads=threads, warmup=2, repeats=7,
                       batches=(8,), probes=probes)
        return cls(device=device, threads=threads, probes=probes)


@dataclasses.dataclass
class Pair:
    """The two sides of a timed row, built once per row."""
    gradflow: Callable[[], object]
    torch: Callable[[], object]
    check: Optional[Callable[[], dict]] = None   # runs both once, returns {"max_rel_diff": ...}
    ops_per_call: Optional[int] = None            # report time per op (Python-overhead rows)
    note: str = ""


@dataclasses.dataclass
class Case:
    """kind "time": build(settings) -> Pair, one row. kind "probe": build(settings) -> list of
    row dicts (name, gradflow, torch, ratio, note, ...), measured by the probe itself."""
    name: str
    description: str
    build: Callable
    kind: str = "time"
    unit: str = "ms"
    first_thread_only: bool = False   # probes measured once, not per thread count


def stats(samples):
    a = np.sort(np.asarray(samples, dtype=np.float64))
    q1, med, q3 = np.percentile(a, [25, 50, 75])
    return {"median": float(med), "q1": float(q1), "q3": float(q3),
            "min": float(a[0]), "max": float(a[-1]), "n": int(a.size)}


def syncs(device):
    """(gradflow sync, torch sync) closing every timed sample on `device`."""
    return gradflow_sync(device), torch_sync(device)


def gradflow_sync(device):
    """Wait for all GPU work (whole device: Numba launches on any stream count too)."""
    if device != "cuda":
        return lambda: None
    from gradflow import backend
    return backend.cupy_module().cuda.runtime.deviceSynchronize


def torch_sync(device):
    if device != "cuda":
        return lambda: None
    import torch
    return torch.cuda.synchronize


def _calibrate(fn, sync, min_sample_s):
    """Calls per sample so one sample lasts at least min_sample_s (1 for real workloads)."""
    t0 = time.perf_counter()
    fn()
    sync()
    single = time.perf_counter() - t0
    if single >= min_sample_s:
        return 1
    return min(10_000, max(1, math.ceil(min_sample_s / max(single, 1e-7))))


SPIN_SETTLE_S = 0.02
SPIN_WAKE_S = 0.01


def _sample(fn, sync, inner, settle_s=0.0):
    if settle_s:
        time.sleep(settle_s)
        woken = time.perf_counter()
        fn()
        sync()
        while time.perf_counter() - woken < SPIN_WAKE_S:
            fn()
            sync()
    gc.collect()
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    sync()
    return (time.perf_counter() - t0) / inner


def time_pair(pair, settings):
    """Interleaved timing of both sides; returns (gradflow stats, torch stats) in seconds."""
    sync_gf, sync_torch = syncs(settings.device)
    # Everything alive now (modules, the row's tensors) is frozen out of the collector, so the
    # gc.collect() before each sample only walks what the timed calls left behind: fast.
    gc.collect()
    gc.freeze()
    try:
        return _time_pair(pair, settings, sync_gf, sync_torch)
    finally:
        gc.unfreeze()


def _time_pair(pair, settings, sync_gf, sync_torch):
    for _ in range(settings.warmup):
        pair.gradflow()
        sync_gf()
        pair.torch()
        sync_torch()
    inner_gf = _calibrate(pair.gradflow, sync_gf, settings.min_sample_s)
    inner_torch = _calibrate(pair.torch, sync_torch, settings.min_sample_s)
    settle_s = SPIN_SETTLE_S if settings.device == "cpu" and settings.threads > 1 else 0.0
    gf_times, torch_times = [], []
    for _ in range(settings.repeats):
        gf_times.append(_sample(pair.gradflow, sync_gf, inner_gf, settle_s))
        torch_times.append(_sample(pair.torch, sync_torch, inner_torch, settle_s))
    return stats(gf_times), stats(torch_times), (inner_gf, inner_torch)


def _scaled(st, factor):
    return {k: (v * factor if k != "n" else v) for k, v in st.items()}


def run_case(case, settings):
    """Run one case -> list of rows; never raises: failures become 'error' / 'not available' rows."""
    row = {"name": case.name, "description": case.description, "kind": case.kind,
           "unit": case.unit, "status": "ok", "note": ""}
    t0 = time.perf_counter()
    try:
        if case.kind == "probe":
            rows = []
            for extra in case.build(settings):   # a probe may measure several rows at once
                r = dict(row, **extra)
                r["wall_s"] = round(time.perf_counter() - t0, 2)
                rows.append(r)
            return rows
        else:
            pair = case.build(settings)
            row["note"] = pair.note
            if pair.check is not None:
                row.update(pair.check())
            gf_st, torch_st, inner = time_pair(pair, settings)
            factor = 1e3 if case.unit == "ms" else 1e6
            if pair.ops_per_call:
                factor /= pair.ops_per_call
                row["ops_per_call"] = pair.ops_per_call
            row["gradflow"] = _scaled(gf_st, factor)
            row["torch"] = _scaled(torch_st, factor)
            row["calls_per_sample"] = {"gradflow": inner[0], "torch": inner[1]}
            row["ratio"] = gf_st["median"] / torch_st["median"]
    except NotAvailable as exc:
        row["status"] = "not available"
        row["note"] = str(exc)
    except Exception as exc:   # one broken row must not hide the others
        row["status"] = "error"
        row["note"] = f"{type(exc).__name__}: {exc}"
        row["traceback"] = traceback.format_exc(limit=8)
    row["wall_s"] = round(time.perf_counter() - t0, 2)
    gc.collect()
    return [row]


def rel_diff(got, expected):
    """max |got - expected| / max(|expected|), both converted to float64 numpy."""
    got = np.asarray(got, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    if got.shape != expected.shape:
        raise RuntimeError(f"shape mismatch: gradflow {got.shape} vs torch {expected.shape}")
    scale = float(np.abs(expected).max()) if expected.size else 1.0
    return float(np.abs(got - expected).max()) / max(scale, 1e-30) if expected.size else 0.0


# ---- printing -------------------------------------------------------------------------

def _fmt_value(st, unit):
    if st is None:
        return "-"
    if isinstance(st, dict):
        med = st["median"]
        spread = f" [{st['q1']:.3g}-{st['q3']:.3g}]" if st.get("n", 1) > 1 else ""
        return f"{med:.3g}{spread}"
    return f"{st:.3g}"


def table_lines(rows, markdown=False):
    header = ("workload", "unit", "gradflow (median [IQR])", "torch (median [IQR])", "ratio gf/torch", "note")
    body = []
    for r in rows:
        if r["status"] == "ok":
            ratio = f"{r['ratio']:.2f}x" if r.get("ratio") is not None else "-"
            note = r.get("note", "")
            if r.get("max_rel_diff") is not None:
                flag = " MISMATCH" if r["max_rel_diff"] > r.get("tolerance", 1e-3) else ""
                note = (note + f" diff {r['max_rel_diff']:.1e}{flag}").strip()
            body.append((r["name"], r["unit"], _fmt_value(r.get("gradflow"), r["unit"]),
                         _fmt_value(r.get("torch"), r["unit"]), ratio, note))
        else:
            body.append((r["name"], r["unit"], r["status"], "", "", r["note"][:90]))
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in body]
        return lines
    widths = [max(len(str(row[i])) for row in [header] + body) for i in range(len(header) - 1)]
    out = []
    for row in [header] + body:
        out.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths)) + "  " + str(row[-1]))
    return out
