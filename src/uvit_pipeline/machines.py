"""One Kedro run across plain machines named by address (no scheduler): machine 0 runs the
pipeline, every other machine only runs its share of each launch.

Each machine runs `kedro run` with its own `launcher.machine_rank`. On machine 0 (the project's
`run` command, `cli.py`) a `Coordinator` listens on a control channel, TCP at
`main_process_ip:main_process_port + 1`, while the pipeline runs as usual: one MLflow run, one set
of catalog outputs. Every launch of a heavy stage (`launch.run_under_accelerate`: training, and
every `run_parallel` stage) is announced to the other machines, which start their own processes of
the same `accelerate launch` (`serve`, the worker side: it runs no pipeline node and opens no
MLflow run), and machine 0 gathers every machine's result. A failure on any machine stops the
launch on all of them and fails machine 0's node with that machine's error; at the end of machine
0's run every worker is told the outcome and exits with 0 or with the failure.

Every machine must see the project folder (data, staging and training folders) at the same path:
a worker checks it when it joins (it reads a token file machine 0 wrote) and before each launch
(the launch's folder). Bad settings end within `launcher.rendezvous_timeout_s`: a worker that
cannot reach machine 0, a machine 0 whose workers never join, a port in use. No Kedro or MLflow here.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from queue import Empty, Queue

from uvit_pipeline.errors import ChildFailed, UserFacingError

logger = logging.getLogger(__name__)

CONTROL_PORT_OFFSET = 1  # the control channel listens at main_process_port + 1 on machine 0
PING_S = 5.0  # machine 0 says it is alive this often
LOST_AFTER_S = 120.0  # a worker that hears nothing from machine 0 this long gives up
RESULT_GRACE_S = 30.0  # after a failure, how long machine 0 waits for the other machines' results


class MachinesError(UserFacingError, RuntimeError):
    """A machine of a multi-machine run could not join, lost machine 0, or was told of a failure."""


def control_port(spec) -> int:
    """The control channel's port: one above the rendezvous port (`LaunchSpec.port()`)."""
    return int(spec.port()) + CONTROL_PORT_OFFSET


def spread_over_machines(spec) -> bool:
    """True when `spec` (launcher settings) is a run over several plain machines: machine 0
    coordinates, the others serve (SLURM runs use `srun` instead)."""
    return spec.num_machines > 1 and not spec.slurm


class _Conn:
    """Newline-delimited JSON messages over one TCP connection; `send` is safe from any thread."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._buf = b""
        self._lock = threading.Lock()

    def send(self, msg: dict) -> bool:
        data = (json.dumps(msg) + "\n").encode()
        with self._lock:
            try:
                self.sock.sendall(data)
                return True
            except OSError:
                return False

    def recv(self, timeout: float | None) -> dict | None:
        """The next message; None when `timeout` passed first; `EOFError` when the peer closed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return None
            except OSError as e:
                raise EOFError(str(e)) from e
            if not chunk:
                raise EOFError("connection closed")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


@dataclass
class _Worker:
    rank: int
    host: str
    conn: _Conn
    ready: bool = False
    gone: bool = False  # it said goodbye or its connection closed
    error: str | None = None  # it could not join (wrong settings, no shared folder) or was lost
    results: dict = field(default_factory=dict)  # launch id -> (ok, error, time)


# The coordinator of this process's run (machine 0 of a multi-machine run), used by
# `launch.run_under_accelerate`; None elsewhere.
_ACTIVE: Coordinator | None = None


def active() -> Coordinator | None:
    return _ACTIVE


