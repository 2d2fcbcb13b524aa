"""Runtime services: worker processes (process_map, exit_with_parent)."""
from __future__ import annotations

import os

import pytest
import torch

from vlmlab.runtime import process_map


def _scaled(context, item):
    torch.manual_seed(item)
    return context * item + torch.rand(()).item(), os.getpid(), torch.get_num_threads()


def test_process_map_gives_the_in_process_results_in_order():
    items = [5, 1, 4, 2, 3]
    here = process_map(_scaled, items, context=10, workers=1)
    there = process_map(_scaled, items, context=10, workers=2, threads=1)
    assert [r[0] for r in there] == [r[0] for r in here]
    assert [int(r[0] // 10) for r in there] == items              # 10 * item + u, u in [0, 1)
    assert {r[1] for r in here} == {os.getpid()}
    assert os.getpid() not in {r[1] for r in there}            # it really ran elsewhere
    assert {r[2] for r in there} == {1}
    first_costliest = process_map(_scaled, items, context=10, workers=2, threads=1, cost=lambda x: x)
    assert [r[0] for r in first_costliest] == [r[0] for r in here]  # submission order never shows in the results


_ORPHAN_PARENT = """
import concurrent.futures as cf, multiprocessing as mp, os, sys, time
from vlmlab.runtime import exit_with_parent
if __name__ == "__main__":
    pool = cf.ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"), initializer=exit_with_parent,
                                  initargs=(os.getpid(), 0.1))
    print(pool.submit(os.getpid).result(), flush=True)
    pool.submit(time.sleep, 600)               # a long job the worker would go on with
    time.sleep(600)
"""


def test_workers_exit_when_their_parent_is_killed(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "parent.py"
    script.write_text(_ORPHAN_PARENT)
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                              env=os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)})
    worker = int(parent.stdout.readline())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()

    def alive(pid: int) -> bool:
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().split(") ")[1][0] != "Z"         # a zombie has exited
        except FileNotFoundError:
            return False

    deadline = time.monotonic() + 20
    while alive(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    still = alive(worker)
    if still:
        os.kill(worker, signal.SIGKILL)
    assert not still, "the worker outlived its killed parent"


@pytest.mark.filterwarnings("ignore:User provided device_type of 'cuda'")
def test_autocast_follows_the_precision_policy():
    from vlmlab.runtime import autocast, cpu_has_bf16
    cuda = torch.device("cuda")
    assert autocast(cuda, "fp16").fast_dtype == torch.float16 and autocast(cuda, "fp16").device == "cuda"
    assert autocast(cuda, "bf16").fast_dtype == torch.bfloat16
    assert autocast(cuda, "fp32").device == "cpu" and not autocast(cuda, "fp32")._enabled    # fp32: off
    cpu = torch.device("cpu")
    assert not autocast(cpu, "fp16")._enabled and not autocast(cpu, "fp32")._enabled       # fp16 runs fp32 on the CPU
    if cpu_has_bf16():                                                                     # bf16 autocasts where it is fast
        assert autocast(cpu, "bf16").fast_dtype == torch.bfloat16 and autocast(cpu, "bf16").device == "cpu"
    else:
        assert not autocast(cpu, "bf16")._enabled
    with pytest.raises(ValueError, match="precision 'half'"):
        autocast(cuda, "half")


def test_cpu_without_bf16_kernels_runs_fp32_and_says_so(monkeypatch, caplog):
    import vlmlab.runtime as rt
    from vlmlab.models import load_clip
    monkeypatch.setattr(rt, "cpu_has_bf16", lambda: False)
    monkeypatch.setattr(rt, "_WARNED_BF16", False)
    logger = rt.get_logger()                                        # the package logger does not propagate
    logger.addHandler(caplog.handler)
    try:
        assert rt.effective_precision(torch.device("cpu"), "bf16") == "fp32"
        assert rt.effective_precision(torch.device("cpu"), "bf16") == "fp32"
    finally:
        logger.removeHandler(caplog.handler)
    assert sum("no bf16 kernels" in r.message for r in caplog.records) == 1                # warned once
    assert not rt.autocast(torch.device("cpu"), "bf16")._enabled
    assert rt.effective_precision(torch.device("cuda"), "bf16") == "bf16"                  # CUDA is not the CPU
    bundle = load_clip("embedded", device="cpu", precision="bf16")
    assert bundle.identity == load_clip("embedded", device="cpu").identity                 # the fp32 features


@pytest.mark.skipif("not __import__('vlmlab.runtime').runtime.cpu_has_bf16()", reason="this CPU has no bf16 kernels")
def test_cpu_bf16_autocast_runs_matrix_products_in_bf16_and_stays_close_to_fp32():
    from vlmlab.models import load_clip
    bundle = load_clip("embedded", device="cpu", precision="bf16")
    x = torch.rand(4, 3, bundle.image_size, bundle.image_size)
    with torch.inference_mode():
        with bundle.autocast():
            assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16
            z16 = bundle.encode_images(bundle.normalize_pixels(x))
        z32 = bundle.encode_images(bundle.normalize_pixels(x))
    assert z16.dtype == torch.float32 and not torch.equal(z16, z32)           # it really ran in bf16
    assert torch.nn.functional.cosine_similarity(z16, z32).min() > 0.99       # bf16 keeps ~3 significant digits


def test_load_clip_sets_the_bundle_precision():
    from vlmlab.models import load_clip
    from vlmlab.runtime import cpu_has_bf16
    bundle = load_clip("embedded", device="cpu", precision="fp16")
    assert bundle.precision == "fp16"
    assert bundle.identity == load_clip("embedded", device="cpu").identity   # CPU fp16 runs fp32: the same features
    bf16 = load_clip("embedded", device="cpu", precision="bf16")
    if cpu_has_bf16():
        assert bf16.identity == bundle.identity + "@bf16"                   # bf16 autocasts on the CPU: other features
    with pytest.raises(ValueError, match="precision='fp8'"):
        load_clip("embedded", device="cpu", precision="fp8")


def test_thread_map_keeps_the_order_and_uses_threads_only_when_asked():
    import threading
    import time as _time

    from vlmlab.runtime import thread_map

    def slow(x):
        _time.sleep(0.01 * (5 - x))                   # later items finish first
        return x * x, threading.get_ident()

    out = thread_map(slow, range(5), workers=4)
    assert [v for v, _ in out] == [0, 1, 4, 9, 16]
    assert len({t for _, t in out}) > 1 and threading.get_ident() not in {t for _, t in out}
    here = {t for _, t in thread_map(slow, range(3), workers=1)} | {t for _, t in thread_map(slow, [2], workers=4)}
    assert here == {threading.get_ident()}
    assert thread_map(slow, [], workers=4) == []
