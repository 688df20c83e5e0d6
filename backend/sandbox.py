"""The sandbox around every process that reads a user's file (inspection, a run's computation).

:func:`command` turns ``python -m MODULE ARGS`` into a command that runs it under bubblewrap
(``bwrap``, https://github.com/containers/bubblewrap): new user, pid, network, ipc, uts and
cgroup namespaces (``--unshare-all``: no network, not even loopback), uid/gid 65534, every
capability dropped, ``--die-with-parent`` (the child dies with the worker or API that started
it), ``--new-session`` (no terminal injection), and a filesystem built from an allow-list:

* read-only: the system directories (``/usr``, ``/lib*``, ``/bin``, ``/sbin`` — as symlinks where
  the host has merged ``/usr``), a few ``/etc`` files the dynamic loader and libc read, the Python
  prefix (standard library and site-packages) and the engine package directory ``genscope/``
  alone (an editable install lives in the repository; the repository root, the data directory
  and its database and blobs are never bound);
* read-only at ``/input/<name>``: the file(s) the process must read;
* read-write: a per-run scratch directory at ``/scratch``, also ``$HOME`` and ``$TMPDIR``;
  ``/tmp`` is a private tmpfs, ``/dev`` a minimal one, ``/proc`` the new pid namespace's.

Resource limits are set in the child before the engine is imported (:data:`_BOOT`), with
:mod:`resource`; a process without capabilities cannot raise them again. Memory is bounded by
``RLIMIT_DATA`` (private writable memory: heap and anonymous ``mmap``), not ``RLIMIT_AS``: torch
reserves address space it never touches (CUDA's unified address space alone is tens of GiB, and
each glibc malloc arena reserves 64 MiB per thread), so an address-space limit fails healthy runs
long before they use the memory; ``RLIMIT_DATA`` counts what can actually be written. Also set:
``RLIMIT_CPU`` (seconds of CPU time, SIGXCPU then SIGKILL), ``RLIMIT_NOFILE``, ``RLIMIT_FSIZE``
(the largest file it may write, SIGXFSZ) and ``RLIMIT_NPROC`` (processes and threads of the
sandbox's uid in its own user namespace).

``GENSCOPE_SANDBOX=off`` runs the same command without bubblewrap (the limits still apply): for a
trusted single-user machine only; the service logs it as a warning at start-up.
:func:`check` runs a trivial sandboxed command once; the API and the worker call it at start-up
and refuse to start, naming the setting, when it fails.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("genscope.sandbox")

SANDBOX_UID = 65534
SCRATCH = "/scratch"
INPUT = "/input"
_ETC_FILES = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/nsswitch.conf",
    "/etc/localtime",
    "/etc/alternatives",
)
# the engine's own switches and the thread/GPU selection pass into the sandbox; nothing else
_PASSED_ENV = (
    "CUDA_VISIBLE_DEVICES",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "GENSCOPE_SIMULATED_MEMORY_CAP_MB",
    "GENSCOPE_RETAIN_HEAP",
    "GENSCOPE_MAX_UNPACKED_MB",
)
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")

# Run in the child before anything else: set the limits, then run the module as __main__.
_BOOT = (
    "import json,resource,runpy,sys\n"
    "lim=json.loads(sys.argv[1])\n"
    "for name,(soft,hard) in lim['rlimits'].items():\n"
    "    resource.setrlimit(getattr(resource,name),(soft,hard))\n"
    "sys.argv=[lim['module'],*sys.argv[2:]]\n"
    "runpy.run_module(lim['module'],run_name='__main__',alter_sys=True)\n"
)


class SandboxUnavailable(RuntimeError):
    """The sandbox cannot run on this machine (message names GENSCOPE_SANDBOX)."""


@dataclass(frozen=True)
class Limits:
    """Resource limits of one sandboxed process."""

    memory_mb: int
    cpu_seconds: int
    open_files: int = 256
    file_size_mb: int = 4096
    processes: int = 256  # threads count: torch starts one per core, OpenMP as many

    def rlimits(self) -> dict[str, tuple[int, int]]:
        """The ``resource`` limits by name, as (soft, hard): the CPU limit's soft value sends
        SIGXCPU, its hard value (5 s later) SIGKILL; the others are equal."""
        mib = 1024 * 1024
        return {
            "RLIMIT_DATA": (self.memory_mb * mib,) * 2,
            "RLIMIT_CPU": (self.cpu_seconds, self.cpu_seconds + 5),
            "RLIMIT_NOFILE": (self.open_files,) * 2,
            "RLIMIT_FSIZE": (self.file_size_mb * mib,) * 2,
            "RLIMIT_NPROC": (self.processes,) * 2,
        }


def engine_package_dirs() -> list[Path]:
    """The directories of the packages a sandboxed child imports that live outside the Python
    prefix (the engine ``genscope`` in an editable install)."""
    import importlib.util

    spec = importlib.util.find_spec("genscope")
    dirs = [Path(p).resolve() for p in (spec.submodule_search_locations or [])] if spec else []
    return dirs


def _python_roots() -> list[Path]:
    """The Python installation: prefix, base prefix, stdlib and site-packages directories."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        value = sysconfig.get_paths().get(key)
        if value:
            paths.add(value)
    exe = Path(sys.executable)
    paths.add(str(exe.parent))
    roots: list[Path] = []
    for p in sorted({Path(p).resolve() for p in paths if p and Path(p).exists()}, key=str):
        if not any(p == r or r in p.parents for r in roots):
            roots.append(p)
    return roots