class Coordinator:
    """Machine 0's side: accepts the other machines, announces each launch, gathers results.

    `start()` binds the control port (a port in use fails at once) and writes the token file in
    `shared_dir`; `run_launch(...)` is called by `run_under_accelerate`; `finish(ok, message)`
    tells every worker how the run ended. Use as a context manager: it becomes `active()`."""

    def __init__(self, spec, shared_dir: str | os.PathLike):
        self.spec = spec
        self.shared_dir = Path(shared_dir).resolve()
        self.port = control_port(spec)
        self.workers: dict[int, _Worker] = {}
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self._token = secrets.token_hex(16)
        self._token_path = self.shared_dir / f".machines-{self.port}.token"
        self._launch_id = 0
        self._current: int | None = None  # the launch in progress
        self._abort_own: Callable[[], None] | None = None
        self._stopped_own = False
        self._threads: list[threading.Thread] = []

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> Coordinator:
        from uvit_pipeline.launch import check_port_free

        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("", self.port))
        except OSError as e:
            s.close()
            raise ValueError(
                f"the control port {self.port} (launcher.main_process_port + "
                f"{CONTROL_PORT_OFFSET}) is in use on {socket.gethostname()}, machine 0: pick "
                "another launcher.main_process_port, or stop the process holding it"
            ) from e
        check_port_free(self.spec.port())
        s.listen(max(8, self.spec.num_machines))
        s.settimeout(0.5)
        self._listener = s
        self.shared_dir.mkdir(parents=True, exist_ok=True)
        tmp = self._token_path.with_suffix(".tmp")
        tmp.write_text(self._token, encoding="utf-8")
        os.replace(tmp, self._token_path)
        for target in (self._accept_loop, self._ping_loop):
            t = threading.Thread(target=target, daemon=True, name=f"machines-{target.__name__}")
            t.start()
            self._threads.append(t)
        logger.info(
            "Machine 0 of %d: waiting for machines 1..%d at control port %d (they run the same "
            "kedro run with their own launcher.machine_rank)",
            self.spec.num_machines,
            self.spec.num_machines - 1,
            self.port,
        )
        return self

    def __enter__(self) -> Coordinator:
        global _ACTIVE
        if self._listener is None:
            self.start()
        _ACTIVE = self
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        global _ACTIVE
        _ACTIVE = None
        if exc is None:
            self.finish(True, "")
        else:
            self.finish(False, _one_line(exc))

    def finish(self, ok: bool, message: str) -> None:
        """Tell every worker the run ended (ok or the failure); close the channel."""
        self._stop.set()
        with self._lock:
            workers = list(self.workers.values())
        for w in workers:
            w.conn.send({"type": "end", "ok": ok, "message": message})
        deadline = time.monotonic() + 5.0
        with self._lock:  # each worker answers "bye" (or closes) once it has read the end
            while not all(w.gone for w in workers) and time.monotonic() < deadline:
                self._lock.wait(max(0.0, min(0.5, deadline - time.monotonic())))
        for w in workers:
            w.conn.close()
        if self._listener is not None:
            self._listener.close()
        with contextlib.suppress(OSError):
            self._token_path.unlink()

    # -- background threads ----------------------------------------------------------------
    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                sock, addr = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._greet, args=(_Conn(sock), addr[0]), daemon=True).start()

    def _greet(self, conn: _Conn, addr: str) -> None:
        """The handshake: the worker says who it is; wrong settings are refused with the reason."""
        try:
            hello = conn.recv(30.0)
        except (EOFError, ValueError):
            conn.close()
            return
        if not hello or hello.get("type") != "hello":
            conn.close()
            return
        rank, host = hello.get("machine_rank"), hello.get("host", addr)
        refusal = None
        for key in ("num_machines", "num_processes"):
            if hello.get(key) != getattr(self.spec, key):
                refusal = (
                    f"launcher.{key}={hello.get(key)} on machine {rank} ({host}) but "
                    f"{getattr(self.spec, key)} on machine 0: every machine needs the same settings"
                )
        if refusal is None and not (isinstance(rank, int) and 0 < rank < self.spec.num_machines):
            refusal = (
                f"launcher.machine_rank={rank!r} on {host}: the other machines of a "
                f"{self.spec.num_machines}-machine run are 1..{self.spec.num_machines - 1}"
            )
        with self._lock:
            if refusal is None and rank in self.workers and not self.workers[rank].error:
                refusal = (
                    f"machine_rank {rank} has already joined from {self.workers[rank].host}; "
                    f"{host} has the same launcher.machine_rank"
                )
            if refusal is not None:
                conn.send({"type": "refused", "message": refusal})
                conn.close()
                logger.warning("Refused a machine: %s", refusal)
                return
            worker = _Worker(rank, host, conn)
            self.workers[rank] = worker
        conn.send({"type": "welcome", "token_path": str(self._token_path), "token": self._token})
        t = threading.Thread(target=self._read_loop, args=(worker,), daemon=True)
        t.start()

    def _read_loop(self, w: _Worker) -> None:
        while True:
            try:
                msg = w.conn.recv(None)
            except (EOFError, ValueError, OSError):
                msg = None
            with self._lock:
                if msg is None or msg.get("type") == "bye":
                    w.gone = True
                    self._lock.notify_all()
                if msg is None:
                    if not self._stop.is_set():
                        w.error = w.error or (
                            "lost its connection to machine 0 (its kedro run ended or its "
                            "machine went away)"
                        )
                        self._lock.notify_all()
                        self._abort_current()
                    return
                kind = msg.get("type")
                if kind == "ready":
                    w.ready = True
                    logger.info("Machine %d (%s) joined", w.rank, w.host)
                elif kind == "not_ready":
                    w.error = msg.get("message", "could not join")
                elif kind == "result":
                    w.results[msg["id"]] = (bool(msg["ok"]), msg.get("error"), time.monotonic())
                    if not msg["ok"] and msg["id"] == self._current:
                        self._abort_current()
                elif kind == "bye":
                    return
                self._lock.notify_all()

    def _ping_loop(self) -> None:
        while not self._stop.wait(PING_S):
            with self._lock:
                workers = list(self.workers.values())
            for w in workers:
                w.conn.send({"type": "ping"})

    def _abort_current(self) -> None:
        """Another machine failed (or was lost) during a launch: stop this machine's processes."""
        if self._abort_own is not None:
            self._stopped_own = True
            self._abort_own()
        for w in self.workers.values():
            if self._current is not None:
                w.conn.send({"type": "abort", "id": self._current})

    # -- launches --------------------------------------------------------------------------
    def wait_for_workers(self, what: str) -> list[_Worker]:
        """Every other machine, once all have joined; `MachinesError` naming the missing ones
        after `launcher.rendezvous_timeout_s`, or at once naming one that could not join."""
        timeout = float(self.spec.rendezvous_timeout_s)
        deadline = time.monotonic() + timeout
        expected = range(1, self.spec.num_machines)
        with self._lock:
            while True:
                failed = [w for w in self.workers.values() if w.error]
                if failed:
                    raise MachinesError(
                        f"{what} cannot start: "
                        + "; ".join(f"machine {w.rank} ({w.host}): {w.error}" for w in failed)
                    )
                missing = [r for r in expected if not (r in self.workers and self.workers[r].ready)]
                if not missing:
                    return [self.workers[r] for r in expected]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise MachinesError(
                        f"{what}: machine(s) {', '.join(map(str, missing))} did not join machine "
                        f"0's control channel (port {self.port}) within "
                        f"launcher.rendezvous_timeout_s={self.spec.rendezvous_timeout_s} s: start "
                        "`kedro run` on every machine with the same --env and launcher settings and "
                        f"its own launcher.machine_rank (1..{self.spec.num_machines - 1}), and check "
                        "that launcher.main_process_ip is machine 0's address as they see it"
                    )
                self._lock.wait(min(left, 1.0))

    def run_launch(
        self,
        spec,
        job: dict,
        run_here: Callable[[], None],
        abort_here: Callable[[], None],
    ) -> None:
        """Announce the launch `job` (work_dir, module, args, log_path, env, what) to every
        worker, run this machine's part (`run_here`; `abort_here` stops it), gather every
        machine's result; raise `ChildFailed` naming each machine that failed."""
        what = job["what"]
        workers = self.wait_for_workers(what)
        work_dir = Path(job["work_dir"]).resolve()
        token = secrets.token_hex(8)
        (work_dir / ".launch_token").write_text(token, encoding="utf-8")
        with self._lock:
            self._launch_id += 1
            lid = self._launch_id
            self._current = lid
            self._abort_own = abort_here
            self._stopped_own = False
        msg = {
            **job,
            "type": "launch",
            "id": lid,
            "spec": asdict(spec),
            "work_dir": str(work_dir),
            "token": token,
            "log_path": str(Path(job["log_path"]).resolve()),
            "cwd": os.getcwd(),  # relative paths in the arguments are relative to it
        }
        own_error: tuple[str, float] | None = None
        try:
            for w in workers:
                w.conn.send(msg)
            try:
                run_here()
            except ChildFailed as e:
                own_error = (str(e), time.monotonic())
                if self._stopped_own:  # stopped because another machine failed: its error counts
                    own_error = (f"{what}: machine 0's processes were stopped", own_error[1])
            finally:
                with self._lock:
                    self._abort_own = None
            failures = self._gather(workers, lid, own_error, what)
        finally:
            with self._lock:
                self._current = None
            with contextlib.suppress(OSError):
                (work_dir / ".launch_token").unlink()
        if failures:  # the first failure is the cause; the later ones, its consequences
            failures.sort(key=lambda f: f[0])
            rest = "; ".join(f[1].split("\n", 1)[0] for f in failures[1:])
            raise ChildFailed(
                failures[0][1] + (f"\n(then, as a consequence: {rest})" if rest else "")
            )

    def _gather(self, workers, lid, own_error, what) -> list[tuple[float, str]]:
        """Every worker's result of launch `lid`. The processes of one launch end together
        (torchrun's exit barrier); after a first failure the others are being stopped, so the
        wait for the rest is short."""
        n = self.spec.num_machines
        failures: list[tuple[float, str]] = []
        if own_error:
            failures.append((own_error[1], own_error[0]))
            for w in workers:
                w.conn.send({"type": "abort", "id": lid})
        deadline = time.monotonic() + float(self.spec.rendezvous_timeout_s) + 60.0
        with self._lock:
            while True:
                now = time.monotonic()
                failed_at = [
                    t for ok, _, t in (w.results.get(lid, (True, 0, 0)) for w in workers) if not ok
                ]
                failed_at += [own_error[1]] if own_error else []
                if failed_at:
                    deadline = min(deadline, min(failed_at) + RESULT_GRACE_S)
                pending = [w for w in workers if lid not in w.results and not w.error]
                if not pending or now >= deadline:
                    break
                self._lock.wait(min(1.0, deadline - now))
            for w in workers:
                if lid in w.results:
                    ok, err, t = w.results[lid]
                    if not ok:
                        failures.append(
                            (t, f"{what} failed on machine {w.rank} of {n} ({w.host}): {err}")
                        )
                elif w.error:
                    failures.append(
                        (time.monotonic(), f"{what}: machine {w.rank} of {n} ({w.host}): {w.error}")
                    )
                else:
                    failures.append(
                        (
                            time.monotonic(),
                            f"{what}: machine {w.rank} of {n} ({w.host}) gave no result in time",
                        )
                    )
        return failures


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().split("\n", 1)[0]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# -- the worker side ----------------------------------------------------------------------------
def connect(spec, timeout_s: float | None = None) -> _Conn:
    """Connect to machine 0's control channel, retrying until `launcher.rendezvous_timeout_s`."""
    timeout_s = float(spec.rendezvous_timeout_s if timeout_s is None else timeout_s)
    addr = (spec.main_process_ip, control_port(spec))
    deadline = time.monotonic() + timeout_s
    last: OSError | None = None
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise MachinesError(
                f"machine 0 was not reachable at {addr[0]}:{addr[1]} (launcher.main_process_ip, "
                f"launcher.main_process_port + {CONTROL_PORT_OFFSET}) within "
                f"launcher.rendezvous_timeout_s={spec.rendezvous_timeout_s} s: is its kedro run "
                "started (launcher.machine_rank=0), and are the address and port right?"
                + (f" (last error: {last})" if last else "")
            )
        try:
            sock = socket.create_connection(addr, timeout=min(5.0, left))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            return _Conn(sock)
        except OSError as e:
            last = e
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


