"""Serving benchmark: this service against the servers users would pick instead, side by side, one run.

    pip install -e '.[bench]'      # the peers: transformers[serving], llama-cpp-python[server]
    nice -n 5 .venv/bin/python bench/serve.py [--servers service,hf,hf-cb,llamacpp] [--requests 32]
        [--concurrency 1,8] [--rate 1.0] [--max-tokens 64] [--rounds 1] [--json FILE]

Servers, all on the same model (SmolLM2-135M-Instruct), the same prompts and greedy decoding:

- ``service``: ``assistant serve`` (safety on, continuous batching, ``model.max_batch`` 16, ``model.dtype``
  auto: bfloat16 where the machine computes it fast, else float32; on a CPU, in either, the linear layers
  decode from the GGUF's 4-bit weights, and in float32 the output layer from its 8-bit ones,
  ``model.four_bit``; ``model.threads`` unset);
- ``hf`` / ``hf-cb``: ``transformers serve`` without and with ``--continuous-batching``, on the same
  safetensors copy of the model the service loads, in the same precision (``--dtype``);
- ``llamacpp``: ``python -m llama_cpp.server`` on the GGUF file that copy was converted from, with
  ``--interrupt_requests False`` (otherwise each new request aborts the running one).

The load generator speaks the streaming OpenAI chat API (``httpx``, server-sent events): a closed loop at
each ``--concurrency`` (that many clients, each sending its next request when the last one ends) and an
open loop (requests arrive as a Poisson process at ``--rate`` per second). Prompts are the 68 held-out
customer questions of ``bench/finetune_data``. Per request: time to first token (TTFT), time per output
token (TPOT, vLLM's formula: (end - first token) / (output tokens - 1)); per run: output tokens/s and
requests/s. Output tokens are counted with the model's tokenizer for every server alike.

A bare ``model.generate`` loop (no server, the model loaded as the service loads it) gives the
single-stream TPOT floor, and a memory-copy test the machine's bandwidth: at one stream, decoding reads
every weight once per token, so bandwidth / weight bytes is the most tokens/s one stream can get.

``--rounds N`` repeats every setting N times, the servers taking turns, and reports each figure's median
over the rounds: the machines are shared, and one run of a server can be slowed by whatever else runs.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.finetune import BASE_MODEL, DATA, Service, base_model_dir, free_port, log, machine, read_jsonl  # noqa: E402

SERVERS = ("service", "hf", "hf-cb", "llamacpp")


@dataclass(frozen=True)
class Target:
    """A running server: where to send requests, which model name, which key."""

    name: str
    base_url: str
    model: str
    key: str = "none"


@dataclass(frozen=True)
class Sample:
    start: float
    first: float | None
    end: float
    tokens: int
    error: str | None = None


class Peer:
    """A server process started for the benchmark, in its own process group."""

    def __init__(self, name: str, command: list[str], port: int, log_path: Path, ready_path: str) -> None:
        self.name, self.command, self.port, self.log_path = name, command, port, log_path
        self.ready_url = f"http://127.0.0.1:{port}{ready_path}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 600) -> None:
        log(f"starting {self.name}: {' '.join(self.command)}")
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                self.command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT
            )
        started = time.monotonic()
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited:\n{self.log_path.read_text(errors='replace')[-3000:]}"
                )
            try:
                if httpx.get(self.ready_url, timeout=5).status_code < 500:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s")
            time.sleep(0.5)
        log(f"{self.name} ready after {time.monotonic() - started:.1f} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


# --- load ---------------------------------------------------------------------------------------------


async def one_request(
    client: httpx.AsyncClient, target: Target, prompt: str, max_tokens: int, count: Any
) -> Sample:
    body = {
        "model": target.model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
    }
    start, first, text = time.perf_counter(), None, ""
    try:
        async with client.stream(
            "POST",
            f"{target.base_url}/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {target.key}"},
        ) as response:
            if response.status_code != 200:
                return Sample(
                    start,
                    None,
                    time.perf_counter(),
                    0,
                    f"{response.status_code}: {(await response.aread())[:200]!r}",
                )
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                for choice in chunk.get("choices") or []:
                    if piece := (choice.get("delta") or {}).get("content"):
                        first = first or time.perf_counter()
                        text += piece
    except httpx.HTTPError as exc:
        return Sample(start, first, time.perf_counter(), 0, f"{type(exc).__name__}: {exc}")
    return Sample(start, first, time.perf_counter(), count(text))


async def closed_loop(
    target: Target, prompts: list[str], concurrency: int, max_tokens: int, count: Any
) -> tuple[list[Sample], float]:
    queue = list(prompts)
    samples: list[Sample] = []
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=concurrency + 4)) as client:

        async def user() -> None:
            while queue:
                samples.append(await one_request(client, target, queue.pop(0), max_tokens, count))

        started = time.perf_counter()
        await asyncio.gather(*(user() for _ in range(concurrency)))
        return samples, time.perf_counter() - started


async def open_loop(
    target: Target, prompts: list[str], rate: float, max_tokens: int, count: Any, seed: int
) -> tuple[list[Sample], float]:
    gaps = random.Random(seed)
    async with httpx.AsyncClient(
        timeout=600, limits=httpx.Limits(max_connections=len(prompts) + 4)
    ) as client:
        tasks = []
        started = time.perf_counter()
        for prompt in prompts:
            tasks.append(asyncio.create_task(one_request(client, target, prompt, max_tokens, count)))
            await asyncio.sleep(gaps.expovariate(rate))
        samples = list(await asyncio.gather(*tasks))
        return samples, time.perf_counter() - started


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summarize(samples: list[Sample], wall: float) -> dict[str, Any]:
    good = [s for s in samples if s.error is None and s.first is not None]
    ttft = [s.first - s.start for s in good if s.first is not None]
    tpot = [(s.end - s.first) / (s.tokens - 1) for s in good if s.first is not None and s.tokens > 1]
    tokens = sum(s.tokens for s in good)
    return {
        "requests": len(samples),
        "errors": len(samples) - len(good),
        "first_error": next((s.error for s in samples if s.error), None),
        "ttft_p50": percentile(ttft, 0.5),
        "ttft_p95": percentile(ttft, 0.95),
        "tpot_p50": percentile(tpot, 0.5),
        # Whole request over its tokens: unlike TPOT, not fooled by text released in bursts (the service's
        # safety hold-back releases the first characters late and then several tokens at once).
        "latency_per_token_p50": percentile([(s.end - s.start) / s.tokens for s in good if s.tokens], 0.5),
        "output_tokens_per_s": tokens / wall,
        "requests_per_s": len(good) / wall,
        "output_tokens": tokens,
        "wall_s": wall,
    }


# --- baselines ----------------------------------------------------------------------------------------------


def served_model() -> Any:
    """The model as the service loads it (``model.dtype`` auto, ``model.four_bit`` on)."""
    from assistant.backends.hf import load_model

    return load_model(base_model_dir(), "auto")[0]


def bare_generate(model: Any, prompts: list[str], max_tokens: int) -> float | None:
    """Median seconds per output token (whole request / tokens) of ``model.generate`` in this process,
    one prompt at a time: no server at all."""
    from threading import Thread

    import torch
    from transformers import AutoTokenizer, TextIteratorStreamer

    tokenizer = AutoTokenizer.from_pretrained(base_model_dir())
    values = []
    for prompt in prompts:
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True)
        with torch.inference_mode():
            thread = Thread(
                target=model.generate,
                kwargs={**ids, "max_new_tokens": max_tokens, "do_sample": False, "streamer": streamer},
            )
            started, text = time.perf_counter(), ""
            thread.start()
            for piece in streamer:
                text += piece
            thread.join()
        if tokens := len(tokenizer(text, add_special_tokens=False)["input_ids"]):
            values.append((time.perf_counter() - started) / tokens)
    return statistics.median(values) if values else None


def memory_bandwidth_gb_s() -> float:
    """Median of 5 copies of a 512 MiB array: (bytes read + bytes written) / seconds."""
    import numpy as np

    source = np.ones(512 * 2**20 // 8)
    target = np.empty_like(source)
    times = []
    for _ in range(5):
        started = time.perf_counter()
        np.copyto(target, source)
        times.append(time.perf_counter() - started)
    return 2 * source.nbytes / statistics.median(times) / 1e9


def served_dtype() -> Any:
    """The precision the service loads the model in (``model.dtype`` auto on this machine)."""
    from assistant.backends.hf import weights_dtype

    return weights_dtype("auto")


def decode_bytes(model: Any) -> int:
    """Bytes of weights one decoding step reads: the codes and scales of the 4-bit and 8-bit layers (not
    the full weights they keep for prefill: the 8-bit output layer's is the token embedding, of which a
    step reads one row), every other parameter once (tied ones count once)."""
    from assistant.backends.eight_bit import EightBitLinear
    from assistant.backends.four_bit import FourBitLinear

    four_bit = [m for m in model.modules() if isinstance(m, FourBitLinear)]
    eight_bit = [m for m in model.modules() if isinstance(m, EightBitLinear)]
    prefill_only = {id(m.weight) for m in [*four_bit, *eight_bit]}
    read = [t for m in four_bit for t in (m.codes, m.scale_bits)]
    read += [t for m in eight_bit for t in (m.codes, m.scale_bits)]
    read += [p for p in model.parameters() if id(p) not in prefill_only]
    return sum(int(t.nbytes) for t in read)


# --- servers ------------------------------------------------------------------------------------------------


def start_servers(names: list[str], work: Path) -> tuple[dict[str, Target], list[Any]]:
    from assistant.model_store import default_model_gguf

    targets: dict[str, Target] = {}
    running: list[Any] = []
    directory = base_model_dir()
    for name in names:
        if name == "service":
            service = Service(work / "service", {"ASSISTANT_MODEL__MAX_TOKENS_LIMIT": "4096"})
            service.data_dir.mkdir()
            service.start()
            running.append(service)
            key = (service.data_dir / "admin-key.txt").read_text().strip()
            targets[name] = Target(name, f"{service.url}/v1", BASE_MODEL, key)
        elif name in ("hf", "hf-cb"):
            port = free_port()
            command = [
                sys.executable,
                "-m",
                "transformers.cli.transformers",
                "serve",
                "--port",
                str(port),
                "--host",
                "127.0.0.1",
                "--dtype",
                str(served_dtype()).removeprefix("torch."),
            ]
            if name == "hf-cb":
                command.append("--continuous-batching")
            peer = Peer(name, command, port, work / f"{name}.log", "/v1/models")
            peer.start()
            running.append(peer)
            targets[name] = Target(name, f"http://127.0.0.1:{port}/v1", directory)
        elif name == "llamacpp":
            port = free_port()
            gguf = default_model_gguf()
            command = [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(gguf),
                "--port",
                str(port),
                "--host",
                "127.0.0.1",
                "--n_ctx",
                "2048",
                "--interrupt_requests",
                "False",
                "--model_alias",
                BASE_MODEL,
            ]
            peer = Peer(name, command, port, work / f"{name}.log", "/v1/models")
            peer.start()
            running.append(peer)
            targets[name] = Target(name, f"http://127.0.0.1:{port}/v1", BASE_MODEL)
        else:
            raise SystemExit(f"unknown server {name!r}; choose from {', '.join(SERVERS)}")
    return targets, running


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--requests", type=int, default=32, help="requests per load setting")
    parser.add_argument("--concurrency", default="1,8")
    parser.add_argument("--rate", type=float, default=1.0, help="open loop: requests per second (0: skip)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=1, help="repeat every setting, servers taking turns")
    parser.add_argument("--json", type=Path)
    options = parser.parse_args()

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base_model_dir())

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    questions = [row["question"] for row in read_jsonl(DATA / "heldout.jsonl")]
    prompts = [questions[i % len(questions)] for i in range(options.requests)]
    settings = [("closed", c) for c in (int(c) for c in options.concurrency.split(","))]
    if options.rate > 0:
        settings.append(("open", options.rate))
    results: dict[str, Any] = {"machine": machine(), "options": vars(options) | {"json": str(options.json)}}
    results["dtype"] = str(served_dtype()).removeprefix("torch.")
    log(f"machine: {results['machine']}; weights in {results['dtype']}")
    results["bandwidth_gb_s"] = memory_bandwidth_gb_s()
    model = served_model()
    results["weight_bytes"] = decode_bytes(model)
    results["bare_generate"] = bare_generate(model, questions[:8], options.max_tokens)
    del model
    log(f"bare generate: {fmt(results['bare_generate'], 4)} s per output token")
    log(f"memory bandwidth {results['bandwidth_gb_s']:.1f} GB/s")

    with tempfile.TemporaryDirectory(prefix="bench-serve-") as folder:
        targets, running = start_servers(options.servers.split(","), Path(folder))
        try:
            rounds: dict[str, dict[str, list[dict[str, Any]]]] = {}
            for target in targets.values():  # warm-up: the first request loads models, compiles kernels
                asyncio.run(closed_loop(target, prompts[:2], 1, 8, count))
            for (kind, level), round_ in itertools.product(settings, range(options.rounds)):
                for target in targets.values():  # one setting at a time, every server, back to back
                    if kind == "closed":
                        samples, wall = asyncio.run(
                            closed_loop(target, prompts, int(level), options.max_tokens, count)
                        )
                    else:
                        samples, wall = asyncio.run(
                            open_loop(target, prompts, float(level), options.max_tokens, count, 7)
                        )
                    figures = summarize(samples, wall)
                    rounds.setdefault(f"{kind} {level}", {}).setdefault(target.name, []).append(figures)
                    shown = {k: v for k, v in figures.items() if k != "first_error"}
                    log(f"{kind} {level} {target.name} (round {round_ + 1}): {json.dumps(shown)}")
                    if figures["errors"]:
                        log(f"  first error: {figures['first_error']}")
        finally:
            for server in running:
                server.stop()
    results["rounds"] = rounds
    results["runs"] = {
        setting: {name: medians(each) for name, each in per.items()} for setting, per in rounds.items()
    }
    if options.json:
        options.json.write_text(json.dumps(results, indent=2))
    print_table(results)


def medians(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Each figure's median over the rounds (errors: their sum)."""
    merged: dict[str, Any] = {
        "errors": sum(r["errors"] for r in rounds),
        "first_error": next((r["first_error"] for r in rounds if r["first_error"]), None),
        "rounds": len(rounds),
    }
    for key, value in rounds[0].items():
        if key not in merged and (value is None or isinstance(value, float | int)):
            values = [r[key] for r in rounds if r[key] is not None]
            merged[key] = statistics.median(values) if values else None
    return merged


