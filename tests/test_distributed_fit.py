"""`fit(..., distributed=comm)`: N ranks train like one process on the same global batches.

Jobs of 1, 2 and 3 ranks start on localhost with ``mpiexec`` (tests/distributed_fit_worker.py);
each rank reports its weights and history, compared here with one process (float64, ~1e-12).
Global batches of 8 and 7 rows do not divide by 2 or 3 ranks, and the last batch is short. The
in-process tests use a communicator of size 1 (no MPI) and a stand-in group of several ranks
whose collectives do nothing, for the checks that need no other process.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

import ailib
import ailib.distributed as dist
from ailib import cli
from ailib.layers import Dense

from .distributed_fit_worker import model, train, weights
from .test_cli import CLI_IN_A_PROCESS, data  # noqa: F401
from .test_cli import train as cli_arguments
from .test_distributed import BOUND_S, ROOT, _env, _results, mpiexec  # noqa: F401

#: under pytest-xdist (`make test`), this module's MPI jobs run on one worker, one at a time
pytestmark = pytest.mark.xdist_group("mpi")

WORKER = str(ROOT / "tests" / "distributed_fit_worker.py")
#: float64 weights of N ranks and of one process differ by the rounding of sums taken in
#: another order, a few ulps per step
TOL = 1e-12


def run_fit(launcher: str, n: int, *args: str) -> tuple[int, float, str, dict[int, dict]]:
    with tempfile.TemporaryDirectory() as out:
        start = time.monotonic()
        run = subprocess.run(
            [launcher, "-n", str(n), sys.executable, WORKER, *args[:1], out, *args[1:]],
            env=_env(),
            capture_output=True,
            text=True,
            timeout=BOUND_S,
        )
        return (
            run.returncode,
            time.monotonic() - start,
            run.stdout + run.stderr,
            _results(Path(out)),
        )


def assert_same_weights(got: dict, want: dict, tol: float = TOL) -> None:
    assert list(got) == list(want)
    for name in want:
        np.testing.assert_allclose(np.asarray(got[name]), np.asarray(want[name]), rtol=0, atol=tol)


def assert_same_history(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(k for k in want if k != "seconds")
    for key, values in got.items():
        np.testing.assert_allclose(values, want[key], rtol=1e-12, atol=0, err_msg=key)


@pytest.fixture(scope="module")
def checkpoint_dir():
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder)


@pytest.fixture(scope="module")
def two_ranks(mpiexec, checkpoint_dir):  # noqa: F811
    """Sequential model, 1 epoch on 2 ranks, writing a checkpoint."""
    return run_fit(
        mpiexec, 2, "sequential", "--epochs", "1", "--checkpoint", str(checkpoint_dir / "c.npz")
    )


def test_two_ranks_train_like_one_process_and_only_rank_0_prints(two_ranks):
    code, _, output, results = two_ranks
    assert code == 0 and sorted(results) == [0, 1], output[-3000:]
    net, history = train("sequential", 1)
    for result in results.values():
        assert result["size"] == 2 and result["engine"] == "mpi"
        assert_same_weights(result["weights"], weights(net))
        assert_same_history(result["history"], history)  # loss, accuracy, val_*: (sum, count)
    assert results[0]["printed"].count("epoch 1/1:") == 2  # the MLP's line and BatchNorm's
    assert results[1]["printed"] == ""


def test_batchnorm_ranks_end_each_epoch_with_the_same_running_statistics(two_ranks):
    _, _, output, results = two_ranks
    first, second = results[0]["batchnorm"], results[1]["batchnorm"]
    assert first["buffers"] and first["buffers"] == second["buffers"], output[-2000:]
    assert first["weights"] == second["weights"]


def test_a_checkpoint_of_two_ranks_resumes_on_three_and_on_one(
    mpiexec,  # noqa: F811
    two_ranks,
    checkpoint_dir,
):
    """Epoch 1 on 2 ranks, epochs 2-3 on 3 ranks (or on one process): the weights of an
    uninterrupted one-process run of 3 epochs."""
    assert two_ranks[0] == 0, two_ranks[2][-3000:]
    uninterrupted, history = train("sequential", 3)
    three = checkpoint_dir / "three.npz"
    shutil.copy(checkpoint_dir / "c.npz", three)
    code, _, output, results = run_fit(
        mpiexec, 3, "sequential", "--epochs", "3", "--checkpoint", str(three), "--resume"
    )
    assert code == 0 and sorted(results) == [0, 1, 2], output[-3000:]
    for result in results.values():
        assert_same_weights(result["weights"], weights(uninterrupted))
        assert_same_history(result["history"], history)
    assert "epoch 2/3" in results[0]["printed"] and results[2]["printed"] == ""
    one = checkpoint_dir / "one.npz"
    shutil.copy(checkpoint_dir / "c.npz", one)
    resumed, resumed_history = train("sequential", 3, dist.init(), str(one), resume=True)
    assert_same_weights(weights(resumed), weights(uninterrupted))
    assert_same_history({k: v for k, v in resumed_history.items() if k != "seconds"}, history)


@pytest.mark.parametrize("ranks", [1, 3])
def test_a_graph_model_on_one_and_three_ranks_trains_like_one_process(mpiexec, ranks):  # noqa: F811
    """Batches of 7, 7, 7, 8 rows: 3/2/2 and 3/3/2 rows on 3 ranks."""
    code, _, output, results = run_fit(mpiexec, ranks, "graph", "--epochs", "2")
    assert code == 0 and sorted(results) == list(range(ranks)), output[-3000:]
    net, history = train("graph", 2)
    for result in results.values():
        assert_same_weights(result["weights"], weights(net))
        assert_same_history(result["history"], history)


def test_an_error_on_one_rank_during_fit_ends_the_job_shown_once(mpiexec):  # noqa: F811
    code, seconds, output, results = run_fit(mpiexec, 2, "sequential", "--fail")
    assert code != 0 and not results, output[-3000:]
    assert output.count("RuntimeError: rank 1 broke in a callback on purpose") == 1, output
    assert "rank 1 of 2 failed; ending all ranks" in output
    assert seconds < BOUND_S


def test_a_divergence_every_rank_sees_is_reported_once_by_rank_0(mpiexec):  # noqa: F811
    code, seconds, output, results = run_fit(mpiexec, 2, "sequential", "--diverge")
    assert code != 0 and not results, output[-3000:]
    assert output.count("the loss became nan at epoch 1, step 2") == 1, output
    assert "rank 0 of 2 failed; ending all ranks" in output and "rank 1" not in output
    assert seconds < BOUND_S


def test_ranks_given_other_data_or_settings_all_refuse_before_the_first_step(mpiexec):  # noqa: F811
    """Rank 1 has one row fewer (the same 4 batches, a last one of 4 rows, not 5) and another
    learning rate: without a check its shares and updates would silently differ from rank
    0's. Every rank refuses alike; rank 0 says what differs, once."""
    code, seconds, output, results = run_fit(mpiexec, 2, "sequential", "--differ")
    assert code != 0 and not results, output[-3000:]
    said = (
        "the ranks differ in data, last_batch, optimizer, rows (rank 1 of 2 differs from rank "
        "0's rows=29"
    )
    assert output.count(said) == 1, output[-3000:]
    assert "rank 1 of 2 failed" not in output, output[-3000:]
    assert seconds < BOUND_S


