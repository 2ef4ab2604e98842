"""``python -m evaluation --core array``: the array core in the evaluation's protocols, on the same scored events as
the dict core."""

from __future__ import annotations

from pathlib import Path

import pytest

from config import load_config
from evaluation.__main__ import main
from evaluation.runner import ARMS, Options, Task, run_task


def test_prequential_on_both_cores_scores_the_same_events() -> None:
    model = load_config(None, [])["model"]
    results = {}
    for core in ("dict", "array"):
        opts = Options(model_cfg=model, limit=3000, sample_every=3, core=core)
        results[core] = run_task(Task("prequential", "prequential", 3000), opts)
    d, a = results["dict"], results["array"]
    assert set(a["metrics"]) == set(ARMS) == set(d["metrics"])
    assert a["n_scored"] == d["n_scored"] > 500
    for arm in ARMS:
        assert 0.0 <= a["metrics"][arm]["HR"] <= 1.0
    # both cores learn the same model; the array core's lists are current, the dict core's may lag 1,000 events
    assert abs(a["metrics"]["itemcf"]["HR"] - d["metrics"]["itemcf"]["HR"]) < 0.05
    assert a["metrics"]["usercf"]["HR"] == pytest.approx(d["metrics"]["usercf"]["HR"], abs=0.02)


def test_cli_dict_core_refuses_the_offline_protocols(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--core", "dict", "--limit", "100", "--out", str(tmp_path), "--protocols", "prequential,temporal"])
    assert "--core dict: the offline protocols (temporal) run on the array core" in capsys.readouterr().err
    assert main(["--core", "array", "--limit", "300", "--jobs", "1", "--no-progress", "--out", str(tmp_path),
                 "--protocols", "prequential,temporal"]) == 0
    md = (tmp_path / "results.md").read_text()
    assert "| learned |" in md and "Offline temporal split" in md
