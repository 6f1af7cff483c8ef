"""RUB image-to-image (chapter 7): the inpainter, its unlearning, the mapping attack, the scores, the benchmark and its CLI.

Quick profile (scikit-learn's 8x8 digits). The benchmark tests share the cached original
inpainter, retrained control and evaluation classifier with chapter 7 (same configuration).
"""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import linalg

from course_lib.attacks.uma_i2i import UNBOUNDED, inpainting_mapping_attack, relative_encoding_distance
from course_lib.cache import state_equal
from course_lib.cli import main
from course_lib.data import load
from course_lib.errors import CourseError
from course_lib.evaluator import evaluation_classifier
from course_lib.experiments.rub_inpainting import (DEFAULT_EPS, I2IConfig, check_request, eps_label, prepare_i2i,
                                                   run_rub_i2i)
from course_lib.generation_metrics import FrechetReference, classifier_accuracy, inception_score
from course_lib.models.inpainter import MaskSpec, apply_mask, build_inpainter, hole_mse, inpaint
from course_lib.results import read_rows
from course_lib.unlearn import I2I_METHODS
from course_lib.unlearn.i2i import inpainting_saliency_mask


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def quick_setup():
    """The chapter's quick setting (cached models shared with chapter 7)."""
    return prepare_i2i(config=I2IConfig.for_profile("quick"), progress=False)


@pytest.fixture(scope="module")
def digits_split(quick_setup):
    return quick_setup.train, quick_setup.forget, quick_setup.retain


@pytest.fixture(scope="module")
def small_inpainter(quick_setup):
    """The quick profile's original inpainter on the digits (cached; never modified by the tests)."""
    return quick_setup.original


# --------------------------------------------------------------------------- the inpainter

def test_mask_is_the_centre_square_plus_random_patches():
    spec = MaskSpec(hole=4, patch=2, patch_share=0.25)
    masks = spec.fixed(2000, 8, 8, seed=0)
    assert masks.shape == (2000, 1, 8, 8)
    assert bool((masks[:, :, 2:6, 2:6] == 1).all()), "the centre square must always be missing"
    outside = masks.clone()
    outside[:, :, 2:6, 2:6] = float("nan")
    share = float(torch.nanmean(outside))
    assert 0.22 < share < 0.28
    assert torch.equal(masks, spec.fixed(2000, 8, 8, seed=0)) and not torch.equal(masks, spec.fixed(2000, 8, 8, seed=1))
    for bad in (MaskSpec(hole=0, patch_share=0.0), MaskSpec(hole=-1), MaskSpec(patch_share=1.0)):
        with pytest.raises(CourseError):
            bad.check(28)
    with pytest.raises(CourseError, match="smaller than the image"):
        MaskSpec(hole=8, patch=2).check(8)
    with pytest.raises(CourseError, match="divide"):
        MaskSpec(hole=4, patch=3).check(8)


def test_inpainter_is_a_decoder_after_an_encoder_and_learns_to_fill_the_hole(digits_split, small_inpainter):
    train, _, _ = digits_split
    model = small_inpainter
    x = train.x[:32]
    mask = model.mask_spec.fixed(32, 8, 8, seed=3)
    x_in = apply_mask(x, mask)
    assert x_in.shape == (32, 2, 8, 8) and bool((x_in[:, :1][mask.bool()] == 0).all())
    z = model.encode(x_in)
    assert z.shape == (32, model.latent)
    assert torch.allclose(model.decode(z), model(x_in))
    out = inpaint(model, x, mask)
    assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
    # the trained model fills the hole far better than the mean training image does
    mean_image = train.x.mean(0, keepdim=True).expand_as(x)
    assert float(hole_mse(out, x, mask).mean()) < 0.6 * float(hole_mse(mean_image, x, mask).mean())
    with pytest.raises(CourseError, match="square"):
        build_inpainter((1, 8, 12))


# --------------------------------------------------------------------------- the methods

