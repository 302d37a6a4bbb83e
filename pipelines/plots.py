"""Plots people would rather look at than numbers: loss curves now, comparison charts in the report."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: workers have no display
import matplotlib.pyplot as plt  # noqa: E402


def loss_curve(losses: list[float], path: Path, title: str, dev: dict[int, float] | None = None) -> Path:
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=110)
    ax.plot(range(1, len(losses) + 1), losses, lw=1.2, label="train")
    if dev:
        ax.plot(list(dev), list(dev.values()), "o-", lw=1.2, label="dev")
        ax.legend()
    ax.set(title=title, xlabel="optimizer step", ylabel="loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
