"""`lenet5 serve` for real: the server runs in its own process on 127.0.0.1, requests go over HTTP."""

from __future__ import annotations

import io
import json
import socket

import httpx
import numpy as np
import pytest
from PIL import Image

from conftest import lenet5
from lenet5.predict import Predictor
from serving import free_port, running_server

MAX_BODY = 10_000_000  # lenet5 serve's default --max-body-mb 10


@pytest.fixture(scope="module")
def server(trained_checkpoint):
    with running_server(trained_checkpoint) as (url, _pid):
        yield url


@pytest.fixture()
def client(server):
    with httpx.Client(base_url=server, timeout=30) as c:
        yield c


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def test_healthz_names_the_model_its_path_and_a_short_hash(client, trained_checkpoint):
    import hashlib

    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {
        "status": "ok",
        "model": "modern",
        "checkpoint": str(trained_checkpoint),
        "sha256": hashlib.sha256(trained_checkpoint.read_bytes()).hexdigest()[:12],
    }


@pytest.mark.parametrize(
    ("pixels", "what"),
    [
        ([["12"] * 28] * 28, "not a string (row 0, column 0"),
        ([[True] * 28] * 28, "not true/false (row 0, column 0"),
        ([[0] * 28] * 27 + [[0] * 27 + [False]], "not true/false (row 27, column 27"),
        ([[0] * 28] * 27 + [[0] * 27 + [None]], "not null (row 27, column 27"),
        ([[0] * 28] * 27 + ["0" * 28], "row 27 is a string"),
    ],
)
def test_json_pixels_as_strings_or_booleans_are_refused_with_one_message(client, pixels, what):
    r = client.post("/predict", json={"pixels": pixels})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert what in detail and "\n" not in detail, detail


def test_root_serves_the_drawing_page(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    for element in ('id="canvas"', 'id="digit"', 'id="bars"', 'id="clear"'):
        assert element in r.text
    assert "http://" not in r.text and "https://" not in r.text  # self-contained: no CDN


def test_upload_of_real_mnist_digits(client, mnist):
    x, y = mnist.test_images[:30], mnist.test_labels[:30]
    answers = []
    for a in x:
        big = Image.fromarray(255 - a).resize((140, 140), Image.Resampling.LANCZOS)  # black on white, 5x
        buf = io.BytesIO()
        big.save(buf, format="JPEG", quality=92)
        r = client.post("/predict", files={"file": ("digit.jpg", buf.getvalue(), "image/jpeg")})
        assert r.status_code == 200, r.text
        body = r.json()
        assert {"model", "number", "digits", "unsure"} <= set(body) and body["model"] == "modern"
        if len(body["digits"]) == 1:  # one digit: also at the top, as before numbers were read
            assert body["number"] == str(body["digit"]) and body["digits"][0]["digit"] == body["digit"]
            assert len(body["probabilities"]) == 10 and abs(sum(body["probabilities"]) - 1) < 1e-4
            assert body["digit"] == int(np.argmax(body["probabilities"]))
        answers.append(body["number"])
    assert np.mean(np.array(answers) == y.astype(str)) >= 0.9


def test_json_pixels_match_the_predictor_exactly(client, mnist, trained_checkpoint):
    x, y = mnist.test_images[:20], mnist.test_labels[:20]
    expected = Predictor.from_checkpoint(trained_checkpoint).probabilities(x)
    for a, probs in zip(x, expected):
        r = client.post("/predict", json={"pixels": a.tolist()})
        assert r.status_code == 200, r.text
        assert np.allclose(r.json()["probabilities"], probs, atol=2e-6)
        assert r.json()["digit"] == int(np.argmax(probs))
    assert np.mean(expected.argmax(1) == y) >= 0.9


def test_json_pixels_with_prepare_and_the_prepared_image(client, mnist):
    a = mnist.test_images[0]
    raw = np.asarray(Image.fromarray(255 - a).resize((60, 90)))  # stretched, black on white, not 28x28
    r = client.post("/predict?prepared=true", json={"pixels": raw.tolist(), "prepare": True})
    assert r.status_code == 200, r.text
    assert r.json()["digit"] == int(mnist.test_labels[0])
    assert np.asarray(r.json()["prepared"]).shape == (28, 28)


def test_raw_image_body(client, mnist):
    r = client.post("/predict", content=png(mnist.test_images[1]), headers={"content-type": "image/png"})
    assert r.status_code == 200 and r.json()["digit"] == int(mnist.test_labels[1])


# ------------------------------------------------------------------------------------------------ errors
def test_body_over_the_limit_is_413_from_content_length(client):
    r = client.post("/predict", files={"file": ("huge.png", b"\x00" * (MAX_BODY + 1000), "image/png")})
    assert r.status_code == 413
    assert "limit is 10000000 bytes" in r.json()["detail"] and "--max-body-mb" in r.json()["detail"]


def test_chunked_body_over_the_limit_is_413_while_reading(client):
    def chunks():
        for _ in range(160):
            yield b"\x00" * 65536  # 10.5 MB in all, no Content-Length

    r = client.post("/predict", content=chunks(), headers={"content-type": "image/png"})
    assert r.status_code == 413
    assert "too large" in r.json()["detail"]


def test_body_just_under_the_limit_is_read(client):
    r = client.post("/predict", content=b"\x00" * (MAX_BODY - 10), headers={"content-type": "image/png"})
    assert r.status_code == 400  # read in full, then refused as not an image


@pytest.mark.parametrize(
    "headers",
    [
        {"content-type": "text/plain"},
        {"content-type": "application/xml"},
        {},
        {"content-type": "image/svg+xml"},
        {"content-type": "image/heic"},
    ],
)
def test_wrong_content_type_is_415(client, headers):
    r = client.post("/predict", content=b"7", headers=headers)
    assert r.status_code == 415
    assert "multipart/form-data" in r.json()["detail"]


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"this is not a picture", "not an image"),
        (b"", "empty file"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00", "truncated or corrupt"),
    ],
)
def test_undecodable_upload_is_400(client, payload, message):
    r = client.post("/predict", files={"file": ("x.png", payload, "image/png")})
    assert r.status_code == 400
    assert message in r.json()["detail"]


