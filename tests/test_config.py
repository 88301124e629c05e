"""AttentionConfig as data: `override` and `to_dict` (no model)."""

import argparse
import copy
import dataclasses
import json
import pickle

import pytest

from attnsieve.integrations import AttentionConfig

GAMMA = {"method": "flexprefill", "gamma": 0.9}


def test_override_takes_the_layers_it_is_given():
    """A role and ``layers`` given together: the role was stripped from the given layers too, so
    the layer's own entry silently never ran."""
    config = AttentionConfig(prefill="dense", layers={0: {"prefill": "streaming"}})
    new = config.override(prefill="flexprefill", layers={1: {"prefill": "streaming"}})
    assert new.layers == {1: {"prefill": "streaming"}}
    assert new.planner(1).name == "streaming" and new.planner(0).name == "flexprefill"
    # without ``layers`` the role still replaces this config's per-layer entries
    assert config.override(prefill="flexprefill").layers == {}


def test_entries_are_the_config_s_own():
    """The config kept its caller's dicts: one edited afterwards (or through to_dict's output)
    changed what to_dict wrote, and the equality and JSON keys of configs, but not the planner
    built from it."""
    entry = dict(GAMMA)
    layers = {0: {"prefill": dict(GAMMA)}}
    config = AttentionConfig(prefill=entry, layers=layers)
    written = json.dumps(config.to_dict())
    entry["gamma"] = 0.5
    layers[0]["prefill"]["gamma"] = 0.5
    config.to_dict()["prefill"]["gamma"] = 0.5
    config.to_dict()["layers"]["0"]["prefill"]["gamma"] = 0.5
    assert json.dumps(config.to_dict()) == written
    assert config == AttentionConfig(prefill=GAMMA, layers={0: {"prefill": GAMMA}})
    assert config.planner(0).gamma == config.planner(1).gamma == 0.9


def test_a_config_is_frozen_and_a_changed_copy_is_built_anew():
    """A field assigned after construction changed to_dict (and equality) but not the planner
    built from it: the config disagreed with itself."""
    config = AttentionConfig(prefill="dense")
    with pytest.raises(dataclasses.FrozenInstanceError, match="'prefill'"):
        config.prefill = "streaming"
    assert config.planner(0).name == "dense" and config.to_dict()["prefill"] == "dense"
    changed = dataclasses.replace(config, prefill="streaming")
    assert changed.planner(0).name == "streaming" and config.planner(0).name == "dense"
    twin = pickle.loads(pickle.dumps(copy.deepcopy(changed)))
    assert twin == changed and twin.planner(0).name == "streaming"
    # frozen, yet its dict entries made hash() fail inside the generated __hash__
    with pytest.raises(TypeError, match="^unhashable type: 'AttentionConfig'"):
        hash(config)


def test_the_methods_a_config_built_are_frozen_with_it():
    """A field set on a built method ran, but to_dict (and so every JSON a run writes) kept the
    old value: the config disagreed with what ran. Now refused by name; a copy of the method
    (dataclasses.replace) or another config is free to differ."""
    config = AttentionConfig(
        prefill=GAMMA, kv={"method": "snapkv", "budget": 64}, decode="quest",
        layers={3: {"prefill": ["streaming", "dense"]}},
    )  # fmt: skip
    written = json.dumps(config.to_dict())
    frozen = r"entry of an AttentionConfig, which is frozen"
    for method, field, value in (
        (config.planner(0), "gamma", 0.5),
        (config.policy(0), "budget", 32),  # the budget/ratio path
        (config.policy(0), "window", 4),
        (config.selector(0), "ratio", 0.5),
        (config.planner(3), "planners", []),
        (config.planner(3).planners[0], "window_tokens", 64),
    ):
        with pytest.raises(ValueError, match=f"^{field}: this .* {frozen}"):
            setattr(method, field, value)
    # lists inside them are kept as tuples: an item set in place would bypass the freeze too
    with pytest.raises(TypeError, match="does not support item assignment"):
        config.planner(3).planners[0] = config.planner(0)
    channels = AttentionConfig(decode={"method": "double_sparsity", "channels": [[0, 2], [1, 3]]})
    assert channels.selector(0).channels == ((0, 2), (1, 3))
    with pytest.raises(TypeError, match="does not support item assignment"):
        channels.selector(0).channels[0][0] = 5
    assert json.dumps(config.to_dict()) == written and config.policy(0).budget == 64
    assert dataclasses.replace(config.planner(0), gamma=0.5).gamma == 0.5
    twin = pickle.loads(pickle.dumps(config))
    with pytest.raises(ValueError, match=frozen):
        twin.planner(0).gamma = 0.5


