"""Per-input merge settings (a weight, a density) as mergekit writes them, evaluated per tensor. Torch-free.

    weight: 0.5                                   a number
    weight: [0, 0.3, 0.7, 1]                      a gradient over the layers: interpolated at t = layer / (layers − 1),
                                                  t = 0 for the tensors outside the layers (embeddings, final norm, head)
    weight: [{filter: mlp, value: 0.5}, {value: 0}]   filter rules: the first whose filter is in the tensor's name
"""

from __future__ import annotations

import math
import re
from typing import Any

from linguaforge.pipelines.errors import InputError

Setting = Any  # float | list[float] | list[{filter, value}]
_LAYER = re.compile(r"(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)\.")


def layer_position(names: list[str]) -> dict[str, float]:
    """t per tensor, as mergekit computes it for gradient settings: layer / (layers − 1) inside the layers (1 for
    a single layer), 0 for the embeddings, final norm and head."""
    layers = {n: int(m.group(1)) for n in names if (m := _LAYER.search(n))}
    count = max(layers.values(), default=-1) + 1
    return {n: (layers[n] / (count - 1) if count > 1 else 1.0) if n in layers else 0.0 for n in names}


def setting_value(setting: Setting, name: str, t: float, label: str) -> float:
    """A per-input setting's value for one tensor (mergekit's rules: gradients interpolated at t, filters by
    substring of the tensor name, the first match wins)."""
    if isinstance(setting, bool) or setting is None:
        raise InputError(f"{label}: {setting!r} is not a number")
    if isinstance(setting, int | float):
        if not math.isfinite(setting):
            raise InputError(f"{label}: {setting} is not a finite number")
        return float(setting)
    if isinstance(setting, list) and setting and all(isinstance(v, int | float) and not isinstance(v, bool)
                                                     for v in setting):
        scaled = t * (len(setting) - 1)
        low = int(scaled)
        high = min(len(setting) - 1, low + 1)
        return setting_value((1 - (scaled - low)) * setting[low] + (scaled - low) * setting[high], name, t, label)
    if isinstance(setting, list) and setting and all(isinstance(v, dict) for v in setting):
        for rule in setting:
            pattern = rule.get("filter")
            if pattern in (None, "*") or pattern in name:
                if "value" not in rule:
                    raise InputError(f"{label}: a filter rule needs a value, got {rule}")
                return setting_value(rule["value"], name, t, label)
        raise InputError(f"{label}: no filter rule matches tensor {name} (add a rule without a filter)")
    raise InputError(f"{label}: {setting!r} is not a number, a gradient list or a list of filter rules")


def check_setting(setting: Setting, label: str) -> Setting:
    """Refuse a malformed setting before any weight is read (the values it can take are checked as well)."""
    if isinstance(setting, list) and setting and all(isinstance(v, dict) for v in setting):
        for rule in setting:
            unknown = set(rule) - {"filter", "value"}
            if unknown or "value" not in rule:
                raise InputError(f"{label}: a filter rule has a `value` and an optional `filter`, got {rule}")
            check_setting(rule["value"], label)
        return setting
    setting_value(setting, "", 0.0, label)
    if isinstance(setting, list):
        for v in setting:
            setting_value(v, "", 0.0, label)
    return setting
