"""Chapter 3's studies as recipes (quick, small sizes): the presets side by side, the ablation, the CLI."""
import dataclasses
import json
from pathlib import Path

import pytest
import torch

from course_lib.attacks.inversion import ADDITIONS, PAPER_SETTINGS, InversionConfig
from course_lib.cli import main
from course_lib.errors import CourseError
from course_lib.experiments.recovery_further import ablation_steps, run_gradient_shares, run_recovery_ablation
from course_lib.experiments.recovery_studies import RecoveryStudiesBudget, run_recovery_seeds, run_recovery_sizes
from course_lib.train import prepare_pipeline


@pytest.fixture(scope="module")
def spatial_pipe():
    return prepare_pipeline("mnist-5k", "convnet-spatial", profile="quick", progress=False)


@pytest.fixture(scope="module")
def digits_pipe():
    return prepare_pipeline("digits", profile="quick", progress=False)


def test_ablation_steps_go_from_the_paper_preset_to_the_course_default():
    budget = RecoveryStudiesBudget.for_profile("quick")
    steps = ablation_steps("quick", budget)
    names = [n for n, _ in steps]
    assert names == ["paper"] + [f"+ {a}" for a in ADDITIONS]
    paper, course = steps[0][1], steps[-1][1]
    assert paper == budget.inversion("quick", "paper") and course == budget.inversion("quick", "course")
    for key, value in PAPER_SETTINGS.items():
        assert getattr(paper, key) == value
    # every step switches on exactly the settings of its addition, and nothing else changes
    for (_, before), (name, after) in zip(steps, steps[1:]):
        changed = {f.name for f in dataclasses.fields(after) if getattr(before, f.name) != getattr(after, f.name)}
        assert changed <= set(ADDITIONS[name[2:]]), (name, changed)
    # the study sizes replace the profile's, but the paper preset keeps its stages off
    assert paper.restarts == budget.restarts and paper.feature_iterations == 0 and paper.sharpen_iterations == 0
    assert course.feature_iterations == budget.feature_iterations
    assert InversionConfig.paper("quick").smooth_beta == 0.0


def test_paper_and_course_presets_attack_the_same_unlearned_models(spatial_pipe):
    """Quick version of the bar: the paper's preset beside the course's on the same seeds and digits.

    Measured at quick (restarts 8, 100 iterations), seeds 1 and 6: see the assertion's message.
    """
    budget = RecoveryStudiesBudget.for_profile("quick", seeds=2, paper_seeds=2)
    result = run_recovery_seeds(setup=spatial_pipe, budget=budget, seed=1, methods=("approximate",))
    rows = result.table()
    assert set(rows.preset) == {"paper", "course"} and len(rows) == 4
    by = rows.set_index(["seed", "preset"])
    for seed in (1, 2):
        assert by.loc[(seed, "paper"), "index"] == by.loc[(seed, "course"), "index"]
        assert by.loc[(seed, "paper"), "estimate_cosine"] == by.loc[(seed, "course"), "estimate_cosine"]
    med = result.summary["median_psnr"]
    assert med["course/approximate"] >= 20.0 and med["course/approximate"] > med["paper/approximate"], med
    assert med["paper/approximate"] > rows.baseline_psnr.mean(), med  # the paper's attack leaks too
    json.dumps(result.to_dict())
    assert result.plot() is not None and len(result.images) == 2


def test_ablation_measures_every_step_and_skips_what_cannot_act(digits_pipe):
    budget = RecoveryStudiesBudget.for_profile("quick", ablation_seeds=1, restarts=4, iterations=40,
                                               feature_iterations=20, sharpen_iterations=10)
    result = run_recovery_ablation(setup=digits_pipe, budget=budget, seed=0)
    steps = {s["step"]: s for s in result.summary["steps"]}
    assert len(steps) == 1 + len(ADDITIONS)
    assert steps["+ analytic labels"]["applies"] is False  # labels known: nothing to infer
    assert steps["+ analytic labels"]["median_psnr"] == steps["+ restart pruning"]["median_psnr"]
    assert steps["paper"]["gain_db"] is None
    total = sum(s["gain_db"] for s in result.summary["steps"][1:])
    assert total == pytest.approx(result.summary["course_median_psnr"] - result.summary["paper_median_psnr"])
    json.dumps(result.to_dict())


def test_table2_study_and_the_gradient_shares(digits_pipe, tmp_path):
    budget = RecoveryStudiesBudget.for_profile("quick", restarts=2, iterations=20, feature_iterations=10,
                                               sharpen_iterations=0, table2_samples=2, share_seeds=2)
    sizes = run_recovery_sizes(setup=digits_pipe, budget=budget, out=tmp_path)
    assert sizes.computed
    again = run_recovery_sizes(setup=digits_pipe, budget=budget, out=tmp_path)  # stored: read back whole
    assert not again.computed and again.rows == sizes.rows and again.summary == sizes.summary
    assert again.titles == sizes.titles and torch.equal(again.originals, sizes.originals)
    assert list(again.images) == list(sizes.images)
    assert all(torch.equal(again.images[k], sizes.images[k]) for k in sizes.images)
    assert run_recovery_sizes(setup=digits_pipe, budget=budget.replace(table2_samples=1), out=tmp_path).computed
    table2 = {(r["N"], r["method"]): r for r in sizes.summary["table2"]}
    assert set(table2) == {(8, "exact"), (8, "approximate"), (8, "exact, θ₀ and N known")}
    assert all(r["PSNR min"] <= r["PSNR mean"] <= r["PSNR max"] for r in table2.values())
    ref = [r for r in sizes.rows if r["method"].startswith("exact, ")]
    assert all(r["estimate_cosine"] > 0.999 for r in ref)  # one full batch: the reference estimate is exact
    shares = run_gradient_shares(setup=digits_pipe, budget=budget, removed=4, one_dummy=False)
    for seed in (0, 1):
        total = sum(r["gradient_share"] for r in shares.rows if r["seed"] == seed)
        assert total == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(CourseError, match="several"):
        run_gradient_shares(setup=digits_pipe, budget=budget, removed=1)


def test_recovery_study_cli_json_and_bad_input(tmp_path, capsys):
    out = tmp_path / "study"
    code = main(["recovery-study", "sizes", "--dataset", "digits", "--profile", "quick", "--out", str(out), "--json"])
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["study"] == "sizes" and payload["summary"]["table2"]
    assert Path(payload["files"]["json"]).exists() and Path(payload["files"]["figure"]).exists()
    bad = tmp_path / "bad"
    assert main(["recovery-study", "sizes", "--seeds", "2", "--profile", "quick", "--out", str(bad)]) == 2
    assert "--seeds does not apply" in capsys.readouterr().err and not any(bad.glob("*.json"))
    assert main(["recovery-study", "seeds", "--dataset", "german-credit", "--profile", "quick",
                 "--out", str(bad)]) == 2
    assert "tabular" in capsys.readouterr().err and not any(bad.glob("*.json"))
    assert main(["recovery-study", "seeds", "--seeds", "0"]) == 2
    with pytest.raises(CourseError, match="paper_seeds"):
        RecoveryStudiesBudget.for_profile("quick", paper_seeds=3)
