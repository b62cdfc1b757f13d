"""Prometheus metrics, served at ``GET /metrics`` (public, like the probes: no secret, no text in them).

Each app has its own ``CollectorRegistry`` (tests run several apps in one process). Chat requests
report their time to first token, time per output token (vLLM's TPOT: the time after the first token
divided by the tokens after it) and token counts; refusals (429, 503) and safety blocks are counted;
queue length, running requests and draft tokens are read from the backends when Prometheus scrapes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from litestar import Request, get
from litestar.datastructures import State
from litestar.response import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from assistant.backends.base import Backend

#: Seconds; small models on a CPU answer in tens of milliseconds per token, large ones queue for seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class _Batches(Collector):
    """Queue length and running requests of every backend that schedules its own batch."""

    def __init__(self, serving: Callable[[], dict[str, Backend]]) -> None:
        self._serving = serving

    def collect(self) -> Iterator[Metric]:
        waiting = GaugeMetricFamily(
            "assistant_queue_length", "Requests waiting for a place in the batch", labels=["model"]
        )
        running = GaugeMetricFamily(
            "assistant_running_requests", "Requests being generated", labels=["model"]
        )
        drafted = CounterMetricFamily(
            "assistant_draft_tokens", "Draft tokens of answer openings prefilled", labels=["model"]
        )
        accepted = CounterMetricFamily(
            "assistant_draft_tokens_accepted", "Draft tokens the model confirmed", labels=["model"]
        )
        for name, backend in self._serving().items():
            if (stats := backend.batch_stats()) is not None:
                waiting.add_metric([name], stats.waiting)
                running.add_metric([name], stats.running)
                drafted.add_metric([name], stats.drafted)
                accepted.add_metric([name], stats.drafts_accepted)
        yield from (waiting, running, drafted, accepted)


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.time_to_first_token = Histogram(
            "assistant_time_to_first_token_seconds",
            "From the request's arrival to its first answer text",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.time_per_output_token = Histogram(
            "assistant_time_per_output_token_seconds",
            "Inter-token latency: per request, the time after its first token over the tokens after it",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.prompt_tokens = Counter(
            "assistant_prompt_tokens", "Prompt tokens of answered requests", ["model"], registry=self.registry
        )
        self.completion_tokens = Counter(
            "assistant_completion_tokens", "Tokens generated", ["model"], registry=self.registry
        )
        self.requests = Counter(
            "assistant_requests", "Answered chat requests", ["model", "finish_reason"], registry=self.registry
        )
        self.rejections = Counter(
            "assistant_rejections",
            "Requests refused: queue full (429) or model not ready (503)",
            ["reason"],
            registry=self.registry,
        )
        self.safety_blocks = Counter(
            "assistant_safety_blocks",
            "Texts the safety layer blocked",
            ["direction", "category"],
            registry=self.registry,
        )

    def watch(self, serving: Callable[[], dict[str, Backend]]) -> None:
        """Report the queues of the backends ``serving`` returns (the app's model registry)."""
        self.registry.register(_Batches(serving))

    def answered(
        self,
        model: str,
        started: float,
        first_token: float | None,
        finished: float,
        prompt: int,
        completion: int,
        finish_reason: str,
    ) -> None:
        self.requests.labels(model, finish_reason).inc()
        self.prompt_tokens.labels(model).inc(prompt)
        self.completion_tokens.labels(model).inc(completion)
        if first_token is not None:
            self.time_to_first_token.labels(model).observe(first_token - started)
            if completion > 1:
                self.time_per_output_token.labels(model).observe((finished - first_token) / (completion - 1))


def metrics_of(state: State) -> ServiceMetrics:
    metrics: ServiceMetrics = state.metrics
    return metrics


@get("/metrics", summary="Prometheus metrics", include_in_schema=False, sync_to_thread=False)
def metrics_endpoint(request: Request[object, object, State]) -> Response[bytes]:
    return Response(generate_latest(metrics_of(request.app.state).registry), media_type=CONTENT_TYPE_LATEST)
