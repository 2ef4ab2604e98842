"""Where the job's Python time goes: ``py-spy record -f raw`` on the JVM (thread mode runs Python inside it).

:class:`Profiler` runs py-spy in the background against the job's ``java`` process for a while, and
:func:`summarize` turns the collapsed stacks into shares of the sampled Python time: per operator
function of the project (inclusive), and per kind of leaf work (pickling by PyFlink, Flink state,
Redis client, JSON, numpy, the item-CF core ...). Stacks without Python frames (threads of the JVM
that the embedded interpreter knows but that run no Python at that moment) are left out.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")

#: leaf frames by file -> kind of work
KINDS = (
    ("pyflink/fn_execution/embedded/converters", "PyFlink pickling/conversion"),
    ("pyflink/fn_execution/datastream/embedded/state_impl", "Flink state access"),
    ("pyflink/", "PyFlink runtime (other)"),
    ("redis/", "Redis client"),
    ("json/", "JSON encoding"),
    ("udfs/serde", "JSON encoding"),
    ("numpy/", "numpy"),
    ("core/", "item-CF core (Python)"),
    ("operators/", "operators (own code)"),
    ("udfs/", "parsing/validation"),
    ("heapq", "heapq (top-k)"),
    ("pickle", "pickle"),
)


def py_spy() -> str | None:
    """The py-spy executable next to this interpreter, or on PATH."""
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


class Profiler(threading.Thread):
    """After ``delay`` s, record ``seconds`` s of the process ``pid`` with py-spy into ``out`` (raw format)."""

    def __init__(self, pid: int, seconds: float, out: Path, delay: float = 0.0, rate: int = 50) -> None:
        super().__init__(name="py-spy", daemon=True)
        self.pid, self.seconds, self.out, self.delay, self.rate = pid, seconds, out, delay, rate
        self.error: str | None = None
        self._cancel = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None

    def run(self) -> None:
        exe = py_spy()
        if exe is None:
            self.error = "py-spy not found (pip install py-spy==0.4.3)"
            return
        if self._cancel.wait(self.delay):
            return
        self.out.parent.mkdir(parents=True, exist_ok=True)
        cmd = [exe, "record", "-p", str(self.pid), "-d", str(int(self.seconds)), "-r", str(self.rate), "-f", "raw",
               "-o", str(self.out), "--nonblocking"]
        try:
            self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            _, err = self._proc.communicate(timeout=self.seconds + 60)
            if self._proc.returncode != 0 and not self.out.exists():
                self.error = f"py-spy exited with {self._proc.returncode}: {err.decode(errors='replace')[-300:]}"
        except (OSError, subprocess.TimeoutExpired) as exc:
            self.error = f"py-spy failed: {exc}"
            if self._proc is not None:
                self._proc.kill()

    @property
    def recording(self) -> bool:
        """py-spy has been started (the delay is over)."""
        return self._proc is not None

    def cancel(self) -> None:
        self._cancel.set()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()


def _split(frame: str) -> tuple[str, str]:
    m = _FRAME.match(frame)
    return (m.group("func"), m.group("file")) if m else (frame, "")


def kind_of(file: str) -> str:
    for needle, kind in KINDS:
        if needle in file:
            return kind
    return "other"


def summarize(raw: Path, top: int = 15) -> dict[str, Any]:
    """Shares of the sampled Python time from a py-spy raw file (see the module docstring)."""
    functions: Counter[str] = Counter()
    operators: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    busy = idle = 0
    for line in raw.read_text(errors="replace").splitlines():
        line = line.rstrip()
        if not line or " " not in line:
            continue
        stack, _, count = line.rpartition(" ")
        try:
            n = int(count)
        except ValueError:
            continue
        frames = [f for f in stack.split(";") if f and "(" in f]
        if not frames:
            idle += n
            continue
        busy += n
        split = [_split(f) for f in frames]
        kinds[kind_of(split[-1][1])] += n
        seen_fn: set[str] = set()
        seen_op: set[str] = set()
        for func, file in split:
            name = f"{func} ({file})"
            if name not in seen_fn:
                seen_fn.add(name)
                functions[name] += n
            if file.startswith("operators/") and "<locals>" not in func and func not in seen_op:
                seen_op.add(func)
                operators[func] += n

    def shares(c: Counter[str], k: int) -> list[dict[str, Any]]:
        return [{"name": name, "share": round(v / busy, 3)} for name, v in c.most_common(k)] if busy else []

    return {
        "python_samples": busy, "non_python_samples": idle,
        "operators_inclusive": shares(operators, top),
        "leaf_kinds": shares(kinds, top),
        "functions_inclusive": shares(Counter({k: v for k, v in functions.items()
                                               if not k.startswith(("<module>", "FunctionOperation",
                                                                    "extract_process_function"))}), top),
    }
