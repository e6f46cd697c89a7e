"""``sweep`` on 120 synthetic training images: real worker processes sharing one storage (one thread each), a worker
killed with SIGKILL, the table against the runs' metrics.json, the best config, bad sweep files; and what the study's
grid needs (unshuffled folds, the custom CNN's initializers, Keras's RMSprop)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
import yaml
from sklearn.model_selection import KFold

from fmnist_lightning.commands.main import main
from fmnist_lightning.data import Validation
from support import error_line, sample_ids, write_dataset
from test_cv import FAST, LENET, QUIET  # seconds per fit: no sanity check, graph, latency or memory profile

HEARTBEAT = ["--heartbeat-interval", "1", "--grace-period", "3"]
GRID = """
sampler: grid
objective: {validation: kfold, folds: 2, shuffle: false}
fixed: {trainer.max_epochs: 1}
params:
  model.init_args.optimizer.init_args.lr: [0.01, 0.02]
  data.batch_size: [16, 32]
"""
# one quick point and one slow one, so that a worker can be killed while it trains
SLOW_POINT = """
sampler: grid
objective: split
params:
  trainer.max_epochs: [1, 25]
"""
LR, BATCH = "model.init_args.optimizer.init_args.lr", "data.batch_size"


def fit_args(root: Path) -> list[str]:
    data = ["--data.data_dir", str(root / "fmnist"), "--data.files.cache_dir", str(root / "cache")]
    return ["--config", LENET, *data, *QUIET, *FAST]


def worker(root: Path, sweep: str, name: str, *extra: str) -> subprocess.Popen:
    """A worker process, one thread, its output in ``<name>.log``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "fmnist_lightning", "sweep", "--sweep", sweep, *fit_args(root), *extra]
    log = (root / f"{name}.log").open("w")
    return subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)


def finish(process: subprocess.Popen, root: Path, name: str, timeout: float = 150) -> int:
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        code = process.wait()
    if code != 0:
        print((root / f"{name}.log").read_text()[-4000:])
    return code


def in_process(root: Path, args: list[str]) -> tuple[int, str, str]:
    stdout, stderr = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        patch.chdir(root)
        patch.setattr("sys.argv", ["fmnist"])  # LightningCLI warns when pytest's own arguments are there
        code = main(args)
    return code, stdout.getvalue(), stderr.getvalue()


