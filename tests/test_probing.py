"""Label inference by probing (chapter 4): black-box API, ZOO/NES probes, eqs. 9-11, label-only, CLI."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from course_lib.attacks.blackbox import BlackBoxAPI
from course_lib.attacks.label_only import infer_label_only
from course_lib.attacks.probes import ProbeConfig, build_probes, calibrate_probes, margin_loss
from course_lib.attacks.unlearned_label import confidence_drop, infer_unlearned_label, probe_unlearned, top_k_classes
from course_lib.cli import main
from course_lib.errors import CourseError


def tiny_model(seed=0, classes=4, side=6):
    """A small fixed ConvNet-free classifier on 1 x side x side inputs (fast to query)."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(side * side, 16), nn.Tanh(), nn.Linear(16, classes))
    with torch.no_grad():
        model[3].weight.mul_(15.0)
    return model.eval()


# --------------------------------------------------------------------------- the black-box API

def test_api_counts_queries_and_hides_the_model():
    model = tiny_model()
    api = BlackBoxAPI(model, "probs")
    out = api.query(torch.rand(5, 1, 6, 6))
    assert out.shape == (5, 4) and out.dtype == torch.float64
    assert torch.allclose(out.sum(1), torch.ones(5, dtype=torch.float64))
    api.query(torch.rand(1, 6, 6))  # one sample without the batch axis
    assert api.queries == 6
    assert not any(isinstance(v, nn.Module) for k, v in vars(api).items() if not k.startswith("_BlackBoxAPI"))
    assert not hasattr(api, "model") and not hasattr(api, "parameters")
    labels = BlackBoxAPI(model, "labels")
    lab = labels.query(torch.rand(3, 1, 6, 6))
    assert lab.dtype == torch.long and lab.shape == (3,) and labels.queries == 3


def test_api_rejects_wrong_shapes_and_outputs():
    api = BlackBoxAPI(tiny_model(), "probs", input_shape=(1, 6, 6))
    with pytest.raises(CourseError, match="shape"):
        api.query(torch.rand(2, 1, 5, 5))
    with pytest.raises(CourseError, match="Unknown API output"):
        BlackBoxAPI(tiny_model(), "logits")
    with pytest.raises(CourseError, match="NaN"):
        api.query(torch.full((1, 1, 6, 6), float("nan")))


# --------------------------------------------------------------------------- eqs. 8-11

def test_margin_loss_from_probabilities_equals_the_logit_margin():
    logits = torch.randn(7, 5, dtype=torch.float64) * 3
    target = torch.randint(0, 5, (7,))
    probs = torch.softmax(logits, 1)
    others = logits.scatter(1, target.view(-1, 1), float("-inf")).max(1).values
    expected = others - logits.gather(1, target.view(-1, 1)).squeeze(1)
    assert torch.allclose(margin_loss(probs, target), expected, atol=1e-9)


def test_confidence_drop_and_top_k_follow_eqs_9_to_11():
    target = torch.tensor([0, 0, 1, 1, 2, 2])
    before = torch.full((6, 3), 0.0, dtype=torch.float64)
    before[torch.arange(6), target] = 1.0
    after = before.clone()
    after[2:4, 1] = 0.7  # the class-1 probes lose 0.3 of their confidence
    after[4, 2] = 0.9
    delta = confidence_drop(before, after, target, 3)
    beta = torch.diagonal(delta)
    assert torch.allclose(beta, torch.tensor([0.0, 0.3, 0.05], dtype=torch.float64))
    assert top_k_classes(beta, 1) == [1] and top_k_classes(beta, 2) == [1, 2]
    with pytest.raises(CourseError):
        top_k_classes(beta, 4)


# --------------------------------------------------------------------------- probe construction

@pytest.mark.parametrize("method", ["zoo", "nes"])
def test_probes_reach_the_confidence_target_through_queries_only(method):
    api = BlackBoxAPI(tiny_model(), "probs")
    cfg = ProbeConfig.for_profile("quick", max_queries=30_000, zoo_coordinates=16, nes_resolution=6)
    probes = build_probes(api, num_classes=4, input_shape=(1, 6, 6), probes_per_class=2, method=method,
                          config=cfg, seed=0, progress=False)
    assert len(probes) == 8 and probes.target.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert bool(probes.reached.all()), probes.summary()
    assert (probes.confidence >= 1 - 1e-3).all()
    assert float(probes.x.min()) >= 0.0 and float(probes.x.max()) <= 1.0
    # every query went through the API and was counted per probe
    assert int(probes.queries.sum()) == api.queries
    # the recorded prediction vectors are the model's own on the final probes
    assert torch.allclose(probes.probs, BlackBoxAPI(tiny_model(), "probs").query(probes.x))


