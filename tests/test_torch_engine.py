"""The PyTorch engine on its own: training, state round trips, resume, and the safe .pth loader."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lenet5.config import ModelConfig, OptimizerConfig  # noqa: E402
from lenet5.engines.base import Engine  # noqa: E402
from lenet5.engines.torch.engine import TorchEngine  # noqa: E402
from lenet5.engines.torch.model import LeNet5  # noqa: E402
from lenet5.errors import CheckpointError, Lenet5Error  # noqa: E402
from lenet5.models import C3_TABLE  # noqa: E402
from lenet5.pth import load_pth_state_dict  # noqa: E402

MODELS = ("modern", "classic")
MODERN_KEYS = [f"{layer}.{kind}" for layer in ("conv1", "conv2", "fc1", "fc2", "fc3") for kind in ("weight", "bias")]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def make_engine(model="modern", seed=0, **opt) -> TorchEngine:
    return TorchEngine(ModelConfig(name=model), OptimizerConfig(**opt), seed=seed, device="cpu")


def batch(rng, n=32):
    return rng.standard_normal((n, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, n).astype(np.int64)


@pytest.mark.parametrize("model", MODELS)
def test_train_step_reduces_loss_on_a_fixed_batch(model, rng):
    engine = make_engine(model, name="adam", lr=1e-3)
    assert isinstance(engine, Engine)
    x, y = batch(rng)
    first, _ = engine.train_step(x, y, 1e-3)
    for _ in range(25):
        last, correct = engine.train_step(x, y, 1e-3)
    assert np.isfinite(first) and last < 0.5 * first
    assert 0 <= correct <= len(y)


def test_state_dict_uses_pytorch_names_and_shapes():
    engine = make_engine("modern")
    state = engine.state_dict()
    assert list(state) == MODERN_KEYS
    assert state["conv1.weight"].shape == (6, 1, 5, 5) and state["fc1.weight"].shape == (120, 400)
    assert all(v.dtype == np.float32 for v in state.values())
    assert list(LeNet5().state_dict()) == MODERN_KEYS


def test_classic_c3_mask_is_a_buffer_outside_the_state_dict():
    model = LeNet5("classic")
    assert not any("mask" in key for key in model.state_dict())
    assert model.masks()["conv2"].shape == (16, 6, 1, 1)
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_classic_unconnected_c3_weights_get_no_gradient(rng):
    engine = make_engine("classic", name="sgd", lr=0.1, momentum=0.9)
    before = engine.state_dict()["conv2.weight"]
    x, y = batch(rng)
    for _ in range(3):
        engine.train_step(x, y, 0.1)
    after = engine.state_dict()["conv2.weight"]
    off = np.asarray(C3_TABLE)[:, :, None, None].repeat(5, 2).repeat(5, 3) == 0
    np.testing.assert_array_equal(after[off], before[off])
    assert not np.allclose(after[~off], before[~off])


@pytest.mark.parametrize("model", MODELS)
def test_state_dict_round_trip_gives_identical_logits(model, rng):
    a = make_engine(model, seed=1)
    x, y = batch(rng)
    a.train_step(x, y, 1e-3)
    b = make_engine(model, seed=2)
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(a.logits(x), b.logits(x))


def test_load_state_dict_accepts_float64_arrays(rng):
    a = make_engine(seed=1)
    b = make_engine(seed=2)
    b.load_state_dict({k: v.astype(np.float64) for k, v in a.state_dict().items()})
    x, _ = batch(rng, 5)
    np.testing.assert_array_equal(a.logits(x), b.logits(x))


@pytest.mark.parametrize(
    "opt",
    [
        {"name": "sgd", "momentum": 0.9, "nesterov": True, "l1": 1e-4, "weight_decay": 1e-3},
        {"name": "sgd", "momentum": 0.0},
        {"name": "adam", "l2": 1e-3, "grad_clip": 0.5},
        {"name": "adamw", "weight_decay": 1e-2, "l1": 1e-5},
    ],
    ids=["sgd-nesterov", "sgd-plain", "adam", "adamw"],
)
def test_optimizer_state_round_trip_continues_identically(opt, rng):
    batches = [batch(rng, 16) for _ in range(6)]
    a = make_engine(seed=3, **opt)
    for x, y in batches[:3]:
        a.train_step(x, y, 1e-2)
    weights, moments = a.state_dict(), a.optimizer_state()
    assert int(moments["step"]) == 3
    for x, y in batches[3:]:
        a.train_step(x, y, 5e-3)
    b = make_engine(seed=4, **opt)
    b.load_state_dict(weights)
    b.load_optimizer_state(moments)
    for x, y in batches[3:]:
        b.train_step(x, y, 5e-3)
    for key, value in a.state_dict().items():
        np.testing.assert_array_equal(b.state_dict()[key], value, err_msg=key)
    assert int(b.optimizer_state()["step"]) == 6


def test_load_optimizer_state_rejects_a_wrong_shape(rng):
    engine = make_engine(name="adam")
    engine.train_step(*batch(rng, 4), 1e-3)
    state = engine.optimizer_state()
    state["exp_avg"] = state["exp_avg"][:-1]
    with pytest.raises(ValueError, match="exp_avg"):
        engine.load_optimizer_state(state)
    with pytest.raises(ValueError, match="momentum_buffer"):
        engine.load_optimizer_state({"step": np.array(1), "momentum_buffer": np.zeros(3)})


def test_load_state_dict_names_the_wrong_key_or_shape():
    engine = make_engine()
    good = engine.state_dict()
    renamed = dict(good)
    renamed["conv9.weight"] = renamed.pop("conv1.weight")
    with pytest.raises(ValueError, match="conv9.weight"):
        engine.load_state_dict(renamed)
    missing = {k: v for k, v in good.items() if k != "fc3.bias"}
    with pytest.raises(ValueError, match="missing key 'fc3.bias'"):
        engine.load_state_dict(missing)
    wrong = dict(good, **{"fc1.weight": np.zeros((120, 401), np.float32)})
    with pytest.raises(ValueError, match=r"'fc1.weight' has shape \(120, 401\)"):
        engine.load_state_dict(wrong)
    np.testing.assert_array_equal(engine.state_dict()["fc1.weight"], good["fc1.weight"])  # nothing half-loaded


def test_same_seed_gives_same_run(rng):
    x, y = batch(rng)
    runs = []
    for _ in range(2):
        engine = make_engine(seed=7, name="adam")
        runs.append([engine.train_step(x, y, 1e-3) for _ in range(3)])
    assert runs[0] == runs[1]


def test_float64_engine():
    engine = TorchEngine(ModelConfig(), OptimizerConfig(), seed=0, dtype="float64", device="cpu")
    assert engine.state_dict()["conv1.weight"].dtype == np.float64
    assert engine.logits(np.zeros((2, 1, 28, 28))).dtype == np.float64


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_asking_for_a_missing_cuda_device_is_a_clear_error():
    with pytest.raises(Lenet5Error, match="cuda"):
        TorchEngine(ModelConfig(), OptimizerConfig(), device="cuda")


# --- .pth files ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("wrap", [None, "state_dict", "model"])
def test_pth_loader_reads_a_real_torch_save_file(wrap, tmp_path, rng):
    module = LeNet5()
    path = tmp_path / "lenet.pth"
    sd = module.state_dict()
    torch.save(sd if wrap is None else {wrap: sd, "epoch": 3}, path)
    weights = load_pth_state_dict(path)
    assert list(weights) == MODERN_KEYS
    engine = make_engine()
    engine.load_state_dict(weights)
    x, _ = batch(rng, 4)
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(engine.logits(x), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("model", ["vgg", "resnet"])
def test_pth_loader_reads_a_deeper_models_state_dict_with_its_int64_counts(model, tmp_path, rng):
    from lenet5.checkpoint import load_checkpoint

    module = LeNet5(model)
    module.train()
    with torch.no_grad():  # a few batches in training mode: running statistics and counts that are not defaults
        for _ in range(3):
            module(torch.from_numpy(batch(rng, 8)[0]))
    module.eval()
    path = tmp_path / f"{model}.pth"
    torch.save(module.state_dict(), path)
    weights = load_pth_state_dict(path)
    counts = {k: v for k, v in weights.items() if k.endswith("num_batches_tracked")}
    assert counts and all(v.dtype == np.int64 and v.shape == () and int(v) == 3 for v in counts.values())
    ckpt = load_checkpoint(path)
    assert ckpt.model == model
    engine = make_engine(model)
    engine.load_state_dict(ckpt.weights)
    x, _ = batch(rng, 4)
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(engine.logits(x), expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("conv1.weight", torch.zeros(32, 1, 3, 3, dtype=torch.int64), "expected floating point"),
        ("bn1.running_mean", torch.zeros(32, dtype=torch.int64), "expected floating point"),
        ("bn1.num_batches_tracked", torch.tensor(True), "expected an integer count"),
        ("bn1.num_batches_tracked", torch.tensor(1 + 1j), "complex"),
    ],
)
def test_pth_loader_takes_integers_only_for_counts(key, value, expected, tmp_path):
    state = LeNet5("vgg").state_dict()
    state[key] = value
    path = tmp_path / "vgg.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=expected):
        load_pth_state_dict(path)


def test_pth_loader_strips_the_ddp_module_prefix(tmp_path):
    path = tmp_path / "ddp.pt"
    torch.save({f"module.{k}": v for k, v in LeNet5().state_dict().items()}, path)
    assert list(load_pth_state_dict(path)) == MODERN_KEYS


class _Payload:
    """Unpickling this calls open(marker, 'w'): a stand-in for arbitrary code in a hostile .pth file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_pth_loader_refuses_a_pickle_that_would_run_code(writer, tmp_path):
    # the payload is live: loading it the unsafe way does create its marker
    live = tmp_path / "live.pth"
    torch.save({"conv1.weight": _Payload(tmp_path / "live-marker")}, live)
    torch.load(live, weights_only=False)
    assert (tmp_path / "live-marker").exists()

    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    obj = {"conv1.weight": _Payload(marker)}
    if writer == "torch.save":
        torch.save(obj, path)
    else:
        path.write_bytes(pickle.dumps(obj))
    with pytest.raises(CheckpointError, match="evil.pth"):
        load_pth_state_dict(path)
    assert not marker.exists()


