"""Runs ON the GPU machine: the whole multi-study campaign across every visible GPU, resumably.

    python3 gpu/campaign.py run SECONDS    start (or resume) the campaign, watch it for SECONDS, bundle to $OUT
    python3 gpu/campaign.py next-phase     after a finished phase: let the next `run` start one with new settings

Why a detached supervisor: a device call lasts at most 10 minutes but the campaign lasts longer. `run`
starts the supervisor in its own session (if none is alive) and only watches it; the next call watches
again. If the supervisor did not survive the end of a call, `run` starts it again and everything resumes:
prep stages are skipped once their summary exists, finetune workers skip finished runs and take over
claims of dead processes (nnsight_inoc/parallel.py).

Lanes (G = number of GPUs):
  bench on GPU 0:   the BENCHES entries in turn (timings of one card, with the other GPUs busy)
  prep  on GPU G-1: extract + align (+ transfer where the config enables it) of each study in CAMPAIGN_PREP (GPU 0 after the bench if G = 1)
  slots: finetune workers per GPU (WORKERS_PER_GPU, else as many as fit at GB_PER_WORKER), each working down JOBS in order; a GPU's slots start
         when its prep/bench lanes are done; a job waits until its study's prep is done.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import threading
import time
import tomllib
from pathlib import Path

ROOT = Path("/root/campaign")
CODE = ROOT / "code"
RUNS = ROOT / "runs"
LOGS = ROOT / "logs"
MODEL = "qwen2.5-coder-1.5b-instruct"
STUDIES = {s: (f"gpu/{s}_gpu.toml", f"artifacts/{s}_{MODEL}") for s in ("allcaps", "spanish", "politeness")}
# Derived studies: another config over a copy of a study's run folder without its finetune runs, so only the
# LoRA runs are redone (extract, align and SFT completions are the original's): name -> (config, source study).
# allcaps_tf32: the main conditions trained with TF32 matmuls; allcaps_rerun: the same fp32 runs again, the
# run-to-run floor the TF32 differences are judged against (issue 7, study time).
DERIVED = {"allcaps_tf32": ("gpu/allcaps_tf32_gpu.toml", "allcaps"), "allcaps_rerun": ("gpu/allcaps_gpu.toml", "allcaps")}
STUDIES.update({d: (cfg, STUDIES[src][1]) for d, (cfg, src) in DERIVED.items()})
# Issue 23's decisive sweep: its own config and run folder (artifacts/decisive_<trait>_<model>: the trait's data/ at
# first; later sessions start from the published folder copied back, so finished runs are skipped).
STUDIES.update({f"decisive_{t}": (f"gpu/decisive_{t}.toml", f"artifacts/decisive_{t}_{MODEL}") for t in ("allcaps", "spanish")})
# CAMPAIGN_STUDIES restricts the run folders set up and bundled (at most 8 files come back from a device call).
if os.environ.get("CAMPAIGN_STUDIES"):
    STUDIES = {s: STUDIES[s] for s in os.environ["CAMPAIGN_STUDIES"].split(",")}
PREP = tuple(os.environ.get("CAMPAIGN_PREP", "spanish,politeness").split(","))  # allcaps extract/align were published earlier; its run folder travels with them
# A job is study:which or study:which:seeds (seeds joined by '+', e.g. allcaps:steering:0 then later
# allcaps:steering:1+2), so a sweep's first seed can come before another study's runs.
JOBS = [tuple(j.split(":")) for j in os.environ.get(
    "CAMPAIGN_JOBS", "allcaps:all,spanish:main,politeness:main,allcaps:steering,spanish:variants,politeness:variants"
).split(",")]
# The bench lane (GPU 0, before its finetune workers): name -> (argv after the interpreter, output option).
# Each writes into bench/<name>/ (`--out-dir DIR` for cli.py bench, `--out FILE` for the profile);
# CAMPAIGN_BENCH=none skips the lane.
_BENCH = ["cli.py", "bench", "--config", "gpu/allcaps_gpu.toml"]
BENCHES: dict[str, tuple[list[str], str]] = {
    "bf16_b8": ([*_BENCH, "--dtype", "bfloat16"], "--out-dir"),
    "profile_cuda": (["perf/profile_trace.py", "--model", MODEL, "--device", "cuda", "--dtype", "bfloat16",
                      "--batch", "8", "--words", "90", "--mem-traces", "20", "--mem-limit-gb", "20"], "--out"),
    # the study's own LoRA steps, phase by phase, in fp32, TF32 and bf16 autocast (on a derived run folder)
    "train_step": (["perf/profile_train_step.py", "--config", "gpu/allcaps_gpu.toml", "--run-dir",
                    str(RUNS / "allcaps_rerun"), "--policy", "model", "--policy", "tf32", "--policy", "bfloat16"],
                   "--out"),
    "fp32_real_b8": ([*_BENCH, "--dtype", "float32", "--scale", "real"], "--out-dir"),
    "bf16_7b_b32": ([*_BENCH, "--dtype", "bfloat16", "--scale", "7b", "--batch-size", "32"], "--out-dir"),
}
BENCH_ON = os.environ.get("CAMPAIGN_BENCH", "all") != "none"
TRANSFER_IN_PREP = os.environ.get("CAMPAIGN_TRANSFER", "prep") != "after"
# Peak memory of one fp32 finetune worker on the 1.5B model (probe batch 16, drift generation) was about 45-50 GB
# on 2026-11-27; two per GPU peaked at 98 GB of an H200's 139. An 80 GB H100 takes one.
GB_PER_WORKER = 60


def workers_per_gpu(total_mib: int, override: str | None = None) -> int:
    """Finetune workers per GPU: WORKERS_PER_GPU if set, else as many as fit in GB_PER_WORKER each (at least 1)."""
    if override:
        n = int(override)
        if n < 1:
            raise ValueError(f"WORKERS_PER_GPU must be >= 1, got {n}")
        return n
    return max(1, int(total_mib / 1024 // GB_PER_WORKER))


def threads_per_process(cores: int, processes: int) -> int:
    """CPU threads per process so that the campaign's processes share the cores instead of each taking all.

    Why: torch starts one intra-op thread per core in every process. On the 64-core H100 host, 4 workers plus a
    bench lane each had 64 threads, and a CPU-side ``isfinite`` over one trace's copied gradients took 0.09 s
    (results/bench/README.md). Children inherit OMP_NUM_THREADS through env_for; an explicit setting wins.
    """
    if processes < 1:
        raise ValueError(f"processes must be >= 1, got {processes}")
    return max(1, cores // processes)


def gpu_memory_mib() -> int:
    out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True, check=True).stdout.split()
    return min(int(x) for x in out)


def n_gpus() -> int:
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=True).stdout
    return len([x for x in out.splitlines() if x.startswith("GPU ")])


def env_for(gpu: int, worker: str = "") -> dict[str, str]:
    env = dict(os.environ)
    env.update(CUDA_VISIBLE_DEVICES=str(gpu), PYTHONUNBUFFERED="1", NNSIGHT_INOC_HOME="/root/m/home",
               PYTHONPATH=f"/root/site:{CODE}")
    if worker:
        env["NNSIGHT_INOC_WORKER"] = worker
    return env


def sh(argv: list[str], gpu: int, log: Path, worker: str = "") -> int:
    with log.open("a") as fh:
        fh.write(f"\n=== {time.strftime('%H:%M:%S')} {' '.join(argv)}\n")
        fh.flush()
        rc = subprocess.run(argv, cwd=CODE, env=env_for(gpu, worker), stdout=fh, stderr=subprocess.STDOUT).returncode
        fh.write(f"=== {time.strftime('%H:%M:%S')} exit {rc}\n")  # a failed stage is visible in its log, not only by absence
        return rc


def cli(study: str, *args: str) -> list[str]:
    cfg, _ = STUDIES[study]
    return [sys.executable, "cli.py", *args, "--config", cfg, "--run-dir", str(RUNS / study)]


def transfer_enabled(config: Path) -> bool:
    """Whether a study config asks for the transfer stage (``[transfer] enabled``; off when absent, as in the CLI)."""
    with config.open("rb") as fh:
        return bool(tomllib.load(fh).get("transfer", {}).get("enabled", False))


def prep(study: str, gpu: int) -> None:
    run = RUNS / study
    log = LOGS / f"prep_{study}.log"
    if (run / ".prep_done").exists() or (run / ".prep_failed").exists():
        return
    ok = True
    if not (run / "extract" / "extract_summary.json").exists():
        ok = sh(cli(study, "extract"), gpu, log) == 0
    if ok and not (run / "align" / "align_summary.json").exists():
        ok = sh(cli(study, "align", "--condition", "all"), gpu, log) == 0
    # issue 16's cross-context transfer is measured before training, at the PEFT init, so it belongs to prep, unless
    # CAMPAIGN_TRANSFER=after moves it behind the finetune jobs (it reads no trained run: a short session trains first)
    if ok and TRANSFER_IN_PREP:
        ok = transfer(study, gpu)
    (run / (".prep_done" if ok else ".prep_failed")).touch()


def transfer(study: str, gpu: int) -> bool:
    """The transfer stage of a study whose config enables it, unless done; True when it is done or not asked for."""
    run = RUNS / study
    if not transfer_enabled(CODE / STUDIES[study][0]) or (run / "transfer" / "transfer.json").exists():
        return True
    return sh(cli(study, "transfer"), gpu, LOGS / f"prep_{study}.log") == 0


def bench(gpu: int) -> None:
    for name, (argv, out_opt) in BENCHES.items():
        out = ROOT / "bench" / name
        if (out / ".done").exists():
            continue
        out.mkdir(parents=True, exist_ok=True)
        dest = [out_opt, str(out / "profile.json" if out_opt == "--out" else out)]
        if sh([sys.executable, *argv, *dest], gpu, LOGS / "bench.log") == 0:
            (out / ".done").touch()


def slot(gpu: int, k: int, after: list[threading.Thread]) -> None:
    for t in after:
        t.join()
    name = f"g{gpu}w{k}"
    for study, which, *seeds in JOBS:
        run = RUNS / study
        if study in PREP:
            while not ((run / ".prep_done").exists() or (run / ".prep_failed").exists()):
                time.sleep(5)
            if (run / ".prep_failed").exists():
                continue
        if which == "steering" and not (CODE / "nnsight_inoc" / "steering.py").exists():
            continue
        only = ["--seeds", seeds[0].replace("+", ",")] if seeds else []
        sh(cli(study, "finetune", "--which", which, "--worker", *only), gpu, LOGS / f"worker_{name}.log", worker=name)


def supervise() -> None:
    g = n_gpus()
    lanes: dict[int, list[threading.Thread]] = {i: [] for i in range(g)}

    def preps_on(gpu: int, studies: list[str], then_bench: bool) -> None:
        for s in studies:
            prep(s, gpu)
        if then_bench:
            bench(gpu)

    if g == 1:
        plan = {0: ([p for p in PREP if p], BENCH_ON)}
    else:  # the benchmark on GPU 0, every prep on the last GPU; the GPUs between start finetuning at once
        plan = {0: ([], BENCH_ON), g - 1: ([p for p in PREP if p], False)}
    for gpu, (studies, b) in plan.items():
        t = threading.Thread(target=preps_on, args=(gpu, studies, b))
        t.start()
        lanes[gpu].append(t)
    per_gpu = workers_per_gpu(gpu_memory_mib(), os.environ.get("WORKERS_PER_GPU"))
    os.environ.setdefault("OMP_NUM_THREADS", str(threads_per_process(os.cpu_count() or 1, g * per_gpu + 1)))
    print(f"{g} GPUs, {per_gpu} finetune workers each, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}", flush=True)
    slots = [threading.Thread(target=slot, args=(gpu, k, lanes[gpu])) for gpu in range(g) for k in range(per_gpu)]
    for t in slots:
        t.start()
    for t in slots:
        t.join()
    if not TRANSFER_IN_PREP:
        for s in PREP:
            if s and (RUNS / s / ".prep_done").exists():
                transfer(s, 0)
    (ROOT / "finished").touch()


def alive(pid_file: Path) -> bool:
    try:
        os.kill(int(pid_file.read_text()), 0)
        return True
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return False


def _derived_ignore(folder: str, names: list[str]) -> set[str]:
    """A derived study's copy leaves out the source's runs and worker provenance; it keeps finetune/pre, the
    base model's behaviour before training, cached under keys of prompt and model, so it is valid for both."""
    if Path(folder).name == "finetune":
        return {n for n in names if n != "pre"}
    return {n for n in names if n.startswith("provenance.worker")}