def _every_method():
    from attnsieve.methods.decode import SELECTORS, get_selector
    from attnsieve.methods.kv import POLICIES, get_policy
    from attnsieve.methods.prefill import PLANNERS, get_planner

    return [
        *(get_planner(n) for n in sorted(PLANNERS)),
        *(get_policy(n) for n in sorted(POLICIES)),
        *(get_selector(n) for n in sorted(SELECTORS)),
    ]


@pytest.mark.parametrize("method", _every_method(), ids=lambda m: m.name)
def test_a_name_no_method_field_has_is_refused_on_a_built_method(method, monkeypatch):
    """``config.planner(0).gamma = 0.5`` on a dense planner (the README's example config), or a
    typo such as ``window_size``, was set and did nothing. Now a TypeError names it and the
    method's fields, as the constructor's unexpected keyword does; private attributes and the
    class's own (a method a test patches) are still set."""
    before = copy.deepcopy(method.__dict__)
    with pytest.raises(TypeError, match=rf"^gama: {type(method).__name__} has no such field"):
        method.gama = 0.5
    assert method.__dict__ == before
    method._scratch = 1
    monkeypatch.setattr(method, "check_layer" if hasattr(method, "check_layer") else "plan", None)


@pytest.mark.parametrize(
    "entry, match",
    [
        ({"prefill": {"method": "flexprefill", "gama": 0.9}},
         r"^prefill: flexprefill has no field 'gama'; its fields: gamma, tau, "),
        ({"kv": {"method": "snapkv", "budgt": 64}}, r"^kv: snapkv has no field 'budgt'; its "),
        ({"layers": {"1": {"decode": {"method": "quest", "x": 1, "y": 2}}}},
         r"^layers\[1\]\['decode'\]: quest has no field 'x', 'y'; its fields: budget_tokens"),
    ],
)  # fmt: skip
def test_a_mistyped_field_in_a_config_names_the_method_s_fields(entry, match):
    """The constructor's "unexpected keyword argument 'gama'" did not say what the fields are."""
    with pytest.raises(TypeError, match=match):
        AttentionConfig(**entry)


def test_a_kv_interval_without_a_kv_policy_is_refused():
    """It was silently ignored: no policy, nothing to compress again."""
    with pytest.raises(ValueError, match="^kv_interval: 64 .* needs a kv policy"):
        AttentionConfig(kv_interval=64)
    with pytest.raises(ValueError, match="^kv_interval"):
        AttentionConfig(kv_interval=64, layers={0: {"kv": None, "prefill": "dense"}})
    layered = AttentionConfig(kv_interval=64, layers={1: {"kv": "snapkv"}})
    assert layered.policy(1) is not None and layered.policy(0) is None
    # switching the policy off switches its interval off; asked for together, it is refused
    assert layered.override(kv=None).kv_interval == 0
    with pytest.raises(ValueError, match="^kv_interval"):
        layered.override(kv=None, kv_interval=64)


def test_eval_kv_none_over_a_config_file_with_an_interval_drops_the_interval(tmp_path):
    """`attnsieve eval --kv none,snapkv` over a file that sets kv_interval: the none cell runs
    without a policy (and so without the interval), the snapkv cell keeps the file's interval."""
    from attnsieve.eval.sweep_args import add_arguments, method_configs

    path = tmp_path / "periodic.json"
    kv = {"method": "streaming", "budget": 32}
    path.write_text(json.dumps({"prefill": "dense", "kv": kv, "kv_interval": 64}))
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--model", "x", "--methods", str(path), "--kv", "none,snapkv"])
    (_, off), (label, snap) = method_configs(args)
    assert off.policy(0) is None and off.kv_interval == 0 and not off.needs_paged_cache
    assert label == "periodic+snapkv@0.25" and snap.kv_interval == 64
    args = parser.parse_args(["--model", "x", "--methods", str(path)])  # the file's own policy
    [(_, own)] = method_configs(args)
    assert own.policy(0).name == "streaming" and own.kv_interval == 64