def test_pth_loader_rejects_a_truncated_file(tmp_path):
    path = tmp_path / "cut.pth"
    torch.save(LeNet5().state_dict(), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut.pth"):
        load_pth_state_dict(path)


@pytest.mark.parametrize("content", [[1, 2, 3], {"conv1.weight": 1.5}, {}])
def test_pth_loader_rejects_what_is_not_a_dict_of_tensors(content, tmp_path):
    path = tmp_path / "odd.pth"
    torch.save(content, path)
    with pytest.raises(CheckpointError, match="odd.pth: not a PyTorch state dict"):
        load_pth_state_dict(path)


def test_pth_loader_reports_a_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="nope.pth"):
        load_pth_state_dict(tmp_path / "nope.pth")


# --- threads=0: as many threads as the cores other processes leave free ------------------------------------


def test_thread_choice_takes_only_free_cores_with_hysteresis():
    from lenet5.free_cores import choose

    assert choose(1, 0.0, 2, 2) == 2  # quiet: both cores
    assert choose(2, 1.0, 2, 2) == 1  # a busy loop on one core: one thread
    assert choose(2, 0.6, 2, 2) == 1  # more than half a core taken
    assert choose(2, 0.4, 2, 2) == 2  # less than half: still ours
    assert choose(1, 0.4, 2, 2) == 1  # ... but after dropping to 1, only under a fifth brings the second back
    assert choose(1, 0.1, 2, 2) == 2
    assert choose(1, 2.0, 2, 2) == 1  # never fewer than one
    assert choose(1, 0.0, 8, 4) == 4  # never more than PyTorch's own default
    assert choose(4, 3.0, 8, 4) == 4 and choose(4, 5.0, 8, 4) == 3


