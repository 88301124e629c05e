"""`attnsieve bench prefill`: what runs without a GPU (the JSON it writes)."""

import argparse
import shlex

from attnsieve.bench import prefill


def test_json_records_the_command_that_ran():
    """prefill.json's command reproduces the run: every option as parsed, not the bare name."""
    parser = argparse.ArgumentParser()
    prefill.add_arguments(parser)
    argv = ["--lengths", "4096,8192", "--planners", "streaming", "--seed", "3", "--rep-ms", "10",
            "--kwargs", '{"streaming": {"window_tokens": 512}}', "--out", "my results"]  # fmt: skip
    args = parser.parse_args(argv)
    payload = prefill._payload(args, {}, ["sink_local"], [])
    words = shlex.split(payload["command"])
    assert words[:3] == ["attnsieve", "bench", "prefill"]
    assert parser.parse_args(words[3:]) == args
    assert payload["settings"]["seed"] == 3 and payload["settings"]["rep_ms"] == 10