def setup() -> None:
    """First call only: code, run folders (from the carried artifacts) and folders."""
    for d in (ROOT, RUNS, LOGS):
        d.mkdir(parents=True, exist_ok=True)
    if CODE.exists():
        shutil.rmtree(CODE)
    CODE.mkdir()
    for item in ("cli.py", "nnsight_inoc", "gpu", "experiments"):
        src = Path(item)
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, CODE / item)
    for study, (_, src) in STUDIES.items():
        if not (RUNS / study).exists() and Path(src).exists():
            shutil.copytree(src, RUNS / study, ignore=_derived_ignore if study in DERIVED else None)


def check_continuation() -> list[str]:
    """Before anything trains: every study folder that already holds runs (a sweep continued from a published
    folder, issue 23) must hold the same data and config as this session's code and config file; refuse to mix.

    The splits must match their data card's sha256 (``load_splits``), and the config may differ from the folder's
    config.toml only in keys that no existing result was made from (``check_against_folder``: execution, steering
    and intervention keys always may; a run trained otherwise is refused by its own train.json later). Raises
    SystemExit naming the study and the problem; returns one line per continued study.
    """
    from nnsight_inoc.core.config import load_config
    from nnsight_inoc.core.runconfig import check_against_folder
    from nnsight_inoc.data.splits import load_splits

    lines = []
    for study, (cfg, _) in STUDIES.items():
        run = RUNS / study
        done = sorted(p.parent.name for p in run.glob("finetune/*/train.json"))
        if not done:
            continue
        try:
            splits = load_splits(run / "data")
            changes = check_against_folder(load_config(CODE / cfg), run)
        except Exception as err:  # any refusal stops the campaign before a GPU second is spent on it
            raise SystemExit(f"{study}: will not continue the runs in {run}: {err}") from None
        lines.append(f"{study}: continuing {len(done)} finished runs (splits sha256 {splits.sha256()[:16]}, config "
                     f"matches the folder's{'; changed: ' + ', '.join(changes) if changes else ''})")
    return lines


