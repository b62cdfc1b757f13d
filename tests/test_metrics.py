"""``GET /metrics`` on the running service: Prometheus text with latencies, tokens, queues and blocks."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import MODEL, Server
from tests.test_safety_api import ATTACK


def scrape(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(f"{server.url}/metrics")  # public, like the probes: no key
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def test_a_streamed_answer_shows_in_the_latency_histograms_and_token_counters(server: Server) -> None:
    model = (("model", MODEL),)
    before = scrape(server)
    stream = server.openai().chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Where is my parcel?"}],
        max_tokens=12,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    usage = next(chunk.usage for chunk in stream if chunk.usage)
    after = scrape(server)

    def grew(name: str, labels: tuple[tuple[str, str], ...] = model) -> float:
        return after.get((name, labels), 0.0) - before.get((name, labels), 0.0)

    assert grew("assistant_time_to_first_token_seconds_count") == 1
    assert 0 < grew("assistant_time_to_first_token_seconds_sum") < 60
    assert grew("assistant_time_per_output_token_seconds_count") == 1
    assert grew("assistant_completion_tokens_total") == usage.completion_tokens
    assert grew("assistant_prompt_tokens_total") == usage.prompt_tokens
    finished = (("finish_reason", "length"), ("model", MODEL))
    assert (
        grew("assistant_requests_total", finished)
        + grew("assistant_requests_total", (("finish_reason", "stop"), ("model", MODEL)))
        == 1
    )
    assert after[("assistant_queue_length", model)] == 0  # read from the batcher when scraped
    assert after[("assistant_running_requests", model)] == 0


def test_a_blocked_input_is_counted_by_direction_and_category(server: Server) -> None:
    def blocks(sample: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> float:
        return sum(
            v
            for (name, labels), v in sample.items()
            if name == "assistant_safety_blocks_total" and ("direction", "input") in labels
        )

    before = blocks(scrape(server))
    server.openai().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": ATTACK}])
    assert blocks(scrape(server)) >= before + 1


def test_draft_tokens_of_answer_openings_are_counted(server: Server) -> None:
    model = (("model", MODEL),)
    before = scrape(server)
    for _ in range(3):  # the third has an opening two earlier answers agree on (at least their first token)
        server.openai().chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Can I change the colour of my order?"}],
            max_tokens=8,
            temperature=0,
        )
    after = scrape(server)
    drafted = after[("assistant_draft_tokens_total", model)] - before.get(
        ("assistant_draft_tokens_total", model), 0
    )
    accepted = after[("assistant_draft_tokens_accepted_total", model)] - before.get(
        ("assistant_draft_tokens_accepted_total", model), 0
    )
    assert drafted >= 1 and 1 <= accepted <= drafted  # the same question: its first token is drafted right