def serve(spec, *, launch_fn=None, stop_fn=None) -> int:
    """The worker side of a multi-machine run (machine_rank > 0): join machine 0, run this
    machine's part of every launch it announces, and end as machine 0's run ends.

    Returns 0 when machine 0's run succeeded; raises `MachinesError` with one clear line
    otherwise. `launch_fn`/`stop_fn` default to `launch.run_under_accelerate` /
    `launch.stop_launched` (tests may pass others)."""
    from uvit_pipeline import launch

    launch_fn = launch_fn or launch.run_under_accelerate
    stop_fn = stop_fn or launch.stop_launched
    me = f"machine {spec.machine_rank} of {spec.num_machines}"
    conn = connect(spec)
    conn.send(
        {
            "type": "hello",
            "machine_rank": spec.machine_rank,
            "num_machines": spec.num_machines,
            "num_processes": spec.num_processes,
            "host": socket.gethostname(),
        }
    )
    try:
        reply = conn.recv(float(spec.rendezvous_timeout_s))
    except EOFError as e:
        raise MachinesError(f"{me}: machine 0 closed the control channel while joining") from e
    if reply is None:
        raise MachinesError(f"{me}: machine 0 did not answer within rendezvous_timeout_s")
    if reply.get("type") == "refused":
        raise MachinesError(f"{me}: machine 0 refused to let it join: {reply['message']}")
    token_path = Path(reply["token_path"])
    try:
        seen = token_path.read_text(encoding="utf-8")
    except OSError:
        seen = None
    if seen != reply["token"]:
        why = (
            f"{me} cannot see machine 0's project folder: {token_path} "
            + ("is missing here" if seen is None else "holds another run's token")
            + ". A run over several machines needs the project folder (data, staging and training "
            "folders) on a filesystem every machine sees, at the same path (docs/cluster.md)"
        )
        conn.send({"type": "not_ready", "message": why})
        conn.close()
        raise MachinesError(why)
    conn.send({"type": "ready"})
    logger.info("%s joined machine 0 at %s; waiting for its launches", me, spec.main_process_ip)

    inbox: Queue = Queue()
    state: dict = {"running": None, "aborted": set()}

    def read() -> None:
        while True:
            try:
                msg = conn.recv(None)
            except (EOFError, ValueError):
                msg = {"type": "eof"}
            kind = msg["type"]
            if kind == "abort":
                state["aborted"].add(msg["id"])
            # A failure elsewhere, or machine 0 gone: stop this machine's processes of the launch.
            if kind in ("eof", "end") or (kind == "abort" and msg["id"] == state["running"]):
                if state["running"] is not None:
                    stop_fn()
            inbox.put(msg)
            if kind in ("eof", "end"):
                return

    threading.Thread(target=read, daemon=True, name="machines-worker-read").start()
    lost_after = max(LOST_AFTER_S, 3 * PING_S)
    try:
        while True:
            try:
                msg = inbox.get(timeout=lost_after)
            except Empty:
                raise MachinesError(
                    f"{me}: heard nothing from machine 0 for {lost_after:.0f} s (network or "
                    "machine 0 down); stopping"
                ) from None
            kind = msg["type"]
            if kind in ("ping", "abort"):
                continue
            if kind == "eof":
                raise MachinesError(
                    f"{me}: lost the connection to machine 0 before its run ended (its kedro "
                    "run was stopped or its machine went away)"
                )
            if kind == "end":
                conn.send({"type": "bye"})
                if msg["ok"]:
                    logger.info("%s: machine 0's run finished; done", me)
                    return 0
                raise MachinesError(f"{me}: machine 0's run failed: {msg['message']}")
            if kind == "launch":
                conn.send(_run_announced(msg, spec, launch_fn, state))
    finally:
        conn.close()


