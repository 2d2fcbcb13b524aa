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
    from vlmlab.runtime import autocast
    cuda = torch.device("cuda")
    assert autocast(cuda, "fp16").fast_dtype == torch.float16 and autocast(cuda, "fp16").device == "cuda"
    assert autocast(cuda, "bf16").fast_dtype == torch.bfloat16
    assert autocast(cuda, "fp32").device == "cpu" and not autocast(cuda, "fp32")._enabled    # fp32: off
    assert not autocast(torch.device("cpu"), "fp16")._enabled                              # the CPU runs fp32
    with pytest.raises(ValueError, match="precision 'half'"):
        autocast(cuda, "half")


def test_load_clip_sets_the_bundle_precision():
    from vlmlab.models import load_clip
    bundle = load_clip("embedded", device="cpu", precision="fp16")
    assert bundle.precision == "fp16"
    assert bundle.identity == load_clip("embedded", device="cpu").identity   # CPU features are fp32 either way
    with pytest.raises(ValueError, match="precision='fp8'"):
        load_clip("embedded", device="cpu", precision="fp8")