def _ro(path: str | Path, args: list[str]) -> None:
    """Bind ``path`` read-only at the same place; a symlink stays a symlink."""
    p = Path(path)
    if p.is_symlink():
        args += ["--symlink", os.readlink(p), str(p)]
    elif p.exists():
        args += ["--ro-bind", str(p), str(p)]


def inside_path(outside: Path) -> str:
    """Where an input file is seen inside the sandbox (its name kept: formats go by suffix)."""
    return f"{INPUT}/{Path(outside).name}"


@dataclass(frozen=True)
class Sandbox:
    """How sandboxed children are started: ``mode`` is ``bwrap`` or ``off``."""

    mode: str = "bwrap"
    bwrap: str = "bwrap"

    def command(
        self,
        module: str,
        args: Sequence[str],
        *,
        scratch: Path,
        inputs: Sequence[Path] = (),
        ro_dirs: Mapping[str, Path] | None = None,
        env: Mapping[str, str] | None = None,
        limits: Limits,
    ) -> list[str]:
        """The argv that runs ``python -m module *args`` sandboxed, with ``inputs`` readable
        (at :func:`inside_path` with bwrap, where they are otherwise), the directories
        ``ro_dirs`` readable at their keys, ``env`` added to the environment and ``scratch``
        writable.
        """
        boot = json.dumps({"module": module, "rlimits": limits.rlimits()})
        python = [sys.executable, "-I", "-c", _BOOT, boot, *args]
        if self.mode == "off":
            return python
        return [*self.bwrap_args(scratch, inputs, ro_dirs, env), "--", *python]

    def bwrap_args(
        self,
        scratch: Path,
        inputs: Sequence[Path],
        ro_dirs: Mapping[str, Path] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> list[str]:
        """bubblewrap's options for one run (everything before ``--``)."""
        args = [
            self.bwrap,
            "--unshare-all",
            "--die-with-parent",
            "--new-session",
            "--cap-drop",
            "ALL",
            "--uid",
            str(SANDBOX_UID),
            "--gid",
            str(SANDBOX_UID),
            "--hostname",
            "sandbox",
            "--clearenv",
        ]
        for d in _SYSTEM_DIRS:
            _ro(d, args)
        for f in _ETC_FILES:
            _ro(f, args)
        for root in _python_roots():
            args += ["--ro-bind", str(root), str(root)]
        for pkg in engine_package_dirs():
            args += ["--ro-bind", str(pkg), str(pkg)]
        args += ["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
        gpus = sorted(str(p) for p in Path("/dev").glob("nvidia*") if not p.is_dir())
        for dev in gpus:  # a GPU worker's devices, and what CUDA reads of the PCI tree
            args += ["--dev-bind", dev, dev]
        if gpus:
            for d in ("/sys/bus/pci", "/sys/devices", "/sys/module/nvidia"):
                _ro(d, args)
        args += ["--dir", INPUT]
        for path in inputs:
            args += ["--ro-bind", str(Path(path).resolve()), inside_path(path)]
        for inside, outside in (ro_dirs or {}).items():
            args += ["--ro-bind", str(Path(outside).resolve()), inside]
        args += ["--bind", str(scratch), SCRATCH, "--chdir", SCRATCH]
        for name, value in {**self.env(), **(env or {})}.items():
            args += ["--setenv", name, value]
        return args

    def env(self) -> dict[str, str]:
        """The sandboxed child's whole environment (bwrap clears the rest)."""
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": SCRATCH,
            "TMPDIR": SCRATCH,
            "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
            "MPLCONFIGDIR": SCRATCH,
        }
        for name in _PASSED_ENV:
            if name in os.environ:
                env[name] = os.environ[name]
        return env

    def child_env(self, scratch: Path) -> dict[str, str] | None:
        """The environment to give ``subprocess`` (bwrap sets its own inside)."""
        if self.mode == "off":
            return {
                **os.environ,
                "PYTHONUNBUFFERED": "1",
                "PYTHONDONTWRITEBYTECODE": "1",
                "HOME": str(scratch),
                "TMPDIR": str(scratch),
            }
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}

    def path_for(self, outside: Path) -> str:
        """Where the child sees an input file."""
        return str(outside) if self.mode == "off" else inside_path(outside)

    @property
    def scratch_inside(self) -> str | None:
        """The scratch directory as the child sees it (None: its real path)."""
        return None if self.mode == "off" else SCRATCH


