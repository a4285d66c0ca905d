"""Extreme numbers in, never a NaN probability out: blank and saturated digits, NaN/inf arrays, huge logits and
weights so large that the forward pass overflows. Through lenet5.predict.Predictor and the HTTP API."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from conftest import lenet5
from lenet5.checkpoint import save_checkpoint
from lenet5.errors import CheckpointError
from lenet5.metrics import softmax
from lenet5.predict import Predictor
from serving import running_server

INF = np.inf


def _weights(scale: float = 1.0) -> dict[str, np.ndarray]:
    from lenet5.config import ModelConfig, OptimizerConfig
    from lenet5.engines import create_engine

    w = create_engine("numpy", ModelConfig(), OptimizerConfig(), seed=0).state_dict()
    return {k: (v * np.float32(scale)).astype(np.float32) for k, v in w.items()}


@pytest.fixture(scope="module")
def model_paths(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("numerics")
    paths = {}
    for name, scale in (("normal", 1.0), ("large", 1e4), ("overflowing", 1e30)):
        paths[name] = save_checkpoint(folder / f"{name}.safetensors", _weights(scale), engine="numpy", model="modern")
    return paths


def assert_probabilities(p: np.ndarray, n: int) -> None:
    assert p.shape == (n, 10) and np.all(np.isfinite(p)) and np.all(p >= 0)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-9)


EXTREME_DIGITS = {
    "all_zero": np.zeros((28, 28), np.uint8),
    "all_255": np.full((28, 28), 255, np.uint8),
    "checkerboard": (np.indices((28, 28)).sum(0) % 2 * 255).astype(np.uint8),
    "one_pixel": np.pad(np.full((1, 1), 255, np.uint8), ((14, 13), (14, 13))),
}


@pytest.mark.parametrize("engine", ["numpy", "torch"])
def test_extreme_digits_give_finite_probabilities(model_paths, engine):
    if engine == "torch":
        pytest.importorskip("torch")
    predictor = Predictor.from_checkpoint(model_paths["normal"], engine=engine)
    p = predictor.probabilities(np.stack(list(EXTREME_DIGITS.values())))
    assert_probabilities(p, len(EXTREME_DIGITS))


@pytest.mark.parametrize("engine", ["numpy", "torch"])
@pytest.mark.parametrize("model", ["large", "overflowing"])
def test_weights_out_of_range_are_refused_when_the_model_is_loaded(model_paths, engine, model):
    """Weights so large that every logit is huge (every image would read as one sure digit) or overflows (NaN):
    the model is refused when it is loaded, in one line, not when an image is read."""
    if engine == "torch":
        pytest.importorskip("torch")
    with pytest.raises(CheckpointError, match=f"{model}.safetensors: the model's outputs are out of range"):
        Predictor.from_checkpoint(model_paths[model], engine=engine)


def test_a_damaged_model_that_loads_still_gives_a_clear_error_not_nan(model_paths):
    """Past the check at loading (a probe cannot see every input), NaN logits are still one clear error."""
    predictor = Predictor.from_checkpoint(model_paths["normal"])
    predictor.model = FixedLogits([np.nan] * 10)
    with pytest.raises(CheckpointError, match="normal.safetensors: the model's outputs are NaN"):
        predictor.probabilities(np.stack(list(EXTREME_DIGITS.values())))


class FixedLogits:
    def __init__(self, logits):
        self.out = np.asarray(logits, dtype=np.float64)

    def logits(self, x):
        return np.repeat(self.out[None], len(x), axis=0)


@pytest.mark.parametrize(
    "logits, winner",
    [
        ([1e308, -1e308, 0, 0, 0, 0, 0, 0, 0, 0], 0),
        ([0, 0, 0, 3e38, 0, 0, 0, 0, 0, -3e38], 3),
        ([0, 0, INF, 0, 0, 0, 0, 0, 0, 0], 2),
        ([INF, 0, 0, 0, 0, 0, 0, 0, INF, -INF], 0),
        ([-INF] * 9 + [5.0], 9),
        ([-INF] * 10, 0),
        ([1e-320] * 10, 0),
        ([np.float32(3.4e38)] * 10, 0),
    ],
)
def test_huge_and_infinite_logits_give_finite_probabilities(logits, winner):
    p = Predictor(FixedLogits(logits), "modern", Path("fixed")).probabilities(np.zeros((2, 28, 28), np.uint8))
    assert_probabilities(p, 2)
    assert int(np.argmax(p[0])) == winner


def test_nan_logits_are_an_error():
    predictor = Predictor(FixedLogits([0.0] * 9 + [np.nan]), "modern", Path("fixed.safetensors"))
    with pytest.raises(CheckpointError, match="NaN"):
        predictor.probabilities(np.zeros((1, 28, 28), np.uint8))


def test_softmax_rows_are_independent():
    p = softmax(np.array([[INF, 0.0], [0.0, 1.0], [-INF, -INF]]))
    np.testing.assert_allclose(p, [[1.0, 0.0], [1 / (1 + np.e), np.e / (1 + np.e)], [0.5, 0.5]])


@pytest.mark.parametrize(
    "array, ok",
    [
        (np.zeros((28, 28), np.float32), True),
        (np.ones((3, 28, 28), np.float64), True),
        (np.full((28, 28), 255, np.uint8), True),
        (np.full((28, 28), np.nan, np.float32), False),
        (np.full((28, 28), np.inf, np.float64), False),
        (np.full((28, 28), -np.inf, np.float32), False),
        (np.full((28, 28), 1e30, np.float32), False),
        (np.full((28, 28), 256, np.int64), False),
        (np.full((28, 28), -1, np.int32), False),
        (np.full((28, 28), 1 + 0j), False),
    ],
    ids=["zeros", "ones-stack", "uint8-255", "nan", "inf", "-inf", "1e30", "int-256", "int-neg", "complex"],
)
def test_npy_extremes_through_the_predictor(model_paths, tmp_path, array, ok):
    path = tmp_path / "digits.npy"
    np.save(path, array)
    results = Predictor.from_checkpoint(model_paths["normal"]).classify_files([str(path)])
    if ok:
        assert all("error" not in r for r in results), results
        for r in results:
            assert 0 <= r["probability"] <= 1 and np.isfinite(r["probability"])
    else:
        assert len(results) == 1 and "error" in results[0] and str(path) in results[0]["error"], results


@pytest.mark.parametrize("fill", [0, 255])
def test_blank_image_files_are_read_as_no_digit_and_unsure(model_paths, tmp_path, fill):
    path = tmp_path / "blank.png"
    Image.new("L", (64, 64), fill).save(path)
    [result] = Predictor.from_checkpoint(model_paths["normal"]).classify_files([str(path)])
    assert result["digit"] is None and result["unsure"] is True and result["reason"].startswith("no digit found")


def test_extremes_through_the_http_api(model_paths):
    with running_server(model_paths["normal"]) as (url, _), httpx.Client(base_url=url, timeout=30) as client:
        for name, digit in EXTREME_DIGITS.items():
            r = client.post("/predict", json={"pixels": digit.tolist()})
            assert r.status_code == 200, (name, r.text)
            probs = np.array(r.json()["probabilities"])
            assert np.all(np.isfinite(probs)) and abs(probs.sum() - 1) < 1e-4, (name, probs)
        rows = lambda text: '{"pixels": [' + ",".join(["[" + ",".join([text] * 28) + "]"] * 28) + "]}"  # noqa: E731
        for body in (
            '{"pixels": [[NaN]]}',
            '{"pixels": [[Infinity]]}',
            rows("NaN"),
            rows("1e309"),
            rows("-1e-300"),
            rows("-Infinity"),
        ):
            r = client.post("/predict", content=body, headers={"content-type": "application/json"})
            assert r.status_code in (400, 422) and "pixels" in r.json()["detail"], (body[:40], r.text)
        buf = io.BytesIO()
        Image.new("F", (32, 32), float("nan")).save(buf, format="TIFF")  # a float image full of NaN
        r = client.post("/predict", content=buf.getvalue(), headers={"content-type": "image/tiff"})
        assert r.status_code == 400, r.text
        assert client.get("/healthz").status_code == 200


def test_an_overflowing_model_is_refused_before_the_service_starts(model_paths):
    result = lenet5("serve", "--model", model_paths["overflowing"], "--port", "0", timeout=120)
    assert result.returncode == 2
    assert "outputs are out of range" in result.stderr and "Traceback" not in result.stderr
