"""Online experiments: users split into arms by a stable hash, each arm ranked with its own settings, and the
bookkeeping of what each arm's served lists earned (docs/design.md, "Experiments").

* :class:`Experiment` is the validated ``experiments`` config section: a name and arms, each a share of the users
  and overrides of ``model.hybrid`` limited to :data:`ARM_KEYS` (the keys that change only how a list is ranked, not
  what the one shared model learns). Every error names the config key and the value.
* :func:`bucket` / :meth:`Experiment.arm_of`: a user's arm is a pure function of (experiment name, user id) — a
  BLAKE2b hash into [0, 1), cut by cumulative share — so an assignment survives restarts, rescaling and replays.
* :func:`score` is the pure per-event bookkeeping of the live metrics: for each event, the list served to its user
  before it (by event time) — whether the item is in it (a hit), at which rank (NDCG 1/log2(rank+1)), and how old
  the list was; :func:`tally` sums those per arm.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from core.v2.settings import Settings

ARM_KEYS: tuple[str, ...] = ("mode", "methods", "fusion_weights", "rrf_k", "cold_start_items", "cold_start_weights",
                             "diversity_lambda", "diversity_pool", "diversity_similarity", "combiner_warmup",
                             "dislike_weight")
"""The ``model.hybrid`` keys an arm may override: they change how a list is ranked from the shared model, not what
it learns (an arm's ``methods`` must be a subset of ``model.hybrid.methods``: the generators kept up to date)."""
ARM_NAME_CHARS = 40


def bucket(experiment: str, user: str) -> float:
    """The user's place in [0, 1) for ``experiment``: the first 8 bytes of BLAKE2b(experiment NUL user) / 2^64."""
    digest = hashlib.blake2b(f"{experiment}\0{user}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


@dataclass(frozen=True)
class Arm:
    name: str
    share: float
    overrides: tuple[tuple[str, Any], ...]  # (model.hybrid key, value), in ARM_KEYS order
    settings: Settings


@dataclass(frozen=True)
class Experiment:
    """The arms of one experiment, each with the model settings it ranks with."""

    name: str
    arms: tuple[Arm, ...]
    window_ms: int

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.arms)

    def arm_of(self, user: str) -> int:
        """The index of the user's arm: the first whose cumulative share exceeds the user's :func:`bucket`."""
        x = bucket(self.name, user)
        edge = 0.0
        for i, arm in enumerate(self.arms):
            edge += arm.share
            if x < edge:
                return i
        return len(self.arms) - 1  # the shares sum to 1 up to rounding

    def arms_of(self, users: Sequence[str]) -> np.ndarray:
        return np.fromiter((self.arm_of(u) for u in users), dtype=np.int64, count=len(users))

    @property
    def ranks_learned(self) -> bool:
        """Whether an arm ranks in learned mode (the stream then trains the combiner)."""
        return any(a.settings.mode == "learned" for a in self.arms)

    @classmethod
    def from_config(cls, section: Mapping[str, Any] | None, base: Settings) -> Experiment | None:
        """The ``experiments`` section, validated against the job's model settings ``base``; None when it names no
        experiment (``name`` null)."""
        if not section or section.get("name") is None:
            return None
        name = section["name"]
        if not isinstance(name, str) or not name.strip() or len(name) > ARM_NAME_CHARS:
            raise ValueError(f"config key experiments.name must be a non-empty string of at most {ARM_NAME_CHARS} "
                             f"characters, got {name!r}")
        window = section.get("window_ms")
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"config key experiments.window_ms must be a positive integer, got {window!r}")
        raw = section.get("arms")
        if not isinstance(raw, Sequence) or isinstance(raw, str) or len(raw) < 2:
            raise ValueError(f"config key experiments.arms must be a list of at least two arms "
                             f"({{name, share, hybrid}}), got {raw!r}")
        arms: list[Arm] = []
        for n, spec in enumerate(raw):
            where = f"experiments.arms[{n}]"
            if not isinstance(spec, Mapping):
                raise ValueError(f"config key {where} must be a mapping with name, share and hybrid, got {spec!r}")
            unknown = sorted(set(spec) - {"name", "share", "hybrid"})
            if unknown:
                raise ValueError(f"config key {where}.{unknown[0]} is unknown (known: hybrid, name, share)")
            arm_name = spec.get("name")
            if not isinstance(arm_name, str) or not arm_name or len(arm_name) > ARM_NAME_CHARS or \
                    not all(c.isalnum() or c in "-_" for c in arm_name):
                raise ValueError(f"config key {where}.name must be 1..{ARM_NAME_CHARS} letters, digits, - or _, "
                                 f"got {arm_name!r}")
            if arm_name in (a.name for a in arms):
                raise ValueError(f"config key {where}.name {arm_name!r} names two arms")
            share = spec.get("share")
            if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share <= 1:
                raise ValueError(f"config key {where}.share must be a number in (0, 1], got {share!r}")
            hybrid = spec.get("hybrid") or {}
            if not isinstance(hybrid, Mapping):
                raise ValueError(f"config key {where}.hybrid must be a mapping of model.hybrid keys, got {hybrid!r}")
            arms.append(Arm(arm_name, float(share), *_arm_settings(base, hybrid, f"{where}.hybrid")))
        total = sum(a.share for a in arms)
        if abs(total - 1.0) > 1e-9:
            raise ValueError(f"config key experiments.arms: the shares must sum to 1, got "
                             f"{' + '.join(f'{a.share:g}' for a in arms)} = {total:g}")
        return cls(name, tuple(arms), window)


