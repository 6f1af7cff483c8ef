"""Tests of the defenses of Section 7 (course_lib.defenses) and of their evaluation (chapter 6)."""
from __future__ import annotations

import math

import pytest
import torch

from course_lib import defenses as D
from course_lib.cache import clone_model, state_equal
from course_lib.data import Dataset
from course_lib.errors import CourseError
from course_lib.models import build_model, parameter_vector


# --------------------------------------------------------------------------- small fixtures

def _pair(seed: int = 0, step: float = 1e-3):
    """A small ConvNet M and an 'unlearned' copy M_u = M + a small random update."""
    torch.manual_seed(seed)
    original = build_model("convnet", (1, 12, 12), 10, width=4).eval()
    unlearned = clone_model(original)
    with torch.no_grad():
        for p in unlearned.parameters():
            p.add_(torch.randn_like(p) * step)
    return original, unlearned


def _data(n: int = 100, seed: int = 0) -> Dataset:
    gen = torch.Generator().manual_seed(seed)
    return Dataset("toy", torch.rand(n, 1, 12, 12, generator=gen), torch.randint(0, 10, (n,), generator=gen),
                   [str(i) for i in range(10)])


def _norm(tensors) -> float:
    return float(torch.sqrt(sum((t.double() ** 2).sum() for t in tensors)))


# --------------------------------------------------------------------------- obfuscation

def test_clip_update_bounds_global_norm_and_keeps_direction():
    update = [torch.full((10,), 3.0), torch.full((3, 3), -2.0)]  # norm sqrt(90 + 36) > 1.2
    clipped = D.clip_update(update, 1.2)
    assert _norm(clipped) == pytest.approx(1.2, rel=1e-5)
    cos = torch.nn.functional.cosine_similarity(torch.cat([u.flatten() for u in update]),
                                                torch.cat([c.flatten() for c in clipped]), dim=0)
    assert float(cos) == pytest.approx(1.0, abs=1e-6)
    small = [torch.full((4,), 0.1)]
    assert torch.equal(D.clip_update(small, 1.2)[0], small[0])  # inside the ball: unchanged


def test_clip_update_per_tensor_bounds_each_tensor():
    update = [torch.full((10,), 3.0), torch.full((3, 3), -2.0), torch.full((2,), 0.01)]
    clipped = D.clip_update(update, 1.2, scope="per-tensor")
    assert [_norm([c]) for c in clipped[:2]] == pytest.approx([1.2, 1.2], rel=1e-5)
    assert torch.equal(clipped[2], update[2])


def test_obfuscation_without_noise_bounds_the_update_norm():
    original, unlearned = _pair(step=0.05)  # update norm far above C
    assert _norm(D.unlearning_update(original, unlearned)) > 3
    defended = D.obfuscate(original, unlearned, 0.0, space="parameters")
    assert _norm(D.unlearning_update(original, defended)) == pytest.approx(1.2, rel=1e-4)
    # a short update passes unchanged
    original, unlearned = _pair(step=1e-5)
    defended = D.obfuscate(original, unlearned, 0.0, space="parameters")
    assert torch.allclose(parameter_vector(defended), parameter_vector(unlearned), atol=1e-7)


def test_obfuscation_noise_has_requested_std_and_is_seeded():
    original, unlearned = _pair(step=1e-6)
    sigma = 0.005
    defended = D.obfuscate(original, unlearned, sigma, seed=3, space="parameters", noise="std")
    noise = parameter_vector(defended) - parameter_vector(unlearned)
    assert noise.numel() > 1000
    assert float(noise.std()) == pytest.approx(sigma, rel=0.1)
    assert abs(float(noise.mean())) < 3 * sigma / math.sqrt(noise.numel()) + 1e-6
    again = D.obfuscate(original, unlearned, sigma, seed=3, space="parameters", noise="std")
    other = D.obfuscate(original, unlearned, sigma, seed=4, space="parameters", noise="std")
    assert state_equal(defended, again)
    assert not state_equal(defended, other)
    # inputs untouched
    assert not torch.equal(parameter_vector(unlearned), parameter_vector(defended))


