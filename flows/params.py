"""The parameters of the step flows, as Prefect shows and validates them (and prefect.yaml sets).

Each model mirrors the options dataclass of its step in ``tasks/`` and converts to it with
``to_options()``; only the fields listed here are settable from a flow run, the rest keep the
step's defaults. Nothing secret is a parameter: the API key and signing secret come from the
environment of whatever runs the flow (flow parameters are stored by the Prefect API).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class FetchParams(BaseModel):
    """Which Street View views to fetch and how fast (see ``svcluster fetch --help``)."""

    headings: list[int] = Field(default_factory=lambda: [0, 90, 180, 270], description="compass headings per location")
    size: str = Field("640x640", description="image size WIDTHxHEIGHT (max 640x640)")
    fov: float = Field(90.0, description="horizontal field of view, degrees")
    pitch: float = Field(0.0, description="camera pitch, degrees")
    concurrency: int = Field(16, ge=1, le=512, description="requests in flight, shared by the batches running at once")
    qps: float = Field(100.0, ge=0, description="request starts per second, shared by the batches running at once (0 = unlimited)")
    max_retries: int = Field(5, ge=0, description="retries per request on 429/5xx/timeouts")
    official_only: bool = Field(False, description="buy no image of a third-party photosphere (recorded 'skipped')")
    source: Literal["default", "outdoor"] | None = Field(None, description="Google's source for location lookups (outdoor: no photospheres)")
    batch_locations: int = Field(100, ge=1, description="locations per Prefect task")
    concurrency_limit: str | None = Field(
        "svcluster-streetview",
        description="Prefect global concurrency limit taken by every fetch batch, when the server has one of that name",
    )

    def to_options(self, parallelism: int = 1) -> Any:
        """The step's ``FetchOptions``, with concurrency and qps split among ``parallelism`` batches."""
        from svcluster.tasks.fetch.step import FetchOptions

        share = max(1, parallelism)
        return FetchOptions(
            headings=tuple(self.headings),
            size=self.size,
            fov=self.fov,
            pitch=self.pitch,
            concurrency=max(1, self.concurrency // share),
            qps=self.qps / share if self.qps else 0.0,
            max_retries=self.max_retries,
            official_only=self.official_only,
            source=self.source,
        ).checked()


class EmbedParams(BaseModel):
    """Which image model turns views into vectors (see ``svcluster embed --help``)."""

    model: str = Field("geolocal/StreetCLIP", description="Hugging Face CLIP id, local folder, or 'baseline' (no weights)")
    pooling: Literal["mean", "stitched"] = Field("mean", description="how a location's views become one vector")
    batch_size: int = Field(32, ge=1, description="images per model forward pass")
    device: str = Field("auto", description="auto | cpu | cuda | mps")
    precision: str = Field("auto", description="auto | fp32 | bf16 | fp16 | int8")
    batch_locations: int = Field(100, ge=1, description="locations per Prefect task")
    size: str | None = Field(None, description="embed the views of this size WIDTHxHEIGHT (default: the map's latest fetch's)")
    fov: float | None = Field(None, description="embed the views of this field of view (default: the map's latest fetch's)")
    pitch: float | None = Field(None, description="embed the views of this pitch (default: the map's latest fetch's)")

    def to_options(self) -> Any:
        from svcluster.tasks.embed.step import EmbedOptions

        return EmbedOptions(
            model=self.model, pooling=self.pooling, batch_size=self.batch_size, device=self.device, precision=self.precision,
            size=self.size, fov=self.fov, pitch=self.pitch,
        )  # fmt: skip


class ClusterParams(BaseModel):
    """How to cluster a map's embeddings (see ``svcluster cluster --help``)."""

    model: str | None = Field(None, description="embeddings of this model (default: the one embedded last)")
    pooling: str | None = Field(None, description="embeddings of this pooling (default: as for model)")
    precision: str | None = Field(None, description="embeddings of this precision (default: any one)")
    k: int = Field(5, ge=2, description="number of clusters (ignored when ks is set)")
    ks: list[int] | None = Field(None, description="sweep these k values; each is its own run")
    pca_dims: int | None = Field(None, ge=1, description="reduce to this many dimensions first")
    algorithm: Literal["kmeans", "minibatch"] = Field("kmeans", description="kmeans | minibatch")
    seed: int = Field(42, description="random seed (same seed and input, same clusters)")
    report: bool = Field(
        True, description="name the clusters (models with a text tower), write the HTML report + PNG into the lake, link them in an artifact"
    )

    def to_options(self) -> Any:
        from svcluster.tasks.cluster.step import ClusterOptions

        return ClusterOptions(
            model=self.model,
            pooling=self.pooling,
            precision=self.precision,
            k=self.k if self.k is not None else 5,
            ks=sorted(set(self.ks)) if self.ks else None,
            pca_dims=self.pca_dims,
            algorithm=self.algorithm,
            seed=self.seed,
        )
