"""What every stage task shares: the store-is-the-truth skip, execution records, sources, retry policy.

A stage task computes its artifact key from (stage, version, params, input digests); if the store already
has that key committed, the stage is skipped — whatever Prefect's own database remembers or forgot.
Otherwise it runs the science in `pipelines/` into a staging folder and commits it, manifest last.
"""

from __future__ import annotations

import errno
import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import INPUTS, TASK_SOURCE, CachePolicy
from prefect.context import FlowRunContext, TaskRunContext
from pydantic import BaseModel

from linguaforge.pipelines.errors import InputError
from linguaforge.pipelines.locations import resolve_model_dir
from linguaforge.pipelines.memory import is_oom
from linguaforge.pipelines.settings import DEMO_PREFIX
from linguaforge.storage import ArtifactRef, ArtifactStore, ArtifactWriter, StoreError
from linguaforge.storage.settings import StoreConfig, open_store  # noqa: F401 - tasks open stores from here
from linguaforge.tasks.progress import stage_finished, ui_artifact

MODEL_FOLDER = "model"  # where an artifact that holds a whole model (HF folder) keeps it


class RunContext(BaseModel):
    """What a stage task needs of its run besides its own settings: the store, the seed, the languages and how
    models load. The flows build it from the run configuration; a task never sees the whole configuration,
    so its inputs (and Prefect's cache key) are its own settings and this, nothing else."""

    name: str = "demo"
    seed: int = 0
    store: StoreConfig = StoreConfig()
    pivot_language: str = "en"
    languages: list[str] = ["de", "zh", "sw", "bn"]
    dtype: str = "float32"
    tokenizer: str | None = None
    device: str = "auto"  # where this run's stages compute (a stage's own setting wins: pipelines/devices.py)
    gpus_per_node: int | None = None  # GPU slots (tasks/gpu_slots.py); None: no limit
    trackers: list[str] = []  # metric loggers (pipelines/tracking.py) and where they write
    tracking_folder: str = ""

    def tracker(self, stage: str, w: ArtifactWriter | None = None):
        """The metric loggers of one stage, a run of its own named by the stage and its artifact key."""
        from linguaforge.pipelines.tracking import open_trackers

        key = f"-{w.checkpoints.key[:8]}" if w is not None else ""
        return open_trackers(self.trackers, self.tracking_folder or ".", f"{stage}{key}", experiment=self.name)

    @property
    def all_languages(self) -> list[str]:
        """Pivot first, then the targets."""
        return [self.pivot_language, *self.languages]


class Source(BaseModel):
    """A stage input that is either a file/folder inside a committed artifact, or an external URI
    (HF hub id, local path, s3:// URL). Artifacts enter the stage key by digest, URIs by value."""

    ref: ArtifactRef | None = None
    path: str = ""
    uri: str | None = None

    @classmethod
    def of(cls, ref: ArtifactRef, path: str = "") -> Source:
        return cls(ref=ref, path=path)

    @property
    def label(self) -> str:
        return f"{self.ref}/{self.path}".rstrip("/") if self.ref else str(self.uri)

    def key_parts(self, name: str) -> tuple[dict[str, Any], dict[str, ArtifactRef]]:
        if self.ref is not None:
            return {name: {"artifact_path": self.path}}, {name: self.ref}
        return {name: {"uri": self.uri}}, {}

    def local(self, store: ArtifactStore, folder: bool = True) -> str:
        """A local path (verified, cached for remote stores) or, for hub ids, the id itself."""
        if self.ref is not None:
            reader = store.open(self.ref)
            return str(reader.dir(self.path) if folder else reader.path(self.path))
        return resolve_model_dir(self.uri, store.cache_dir) if folder else str(self.uri)


def demo_source(uri: str, world: ArtifactRef | None, suffix: str = "") -> Source:
    """Map a `demo:<path>` URI to the file inside the demo-world artifact; other URIs pass through."""
    if not uri.startswith(DEMO_PREFIX):
        return Source(uri=uri)
    if world is None:
        raise InputError(f"{uri} names the demo world, but this run has no demo world (demo: null)")
    return Source(ref=world, path=uri.removeprefix(DEMO_PREFIX) + suffix)


def stage_key_parts(params: dict[str, Any], sources: dict[str, Source]) -> tuple[dict, dict[str, ArtifactRef]]:
    params, inputs = dict(params), {}
    for name, source in sources.items():
        if name in params:  # a source must not silently overwrite a parameter of the same name
            raise ValueError(f"stage input {name!r} collides with a parameter of the same name")
        p, i = source.key_parts(name)
        params |= p
        inputs |= i
    return params, inputs


# the machine refusing (a full or read-only disk, permissions): another attempt fails the same way
_PERMANENT_OS_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT,
                        errno.ENOTDIR, errno.EISDIR}