def test_obfuscation_in_gradient_space_reads_sigma_as_the_variance_and_clips_the_gradient():
    original, unlearned = _pair(step=1e-9)  # its gradient lies well inside the ball of radius C
    s = 1e-3 / 128  # eta m / b of the paper's fine-tuning
    assert not D.clipping_binds(original, unlearned, 1.2, step_scale=s)
    sigma = 0.004
    defended = D.obfuscate(original, unlearned, sigma, seed=3, step_scale=s)
    noise = parameter_vector(defended) - parameter_vector(unlearned)
    assert float(noise.std()) == pytest.approx(s * math.sqrt(sigma), rel=0.1)  # variance sigma, scaled by s
    with pytest.raises(CourseError, match="step_scale"):
        D.obfuscate(original, unlearned, sigma)
    # an unlearning gradient longer than C is clipped to C (then scaled back into the weights)
    original, unlearned = _pair(step=0.05)
    g_norm = _norm(D.unlearning_update(original, unlearned)) / s
    assert D.clipping_binds(original, unlearned, 1.2, step_scale=s) and g_norm > 1.2
    clipped = D.obfuscate(original, unlearned, 0.0, step_scale=s)
    assert _norm(D.unlearning_update(original, clipped)) == pytest.approx(1.2 * s, rel=1e-2)  # float32 weights
    assert not D.clipping_binds(original, unlearned, 10 * g_norm, step_scale=s)


# --------------------------------------------------------------------------- pruning

@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("p", [0.7, 0.9])
def test_pruning_removes_requested_share_of_smallest_weights(p, scope):
    original, unlearned = _pair()
    before = parameter_vector(unlearned)
    defended = D.prune_model(original, unlearned, p, scope=scope)
    assert D.sparsity(defended) == pytest.approx(p, abs=0.01)
    assert D.sparsity(unlearned) == 0.0  # input not modified
    assert torch.equal(parameter_vector(unlearned), before)
    # the survivors are the large ones: every kept weight is at least as large as every removed one
    if scope == "global":
        w_before = torch.cat([m.weight.detach().flatten() for m, _ in D.prunable_weights(unlearned)]).abs()
        w_after = torch.cat([m.weight.detach().flatten() for m, _ in D.prunable_weights(defended)])
        kept, removed = w_before[w_after != 0], w_before[w_after == 0]
        assert float(kept.min()) >= float(removed.max())
    # parameters in the same order and shapes as before (the attacks pair them by position)
    assert [n for n, _ in defended.named_parameters()] == [n for n, _ in unlearned.named_parameters()]
    assert list(defended.state_dict()) == list(unlearned.state_dict())
    # a plain model again (no pruning hooks or masks left behind)
    assert all(not hasattr(m, "weight_mask") for m, _ in D.prunable_weights(defended))


def test_update_space_pruning_zeroes_the_smallest_entries_of_the_update():
    original, unlearned = _pair()
    u = torch.cat([t.reshape(-1) for t in D.unlearning_update(original, unlearned)])
    defended = D.prune_model(original, unlearned, 0.9, space="update")
    seen = torch.cat([t.reshape(-1) for t in D.unlearning_update(original, defended)])
    assert int((seen == 0).sum()) >= round(0.9 * u.numel())
    kept = seen != 0
    assert torch.allclose(seen[kept], u[kept], atol=1e-7)   # the survivors are the update's own entries
    assert float(u[kept].abs().min()) >= float(u[~kept].abs().max()) - 1e-7  # and its largest
    assert torch.equal(parameter_vector(D.prune_model(original, unlearned, 0.0, space="update")),
                       parameter_vector(unlearned))
    with pytest.raises(CourseError, match="pruning space"):
        D.prune_model(original, unlearned, 0.5, space="weights")


# --------------------------------------------------------------------------- fine-tuning / label-only

def test_finetune_changes_the_model_and_needs_data():
    original, unlearned = _pair()
    data = _data()
    defended = D.finetune_model(original, unlearned, 1e-2, data=data, seed=0)
    assert not state_equal(defended, unlearned)
    assert float((parameter_vector(defended) - parameter_vector(unlearned)).norm()) > 1e-4
    assert state_equal(D.finetune_model(original, unlearned, 0.0, data=data), unlearned)
    with pytest.raises(CourseError, match="additional samples"):
        D.finetune_model(original, unlearned, 1e-3)


def test_label_only_leaves_weights_alone():
    original, unlearned = _pair()
    defended = D.apply_defense("label-only", original, unlearned, 1)
    assert state_equal(defended, unlearned) and defended is not unlearned
    assert D.get_defense("label-only").api == "labels"


# --------------------------------------------------------------------------- errors and registry