def test_i2i_trains_the_encoder_only_and_moves_forget_encodings_towards_noise(digits_split, small_inpainter):
    _, forget, retain = digits_split
    model = small_inpainter
    unlearned = I2I_METHODS.get("I2I")(model, forget, retain, epochs=2, seed=0)
    assert state_equal(unlearned.decoder, model.decoder), "Li et al.'s method must leave the decoder unchanged"
    assert not state_equal(unlearned.encoder, model.encoder)
    assert unlearned is not model
    mf = model.mask_spec.fixed(len(forget), 8, 8, seed=1)
    mr = model.mask_spec.fixed(len(retain), 8, 8, seed=2)
    with torch.no_grad():
        moved_f = relative_encoding_distance(unlearned.encode(apply_mask(forget.x, mf)), model.encode(apply_mask(forget.x, mf)))
        moved_r = relative_encoding_distance(unlearned.encode(apply_mask(retain.x, mr)), model.encode(apply_mask(retain.x, mr)))
    assert float(moved_f.mean()) > 2 * float(moved_r.mean()), "the forget encodings must move more than the retain ones"


def test_salun_moves_only_the_salient_half_of_the_weights(digits_split, small_inpainter):
    _, forget, retain = digits_split
    model = small_inpainter
    saliency = inpainting_saliency_mask(model, forget, 0.5, seed=0)
    share = sum(int(m.sum()) for m in saliency) / sum(m.numel() for m in saliency)
    assert abs(share - 0.5) < 0.01
    unlearned = I2I_METHODS.get("SalUn")(model, forget, retain, epochs=1, seed=0)
    moved = 0
    for p0, p1, keep in zip(model.parameters(), unlearned.parameters(), saliency):
        assert torch.equal(p0[~keep], p1[~keep]), "a weight outside the saliency mask moved"
        moved += int((p0[keep] != p1[keep]).sum())
    assert moved > 0.5 * sum(int(m.sum()) for m in saliency)
    assert not state_equal(unlearned.decoder, model.decoder), "SalUn may move the decoder too"


def test_methods_reject_what_they_cannot_unlearn(digits_split, small_inpainter):
    _, forget, retain = digits_split
    with pytest.raises(CourseError, match="forget set is empty"):
        I2I_METHODS.get("I2I")(small_inpainter, forget.subset([]), retain)
    with pytest.raises(CourseError, match="inpainter"):
        I2I_METHODS.get("SalUn")(torch.nn.Linear(2, 2), forget, retain)
    with pytest.raises(CourseError, match="must take"):
        I2I_METHODS.register("bad")(lambda model: model)


# --------------------------------------------------------------------------- the attack

def test_attack_respects_the_radius_and_never_touches_the_hole(digits_split, small_inpainter):
    _, forget, retain = digits_split
    model = small_inpainter
    unlearned = I2I_METHODS.get("I2I")(model, forget, retain, epochs=2, seed=0)
    x = forget.x[:40]
    mask = model.mask_spec.fixed(40, 8, 8, seed=1)
    attack = inpainting_mapping_attack(unlearned, model, x, mask, eps=8 / 255, steps=10)
    delta = attack.masked_adv - x * (1 - mask)
    assert float(delta.abs().max()) <= 8 / 255 + 1e-6
    assert bool((attack.masked_adv[mask.expand_as(x).bool()] == 0).all()), "delta must stay out of the hole"
    assert float(attack.masked_adv.min()) >= 0 and float(attack.masked_adv.max()) <= 1
    assert bool((attack.mse_after <= attack.mse_before + 1e-7).all()) and float(attack.mse_after.mean()) < float(attack.mse_before.mean())
    assert attack.cost()["gradient_evaluations"] == 400
    free = inpainting_mapping_attack(unlearned, model, x, mask, eps=UNBOUNDED, steps=10)
    assert float(free.mse_after.mean()) < float(attack.mse_after.mean())
    none = inpainting_mapping_attack(unlearned, model, x, mask, eps=0.0)
    assert none.steps == 0 and torch.equal(none.output_after, none.output_before)
    same = inpainting_mapping_attack(model, model, x, mask, eps=8 / 255, steps=3)
    assert float(same.mse_before.max()) == 0.0 and float(same.encoding_before.max()) == 0.0
    anywhere = inpainting_mapping_attack(unlearned, model, x, mask, eps=8 / 255, steps=5, region="all")
    assert float(anywhere.masked_adv[mask.expand_as(x).bool()].abs().max()) > 0
    for bad in (dict(eps=1.5), dict(eps=-0.1), dict(eps=0.1, region="hole")):
        with pytest.raises(CourseError):
            inpainting_mapping_attack(unlearned, model, x, mask, **bad)