def complete_points(study: optuna.Study) -> list[tuple]:
    return sorted(tuple(t.params.values()) for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE)


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two workers started together on the default SQLite storage, then the same command again (a resume)."""
    root = tmp_path_factory.mktemp("sweep")
    write_dataset(root / "fmnist")
    (root / "grid.yaml").write_text(GRID)
    started = time.perf_counter()
    workers = [worker(root, "grid.yaml", f"worker{k}", *HEARTBEAT) for k in range(2)]
    codes = [finish(process, root, f"worker{k}") for k, process in enumerate(workers)]
    seconds = time.perf_counter() - started
    folder = root / "tensorboard_logs" / "LeNet5_sweep" / "grid"
    study = optuna.load_study(study_name="grid", storage=f"sqlite:///{folder / 'study.db'}")
    return {"root": root, "codes": codes, "folder": folder, "study": study, "seconds": seconds}


def test_two_workers_complete_each_grid_point_once(grid_run):
    assert grid_run["codes"] == [0, 0]
    study = grid_run["study"]
    assert complete_points(study) == [(0.01, 16), (0.01, 32), (0.02, 16), (0.02, 32)]
    others = [t for t in study.trials if t.state != optuna.trial.TrialState.COMPLETE]
    # a worker that asked for a trial as the last point was taken is given a duplicate, which ends at once
    assert all(t.state == optuna.trial.TrialState.PRUNED and "duplicate_of" in t.user_attrs for t in others)
    assert len({t.user_attrs["worker"] for t in study.trials}) == 2  # both worked
    for trial in study.trials:
        if trial.state == optuna.trial.TrialState.COMPLETE:
            runs = trial.user_attrs["runs"]
            assert runs == [f"tensorboard_logs/LeNet5_sweep/grid/trial_{trial.number:03d}/version_{k}" for k in (0, 1)]
            config = yaml.safe_load((grid_run["root"] / runs[1] / "config.yaml").read_text())
            data, folds = config["data"], config["data"]["validation"]
            assert [folds[key] for key in ("protocol", "num_folds", "fold", "kfold_shuffle")] == ["kfold", 2, 1, False]
            assert (config["model"]["init_args"]["optimizer"]["init_args"]["lr"], data["batch_size"]) == tuple(
                trial.params.values()
            )


def test_table_matches_the_runs_metrics(grid_run):
    root, folder = grid_run["root"], grid_run["folder"]
    rows = list(csv.DictReader(io.StringIO((folder / "results.csv").read_text())))
    assert [int(row["rank"]) for row in rows] == [1, 2, 3, 4]
    values = [float(row["accuracy_pct"]) for row in rows]
    assert values == sorted(values, reverse=True)
    for row in rows:
        finals = [json.loads((root / run / "metrics.json").read_text())["final_val_acc"] for run in row["runs"].split()]
        assert float(row["accuracy_pct"]) == pytest.approx(100 * np.mean(finals), abs=6e-4)
        assert float(row["std_pct"]) == pytest.approx(100 * np.std(finals), abs=6e-4)
        trial = grid_run["study"].trials[int(row["trial"])]
        assert (float(row["lr"]), int(row["batch_size"])) == (trial.params[LR], trial.params[BATCH])
    best = rows[0]
    assert f"| 1 | {best['trial']} | {best['lr']} | {best['batch_size']} |" in (folder / "results.md").read_text()
    assert (folder / "results.png").stat().st_size > 10_000


def test_best_config_trains_and_a_rerun_resumes(grid_run):
    root, folder = grid_run["root"], grid_run["folder"]
    best = yaml.safe_load((folder / "best.yaml").read_text())
    study = grid_run["study"]
    assert (best["model"]["init_args"]["optimizer"]["init_args"]["lr"], best["data"]["batch_size"]) == tuple(
        study.best_trial.params.values()
    )
    code, _, _ = in_process(root, ["fit", "--config", str(folder / "best.yaml"), "--trainer.fast_dev_run", "true"])
    assert code == 0
    before = len(study.trials)
    code, stdout, _ = in_process(root, ["sweep", "--sweep", "grid.yaml", *fit_args(root)])  # all done: nothing runs
    assert code == 0 and "1. " in stdout
    assert len(optuna.load_study(study_name="grid", storage=study._storage).trials) == before


def test_a_killed_workers_trial_is_retried_by_the_other(tmp_path):
    write_dataset(tmp_path / "fmnist")
    (tmp_path / "slow.yaml").write_text(SLOW_POINT)
    journal = str(tmp_path / "journal.log")
    storage = ["--storage", journal, *HEARTBEAT, "--max-retry", "1"]
    workers = {k: worker(tmp_path, "slow.yaml", f"worker{k}", *storage) for k in range(2)}
    pids = {process.pid: k for k, process in workers.items()}
    deadline, victim = time.monotonic() + 90, None
    while victim is None and time.monotonic() < deadline:
        time.sleep(0.5)
        if not Path(journal).exists():
            continue
        study = optuna.load_study(study_name="slow", storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(journal)))  # fmt: skip
        for trial in study.get_trials(states=(optuna.trial.TrialState.RUNNING,)):
            if trial.params.get("trainer.max_epochs") == 25 and "worker" in trial.user_attrs:
                victim = (trial.number, int(trial.user_attrs["worker"].rsplit(":", 1)[1]))
    assert victim is not None, "no worker started the slow point"
    time.sleep(1)  # inside its fit
    number, pid = victim
    os.kill(pid, signal.SIGKILL)
    killed, survivor = pids[pid], 1 - pids[pid]
    assert workers[killed].wait(timeout=10) == -signal.SIGKILL
    assert finish(workers[survivor], tmp_path, f"worker{survivor}") == 0
    study = optuna.load_study(study_name="slow", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(journal)))  # fmt: skip
    assert study.trials[number].state == optuna.trial.TrialState.FAIL
    (retry,) = [t for t in study.trials if t.system_attrs.get("failed_trial") == number]
    assert retry.state == optuna.trial.TrialState.COMPLETE and retry.params == study.trials[number].params
    assert retry.user_attrs["worker"].endswith(f":{workers[survivor].pid}")
    assert complete_points(study) == [(1,), (25,)]
    assert retry.user_attrs["runs"] == [f"tensorboard_logs/LeNet5_sweep/slow/trial_{retry.number:03d}/version_0"]


def test_search_with_pruning(tmp_path):
    write_dataset(tmp_path / "fmnist")
    (tmp_path / "tpe.yaml").write_text(
        "sampler: {name: tpe, trials: 3, seed: 0, n_startup_trials: 1}\n"
        "pruner: {name: median, n_startup_trials: 1}\n"
        "objective: split\nfixed: {trainer.max_epochs: 2}\n"
        f"params:\n  {LR}: {{low: 1.0e-3, high: 1.0e-1, log: true}}\n  {BATCH}: [16, 32]\n"
    )
    code, stdout, stderr = in_process(tmp_path, ["sweep", "--sweep", "tpe.yaml", *fit_args(tmp_path)])
    assert code == 0, stderr[-2000:]
    folder = tmp_path / "tensorboard_logs/LeNet5_sweep/tpe"
    study = optuna.load_study(study_name="tpe", storage=f"sqlite:///{folder / 'study.db'}")
    states = [t.state for t in study.trials]
    assert len(states) == 3 and set(states) <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    assert all(len(t.intermediate_values) >= 1 for t in study.trials)  # the pruning callback reported val/acc
    assert all(1e-3 <= t.params[LR] <= 1e-1 for t in study.trials)
    assert (folder / "best.yaml").is_file() and "1. " in stdout


BAD = {
    "unknown top-level key": ("sampler: grid\nparms: {data.batch_size: [16]}\n", [], "unknown key 'parms'"),
    "unknown CLI key": ("params: {model.init_args.dropoutt: [0.1]}\n", [], "model.init_args.dropoutt"),
    "value its type refuses": ("params: {data.batch_size: [16, big]}\n", [], "data.batch_size = 'big'"),
    "empty params": ("params: {}\n", [], "params is empty"),
    "empty values": ("params: {data.batch_size: []}\n", [], "data.batch_size: no values"),
    "range in a grid": ("params: {data.batch_size: {low: 8, high: 64}}\n", [], "a grid takes values"),
    "search without budget": ("sampler: tpe\nparams: {data.batch_size: [16]}\n", [], "needs its budget"),
    "sweep key on the command line": ("params: {data.batch_size: [16]}\n", ["--data.batch_size", "8"], "change it"),
    "journal folder missing": ("params: {data.batch_size: [16]}\n", ["--storage", "nowhere/j.log"], "no folder"),
    "RDB that cannot open": ("params: {data.batch_size: [16]}\n", ["--storage", "sqlite:////no/such/x.db"], "cannot"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_input_is_one_line_before_training(tmp_path, case):
    text, extra, expected = BAD[case]
    (tmp_path / "bad.yaml").write_text(text)
    code, _, stderr = in_process(tmp_path, ["sweep", "--sweep", "bad.yaml", *fit_args(tmp_path), *extra])
    assert code == 2
    assert expected in error_line(stderr)
    assert not list(tmp_path.glob("tensorboard_logs/*/*/trial_*"))  # nothing trained


def test_another_sweep_under_the_same_name_changes_nothing(tmp_path):
    (tmp_path / "s.yaml").write_text("params: {data.batch_size: [16, 32]}\n")
    journal = ["--storage", str(tmp_path / "j.log")]
    assert in_process(tmp_path, ["sweep", "--sweep", "s.yaml", *fit_args(tmp_path), *journal, "--report"])[0] == 2
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "j.log")))
    study = optuna.create_study(study_name="s", storage=storage)
    study.set_user_attr("sweep", {"sweep file's params": "other"})
    study.set_user_attr("ready", True)
    before = (tmp_path / "j.log").read_bytes()
    code, _, stderr = in_process(tmp_path, ["sweep", "--sweep", "s.yaml", *fit_args(tmp_path), *journal])
    assert code == 2 and "made from another sweep" in error_line(stderr)
    assert (tmp_path / "j.log").read_bytes() == before


def test_unshuffled_folds_are_sklearns_kfold(tiny_data, make_datamodule):
    fold_ids = []
    for fold in range(3):
        module = make_datamodule(tiny_data, validation=Validation("kfold", num_folds=3, fold=fold, kfold_shuffle=False))
        fold_ids.append(sample_ids(module.val_set.images))
    expected = [val for _, val in KFold(3).split(np.zeros(120))]
    assert [ids.tolist() for ids in fold_ids] == [list(val) for val in expected]


def test_custom_cnn_kernel_initializers():
    from fmnist_lightning.models import CustomCNN

    torch.manual_seed(0)
    hidden = (0, 4, 10)  # the two convs and the Dense 128 in the network's Sequential
    for name in ("he_normal", "uniform"):
        net = CustomCNN(kernel_initializer=name).net
        for index in hidden:
            weight, fan_in = net[index].weight.detach(), net[index].weight[0].numel()
            assert not net[index].bias.any()
            if name == "uniform":
                assert weight.abs().max() <= 0.05 and weight.std().item() == pytest.approx(0.05 / 3**0.5, rel=0.05)
            else:  # Keras: std √(2 / fan_in) after truncating at 2 of its pre-truncation stds
                std = (2 / fan_in) ** 0.5
                assert weight.std().item() == pytest.approx(std, rel=0.05)
                assert weight.abs().max() <= 2 * std / 0.87962566103423978 + 1e-6
        assert net[13].weight.detach().abs().max() <= (6 / (128 + 10)) ** 0.5  # the output layer stays glorot_uniform
    torch.manual_seed(1)
    default = CustomCNN().net.state_dict()
    torch.manual_seed(1)
    explicit = CustomCNN(kernel_initializer="he_uniform").net.state_dict()
    assert all(torch.equal(default[key], explicit[key]) for key in default)


def test_keras_rmsprop_matches_keras():
    keras = pytest.importorskip("keras")
    from fmnist_lightning.training import KerasRMSprop

    rng = np.random.default_rng(0)
    start = rng.normal(size=1000).astype(np.float32)
    grads = [(rng.normal(size=1000) * 10 ** rng.uniform(-6, -1, size=1000)).astype(np.float32) for _ in range(5)]
    variable, optimizer = keras.Variable(start.copy()), keras.optimizers.RMSprop()  # 'rmsprop': Keras's defaults
    param = torch.nn.Parameter(torch.tensor(start))
    ours = KerasRMSprop([param])
    for grad in grads:
        optimizer.apply_gradients([(keras.ops.convert_to_tensor(grad), variable)])
        param.grad = torch.tensor(grad)
        ours.step()
    theirs = np.asarray(keras.ops.convert_to_numpy(variable))
    assert np.abs(param.detach().numpy() - theirs).max() < 1e-7  # torch.optim.RMSprop(alpha=0.9, eps=1e-7): 9e-3


def test_a_worker_that_finds_the_tables_half_made_by_another_opens_the_storage(tmp_path, monkeypatch):
    """Two workers starting on one new SQLite file at the same instant both create its tables: the slower one's
    create fails with "table … already exists" (seen with two single-threaded workers) and must open it again."""
    import argparse

    import sqlalchemy

    from fmnist_lightning.commands.sweep import storage

    real, calls = storage.RDBStorage, []

    def raced(*args, **kwargs):
        calls.append(args)
        if len(calls) == 1:
            raise sqlalchemy.exc.OperationalError("CREATE TABLE", {}, Exception("table version_info already exists"))
        return real(*args, **kwargs)

    monkeypatch.setattr(storage, "RDBStorage", raced)
    monkeypatch.setattr(storage.time, "sleep", lambda seconds: None)
    options = argparse.Namespace(storage=None, report=False, heartbeat_interval=60, grace_period=120, max_retry=1)
    opened = storage.open_storage(options, tmp_path / "study")
    assert isinstance(opened, real) and len(calls) == 2
