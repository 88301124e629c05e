"""benchmarks/pool_accuracy.py: seeds pooled sample by sample against the reference method."""

import importlib.util
import json
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "pool_accuracy.py"
spec = importlib.util.spec_from_file_location("pool_accuracy", PATH)
pool_accuracy = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pool_accuracy)


def cell(method, seed, scores, task="passkey", length=4096, **fields):
    return {"method": method, "seed": seed, "samples": len(scores), "scores": scores,
            "task": task, "length": length, "model": "probe", "dtype": "float32",
            "config": {"prefill": method}, **fields}  # fmt: skip


def write_run(folder: Path, cells) -> Path:
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps({"cells": cells}))
    return folder


def test_pairs_samples_across_seeds(tmp_path, capsys):
    a = write_run(tmp_path / "a", [cell("dense", 0, [1, 1, 0, 0]), cell("flex", 0, [1, 0, 1, 0])])
    b = write_run(tmp_path / "b", [cell("dense", 1, [1, 1, 1, 1]), cell("flex", 1, [0, 1, 1, 1])])
    out = tmp_path / "pooled.json"
    pool_accuracy.main([str(a), str(b / "results.json"), "--out", str(out)])
    (row,) = json.loads(out.read_text())
    assert row["method"] == "flex" and row["samples"] == 8 and row["seeds"] == [0, 1]
    assert row["reference_accuracy"] == pytest.approx(6 / 8)
    assert row["accuracy"] == pytest.approx(5 / 8)
    assert row["points"] == pytest.approx(-12.5)
    assert (row["better"], row["worse"]) == (1, 2)
    assert row["seed_points"] == pytest.approx([0.0, -25.0])
    assert "| 4096 | passkey | flex | 8 |" in capsys.readouterr().out


def test_cells_without_a_reference_are_left_out(tmp_path):
    rows = pool_accuracy.pool(
        [cell("dense", 0, [1]), cell("flex", 0, [1]), cell("flex", 0, [0], task="niah_single")],
        "dense",
    )
    assert [(r["task"], r["method"]) for r in rows] == [("passkey", "flex")]


def test_no_shared_samples_is_a_user_error(tmp_path, capsys):
    run = write_run(tmp_path / "a", [cell("flex", 0, [1])])
    with pytest.raises(SystemExit) as exc:
        pool_accuracy.main([str(run)])
    assert exc.value.code == 2
    assert "no method shares samples with 'dense'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        pool_accuracy.main([str(tmp_path / "missing")])
    assert exc.value.code == 2 and "missing: no results.json there" in capsys.readouterr().err


def _error(capsys, runs) -> str:
    """The one line main prints for ``runs``, which must exit 2."""
    with pytest.raises(SystemExit) as exc:
        pool_accuracy.main([str(run) for run in runs])
    assert exc.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.parametrize(
    "field, value",
    [("model", "smollm2"), ("dtype", "bfloat16"), ("config", {"prefill": "flex", "gamma": 0.5})],
)
@pytest.mark.parametrize("seed", [0, 1])
def test_runs_of_another_model_dtype_or_config_are_refused(tmp_path, capsys, field, value, seed):
    """They were pooled as one method's samples, the last run read winning where seeds met."""
    a = write_run(tmp_path / "a", [cell("dense", 0, [1]), cell("flex", 0, [1])])
    other = {field: value}
    b = write_run(tmp_path / "b", [cell("dense", seed, [1], **other), cell("flex", seed, [0])])
    err = _error(capsys, [a, b])
    assert f"runs {a / 'results.json'} and {b / 'results.json'}" in err
    assert f"differs in {field}" in err


def test_a_run_given_twice_or_two_runs_of_one_seed_are_refused(tmp_path, capsys):
    a = write_run(tmp_path / "a", [cell("dense", 0, [1]), cell("flex", 0, [0])])
    err = _error(capsys, [a, a / "results.json"])
    assert err == f"error: {a / 'results.json'}: the run {a / 'results.json'} is given twice"
    b = write_run(tmp_path / "b", [cell("dense", 0, [1]), cell("flex", 0, [0])])
    err = _error(capsys, [a, b])
    assert f"runs {a / 'results.json'} and {b / 'results.json'}: both hold seed 0" in err


@pytest.mark.parametrize("text", ['{"lengths": [4096]}', "[1]", '{"cells": [{"method": "x"}]}'])
def test_a_file_that_is_no_eval_run_is_named(tmp_path, capsys, text):
    path = tmp_path / "other.json"
    path.write_text(text)
    err = _error(capsys, [path])
    assert err.startswith(f"error: {path}: expected the results.json of attnsieve eval")


@pytest.mark.parametrize(
    "field, value",
    [("model", "smollm2"), ("dtype", "bfloat16"),
     ("key", "probe|float32|cpu|flex|{}|4096|tasks-v1|passkey|1|0")],
)  # fmt: skip
def test_a_reference_of_other_samples_is_not_paired(tmp_path, capsys, field, value):
    """The reference's run and a method's, each alone in its run: they were paired sample by
    sample though another model's tokenizer or another tasks' version draws other samples."""
    key = {"key": "probe|float32|cpu|dense|{}|4096|tasks-v2|passkey|1|0"}
    a = write_run(tmp_path / "a", [cell("dense", 0, [1], **key)])
    b = write_run(tmp_path / "b", [cell("flex", 0, [0], **{**key, field: value})])
    err = _error(capsys, [a, b])
    assert f"runs {a / 'results.json'} and {b / 'results.json'}: dense and flex" in err
    assert f"differ in {'tasks_version' if field == 'key' else field}" in err