def from_settings(settings: object) -> Sandbox:
    """The sandbox configured by ``GENSCOPE_SANDBOX``."""
    return Sandbox(mode=str(getattr(settings, "sandbox", "bwrap")))


def limit_hit(returncode: int, limits: Limits) -> str | None:
    """Which limit a child killed by ``returncode`` most likely hit.

    A child killed by a signal has a negative status when run directly; under bubblewrap, whose
    init process exits with the child's status, ``128 + signal`` (as a shell reports it). The
    engine's own statuses are 0, 1 and 2.
    """
    if returncode < 0:
        sig = -returncode
    elif 128 < returncode < 128 + 65:
        sig = returncode - 128
    else:
        return None
    if sig == signal.SIGXCPU:
        return f"CPU time ({limits.cpu_seconds} s)"
    if sig == signal.SIGKILL:
        return f"CPU time ({limits.cpu_seconds} s) or memory ({limits.memory_mb} MB)"
    if sig == signal.SIGXFSZ:
        return f"file size ({limits.file_size_mb} MB)"
    return None  # another signal: the process crashed (see :func:`crash_signal`)


def crash_signal(returncode: int) -> str | None:
    """The name of the signal that killed a child (directly or under bubblewrap), or None."""
    sig = -returncode if returncode < 0 else returncode - 128 if 128 < returncode < 193 else 0
    try:
        return signal.Signals(sig).name if sig else None
    except ValueError:
        return f"signal {sig}"


_checked: set[tuple[str, str]] = set()


def ensure_available(settings: object) -> None:
    """:func:`check` the configured sandbox once per process (the API's and the worker's
    start-up call it); raises :class:`SandboxUnavailable` naming ``GENSCOPE_SANDBOX``."""
    box = from_settings(settings)
    key = (box.mode, box.bwrap)
    if key in _checked and box.mode != "off":
        return
    data_dir = Path(str(getattr(settings, "data_dir", tempfile.gettempdir())))
    check(box, data_dir / "scratch")
    _checked.add(key)


def check(sandbox: Sandbox, scratch_root: Path, timeout: float = 60.0) -> None:
    """Run a trivial sandboxed command once; raise :class:`SandboxUnavailable` when it fails.

    The command imports nothing of the engine: it checks that the child starts as the
    sandbox's uid, can write its scratch directory and cannot write the Python prefix.
    """
    if sandbox.mode == "off":
        log.warning(
            "GENSCOPE_SANDBOX=off: uploads are inspected and analysed WITHOUT the sandbox; "
            "use this only on a trusted single-user machine"
        )
        return
    if sandbox.mode != "bwrap":
        raise SandboxUnavailable(f"GENSCOPE_SANDBOX must be bwrap or off, got {sandbox.mode!r}")
    if shutil.which(sandbox.bwrap) is None:
        raise SandboxUnavailable(
            "GENSCOPE_SANDBOX=bwrap but bubblewrap is not installed (apt-get install bubblewrap); "
            "on a trusted single-user machine set GENSCOPE_SANDBOX=off"
        )
    scratch_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch_root, prefix="check-") as tmp:
        probe = (
            "import os,sys;open('/scratch/ok','w').write(str(os.getuid()));"
            "w=os.access(sys.prefix,os.W_OK);sys.exit(3 if w else 0)"
        )
        argv = [
            *sandbox.bwrap_args(Path(tmp), ()),
            "--",
            sys.executable,
            "-I",
            "-c",
            probe,
        ]
        try:
            proc = subprocess.run(
                argv, capture_output=True, text=True, timeout=timeout, env=sandbox.child_env(tmp)
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SandboxUnavailable(
                f"GENSCOPE_SANDBOX=bwrap but the sandbox check failed ({exc}); "
                "on a trusted single-user machine set GENSCOPE_SANDBOX=off"
            ) from exc
        marker = Path(tmp) / "ok"
        if proc.returncode != 0 or not marker.is_file():
            raise SandboxUnavailable(
                f"GENSCOPE_SANDBOX=bwrap but a trivial sandboxed command failed (exit "
                f"{proc.returncode}): {proc.stderr.strip()[-500:]} — bubblewrap needs "
                "unprivileged user namespaces (in a container: seccomp and AppArmor profiles "
                "that allow them); on a trusted single-user machine set GENSCOPE_SANDBOX=off"
            )
    log.info("sandbox: bubblewrap works (uid %d, no network, read-only system)", SANDBOX_UID)
