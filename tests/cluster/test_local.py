"""The local Ray cluster's own checks that need no running cluster (the running one is tested in test_ray_tasks)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from nnsight_inoc.cluster.local import LocalCluster, alive, is_loopback, sigterm_as_exit
from tests._ray import require_ray


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="distinct"):
        LocalCluster(num_cpus=2, gpu_ids=[0, 0])
    with pytest.raises(ValueError, match="num_cpus >= 1"):
        LocalCluster(num_cpus=0)
    c = LocalCluster(num_cpus=4, gpu_ids=[2, 3])
    assert c.num_gpus == 2 and c.gpu_ids == [2, 3]


def test_loopback_addresses():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("::ffff:127.0.0.1")
    assert not is_loopback("10.0.0.1") and not is_loopback("0.0.0.0")


def test_sigterm_becomes_system_exit_inside_the_block_only():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as info, sigterm_as_exit():
        os.kill(os.getpid(), signal.SIGTERM)
    assert info.value.code == 143 and signal.getsignal(signal.SIGTERM) is before


@pytest.mark.ray
def test_cluster_that_does_not_come_up_is_stopped_with_a_clear_error():
    require_ray()
    c = LocalCluster(num_cpus=1, start_timeout_s=0.5)
    with pytest.raises(RuntimeError, match=r"not up after 0 s.*logs in"):
        c.start()
    assert not [p for p, s in c.recorded().items() if alive(p, s)]
    assert c.temp_dir is not None and c.temp_dir.exists()  # logs kept for the error
    shutil.rmtree(c.temp_dir)


@pytest.mark.ray
def test_cluster_goes_down_with_a_driver_killed_outright(tmp_path):
    """A driver killed by SIGKILL runs no `stop`; the kernel's parent-death signal still stops its cluster."""
    require_ray()
    code = ("import json, sys, time\n"
            "from nnsight_inoc.cluster.local import LocalCluster\n"
            "c = LocalCluster(num_cpus=1)\nc.start()\n"
            "print(json.dumps({'pids': c.pids(), 'dir': str(c.temp_dir)}), flush=True)\ntime.sleep(300)\n")
    driver = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        info = json.loads(driver.stdout.readline())
    finally:
        driver.kill()
        driver.wait()
    t0 = time.monotonic()
    while [p for p in info["pids"] if os.path.exists(f"/proc/{p}")] and time.monotonic() - t0 < 60:
        time.sleep(0.5)
    assert not [p for p in info["pids"] if os.path.exists(f"/proc/{p}")], "cluster outlived its driver"
    shutil.rmtree(info["dir"], ignore_errors=True)  # its folder is left: nobody ran stop()