def two_class_model(shift: float = 0.0):
    """logit_0 = 30 * mean(x) - shift, logit_1 = 30 * (1 - mean(x)): bright inputs are a saturated "0"."""
    lin = nn.Linear(36, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.stack([torch.full((36,), 30 / 36), torch.full((36,), -30 / 36)]))
        lin.bias.copy_(torch.tensor([-shift, 30.0]))
    return nn.Sequential(nn.Flatten(), lin).eval()


def test_calibration_brings_a_saturated_probe_back_to_the_target_so_it_can_show_a_drop():
    # a probe of class 0 at p_0 = 1 - 1e-13 (all-white input) and one of class 1, just as saturated
    # (all black): each is pulled back towards the other
    x = torch.stack([torch.ones(1, 6, 6), torch.zeros(1, 6, 6)])
    target = torch.tensor([0, 1])
    api = BlackBoxAPI(two_class_model(), "probs")
    probs = api.query(x)
    assert 1 - float(probs[0, 0]) < 1e-10
    # unlearning that lowers class 0's logit by 0.5: the saturated probe sees no drop at all
    unlearned = BlackBoxAPI(two_class_model(shift=0.5), "probs")
    assert float(probs[0, 0] - unlearned.query(x)[0, 0]) < 1e-9
    cfg = ProbeConfig(calibration_band=0.5)
    before = api.queries
    x_cal, probs_cal, used = calibrate_probes(api, x, probs, target, cfg)
    err = 1 - probs_cal[torch.arange(2), target]
    assert bool(((err >= 0.5e-3) & (err <= 1e-3)).all()), err
    assert torch.allclose(probs_cal, BlackBoxAPI(two_class_model(), "probs").query(x_cal))
    assert int(used.sum()) == api.queries - before and bool(((used > 0) & (used <= 30)).all())
    assert float(x_cal.min()) >= 0 and float(x_cal.max()) <= 1
    # the calibrated probe now registers the drop (about 1e-3 * (1 - e^-0.5) ~ 4e-4)
    drop = float(probs_cal[0, 0] - unlearned.query(x_cal)[0, 0])
    assert drop > 1e-4, drop
    # band 0 switches calibration off inside build_probes; a bad band is refused
    with pytest.raises(CourseError, match="calibration_band"):
        ProbeConfig(calibration_band=1.5).validated()


def test_probe_construction_refuses_a_label_only_api():
    with pytest.raises(CourseError, match="labels only"):
        build_probes(BlackBoxAPI(tiny_model(), "labels"), num_classes=4, input_shape=(1, 6, 6), probes_per_class=1)
    with pytest.raises(CourseError, match="BlackBoxAPI"):
        build_probes(tiny_model(), num_classes=4, input_shape=(1, 6, 6), probes_per_class=1)


# --------------------------------------------------------------------------- the attack on MNIST (quick bars)

@pytest.fixture(scope="module")
def quick_result(results_root):
    """Chapter 4's run (its arguments), stored where the chapter reads it (make test: the shared results root)."""
    from course_lib.experiments.label_inference import run_label_inference

    result = run_label_inference("mnist-5k", profile="quick", seed=0, out=results_root / "label-inference",
                                 progress=False)
    assert result.computed, (f"{result.results_path} comes from an earlier run, so this test would check old "
                             "results: delete that folder (make test starts from a fresh one).")
    return result