def status() -> str:
    lines = []
    for study in STUDIES:
        run = RUNS / study
        n_train = len(list(run.glob("finetune/*/train.json")))
        n_drift = len(list(run.glob("finetune/*/drift.json")))
        flags = [f for f in (".prep_done", ".prep_failed") if (run / f).exists()]
        lines.append(f"{study}: trained {n_train}, drift {n_drift} {' '.join(flags)}")
    lines.append("bench: " + " ".join(f"{n}={'done' if (ROOT / 'bench' / n / '.done').exists() else '-'}"
                                     for n in BENCHES))
    smi = subprocess.run(["nvidia-smi", "--query-gpu=index,utilization.gpu,memory.used", "--format=csv,noheader"],
                         capture_output=True, text=True).stdout.strip().replace("\n", " | ")
    return "\n".join(lines) + f"\nGPUs: {smi}"


def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    """Bundle filter: leave out adapters (about 37 MB each), claims and per-condition gradient tensors."""
    parts = Path(info.name).parts
    if any(p in ("adapter", "claims", ".lock") or p.startswith(".adapter") for p in parts):
        return None
    if info.name.endswith((".safetensors", ".pt")) and not info.name.endswith("directions.pt"):
        return None
    return info


def bundle(out: Path) -> None:

    for study in STUDIES:
        if (RUNS / study).exists():
            with tarfile.open(out / f"{study}.tar.gz", "w:gz") as tar:
                tar.add(RUNS / study, arcname=study, filter=keep)
    with tarfile.open(out / "logs.tar.gz", "w:gz") as tar:
        tar.add(LOGS, arcname="logs")
        if (ROOT / "bench").exists():
            tar.add(ROOT / "bench", arcname="bench")


