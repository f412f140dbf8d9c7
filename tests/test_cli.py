"""The ``unet`` command: info, train (built-in task, every --task on files, resume, mistakes) and predict."""
import io
import subprocess
import sys

import numpy as np
import pytest

import unet
from unet.cli import main, sine_delay_task
from unet.models.trainer import read_checkpoint

TINY = ["--hidden", "16", "--embedding", "8", "--batch-size", "16", "--no-progress"]


def run(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "unet", *args], capture_output=True, text=True, input=stdin,
                          timeout=120)


def call(capsys, *argv, stdin=None, monkeypatch=None):
    """main(argv) in this process: (exit code, stdout, stderr)."""
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def weights(path):
    return {k: v.numpy() for k, v in read_checkpoint(path)["model"]["state"].items()}


# ---------------------------------------------------------------- info

def test_info_command():
    result = run("info")
    assert result.returncode == 0, result.stderr
    for line in ("unet", "CUDA kernels", "CPU features", "OpenMP threads", "GPUs", "torch"):
        assert line in result.stdout


def test_info_returns_a_report(capsys):
    report = unet.info()
    assert capsys.readouterr().out == ""  # quiet unless asked
    assert report["version"] == unet.__version__
    assert isinstance(report["cuda_compiled"], bool) and isinstance(report["gpus"], list)
    assert set(report["packages"]) >= {"cupy", "mpi4py", "ml_dtypes", "torch"}
    assert report["packages"]["ml_dtypes"] is not None
    unet.info(verbose=True)
    assert "OpenMP threads" in capsys.readouterr().out


# ---------------------------------------------------------------- the built-in task

def test_train_default_task_end_to_end_then_predict(tmp_path):
    out = tmp_path / "dates"
    result = run("train", "--examples", "300", "--epochs", "1", "--hidden", "32", "--out", str(out))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any("built-in dates task" in line and "270 training / 30 held-out" in line for line in lines)
    assert any(line.startswith("model: Seq2Seq") and "on cpu" in line for line in lines) or unet.cuda_available()
    epoch = next(line for line in lines if line.startswith("epoch 1/1"))
    assert "loss" in epoch and "exact match" in epoch and "BLEU" in epoch
    assert any(line.startswith("done: held-out exact match") and "s CPU" in line for line in lines)
    assert f"saved {out / 'checkpoint.unet'}" in result.stdout
    assert "epoch 1/1:" in result.stderr  # the tqdm bar
    state = read_checkpoint(out / "checkpoint.unet")
    assert state["extra"]["task"] == "translate" and state["trainer"]["epoch"] == 1
    assert {"model", "optimizer", "scheduler", "rng", "data"} <= set(state)

    predicted = run("predict", "--checkpoint", str(out), stdin="3 March 1998\n\nthe 1st of May 2001\n")
    assert predicted.returncode == 0, predicted.stderr
    assert len(predicted.stdout.splitlines()) == 3


def test_train_help_documents_the_formats():
    result = run("train", "--help")
    assert result.returncode == 0
    for text in ("source<TAB>target", "text<TAB>label", "one text a line", "one tag per token", "--resume",
                 "--amp", "--gpus", "checkpoint.unet"):
        assert text in result.stdout


# ---------------------------------------------------------------- every task on files

