"""`AttentionConfig`: one entry per method role, with per-layer (and per-head) overrides, as data.

JSON form (what `to_dict` writes, `from_json` reads and `attnsieve calibrate` writes)::

    {"prefill": {"method": "flexprefill", "gamma": 0.9},
     "kv": {"method": "snapkv", "ratio": 0.25},
     "decode": {"method": "quest", "budget_tokens": 2048},
     "precision": "bf16",
     "layers": {"0": {"prefill": {"method": "dense"}},
                "5": {"prefill": [{"method": "streaming"}, ...one entry per query head...]}},
     "min_prefill_length": 2048}

An entry is a dict with a ``method`` name and the method's dataclass fields, or the bare name; a
role set to None is off (dense prefill, no compression, every page read). A layer override
replaces the given roles of that layer; for ``prefill`` it may be a list with one entry per query
head. Every method is built once, at construction, so a bad name or field fails there, naming the
entry it came from; the config is frozen, so a changed one is a new one (`AttentionConfig.override`
or `dataclasses.replace`), built anew.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from attnsieve.api import BACKENDS
from attnsieve.checks import check_bool, check_int, check_pow2, freeze, layer_keys

if TYPE_CHECKING:  # attnsieve.methods (and Triton) load when a config is built, not on import
    from attnsieve.methods.decode.base import DecodeSelector
    from attnsieve.methods.kv.base import KVPolicy
    from attnsieve.methods.prefill import Planner

ROLES = ("prefill", "kv", "decode")
PRECISIONS = ("bf16", "int8-fp8", "fp8-kv", "int8-fp8+fp8-kv")
_FIELDS = (
    "prefill",
    "kv",
    "decode",
    "precision",
    "layers",
    "min_prefill_length",
    "kv_interval",
    "page_size",
    "paged_cache",
    "backend",
)


def _check_quant_blocks(where: str, planner: Planner | None) -> None:
    """INT8·FP8 prefill quantises K per key block and its dots reduce over at least 32 keys, so a
    planner with smaller key blocks cannot run on it (refused here, not at the first forward)."""
    for p in getattr(planner, "planners", [planner]):
        block_k = getattr(p, "block_k", None)
        if block_k is not None and block_k < 32:
            raise ValueError(
                f"{where}: precision 'int8-fp8' takes key blocks of 32 to 128 tokens, but "
                f"{p.name} plans blocks of {block_k} (block_k)"
            )


@dataclass(frozen=True)
class AttentionConfig:
    """Which method each role uses, per layer.

    Frozen: the methods are built once, from these fields, so a field assigned afterwards would
    not change them; `override` or `dataclasses.replace` makes a changed copy, built anew.

    Args:
        prefill: planner entry (see `attnsieve.methods.prefill.PLANNERS`) for prompts of at least
            ``min_prefill_length`` tokens; None runs every prefill dense.
        kv: KV-cache policy entry (`attnsieve.methods.kv.POLICIES`), or None to keep every token.
        decode: decode selector entry (`attnsieve.methods.decode.SELECTORS`), or None to read
            every cached page.
        precision: "bf16" (the model's precision), "int8-fp8" (INT8 Q·Kᵀ / FP8 P·V prefill),
            "fp8-kv" (FP8 KV cache) or both ("int8-fp8+fp8-kv").
        layers: overrides by layer index (int, or digit strings as JSON has them), each
            ``{role: entry}``; ``prefill`` may be a list of one entry per query head.
        min_prefill_length: prompts (forward calls) with fewer query tokens stay dense.
        kv_interval: with a KV policy, compress again every ``kv_interval`` decode steps, back to
            the policy's budget (a ratio's: of the prompt's length) (0: only once, when the
            prompt is done); an interval without a KV policy in any layer is refused.
        page_size: tokens per page of the paged KV cache (used when ``kv``, ``decode`` or an
            FP8 KV cache asks for it).
        paged_cache: generate on the paged KV cache even when no role needs it: dense decode
            then runs attnsieve's decode kernel, and on CUDA whole decode steps replay as CUDA
            graphs (`attnsieve.integrations.decode_graphs`).
        backend: kernel backend for `attnsieve.api` (None, "auto", "triton", "reference").
    """

    prefill: str | dict[str, Any] | None = "flexprefill"
    kv: str | dict[str, Any] | None = None
    decode: str | dict[str, Any] | None = None
    precision: str = "bf16"
    layers: dict[int, dict[str, Any]] = field(default_factory=dict)
    min_prefill_length: int = 2048
    kv_interval: int = 0
    page_size: int = 16
    paged_cache: bool = False
    backend: str | None = None

    __hash__ = None  # its entries are dicts: compare configs with ==, key them by to_dict()'s JSON

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision: expected one of {PRECISIONS}, got {self.precision!r}")
        check_int("min_prefill_length", self.min_prefill_length, 1)
        check_int("kv_interval", self.kv_interval, 0)
        check_pow2("page_size", self.page_size, 8, 256)
        check_bool("paged_cache", self.paged_cache)
        if self.backend is not None and self.backend not in BACKENDS:
            raise ValueError(f"backend: expected None or one of {BACKENDS}, got {self.backend!r}")
        if not isinstance(self.layers, dict):
            raise TypeError(
                f"layers: expected a dict {{layer: {{role: entry}}}}, got {type(self.layers)}"
            )
        # own copies of the entries: one changed by its caller afterwards would change what
        # to_dict writes (and equality), not the methods built here (object.__setattr__: the
        # frozen fields take their checked form here, once)
        for role in ROLES:
            object.__setattr__(self, role, copy.deepcopy(getattr(self, role)))
        object.__setattr__(self, "layers", layer_keys("layers", copy.deepcopy(self.layers)))
        default = {role: _build(role, getattr(self, role), role) for role in ROLES}
        object.__setattr__(self, "_default", default)
        object.__setattr__(self, "_built", {})
        for layer, override in self.layers.items():
            where = f"layers[{layer}]"
            if not isinstance(override, dict):
                raise TypeError(f"{where}: expected a dict {{role: entry}}, got {override!r}")
            unknown = set(override) - set(ROLES)
            if unknown:
                raise ValueError(f"{where}: unknown roles {sorted(unknown)}; expected {ROLES}")
            self._built[layer] = {
                role: _build(role, entry, f"{where}[{role!r}]") for role, entry in override.items()
            }
        built = [self._default, *self._built.values()]
        if self.kv_interval and all(b.get("kv") is None for b in built):
            raise ValueError(
                f"kv_interval: {self.kv_interval} compresses the KV cache again during decode, "
                "which needs a kv policy (in kv or a layer's entry); set kv, or kv_interval 0"
            )
        if self.prefill_precision == "int8-fp8":
            _check_quant_blocks("prefill", self._default["prefill"])
            for layer, roles in self._built.items():
                _check_quant_blocks(f"layers[{layer}]['prefill']", roles.get("prefill"))
        tidal = any(getattr(b.get("decode"), "name", None) == "tidaldecode" for b in built)
        if tidal and any(b.get("kv") is not None for b in built):
            raise ValueError(
                "decode, kv: TidalDecode reuses one layer's token indices in the layers after it, "
                "which a KV policy's per-layer eviction makes name other tokens; pair a KV policy "
                "with quest or double_sparsity"
            )

    # ---- the built methods -------------------------------------------------------------------
    def planner(self, layer: int) -> Planner | None:
        """The planner of layer ``layer`` (a `PerHeadPlanner` for per-head entries), or None."""
        return self._role(layer, "prefill")

    def policy(self, layer: int) -> KVPolicy | None:
        """The KV policy of layer ``layer``, or None."""
        return self._role(layer, "kv")

    def selector(self, layer: int) -> DecodeSelector | None:
        """The decode selector of layer ``layer``, or None."""
        return self._role(layer, "decode")

    def _role(self, layer: int, role: str) -> Any:
        check_int("layer", layer, 0)  # "0" or -1 would miss the layer's entry silently
        built = self._built.get(layer)
        return built[role] if built is not None and role in built else self._default[role]

    @property
    def fp8_kv(self) -> bool:
        return self.precision.endswith("fp8-kv")

    @property
    def paged(self) -> bool:
        """Whether generation runs on attnsieve's paged cache (``paged_cache``, or a role that
        needs it: see `needs_paged_cache`)."""
        return self.paged_cache or self.needs_paged_cache

    @property
    def has_planner(self) -> bool:
        """Whether a prefill planner is configured, for every layer or some."""
        return self._default["prefill"] is not None or any(
            b.get("prefill") is not None for b in self._built.values()
        )

    @property
    def has_kv_policy(self) -> bool:
        """Whether a KV policy is configured, for every layer or some."""
        return self._default["kv"] is not None or any(b.get("kv") for b in self._built.values())

    @property
    def needs_paged_cache(self) -> bool:
        """Whether a KV policy, a decode selector or an FP8 KV cache is configured."""
        if self.fp8_kv or self.has_kv_policy or self._default["decode"] is not None:
            return True
        return any(b.get("decode") for b in self._built.values())

    @property
    def prefill_precision(self) -> str:
        return "int8-fp8" if self.precision.startswith("int8-fp8") else "bf16"

    def check_model(
        self,
        num_layers: int,
        num_heads: int,
        kv_heads: int | None = None,
        head_dim: int | None = None,
    ) -> None:
        """Raise unless every override fits a model of ``num_layers`` layers, ``num_heads`` query
        heads and ``kv_heads`` KV heads of ``head_dim`` channels (None: unknown): a layer index
        beyond the model, a per-head list or a planner's per-head budgets of another length
        (`Planner.check_heads`), or a decode selector that cannot run on a layer (Double
        Sparsity's label channels missing for it, or of another shape), a KV policy that names
        layers or heads the model lacks (RazorAttention's retrieval heads), or a paged cache (a KV
        policy, a decode selector, an FP8 KV cache) or an INT8·FP8 prefill whose kernels cannot
        take the heads."""
        check_int("num_layers", num_layers, 1)
        check_int("num_heads", num_heads, 1)
        if kv_heads is not None:
            check_int("kv_heads", kv_heads, 1)
            if num_heads % kv_heads:
                raise ValueError(
                    f"num_heads, kv_heads: expected a multiple of {kv_heads} KV heads, got "
                    f"{num_heads} query heads"
                )
        if head_dim is not None:
            check_int("head_dim", head_dim, 1)
        needs = []
        if self.paged:
            needs.append(("the paged cache's decode attention (for a KV policy, a decode selector "
                          "or an FP8 KV cache)", 16))  # fmt: skip
        if self.prefill_precision == "int8-fp8":
            needs.append(("INT8·FP8 prefill", 32))
        for what, low in needs:
            if head_dim is not None and not (
                low <= head_dim <= 256 and head_dim & (head_dim - 1) == 0
            ):
                raise ValueError(
                    f"head_dim: the model's is {head_dim}, but {what} takes a power of two in "
                    f"[{low}, 256]"
                )
        for layer in self.layers:
            if layer >= num_layers:
                raise ValueError(
                    f"layers[{layer}]: the model has {num_layers} layers (0..{num_layers - 1})"
                )
        for layer in range(num_layers):
            if (planner := self.planner(layer)) is not None:
                self._check_role(layer, "prefill", planner.check_heads, num_heads, kv_heads)
            if (policy := self.policy(layer)) is not None:
                self._check_role(layer, "kv", policy.check_layer, layer, kv_heads, num_layers)
            if (selector := self.selector(layer)) is not None:
                self._check_role(
                    layer, "decode", selector.check_layer, layer, kv_heads, head_dim, num_layers
                )

    def _check_role(self, layer: int, role: str, check: Any, *args: Any) -> None:
        """``check(*args)``, its ValueError prefixed with where ``role``'s method of ``layer``
        comes from: the layer's own entry, or the config's default."""
        try:
            check(*args)
        except ValueError as e:
            own = role in self.layers.get(layer, {})
            where = f"layers[{layer}][{role!r}]" if own else f"{role} (layer {layer})"
            raise ValueError(f"{where}: {e}") from None

    def override(self, **changes: Any) -> AttentionConfig:
        """A copy with ``changes`` (fields, as `dataclasses.replace` takes them); a role among
        them replaces that role in every layer of this config too, so that no per-layer entry
        (such as `attnsieve calibrate` writes) keeps running under it (`attnsieve run`'s role
        flags and `attnsieve eval`'s axes). ``layers`` among them are taken as given. ``kv=None``
        switches compression off, and with it this config's ``kv_interval`` (unless given)."""
        if "layers" not in changes:
            kept = {
                i: {r: e for r, e in o.items() if r not in changes} for i, o in self.layers.items()
            }
            changes["layers"] = {i: o for i, o in kept.items() if o}
            if "kv" in changes and changes["kv"] is None:
                changes.setdefault("kv_interval", 0)
        return dataclasses.replace(self, **changes)

    # ---- JSON ----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict that `from_json` reads back."""
        out = {name: getattr(self, name) for name in _FIELDS}
        out["layers"] = {str(k): v for k, v in self.layers.items()}
        return copy.deepcopy(out)  # a caller's edits must not reach this config's entries

    @classmethod
    def from_json(cls, source: str | os.PathLike | dict[str, Any]) -> AttentionConfig:
        """A config from a JSON file, JSON text (a str whose first non-blank character is ``{``,
        such as ``json.dumps(config.to_dict())``, or ``[``, refused as no object) or an
        already-parsed dict, in the format above; a free-form ``"metadata"`` entry (as calibrate
        writes) is ignored."""
        where = "source"
        if isinstance(source, str) and source.lstrip().startswith(("{", "[")):
            try:
                data = json.loads(source, object_pairs_hook=unique_keys)
            except ValueError as e:  # not JSON, or a key given twice
                raise ValueError(f"source: not valid JSON ({e})") from None
        elif isinstance(source, (str, os.PathLike)):
            where = os.fspath(source)
            data = read_json(source, where, "the config file")
        elif isinstance(source, dict):
            data = source
        else:
            raise TypeError(
                f"source: expected a path, JSON text or a dict, got {type(source).__name__}"
            )
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(data).__name__}")
        unknown = set(data) - set(_FIELDS) - {"metadata"}
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)}; expected {_FIELDS}")
        try:
            return cls(**{k: v for k, v in data.items() if k in _FIELDS})
        except (ValueError, TypeError) as e:
            if isinstance(source, dict):  # its fields' errors name them, as AttentionConfig's do
                raise
            raise type(e)(f"{where}: {e}") from None  # and the file they are in


