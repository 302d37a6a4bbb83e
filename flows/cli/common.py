"""What the commands share: the consoles, the run configuration and its store, flag types, the one-line error
messages for what the machine refuses, and how long inputs are quoted."""

from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path

from rich.console import Console

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"


def _console(stderr: bool) -> Console:
    """A terminal gets tables at its own width; a pipe or a log file (CI, `| tee`, Prefect workers) gets them
    in full, where rich would otherwise cut every column to fit 80 characters (keys, store locations)."""
    stream = sys.stderr if stderr else sys.stdout
    wide = not stream.isatty() and "COLUMNS" not in os.environ
    return Console(stderr=stderr, width=240 if wide else None)


console = _console(stderr=False)
err_console = _console(stderr=True)


def environment() -> None:
    """Quiet, offline-friendly defaults, set before prefect/transformers/deepspeed are imported."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if not Path("/proc/driver/nvidia").exists():  # no NVIDIA driver: DeepSpeed would warn at every start that it
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # falls back to the CPU (torch is not imported yet to ask)
    if not os.environ.get("PREFECT_API_URL"):
        # Ephemeral API: the temporary server is torn down at exit while it may still be flushing event
        # batches; its shutdown tracebacks are noise for a CLI user, so the server's own loggers stay
        # quiet (flow and task logs are unaffected).
        os.environ.setdefault("PREFECT_LOGGING_LOGGERS_PREFECT_SERVER_LEVEL", "CRITICAL")
        # Prefect waits 20 s for its temporary server; on a busy machine it takes longer to start
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")


def load_run_config(args) -> RunConfig:  # noqa: F821 - imported lazily below
    """The run configuration, checked in full (files it names included) before anything heavy is imported."""
    from linguaforge.flows.config import load_config
    from linguaforge.flows.preflight import check_run

    path = args.config or (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)
    cfg = load_config(path, getattr(args, "overrides", None) or [])
    if getattr(args, "store", None) is not None:
        cfg.store.url = args.store
    if args.command == "run":
        check_run(cfg, str(path or "the embedded demo"))
    return cfg


def open_run_store(cfg, create: bool = False):
    """The run's store. Read-only commands leave `create` off: a mistyped path must not become an empty store."""
    from linguaforge.storage.settings import open_store

    return open_store(cfg.store, create=create)


def debugging(args) -> bool:
    return bool(getattr(args, "debug", False)) or os.environ.get("LINGUAFORGE_DEBUG") == "1"


def check_prefect_api() -> None:
    """With PREFECT_API_URL set, the server must answer before anything runs; without it, Prefect starts a
    temporary one for this process."""
    import urllib.request

    url = os.environ.get("PREFECT_API_URL")
    if not url:
        return
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=5) as response:
            if response.status == 200:
                return
    except OSError as exc:
        reason = str(getattr(exc, "reason", exc))
    else:
        reason = f"HTTP {response.status}"
    raise PrefectUnreachable(f"no Prefect server answers at PREFECT_API_URL={url} ({reason}); start one with "
                             "`linguaforge server`, or unset PREFECT_API_URL to run on a temporary server")


class PrefectUnreachable(RuntimeError):
    pass


def store_command(sub, name: str, help_text: str) -> argparse.ArgumentParser:
    """A command that works on the store a run configuration (or --store) names."""
    command = sub.add_parser(name, help=help_text)
    command.add_argument("config", nargs="?", help="YAML run configuration naming the store")
    command.add_argument("--store", help="artifact store URL (overrides store.url)")
    return command


def warn_unreadable(store, kind: str | None = None) -> None:
    """Manifests that cannot be read are named, never a reason to stop listing the others."""
    if bad := store.unreadable(kind):
        err_console.print(f"[yellow]{len(bad)} artifact(s) with an unreadable manifest, left out:[/] "
                          f"{', '.join(sorted(bad)[:5])}{' …' if len(bad) > 5 else ''} (`linguaforge verify` "
                          "says why; `verify --repair` removes them)", highlight=False)


def languages_flag(value: str) -> list[str]:
    from linguaforge.pipelines.languages import check_languages

    return check_languages([c.strip() for c in value.split(",")], "--languages")  # the config's own check


def benchmarks_flag(value: str) -> list[str]:
    """mgsm,msvamp → ["mgsm", "msvamp"]: every name known, none twice."""
    from linguaforge.pipelines.benchmarks.registry import BENCHMARKS

    names = [v.strip() for v in value.split(",") if v.strip()]
    if unknown := [n for n in names if n not in BENCHMARKS]:
        raise argparse.ArgumentTypeError(f"{unknown[0]!r} is not a benchmark ({', '.join(BENCHMARKS)})")
    if not names or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError("name each benchmark once, comma-separated (mgsm,msvamp)")
    return names


def at_least_one(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def devices_flag(value: str) -> list[str]:
    """0,1 → cuda:0,cuda:1; names (cpu, cuda:N) as they are; each checked like --device."""
    from linguaforge.pipelines.devices import check_device
    from linguaforge.pipelines.errors import InputError

    devices = [f"cuda:{d}" if d.strip().isdigit() else d.strip() for d in value.split(",") if d.strip()]
    try:
        for device in devices:
            check_device(device, "--devices")
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--devices: ")) from None
    if not devices:
        raise argparse.ArgumentTypeError("names no device")
    return devices


def batch_size_flag(value: str) -> int | str:
    return value if value == "auto" else at_least_one(value)


def cron_flag(value: str) -> str:
    """The deployment's schedule, checked by the same rule Prefect applies when it stores it (names such as
    MON and JAN and macros such as @daily are valid cron), so a bad one is refused before anything starts."""
    if value == "none":
        return value
    import pydantic
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=value)
    except pydantic.ValidationError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a cron expression (minute hour day month weekday, "
                                         "e.g. '0 2 * * *' or '0 2 * * MON'), nor 'none'") from None
    return value


def short(uri: str) -> str:
    """Local paths relative to the working directory; URLs as they are."""
    try:
        return os.path.relpath(uri) if "://" not in uri else uri
    except ValueError:
        return uri


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)

OS_ERRORS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
             errno.EROFS: "the filesystem is read-only", errno.EACCES: "permission denied",
             errno.EPERM: "operation not permitted", errno.ENOENT: "no such file or folder",
             errno.ENOTDIR: "a part of the path is a file, not a folder", errno.EISDIR: "is a folder, not a file",
             errno.ENAMETOOLONG: "the name is too long", errno.EMFILE: "too many open files",
             errno.EIO: "an input/output error from the device"}


def os_error_message(exc: OSError) -> str:
    """What the machine refused, where, and what to do: one line instead of a traceback."""
    where = exc.filename if exc.filename is not None else "a file"
    return (f"{where}: {OS_ERRORS[exc.errno]}; the command stopped there (what it commits is whole or absent): "
            "fix that and run the same command again")


def clip(message: str, limit: int = 2000) -> str:
    """A message quotes the bad input, which can be huge: keep its head."""
    return message if len(message) <= limit else f"{message[:limit]}… ({len(message) - limit} more characters)"

