"""Workarounds for differences between PyFlink's thread and process execution modes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


class PutAll(dict):  # type: ignore[type-arg]
    """A dict for ``MapState.put_all`` that works in both execution modes.

    PyFlink 2.2's thread mode calls ``.items()`` on the argument, its process mode iterates it and
    unpacks (key, value) pairs; this dict answers both.
    """

    def __iter__(self) -> Iterator[tuple[Any, Any]]:  # type: ignore[override]
        return iter(self.items())


def put_all(state: Any, mapping: dict[Any, Any]) -> None:
    if mapping:
        state.put_all(PutAll(mapping))


def subtask(runtime_context: Any) -> tuple[int, int]:
    """``(index of this subtask, parallelism)``. Flink 2 moved both to ``RuntimeContext.getTaskInfo()``, which
    PyFlink 2.2's thread-mode wrapper does not follow."""
    j_context = getattr(runtime_context, "_runtime_context", None)
    if j_context is not None and hasattr(j_context, "getTaskInfo"):
        info = j_context.getTaskInfo()
        return int(info.getIndexOfThisSubtask()), int(info.getNumberOfParallelSubtasks())
    return runtime_context.get_index_of_this_subtask(), runtime_context.get_number_of_parallel_subtasks()
