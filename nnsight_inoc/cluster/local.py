"""A one-node Ray cluster on 127.0.0.1 for tests and single hosts, started and stopped by PID.

Loopback only, without a network namespace. ``ray start --node-ip-address 127.0.0.1`` alone
is not enough: Ray replaces a loopback node address with the machine's outward one
(``ray._private.services.resolve_ip_for_localhost``), which it finds with a UDP connect to
8.8.8.8:53 (``network_util.cc``); that is why ``tools/ndif_local/start.sh`` runs its Ray head in
a namespace that only has ``lo``. In Ray's single-node mode (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``,
read by ``ray._private.services.get_node_ip_address``) the node address is 127.0.0.1 and
nothing probes. Seen with ray 2.60.0 inside a namespace with only ``lo`` (prototype, branch
``ray``): with the variable, no probe in any Ray log and every listening socket (GCS, raylet,
agents, client server, workers, driver) on 127.0.0.1; without it, the probe from ``ray start``,
the runtime-env agent and the driver. The price: no second node can join (a single host needs
none; several hosts use an existing cluster, README "Running on a cluster"). ``start`` still
checks every socket the cluster's processes listen on and refuses to go on if one is not loopback.

Why our own start and stop: ``ray stop`` kills every Ray process of the user on the machine,
other sessions' included. Here ``ray start --block`` runs in a new session, every process of
that session (and every descendant) is recorded with its start time, and ``stop`` signals only
those PIDs: SIGTERM to the leader (which stops its children), then SIGTERM and SIGKILL to any
recorded process still alive, each wait bounded.

Worker processes: ``num_cpus=N`` lets Ray run at most N one-CPU tasks at once, each in its own
worker process. ``gpu_ids`` are real devices: the head is started with ``CUDA_VISIBLE_DEVICES``
set to them, and Ray gives each GPU task its own device from that list. ``num_gpus`` without
``gpu_ids`` is only what Ray is told (a scheduling fiction on a machine without GPUs, as
``start.sh`` uses); Ray still gives each GPU task its own ``CUDA_VISIBLE_DEVICES``.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from nnsight_inoc.cluster.ray_env import LOOPBACK, QUIET_ENV, SINGLE_NODE_ENV, ray_missing

STARTED = "Ray runtime started."  # printed by `ray start` once the node is up
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def free_ports(n: int) -> list[int]:
    """`n` distinct TCP ports free on 127.0.0.1 right now (all held open together so none repeats)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind((LOOPBACK, 0))
        return [s.getsockname()[1] for s in socks]


def _stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, ppid, session id, start time in clock ticks) from /proc/<pid>/stat; None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    rest = text[text.rindex(")") + 2:].split()  # rest[k] is field k+3 of proc(5)
    return rest[0], int(rest[1]), int(rest[3]), int(rest[19])


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def alive(pid: int, start: int) -> bool:
    """True while this exact process (not a later one reusing its PID) exists and is not a zombie."""
    st = _stat(pid)
    return st is not None and st[3] == start and st[0] != "Z"


def _decode(hex_addr: str) -> str:
    """An address from /proc/net/{tcp,udp}[6] (little-endian 32-bit words) as text."""
    raw = bytes.fromhex(hex_addr)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words))


def is_loopback(addr: str) -> bool:
    ip = ipaddress.ip_address(addr)
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def bound_sockets(pids: set[int]) -> list[tuple[int, str, str, int]]:
    """(pid, protocol, address, port) of every listening TCP and bound UDP socket of `pids`."""
    inodes: dict[str, int] = {}
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, PermissionError, ProcessLookupError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if link.startswith("socket:["):
                        inodes[link[8:-1]] = pid
    out = []
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        for line in Path(f"/proc/net/{proto}").read_text().splitlines()[1:]:
            cols = line.split()
            local, state, inode = cols[1], cols[3], cols[9]
            addr, port = local.split(":")
            if inode in inodes and (state == "0A" or proto.startswith("udp")):  # 0A: TCP LISTEN
                out.append((inodes[inode], proto, _decode(addr), int(port, 16)))
    return out