def write(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    rng = np.random.default_rng(0)
    words = ["good", "great", "fine", "bad", "awful", "poor", "the", "film", "was", "very"]
    classify = []
    for _ in range(80):
        text = " ".join(rng.choice(words, 5))
        label = "pos" if sum(w in ("good", "great", "fine") for w in text.split()) >= \
            sum(w in ("bad", "awful", "poor") for w in text.split()) else "neg"
        classify.append(f"{text}\t{label}")
    tag, lm = [], []
    for _ in range(60):
        tokens = [str(rng.integers(100)) if rng.random() < 0.4 else str(rng.choice(words)) for _ in range(4)]
        tag.append(" ".join(tokens) + "\t" + " ".join("NUM" if t.isdigit() else "WORD" for t in tokens))
        lm.append(" ".join(rng.choice(words, 4)))
    translate = [f"{s}\t{t}" for s, t in unet.data.dates_task(80, seed=1)]
    return {"translate": write(d / "pairs.tsv", translate), "classify": write(d / "labels.tsv", classify),
            "lm": write(d / "lines.txt", lm), "tag": write(d / "tags.tsv", tag),
            "classify_valid": write(d / "labels_valid.tsv", classify[:20])}


@pytest.mark.parametrize("task", ["translate", "classify", "lm", "tag"])
def test_train_each_task_then_predict(task, files, tmp_path, capsys, monkeypatch):
    out = tmp_path / task
    code, stdout, stderr = call(capsys, "train", "--task", task, "--data", files[task], "--epochs", "1",
                                "--out", str(out), *TINY)
    assert code == 0, stderr
    assert "epoch 1/1" in stdout and "held-out loss" in stdout and f"saved {out / 'checkpoint.unet'}" in stdout
    headline = {"translate": "exact match", "classify": "accuracy", "lm": "perplexity", "tag": "accuracy"}[task]
    assert f"done: held-out {headline}" in stdout

    inputs = {"translate": ["3 March 1998", "", "12/10/2001"], "classify": ["good film", "awful", ""],
              "lm": ["the film", ""], "tag": ["the 12 film", "42", ""]}[task]
    extra = ["--max-length", "5", "--top-k", "3", "--temperature", "0.8"] if task == "lm" else []
    code, stdout, stderr = call(capsys, "predict", "--checkpoint", str(out), *extra,
                                stdin="".join(line + "\n" for line in inputs), monkeypatch=monkeypatch)
    assert code == 0, stderr
    predictions = stdout.split("\n")[:-1]
    assert len(predictions) == len(inputs)
    if task == "classify":
        assert set(predictions) <= {"pos", "neg"}
    if task == "tag":
        assert [len(p.split()) for p in predictions] == [3, 1, 0]
        assert set(" ".join(predictions).split()) <= {"NUM", "WORD"}
    if task == "lm":
        assert all(len(p.split()) <= 5 for p in predictions)


def test_train_with_a_valid_file_and_word_tokenizer(files, tmp_path, capsys):
    code, stdout, stderr = call(capsys, "train", "--task", "classify", "--data", files["classify"], "--valid",
                                files["classify_valid"], "--tokenizer", "bpe", "--vocab-size", "300",
                                "--epochs", "1", "--out", str(tmp_path / "c"), *TINY)
    assert code == 0, stderr
    assert "80 training / 20 held-out examples" in stdout and "bpe tokens" in stdout


# ---------------------------------------------------------------- resume

def test_resume_continues_bitwise_like_one_run(tmp_path, capsys):
    common = ["--examples", "200", "--epochs", "2", "--dropout", "0.1", *TINY]
    assert call(capsys, "train", *common, "--out", str(tmp_path / "straight"))[0] == 0
    code, stdout, _ = call(capsys, "train", *common, "--stop-after", "1", "--out", str(tmp_path / "split"))
    assert code == 0 and "epoch 1/2" in stdout and "epoch 2/2" not in stdout and "--resume" in stdout
    code, stdout, stderr = call(capsys, "train", "--resume", "--out", str(tmp_path / "split"))
    assert code == 0, stderr
    assert "resuming" in stdout and "epoch 2/2" in stdout and "epoch 1/2" not in stdout
    a = weights(tmp_path / "straight" / "checkpoint.unet")
    b = weights(tmp_path / "split" / "checkpoint.unet")
    assert a.keys() == b.keys() and all(a[k].tobytes() == b[k].tobytes() for k in a)

    code, stdout, _ = call(capsys, "train", "--resume", "--out", str(tmp_path / "split"))
    assert code == 0 and "nothing to do" in stdout
    code, _, stderr = call(capsys, "train", "--resume", "--hidden", "64", "--out", str(tmp_path / "split"))
    assert code == 2 and "--hidden 64 (the run has 16)" in stderr
    code, _, stderr = call(capsys, "train", *common, "--out", str(tmp_path / "split"))
    assert code == 2 and "--resume" in stderr and "--overwrite" in stderr
    code, stdout, _ = call(capsys, "train", "--resume", "--epochs", "3", "--out", str(tmp_path / "split"))
    assert code == 0 and "epoch 3/3" in stdout


# ---------------------------------------------------------------- mistakes: a message, never a traceback

@pytest.mark.parametrize("content, expected", [
    (None, "no such file"),
    ("", "no examples"),
    ("\n   \n", "no examples"),
    ("a\tb\nonly one field\n", "line 2: expected 2 tab-separated fields"),
    ("a\tb\tc\n", "line 1: expected 2 tab-separated fields"),
])
def test_bad_data_files_are_named(content, expected, tmp_path, capsys):
    path = tmp_path / "data.tsv"
    if content is not None:
        path.write_text(content)
    code, _, stderr = call(capsys, "train", "--task", "classify", "--data", str(path), "--out", str(tmp_path / "o"))
    assert code == 2
    assert str(path) in stderr and expected in stderr and "Traceback" not in stderr


def test_bad_tag_lines_and_unknown_labels_are_named(tmp_path, capsys):
    tags = write(tmp_path / "t.tsv", ["a b\tX Y", "a b c\tX Y"])
    code, _, stderr = call(capsys, "train", "--task", "tag", "--data", tags, "--out", str(tmp_path / "o"))
    assert code == 2 and f"{tags}, line 2: 3 tokens but 2 tags" in stderr
    train = write(tmp_path / "c.tsv", ["a\tx", "b\ty"])
    valid = write(tmp_path / "v.tsv", ["a\tz"])
    code, _, stderr = call(capsys, "train", "--task", "classify", "--data", train, "--valid", valid,
                           "--out", str(tmp_path / "o"))
    assert code == 2 and valid in stderr and "'z'" in stderr


@pytest.mark.parametrize("argv, expected", [
    (["--gpus", "2"], "usable GPU(s)"),
    (["--task", "lm"], "needs --data"),
    (["--task", "tag", "--data", "x", "--tokenizer", "char"], "already split"),
    (["--resume"], "no checkpoint"),
])
def test_unavailable_or_inconsistent_options_exit_2(argv, expected, tmp_path, capsys):
    code, _, stderr = call(capsys, "train", *argv, "--out", str(tmp_path / "o"))
    assert code == 2 and expected in stderr


def test_predict_mistakes(tmp_path, capsys, monkeypatch):
    code, _, stderr = call(capsys, "predict", "--checkpoint", str(tmp_path / "nowhere"))
    assert code == 2 and "no checkpoint" in stderr
    (tmp_path / "checkpoint.unet").write_bytes(b"garbage")
    code, _, stderr = call(capsys, "predict", "--checkpoint", str(tmp_path))
    assert code == 2 and "checkpoint.unet" in stderr and "Traceback" not in stderr


def test_predict_names_misshaped_tensors(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert call(capsys, "train", "--examples", "60", "--epochs", "1", "--out", str(out), *TINY)[0] == 0
    path = out / "checkpoint.unet"
    state = read_checkpoint(path)
    state["model"]["state"]["output.weight"] = np.zeros((3, 3), np.float32)
    del state["model"]["state"]["output.bias"]
    unet.save(state, path)
    code, _, stderr = call(capsys, "predict", "--checkpoint", str(out), stdin="1 May 2000\n", monkeypatch=monkeypatch)
    assert code == 2
    assert "missing tensors: output.bias" in stderr and "mis-shaped tensors: output.weight (checkpoint (3, 3)" in stderr
    code, _, stderr = call(capsys, "predict", "--checkpoint", str(out), "--top-k", "2")
    assert code == 2 and "--top-k" in stderr and "translate" in stderr


@pytest.mark.parametrize("argv", [[], ["train", "--epochs", "0"], ["train", "--lr", "nan"], ["bench"],
                                  ["train", "--task", "nope"], ["predict"]])
def test_bad_command_lines_exit_with_usage(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2


def test_sine_delay_task_is_deterministic_and_delayed():
    x1, y1 = sine_delay_task(4, 20, delay=3, noise=0.0, rng=np.random.default_rng(0))
    x2, _ = sine_delay_task(4, 20, delay=3, noise=0.0, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(x1, x2)
    assert x1.shape == y1.shape == (4, 20, 1)
    np.testing.assert_allclose(y1[:, 3:], x1[:, :-3], atol=1e-6)  # without noise: y is x, 3 steps later
