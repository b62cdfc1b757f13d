"""Safety overhead under load: streaming output tokens/s with 8 concurrent clients, safety on vs off.

    .venv/bin/python bench/safety_overhead.py [--clients 8] [--rounds 9] [--max-tokens 64] [--control]

The services run in this process on the same loaded model (the real default model), greedy
decoding, the same prompts. Each round runs every service once, in an order that rotates from round
to round, so drift on a shared machine and the position in a round hit them alike. Prints the median
tokens/s of each, the ratio of the medians and the median of the rounds' own on/off ratios (target:
safety on >= 95% of off). ``--control`` adds a second safety-off service: its ratio to the first is
what noise alone gives.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from functools import partial
from pathlib import Path

import httpx
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from assistant.app import SEMANTIC_FLOOR, create_app
from assistant.backends.hf import HFBackend
from assistant.db import migrate
from assistant.model_store import resolve_model_dir
from assistant.settings import Settings
from safety.guard import Guard
from safety.lexicon import Lexicon
from safety.semantic import SemanticDetector

MODEL = "smollm2-135m-instruct"
QUESTIONS = [
    "My parcel has not arrived yet. What can I do?",
    "How do I reset my password?",
    "Can I change the delivery address of order 1042?",
    "The blender I bought is broken, can I get a refund?",
    "How long does a return take to process?",
    "Do you ship to Canada?",
    "Why was my card declined at checkout?",
    "How can I cancel my subscription?",
]


def start_server(backend: HFBackend, guard: Guard | None, port: int) -> tuple[str, str]:
    data_dir = Path(tempfile.mkdtemp())
    settings = Settings(data_dir=data_dir)  # type: ignore[call-arg]
    migrate(settings.database_url)
    app = create_app(settings, {MODEL: backend}, guard)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    url = f"http://127.0.0.1:{port}"
    while True:
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    return url, settings.admin_key_file.read_text().strip()


async def client(url: str, key: str, question: str, max_tokens: int) -> int:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": question}],
        "temperature": 0,
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with (
        httpx.AsyncClient(timeout=600) as http,
        http.stream(
            "POST", f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
        ) as response,
    ):
        tokens = 0
        async for line in response.aiter_lines():
            if '"usage"' in line and '"choices": []' in line:
                tokens = int(line.split('"completion_tokens": ')[1].split(",")[0])
        return tokens


async def round_tokens_per_second(url: str, key: str, clients: int, max_tokens: int) -> float:
    started = time.perf_counter()
    counts = await asyncio.gather(
        *(client(url, key, QUESTIONS[i % len(QUESTIONS)], max_tokens) for i in range(clients))
    )
    return sum(counts) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--control", action="store_true", help="add a second safety-off service")
    args = parser.parse_args()
    settings = Settings()  # type: ignore[call-arg]
    backend = HFBackend(partial(resolve_model_dir, settings.model.path, settings.cache_dir))
    asyncio.run(backend.start())
    detector = SemanticDetector(SEMANTIC_FLOOR, SEMANTIC_FLOOR)
    detector.load()
    services = {
        "safety on": start_server(backend, Guard(Lexicon.load(), detector), 18811),
        "safety off": start_server(backend, None, 18812),
    }
    if args.control:
        services["safety off (control)"] = start_server(backend, None, 18813)
    names = list(services)
    results: dict[str, list[float]] = {name: [] for name in names}
    asyncio.run(round_tokens_per_second(*services["safety off"], 2, 8))  # warm up
    for round_number in range(args.rounds):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            url, key = services[name]
            results[name].append(
                asyncio.run(round_tokens_per_second(url, key, args.clients, args.max_tokens))
            )
    print(
        f"\n{args.clients} concurrent streaming clients, {args.max_tokens} tokens each, greedy, "
        f"{args.rounds} rounds\n"
    )
    print("| service | output tokens/s (median) | rounds |")
    print("|---|---|---|")
    for name, values in results.items():
        print(f"| {name} | {statistics.median(values):.1f} | {', '.join(f'{v:.1f}' for v in values)} |")
    off = results["safety off"]
    for name in names:
        if name != "safety off":
            of_medians = statistics.median(results[name]) / statistics.median(off)
            of_rounds = statistics.median(a / b for a, b in zip(results[name], off, strict=True))
            print(
                f"\n{name} / safety off: {of_medians:.3f} (medians), {of_rounds:.3f} (median of the rounds)"
                + (" (target >= 0.95)" if name == "safety on" else " (noise alone)")
            )


if __name__ == "__main__":
    main()