def fmt(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def print_table(results: dict[str, Any]) -> None:
    print("\n| load | server | output tok/s | req/s | TTFT p50 s | TTFT p95 s | TPOT p50 s | errors |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for setting, servers in results["runs"].items():
        for name, f in servers.items():
            print(
                f"| {setting} | {name} | {fmt(f['output_tokens_per_s'], 1)} | "
                f"{fmt(f['requests_per_s'], 2)} | {fmt(f['ttft_p50'])} | {fmt(f['ttft_p95'])} | "
                f"{fmt(f['tpot_p50'], 4)} | {f['errors']} |"
            )
    print("\nRatios (service / best peer):")
    for setting, servers in results["runs"].items():
        peers = {n: f for n, f in servers.items() if n != "service"}
        if "service" not in servers or not peers:
            continue
        ours = servers["service"]
        best_tps = max(peers.items(), key=lambda item: item[1]["output_tokens_per_s"])
        ttfts = [(n, f["ttft_p50"]) for n, f in peers.items() if f["ttft_p50"] is not None]
        throughput = ours["output_tokens_per_s"] / best_tps[1]["output_tokens_per_s"]
        line = f"- {setting}: output tok/s {throughput:.2f}x ({best_tps[0]})"
        if ttfts and ours["ttft_p50"] is not None:
            best_ttft = min(ttfts, key=lambda item: item[1])
            line += f"; TTFT p50 {ours['ttft_p50'] / best_ttft[1]:.2f}x ({best_ttft[0]}; below 1 is better)"
        print(line)
    bare = results.get("bare_generate")
    single = results["runs"].get("closed 1", {}).get("service")
    if bare and single and single["latency_per_token_p50"]:
        ratio = single["latency_per_token_p50"] / bare
        print(
            f"- 1 stream, seconds per output token (whole request / tokens, p50): service "
            f"{single['latency_per_token_p50']:.4f}, bare generate {bare:.4f} ({ratio:.2f}x)"
        )
        bound = results["bandwidth_gb_s"] * 1e9 / results["weight_bytes"]
        print(
            f"- memory bandwidth: {results['weight_bytes'] / 2**20:.0f} MiB of weights read per token at "
            f"{results['bandwidth_gb_s']:.1f} GB/s: at most {bound:.0f} tokens/s for one stream; bare "
            f"generate decodes {1 / bare:.0f} ({1 / bare / bound:.0%} of the bound), prefill included"
        )


if __name__ == "__main__":
    main()
