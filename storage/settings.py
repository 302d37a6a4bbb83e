"""The store's settings: the run configuration's `store:` section (flows/config.py composes it)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


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