def _term_with_parent() -> None:
    """In the child before exec: SIGTERM when the thread that started it dies (Linux ``PR_SET_PDEATHSIG``).

    Why: a driver killed outright (SIGKILL, a crash, Ray's own abort after a SIGTERM) runs no
    ``stop``; the kernel then still sends SIGTERM to ``ray start --block``, which stops its children.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


class LocalCluster:
    """A Ray head on 127.0.0.1 with `num_cpus` CPU slots and GPUs, as a context manager.

    num_cpus: CPU slots (>= 1): how many one-CPU tasks run at once.
    num_gpus: GPUs Ray is told about; default ``len(gpu_ids)``.
    gpu_ids: real CUDA device indices for the cluster (distinct, >= 0); the head's
        ``CUDA_VISIBLE_DEVICES``. None leaves the variable as this process has it.
    ``address`` ("127.0.0.1:<port>") is what ``ray.init`` and ``run_tasks`` take. Every port is
    picked free on loopback, and Ray's files go to a fresh short folder under /tmp (its socket
    paths must stay under 107 bytes), removed on stop unless the start failed. Errors: ValueError
    for bad arguments; RuntimeError when Ray is missing, the head does not come up within
    `start_timeout_s` (with the log's tail), a process binds a non-loopback address, or a process
    survives `stop`.
    """

    def __init__(self, num_cpus: int, num_gpus: int | None = None, *, gpu_ids: Sequence[int] | None = None,
                 object_store_bytes: int | None = None, start_timeout_s: float = 90.0,
                 stop_timeout_s: float = 15.0) -> None:
        if gpu_ids is not None and (len(set(gpu_ids)) != len(gpu_ids) or any(g < 0 for g in gpu_ids) or not gpu_ids):
            raise ValueError(f"gpu_ids must be distinct device indices >= 0, got {list(gpu_ids)}")
        num_gpus = len(gpu_ids) if num_gpus is None and gpu_ids is not None else (num_gpus or 0)
        if num_cpus < 1 or num_gpus < 0:
            raise ValueError(f"need num_cpus >= 1 and num_gpus >= 0, got {num_cpus}, {num_gpus}")
        self.num_cpus, self.num_gpus, self.gpu_ids = num_cpus, num_gpus, gpu_ids
        self.object_store_bytes = object_store_bytes
        self.start_timeout_s, self.stop_timeout_s = start_timeout_s, stop_timeout_s
        self.address = ""
        self.temp_dir: Path | None = None
        self.start_seconds = float("nan")
        self._proc: subprocess.Popen[bytes] | None = None
        self._seen: dict[int, int] = {}  # pid -> start time, every cluster process ever recorded

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _argv(self, ports: list[int]) -> list[str]:
        gcs, node, objm, client, agent, agent_grpc, renv, metrics, dash = ports[:9]
        # `python -m ray.scripts.scripts` (what the `ray` command runs) also works where the package was
        # installed with `pip --target` and the `ray` script is not next to the interpreter (the GPU machine).
        argv = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
                f"--node-ip-address={LOOPBACK}", f"--port={gcs}",
                f"--num-cpus={self.num_cpus}", f"--num-gpus={self.num_gpus}", "--include-dashboard=false",
                f"--dashboard-host={LOOPBACK}", f"--dashboard-port={dash}", f"--node-manager-port={node}",
                f"--object-manager-port={objm}", f"--dashboard-agent-listen-port={agent}",
                f"--dashboard-agent-grpc-port={agent_grpc}", f"--runtime-env-agent-port={renv}",
                f"--metrics-export-port={metrics}", f"--temp-dir={self.temp_dir}", "--disable-usage-stats"]
        if self.object_store_bytes is not None:
            argv.append(f"--object-store-memory={self.object_store_bytes}")
        # Ray starts its client server (default port 10001) only when grpc is importable, and then
        # `ray start` refuses the port option without it (`ray._private.utils.get_ray_client_dependency_error`).
        if importlib.util.find_spec("grpc") is not None:
            argv.append(f"--ray-client-server-port={client}")
        return argv

    def start(self) -> None:
        if self._proc is not None:
            raise RuntimeError(f"cluster already started at {self.address}")
        missing = ray_missing()
        if missing:
            raise RuntimeError(missing)
        self.temp_dir = Path(tempfile.mkdtemp(prefix="rayx", dir="/tmp"))
        ports = free_ports(11)
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # never join another cluster
        # The autoscaler's and dashboard's metrics ports are fixed defaults (44217, 44227) otherwise.
        env |= SINGLE_NODE_ENV | QUIET_ENV | {"AUTOSCALER_METRIC_PORT": str(ports[9]),
                                              "DASHBOARD_METRIC_PORT": str(ports[10])}
        if self.gpu_ids is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in self.gpu_ids)
        log_path = self.temp_dir / "ray_start.log"
        t0 = time.monotonic()
        with log_path.open("wb") as log:
            self._proc = subprocess.Popen(self._argv(ports), stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, env=env, start_new_session=True,
                                          preexec_fn=_term_with_parent)
        self._record()
        self.address = f"{LOOPBACK}:{ports[0]}"
        while STARTED not in log_path.read_text(errors="replace"):
            self._record()
            if self._proc.poll() is not None or time.monotonic() - t0 > self.start_timeout_s:
                why = (f"exited with {self._proc.returncode}" if self._proc.poll() is not None
                       else f"not up after {self.start_timeout_s:.0f} s")
                tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
                self.stop(keep_files=True)
                raise RuntimeError(f"Ray head {why}; logs in {self.temp_dir}; last lines of {log_path.name}:\n{tail}")
            time.sleep(0.2)
        self.start_seconds = time.monotonic() - t0
        self._record()
        outside = [s for s in bound_sockets(set(self.pids())) if not is_loopback(s[2])]
        if outside:
            self.stop(keep_files=True)
            raise RuntimeError(f"Ray processes bound non-loopback addresses {outside}; stopped; "
                               f"logs in {self.temp_dir}")

    def _record(self) -> None:
        """Add every live process of the leader's session, or descended from it, to the record."""
        if self._proc is None:
            return
        leader = self._proc.pid
        stats = {pid: st for pid in _all_pids() if (st := _stat(pid)) is not None}
        ours = {pid for pid, st in stats.items() if st[2] == leader or pid == leader}
        grew = True
        while grew:  # descendants that started a session of their own
            new = {pid for pid, st in stats.items() if st[1] in ours and pid not in ours}
            ours |= new
            grew = bool(new)
        for pid in ours:
            self._seen.setdefault(pid, stats[pid][3])

    def pids(self) -> list[int]:
        """Live processes of this cluster now (leader, Ray services and workers), recorded as it goes."""
        self._record()
        return sorted(pid for pid, start in self._seen.items() if alive(pid, start))

    def recorded(self) -> dict[int, int]:
        """Every process this cluster ever had: pid -> start time in clock ticks."""
        return dict(self._seen)

    def _wait_gone(self, pids: dict[int, int], limit_s: float) -> dict[int, int]:
        t0 = time.monotonic()
        while True:
            if self._proc is not None:
                self._proc.poll()  # reaps the leader, so it does not linger as a zombie
            left = {p: s for p, s in pids.items() if alive(p, s)}
            if not left or time.monotonic() - t0 > limit_s:
                return left
            time.sleep(0.1)

    def stop(self, keep_files: bool = False) -> None:
        """Stop every recorded process by PID (bounded waits); remove Ray's folder unless `keep_files`."""
        if self._proc is None:
            return
        self._record()
        leader = {self._proc.pid: self._seen.get(self._proc.pid, -1)}
        with contextlib.suppress(ProcessLookupError):
            if alive(self._proc.pid, leader[self._proc.pid]):
                os.kill(self._proc.pid, signal.SIGTERM)  # `ray start --block` then stops its children
        self._wait_gone(leader, self.stop_timeout_s)
        for sig, wait in ((signal.SIGTERM, self.stop_timeout_s), (signal.SIGKILL, 5.0)):
            left = {p: s for p, s in self._seen.items() if alive(p, s)}
            for pid in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            if not self._wait_gone(left, wait):
                break
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=5)
        left = {p: s for p, s in self._seen.items() if alive(p, s)}
        self._proc = None
        if left:
            raise RuntimeError(f"Ray processes {sorted(left)} survived SIGKILL; logs in {self.temp_dir}")
        if not keep_files and self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)

    def describe(self) -> dict[str, Any]:
        """What provenance records about the cluster: address, slots, start time and every PID it had."""
        self._record()
        return {"address": self.address, "num_cpus": self.num_cpus, "num_gpus": self.num_gpus,
                "gpu_ids": None if self.gpu_ids is None else list(self.gpu_ids),
                "start_seconds": round(self.start_seconds, 2), "pids": sorted(self._seen)}


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """Turn SIGTERM into SystemExit(143) inside the block, so `with LocalCluster(...)` still stops its processes.

    Why: Python's default SIGTERM ends the process at once, leaving a cluster it started running.
    Only in the main thread (elsewhere signal handlers cannot be set; the block runs unchanged).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _exit(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
