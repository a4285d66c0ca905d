"""JSON that every parser reads: NaN and infinities (an empty test set's accuracy, a diverged loss) become null."""

from __future__ import annotations

import json
import math
from typing import Any


def finite(obj: Any) -> Any:
    """The same structure with every non-finite float replaced by None (numpy scalars become Python numbers)."""
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:  # numpy scalar
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def dumps(obj: Any, indent: int | None = 2) -> str:
    """Strict JSON (never NaN or Infinity) of obj."""
    return json.dumps(finite(obj), indent=indent, allow_nan=False)
