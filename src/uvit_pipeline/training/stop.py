"""Save on a stop signal: SIGTERM or SIGUSR1 (a scheduler's time limit or preemption, `scancel`,
the parent forwarding its own SIGTERM) ends training at the next step boundary with its state saved.

Only a flag is set in the signal handler. At every step boundary `StopOnSignal.poll` tells every rank
whether any rank was asked to stop, so all ranks stop after the same step, save one consistent state
and exit. With several processes the flags are combined by an all-reduce whose result is read one
step later, so the check never makes the host wait for the device (the stop comes one step after the
signal). The caller (`loop.train`) saves the state and raises `TrainingStopped`.
"""

from __future__ import annotations

import signal
import threading

import torch
import torch.distributed as dist

from uvit_pipeline.errors import UserFacingError

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
# `python -m uvit_pipeline.training` exits with this code after a stop (EX_TEMPFAIL of sysexits.h:
# a temporary failure, run again to continue).
STOPPED_EXIT_CODE = 75


class TrainingStopped(UserFacingError, RuntimeError):
    """Training ended early on a signal, with its state saved at `step` in `path`."""

    def __init__(self, signal_name: str, step: int, n_steps: int, path: str):
        self.signal_name, self.step, self.n_steps, self.path = signal_name, step, n_steps, path
        super().__init__(
            f"training stopped by {signal_name} at step {step} of {n_steps}; its state is saved "
            f"in {path}: run the same command again to resume from step {step}"
        )


class StopOnSignal:
    """Context manager: while it is open, STOP_SIGNALS set a flag instead of ending the process
    (in the main thread only; elsewhere signals keep their handlers). DataLoader workers forked
    while it is open inherit the handler, so a signal sent to the whole process group does not
    kill them under the training step."""

    def __init__(self, device: torch.device | str = "cpu", world_size: int = 1):
        self.signum: int | None = None  # received by this process
        self.agreed: int | None = None  # the signal that stopped the run (any rank's)
        self.world_size = world_size
        self._previous: dict[int, object] = {}
        self._pending: torch.Tensor | None = None
        self._local: torch.Tensor | None = None
        if world_size > 1:
            self._local = torch.zeros(1, device=device)

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        if self.signum is None:
            self.signum = signum

    @property
    def signal_name(self) -> str:
        num = self.agreed or self.signum
        return signal.Signals(num).name if num else "a signal"

    def poll(self) -> bool:
        """Call once per step boundary on every rank: True on all ranks at the same boundary once
        any rank has received a stop signal (one boundary later with several processes)."""
        if self.world_size == 1:
            self.agreed = self.signum
            return self.signum is not None
        # The previous boundary's all-reduce (the largest signal number of any rank): enqueued a
        # step ago, so reading it waits for at most the end of that step (NCCL) and costs a round
        # trip of 4 bytes (gloo).
        if self._pending is not None and (agreed := int(self._pending.item())):
            self.agreed = agreed
            return True
        if self.signum is not None:
            self._local.fill_(float(self.signum))  # a device op, no host-device copy
        self._pending = self._local.clone()
        dist.all_reduce(self._pending, op=dist.ReduceOp.MAX)
        return False