def test_blank_drawing_is_an_unsure_reading_with_no_digit(client):
    r = client.post("/predict", files={"file": ("blank.png", png(np.zeros((280, 280), np.uint8)), "image/png")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["digit"] is None and body["number"] is None and body["digits"] == []
    assert body["unsure"] is True and "no digit found" in body["reason"]


def test_bad_json_is_400(client):
    r = client.post("/predict", content=b'{"pixels": [[1, 2', headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["detail"]


def test_malformed_multipart_is_400(client):
    r = client.post("/predict", content=b"--nope\r\ngarbage", headers={"content-type": "multipart/form-data"})
    assert r.status_code == 400


@pytest.mark.parametrize(
    "body",
    [
        {"pixels": [[0] * 28] * 27},
        {"pixels": [[0] * 28] * 27 + [[0] * 27]},
        {"pixels": [[[0]] * 28] * 28},
        {"pixels": [["a"] * 28] * 28},
        {"pixels": [[300] * 28] * 28},
        {"pixels": [[-1] * 28] * 28},
        {"pixels": 7},
        {"digits": []},
        [1, 2, 3],
        {"pixels": [[0] * 28] * 28, "prepare": "yes"},
        {"pixels": [[0] * 2] * 2, "prepare": True},
    ],
)
def test_wrong_pixels_are_422(client, body):
    r = client.post("/predict", json=body)
    assert r.status_code == 422, r.text
    assert isinstance(r.json()["detail"], str)


def test_nan_pixels_are_422(client):
    body = json.dumps({"pixels": [[float("nan")] * 28] * 28})  # Python writes NaN, which json.loads reads
    r = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422 and "finite" in r.json()["detail"]


def test_missing_file_field_is_422(client):
    r = client.post("/predict", files={"image": ("x.png", b"abc", "image/png")})
    assert r.status_code == 422 and "'file'" in r.json()["detail"]


def test_server_is_still_healthy_after_the_mistakes(client):
    assert client.get("/healthz").status_code == 200
    assert client.get("/predict").status_code == 405


def test_serve_binds_localhost_by_default():
    from lenet5.cli import build_parser

    args = build_parser().parse_args(["serve", "--model", "model.safetensors"])
    assert (args.host, args.port) == ("127.0.0.1", 8000)


def test_serve_with_a_bad_model_is_one_line_and_exit_2(tmp_path):
    proc = lenet5("serve", "--model", tmp_path / "nope.safetensors", "--port", free_port(), timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1


def test_serve_on_a_port_in_use_is_one_line_and_exit_2(untrained_checkpoint):
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        proc = lenet5("serve", "--model", untrained_checkpoint, "--port", port, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: cannot serve on 127.0.0.1:{port}") and "Traceback" not in proc.stderr


def test_max_body_mb_sets_the_limit(untrained_checkpoint):
    """`serve --max-body-mb 1`: a 1.5 MB body is 413, and the answer names the flag."""
    with running_server(untrained_checkpoint, "--max-body-mb", "1") as (url, _pid):
        r = httpx.post(f"{url}/predict", content=b"\x00" * 1_500_000, headers={"content-type": "image/png"}, timeout=30)
    assert r.status_code == 413 and "limit is 1000000 bytes" in r.json()["detail"]


@pytest.mark.parametrize("value", ["0", "-3", "nan", "1000"])
def test_max_body_mb_out_of_range_is_one_line(value):
    result = lenet5("serve", "--max-body-mb", value, timeout=60)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "--max-body-mb must be between 1 and" in result.stderr


def test_json_body_with_unknown_keys_is_422(client, mnist):
    r = client.post("/predict", json={"pixels": mnist.test_images[0].tolist(), "invert": True})
    assert r.status_code == 422 and "invert" in r.json()["detail"]


def test_json_pixels_in_zero_to_one_are_refused_with_the_scale_to_use(client, mnist):
    r = client.post("/predict", json={"pixels": (mnist.test_images[0] / 255.0).tolist()})
    assert r.status_code == 422 and "0..255" in r.json()["detail"]