def _arm_settings(base: Settings, hybrid: Mapping[str, Any], where: str) -> tuple[tuple[tuple[str, Any], ...],
                                                                                  Settings]:
    """The arm's overrides and the settings it ranks with: ``base`` with them (mappings merged key by key)."""
    changes: dict[str, Any] = {}
    for key, value in hybrid.items():
        if key not in ARM_KEYS:
            raise ValueError(f"config key {where}.{key} cannot differ between arms (an arm overrides only "
                             f"{', '.join(ARM_KEYS)})")
        if key in ("fusion_weights", "cold_start_weights"):
            if not isinstance(value, Mapping):
                raise ValueError(f"config key {where}.{key} must be a mapping of method -> weight, got {value!r}")
            value = {**dict(getattr(base, key)), **value}
        changes[key] = value
    methods = changes.get("methods")
    if methods is not None and (isinstance(methods, str) or not isinstance(methods, Sequence)
                                or not set(methods) <= set(base.methods)):
        raise ValueError(f"config key {where}.methods must be a list within model.hybrid.methods "
                         f"({', '.join(base.methods)}), got {methods!r}")
    try:
        settings = base.replace(**changes)
    except ValueError as exc:
        raise ValueError(f"config key {where}: {exc}") from exc
    return tuple((k, changes[k]) for k in ARM_KEYS if k in changes), settings


class Scored(NamedTuple):
    """Per event (:func:`score`): whether a list was served to its user before it, the 1-based rank of its item in
    that list (0: not in it), and the list's age in ms (event time - the list's version time; 0 without a list)."""

    served: np.ndarray  # bool
    rank: np.ndarray  # int64
    age_ms: np.ndarray  # int64


def score(lists: np.ndarray, list_ts: np.ndarray, list_id: Sequence[str], row: np.ndarray, item: np.ndarray,
          ts: np.ndarray, event_id: Sequence[str]) -> Scored:
    """Each event against the list served to its user before it.

    ``lists``: (rows, n) item ids, -1 padded (the served lists: the first ``model.top_n``); ``list_ts``/``list_id``:
    each list's version (the newest event it reflects). Per event: ``row`` its user's list (-1: none), ``item``
    (-1: unknown), ``ts`` and ``event_id``. A list counts only if its version is before the event in canonical
    order ((time, id) <): a late event the list already reflects has no list before it."""
    m = len(row)
    served = np.zeros(m, dtype=np.bool_)
    rank = np.zeros(m, dtype=np.int64)
    age = np.zeros(m, dtype=np.int64)
    for e in range(m):
        r = int(row[e])
        if r < 0 or (int(list_ts[r]), list_id[r]) >= (int(ts[e]), event_id[e]):
            continue
        served[e] = True
        age[e] = int(ts[e]) - int(list_ts[r])
        if item[e] >= 0:
            at = np.flatnonzero(lists[r] == item[e])
            if len(at):
                rank[e] = int(at[0]) + 1
    return Scored(served, rank, age)


class Totals(NamedTuple):
    """Per arm: events with a served list, hits, the NDCG sum (Σ 1/log2(rank+1) over hits) and the sum of its
    squares (for an interval), lists served, list ages (sum and max, ms)."""

    events: np.ndarray
    hits: np.ndarray
    ndcg: np.ndarray
    ndcg_sq: np.ndarray
    lists: np.ndarray
    age_sum_ms: np.ndarray
    age_max_ms: np.ndarray

    @classmethod
    def zeros(cls, arms: int) -> Totals:
        z = np.zeros(arms, dtype=np.int64)
        return cls(z, z.copy(), np.zeros(arms), np.zeros(arms), z.copy(), z.copy(), z.copy())


def tally(arms: int, arm: np.ndarray, scored: Scored, lists_arm: np.ndarray) -> Totals:
    """Sum :func:`score` per arm (``arm``: each event's arm) and count the lists served (``lists_arm``: each served
    list's arm)."""
    on = scored.served
    a = arm[on]
    hit = scored.rank[on] > 0
    gain = np.where(hit, 1.0 / np.log2(np.maximum(scored.rank[on], 1) + 1.0), 0.0)
    age_max = np.zeros(arms, dtype=np.int64)
    np.maximum.at(age_max, a, scored.age_ms[on])
    return Totals(np.bincount(a, minlength=arms).astype(np.int64),
                  np.bincount(a[hit], minlength=arms).astype(np.int64),
                  np.bincount(a, weights=gain, minlength=arms),
                  np.bincount(a, weights=gain * gain, minlength=arms),
                  np.bincount(lists_arm, minlength=arms).astype(np.int64),
                  np.bincount(a, weights=scored.age_ms[on], minlength=arms).astype(np.int64),
                  age_max)


def ndcg_gain(rank: int) -> float:
    """One hit's NDCG (a single relevant item: IDCG 1)."""
    return 1.0 / math.log2(rank + 1) if rank > 0 else 0.0


def rank_as(state: Any, settings: Settings, users: Sequence[str], mode: str | None = None,
            n: int | None = None) -> Any:
    """:func:`core.v2.model.rank` of ``users`` on the shared ``state`` with an arm's ``settings`` (which differ from
    the state's only in :data:`ARM_KEYS`, read by the ranking alone)."""
    from core.v2 import model as M

    own = state.settings
    state.settings = settings
    try:
        return M.rank(state, users, mode, n)
    finally:
        state.settings = own
