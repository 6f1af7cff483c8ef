"""The command line: JSON output, and user errors exit 2 without a traceback."""
import json
import subprocess
import sys


from course_lib.cli import main


def run_cli(*args, env_data_dir=None):
    import os

    env = dict(os.environ, COURSE_PROFILE="quick")
    if env_data_dir:
        env["COURSE_DATA_DIR"] = str(env_data_dir)
    return subprocess.run([sys.executable, "-m", "course_lib", *args], capture_output=True, text=True,
                          env=env, timeout=600)


def test_info_json_lists_embedded_datasets_as_available():
    proc = run_cli("info", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    available = {d["name"] for d in info["datasets"] if d["available"]}
    assert {"mnist-5k", "digits", "german-credit"} <= available
    assert info["profile"] == "quick" and info["device"] in ("cpu", "cuda", "mps")


def test_download_offline_exits_2_with_advice_and_no_traceback(tmp_path):
    proc = run_cli("data", "download", "cifar10", env_data_dir=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "course-lib data download cifar10" in proc.stderr and "internet" in proc.stderr
    assert not (tmp_path / "cifar10").exists()  # nothing half-downloaded is left behind


def test_unknown_dataset_exits_2(capsys):
    assert main(["train", "--dataset", "imagenet", "--profile", "quick"]) == 2
    err = capsys.readouterr().err
    assert "Unknown dataset" in err and "Traceback" not in err


def test_bad_profile_is_a_usage_error():
    assert main(["train", "--profile", "huge"]) == 2  # a usage error: exit code 2


def test_train_json_reports_accuracies_and_cache_path():
    proc = run_cli("train", "--dataset", "mnist-5k", "--model", "convnet", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["pretrained_test_accuracy"] >= 0.9 and out["cache_paths"]["deployed"].endswith(".safetensors")