# --------------------------------------------------------------------------- the scores

@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")   # SciPy's reference on 150 images in 256 dims
def test_fd_and_is_of_the_course_classifier():
    evaluator = evaluation_classifier("digits", profile="quick", progress=False)
    test = load("digits", "test")
    real, other = test.x[:150], test.x[150:300]
    ref = FrechetReference(evaluator, real)
    assert ref.distance(real) < 1e-3 * max(1.0, ref.distance(other))
    noise = torch.rand_like(other)
    assert ref.distance(noise) > 5 * ref.distance(other)
    # torchmetrics' value against the textbook formula with SciPy's matrix square root
    f1, f2 = evaluator.features(real).numpy(), evaluator.features(other).numpy()
    mu1, mu2, s1, s2 = f1.mean(0), f2.mean(0), np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    expected = float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real))
    assert math.isclose(ref.distance(other), expected, rel_tol=1e-3)
    is_mean, is_std = inception_score(evaluator, test.x, splits=5)
    assert 5.0 < is_mean <= 10.0 and is_std >= 0
    assert inception_score(evaluator, test.x[test.y == 3], splits=5)[0] < 2.0, "one class alone scores near 1"
    assert classifier_accuracy(evaluator, test.x, test.y) == pytest.approx(evaluator.test_accuracy)
    with pytest.raises(CourseError, match="shape"):
        ref.distance(torch.rand(10, 1, 28, 28))


# --------------------------------------------------------------------------- the benchmark (quick)

@pytest.fixture(scope="module")
def quick_result(quick_setup, results_root, computed_here):
    """Chapter 7's quick benchmark, with its arguments, written where chapter 7 reads it."""
    out = results_root / "rub"
    result = run_rub_i2i(setup=quick_setup, methods=["I2I", "SalUn", "retrain"], eps=DEFAULT_EPS,
                         seeds=quick_setup.config.seeds, out=out, progress=False)
    computed_here(result)
    return result, out


def test_quick_unlearning_forgets_the_forget_classes_and_keeps_the_retain_classes(quick_result):
    """The first bar at quick: F-FD >= 2x the original's, C's accuracy on F down >= 40 points, R-FD <= 1.5x."""
    result, _ = quick_result
    bars = result.bars()
    for method in ("I2I", "SalUn"):
        rec = bars[method]
        assert rec["fd_F_ratio"] >= 2, (method, rec)
        assert rec["accuracy_drop_points"] >= 40, (method, rec)
        assert rec["fd_R_ratio"] <= 1.5, (method, rec)
    assert all(r["decoder_unchanged"] for r in result.rows if r["method"] == "I2I")
    assert not any(r["encoder_unchanged"] for r in result.rows if r["method"] == "I2I")


def test_quick_attack_maps_part_of_the_forgotten_content_back_and_not_from_the_retrained_model(quick_result):
    """The second bar's quantities at quick: the share of I2I's F-FD gap the attack closes grows with the
    radius; the unbounded attack brings I2I's forget reconstructions back far more than the retrained
    control's (which never saw them). RUB's 'half of the gap at 8/255' is *not* reached on the digits
    (the issue's report gives the measured shares)."""
    result, _ = quick_result
    i2i = result.bars()["I2I"]
    assert 0 < i2i["gap_closed@8/255"] <= i2i["gap_closed@16/255"] + 0.02
    assert i2i["gap_closed@unbounded"] > i2i["gap_closed@16/255"] + 0.1
    v = result.value
    i2i_gain = v("I2I", UNBOUNDED, "F", "accuracy") - v("I2I", 0.0, "F", "accuracy")
    retrain_gain = v("retrain", UNBOUNDED, "F", "accuracy") - v("retrain", 0.0, "F", "accuracy")
    assert i2i_gain > 0.15 and retrain_gain < i2i_gain - 0.1
    # the attacked encoding comes closer to the original's; D falls
    lesson = result.lesson().set_index(["method", "eps"])
    assert lesson.loc[("I2I", "unbounded"), "encoding distance after"] < lesson.loc[("I2I", "unbounded"), "encoding distance before"]
    assert lesson.loc[("I2I", "8/255"), "D after"] < lesson.loc[("I2I", "8/255"), "D = MSE to f(T(x)) before"]