def test_ranks_given_other_rows_of_the_same_count_refuse_before_the_first_step(mpiexec):  # noqa: F811
    """Rank 1 holds as many rows as rank 0, but others (a data set split by hand before fit,
    which gives each rank its share itself): the counts agree, so only the rows' digest tells.
    Every rank refuses alike; rank 0 says so once, with the fix."""
    code, seconds, output, results = run_fit(mpiexec, 2, "sequential", "--other-rows")
    assert code != 0 and not results, output[-3000:]
    said = "the ranks differ in data (rank 1 of 2 differs from rank 0's data='rows 0, "
    assert output.count(said) == 1, output[-3000:]
    assert "give every rank the whole data set" in output, output[-3000:]
    assert "rank 1 of 2 failed" not in output, output[-3000:]
    assert seconds < BOUND_S


def test_ranks_whose_learning_rates_part_refuse_at_that_epoch(mpiexec):  # noqa: F811
    """Rank 1 halves the learning rate from epoch 2 on, rank 0 does not: one reduced gradient
    applied with two step sizes would part the ranks' weights silently. Refused at the start of
    epoch 2, on every rank alike, once."""
    code, seconds, output, results = run_fit(
        mpiexec, 2, "sequential", "--other-schedule", "--epochs", "3"
    )
    assert code != 0 and not results, output[-3000:]
    said = "epoch 2: the ranks differ in lr (rank 1 of 2 differs from rank 0's lr=0.01)"
    assert output.count(said) == 1, output[-3000:]
    assert "the same lr_schedule" in output, output[-3000:]
    assert "rank 1 of 2 failed" not in output, output[-3000:]
    assert seconds < BOUND_S


def test_ctrl_c_on_every_rank_ends_the_job_in_one_line(mpiexec):  # noqa: F811
    code, seconds, output, results = run_fit(mpiexec, 2, "sequential", "--interrupt")
    assert code != 0 and not results, output[-3000:]
    assert output.count("interrupted; ending all 2 ranks") == 1, output
    assert "Traceback" not in output and "failed" not in output, output
    assert seconds < BOUND_S