def run(seconds: float) -> None:
    t0 = time.time()
    pid_file = ROOT / "supervisor.pid"
    if not (ROOT / "finished").exists() and not alive(pid_file):
        setup()
        for line in check_continuation():
            print(line, flush=True)
        proc = subprocess.Popen([sys.executable, str(CODE / "gpu" / "campaign.py"), "supervise"], cwd=CODE,
                                stdout=(LOGS / "supervisor.log").open("a"), stderr=subprocess.STDOUT,
                                start_new_session=True, env=env_for(0))
        pid_file.write_text(str(proc.pid))
        print(f"supervisor started, pid {proc.pid}", flush=True)
    while time.time() - t0 < seconds and not (ROOT / "finished").exists() and alive(pid_file):
        time.sleep(15)
        print(f"[{time.time() - t0:.0f}s] " + status().replace("\n", " ; "), flush=True)
    print(status(), flush=True)
    print("finished" if (ROOT / "finished").exists() else "still running" if alive(pid_file) else "supervisor gone")
    out = Path(os.environ.get("OUT", "/tmp/out"))
    out.mkdir(parents=True, exist_ok=True)
    bundle(out)
    for f in sorted(out.iterdir()):
        print(f.name, f.stat().st_size)


def next_phase() -> None:
    """Make way for the next phase of a campaign (new CAMPAIGN_* settings, e.g. issue 23's Spanish after ALL-CAPS).

    ``run`` starts a supervisor only while ``finished`` is absent, so a phase's ``finished`` marker must go before
    the next phase's ``run``; the run folders, the model and the logs stay. Refused (SystemExit) while a supervisor
    is alive, and when no phase has finished.
    """
    pid_file = ROOT / "supervisor.pid"
    if alive(pid_file):
        raise SystemExit(f"the supervisor (pid {pid_file.read_text().strip()}) is still running: call `run` until it "
                         "says finished, then next-phase")
    if not (ROOT / "finished").exists():
        raise SystemExit("no phase has finished yet: start one with `run`")
    (ROOT / "finished").unlink()
    print("ready for the next phase: call `run` with its CAMPAIGN_* settings", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "supervise":
        supervise()
    elif sys.argv[1] == "run":
        run(float(sys.argv[2]))
    elif sys.argv[1] == "next-phase":
        next_phase()
    else:
        raise SystemExit(f"unknown step {sys.argv[1]}")
