"""`lenet5 tune` against a real PostgreSQL server: two workers on one study, and a worker killed mid-trial.

The server is a throw-away cluster (tests/postgres.py) on 127.0.0.1; each test gets a fresh database, so the
first two workers also race to create Optuna's tables, as a team's first two machines would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")
psycopg = pytest.importorskip("psycopg", reason="the PostgreSQL driver (psycopg 3, in the tune extra) is not installed")

import lenet5.tune as tune  # noqa: E402
from conftest import write_mnist_subset  # noqa: E402
from lenet5.config import build_config  # noqa: E402
from lenet5.errors import Lenet5Error  # noqa: E402
from postgres import running_postgres, unavailable_reason  # noqa: E402
from serving import free_port  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # heartbeats
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
DEADLINE = 120.0  # seconds for any one wait; generous for a loaded 2-core machine, never reached when all is well


@pytest.fixture(scope="module")
def pg_server():
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"no PostgreSQL server can be started here: {reason}")
    with running_postgres() as url:
        yield url


@pytest.fixture()
def pg_url(pg_server, request) -> str:
    """A fresh, empty database on the test server; the URL a user would pass (plain postgresql://)."""
    name = "tune_" + request.node.name.lower().replace("test_", "")[:40]
    with psycopg.connect(pg_server + "/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{pg_server}/{name}"


@pytest.fixture(scope="module")
def tune_data(mnist, tmp_path_factory) -> Path:
    return write_mnist_subset(mnist, tmp_path_factory.mktemp("pg-mnist"), 3000, 200)


def tune_cmd(data_dir: Path, url: str, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "lenet5",
        "tune",
        "--dataset",
        "idx",
        "--data-dir",
        str(data_dir),
        "--engine",
        "numpy",
        "--threads",
        "1",
        "--epochs",
        "1",
        "--train-size",
        "2000",
        "--storage",
        url,
        "--study-name",
        "shared",
        "--out",
        str(out),
        *extra,
    ]


def start(cmd: list[str], log: Path, cwd: Path) -> subprocess.Popen:
    """A worker whose stderr (its log) goes to `log` and stdout to log.out: files, never pipes (a pipe nobody
    reads could fill up and stall it)."""
    return subprocess.Popen(
        cmd,
        cwd=cwd,
        stdout=log.with_suffix(".out").open("w"),
        stderr=log.open("w"),
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def summary_of(log: Path) -> dict:
    return json.loads(log.with_suffix(".out").read_text())


def wait(proc: subprocess.Popen, log: Path) -> str:
    try:
        proc.wait(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"worker did not finish within {DEADLINE:.0f} s:\n{log.read_text()}")
    return log.read_text()


def trials_run_by(output: str) -> set[int]:
    """The trial numbers a worker's log shows it running ("trial N epoch ..." or "trial N pruned ...")."""
    return {int(line.split()[1]) for line in output.splitlines() if line.startswith("trial ")}


def wait_for(condition, what: str, deadline: float = DEADLINE, every: float = 0.05):
    end = time.monotonic() + deadline
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            pytest.fail(f"timed out after {deadline:.0f} s waiting for {what}")
        time.sleep(every)


def test_postgres_urls_go_to_the_installed_driver(monkeypatch):
    installed = {"psycopg": True, "psycopg2": False}
    monkeypatch.setattr(tune, "_installed", lambda name: installed[name])
    assert tune.storage_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert tune.storage_url("postgres://u:p@h:5433/db") == "postgresql+psycopg://u:p@h:5433/db"
    assert tune.storage_url("postgresql+psycopg2://u@h/db") == "postgresql+psycopg2://u@h/db"  # as the user chose
    assert tune.storage_url("sqlite:///runs/tune/study.db") == "sqlite:///runs/tune/study.db"
    installed["psycopg2"] = True
    assert tune.storage_url("postgres://u@h/db") == "postgresql://u@h/db"  # SQLAlchemy's default: psycopg2
    installed.update(psycopg=False, psycopg2=False)
    with pytest.raises(Lenet5Error, match=r"needs a driver: pip install"):
        tune.storage_url("postgresql://u@h/db")
    assert tune.display_url("postgresql://bob:secret@h/db") == "postgresql://bob:***@h/db"


def test_an_unreachable_server_is_one_error_line_without_the_password(tune_data, tmp_path):
    url = f"postgresql://bob:secret@127.0.0.1:{free_port()}/nowhere"  # nothing listens there
    result = subprocess.run(
        tune_cmd(tune_data, url, tmp_path / "out", "--trials", "1"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach the study database "), result.stderr
    assert "Connection refused" in lines[0] and "bob:***@127.0.0.1" in lines[0] and "secret" not in result.stderr


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_workers_share_one_postgres_study(pg_url, tune_data, tmp_path):
    out = tmp_path / "out"
    cmd = tune_cmd(tune_data, pg_url, out, "--trials", "6", "--json")  # 6: enough for both to get a share
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    workers = [start(cmd, log, tmp_path) for log in logs]  # at the same moment, on a database with no tables yet
    outputs = [wait(w, log) for w, log in zip(workers, logs)]
    for w, output in zip(workers, outputs):
        assert w.returncode == 0, output

    study = optuna.load_study(study_name="shared", storage=pg_url.replace("postgresql://", "postgresql+psycopg://"))
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state in FINISHED]
    # Each worker stops once the study holds 6 finished trials; one may have started a trial just before the
    # other finished the 6th, so a study shared by 2 workers ends with 6 or 7.
    assert 6 <= len(finished) <= 7
    assert len(finished) == len(trials)  # none failed, none left running
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(len(trials)))  # unique, no gaps
    ran = [trials_run_by(output) for output in outputs]
    assert not ran[0] & ran[1], "a trial ran in both workers"
    assert ran[0] | ran[1] == set(numbers), "every trial of the study ran in exactly one of the two workers"
    assert ran[0] and ran[1], "both workers took a share of the trials"
    print(f"\nworker 0 ran trials {sorted(ran[0])}, worker 1 ran {sorted(ran[1])}")

    for log in logs:
        summary = summary_of(log)
        assert summary["storage"] == pg_url
        assert sum(summary["trials"].get(s, 0) for s in ("complete", "pruned")) >= 6
    config = out / "shared" / "config.yaml"
    assert config.is_file() and (out / "shared" / "trials.csv").is_file()
    cfg = build_config([config])  # a valid config for lenet5 train --config
    assert cfg.optimizer.name == study.best_trial.params["optimizer"]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_killed_worker_is_failed_by_the_next_worker_which_completes_the_study(pg_url, tune_data, tmp_path):
    out = tmp_path / "out"
    # 3 epochs a trial, so a worker can be killed between two epochs of one trial; a 1 s heartbeat: a trial
    # whose worker has been silent for 3 s is stale.
    cmd = tune_cmd(tune_data, pg_url, out, "--heartbeat", "1")
    cmd[cmd.index("--epochs") + 1] = "3"
    log = tmp_path / "killed.log"
    proc = start([*cmd, "--trials", "50"], log, tmp_path)

    def in_a_trial():  # the log shows a trial (its 2nd or later) between its 1st and 2nd epoch
        if proc.poll() is not None:
            pytest.fail(f"the worker exited early ({proc.returncode}):\n{log.read_text()}")
        lines = log.read_text().splitlines()
        return any(
            line.split()[:1] == ["trial"] and int(line.split()[1]) >= 1 and " epoch 1/3:" in line for line in lines
        )

    wait_for(in_a_trial, "the first worker to be in the middle of a trial")
    proc.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    url = pg_url.replace("postgresql://", "postgresql+psycopg://")
    storage = optuna.storages.RDBStorage(url, heartbeat_interval=1, grace_period=3)  # the workers' rule
    study = optuna.load_study(study_name="shared", storage=storage)
    running = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.RUNNING]
    assert len(running) == 1, [t.state.name for t in study.get_trials(deepcopy=False)]
    dead = running[0]
    done = sum(t.state in FINISHED for t in study.get_trials(deepcopy=False))

    # Start the second worker once the dead trial is stale by the database's clock (silent for 3 x heartbeat),
    # the same rule the workers apply; Optuna's RDBStorage answers it (a private method: the exact rule).
    wait_for(
        lambda: dead._trial_id in storage._get_stale_trial_ids(study._study_id), "the dead trial to go stale", every=0.1
    )
    stale_after = time.monotonic() - killed_at

    second_log = tmp_path / "second.log"
    second = start([*cmd, "--trials", str(done + 2), "--json"], second_log, tmp_path)

    def dead_trial_failed():
        return study._storage.get_trial(dead._trial_id).state == optuna.trial.TrialState.FAIL

    wait_for(dead_trial_failed, "the second worker to mark the dead trial failed")
    failed_after = time.monotonic() - killed_at
    output = wait(second, second_log)
    assert second.returncode == 0, output

    trials = study.get_trials(deepcopy=False)
    states = [t.state.name for t in trials]
    assert states.count("FAIL") == 1 and "RUNNING" not in states, states
    assert sum(t.state in FINISHED for t in trials) == done + 2  # one worker: exactly the requested number
    assert dead.number not in trials_run_by(output)  # the failed trial is not re-run; new trials replace it
    summary = summary_of(second_log)
    assert summary["trials"].get("fail") == 1
    build_config([Path(summary["config"])])
    print(
        f"\ndead worker's trial {dead.number}: stale {stale_after:.1f} s after SIGKILL, marked FAIL by the "
        f"next worker {failed_after:.1f} s after SIGKILL (--heartbeat 1)"
    )