# -- in one process ------------------------------------------------------------------------------
def test_a_single_process_communicator_changes_nothing_in_fit():
    plain, plain_history = train("sequential", 2)
    single, single_history = train("sequential", 2, dist.init())
    for name, value in plain.params.items():
        np.testing.assert_array_equal(value, single.params[name])
    for key in plain_history:
        if key != "seconds":
            assert plain_history[key] == single_history[key], key


def test_the_model_method_forwards_distributed_to_fit():
    net = model("graph")
    calls = []

    class Counting(dist.Communicator):
        def allreduce_values(self, values):
            calls.append(values)
            return values

    x, y = np.ones((4, 6)), np.zeros(4, dtype=int)
    net.fit(x, y, epochs=1, batch_size=4, distributed=Counting())
    assert calls  # the epoch check at least


def test_fit_refuses_a_global_batch_smaller_than_the_group():
    """A stand-in rank 0 of 3 (its collectives do nothing): a last batch of 2 rows cannot
    give each of 3 ranks a row; refused before any step, naming the fix."""
    group = dist.Communicator(rank=0, size=3)
    net = ailib.Sequential([Dense(2, 2)], backend="numpy", seed=0)
    x, y = np.ones((8, 2)), np.zeros(8, dtype=int)
    with pytest.raises(ValueError, match="at least 3 rows, but one has 2.*drop_last=True"):
        net.fit(x, y, batch_size=6, distributed=group)
    with pytest.raises(TypeError, match="Communicator"):
        net.fit(x, y, distributed="mpi")


def test_a_rank_left_one_row_for_batchnorm_names_the_global_batch_it_needs(capfd):
    """Rank 0 of 3 (stand-in group) gets 1 row of each global batch of 3: BatchNorm cannot
    train on it; the error names the global batch_size that gives every rank 2 rows, not
    "batches of at least 2 samples" (the batch has 3)."""
    net = model("batchnorm")
    x, y = np.ones((9, 6)), np.zeros(9, dtype=int)
    with pytest.raises(SystemExit) as ended:  # abort_on_error ends the (stand-in) job
        net.fit(x, y, batch_size=3, verbose=False, distributed=dist.Communicator(rank=0, size=3))
    said = str(ended.value.__cause__)
    assert "rank 0 of 3 has 1 row of the global batch of 3" in said, said
    assert "a batch_size of at least 6" in said, said
    assert "rank 0 of 3 failed" in capfd.readouterr().err  # on the process's own stderr


def test_each_rank_trains_on_its_share_of_every_global_batch():
    """Rank 1 of 3 (stand-in group) takes rows 3-4 of a batch of 7 (shares 3/2/2) and rows
    2-3 of a batch of 5 (2/2/1)."""
    parallel = dist.DataParallel(dist.Communicator(rank=1, size=3))
    batches = [(np.arange(7.0), np.arange(7)), (np.arange(10.0, 15.0), np.arange(5))]
    got = [(xb.tolist(), yb.tolist()) for xb, yb in parallel.shards(batches)]
    assert got == [([3.0, 4.0], [3, 4]), ([12.0, 13.0], [2, 3])]
    assert parallel.global_rows == 5 and parallel.samples == 12
    tiny = [(np.arange(2.0), np.arange(2))]
    assert [xb.tolist() for xb, _ in parallel.shards(tiny, training=False)] == [[1.0]]
    lonely = dist.DataParallel(dist.Communicator(rank=2, size=3))
    assert list(lonely.shards(tiny, training=False)) == []  # evaluation: an empty share adds 0
    with pytest.raises(ValueError, match="2 rows cannot be shared by 3 ranks"):
        list(lonely.shards(tiny))


def test_broadcast_object_of_one_process_returns_it():
    state = {"big": 2**100, "name": "pcg", "values": [1.5, None]}
    assert dist.broadcast_object(dist.init(), state) is state


