"""Prometheus metrics for ``djl-serve``.

Every app owns its own ``CollectorRegistry`` (so two apps in one process, as in
tests, never share counters). Names follow vLLM's de-facto set with a ``djl_``
prefix. prometheus-client is thread-safe: the engine thread records token and
latency metrics, the event loop records HTTP outcomes.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5)


class ServingMetrics:
    """The metric families one server exposes on ``GET /metrics``.

    Attributes:
        http_requests: ``djl_http_requests_total{route, code}``; one per finished HTTP request.
        request_finished: ``djl_request_finished_total{finish_reason}``; one per engine request
            (LMI finish reasons: eos_token, stop_sequence, length, abort, error).
        time_to_first_token: seconds from arrival to the first generated token.
        time_per_output_token: mean seconds between tokens after the first, per request.
        e2e_latency: seconds from arrival to the final output.
        queue_time: seconds from arrival to the start of the step that prefilled the request.
        num_running / num_waiting: requests in the engine's running batch and waiting queue.
        prompt_tokens / generation_tokens: token counters.
        refused_parse_seconds: seconds spent reading and parsing bodies that earned a 4xx
            (what ``RefusalBudget`` charges; a steep rise is a client sending junk).
        prefix_cache_queries, prefix_cache_hits, prefix_cache_hit_rate: prompt tokens looked up in
            the prefix cache, those served from it, and their ratio since start (as vLLM's
            ``prefix_cache_queries`` / ``prefix_cache_hits``); zero without a prefix cache.
    """

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.http_requests = Counter(
            "djl_http_requests", "HTTP requests by route and status code", ["route", "code"], registry=r
        )
        self.request_finished = Counter(
            "djl_request_finished", "Engine requests by finish reason", ["finish_reason"], registry=r
        )
        self.time_to_first_token = Histogram(
            "djl_time_to_first_token_seconds", "Time to first token", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.time_per_output_token = Histogram(
            "djl_time_per_output_token_seconds", "Time per output token after the first",
            buckets=_TOKEN_BUCKETS, registry=r,
        )
        self.e2e_latency = Histogram(
            "djl_e2e_request_latency_seconds", "End-to-end request latency", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.queue_time = Histogram(
            "djl_request_queue_time_seconds", "Time spent waiting before prefill", buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.num_running = Gauge("djl_num_requests_running", "Requests in the running batch", registry=r)
        self.num_waiting = Gauge("djl_num_requests_waiting", "Requests waiting for a slot", registry=r)
        self.prompt_tokens = Counter("djl_prompt_tokens", "Prompt tokens of finished requests", registry=r)
        self.generation_tokens = Counter("djl_generation_tokens", "Generated tokens", registry=r)
        self.refused_parse_seconds = Counter(
            "djl_refused_parse_seconds", "Seconds spent reading and parsing refused request bodies", registry=r)
        self.prefix_cache_queries = Counter(
            "djl_prefix_cache_queries", "Prompt tokens looked up in the prefix cache", registry=r)
        self.prefix_cache_hits = Counter(
            "djl_prefix_cache_hits", "Prompt tokens served from the prefix cache (not computed)", registry=r)
        self.prefix_cache_hit_rate = Gauge(
            "djl_prefix_cache_hit_rate", "Prompt tokens served from the prefix cache / looked up, since start",
            registry=r)

    def render(self) -> bytes:
        """The text exposition format of every metric in this registry."""
        return generate_latest(self.registry)