def read_entry(path: str | os.PathLike, name: str) -> dict[str, Any]:
    """One role's entry from a JSON file, such as the RazorAttention entry `attnsieve calibrate
    --retrieval-heads` writes: an object with a ``method``. Errors name the argument ``name``
    and the file."""
    where = f"{name}: {os.fspath(path)}"
    entry = read_json(path, where, "the file")
    if not isinstance(entry, dict) or "method" not in entry:
        raise ValueError(f"{where}: expected an entry {{'method': ..., ...}}, got {entry!r:.60}")
    return entry


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object as a dict (json's ``object_pairs_hook``), refusing a key given twice: json
    keeps the last, so an edited file's earlier entry would be dropped unnoticed."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r} given twice in one object")
        out[key] = value
    return out


def read_json(path: str | os.PathLike, where: str, what: str) -> Any:
    """The JSON value in ``path``; a file that cannot be read or is not JSON (a key given twice
    in an object included) is a ValueError beginning with ``where`` (the option and file it
    names) and calling the file ``what``."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f, object_pairs_hook=unique_keys)
    except OSError as e:
        raise ValueError(f"{where}: cannot read {what} ({e.strerror})") from e
    except UnicodeDecodeError as e:
        raise ValueError(f"{where}: {what} is not UTF-8 text ({e.reason})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not valid JSON ({e})") from e
    except ValueError as e:  # unique_keys
        raise ValueError(f"{where}: {e}") from None


def _build(role: str, entry: Any, where: str) -> Any:
    """The method an entry names, built with its fields; a list builds a `PerHeadPlanner`."""
    if entry is None:
        return None
    if isinstance(entry, list):
        if role != "prefill":
            raise ValueError(f"{where}: per-head lists are supported for 'prefill' only")
        if not entry:
            raise ValueError(f"{where}: expected a non-empty list of per-head entries")
        for i, e in enumerate(entry):
            if e is None or isinstance(e, list):  # one planner a head: no gap, no nesting
                raise TypeError(
                    f"{where}[{i}]: expected a method name or a dict with a 'method' name (one "
                    f"planner a head), got {e!r}"
                )
        from attnsieve.methods.prefill import PerHeadPlanner

        per_head = PerHeadPlanner([_build(role, e, f"{where}[{i}]") for i, e in enumerate(entry)])
        freeze(per_head, _frozen("per-head planner", where))
        return per_head
    if isinstance(entry, str):
        entry = {"method": entry}
    if not isinstance(entry, dict) or not isinstance(entry.get("method"), str):
        raise TypeError(
            f"{where}: expected a method name or a dict with a 'method' name, got {entry!r}"
        )
    fields = {k: v for k, v in entry.items() if k != "method"}
    registry, factory = _registry(role)
    if entry["method"] not in registry:
        raise ValueError(
            f"{where}: unknown {role} method {entry['method']!r}; available: {sorted(registry)}"
        )
    cls = registry[entry["method"]]
    if dataclasses.is_dataclass(cls):  # a mistyped field: say which ones there are
        known = [f.name for f in dataclasses.fields(cls) if f.init]
        if unknown := sorted(set(fields) - set(known)):
            raise TypeError(
                f"{where}: {entry['method']} has no field {', '.join(map(repr, unknown))}; its "
                f"fields: {', '.join(known)}"
            )
    try:
        method = factory(entry["method"], **fields)
    except (TypeError, ValueError) as e:  # a bad field: name the entry it came from
        raise type(e)(f"{where}: {e}") from e
    freeze(method, _frozen(entry["method"], where))
    return method


def _frozen(method: str, where: str) -> str:
    """Why a method an `AttentionConfig` built refuses a field set on it."""
    return (
        f"this {method} is the {where} entry of an AttentionConfig, which is frozen (its to_dict "
        "would not show the change): make another config (AttentionConfig.override)"
    )


def _registry(role: str) -> tuple[dict[str, type], Any]:
    if role == "prefill":
        from attnsieve.methods.prefill import PLANNERS, get_planner

        return PLANNERS, get_planner
    if role == "kv":
        from attnsieve.methods.kv import POLICIES, get_policy

        return POLICIES, get_policy
    from attnsieve.methods.decode import SELECTORS, get_selector

    return SELECTORS, get_selector
