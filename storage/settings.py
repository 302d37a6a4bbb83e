"""The store's settings: the run configuration's `store:` section (flows/config.py composes it)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from linguaforge.storage.store import ArtifactStore, credential_paths


def no_credentials(options: dict[str, Any]) -> dict[str, Any]:
    """A validator for every storage_options field: credentials at any depth are refused, so that none reaches a
    configuration file, a manifest, a log or Prefect's database."""
    if found := credential_paths(options):
        raise ValueError(f"holds credentials ({', '.join(found)}): set them in the environment "
                         "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ...) instead, never in a configuration")
    return options


class StoreConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    url: str = Field(
        "./.linguaforge/store",
        title="Store URL",
        description="Where artifacts live: a local folder, s3://bucket/prefix (AWS, MinIO), gs://bucket/prefix, "
        "or memory://name. Credentials come from the environment (AWS_ACCESS_KEY_ID, ...), never from here.",
    )
    cache_dir: str = Field("./.linguaforge/cache", description="Local cache of files read from a remote store.")
    storage_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra fsspec options, e.g. {endpoint_url: http://minio:9000}. No credentials.",
    )
    @field_validator("storage_options")
    @classmethod
    def _no_credentials(cls, options: dict) -> dict:
        return no_credentials(options)

    staging_lease_hours: float = Field(
        6.0, gt=0, le=24 * 30, allow_inf_nan=False,
        description="A staging folder of a writer on another host is removed only after its heartbeat (touched "
        "every minute while it writes) has been silent this long. Keep it far above the longest pause a writer "
        "can have (a checkpoint save of a large model).")


def open_store(cfg: StoreConfig, create: bool = True) -> ArtifactStore:
    """The store these settings name: one object per (settings, create) per process, so that its verified-file
    memo is shared by every stage. `create=False` for read-only commands: a mistyped path must not become an
    empty store. Keyed by the settings as JSON, since storage options nest (client_kwargs: {...})."""
    return _open(cfg.model_dump_json(), create)


@lru_cache(maxsize=8)
def _open(settings_json: str, create: bool) -> ArtifactStore:
    cfg = StoreConfig.model_validate_json(settings_json)
    return ArtifactStore(cfg.url, cache_dir=cfg.cache_dir, storage_options=cfg.storage_options, create=create,
                         staging_lease_s=cfg.staging_lease_hours * 3600)
