"""`AttentionConfig`: which planner each layer (or head) of a patched model uses, as plain data."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from attnsieve.api import BACKENDS

if TYPE_CHECKING:  # attnsieve.methods (and Triton) load on first use, not on `import attnsieve`
    from attnsieve.methods import Planner

_ENTRY_KEYS = ("prefill", "prefill_kwargs")
_FIELDS = ("prefill", "prefill_kwargs", "per_layer", "min_prefill_length", "backend")


@dataclass
class AttentionConfig:
    """Sparse-prefill settings of a patched model.

    Args:
        prefill: planner name (see ``attnsieve.methods.PLANNERS``) used by every layer by default.
        prefill_kwargs: that planner's hyper-parameters (its dataclass fields).
        per_layer: overrides by layer index, either ``{"prefill": name, "prefill_kwargs": {...}}``
            (a missing name means ``prefill``; missing kwargs mean ``prefill_kwargs`` when the name
            is the default one, else the planner's own defaults) or ``{"heads": [entry, ...]}`` with
            one such entry per query head, as written by ``attnsieve calibrate``.
        min_prefill_length: prompts (forward calls) with fewer query tokens stay dense.
        backend: kernel backend for `attnsieve.attention` (None, "auto", "triton", "reference").

    Every planner is built once here, so a bad name or hyper-parameter fails at construction.
    """

    prefill: str = "flexprefill"
    prefill_kwargs: dict[str, Any] = field(default_factory=dict)
    per_layer: dict[int, dict[str, Any]] = field(default_factory=dict)
    min_prefill_length: int = 2048
    backend: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.prefill, str):
            raise TypeError(
                f"prefill: expected a planner name (str), got {type(self.prefill).__name__}"
            )
        _check_kwargs(self.prefill_kwargs, "prefill_kwargs")
        if not isinstance(self.per_layer, dict):
            raise TypeError(
                f"per_layer: expected a dict {{layer: entry}}, got {type(self.per_layer).__name__}"
            )
        for layer, entry in self.per_layer.items():
            if not isinstance(layer, int) or isinstance(layer, bool) or layer < 0:
                raise ValueError(f"per_layer: keys must be layer indices (int >= 0), got {layer!r}")
            _check_layer_entry(entry, f"per_layer[{layer}]")
        if (
            not isinstance(self.min_prefill_length, int)
            or isinstance(self.min_prefill_length, bool)
            or self.min_prefill_length < 1
        ):
            raise ValueError(
                f"min_prefill_length: expected an int >= 1, got {self.min_prefill_length!r}"
            )
        if self.backend is not None and self.backend not in BACKENDS:
            raise ValueError(f"backend: expected None or one of {BACKENDS}, got {self.backend!r}")
        self._build(self.prefill, self.prefill_kwargs, "prefill")
        for layer, entry in self.per_layer.items():
            for i, head in enumerate(entry.get("heads", [entry])):
                self._entry_planner(
                    head, f"per_layer[{layer}]" + ("" if head is entry else f"['heads'][{i}]")
                )

    def planner(self, layer_idx: int) -> Planner:
        """A fresh planner for layer ``layer_idx`` (a `PerHeadPlanner` for per-head entries)."""
        entry = self.per_layer.get(layer_idx)
        if entry is None:
            return self._build(self.prefill, self.prefill_kwargs, "prefill")
        if "heads" in entry:
            from attnsieve.methods import PerHeadPlanner

            return PerHeadPlanner(
                [self._entry_planner(h, f"per_layer[{layer_idx}]") for h in entry["heads"]]
            )
        return self._entry_planner(entry, f"per_layer[{layer_idx}]")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict that `from_json` reads back."""
        out = asdict(self)
        out["per_layer"] = {str(k): v for k, v in self.per_layer.items()}
        return out

    @classmethod
    def from_json(cls, path_or_dict: str | os.PathLike | dict[str, Any]) -> AttentionConfig:
        """Read a config from a JSON file or dict.

        Accepts this class's fields (``per_layer`` keys may be strings, as JSON requires) and the
        calibrate format ``{"layers": {"0": {"heads": [...]}, ...}}`` (optionally with the fields
        above beside ``"layers"``, and a free-form ``"metadata"`` entry, which is ignored).
        """
        if isinstance(path_or_dict, (str, os.PathLike)):
            with open(path_or_dict) as f:
                data = json.load(f)
        elif isinstance(path_or_dict, dict):
            data = path_or_dict
        else:
            raise TypeError(
                f"path_or_dict: expected a path or a dict, got {type(path_or_dict).__name__}"
            )
        if not isinstance(data, dict):
            raise ValueError(f"path_or_dict: expected a JSON object, got {type(data).__name__}")
        unknown = set(data) - set(_FIELDS) - {"layers", "metadata"}
        if unknown:
            raise ValueError(
                f"path_or_dict: unknown keys {sorted(unknown)}; expected {_FIELDS + ('layers',)}"
            )
        if "layers" in data and "per_layer" in data:
            raise ValueError(
                "path_or_dict: give either 'layers' (calibrate format) or 'per_layer', not both"
            )
        kwargs = {k: v for k, v in data.items() if k in _FIELDS}
        layers = data.get("layers", data.get("per_layer", {}))
        if not isinstance(layers, dict):
            raise ValueError(
                f"path_or_dict: 'layers' must map layer index to entry, got {type(layers).__name__}"
            )
        kwargs["per_layer"] = {_layer_index(k): v for k, v in layers.items()}
        return cls(**kwargs)

    def _entry_planner(self, entry: dict[str, Any], where: str) -> Planner:
        name = entry.get("prefill", self.prefill)
        default_kwargs = self.prefill_kwargs if name == self.prefill else {}
        return self._build(name, entry.get("prefill_kwargs", default_kwargs), where)

    @staticmethod
    def _build(name: str, kwargs: dict[str, Any], where: str) -> Planner:
        from attnsieve.methods import get_planner

        try:
            return get_planner(name, **kwargs)
        except TypeError as e:  # an unknown hyper-parameter: name the config entry it came from
            raise TypeError(
                f"{where}: bad prefill_kwargs {kwargs!r} for planner {name!r}: {e}"
            ) from e


def _layer_index(key: Any) -> int:
    if isinstance(key, int) and not isinstance(key, bool):
        return key
    if isinstance(key, str) and key.isdigit():
        return int(key)
    raise ValueError(f"layers: keys must be layer indices (int or digit string), got {key!r}")


def _check_kwargs(kwargs: Any, where: str) -> None:
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise TypeError(f"{where}: expected a dict with str keys, got {kwargs!r}")


def _check_layer_entry(entry: Any, where: str) -> None:
    if not isinstance(entry, dict):
        raise TypeError(f"{where}: expected a dict, got {type(entry).__name__}")
    if "heads" in entry:
        if set(entry) != {"heads"}:
            raise ValueError(
                f"{where}: a per-head entry has only the key 'heads', got {sorted(entry)}"
            )
        heads = entry["heads"]
        if not isinstance(heads, list) or not heads:
            raise ValueError(f"{where}['heads']: expected a non-empty list of entries")
        for i, head in enumerate(heads):
            if not isinstance(head, dict):
                raise TypeError(
                    f"{where}['heads'][{i}]: expected a dict, got {type(head).__name__}"
                )
            _check_entry_keys(head, f"{where}['heads'][{i}]")
        return
    _check_entry_keys(entry, where)


def _check_entry_keys(entry: dict[str, Any], where: str) -> None:
    unknown = set(entry) - set(_ENTRY_KEYS)
    if unknown:
        raise ValueError(
            f"{where}: unknown keys {sorted(unknown)}; expected {_ENTRY_KEYS} or 'heads'"
        )
    if "prefill" in entry and not isinstance(entry["prefill"], str):
        raise TypeError(
            f"{where}['prefill']: expected a planner name (str), got {entry['prefill']!r}"
        )
    if "prefill_kwargs" in entry:
        _check_kwargs(entry["prefill_kwargs"], f"{where}['prefill_kwargs']")
