"""Where models compute: one device setting, honoured by every stage that computes.

    auto      CUDA when this machine has it (cuda:0, or the GPU a slot pinned), else the CPU
    cpu       the CPU, even on a GPU machine
    cuda      the first visible GPU; refused on a machine without CUDA
    cuda:N    GPU N; refused when there is no such GPU

The setting is checked before anything runs (`check_device`, at preflight); `cuda` on a machine without CUDA is
refused with one line, never run on the CPU instead.
"""

from __future__ import annotations

import re

from linguaforge.pipelines.errors import InputError

DEVICE_PATTERN = r"^(auto|cpu|cuda(:\d+)?)$"
_PATTERN = re.compile(DEVICE_PATTERN)


def check_device(setting: str, where: str = "device") -> None:
    """Refuse a device this machine does not have (imports torch only for a CUDA setting)."""
    if not isinstance(setting, str) or not _PATTERN.fullmatch(setting):
        raise InputError(f"{where}: {setting!r} is not a device (auto, cpu, cuda or cuda:N)")
    if not setting.startswith("cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        raise InputError(f"{where}: {setting} asked for, but this machine has no CUDA device (torch "
                         f"{torch.__version__}, CUDA build: {torch.version.cuda or 'none'}); use auto or cpu")
    index = int(setting.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise InputError(f"{where}: {setting} asked for, but this machine has {torch.cuda.device_count()} "
                         f"CUDA device(s) (cuda:0 to cuda:{torch.cuda.device_count() - 1})")


def resolve_device(setting: str | None = "auto", where: str = "device"):
    """The torch.device a setting names (None: auto)."""
    import torch

    setting = setting or "auto"
    check_device(setting, where)
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


def stage_device(own: str | None, run_wide: str) -> str:
    """A stage's device: its own setting when it has one, else the run's."""
    return own or run_wide
