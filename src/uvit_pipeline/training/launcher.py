"""Start the training child with `accelerate launch` (kedro-conventions §6, design A).

The parent never touches the accelerator devices: it writes the resolved config (and an explicit
accelerate config file, so no user `default_config.yaml` is read) into the run directory, runs
`python -m accelerate.commands.launch ... -m uvit_pipeline.training --config <json>`, tees the child's
output to the console and `run_dir/train.log`, and returns `run_dir/final`.
"""

from __future__ import annotations

import codecs
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from collections import deque
from pathlib import Path

from .checkpoint import write_json
from .config import TrainConfig

logger = logging.getLogger(__name__)


def free_port() -> int:
    """A TCP port that is free right now on this host (for the rendezvous of a local run)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_accelerate_config(
    path: str | os.PathLike,
    num_processes: int = 1,
    mixed_precision: str = "no",
    cpu: bool = False,
    num_machines: int = 1,
    machine_rank: int = 0,
    main_process_ip: str | None = None,
    main_process_port: int = 29500,
) -> Path:
    """Write a complete accelerate ClusterConfig JSON, matching the command-line flags."""
    cfg = {
        "compute_environment": "LOCAL_MACHINE",
        # Several processes go through torchrun; on CPU the script's Accelerator(cpu=True) then
        # selects gloo / MULTI_CPU (kedro-conventions §0 item 7).
        "distributed_type": "MULTI_GPU" if num_processes > 1 else "NO",
        "mixed_precision": mixed_precision,
        "use_cpu": bool(cpu),
        "debug": False,
        "num_processes": num_processes,
        "num_machines": num_machines,
        "machine_rank": machine_rank,
        "main_process_ip": main_process_ip,
        "main_process_port": main_process_port,
        "rdzv_backend": "static",
        "same_network": True,
        "gpu_ids": "all",
        "downcast_bf16": False,
        "enable_cpu_affinity": False,
    }
    path = Path(path)
    write_json(path, cfg)
    return path


def build_launch_command(
    config_path: str | os.PathLike,
    num_processes: int = 1,
    mixed_precision: str = "no",
    cpu: bool = False,
    num_machines: int = 1,
    machine_rank: int = 0,
    main_process_ip: str | None = None,
    main_process_port: int = 29500,
    accelerate_config_file: str | os.PathLike | None = None,
    module: str = "uvit_pipeline.training",
    module_args: list[str] | None = None,
) -> list[str]:
    """argv of the child. `num_processes` counts all processes on all machines (accelerate's meaning).

    Every setting is passed as a flag; pass `accelerate_config_file` (see `write_accelerate_config`)
    too, or accelerate also reads the user's default config file for anything not given (§6).
    """
    if num_processes < 1 or num_machines < 1:
        raise ValueError(
            f"launcher.num_processes/num_machines must be >= 1, got {num_processes}/{num_machines}"
        )
    if not 0 <= machine_rank < num_machines:
        raise ValueError(
            f"launcher.machine_rank must be in [0, {num_machines}), got {machine_rank}"
        )
    if num_machines > 1 and not main_process_ip:
        raise ValueError("launcher.main_process_ip is required when num_machines > 1")
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if accelerate_config_file is not None:
        cmd += ["--config_file", str(accelerate_config_file)]
    if num_processes > 1:
        # Also for CPU: `--cpu --num_processes 2` would start a single process (§0 item 7).
        cmd += ["--multi_gpu"]
    elif cpu:
        cmd += ["--cpu"]
    cmd += [
        "--num_processes",
        str(num_processes),
        "--num_machines",
        str(num_machines),
        "--machine_rank",
        str(machine_rank),
        "--mixed_precision",
        mixed_precision,
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(main_process_port),
    ]
    if main_process_ip:
        cmd += ["--main_process_ip", main_process_ip]
    if cpu:
        # Explicit, so accelerate neither guesses nor warns: the cores split over local processes.
        local = max(1, num_processes // num_machines)
        cmd += ["--num_cpu_threads_per_process", str(max(1, (os.cpu_count() or 1) // local))]
    cmd += [
        "-m",
        module,
        *(module_args if module_args is not None else ["--config", str(config_path)]),
    ]
    return cmd


def launch(
    config: TrainConfig,
    num_processes: int = 1,
    num_machines: int = 1,
    machine_rank: int = 0,
    main_process_ip: str | None = None,
    main_process_port: int | None = None,
    env_extra: dict[str, str] | None = None,
    log_path: str | os.PathLike | None = None,
) -> Path:
    """Validate, write `run_dir/train_config.json`, run the child to completion, return `run_dir/final`.

    `mixed_precision` and `cpu` come from the config so flags and Accelerator always agree.
    `env_extra` (e.g. MLFLOW_RUN_ID, MLFLOW_TRACKING_URI, MLFLOW_EXPERIMENT_NAME) is added to the
    child's environment. Raises RuntimeError with the log tail when the child fails.
    """
    config.validate(num_processes=num_processes)
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config_path = run_dir / "train_config.json"
    write_json(config_path, config.to_dict())
    log_path = Path(log_path) if log_path is not None else run_dir / "train.log"
    run_under_accelerate(
        run_dir,
        "uvit_pipeline.training",
        ["--config", str(config_path)],
        num_processes,
        config.mixed_precision,
        config.cpu,
        num_machines,
        machine_rank,
        main_process_ip,
        main_process_port,
        env_extra,
        log_path,
        what="training child",
    )
    final = run_dir / "final"
    if not (final / "summary.json").is_file():
        raise RuntimeError(
            f"training child succeeded but {final} has no summary.json (log: {log_path})"
        )
    summary = json.loads((final / "summary.json").read_text(encoding="utf-8"))
    logger.info(
        "Training finished: %s", {k: summary.get(k) for k in ("steps", "final_loss", "wall_time_s")}
    )
    return final


def run_under_accelerate(
    work_dir: Path,
    module: str,
    module_args: list[str],
    num_processes: int = 1,
    mixed_precision: str = "no",
    cpu: bool = False,
    num_machines: int = 1,
    machine_rank: int = 0,
    main_process_ip: str | None = None,
    main_process_port: int | None = None,
    env_extra: dict[str, str] | None = None,
    log_path: Path | None = None,
    what: str = "child",
) -> None:
    """`accelerate launch -m module *module_args` with an explicit config file written to `work_dir`;
    output goes to the console and `log_path`; a failure raises RuntimeError with the log's tail."""
    if main_process_port is None:
        main_process_port = free_port() if num_machines == 1 else 29500
    acc_cfg = write_accelerate_config(
        work_dir / "accelerate_config.json",
        num_processes,
        mixed_precision,
        cpu,
        num_machines,
        machine_rank,
        main_process_ip,
        main_process_port,
    )
    cmd = build_launch_command(
        None,
        num_processes,
        mixed_precision,
        cpu,
        num_machines,
        machine_rank,
        main_process_ip,
        main_process_port,
        accelerate_config_file=acc_cfg,
        module=module,
        module_args=module_args,
    )
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
    rc, tail = _run_tee(cmd, env, log_path)
    if rc != 0:
        raise RuntimeError(
            f"{what} exited with code {rc} (log: {log_path}); last lines:\n" + "".join(tail)
        )


def _run_tee(
    cmd: list[str], env: dict, log_path: Path, tail_lines: int = 60
) -> tuple[int, list[str]]:
    """Run `cmd` in its own process group, copying its output to stdout and `log_path`."""
    tail: deque[str] = deque(maxlen=tail_lines)
    pending = b""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            while chunk := proc.stdout.read1(65536):
                log.write(chunk)
                log.flush()
                sys.stdout.write(decoder.decode(chunk))
                sys.stdout.flush()
                pending += chunk
                *lines, pending = pending.split(b"\n")
                tail.extend(line.decode(errors="replace") + "\n" for line in lines)
            rc = proc.wait()
        except BaseException:
            # Parent interrupted (Ctrl-C, Kedro failure): do not leave orphaned ranks holding devices.
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
            raise
    if pending:
        tail.append(pending.decode(errors="replace"))
    return rc, list(tail)
