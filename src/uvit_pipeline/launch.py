"""Start a library entry point under `accelerate launch` (training, and 50K-sample evaluation).

The parent never touches the accelerator devices: it writes an explicit accelerate config file (so no
user `default_config.yaml` is read), runs `python -m accelerate.commands.launch ... -m <module> <args>`,
and tees the child's output to the console and a log file. One `LaunchSpec` carries the launch
settings from the `launcher.*` parameters down to the command line.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import subprocess
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path

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

    def __post_init__(self) -> None:
        if self.mixed_precision is False:  # YAML reads an unquoted `no` as False
            object.__setattr__(self, "mixed_precision", "no")

    @classmethod
    def from_params(cls, launcher: dict, **overrides) -> LaunchSpec:
        """From the `launcher` parameter section; unknown keys raise `ValueError` naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(launcher) - known)
        if unknown:
            raise ValueError(
                f"launcher.{unknown[0]} is not a known parameter; known: {sorted(known)}"
            )
        return cls(**{**launcher, **overrides}).validate()

    def validate(self) -> LaunchSpec:
        for name in ("num_processes", "num_machines"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"launcher.{name} must be a positive integer, got {v!r}")
        if not 0 <= self.machine_rank < self.num_machines:
            raise ValueError(
                f"launcher.machine_rank must be in [0, {self.num_machines}), got {self.machine_rank}"
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
    The child inherits this process's environment (plus `env_extra`)."""
    work_dir = Path(work_dir)
    port = spec.port()
    acc_cfg = write_accelerate_config(work_dir / "accelerate_config.json", spec, port)
    cmd = build_launch_command(spec, module, module_args, port=port, accelerate_config_file=acc_cfg)
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        **{k: str(v) for k, v in (env_extra or {}).items()},
    }
    log_path = (
        Path(log_path) if log_path is not None else work_dir / f"{module.rsplit('.', 1)[-1]}.log"
    )
    log_path.parent.mkdir(parents=True, exist_ok=True)
    logger.info("Launching: %s", " ".join(cmd))
    logger.info("Log of the %s: %s", what, log_path)
    rc, tail = _run_tee(cmd, env, log_path)
    if rc != 0:
        raise RuntimeError(
            f"{what} exited with code {rc} (log: {log_path}); last lines:\n" + "".join(tail)
        )


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


def _run_tee(
    cmd: list[str], env: dict, log_path: Path, tail_lines: int = 60
) -> tuple[int, list[str]]:
    """Run `cmd` in its own process group, copying its output to stdout and `log_path`
    (progress reports go through logging instead, see `PROGRESS_LOGGER`)."""
    tail: deque[str] = deque(maxlen=tail_lines)
    pending = b""
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )
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
            # Parent interrupted (Ctrl-C, Kedro failure): do not leave orphaned ranks holding devices.
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
            raise
    if pending:
        tail.append(pending.decode(errors="replace"))
        sys.stdout.write(pending.decode(errors="replace"))
    return rc, list(tail)
