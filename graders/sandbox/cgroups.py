"""One cgroup per sandbox: memory and process caps for the whole sandbox, and a kill
that reaches every process in it.

Per-process rlimits cannot cap what a sandbox holds outside any one process's address
space (tmpfs and ``memfd`` pages, SysV shared memory, many processes each under the
cap), so where the host lets us create cgroups every sandbox gets its own, with
``memory`` (tmpfs, shmem and memfd pages are charged to it too) and ``pids`` limits.

- cgroup v2: a child of ``GraderContext.sandbox_cgroup_dir`` when the operator names a
  delegated directory, else of this process's own cgroup; ``memory`` and ``pids`` must
  be enabled (or enable-able) in its ``cgroup.subtree_control``.
- cgroup v1: a child of this process's cgroup in the ``memory`` hierarchy, and in the
  ``pids`` hierarchy when that one is writable too.

Where neither works the sandbox still runs, with per-process limits only; ``detect``
says why, and ``/healthz`` reports it.
"""

from __future__ import annotations

import functools
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from graders.base import GraderContext

_KILL_WAIT_S = 5.0


@dataclass(frozen=True)
class CgroupSupport:
    """Where sandbox cgroups are created: v2 one parent (both controllers), v1 one parent
    per hierarchy (``memory``, and ``pids`` when that one is writable too)."""

    version: int
    parents: tuple[Path, ...]
    controllers: tuple[str, ...]

    def describe(self) -> str:
        where = ", ".join(map(str, self.parents))
        return f"cgroup v{self.version} per sandbox ({' + '.join(self.controllers)}), under {where}"


def _own_cgroups() -> dict[str, str]:
    """controller (or "" for v2) -> this process's cgroup path."""
    out: dict[str, str] = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for name in controllers.split(",") if controllers else [""]:
            out[name] = path
    return out


def _mounts() -> dict[str, Path]:
    """controller (or "" for the v2 hierarchy) -> mount point."""
    out: dict[str, Path] = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, extra = left.split(), right.split()
        if len(extra) < 3:
            continue
        fstype, options = extra[0], extra[2].split(",")
        if fstype == "cgroup2":
            out.setdefault("", Path(fields[4]))
        elif fstype == "cgroup":
            for name in ("memory", "pids"):
                if name in options:
                    out.setdefault(name, Path(fields[4]))
    return out


def _v2_parent(cgroup_dir: str | None, mounts: dict[str, Path], own: dict[str, str]) -> tuple[Path | None, str]:
    if cgroup_dir:
        parent = Path(cgroup_dir)
    elif "" in mounts and "" in own:
        parent = mounts[""] / own[""].lstrip("/")
    else:
        return None, "no cgroup v2 hierarchy"
    try:
        enabled = set((parent / "cgroup.subtree_control").read_text().split())
        if not {"memory", "pids"} <= enabled:
            (parent / "cgroup.subtree_control").write_text("+memory +pids")
    except OSError as exc:
        return None, f"cgroup v2 at {parent}: cannot enable memory and pids for children ({exc.strerror})"
    return parent, ""


def _v1_parents(mounts: dict[str, Path], own: dict[str, str]) -> tuple[dict[str, Path], str]:
    # memory is what per-process limits cannot cap; pids is a bonus (each sandbox's uid
    # already has its own RLIMIT_NPROC).
    parents = {}
    for name in ("memory", "pids"):
        if name in mounts:
            parent = mounts[name] / own.get(name, "/").lstrip("/")
            if os.access(parent, os.W_OK):
                parents[name] = parent
    if "memory" not in parents:
        return {}, "no writable cgroup v1 memory hierarchy"
    return parents, ""


@functools.lru_cache(maxsize=8)
def _detect(cgroup_dir: str | None) -> tuple[CgroupSupport | None, str]:
    if os.geteuid() != 0:
        return None, "not root"
    try:
        mounts, own = _mounts(), _own_cgroups()
    except OSError as exc:
        return None, f"cannot read /proc ({exc.strerror})"
    parent, why_not_v2 = _v2_parent(cgroup_dir, mounts, own)
    if parent is not None:
        return CgroupSupport(2, (parent,), ("memory", "pids")), ""
    if cgroup_dir:
        return None, why_not_v2
    parents, why_not_v1 = _v1_parents(mounts, own)
    if parents:
        return CgroupSupport(1, tuple(parents.values()), tuple(parents)), ""
    return None, f"{why_not_v2}; {why_not_v1}"


def detect(ctx: GraderContext) -> tuple[CgroupSupport | None, str]:
    """(support, reason): where sandbox cgroups go, or why there are none."""
    return _detect(ctx.sandbox_cgroup_dir)


class SandboxCgroup:
    """The cgroup(s) of one sandbox. The sandbox's first process writes ``0`` into each
    of ``procs_files`` before it runs anything else, so nothing escapes the limits."""

    def __init__(self, support: CgroupSupport, name: str, memory_bytes: int, max_pids: int):
        self.version = support.version
        self.controllers = support.controllers
        self.dirs = [parent / name for parent in support.parents]
        for path in self.dirs:
            if path.exists():
                _empty_and_remove(path)  # left over by a process that died
            path.mkdir()
        try:
            if self.version == 2:
                (self.dirs[0] / "memory.max").write_text(str(memory_bytes))
                if (self.dirs[0] / "memory.swap.max").exists():
                    (self.dirs[0] / "memory.swap.max").write_text("0")
                (self.dirs[0] / "pids.max").write_text(str(max_pids))
            else:
                dirs = dict(zip(self.controllers, self.dirs, strict=True))
                (dirs["memory"] / "memory.limit_in_bytes").write_text(str(memory_bytes))
                if (dirs["memory"] / "memory.memsw.limit_in_bytes").exists():
                    (dirs["memory"] / "memory.memsw.limit_in_bytes").write_text(str(memory_bytes))
                if "pids" in dirs:
                    (dirs["pids"] / "pids.max").write_text(str(max_pids))
        except OSError:
            self.remove()
            raise

    @property
    def procs_files(self) -> list[str]:
        return [str(path / "cgroup.procs") for path in self.dirs]

    def oom_killed(self) -> bool:
        """True when the kernel killed a process of this sandbox for memory."""
        try:
            if self.version == 2:
                events = (self.dirs[0] / "memory.events").read_text()
                return any(line.split()[0] == "oom_kill" and int(line.split()[1]) > 0 for line in events.splitlines())
            memory = self.dirs[0]
            failcnt = int((memory / "memory.failcnt").read_text())
            control = (memory / "memory.oom_control").read_text()
            killed = any(line.startswith("oom_kill ") and int(line.split()[1]) > 0 for line in control.splitlines())
            return killed or failcnt > 0
        except (OSError, ValueError, IndexError):
            return False

    def remove(self) -> None:
        """Kill whatever is still inside, then delete the cgroup(s)."""
        for path in self.dirs:
            if path.exists():
                _empty_and_remove(path)


def _empty_and_remove(path: Path) -> None:
    deadline = time.monotonic() + _KILL_WAIT_S
    kill_file = path / "cgroup.kill"
    while True:
        try:
            pids = [int(p) for p in (path / "cgroup.procs").read_text().split()]
        except FileNotFoundError:
            return
        if not pids:
            break
        if kill_file.exists():
            kill_file.write_text("1")
        else:
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)
    for _ in range(100):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.01)  # the last task is still exiting
