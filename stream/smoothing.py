"""Temporal smoothing of per-frame class probabilities, built by name.

    smoother = build_smoother("hmm", stay=0.98)   # or SmoothingConfig("hmm", {"stay": 0.98}).build()
    smoothed = smoother.update(probs)        # probs: (K,) float32 summing to 1, one call per frame
    smoother.set_params(stay=0.95)           # live change, keeps the running state

Modes: ``none``, ``ema`` (alpha), ``window`` (size, frames), ``hmm`` (forward filter with a
sticky transition matrix). ``SmoothingConfig`` is the typed form the pipeline takes; a spec
string such as ``"ema:alpha=0.3"`` is its text form for command lines, YAML files and the
names of side-by-side evaluation settings (``SmoothingConfig.parse`` / ``.spec``).
"""
from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

_EPS = 1e-6


class Smoother:
    """Base: ``update`` one frame's probabilities, ``reset`` between videos or streams."""

    mode = "none"
    params: ClassVar[dict[str, Any]] = {}  # defaults; instances hold their own copy

    def __init__(self, **params):
        self._lock = threading.Lock()
        self.params = {**type(self).params}
        self.set_params(**params)
        self.reset()

    def set_params(self, **params) -> None:
        unknown = set(params) - set(type(self).params)
        if unknown:
            raise ValueError(f"smoother {self.mode!r} has no parameter(s) {sorted(unknown)}; "
                             f"it takes {sorted(type(self).params)}")
        new = {**self.params, **params}
        self._check(new)
        with self._lock:
            self.params = new
            self._on_params()

    def _check(self, p: dict) -> None:
        """Raise ValueError for parameters out of range."""

    def _on_params(self) -> None:
        """Adapt derived state after a parameter change (called under the lock)."""

    def reset(self) -> None:
        self._state: Any = None

    def update(self, probs) -> np.ndarray:
        """One frame's smoothed probabilities, float32 like the probabilities the pipeline hands
        on (the running state is kept in float64: a long HMM filter must not drift)."""
        p = np.asarray(probs, dtype=np.float64)
        if p.ndim != 1 or p.size < 2:
            raise ValueError(f"update() takes one frame's class probabilities (K,), got shape {p.shape}")
        with self._lock:
            return self._update(p).astype(np.float32)

    def _update(self, p: np.ndarray) -> np.ndarray:
        return p

    def run(self, probs_seq) -> np.ndarray:
        """Smooth a whole (T, K) sequence from a fresh state (used by offline evaluation)."""
        self.reset()
        seq = np.asarray(probs_seq)
        return np.stack([self.update(p) for p in seq]) if len(seq) else np.zeros((0, 0), np.float32)


class EMA(Smoother):
    """s_t = alpha * p_t + (1 - alpha) * s_{t-1}; alpha=1 is no smoothing."""

    mode = "ema"
    params: ClassVar[dict[str, Any]] = {"alpha": 0.3}

    def _check(self, p):
        if not 0 < p["alpha"] <= 1:
            raise ValueError(f"ema alpha must be in (0, 1], got {p['alpha']}")

    def _update(self, p):
        a = self.params["alpha"]
        self._state = p if self._state is None else a * p + (1 - a) * self._state
        return self._state


class Window(Smoother):
    """Mean of the last ``size`` frames (fewer at the start)."""

    mode = "window"
    params: ClassVar[dict[str, Any]] = {"size": 8}

    def _check(self, p):
        if int(p["size"]) < 1 or int(p["size"]) != p["size"]:
            raise ValueError(f"window size must be a positive integer, got {p['size']}")

    def _on_params(self):
        if getattr(self, "_state", None) is not None:  # resize keeps the newest frames
            self._state = deque(self._state, maxlen=int(self.params["size"]))

    def reset(self):
        self._state = deque(maxlen=int(self.params["size"]))

    def _update(self, p):
        self._state.append(p)
        return np.mean(self._state, axis=0)


class HMMFilter(Smoother):
    """Forward filter over the true class with a sticky Markov chain.

    The classifier gives posteriors p(c | x_t); divided by the class prior they are scaled
    likelihoods. ``stay`` is the chance the class is unchanged between frames (0.98 at 30 fps
    ~ an expected run of 50 frames); ``temperature`` > 1 flattens over-confident outputs."""

    mode = "hmm"
    params: ClassVar[dict[str, Any]] = {"stay": 0.98, "temperature": 1.0, "prior": None}

    def _check(self, p):
        if not 0 <= p["stay"] < 1:
            raise ValueError(f"hmm stay must be in [0, 1), got {p['stay']}")
        if p["temperature"] <= 0:
            raise ValueError(f"hmm temperature must be > 0, got {p['temperature']}")

    def _transition(self, k: int) -> np.ndarray:
        s = self.params["stay"]
        t = np.full((k, k), (1 - s) / (k - 1))
        np.fill_diagonal(t, s)
        return t

    def _update(self, p):
        k = p.size
        prior = np.full(k, 1 / k) if self.params["prior"] is None else np.asarray(self.params["prior"], float)
        if prior.shape != (k,):
            raise ValueError(f"hmm prior has {prior.size} entries for {k} classes")
        lik = np.clip(p, _EPS, 1) ** (1 / self.params["temperature"]) / prior
        predicted = prior if self._state is None else self._transition(k).T @ self._state
        post = predicted * lik
        self._state = post / post.sum()
        return self._state


_SMOOTHERS: dict[str, Callable[..., Smoother]] = {
    "none": Smoother, "ema": EMA, "window": Window, "hmm": HMMFilter}


def list_smoothers() -> list[str]:
    return list(_SMOOTHERS)


def build_smoother(mode: str, **params) -> Smoother:
    if mode not in _SMOOTHERS:
        raise ValueError(f"unknown smoothing {mode!r}; choose one of {list(_SMOOTHERS)}")
    return _SMOOTHERS[mode](**params)


def _parse_value(v: str) -> Any:
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    if v.lower() in ("true", "false"):
        return v.lower() == "true"
    if v.lower() == "none":
        return None
    if "/" in v:  # a list such as a prior: 0.3/0.7
        return [float(x) for x in v.split("/")]
    return v


def parse_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"hmm:stay=0.98,temperature=2"`` -> ``("hmm", {"stay": 0.98, "temperature": 2})``."""
    mode, _, rest = spec.partition(":")
    params = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"bad smoothing spec {spec!r}: expected key=value after ':', got {item!r}")
        params[key.strip()] = _parse_value(value.strip())
    return mode.strip() or "none", params


@dataclass(frozen=True)
class SmoothingConfig:
    """A smoother by mode and parameters (those not given take the smoother's defaults);
    checked on construction, so a bad one fails where it is written, not mid-stream."""

    mode: str = "none"
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.build()

    @classmethod
    def parse(cls, spec: str) -> SmoothingConfig:
        """``"hmm:stay=0.98"`` -> ``SmoothingConfig("hmm", {"stay": 0.98})``."""
        mode, params = parse_spec(spec)
        return cls(mode, params)

    @property
    def spec(self) -> str:
        """The text form, e.g. ``ema:alpha=0.3`` (``parse`` reads it back)."""
        items = ",".join(f"{k}={_format_value(v)}" for k, v in self.params.items())
        return f"{self.mode}:{items}" if items else self.mode

    def build(self) -> Smoother:
        return build_smoother(self.mode, **self.params)


def _format_value(v: Any) -> str:
    return "/".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)
