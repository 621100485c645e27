"""The parameters of the step flows, as Prefect shows and validates them (and prefect.yaml sets).

Each model is derived from its step's options dataclass (``svcluster.flows.options.flow_params``):
the options marked as flow parameters, with the command's defaults and help, plus the fields of
the flow alone (how the work is split into tasks). ``to_options()`` converts back. Nothing
secret is a parameter: the API key and signing secret come from the environment of whatever
runs the flow (flow parameters are stored by the Prefect API).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from svcluster.flows.options import StepParams, flow_params
from svcluster.tasks.cluster.step import ClusterOptions
from svcluster.tasks.embed.step import EmbedOptions
from svcluster.tasks.fetch.step import FetchOptions

BATCH_LOCATIONS = (int, Field(100, ge=1, description="locations per Prefect task"))


class _FetchParamsBase(StepParams):
    def to_options(self, parallelism: int = 1, **overrides: Any) -> Any:
        """The step's ``FetchOptions``, with concurrency and qps split among ``parallelism`` batches."""
        share = max(1, parallelism)
        qps = self.qps / share if self.qps else 0.0  # type: ignore[attr-defined]
        return super().to_options(concurrency=max(1, self.concurrency // share), qps=qps, **overrides)  # type: ignore[attr-defined]


FetchParams = flow_params(
    FetchOptions, "FetchParams", "Which Street View views to fetch and how fast (see ``svcluster fetch --help``).",
    base=_FetchParamsBase,
    batch_locations=BATCH_LOCATIONS,
    concurrency_limit=(
        str | None,
        Field("svcluster-streetview", description="Prefect global concurrency limit taken by every fetch batch, when the server has one of that name"),
    ),
)  # fmt: skip

EmbedParams = flow_params(
    EmbedOptions, "EmbedParams", "Which image model turns views into vectors (see ``svcluster embed --help``).",
    batch_locations=BATCH_LOCATIONS,
)  # fmt: skip

ClusterParams = flow_params(
    ClusterOptions, "ClusterParams", "How to cluster a map's embeddings (see ``svcluster cluster --help``).",
    report=(
        bool,
        Field(True, description="name the clusters (models with a text tower), write the HTML report + PNG into the lake, link them in an artifact"),
    ),
)  # fmt: skip
