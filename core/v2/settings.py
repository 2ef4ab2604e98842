"""The model's settings: one validated, frozen dataclass built once from the config's ``model`` section.

:meth:`Settings.from_config` reads ``model.<key>`` for :data:`MODEL_KEYS` and every key of ``model.hybrid`` (an
unknown key is an error naming it); :meth:`Settings.replace` returns a validated copy with some fields changed.
Every error names the config key and the value.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from udfs.events import EVENT_TYPES

METHODS: tuple[str, ...] = ("itemcf", "usercf", "content", "popular", "factors")
"""The candidate generators, in the order that breaks ties between reasons."""
DEFAULT_METHODS: tuple[str, ...] = METHODS[:4]
"""The methods on by default: ``factors`` scans the catalog per ranking and is opt-in (docs/evaluation.md, 2d)."""
FUSIONS: tuple[str, ...] = ("weighted", "rrf", "borda", "learned")
MODES: tuple[str, ...] = FUSIONS + METHODS
CONTENT_SEARCHES: tuple[str, ...] = ("catalog", "candidates")
DIVERSITY_SIMILARITIES: tuple[str, ...] = ("content", "itemcf")
FACTOR_LOSSES: tuple[str, ...] = ("positive", "explicit")
ITEMCF_PROFILES: tuple[str, ...] = ("history", "engaged")

MODEL_KEYS: tuple[str, ...] = ("top_n", "top_k", "history_cap", "trending_size", "min_rating", "max_rating",
                               "row_cap")
"""The keys read from ``model`` itself (the rest come from ``model.hybrid``)."""


def _number(name: str, value: Any, lo: float = 0.0, allow_lo: bool = True, integer: bool = False) -> Any:
    kinds = (int,) if integer else (int, float)
    ok = isinstance(value, kinds) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < lo or (value == lo and not allow_lo):
        what = "an integer" if integer else "a number"
        raise ValueError(f"{name} {value!r} must be {what} {'>=' if allow_lo else '>'} {lo:g}")
    return value


def _half_life(name: str, value: Any) -> float | None:
    if value is None or value == 0:
        return None
    return float(_number(name, value, allow_lo=False))


def _weights(name: str, value: Any, allowed: Sequence[str]) -> tuple[tuple[str, float], ...]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} {value!r} must be a mapping of method -> weight")
    out = []
    for method, w in value.items():
        if method not in allowed:
            raise ValueError(f"{name} has unknown method {method!r} (known: {', '.join(allowed)})")
        out.append((method, float(_number(f"{name}[{method!r}]", w))))
    return tuple(sorted(out, key=lambda t: allowed.index(t[0])))


@dataclass(frozen=True)
class Settings:
    """Every setting of the model (README "The model" explains each; config/default.yaml has the defaults)."""

    top_n: int = 10
    top_k: int = 20
    history_cap: int = 20  # 0 = every engaged item pairs with a new event
    trending_size: int = 100
    min_rating: float = 0.5
    max_rating: float = 5.0
    row_cap: int = 0  # 0 = every co-occurrence entry; else pruned to this many past 1.25 x
    itemcf_profile: str = "history"  # the items that score item-CF: the pairing history, or every engaged item
    itemcf_profile_floor: float = 0.2  # engaged: an item's weight w · (floor + (1 - floor) · decay)
    mode: str = "weighted"
    methods: tuple[str, ...] = DEFAULT_METHODS
    candidate_pool: int = 50
    fusion_weights: tuple[tuple[str, float], ...] = (("itemcf", 1.0), ("usercf", 0.3), ("content", 0.05),
                                                     ("popular", 0.1), ("factors", 0.1))
    rrf_k: float = 60.0
    cold_start_items: int = 2
    cold_start_weights: tuple[tuple[str, float], ...] = (("content", 0.5), ("popular", 1.0))
    content_search: str = "catalog"
    content_new_items: int = 200
    diversity_lambda: float = 0.0  # MMR re-rank of every list (0 = off)
    diversity_pool: int = 50  # ... picking from the mode's best this many
    diversity_similarity: str = "content"  # ... by content cosine or item-CF neighbour similarity
    usercf_top_k: int = 20
    usercf_max_raters: int = 20  # 0 = an event pairs with every rater of the item
    usercf_row_cap: int = 0
    refresh_on_norms: bool = True
    profile_max_items: int = 200
    half_life_s: float | None = 180.0
    trending_window_s: float = 7 * 86400.0
    trending_buckets: int = 7
    trending_half_life_s: float | None = 7 * 86400.0
    recency_half_life_s: float = 86400.0
    center_ratings: bool = False
    train_combiner: bool = True
    combiner_lr: float = 0.1
    combiner_l2: float = 1e-4
    n_neg: int = 4
    combiner_sample: float = 0.2
    combiner_warmup: int = 200
    baseline_lambda_item: float = 25.0
    baseline_lambda_user: float = 10.0
    seed: int = 0
    deny: tuple[str, ...] = ()
    exclude_types: tuple[str, ...] = EVENT_TYPES
    dislike_weight: float = 1.0
    # the incremental factor model (core.v2.factors): one SGD step per engagement, in canonical order
    factors_loss: str = "positive"  # positive: every engagement towards 1, sampled items towards 0; explicit: ratings
    factors_dim: int = 16
    factors_lr: float = 0.01
    factors_reg: float = 0.01
    factors_init_std: float = 0.1
    factors_n_neg: int = 4

    def __post_init__(self) -> None:
        for key in ("fusion_weights", "cold_start_weights"):
            value = getattr(self, key)
            if isinstance(value, Mapping):  # given as a mapping: kept as (method, weight) pairs in method order
                allowed = METHODS if key == "fusion_weights" else ("content", "popular")
                object.__setattr__(self, key, _weights(key, value, allowed))
        _number("top_n", self.top_n, 1, integer=True)
        _number("top_k", self.top_k, 1, integer=True)
        _number("history_cap", self.history_cap, 0, integer=True)
        _number("trending_size", self.trending_size, 1, integer=True)
        for name in ("min_rating", "max_rating"):
            _number(name, getattr(self, name), -math.inf)
        if not self.min_rating < self.max_rating:
            raise ValueError(f"min_rating {self.min_rating!r} must be below max_rating {self.max_rating!r}")
        for name, k_name in (("row_cap", "top_k"), ("usercf_row_cap", "usercf_top_k")):
            cap, k = _number(name, getattr(self, name), 0, integer=True), getattr(self, k_name)
            if cap and cap < k:
                raise ValueError(f"{name} {cap!r} must be 0 (all) or at least {k_name} {k!r}")
        if self.mode not in MODES:
            raise ValueError(f"mode {self.mode!r} must be one of {', '.join(MODES)}")
        methods = tuple(self.methods)
        bad = [m for m in methods if m not in METHODS]
        if bad or not methods:
            raise ValueError(f"methods {list(methods)!r} must be a non-empty subset of {', '.join(METHODS)}")
        object.__setattr__(self, "methods", tuple(m for m in METHODS if m in methods))
        _number("candidate_pool", self.candidate_pool, 1, integer=True)
        missing = [m for m in self.methods if m not in dict(self.fusion_weights)]
        if missing:
            raise ValueError(f"fusion_weights {dict(self.fusion_weights)!r} has no weight for {', '.join(missing)}")
        _number("rrf_k", self.rrf_k)
        _number("cold_start_items", self.cold_start_items, 0, integer=True)
        if self.content_search not in CONTENT_SEARCHES:
            raise ValueError(f"content_search {self.content_search!r} must be one of {', '.join(CONTENT_SEARCHES)}")
        _number("content_new_items", self.content_new_items, 0, integer=True)
        _number("diversity_lambda", self.diversity_lambda)
        _number("diversity_pool", self.diversity_pool, 1, integer=True)
        if self.diversity_similarity not in DIVERSITY_SIMILARITIES:
            raise ValueError(f"diversity_similarity {self.diversity_similarity!r} must be one of "
                             f"{', '.join(DIVERSITY_SIMILARITIES)}")
        _number("usercf_top_k", self.usercf_top_k, 1, integer=True)
        _number("usercf_max_raters", self.usercf_max_raters, 0, integer=True)
        _number("profile_max_items", self.profile_max_items, 0, integer=True)
        _number("trending_window_s", self.trending_window_s, allow_lo=False)
        _number("trending_buckets", self.trending_buckets, 1, integer=True)
        width = self.trending_window_s * 1000.0 / self.trending_buckets
        if width != int(width):
            raise ValueError(f"trending_window_s {self.trending_window_s!r} / trending_buckets "
                             f"{self.trending_buckets!r} must be a whole number of milliseconds")
        _number("recency_half_life_s", self.recency_half_life_s, allow_lo=False)
        _number("combiner_lr", self.combiner_lr, allow_lo=False)
        _number("combiner_l2", self.combiner_l2)
        _number("n_neg", self.n_neg, 0, integer=True)
        if not 0 <= _number("combiner_sample", self.combiner_sample) <= 1:
            raise ValueError(f"combiner_sample {self.combiner_sample!r} must be in 0..1")
        _number("combiner_warmup", self.combiner_warmup, 0, integer=True)
        _number("baseline_lambda_item", self.baseline_lambda_item)
        _number("baseline_lambda_user", self.baseline_lambda_user)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed {self.seed!r} must be an integer")
        bad = [t for t in self.exclude_types if t not in EVENT_TYPES]
        if bad:
            raise ValueError(f"exclude_types {list(self.exclude_types)!r} has unknown event types {bad} "
                             f"(known: {', '.join(EVENT_TYPES)})")
        _number("dislike_weight", self.dislike_weight)
        if self.itemcf_profile not in ITEMCF_PROFILES:
            raise ValueError(f"itemcf_profile {self.itemcf_profile!r} must be one of {', '.join(ITEMCF_PROFILES)}")
        if not 0 <= _number("itemcf_profile_floor", self.itemcf_profile_floor) <= 1:
            raise ValueError(f"itemcf_profile_floor {self.itemcf_profile_floor!r} must be in 0..1")
        if self.factors_loss not in FACTOR_LOSSES:
            raise ValueError(f"factors_loss {self.factors_loss!r} must be one of {', '.join(FACTOR_LOSSES)}")
        _number("factors_dim", self.factors_dim, 1, integer=True)
        _number("factors_lr", self.factors_lr, allow_lo=False)
        _number("factors_reg", self.factors_reg)
        _number("factors_init_std", self.factors_init_std, allow_lo=False)
        _number("factors_n_neg", self.factors_n_neg, 0, integer=True)
        if any(not isinstance(d, str) for d in self.deny):
            raise ValueError(f"deny {list(self.deny)!r} must be a list of item ids (strings)")

    @property
    def history_decay_ms(self) -> float:
        """The history half-life in ms, 0.0 when decay is off."""
        return 0.0 if self.half_life_s is None else self.half_life_s * 1000.0

    def weight(self, method: str, cold: bool = False) -> float:
        """``fusion_weights[method]`` (``cold_start_weights`` with ``cold``), 0.0 when absent."""
        return dict(self.cold_start_weights if cold else self.fusion_weights).get(method, 0.0)

    def replace(self, **changes: Any) -> Settings:
        return from_mapping(dataclasses.asdict(self) | changes)

    @classmethod
    def from_config(cls, model: Mapping[str, Any], **overrides: Any) -> Settings:
        """From the config's ``model`` section (``overrides``: field values that win over it)."""
        values: dict[str, Any] = {key: model[key] for key in MODEL_KEYS if key in model}
        hybrid = model.get("hybrid") or {}
        if not isinstance(hybrid, Mapping):
            raise ValueError(f"config key model.hybrid {hybrid!r} must be a mapping")
        names = {f.name for f in dataclasses.fields(cls)}
        for key, value in hybrid.items():
            if key not in names or key in MODEL_KEYS:
                raise ValueError(f"config key model.hybrid.{key} is unknown (known: {', '.join(sorted(names))})")
            else:
                values[key] = value
        for key in overrides:
            if key not in names:
                raise ValueError(f"setting {key!r} is unknown (known: {', '.join(sorted(names))})")
        values.update(overrides)
        return from_mapping(values)


def from_mapping(values: Mapping[str, Any]) -> Settings:
    """A :class:`Settings` from plain values (lists and mappings turned into the dataclass's tuples)."""
    v = dict(values)
    for key in ("fusion_weights", "cold_start_weights"):
        if key in v and isinstance(v[key], Mapping):
            v[key] = _weights(key, v[key], METHODS if key == "fusion_weights" else ("content", "popular"))
        elif key in v:
            v[key] = tuple((str(m), float(w)) for m, w in v[key])
    for key in ("methods", "deny", "exclude_types"):
        if key in v:
            if isinstance(v[key], str) or not isinstance(v[key], Sequence | set | frozenset):
                raise ValueError(f"{key} {v[key]!r} must be a list")
            v[key] = tuple(v[key])
    for key in ("half_life_s", "trending_half_life_s"):
        if key in v:
            v[key] = _half_life(key, v[key])
    return Settings(**v)
