"""Start a library entry point under `accelerate launch` (training, and 50K-sample evaluation).

The parent never touches the accelerator devices: it writes an explicit accelerate config file (so no
user `default_config.yaml` is read), runs `python -m accelerate.commands.launch ... -m <module> <args>`,
and tees the child's output to the console and a log file. One `LaunchSpec` carries the launch
settings from the `launcher.*` parameters down to the command line.

Inside a SLURM allocation (`launcher.slurm: true`) the settings come from SLURM's environment
(`LaunchSpec.from_slurm`), and a launch over several nodes is one `srun` step with one task per
node: each task runs `python -m uvit_pipeline.launch`, which takes its machine rank from
`SLURM_NODEID` and starts the node's processes under `accelerate launch` (docs/cluster.md).

Bad settings fail fast: an out-of-range machine rank or a SLURM environment that contradicts the
parameters raises `ValueError` before anything starts, a busy port on the main machine is found
before the launch, and an unreachable main process ends after `launcher.rendezvous_timeout_s`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from uvit_pipeline.errors import ChildFailed

from ._io import atomic_write_json

logger = logging.getLogger(__name__)


def free_port() -> int:
    """A TCP port that is free right now on this host (for the rendezvous of a local run)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class LaunchSpec:
    """How to start the child processes (`launcher.*` parameters; accelerate's meaning of each)."""

    num_processes: int = 1  # all processes on all machines
    num_machines: int = 1
    machine_rank: int = 0
    main_process_ip: str | None = None
    main_process_port: int | None = None  # None: a free local port (one machine) or 29500
    mixed_precision: str = "no"
    cpu: bool = False
    # Bound on the rendezvous: every machine must have joined the main process by then (an
    # unreachable main_process_ip, a machine that never starts), else the launch fails.
    rendezvous_timeout_s: int = 300
    # Settings from SLURM's environment (`from_slurm`); several nodes are launched with `srun`.
    slurm: bool = False

    def __post_init__(self) -> None:
        if self.mixed_precision is False:  # YAML reads an unquoted `no` as False
            object.__setattr__(self, "mixed_precision", "no")

    @classmethod
    def from_params(cls, launcher: dict, **overrides) -> LaunchSpec:
        """From the `launcher` parameter section; unknown keys raise `ValueError` naming them.
        With `slurm: true` the machine settings come from SLURM's environment (`from_slurm`)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(launcher) - known)
        if unknown:
            raise ValueError(
                f"launcher.{unknown[0]} is not a known parameter; known: {sorted(known)}"
            )
        merged = {**launcher, **overrides}
        if merged.get("slurm"):
            return cls.from_slurm(launcher=merged)
        return cls(**merged).validate()

    @classmethod
    def from_slurm(
        cls, env: Mapping[str, str] | None = None, *, launcher: Mapping | None = None
    ) -> LaunchSpec:
        """The launch settings of the current SLURM allocation (`env`: default `os.environ`).

        num_machines is `SLURM_NNODES`; machine_rank `SLURM_NODEID`; main_process_ip the address
        of the first node of `SLURM_JOB_NODELIST` (its NodeAddr, via `scontrol`); the port
        `15000 + SLURM_JOB_ID % 15000` (the same on every node, distinct between jobs); processes
        per node the GPUs on the node (`SLURM_GPUS_ON_NODE`), or with `cpu` or no GPUs
        `SLURM_NTASKS_PER_NODE`. `launcher` holds the parameters: num_processes, num_machines and
        machine_rank may be given (not None) and must then agree with SLURM, else `ValueError`
        naming both; a given main_process_ip / main_process_port (another interface, a fixed port)
        is used as it is; the other keys pass through.
        """
        env = os.environ if env is None else env
        given = {k: v for k, v in dict(launcher or {}).items() if v is not None and k != "slurm"}
        if not env.get("SLURM_JOB_ID"):
            raise ValueError(
                "launcher.slurm is true but SLURM_JOB_ID is not set: run inside an allocation "
                "(sbatch, salloc or srun), or set launcher.slurm: false"
            )

        def num(name: str, default: str | None = None) -> int:
            raw = env.get(name, default)
            if raw is None or not re.fullmatch(r"\d+", str(raw)):
                raise ValueError(f"SLURM environment: {name}={raw!r} is not a whole number")
            return int(raw)

        nodes = num("SLURM_NNODES", env.get("SLURM_JOB_NUM_NODES"))
        node_rank = num("SLURM_NODEID", "0")
        cpu = bool(given.get("cpu", False))
        gpus, gpu_var = _slurm_gpus_per_node(env)
        if gpus and not cpu:
            per_node, source = gpus, f"{gpus} GPUs per node ({gpu_var})"
        elif env.get("SLURM_NTASKS_PER_NODE"):
            per_node = num("SLURM_NTASKS_PER_NODE")
            source = f"{per_node} tasks per node (SLURM_NTASKS_PER_NODE)"
        elif "num_processes" in given and given["num_processes"] % nodes == 0:
            per_node, source = given["num_processes"] // nodes, None
        else:
            raise ValueError(
                "SLURM environment: cannot tell how many processes to start per node: ask for "
                "GPUs (--gpus-per-node) or --ntasks-per-node, or set launcher.num_processes to a "
                f"multiple of the {nodes} nodes"
            )
        derived = {
            "num_machines": (nodes, "SLURM_NNODES"),
            "machine_rank": (node_rank, "SLURM_NODEID"),
            "num_processes": (nodes * per_node, f"{nodes} nodes x {source}"),
        }
        for key, (value, why) in derived.items():
            if key in given and given[key] != value and why is not None:
                raise ValueError(
                    f"launcher.{key}={given[key]!r} contradicts the SLURM allocation: {why} gives "
                    f"{value}; remove launcher.{key} (or set it to null) to take SLURM's value"
                )
        ip = given.get("main_process_ip")
        if not ip and nodes > 1:
            nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
            if not nodelist:
                raise ValueError("SLURM environment: SLURM_JOB_NODELIST is not set")
            ip = slurm_node_address(slurm_hostnames(nodelist)[0])
        port = given.get("main_process_port")
        if port is None:
            port = 15000 + num("SLURM_JOB_ID") % 15000
        rest = {k: v for k, v in given.items() if k not in derived and not k.startswith("main_")}
        return cls(
            **rest,
            num_machines=nodes,
            machine_rank=node_rank,
            num_processes=nodes * per_node,
            main_process_ip=ip,
            main_process_port=int(port),
            slurm=True,
        ).validate()

    def validate(self) -> LaunchSpec:
        for name in ("num_processes", "num_machines"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"launcher.{name} must be a positive integer, got {v!r}")
        r = self.machine_rank
        if isinstance(r, bool) or not isinstance(r, int) or not 0 <= r < self.num_machines:
            raise ValueError(
                f"launcher.machine_rank must be in [0, {self.num_machines}) "
                f"(launcher.num_machines={self.num_machines}), got {r!r}"
            )
        t = self.rendezvous_timeout_s
        if isinstance(t, bool) or not isinstance(t, int | float) or t <= 0:
            raise ValueError(f"launcher.rendezvous_timeout_s must be positive seconds, got {t!r}")
        p = self.main_process_port
        if p is not None and (isinstance(p, bool) or not isinstance(p, int) or not 0 < p < 65536):
            raise ValueError(f"launcher.main_process_port must be a port in 1..65535, got {p!r}")
        if self.num_processes % self.num_machines:
            raise ValueError(
                f"launcher.num_processes ({self.num_processes}, all processes on all machines) "
                f"must be a multiple of launcher.num_machines ({self.num_machines})"
            )
        if self.num_machines > 1 and not self.main_process_ip:
            raise ValueError("launcher.main_process_ip is required when launcher.num_machines > 1")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            hint = " (YAML reads an unquoted yes/true/on as a boolean)"
            raise ValueError(
                "mixed_precision must be one of ['no', 'fp16', 'bf16'], got "
                f"{self.mixed_precision!r}{hint if self.mixed_precision is True else ''}"
            )
        return self

    def port(self) -> int:
        if self.main_process_port is not None:
            return int(self.main_process_port)
        return free_port() if self.num_machines == 1 else 29500


def _slurm_gpus_per_node(env: Mapping[str, str]) -> tuple[int, str]:
    """GPUs allocated on this node and the variable that says so: SLURM_GPUS_ON_NODE, else
    SLURM_GPUS_PER_NODE ("4" or "a100:4"); (0, "") without GPUs."""
    for name in ("SLURM_GPUS_ON_NODE", "SLURM_GPUS_PER_NODE"):
        m = re.fullmatch(r"(?:[\w.-]+:)?(\d+)", env.get(name, "").strip())
        if m and int(m.group(1)):
            return int(m.group(1)), name
    return 0, ""


def expand_hostlist(nodelist: str) -> list[str]:
    """SLURM's compact host list in full: "gpu[01-03,7],login" -> gpu01 gpu02 gpu03 gpu7 login
    (the bracket syntax `scontrol show hostnames` expands; several bracket groups in one name too)."""
    names: list[str] = []
    for item in re.findall(r"(?:[^,\[]|\[[^\]]*\])+", nodelist):
        expanded = [""]
        for text, ranges in re.findall(r"([^\[]*)(?:\[([^\]]*)\])?", item):
            options = [text]
            if ranges:
                options = []
                for part in ranges.split(","):
                    lo, _, hi = part.partition("-")
                    if not lo.isdigit() or (hi and not hi.isdigit()):
                        raise ValueError(f"SLURM host list {nodelist!r}: bad range {part!r}")
                    width = len(lo)
                    for i in range(int(lo), int(hi or lo) + 1):
                        options.append(text + str(i).zfill(width))
            expanded = [e + o for e in expanded for o in options]
        names += [e for e in expanded if e]
    return names


def slurm_hostnames(nodelist: str) -> list[str]:
    """The host names of a SLURM node list, expanded by `scontrol show hostnames` when it is on
    the PATH (SLURM's own parser), else by `expand_hostlist`."""
    if shutil.which("scontrol") is None:
        return expand_hostlist(nodelist)
    out = subprocess.run(
        ["scontrol", "show", "hostnames", nodelist],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if out.returncode != 0 or not out.stdout.split():
        raise ValueError(
            f"`scontrol show hostnames {nodelist}` failed ({out.returncode}): {out.stderr.strip()}"
        )
    return out.stdout.split()


def slurm_node_address(name: str) -> str:
    """The address SLURM reaches node `name` at (its NodeAddr, which differs from the name when
    the name does not resolve, e.g. several slurmd on one host); the name when `scontrol` is not
    at hand or does not know the node."""
    if shutil.which("scontrol") is None:
        return name
    out = subprocess.run(
        ["scontrol", "-o", "show", "node", name], capture_output=True, text=True, timeout=30
    )
    m = re.search(r"\bNodeAddr=(\S+)", out.stdout)
    return m.group(1) if out.returncode == 0 and m else name


def check_port_free(port: int, what: str = "launcher.main_process_port") -> None:
    """Raise `ValueError` when this host cannot listen on `port` (the main machine's rendezvous
    port), instead of a failure deep inside the launch."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("", int(port)))
        except OSError as e:
            why = "is in use" if e.errno == errno.EADDRINUSE else f"cannot be opened ({e})"
            raise ValueError(
                f"{what}={port} {why} on {socket.gethostname()}, the main machine "
                "(machine_rank 0): pick another port, or stop the process holding it"
            ) from e


def write_accelerate_config(path: str | os.PathLike, spec: LaunchSpec, port: int) -> Path:
    """Write a complete accelerate ClusterConfig JSON, matching the command-line flags."""
    cfg = {
        "compute_environment": "LOCAL_MACHINE",
        # Several processes go through torchrun; on CPU the script's Accelerator(cpu=True) then
        # selects gloo / MULTI_CPU (`accelerate launch --cpu --num_processes 2` starts one process).
        "distributed_type": "MULTI_GPU" if spec.num_processes > 1 else "NO",
        "mixed_precision": spec.mixed_precision,
        "use_cpu": bool(spec.cpu),
        "debug": False,
        "num_processes": spec.num_processes,
        "num_machines": spec.num_machines,
        "machine_rank": spec.machine_rank,
        "main_process_ip": spec.main_process_ip,
        "main_process_port": port,
        "rdzv_backend": "static",
        "same_network": True,
        "gpu_ids": "all",
        "downcast_bf16": False,
        "enable_cpu_affinity": False,
    }
    return atomic_write_json(path, cfg)


def build_launch_command(
    spec: LaunchSpec,
    module: str,
    module_args: list[str],
    *,
    port: int,
    accelerate_config_file: str | os.PathLike | None = None,
) -> list[str]:
    """argv of the child. Every setting is a flag; pass `accelerate_config_file` as well, or
    accelerate also reads the user's default config file for anything not given."""
    spec.validate()
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if accelerate_config_file is not None:
        cmd += ["--config_file", str(accelerate_config_file)]
    if spec.num_processes > 1:
        # Also for CPU: `--cpu --num_processes 2` would start a single process.
        cmd += ["--multi_gpu"]
    elif spec.cpu:
        cmd += ["--cpu"]
    cmd += [
        "--num_processes", str(spec.num_processes),
        "--num_machines", str(spec.num_machines),
        "--machine_rank", str(spec.machine_rank),
        "--mixed_precision", spec.mixed_precision,
        "--dynamo_backend", "no",
        "--main_process_port", str(port),
    ]  # fmt: skip
    if spec.num_processes > 1:
        # torchrun's static rendezvous: every machine joins (or the main one is reached) in time.
        cmd += ["--rdzv_conf", f"timeout={int(spec.rendezvous_timeout_s)}"]
    if spec.main_process_ip:
        cmd += ["--main_process_ip", spec.main_process_ip]
    if spec.cpu:
        # Explicit, so accelerate neither guesses nor warns: the cores split over local processes.
        local = max(1, spec.num_processes // spec.num_machines)
        cmd += ["--num_cpu_threads_per_process", str(max(1, (os.cpu_count() or 1) // local))]
    return [*cmd, "-m", module, *module_args]


def run_under_accelerate(
    spec: LaunchSpec,
    work_dir: str | os.PathLike,
    module: str,
    module_args: list[str],
    *,
    log_path: str | os.PathLike | None = None,
    env_extra: dict[str, str] | None = None,
    what: str = "child",
) -> None:
    """`accelerate launch -m module *module_args` with an explicit config file written to `work_dir`;
    output goes to the console and `log_path`; a failure raises RuntimeError with the log's tail.
    The child inherits this process's environment (plus `env_extra`).

    With `spec.slurm` and several nodes, this process (the batch script's) starts one `srun` task
    per node, each running this function on its node (`python -m uvit_pipeline.launch`), and fails
    when any node fails; `work_dir` must then be on a filesystem all nodes share.

    On machine 0 of a run over plain machines (a `machines.Coordinator` is active, as in the
    project's `kedro run`), the launch is announced to the other machines, which start their part
    of it; a failure on any machine fails it here, naming that machine (`machines`)."""
    work_dir = Path(work_dir)
    log_path = (
        Path(log_path) if log_path is not None else work_dir / f"{module.rsplit('.', 1)[-1]}.log"
    )
    log_path.parent.mkdir(parents=True, exist_ok=True)
    from uvit_pipeline import machines

    coordinator = machines.active()
    if coordinator is not None and machines.spread_over_machines(spec) and spec.machine_rank == 0:
        # Machine 0 of a run over plain machines: the other machines start their part too.
        work_dir.mkdir(parents=True, exist_ok=True)
        job = {"work_dir": str(work_dir), "module": module, "args": list(module_args)}
        job.update(log_path=str(log_path), env=dict(env_extra or {}), what=what)
        coordinator.run_launch(
            spec,
            job,
            run_here=lambda: _launch_here(
                spec, work_dir, module, module_args, log_path, env_extra, what
            ),
            abort_here=stop_launched,
        )
        return
    _launch_here(spec, work_dir, module, module_args, log_path, env_extra, what)


def _launch_here(
    spec: LaunchSpec,
    work_dir: Path,
    module: str,
    module_args: list[str],
    log_path: Path,
    env_extra: dict[str, str] | None,
    what: str,
) -> None:
    """This machine's `accelerate launch` (or the srun step over a SLURM allocation)."""
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        **{k: str(v) for k, v in (env_extra or {}).items()},
    }
    if spec.slurm and spec.num_machines > 1:
        cmd = srun_command(spec, work_dir, module, module_args, log_path=log_path, what=what)
        where, port = f"srun over {spec.num_machines} nodes", spec.main_process_port
    else:
        port = spec.port()
        fixed_port = spec.main_process_port is not None or spec.num_machines > 1
        if spec.num_processes > 1 and spec.machine_rank == 0 and fixed_port:
            check_port_free(port)
        suffix = f".machine{spec.machine_rank}" if spec.num_machines > 1 else ""
        acc_cfg = write_accelerate_config(work_dir / f"accelerate_config{suffix}.json", spec, port)
        cmd = build_launch_command(
            spec, module, module_args, port=port, accelerate_config_file=acc_cfg
        )
        where = f"machine {spec.machine_rank} of {spec.num_machines}"
    logger.info("Launching: %s", " ".join(cmd))
    logger.info("Log of the %s: %s", what, log_path)
    rc, tail = _run_tee(cmd, env, log_path)
    if rc != 0:
        hint = diagnose_failure("".join(tail), spec, spec.main_process_port or port)
        last = last_lines(tail)
        raise ChildFailed(
            f"{what} {exit_description(rc)} ({where}; log: {log_path})"
            + (f": {hint}" if hint else "")
            + ("; last lines:\n" + "\n".join(last) if last else "")
        )


def exit_description(rc: int) -> str:
    """`exited with code 1`, or what a signal exit usually means (Popen: -N; a shell: 128+N)."""
    if rc in (-signal.SIGKILL, 128 + signal.SIGKILL):
        return (
            f"was killed (exit code {rc}: SIGKILL, often the out-of-memory killer; lower the batch "
            "size or free memory)"
        )
    if rc in (-signal.SIGTERM, 128 + signal.SIGTERM):
        return f"was terminated (exit code {rc}: SIGTERM, e.g. a scheduler's time limit)"
    return f"exited with code {rc}"


def last_lines(tail: list[str], n: int = 15) -> list[str]:
    """The last `n` non-empty lines of a log tail, each progress-bar line (tqdm redraws it with `\r`)
    collapsed to its final state."""
    lines = []
    for chunk in tail:
        for line in chunk.split("\n"):
            final = [part for part in line.split("\r") if part.strip()]
            if final:
                lines.append(final[-1].rstrip())
    return lines[-n:]


def diagnose_failure(log_tail: str, spec: LaunchSpec, port: int | None) -> str | None:
    """One plain sentence for the launch failures with a known cause, from the log's tail."""
    addr = f"{spec.main_process_ip or '127.0.0.1'}:{port}"
    if re.search(r"client socket has timed out|Connection refused|connect\(\) timed out", log_tail):
        return (
            f"the main process at {addr} was not reachable within "
            f"launcher.rendezvous_timeout_s={spec.rendezvous_timeout_s} s (is machine 0 running, "
            "and are launcher.main_process_ip / main_process_port right?)"
        )
    if re.search(r"waiting for clients|Timed out .* clients joined", log_tail):
        return (
            f"not every machine joined the main process at {addr} within "
            f"launcher.rendezvous_timeout_s={spec.rendezvous_timeout_s} s (are all "
            f"{spec.num_machines} machines started, with machine_rank 0..{spec.num_machines - 1}?)"
        )
    if re.search(r"EADDRINUSE|address already in use", log_tail, re.IGNORECASE):
        return f"launcher.main_process_port={port} is in use on the main machine"
    return None


def srun_command(
    spec: LaunchSpec,
    work_dir: Path,
    module: str,
    module_args: list[str],
    *,
    log_path: Path,
    what: str,
    env: Mapping[str, str] | None = None,
) -> list[str]:
    """The `srun` step that runs `python -m uvit_pipeline.launch` once on each node of the
    allocation; the spec is written to `work_dir` for the nodes to read."""
    env = os.environ if env is None else env
    if shutil.which("srun") is None:
        raise ValueError(
            f"launcher.slurm over {spec.num_machines} nodes starts them with srun, which is not on "
            "the PATH of this process (run the experiment from the batch script of the job)"
        )
    spec_path = atomic_write_json(work_dir / "launch_spec.json", dataclasses.asdict(spec))
    cmd = [
        "srun",
        f"--nodes={spec.num_machines}",
        f"--ntasks={spec.num_machines}",  # overrides the job's SLURM_NTASKS that srun inherits
        "--ntasks-per-node=1",
        "--kill-on-bad-exit=1",  # one node fails: the step ends on all of them
        "--label",
    ]
    if env.get("SLURM_CPUS_ON_NODE", "").isdigit():
        cmd.append(f"--cpus-per-task={env['SLURM_CPUS_ON_NODE']}")  # the node's CPUs, not 1
    gpus, _ = _slurm_gpus_per_node(env)
    if gpus and not spec.cpu:
        cmd.append(f"--gpus-per-task={gpus}")
    return [
        *cmd,
        sys.executable, "-m", "uvit_pipeline.launch", "node",
        "--spec", str(spec_path), "--work-dir", str(work_dir), "--log", str(log_path),
        "--what", what, "--", module, *module_args,
    ]  # fmt: skip


# The children `_run_tee` is running now, so that another thread can stop them (`stop_launched`).
_RUNNING: set[subprocess.Popen] = set()
_RUNNING_LOCK = threading.Lock()


def _track(proc: subprocess.Popen) -> None:
    """Remember a running child (for `stop_launched`); forget the ones that have ended."""
    with _RUNNING_LOCK:
        _RUNNING.difference_update([p for p in _RUNNING if p.poll() is not None])
        _RUNNING.add(proc)


def stop_launched(grace_s: float = 5.0) -> None:
    """End every child this process has launched and is waiting for (its whole process group):
    SIGTERM now, SIGKILL after `grace_s`. Used when another machine of the launch failed; the
    waiting `run_under_accelerate` then raises `ChildFailed`. Safe from any thread."""
    with _RUNNING_LOCK:
        procs = [p for p in _RUNNING if p.poll() is None]
    for proc in procs:
        _killpg(proc.pid, signal.SIGTERM)
        timer = threading.Timer(grace_s, _killpg, (proc.pid, signal.SIGKILL))
        timer.daemon = True
        timer.start()


# Child log lines from this logger are progress reports: the parent re-logs them (console and the
# project's info.log) instead of echoing them, so a long run's progress and ETA reach the log file.
PROGRESS_LOGGER = "uvit_pipeline.progress"


def _echo(line: bytes, out: list[str]) -> None:
    text = line.decode(errors="replace")
    marker = f" {PROGRESS_LOGGER}: "
    if marker in text:
        logging.getLogger(PROGRESS_LOGGER).info(text.split(marker, 1)[1].rstrip())
    else:
        out.append(text)


class Terminated(BaseException):
    """SIGTERM or SIGUSR1 arrived while a launched child ran (time limit, preemption, `kill`)."""


# Signals that end a launching process; while a child runs they raise `Terminated` instead.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


@contextlib.contextmanager
def _sigterm_raises():
    """While a child runs, SIGTERM and SIGUSR1 raise `Terminated` in this process (their default
    action would end the process at once, leaving the child running); only possible in the main
    thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_terminated(signum, frame):
        raise Terminated(f"{signal.Signals(signum).name} while a launched child ran")

    previous = {sig: signal.signal(sig, raise_terminated) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop_child(proc: subprocess.Popen, log, grace_s: float, sig: int) -> None:
    """`sig` to the child's process group, then keep copying its output to `log` until it ends
    (a training saves its state first); SIGKILL after `grace_s` seconds or on a second interrupt."""
    os.killpg(proc.pid, sig)
    timer = threading.Timer(grace_s, _killpg, (proc.pid, signal.SIGKILL))
    timer.daemon = True
    timer.start()
    try:
        while chunk := proc.stdout.read1(65536):
            log.write(chunk)
            log.flush()
            sys.stdout.write(chunk.decode(errors="replace"))
            sys.stdout.flush()
        proc.wait()
    except BaseException:
        _killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    finally:
        timer.cancel()


def _killpg(pid: int, sig: int) -> None:
    """`sig` to a child's process group, unless the group has ended already."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _run_tee(
    cmd: list[str], env: dict, log_path: Path, tail_lines: int = 60
) -> tuple[int, list[str]]:
    """Run `cmd` in its own process group, copying its output to stdout and `log_path`
    (progress reports go through logging instead, see `PROGRESS_LOGGER`)."""
    tail: deque[str] = deque(maxlen=tail_lines)
    pending = b""
    with open(log_path, "ab") as log, _sigterm_raises():
        proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )
        _track(proc)
        try:
            while chunk := proc.stdout.read1(65536):
                log.write(chunk)
                log.flush()
                pending += chunk
                *lines, pending = pending.split(b"\n")
                out: list[str] = []
                for line in lines:
                    _echo(line, out)
                    tail.append(line.decode(errors="replace") + "\n")
                if b"\r" in pending:  # a progress bar redrawing its line: show it as it goes
                    *bars, pending = pending.split(b"\r")
                    out += [b.decode(errors="replace") + "\r" for b in bars]
                sys.stdout.write("".join(t if t.endswith("\r") else t + "\n" for t in out))
                sys.stdout.flush()
            rc = proc.wait()
        except BaseException:
            # Parent interrupted (Ctrl-C, SIGTERM from a scheduler, Kedro failure): do not leave
            # orphaned ranks holding devices. The child runs in its own session, so a scheduler
            # that tracks processes by parentage (SLURM's proctrack/linuxproc) would miss it.
            # 5 s is well within SLURM's KillWait before its SIGKILL; a training child sets
            # UVIT_STOP_GRACE_S to finish its step and save its state. srun ends its step on
            # SIGTERM (SIGKILL after KillWait) but passes SIGUSR1 on to its tasks, the nodes'
            # launchers, which stop their processes as this one does.
            sig = signal.SIGUSR1 if Path(cmd[0]).name == "srun" else signal.SIGTERM
            _stop_child(proc, log, float(env.get("UVIT_STOP_GRACE_S") or 5), sig)
            raise
    if pending:
        tail.append(pending.decode(errors="replace"))
        sys.stdout.write(pending.decode(errors="replace"))
    return rc, list(tail)


@dataclass(frozen=True)
class Part:
    """One process's share of a data-parallel stage (`run_parallel`): its rank among `world`
    processes and the device it computes on. Work is cut into fixed blocks that do not depend on
    `world` (the shards of a store, the chunks of a sampling run); rank r takes blocks r, r+W, ...,
    writes each as its own file atomically and skips the files that exist, so the merged result is
    the same for any number of processes and a killed rank's work resumes block by block."""

    rank: int = 0
    world: int = 1
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def blocks(self, n: int) -> range:
        """This rank's blocks of `n`."""
        return range(self.rank, n, self.world)


def resolve_entry(entry: str):
    """`"package.module:function"` -> the function (the entry point of a parallel stage)."""
    import importlib

    module, _, name = entry.partition(":")
    if not module or not name:
        raise ValueError(f"entry {entry!r} must read 'package.module:function'")
    return getattr(importlib.import_module(module), name)


def run_parallel(
    spec: LaunchSpec,
    entry: str,
    payload: dict,
    *,
    work_dir: str | os.PathLike,
    device: str = "cpu",
    what: str = "parallel stage",
    log_path: str | os.PathLike | None = None,
) -> None:
    """Run `entry(payload, part)` once on every process of `spec`: the one harness of every
    data-parallel stage (features, text features, reference statistics, scoring, sampling).

    One process on one machine runs it here, in this process, as `Part(0, 1, device)`. Otherwise
    `payload` (JSON) is written to `work_dir` and every process of the launch (`accelerate launch`,
    `srun` across a SLURM allocation, or several plain machines) calls `entry` with its own
    `Part`, on its own device (`device="cpu"` runs the processes on the CPU, else one GPU each).
    The caller merges the blocks afterwards, in this process; `work_dir` and the outputs must then
    be on a filesystem every machine sees."""
    fn = resolve_entry(entry)
    if spec.num_processes == 1 and spec.num_machines == 1:
        fn(payload, Part(0, 1, device))
        return
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    name = entry.rpartition(":")[2]
    payload_file = atomic_write_json(work_dir / f"{name}.payload.json", payload)
    spec = dataclasses.replace(spec, cpu=device == "cpu")
    run_under_accelerate(
        spec,
        work_dir,
        "uvit_pipeline.launch",
        ["_run", entry, "--payload", str(payload_file), *(["--cpu"] if spec.cpu else [])],
        log_path=log_path if log_path is not None else work_dir / f"{name}.log",
        what=what,
    )


def _run_part(entry: str, payload_file: str, cpu: bool) -> int:
    """Child side of `run_parallel`: this process's `Part` from the launch, then the entry."""
    from accelerate import PartialState

    payload = json.loads(Path(payload_file).read_text(encoding="utf-8"))
    state = PartialState(cpu=cpu)
    resolve_entry(entry)(payload, Part(state.process_index, state.num_processes, str(state.device)))
    _end_process_group(state)
    return 0


def _end_process_group(state) -> None:
    """Every rank reaches the end, then the process group is closed explicitly: a gloo group left
    to the interpreter's exit can abort a rank ("terminate called without an active exception")."""
    import torch.distributed as dist

    state.wait_for_everyone()
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _probe(out_dir: str | None, cpu: bool) -> int:
    """A gloo (CPU) or NCCL all-reduce across every process of the launch: each rank checks the
    sum and, with `out_dir`, writes rank<r>.json (host, world size, sum)."""
    import torch
    import torch.distributed as dist
    from accelerate import PartialState

    state = PartialState(cpu=cpu or not torch.cuda.is_available())
    t = torch.tensor([float(state.process_index + 1)], device=state.device)
    if state.num_processes > 1:
        dist.all_reduce(t)
    n = state.num_processes
    result = {
        "rank": state.process_index,
        "local_rank": state.local_process_index,
        "world_size": n,
        "host": socket.gethostname(),
        "slurm_nodeid": os.environ.get("SLURM_NODEID"),
        "sum": t.item(),
        "expected": n * (n + 1) / 2,
    }
    sys.stdout.write(f"probe: {json.dumps(result, sort_keys=True)}\n")
    sys.stdout.flush()
    if out_dir:
        atomic_write_json(Path(out_dir) / f"rank{state.process_index}.json", result)
    _end_process_group(state)
    return 0 if result["sum"] == result["expected"] else 1


def main(argv: list[str] | None = None) -> int:
    """`python -m uvit_pipeline.launch node ...`: one node's part of an srun step (machine rank
    from SLURM_NODEID). `... check [--out DIR]` under an allocation, or with launcher settings as
    flags: an all-reduce over every process, to test a cluster before a long job."""
    ap = argparse.ArgumentParser(prog="python -m uvit_pipeline.launch")
    sub = ap.add_subparsers(dest="cmd", required=True)
    node = sub.add_parser("node", help="run one node's processes of an srun step")
    node.add_argument("--spec", required=True)
    node.add_argument("--work-dir", required=True)
    node.add_argument("--log", required=True)
    node.add_argument("--what", default="child")
    node.add_argument("module")
    node.add_argument("args", nargs=argparse.REMAINDER)
    check = sub.add_parser("check", help="all-reduce over every process of a launch")
    check.add_argument("--slurm", action="store_true", help="settings from SLURM's environment")
    check.add_argument("--num-processes", type=int)
    check.add_argument("--num-machines", type=int)
    check.add_argument("--machine-rank", type=int)
    check.add_argument("--main-process-ip")
    check.add_argument("--main-process-port", type=int)
    check.add_argument("--rendezvous-timeout-s", type=int)
    check.add_argument("--cpu", action="store_true")
    check.add_argument("--work-dir", default=".")
    check.add_argument("--out", help="folder for one rank<r>.json per process")
    run = sub.add_parser("_run", help="one process of run_parallel")
    run.add_argument("entry")
    run.add_argument("--payload", required=True)
    run.add_argument("--cpu", action="store_true")
    probe = sub.add_parser("_probe")
    probe.add_argument("--out")
    probe.add_argument("--cpu", action="store_true")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if a.cmd == "_probe":
        return _probe(a.out, a.cpu)
    if a.cmd == "_run":
        return _run_part(a.entry, a.payload, a.cpu)
    try:
        if a.cmd == "node":
            spec = LaunchSpec(**json.loads(Path(a.spec).read_text(encoding="utf-8")))
            nodes = int(os.environ.get("SLURM_STEP_NUM_NODES") or os.environ["SLURM_NNODES"])
            if nodes != spec.num_machines:
                raise ValueError(
                    f"this srun step has {nodes} nodes, the launch expects {spec.num_machines}"
                )
            rank = int(os.environ["SLURM_NODEID"])
            spec = dataclasses.replace(spec, machine_rank=rank, slurm=False).validate()
            log = Path(a.log)
            log = log.with_name(f"{log.stem}.machine{rank}{log.suffix}")
            args = a.args[1:] if a.args[:1] == ["--"] else a.args
            module = a.module
            run_under_accelerate(spec, a.work_dir, module, args, log_path=log, what=a.what)
            return 0
        params = {
            k: getattr(a, k)
            for k in (
                "num_processes",
                "num_machines",
                "machine_rank",
                "main_process_ip",
                "main_process_port",
                "rendezvous_timeout_s",
            )
            if getattr(a, k) is not None
        }
        params["cpu"] = a.cpu
        spec = LaunchSpec.from_slurm(launcher=params) if a.slurm else LaunchSpec(**params)
        work = Path(a.work_dir)
        run_under_accelerate(
            spec.validate(),
            work,
            "uvit_pipeline.launch",
            ["_probe", *(["--out", a.out] if a.out else []), *(["--cpu"] if spec.cpu else [])],
            log_path=work / "launch_check.log",
            what="launch check",
        )
        return 0
    except (ValueError, RuntimeError) as e:
        sys.stderr.write(f"uvit_pipeline.launch: error: {e}\n")
        return 2 if isinstance(e, ValueError) else 1
    except Terminated as e:
        sys.stderr.write(f"uvit_pipeline.launch: stopped: {e}; its processes were ended\n")
        return 128 + signal.SIGTERM


if __name__ == "__main__":
    sys.exit(main())