def test_only_rank_0_runs_reporting_callbacks_and_writes_checkpoints(tmp_path):
    """On a stand-in rank 1 of 2, fit drops the callbacks that print or write (``writes``)
    and a checkpoint callback writes nothing; rank 0 keeps and writes them."""
    net = model("sequential")
    for rank in (0, 1):
        path = tmp_path / f"rank{rank}.npz"
        reporting = [ailib.callbacks.PrintEpochs(), ailib.callbacks.ProgressEvents(print)]
        steering = ailib.callbacks.EarlyStopping(monitor="loss")
        checkpoint = ailib.callbacks.ModelCheckpoint(path)
        trainer = ailib.training.Trainer(
            net,
            ailib.losses.get("softmax_cross_entropy"),
            ailib.optimizers.get("sgd"),
            [*reporting, steering, checkpoint],
            distributed=dist.Communicator(rank=rank, size=2),
        )
        kept = [*reporting, steering, checkpoint] if rank == 0 else [steering, checkpoint]
        assert trainer.is_root == (rank == 0) and trainer.callbacks == kept
        checkpoint.set_trainer(trainer)
        checkpoint.on_epoch_end(1, {"loss": 1.0})
        assert path.exists() == (rank == 0)


# -- the command line --------------------------------------------------------------------------
def test_distributed_training_from_the_command_line_writes_one_run(
    mpiexec,  # noqa: F811
    data,  # noqa: F811
    tmp_path,
):
    """``mpiexec -n 2 ailib train --distributed``: rank 0 prints and writes one run folder;
    a second run into it stops every rank with status 2 and one message."""
    out = tmp_path / "run"
    command = [mpiexec, "-n", "2", sys.executable, "-c", CLI_IN_A_PROCESS, "0"]
    args = [*cli_arguments(data, out, "--hidden", "8"), "--distributed", "--compile", "on"]
    run = subprocess.run(
        [*command, *args], env=_env(), capture_output=True, text=True, timeout=BOUND_S
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.count("test accuracy:") == 1 and run.stderr.count("distributed: 2 ranks") == 1
    # --compile on is said, once, to have no effect here
    assert run.stderr.count("note: --compile on: data-parallel steps are not compiled") == 1
    record = json.loads((out / "history.json").read_text())
    assert record["ranks"] == 2 and len(record["history"]["loss"]) == 2
    assert sorted(p.name for p in out.iterdir()) == sorted(cli.RUN_FILES)
    again = subprocess.run(
        [*command, *args], env=_env(), capture_output=True, text=True, timeout=BOUND_S
    )
    assert again.returncode == 2 and again.stderr.count("already holds a run") == 1, again.stderr


#: the command in a process whose rank 1 (MPICH's PMI_RANK, Open MPI's variable) fails during
#: its first epoch with a ValueError
RANK_1_BREAKS = CLI_IN_A_PROCESS.replace(
    "sys.exit(cli.main(sys.argv[2:]))",
    """import os
from ailib import training
if "1" in (os.environ.get("PMI_RANK"), os.environ.get("OMPI_COMM_WORLD_RANK")):
    def broken(self, *args, **kwargs):
        raise ValueError("rank 1 broke on purpose")
    training.Trainer._train_epoch = broken
sys.exit(cli.main(sys.argv[2:]))""",
)


@pytest.mark.parametrize("kind", ["one rank", "every rank"])
def test_an_error_during_distributed_training_from_the_command_line_is_one_line(
    mpiexec,  # noqa: F811
    data,  # noqa: F811
    tmp_path,
    kind,
):
    """docs/distributed.md: an error on one rank during the run prints `ailib: rank R of N:
    <message>` once; one that every rank meets alike (a loss that became NaN) is printed by
    rank 0 alone. (fit's own guard printed a traceback first: it now leaves the error to the
    command line's, around it.)"""
    snippet = RANK_1_BREAKS if kind == "one rank" else CLI_IN_A_PROCESS
    command = [mpiexec, "-n", "2", sys.executable, "-c", snippet, "0"]
    args = [*cli_arguments(data, tmp_path / "run", "--hidden", "8"), "--distributed"]
    if kind == "every rank":
        args += ["--optimizer", "sgd", "--lr", "1e30"]
    run = subprocess.run(
        [*command, *args], env=_env(), capture_output=True, text=True, timeout=BOUND_S
    )
    output = run.stdout + run.stderr
    assert run.returncode != 0, output
    said = [line for line in output.splitlines() if line.startswith("ailib: ")]
    if kind == "one rank":
        assert said == ["ailib: rank 1 of 2: rank 1 broke on purpose"], output
    else:
        assert len(said) == 1 and "the loss became" in said[0] and "rank 1" not in output, output
    assert "Traceback" not in output and "failed; ending all ranks" not in output, output


def test_distributed_without_a_launcher_says_how_to_launch(data, tmp_path, monkeypatch, capsys):  # noqa: F811
    for name in dist._launch.MPI_VARIABLES + ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert cli.main([*cli_arguments(data, tmp_path / "run"), "--distributed"]) == 2
    err = capsys.readouterr().err
    assert "mpiexec -n 4 ailib train --distributed" in err and "torchrun" in err
    assert not (tmp_path / "run").exists()