def retry_transient(task, task_run, state) -> bool:
    """Retry I/O and service hiccups; never retry bad input, which fails the same way every time."""
    try:
        state.result()
    except (InputError, StoreError, ValueError, TypeError, KeyError):
        return False
    except Exception as exc:  # noqa: BLE001 - sorted below
        if is_oom(exc):  # handled where it happens (smaller batches); the same attempt again would fail the same way
            return False
        if not isinstance(exc, OSError):
            return True  # anything else (network, OOM-killer'd worker, S3 5xx) may pass
        return exc.errno not in _PERMANENT_OS_ERRORS
    return False


def refs_in(value: Any) -> Iterator[ArtifactRef]:
    """Every artifact reference inside a task result (a ref, or dicts, lists and models holding refs)."""
    if isinstance(value, ArtifactRef):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from refs_in(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from refs_in(item)
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from refs_in(getattr(value, name))


@dataclass
class VerifiedCache(CachePolicy):
    """Prefect's cache, trusted only while the store still holds what the cached result points to.

    On a hit whose artifacts are gone or damaged (`ArtifactStore.damage`), the key moves on to a
    successor key (deterministically), so the task runs again and re-makes the artifact; the next run
    follows the same chain to the new, valid result. Nothing stale is ever handed to a later stage."""

    inner: CachePolicy | None = None

    def compute_key(self, task_ctx, inputs, flow_parameters, **kwargs) -> str | None:
        key = self.inner.compute_key(task_ctx=task_ctx, inputs=inputs, flow_parameters=flow_parameters, **kwargs)
        ctx, results = inputs.get("ctx"), getattr(task_ctx, "result_store", None)
        if key is None or ctx is None or results is None:
            return key
        store = open_store(ctx.store)
        # the cache belongs to its store: two folders with the same relative store URL share one PREFECT_HOME's
        # results, so the store's absolute location enters the key (a copied store is another store)
        key = hashlib.sha256(f"{key}|store={store.url}".encode()).hexdigest()
        key, gone = self._follow(key, results, store)
        if gone and key not in _WARNED:  # one warning per task, however long the chain and however often
            _WARNED.add(key)              # Prefect asks for the key
            get_run_logger().warning("%s: the cached result is no longer in the store (%s); re-making it",
                                     task_ctx.task.name, gone)
        return key

    @staticmethod
    def _follow(key: str, results, store: ArtifactStore) -> tuple[str, str | None]:
        """The first key of the chain whose record is missing, unreadable or intact, and the damage of the
        first record that pointed at a gone artifact (None when the first one is intact or missing)."""
        gone = None
        for _ in range(_MAX_REMAKES):
            if not results.exists(key):
                return key, gone
            try:
                cached = results.read(key).result
            except Exception:  # noqa: BLE001 - an unreadable record is a miss, whatever the reason
                return _successor(key), gone
            damage = next(filter(None, (_foreign(ref, store) or store.damage(ref) for ref in refs_in(cached))), None)
            if damage is None:
                return key, gone
            gone = gone or damage
            key = _successor(key)
        return key, gone


def _foreign(ref: ArtifactRef, store: ArtifactStore) -> str | None:
    """A cached reference into another store is never handed to a stage of this one."""
    if ref.uri != store.uri(ref.kind, ref.key):
        return f"artifact {ref} is cached from another store ({ref.uri})"
    return None


_MAX_REMAKES = 16
_WARNED: set[str] = set()


def _successor(key: str) -> str:
    return hashlib.sha256(f"{key}:remade".encode()).hexdigest()


# Prefect's cache on top of the store: keyed by the task's inputs and code, never the run id, so a fresh
# run with the same configuration reuses every result; each hit is checked against the store first.
# Results are artifact refs, serialised as JSON (no pickle). On a miss the task still skips committed
# artifacts (run_stage).
@dataclass
class StageVersion(CachePolicy):
    """The stage's declared version in Prefect's cache key, as it is in the store's: a version bump (the artifact's
    content or meaning changed) re-runs the stage even where Prefect remembers a result. Without it, a bump that
    left the task function's source unchanged was served the old artifact from Prefect's cache."""

    version: str = ""

    def compute_key(self, task_ctx, inputs, flow_parameters, **kwargs) -> str:
        return hashlib.sha256(self.version.encode()).hexdigest()


STAGE_CACHE_POLICY = VerifiedCache(inner=INPUTS + TASK_SOURCE)


@dataclass(frozen=True)
class StageSpec:
    """A stage, declared once beside its task: its name and version (in the artifact key and in Prefect's cache
    key), the artifact kind it commits, the files of that artifact that other stages read (their named constants),
    and the settings fields it does not read (kept out of its key). `settings` and `params`, where the stage's key
    is a function of the run context and one settings model alone, let the key test change every field of those
    settings and check that the key follows, with no list in the test to keep. `version` None: a helper task that
    commits no artifact (cached by its inputs alone)."""

    name: str
    version: int | None = None
    kind: str | None = None
    files: tuple[str, ...] = ()
    ignores: frozenset[str] = frozenset()
    settings: type[BaseModel] | None = None
    params: Callable[[RunContext, Any], dict] | None = None
    run_name: str | None = None  # Prefect's task-run name template, e.g. "probe-{name}"


STAGE_SPECS: dict[str, StageSpec] = {}  # every declared stage by name: the key test and the docs read it


def stage_task(spec: StageSpec, *, retries: int = 2, **options):
    """The decorator of every stage task: cached as above (with the stage's version, for the stages that commit a
    versioned artifact), retried on transient faults only; the task carries its spec (`task.spec`)."""
    if STAGE_SPECS.setdefault(spec.name, spec) != spec:
        raise ValueError(f"stage {spec.name!r} is declared twice, differently")
    policy = STAGE_CACHE_POLICY if spec.version is None else VerifiedCache(
        inner=INPUTS + TASK_SOURCE + StageVersion(version=f"{spec.name}/{spec.version}"))
    if spec.run_name:
        options.setdefault("task_run_name", spec.run_name)

    def decorate(fn):
        stage = task(name=spec.name, retries=retries, retry_condition_fn=retry_transient, cache_policy=policy,
                     persist_result=True, result_serializer="json", **options)(fn)
        stage.spec = spec
        return stage

    return decorate


def _run_ids() -> dict[str, str]:
    ids = {}
    if (flow_ctx := FlowRunContext.get()) and flow_ctx.flow_run:
        ids["flow_run_id"] = str(flow_ctx.flow_run.id)
    if (task_ctx := TaskRunContext.get()) and task_ctx.task_run:
        ids["task_run_id"] = str(task_ctx.task_run.id)
    return ids


def run_stage(
    store: ArtifactStore,
    spec: StageSpec,
    *,
    params: dict[str, Any],
    sources: dict[str, Source] | None = None,
    build: Callable[[ArtifactWriter], None],
    describe: Callable[[ArtifactWriter], str] | None = None,
) -> ArtifactRef:
    """Skip if committed; else build into a staging folder, commit, and record the execution."""
    logger = get_run_logger()
    kind, stage, version = spec.kind, spec.name, spec.version
    full_params, inputs = stage_key_parts(params, sources or {})
    key = store.key(stage, version, full_params, inputs)
    if store.exists(kind, key):
        ref = store.ref(kind, key, reused=True)
        if (damage := store.damage(ref)) is None:
            logger.info("%s: skipped, %s/%s is already committed", stage, kind, key)
            stage_finished(stage, reused=True)
            return ref
        logger.warning("%s: %s; removing it and making it again", stage, damage)
        store.delete(kind, key)
    ids = _run_ids()
    store.record_event(kind, key, "started", stage=stage, **ids)
    began = time.perf_counter()
    try:
        with store.writer(kind, key, stage=stage, stage_version=version, params=full_params, inputs=inputs) as w:
            build(w)
            w.metrics.setdefault("seconds", round(time.perf_counter() - began, 2))
            description = describe(w) if describe is not None else None  # staging files vanish on commit
    except BaseException as exc:
        try:  # the record of a failure must never hide the failure (a store that turned read-only refuses both)
            store.record_event(kind, key, "failed", stage=stage, error=f"{type(exc).__name__}: {exc}"[:2000], **ids)
        except Exception as record_error:  # noqa: BLE001
            logger.warning("%s: could not record the failure in the store (%s)", stage, record_error)
        raise
    if w.ref.reused:  # another process committed the same key while this one built it: theirs stands
        store.record_event(kind, key, "superseded", stage=stage, **ids)
        logger.info("%s: %s/%s was committed by another run meanwhile; using that one", stage, kind, key)
        stage_finished(stage, reused=True)
        return w.ref
    store.record_event(kind, key, "committed", stage=stage, seconds=w.metrics["seconds"], **ids)
    logger.info("%s: committed %s in %.1fs", stage, w.ref.uri, w.metrics["seconds"])
    _publish(stage, kind, w, description)
    stage_finished(stage, reused=False)
    return w.ref


def _publish(stage: str, kind: str, writer: ArtifactWriter, description: str | None) -> None:
    """A markdown artifact in the Prefect UI: what the stage made, where, and its key metrics."""
    lines = [f"### {stage}", "", f"**artifact** `{writer.ref.uri}`", ""]
    if description:
        lines += [description, ""]
    scalars = {k: v for k, v in writer.metrics.items() if isinstance(v, int | float | str | bool)}
    if scalars:
        lines += ["| metric | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in scalars.items()]
    ui_artifact(create_markdown_artifact, "\n".join(lines), key=ui_key(f"{kind}-{writer.ref.key[:12]}"),
                description=f"{stage} output")


def ui_key(text: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-")
