"""JSON values in one spelling: what pinned tool definitions and approvals' arguments compare as.

A whole float is its integer (``1.0`` and ``1e0`` are ``1``; up to 2**63, beyond which the float is kept as
it is), keys are text, and anything that is not JSON is its text. Imports nothing of ours.
"""

from __future__ import annotations

import math
from typing import Any


def canonical(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer() and abs(value) < 2**63:
            return int(value)
        return value
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return str(value)
