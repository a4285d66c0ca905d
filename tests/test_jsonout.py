"""--json and metrics.json are strict JSON: NaN and infinities (an empty test set, a diverged loss) are null."""

from __future__ import annotations

import json

import numpy as np

from lenet5.jsonout import dumps


def test_non_finite_numbers_become_null_and_the_text_is_strict_json():
    text = dumps(
        {
            "accuracy": float("nan"),
            "loss": [np.float32("inf"), -np.inf],
            "seen": np.int64(3),
            "ok": np.float64(0.5),
            "nested": {"x": (float("-inf"), 1.0)},
        }
    )
    assert "NaN" not in text and "Infinity" not in text
    doc = json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
    assert doc == {"accuracy": None, "loss": [None, None], "seen": 3, "ok": 0.5, "nested": {"x": [None, 1.0]}}