def test_the_stored_result_is_read_back_whole_and_an_edited_library_computes_again(quick_result, tmp_path,
                                                                                   monkeypatch):
    from course_lib.experiments import label_inference as li

    again = li.run_label_inference("mnist-5k", profile="quick", seed=0, out=Path(quick_result.results_path).parent,
                                   progress=False)
    assert not again.computed and again.results_path == quick_result.results_path
    fields = lambda r: {k: v for k, v in r.to_dict().items() if k not in ("computed", "results_path")}
    assert json.loads(json.dumps(fields(again))) == json.loads(json.dumps(fields(quick_result)))
    assert again.accuracy("approximate", 1.0) == quick_result.accuracy("approximate", 1.0)
    # a smaller run: stored, read back, and computed again once the library's source (its key) changes
    cfg = li.LabelInferenceConfig.for_profile("quick", forget_shares=(1.0,), multi_classes=(), label_only=False)
    kw = dict(profile="quick", seed=0, config=cfg, out=tmp_path, progress=False)
    first = li.run_label_inference("mnist-5k", **kw)
    assert first.computed and not li.run_label_inference("mnist-5k", **kw).computed
    assert li.run_label_inference("mnist-5k", resume=False, **kw).computed
    monkeypatch.setattr(li, "library_key", lambda: "an-edited-library")
    edited = li.run_label_inference("mnist-5k", **kw)
    assert edited.computed and edited.results_path != first.results_path
    assert len(list(tmp_path.glob("label-inference-*.jsonl"))) == 2


def test_quick_bars_probability_api(quick_result):
    r = quick_result
    # the probes reached the paper's confidence target on M through queries only
    assert r.probes["reached_share"] >= 0.9 and r.probes["median_confidence"] >= 1 - 1e-3
    # issue 4's bars, quick versions (4 probes per class, 10 classes each unlearned in turn). Measured
    # at quick (CPU, seed 0): approximate 1.0 at p_u = 1 and 0.8 at p_u = 0.5, exact 0.7 at p_u = 1
    # (chance: 0.1). The bars (1.0 / 0.9 / 0.8) are NOT asserted: they do not hold at quick
    # (p_u = 0.5) nor at standard; test_update_anatomy_... and chapter 4 measure why.
    assert r.accuracy("approximate", 1.0) >= 0.9
    assert r.accuracy("approximate", 0.5) >= 0.7
    assert r.accuracy("exact", 1.0) >= 0.6
    # the unlearned class's own probes lose confidence (beta > 0) in every approximate case
    betas = r.betas["probs/course/m=%d/approximate/p_u=1.0" % r.config["probes_per_class"]]
    assert all(betas[c][c] > 0 for c in range(10))


def test_quick_bars_label_only_and_top_k(quick_result):
    r = quick_result
    # label-only API: clearly better than guessing one class in ten (measured 0.8 at quick)
    assert r.accuracy("approximate", 1.0, api="labels") >= 0.5
    # several classes unlearned at once (Fig. 10): top-K names K distinct classes and its accuracy is
    # the share of the unlearned ones among them. No accuracy bar at quick: with 4 probes per class the
    # top-3 of 3 unlearned classes found 1 of them on this CPU (chance 0.9) under 1 and 2 threads alike,
    # while another CPU found 2; chapter 4 shows the rows and the standard profile measures them.
    for row in r.multi:
        k = len(row["classes"])
        assert len(row["inferred"]) == k == len(set(row["inferred"])), row
        assert set(row["inferred"]) <= set(range(10)), row
        assert row["accuracy"] == pytest.approx(len(set(row["inferred"]) & set(row["classes"])) / k), row
    d = r.to_dict()
    json.dumps(d)  # JSON-serialisable
    table = r.table()
    assert {"API", "p_u", "acc."} <= set(table.columns) and len(table) == len(r.rows)
    r.plot()


def test_table3_runs_the_papers_zoo_preset_beside_the_courses_on_the_same_models(tmp_path):
    """Chapter 4's two presets (quick, small ZOO budget): the paper's ZOO probes grouped by M's
    prediction and the course's NES probes grouped by target, on the same unlearned models."""
    from course_lib.experiments.label_inference import LabelInferenceConfig, run_label_inference

    assert LabelInferenceConfig.for_profile("full").presets == ("paper", "course")
    assert LabelInferenceConfig.for_profile("standard").presets == ("course",)   # ZOO: over an hour on a CPU
    cfg = LabelInferenceConfig.for_profile("quick", presets=("paper", "course"), forget_shares=(1.0,),
                                           multi_classes=(), label_only=False, zoo_max_queries=1_500,
                                           zoo_probes_per_class=2)
    r = run_label_inference("mnist-5k", profile="quick", seed=0, config=cfg, out=tmp_path, progress=False)
    paper, course = r.probe_sets["paper"], r.probe_sets["course"]
    assert paper["method"] == "zoo" and paper["grouping"] == "predicted" and not paper["calibrated"]
    assert course["method"] == "nes" and course["grouping"] == "target"
    assert paper["queries_per_probe_mean"] <= 1_500 + 100  # ZOO's budget per probe (one step may overshoot)
    presets = {row["preset"] for row in r.rows if row["api"] == "probs"}
    assert presets == {"paper", "course"}
    for preset in presets:
        assert 0.0 <= r.accuracy("approximate", 1.0, preset=preset) <= 1.0
    assert set(r.table()["preset"]) >= {"paper", "course"}