@pytest.mark.parametrize("name,strength", [("obfuscation", -0.1), ("obfuscation", float("nan")),
                                           ("pruning", 1.0), ("pruning", -0.2), ("finetune", -1e-3),
                                           ("finetune", 5.0), ("label-only", 0.5), ("obfuscation", "x")])
def test_bad_strength_raises_course_error(name, strength):
    original, unlearned = _pair()
    with pytest.raises(CourseError):
        D.apply_defense(name, original, unlearned, strength, **({"data": _data()} if name == "finetune" else {}))


def test_unknown_defense_and_mismatched_models():
    original, _ = _pair()
    with pytest.raises(CourseError, match="Choose one of"):
        D.get_defense("dropout")
    other = build_model("convnet", (1, 12, 12), 10, width=8)
    with pytest.raises(CourseError, match="same architecture"):
        D.obfuscate(original, other, 0.001, space="parameters")


def test_registry_has_the_papers_grids():
    assert D.get_defense("obfuscation").paper_strengths == (0.001, 0.003, 0.005, 0.007)
    assert D.get_defense("pruning").paper_strengths == (0.7, 0.8, 0.9)
    assert D.get_defense("finetune").paper_strengths == (1e-4, 5e-4, 1e-3, 5e-3, 1e-2)
    assert set(D.PARAMETER_DEFENSES) <= set(D.DEFENSES)


def test_accuracy_ratio_is_one_for_identical_models_and_drops_for_heavy_pruning():
    from course_lib.train import prepare_pipeline

    pipe = prepare_pipeline(profile="quick", progress=False)
    assert D.accuracy_ratio(pipe.deployed, pipe.deployed, pipe.test) == pytest.approx(1.0)
    pruned = D.prune_model(pipe.deployed, pipe.deployed, 0.95)
    assert D.accuracy_ratio(pruned, pipe.deployed, pipe.test) < 0.5


# --------------------------------------------------------------------------- evaluation (quick versions of the bars)

def test_config_profiles_and_errors():
    from course_lib.experiments.defense_evaluation import COURSE_CLIP_NORM, COURSE_GRIDS, PAPER_GRIDS, DefenseConfig

    quick = DefenseConfig.for_profile("quick")
    assert quick.grids == COURSE_GRIDS and quick.clip_norm == COURSE_CLIP_NORM and quick.pruning_space == "update"
    paper = DefenseConfig.paper("standard")
    assert paper.grids == PAPER_GRIDS and paper.clip_norm == 1.2 and paper.pruning_space == "parameters"
    assert paper.grid()["obfuscation"] == (0.001, 0.003, 0.005, 0.007) and paper.noise_reading == "variance"
    assert DefenseConfig.paper("quick").grid() == {n: (D.get_defense(n).paper_strengths[-1],) for n in D.PARAMETER_DEFENSES}
    assert DefenseConfig.for_profile("full").samples == 100
    with pytest.raises(CourseError):
        DefenseConfig.for_profile("quick", samples=0)
    with pytest.raises(CourseError):
        DefenseConfig.for_profile("quick", grids=(("dropout", (0.1,)),))
    with pytest.raises(CourseError):
        DefenseConfig.for_profile("quick", sigma=3)
    with pytest.raises(CourseError, match="pruning space"):
        DefenseConfig.for_profile("quick", pruning_space="weights")


def test_course_grid_degrades_the_recovery_gradually(results_root, monkeypatch):
    """Quick version of the bar: on the course's grid each defense has a setting that lowers the mean
    recovery PSNR by 1-5 dB, its curve has >= 3 distinct points, clipping binds, and the strongest
    setting (one of the paper's values for obfuscation and fine-tuning) kills the attack. Which grid
    point lands in 1-5 dB moves with the float summation order (one digit is recovered), so every
    grid spans from settings that leave the attack intact to settings that kill it, and the test fixes
    the thread count (the order), so that it checks the same numbers in every run of the suite.
    """
    from course_lib.experiments.defense_evaluation import run_defenses

    monkeypatch.setenv("COURSE_THREADS", "1")  # bit-reproducible at a fixed thread count
    # chapter 6's recovery part, with its arguments, written where chapter 6 reads it
    result = run_defenses("mnist-5k", profile="quick", seed=6, attacks=("recover",), out=results_root / "defend",
                          progress=False)
    assert result.cost["recovery_rows_computed"] == len(result.recovery), "rows from an earlier run: delete them"
    assert result.baseline_psnr() >= 12.0
    table = result.table()
    for name in D.PARAMETER_DEFENSES:
        drops = table[table.defense == name]["PSNR drop (dB)"]
        assert ((drops >= 1.0) & (drops <= 5.0)).any(), (name, drops.tolist())
        assert result.curve_points(name) >= 3, name
        assert result.psnr_drop(name) >= 4.0, (name, result.psnr_drop(name))
    assert (table[table.defense == "obfuscation"]["clipping binds"] == "1/1").all()
    payload = result.to_dict()
    assert set(payload["psnr_drop_at_strongest"]) == set(D.PARAMETER_DEFENSES)
    import json

    json.dumps(payload)
    assert result.image_grid() is not None and result.image_grid(sample=None) is not None and result.plot() is not None