def _result(lid: int, error: str | None) -> dict:
    """The result message of launch `lid`: ok without `error`."""
    return {"type": "result", "id": lid, "ok": error is None, "error": error}


def _run_announced(msg: dict, spec, launch_fn, state: dict) -> dict:
    """This machine's part of one announced launch; the result message for machine 0."""
    from uvit_pipeline.launch import LaunchSpec

    lid, what = msg["id"], msg["what"]
    me = f"machine {spec.machine_rank} of {spec.num_machines}"
    if lid in state["aborted"]:
        return _result(lid, "stopped before it started")
    work_dir = Path(msg["work_dir"])
    try:
        seen = (work_dir / ".launch_token").read_text(encoding="utf-8")
    except OSError:
        seen = None
    if seen != msg["token"]:
        return _result(
            lid,
            f"{work_dir} is not visible from {me} (a run over several machines needs its "
            "folders on a filesystem every machine sees, at the same path)",
        )
    try:
        os.chdir(msg["cwd"])
    except OSError:
        return _result(lid, f"machine 0's working folder {msg['cwd']} does not exist on {me}")
    launched = replace(LaunchSpec(**msg["spec"]), machine_rank=spec.machine_rank).validate()
    log = Path(msg["log_path"])
    log = log.with_name(f"{log.stem}.machine{spec.machine_rank}{log.suffix}")
    logger.info("%s: %s (log: %s)", me, what, log)
    state["running"] = lid
    try:
        launch_fn(
            launched,
            work_dir,
            msg["module"],
            msg["args"],
            log_path=log,
            env_extra=msg["env"],
            what=what,
        )
        return _result(lid, None)
    except Exception as e:  # reported to machine 0, which fails the run naming this machine
        return _result(lid, str(e))
    finally:
        state["running"] = None


def main_for_worker(spec) -> int:
    """`serve` for a command line: one `Error:` line on stderr and exit status 1 on failure."""
    try:
        return serve(spec)
    except MachinesError as e:
        sys.stderr.write(f"Error: {e}\n")
        return 1