def test_probing_a_model_that_unlearned_nothing_finds_no_drop():
    from course_lib.experiments.probing_setup import prepare_probing

    setup = prepare_probing("mnist-5k", profile="quick", seed=0, progress=False)
    probes = setup.probes(4, "nes", progress=False)
    res = infer_unlearned_label(setup.deployed, setup.deployed, probes)
    assert torch.count_nonzero(res.delta) == 0
    res_labels = infer_label_only(setup.deployed, setup.deployed, setup.boundary_probes(progress=False))
    assert float(res_labels.flip_share.max()) == 0.0


def test_update_anatomy_splits_the_approximate_update_and_explains_misses():
    """Chapter 4's 'why the attack misses a class': head / features / top-sample parts of eq. 13's update."""
    from course_lib.experiments.probing_setup import prepare_probing
    from course_lib.experiments.update_anatomy import PARTS, run_update_anatomy

    setup = prepare_probing("mnist-5k", profile="quick", seed=0, progress=False)
    probes = setup.probes(4, "nes", progress=False)
    anatomy = run_update_anatomy(setup, probes, progress=False)
    assert [r.unlearned_class for r in anatomy.rows] == list(range(10))
    # the "whole" part is the model the attack faces: same beta as probing setup.unlearn(...)
    for c in (0, 7):
        res = probe_unlearned(setup.api(), setup.api(setup.unlearn([c], 1.0, "approximate")), probes)
        assert torch.allclose(res.beta, torch.tensor(anatomy.row(c).beta["whole"], dtype=torch.float64))
    # the classifier head's part alone names every unlearned class (measured 10/10 at quick and at
    # standard seeds 0-1, where the whole update names 8/10 and 9/10)
    assert anatomy.accuracy("head") == 1.0
    # the removed sample with the largest loss at M0 dominates the update (measured median cosine
    # 0.92 between its gradient and the summed gradient at quick)
    cosines = sorted(r.top_sample_cosine for r in anatomy.rows)
    assert cosines[len(cosines) // 2] >= 0.8
    assert all(0 < r.head_norm_share < 0.5 for r in anatomy.rows)
    table = anatomy.table()
    assert len(table) == 10 and {f"inferred ({p})" for p in PARTS} <= set(table.columns)
    json.dumps(anatomy.to_dict())
    anatomy.plot(0)
    with pytest.raises(CourseError, match="forget share"):
        run_update_anatomy(setup, probes, forget_share=0.0, progress=False)
    with pytest.raises(CourseError, match="part"):
        anatomy.accuracy("bias")


# --------------------------------------------------------------------------- CLI

def run_cli(*args):
    import os

    env = dict(os.environ, COURSE_PROFILE="quick")
    return subprocess.run([sys.executable, "-m", "course_lib", *args], capture_output=True, text=True,
                          env=env, timeout=900)


def test_cli_infer_label_json_names_the_unlearned_class():
    proc = run_cli("infer-label", "--dataset", "mnist-5k", "--unlearning", "approximate", "--forget-class", "3",
                   "--probes-per-class", "4", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["cases"][0]["true"] == [3] and out["cases"][0]["inferred"] == [3]
    assert len(out["cases"][0]["delta"]) == 10 and out["queries"]["total"] > out["queries"]["probing"] > 0


def test_cli_infer_label_top_k_through_a_label_only_api():
    proc = run_cli("infer-label", "--unlearning", "approximate", "--forget-classes", "1,6", "--api", "labels", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["api"] == "labels" and len(out["cases"][0]["inferred"]) == 2
    assert out["queries"]["construction"] > 0


@pytest.mark.parametrize("args, message", [
    (["--forget-class", "12"], "does not exist"),
    (["--forget-class", "2", "--forget-share", "1.5"], "p_u"),
    (["--forget-classes", "1,1"], "distinct"),
])
def test_cli_infer_label_bad_input_exits_2(capsys, args, message):
    assert main(["infer-label", "--profile", "quick", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_cli_infer_label_needs_a_class_choice():
    assert main(["infer-label", "--profile", "quick"]) == 2  # a usage error: exit code 2