def test_engine_default_threads_adapt_and_an_explicit_count_is_kept(monkeypatch):
    from lenet5 import free_cores as policy

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(policy, "CHECK_SECONDS", 0.0)
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.append(n))
    monkeypatch.setattr(policy, "available_cores", lambda: 2)
    monkeypatch.setattr(policy.os, "cpu_count", lambda: 2)
    seconds = iter([(0.0, 0.0), (0.0, 0.0), (2.0, 2.0), (2.0, 4.0), (4.0, 6.0)])  # (busy, total) of the machine
    monkeypatch.setattr(policy, "_machine_seconds", lambda: next(seconds, (4.0, 6.0)))
    monkeypatch.setattr(policy, "own_seconds", lambda: 0.0)
    engine = TorchEngine(ModelConfig(), OptimizerConfig(), device="cpu")
    assert calls == [1]  # starts with one thread
    engine._threads.tick()  # others used a whole core of two: one thread
    assert calls == [1]
    engine._threads.tick()  # nothing else ran: two
    assert calls == [1, 2]
    engine._threads.tick()  # a core taken again: one
    assert calls == [1, 2, 1]
    calls.clear()
    TorchEngine(ModelConfig(), OptimizerConfig(), device="cpu", threads=3)
    assert calls == [3]
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    calls.clear()
    assert TorchEngine(ModelConfig(), OptimizerConfig(), device="cpu")._threads is None and calls == []
