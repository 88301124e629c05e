"""AttentionConfig as data: `override` and `to_dict` (no model)."""

import json

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