def test_label_only_answers_leave_the_probability_attack_nothing():
    from course_lib.experiments.defense_evaluation import DefenseConfig, run_defenses

    cfg = DefenseConfig.for_profile("quick", grids=(("obfuscation", (0.007,)),))
    result = run_defenses(profile="quick", seed=0, attacks=("infer-label",), config=cfg, progress=False)
    k = len(result.settings["label_classes"])
    # undefended, the attack names the unlearned class far above chance: at least 2 of the k = 3 classes
    # (a guess among 10 classes gets 2 of 3 with probability 0.028). Which of the 3 it misses, if any,
    # moves with the float summation order (the thread count), so "all 3" would be a coin toss.
    assert result.label_accuracy("none", 0.0, "probs") >= 2 / 3 - 1e-9
    lo = [r for r in result.labels if r["defense"] == "label-only" and r["attack"] == "probs"][0]
    assert lo["informative"] == 0  # every class scores 0: one-hot answers carry no confidence drop
    assert lo["accuracy_ratio"] == 1.0
    adaptive = result.label_accuracy("label-only", 1.0, "labels")
    assert 0.0 <= adaptive <= 1.0 and len(result.labels) == 6
    assert result.label_table().shape[0] == 6 and k == 3


def test_cli_defend_rejects_bad_input(capsys):
    from course_lib.cli import main

    assert main(["defend", "--defense", "pruning", "--strength", "1.5", "--profile", "quick"]) == 2
    assert "pruning share p" in capsys.readouterr().err
    assert main(["defend", "--defense", "label-only", "--strength", "0.5", "--profile", "quick"]) == 2
    assert main(["defend", "--defense", "dropout", "--strength", "0.1"]) == 2  # a usage error: exit code 2


def test_cli_defend_label_only_json(capsys, tmp_path):
    import json

    from course_lib.cli import main

    code = main(["defend", "--defense", "label-only", "--strength", "1", "--attack", "infer-label",
                 "--profile", "quick", "--out", str(tmp_path), "--json"])
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    rows = {(r["defense"], r["attack"]): r for r in payload["labels"]}
    assert rows[("label-only", "probs")]["informative"] == 0
    assert rows[("none", "probs")]["accuracy"] >= 2 / 3 - 1e-9   # 2 of 3 classes: see the test above
    assert payload["summary"][0]["defense"] == "none"


def test_recovery_rows_are_written_as_computed_and_a_rerun_computes_only_new_strengths(tmp_path):
    from course_lib.experiments.defense_evaluation import DefenseConfig, run_defenses
    from course_lib.results import read_rows

    cfg = DefenseConfig.for_profile("quick", grids=(("pruning", (0.5,)),), restarts=1, iterations=5,
                                    feature_iterations=5, sharpen_iterations=5)
    kwargs = dict(profile="quick", seed=6, attacks=("recover",), config=cfg, out=tmp_path, progress=False)
    first = run_defenses(**kwargs)
    (path,) = tmp_path.glob("defenses-*.jsonl")
    assert first.cost["recovery_rows_computed"] == 2 and len(read_rows(path)) == 2  # the baseline and p = 0.5
    again = run_defenses(strengths={"pruning": [0.5, 0.9]}, **kwargs)
    assert again.cost["recovery_rows_computed"] == 1 and len(read_rows(path)) == 3
    for key in [("none", 0.0), ("pruning", 0.5)]:
        assert torch.equal(again.images[key], first.images[key])
    assert [r["psnr"] for r in again.recovery[:2]] == [r["psnr"] for r in first.recovery]
    assert run_defenses(strengths={"pruning": [0.9]}, **kwargs).cost["recovery_rows_computed"] == 0
