"""Starting a ``jax.distributed`` job of several processes on this machine (loopback), for tests and benchmarks.

A real cluster runs one process per host, each started by its own command or by SLURM (see
``docs/scaling.md``). On one machine the same program can run as N processes that talk over the
loopback interface with CPU collectives (gloo): :func:`launch_local` starts them, bounded in
time, and always ends them; :func:`initialize_from_env` is what each process calls first.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

ENV_PORT = "GENBAYES_MH_PORT"
ENV_NUM = "GENBAYES_MH_NUM_PROCESSES"
ENV_ID = "GENBAYES_MH_PROCESS_ID"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for the coordinator)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def initialize_from_env(timeout_s: int = 120) -> tuple[int, int]:
    """Join the job :func:`launch_local` started (no-op for a single process); returns ``(process_id, num_processes)``.

    Must run before any JAX computation. Selects gloo CPU collectives (JAX's CPU backend has none
    by default, and a program over several processes' CPU devices needs them) and calls
    ``jax.distributed.initialize`` with the coordinator on 127.0.0.1.
    """
    import jax

    n = int(os.environ.get(ENV_NUM, "1"))
    pid = int(os.environ.get(ENV_ID, "0"))
    if n > 1:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=f"127.0.0.1:{os.environ[ENV_PORT]}", num_processes=n,
                                   process_id=pid, initialization_timeout=timeout_s)
    return pid, n


def device_count_flags(flags: str, devices: int) -> str:
    """``flags`` (an ``XLA_FLAGS`` value) with the forced host device count set to ``devices``."""
    kept = [f for f in flags.split() if not f.startswith("--xla_force_host_platform_device_count")]
    return " ".join(kept + [f"--xla_force_host_platform_device_count={devices}"])


def launch_local(argv, num_processes: int, devices_per_process: int, *, timeout_s: float, env=None, log_dir=None):
    """Run ``python *argv`` as ``num_processes`` processes of one job on this machine; return their logs.

    Each process gets ``devices_per_process`` forced CPU devices, the coordinator's port and its
    process id in the environment (read by :func:`initialize_from_env`). Waits at most
    ``timeout_s`` seconds for all of them; on a timeout, a failure of any process or any exception,
    every process still running is killed (a process whose peer died would otherwise wait in a
    collective until gloo's own timeout). Raises ``RuntimeError`` with the logs' tails when a process
    fails or the time runs out.

    Returns:
        list of str: the output (stdout and stderr) of each process, in process order.
    """
    import tempfile

    base = dict(os.environ if env is None else env)
    base["XLA_FLAGS"] = device_count_flags(base.get("XLA_FLAGS", ""), devices_per_process)
    base["JAX_PLATFORMS"] = "cpu"
    base[ENV_NUM], base[ENV_PORT] = str(num_processes), str(free_port())
    log_dir = tempfile.mkdtemp(prefix="genbayes-mh-") if log_dir is None else str(log_dir)
    procs, logs, timed_out = [], [], False
    try:
        for i in range(num_processes):
            path = os.path.join(log_dir, f"process{i}.log")
            logs.append(path)
            with open(path, "w") as out:
                procs.append(subprocess.Popen([sys.executable, *argv], env=dict(base, **{ENV_ID: str(i)}), stdout=out,
                                              stderr=subprocess.STDOUT, start_new_session=True))
        deadline = time.monotonic() + timeout_s
        while True:
            codes = [p.poll() for p in procs]  # every process polled: any() would stop at the first running one
            if all(c is not None for c in codes):
                break
            if any(c not in (None, 0) for c in codes):
                break  # one failed: its peers would wait for it in a collective
            if time.monotonic() > deadline:
                timed_out = True
                break
            time.sleep(0.2)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:  # pragma: no cover
                pass
    texts = [open(path).read() for path in logs]
    codes = [p.returncode for p in procs]
    if any(c != 0 for c in codes):
        tails = "\n".join(f"--- process {i} (exit {c}) ---\n{t[-3000:]}" for i, (c, t) in enumerate(zip(codes, texts)))
        raise RuntimeError(("timed out after %.0f s" % timeout_s if timed_out else "a process failed")
                           + f"; exit codes {codes}\n{tails}")
    return texts