def test_benchmark_rows_are_written_as_computed_and_a_rerun_resumes(quick_setup, tmp_path):
    seen = []

    def stop_after_two(row):
        seen.append(row)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_rub_i2i(setup=quick_setup, methods=["I2I"], eps=[0.0, 8 / 255], out=tmp_path, progress=False,
                    on_row=stop_after_two)
    files = list(tmp_path.glob("rub-i2i-*.jsonl"))
    assert len(files) == 1 and len(read_rows(files[0])) == 2          # original + I2I at eps 0, on disk
    again = run_rub_i2i(setup=quick_setup, methods=["I2I"], eps=[0.0, 8 / 255], out=tmp_path, progress=False)
    assert again.computed_rows == 1 and len(read_rows(files[0])) == 3   # only I2I at 8/255 was missing
    keys = [(r["method"], r["seed"], eps_label(r["eps"])) for r in read_rows(files[0])]
    assert keys == [("original", 0, "0"), ("I2I", 0, "0"), ("I2I", 0, "8/255")]
    assert run_rub_i2i(setup=quick_setup, methods=["I2I"], eps=[0.0, 8 / 255], out=tmp_path,
                       progress=False).computed_rows == 0


def test_cli_runs_resumes_and_prints_json(quick_setup, tmp_path, capsys):
    args = ["rub", "--task", "i2i", "--profile", "quick", "--methods", "I2I", "--eps", "0,unbounded",
            "--out", str(tmp_path), "--json"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["computed_rows"] == 3 and first["eps"] == [0.0, 1.0]
    assert {r["method"] for r in first["table"]} == {"original", "I2I"}
    assert Path(first["files"]["json"]).exists() and Path(first["files"]["figure"]).exists()
    assert main(args) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["computed_rows"] == 0 and second["summary"] == first["summary"]
    assert main(args[:-1]) == 0
    text = capsys.readouterr().out
    assert "FD (course classifier)" in text and "gap closed by the attack" in text


@pytest.mark.parametrize("extra, message", [
    (["--methods", "NoSuchMethod"], "Unknown image-to-image unlearning method"),
    (["--eps", "1.5"], "eps"),
    (["--eps", "-8/255"], "eps"),
    (["--eps", "far"], "cannot read"),
    (["--forget-classes", ""], "at least one integer"),
    (["--retain-classes", ","], "at least one integer"),
    (["--forget-classes", "12"], "Unknown class"),
    (["--forget-classes", "3", "--retain-classes", "3,4"], "both forgotten and retained"),
    (["--mia-seeds", "2"], "does not apply to --task i2i"),
])
def test_cli_rejects_bad_input_with_exit_2_and_writes_nothing(tmp_path, capsys, extra, message):
    out = tmp_path / "never"
    assert main(["rub", "--task", "i2i", "--profile", "quick", "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()


def test_recipe_checks_its_options_before_training(tmp_path):
    with pytest.raises(CourseError, match="retain class list is empty"):
        run_rub_i2i("digits", retain_classes=[], out=tmp_path)
    with pytest.raises(CourseError, match="Hyper-parameters given for method"):
        run_rub_i2i("digits", methods=["I2I"], hyper_parameters={"SalUn": {"epochs": 1}}, out=tmp_path)
    with pytest.raises(CourseError, match="has no hyper-parameter"):
        run_rub_i2i("digits", methods=["I2I"], hyper_parameters={"I2I": {"momentum": 0.9}}, out=tmp_path)
    with pytest.raises(CourseError, match="Unknown class"):
        check_request("digits", forget_classes=[0, 10])
    assert list(tmp_path.iterdir()) == []
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    with pytest.raises(CourseError, match="is a file"):   # checked before anything is trained
        run_rub_i2i("digits", methods=["I2I"], out=a_file, config=I2IConfig.for_profile("quick", epochs=1))
