"""Fine-tuning benchmark: what a job through the service learns, how fast it trains, what memory it needs.

    nice -n 5 .venv/bin/python bench/finetune.py [--json results.json] [--quick] [--only accuracy] ...

Three parts (``--only`` picks some; all by default):

* **accuracy** -- ``assistant serve`` starts as a subprocess (temporary ``ASSISTANT_DATA_DIR``, a free
  port, its embedded Celery worker). With the official ``openai`` client the benchmark uploads the
  training and validation splits of ``bench/finetune_data/train.jsonl``, creates a QLoRA job, prints its
  events while it runs, then asks every held-out question (``heldout.jsonl``) to the base model and to the
  ``ft:`` model through ``/v1/chat/completions`` (temperature 0; the service adds its own system prompt and
  runs its safety layer, as in production). An answer states the fact when it contains one of the fact's
  ``answers`` (``facts.toml``), case-insensitively. After the service stops, the loss on the assistant
  tokens of the validation split is computed here for the base model and for the served (merged) model.
* **throughput** -- the same short training (``--throughput-steps`` steps: that many batches of the
  training split, one epoch) as a job through the service and as a bare TRL/peft/bitsandbytes script
  (``bare_train``, in a fresh subprocess), alternating, ``--repeats`` times each. Tokens/s two ways:
  tokens over the summed step times (what the job's metrics events report) and trained tokens over the
  training wall time (from "training starts" to the last step's log, so per-step overheads count).
* **memory** -- ``bare_train`` for ``--memory-steps`` steps in a fresh subprocess per quantization
  (``nf4``: QLoRA; ``none``: LoRA on fp32 weights): peak RSS (``ru_maxrss``) after loading and at the end,
  the model's own footprint, and ``torch.cuda.max_memory_allocated`` where CUDA is present.

Ends with one Markdown table (machine, medians, ratios); ``--json PATH`` writes every figure.
The service's event timestamps reach the API in whole seconds; for wall times the benchmark reads them
from the service's SQLite database in its temporary data dir (microseconds), falling back to the API's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import resource
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

if TYPE_CHECKING:
    from openai import OpenAI
    from openai.types.fine_tuning import FineTuningJob
    from transformers import PreTrainedTokenizerBase, TrainerCallback

DATA = ROOT / "bench" / "finetune_data"
BASE_MODEL = "smollm2-135m-instruct"
PARTS = ("accuracy", "throughput", "memory")
FINISHED = ("succeeded", "failed", "cancelled")
#: What the service's output filter leaves where it masked PII (``[EMAIL]``, ``[PHONE]``, ``[EMAIL_1]``).
MASK = re.compile(r"\[(EMAIL|PHONE)(_\d+)?\]", re.IGNORECASE)
#: One ChatML message as SmolLM2's template writes it, and the same with the assistant's part marked for
#: TRL's ``assistant_only_loss`` (the end-of-turn token is inside: the model must learn to stop).
CHATML_TURN = "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
CHATML_TURN_MARKED = (
    "{{'<|im_start|>' + message['role'] + '\n'}}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}"
    "{{ '\n' }}"
)
STARTED = time.monotonic()

Conversation = list[dict[str, str]]


def log(text: str) -> None:
    elapsed = int(time.monotonic() - STARTED)
    print(f"[{elapsed // 60:3d}m{elapsed % 60:02d}s] {text}", flush=True)


# --- options ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    parts: tuple[str, ...]
    quick: bool
    skip_service: bool
    n_epochs: int
    learning_rate_multiplier: float
    batch_size: int
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    quantization: str
    seed: int
    validation_split: float
    max_tokens: int
    throughput_steps: int
    repeats: int
    memory_steps: int
    train_limit: int | None
    question_limit: int | None
    allow_contact_pii: bool
    threads: int | None
    json_path: Path | None
    keep: bool

    def thread_env(self) -> dict[str, str]:
        if self.threads is None:
            return {}
        return {"OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)}

    def hyperparameters(self, **changes: Any) -> dict[str, Any]:
        """The job's hyperparameters (OpenAI's names plus the LoRA extras)."""
        values: dict[str, Any] = {
            "n_epochs": self.n_epochs,
            "batch_size": self.batch_size,
            "learning_rate_multiplier": self.learning_rate_multiplier,
            "lora_r": self.lora_r,
            "lora_alpha": self.lora_alpha,
            "lora_dropout": self.lora_dropout,
            "quantization": self.quantization,
        }
        return {**values, **changes}


def parse_args(argv: Sequence[str] | None = None) -> Options | Path:
    """The options, or the spec file of a child run (``--child SPEC``, used by the benchmark itself)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", choices=PARTS, help="run only this part (repeatable)")
    parser.add_argument("--quick", action="store_true", help="tiny subsets: checks the script in minutes")
    parser.add_argument(
        "--skip-service", action="store_true", help="no service: no accuracy, bare side of throughput only"
    )
    hyper = parser.add_argument_group("hyperparameters (the job's and the bare script's)")
    hyper.add_argument("--epochs", type=int, default=3)
    hyper.add_argument("--lr-multiplier", type=float, default=5.0, help="times 2e-4")
    hyper.add_argument("--batch-size", type=int, default=8)
    hyper.add_argument("--lora-r", type=int, default=128)
    hyper.add_argument("--lora-alpha", type=int, default=256)
    hyper.add_argument("--lora-dropout", type=float, default=0.05)
    hyper.add_argument("--quantization", choices=("nf4", "none"), default="nf4")
    hyper.add_argument("--seed", type=int, default=42)
    hyper.add_argument(
        "--validation-split", type=float, default=0.1, help="share of train.jsonl held out for eval loss"
    )
    parser.add_argument("--max-tokens", type=int, default=64, help="answer length for held-out questions")
    parser.add_argument("--throughput-steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2, help="throughput runs per side (median)")
    parser.add_argument("--memory-steps", type=int, default=5)
    parser.add_argument("--train-limit", type=int, help="train on the first N examples of the split only")
    parser.add_argument("--question-limit", type=int, help="ask only the first N held-out questions")
    parser.add_argument(
        "--allow-contact-pii",
        action="store_true",
        help="serve with a policy that does not mask e-mail addresses and phone numbers in answers",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="OMP_NUM_THREADS/MKL_NUM_THREADS for the service and the bare runs alike (default: torch's, "
        "one per core); on a busy shared machine 1 keeps OpenMP threads from waiting on a taken core",
    )
    parser.add_argument("--json", type=Path, help="write every figure to this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir (printed)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        return Path(args.child)
    quick = bool(args.quick)
    return Options(
        parts=tuple(p for p in PARTS if p in (args.only or PARTS)),
        quick=quick,
        skip_service=bool(args.skip_service),
        n_epochs=1 if quick else args.epochs,
        learning_rate_multiplier=args.lr_multiplier,
        batch_size=args.batch_size,
        lora_r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        quantization=args.quantization,
        seed=args.seed,
        validation_split=args.validation_split,
        max_tokens=args.max_tokens,
        throughput_steps=2 if quick else args.throughput_steps,
        repeats=1 if quick else args.repeats,
        memory_steps=2 if quick else args.memory_steps,
        train_limit=args.train_limit or (24 if quick else None),
        question_limit=args.question_limit or (4 if quick else None),
        allow_contact_pii=bool(args.allow_contact_pii),
        threads=args.threads,
        json_path=args.json,
        keep=bool(args.keep),
    )


# --- data ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Question:
    fact: str
    question: str


@dataclass(frozen=True)
class Splits:
    """The files the benchmark uploads or trains on, written to the work dir."""

    training: Path
    validation: Path
    throughput: Path
    #: The service's smallest file (10 examples): the throughput jobs' end-of-epoch evaluation stays short.
    throughput_validation: Path
    validation_conversations: list[Conversation]
    training_count: int
    throughput_count: int


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def load_facts() -> dict[str, tuple[str, ...]]:
    with (DATA / "facts.toml").open("rb") as file:
        return {fact["id"]: tuple(fact["answers"]) for fact in tomllib.load(file)["fact"]}


def load_questions(limit: int | None) -> list[Question]:
    rows = [Question(row["fact"], row["question"]) for row in read_jsonl(DATA / "heldout.jsonl")]
    return rows[:limit] if limit else rows


def states_fact(answer: str, answers: Sequence[str]) -> bool:
    """The README's scoring, case-insensitive: any of the fact's strings in the answer."""
    lowered = answer.lower()
    return any(expected.lower() in lowered for expected in answers)


def make_splits(options: Options, work: Path) -> Splits:
    """A seeded validation split of train.jsonl (for eval loss) and the throughput runs' training subset."""
    examples = read_jsonl(DATA / "train.jsonl")
    order = list(range(len(examples)))
    random.Random(options.seed).shuffle(order)
    held = set(order[: max(1, round(len(examples) * options.validation_split))])
    training = [e for i, e in enumerate(examples) if i not in held]
    validation = [e for i, e in enumerate(examples) if i in held]
    if options.train_limit:
        # The service takes files of 10 examples or more (``finetune.min_examples``).
        training, validation = (
            training[: options.train_limit],
            validation[: max(10, options.train_limit // 4)],
        )
    wanted = options.throughput_steps * options.batch_size
    if wanted > len(training):
        log(
            f"warning: {options.throughput_steps} throughput steps need {wanted} examples; "
            f"{len(training)} used"
        )
    throughput = training[:wanted]
    return Splits(
        training=write_jsonl(work / "kestrelmoor-train.jsonl", training),
        validation=write_jsonl(work / "kestrelmoor-validation.jsonl", validation),
        throughput=write_jsonl(work / "kestrelmoor-throughput.jsonl", throughput),
        throughput_validation=write_jsonl(work / "kestrelmoor-throughput-validation.jsonl", validation[:10]),
        validation_conversations=[e["messages"] for e in validation],
        training_count=len(training),
        throughput_count=len(throughput),
    )


def base_model_dir() -> str:
    """The directory the service trains and serves the default model from (converted once, cached)."""
    from assistant.model_store import resolve_model_dir
    from assistant.settings import Settings

    return resolve_model_dir(None, Settings().cache_dir)


# --- the machine --------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    import bitsandbytes
    import peft
    import torch
    import transformers
    import trl

    return {
        "cpu": _cpu_model() or platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "trl": trl.__version__,
        "bitsandbytes": bitsandbytes.__version__,
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def peak_rss_mib() -> float:
    """This process's peak resident set size (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


# --- the service --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Service:
    """``assistant serve`` (API + embedded worker) in its own process group, on a temporary data dir."""

    def __init__(self, data_dir: Path, env: dict[str, str]) -> None:
        self.data_dir, self.port = data_dir, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir / "service.log"
        self.env = {
            **os.environ,
            **env,
            "ASSISTANT_DATA_DIR": str(data_dir),
            "ASSISTANT_SERVER__PORT": str(self.port),
            "ASSISTANT_FINETUNE__EMBEDDED_WORKER": "true",
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 900) -> None:
        log(f"starting `assistant serve` on {self.url} (data dir {self.data_dir}, log {self.log_path})")
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "assistant", "serve"],
                env=self.env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: the embedded worker is stopped with it
            )
        started = time.monotonic()
        while not self._ready():
            if self.process.poll() is not None:
                raise RuntimeError(f"the service exited with {self.process.returncode}:\n{self.log_tail()}")
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"the service was not ready after {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.5)
        log(f"service ready after {time.monotonic() - started:.1f} s")

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    def client(self) -> OpenAI:
        from openai import OpenAI

        key = (self.data_dir / "admin-key.txt").read_text().strip()
        return OpenAI(base_url=f"{self.url}/v1", api_key=key, timeout=900, max_retries=3)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        log("stopping the service")
        self.process.send_signal(signal.SIGTERM)  # uvicorn stops, then stops its worker
        try:
            self.process.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        with suppress(ProcessLookupError):  # the worker, should it outlive the server
            os.killpg(self.process.pid, signal.SIGKILL)

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


@dataclass(frozen=True)
class Event:
    message: str
    type: str
    at: datetime
    data: dict[str, Any]


@dataclass
class JobRun:
    """A finished job as the benchmark saw it."""

    job_id: str
    status: str
    model: str | None
    trained_tokens: int
    events: list[Event]
    wall_seconds: float  # created -> finished, as the client saw it

    def metrics(self, key: str) -> list[dict[str, Any]]:
        return [e.data for e in self.events if e.type == "metrics" and key in e.data]

    def training_span(self) -> tuple[float, int] | None:
        """Seconds from "training starts" to the last step's log, and the number of steps."""
        starts = [e.at for e in self.events if e.message.startswith("training starts")]
        steps = [e for e in self.events if e.type == "metrics" and "train_loss" in e.data]
        if not starts or not steps:
            return None
        return (steps[-1].at - starts[-1]).total_seconds(), int(steps[-1].data["step"])


def upload(client: OpenAI, path: Path) -> str:
    with path.open("rb") as file:
        uploaded = client.files.create(file=(path.name, file.read()), purpose="fine-tune")
    log(f"uploaded {path.name}: {uploaded.id} ({uploaded.bytes} bytes)")
    return uploaded.id


def run_job(
    service: Service,
    client: OpenAI,
    training_file: str,
    validation_file: str,
    hyperparameters: dict[str, Any],
    suffix: str,
    seed: int,
) -> JobRun:
    """Create a supervised job, print its events as they come, return when it has finished."""
    started = time.monotonic()
    job = client.fine_tuning.jobs.create(
        model=BASE_MODEL,
        training_file=training_file,
        validation_file=validation_file,
        suffix=suffix,
        seed=seed,
        # The LoRA extras are not in OpenAI's types; the service takes them in the same object.
        method={"type": "supervised", "supervised": {"hyperparameters": hyperparameters}},  # type: ignore[arg-type]
    )
    log(f"job {job.id} created ({job.status}); hyperparameters {hyperparameters}")
    job = follow(client, job)
    wall = time.monotonic() - started
    log(f"job {job.id} {job.status} after {wall:.0f} s; model {job.fine_tuned_model}")
    if job.status != "succeeded":
        raise RuntimeError(f"job {job.id} {job.status}: {job.error}\n{service.log_tail()}")
    return JobRun(
        job.id,
        job.status,
        job.fine_tuned_model,
        job.trained_tokens or 0,
        job_events(service, client, job.id),
        wall,
    )


def follow(client: OpenAI, job: FineTuningJob, poll: float = 2.0) -> FineTuningJob:
    seen: set[str] = set()
    while True:
        job = client.fine_tuning.jobs.retrieve(job.id)
        fresh = [e for e in client.fine_tuning.jobs.list_events(job.id, limit=100).data if e.id not in seen]
        for event in reversed(fresh):  # the API lists newest first
            seen.add(event.id)
            print_event(
                event.message, event.type or "message", event.data if isinstance(event.data, dict) else {}
            )
        if job.status in FINISHED:
            return job
        time.sleep(poll)


def print_event(message: str, kind: str, data: dict[str, Any]) -> None:
    if kind != "metrics":
        log(f"  job: {message}")
        return
    step, total = data.get("step"), data.get("total_steps")
    parts = [f"step {step}/{total}", f"epoch {data.get('epoch', 0):.2f}"]
    if "train_loss" in data:
        parts.append(f"loss {data['train_loss']:.4f}")
    if "eval_loss" in data:
        parts.append(f"EVAL loss {data['eval_loss']:.4f}")
    if data.get("tokens_per_second"):
        parts.append(f"{data['tokens_per_second']:.0f} tok/s")
    log("  job: " + ", ".join(parts))


def job_events(service: Service, client: OpenAI, job_id: str) -> list[Event]:
    """All events, oldest first; timestamps to the microsecond from the service's SQLite file if there."""
    precise = _events_from_sqlite(service.data_dir / "assistant.db", job_id)
    if precise:
        return precise
    listed = list(client.fine_tuning.jobs.list_events(job_id, limit=100))  # pages through all of them
    return [
        Event(e.message, e.type or "message", datetime.fromtimestamp(e.created_at, UTC), dict(e.data or {}))  # type: ignore[call-overload]
        for e in reversed(listed)
    ]


def _events_from_sqlite(database: Path, job_id: str) -> list[Event]:
    if not database.is_file():
        return []
    try:
        with sqlite3.connect(f"file:{database}?mode=ro", uri=True) as connection:
            rows = connection.execute(
                "SELECT message, type, created_at, data FROM fine_tuning_events WHERE job_id = ? ORDER BY id",
                (job_id,),
            ).fetchall()
    except sqlite3.Error:
        return []
    return [
        Event(message, kind, datetime.fromisoformat(created), json.loads(data) if data else {})
        for message, kind, created, data in rows
    ]


# --- held-out questions -------------------------------------------------------------------------------------


@dataclass
class Answers:
    model: str
    texts: list[str]
    correct: list[bool]
    seconds: float

    @property
    def score(self) -> int:
        return sum(self.correct)

    @property
    def masked(self) -> int:
        return sum(1 for text in self.texts if MASK.search(text))


def ask_all(
    client: OpenAI, model: str, questions: list[Question], facts: dict[str, tuple[str, ...]], max_tokens: int
) -> Answers:
    started = time.monotonic()
    texts: list[str] = []
    for n, question in enumerate(questions, 1):
        answer = client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": question.question}],
            temperature=0,
            max_tokens=max_tokens,
        )
        texts.append(answer.choices[0].message.content or "")
        if n % 10 == 0 or n == len(questions):
            right = sum(states_fact(t, facts[q.fact]) for t, q in zip(texts, questions, strict=False))
            log(f"  {model[:40]}: {n}/{len(questions)} asked, {right} state the fact")
    correct = [states_fact(t, facts[q.fact]) for t, q in zip(texts, questions, strict=True)]
    return Answers(model, texts, correct, time.monotonic() - started)


# --- eval loss ----------------------------------------------------------------------------------------------


def marked_template(tokenizer: PreTrainedTokenizerBase) -> str:
    """The tokenizer's chat template with ``{% generation %}`` around each assistant message."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    template = tokenizer.chat_template
    if not isinstance(template, str):
        raise RuntimeError("the model has no chat template")
    if has_generation_markers(template):
        return template
    if template.count(CHATML_TURN) == 1:
        return template.replace(CHATML_TURN, CHATML_TURN_MARKED)
    known = get_training_chat_template(tokenizer)
    if known is None:
        raise RuntimeError("no chat template with generation markers is known for this model")
    return known


def assistant_token_loss(model_dir: str, conversations: list[Conversation]) -> tuple[float, int]:
    """Mean cross-entropy over every assistant token (and its end-of-turn token), and how many tokens."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    template = marked_template(tokenizer)
    model: Any = AutoModelForCausalLM.from_pretrained(
        model_dir, config=plain_config(AutoConfig.from_pretrained(model_dir)), dtype=torch.float32
    )
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for conversation in conversations:
            encoded: Any = tokenizer.apply_chat_template(
                conversation,
                chat_template=template,
                tokenize=True,
                return_dict=True,
                return_assistant_tokens_mask=True,
            )
            ids = torch.tensor([encoded["input_ids"]])
            mask = torch.tensor(encoded["assistant_masks"][1:], dtype=torch.bool)
            logits = model(input_ids=ids).logits[0, :-1]
            losses = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="none")
            total += float(losses[mask].sum())
            count += int(mask.sum())
    return total / max(1, count), count


def plain_config(config: Any) -> Any:
    """The config less the GGUF ``quantization_config`` the converted copy keeps (its weights are plain)."""
    quantization = getattr(config, "quantization_config", None)
    method = quantization.get("quant_method") if isinstance(quantization, dict) else None
    if method == "gguf" or getattr(quantization, "quant_method", None) == "gguf":
        del config.quantization_config
    return config


# --- the bare script ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BareSpec:
    """One bare training run, written as JSON for a child process."""

    base_model: str
    training_file: str
    output_dir: str
    result_file: str
    label: str
    n_epochs: int
    batch_size: int
    learning_rate: float
    lora_r: int
    lora_alpha: int
    lora_dropout: float
    quantization: str
    seed: int
    max_steps: int = -1  # -1: all the epochs


@dataclass
class BareResult:
    label: str
    quantization: str
    steps: int
    tokens: int
    step_seconds: float  # summed step times (forward, backward, optimizer step)
    wall_seconds: float  # "training starts" to the last step's log
    final_loss: float | None
    peak_rss_after_load_mib: float
    peak_rss_mib: float
    model_footprint_mib: float
    cuda_peak_mib: float | None
    load_seconds: float

    @property
    def tokens_per_second_steps(self) -> float:
        return self.tokens / self.step_seconds if self.step_seconds else 0.0

    @property
    def tokens_per_second_wall(self) -> float:
        return self.tokens / self.wall_seconds if self.wall_seconds else 0.0


@dataclass
class StepClock:
    """Times the steps as the service's job observer does, and the span from train begin to the last log."""

    label: str
    began: float = 0.0
    step_started: float = 0.0
    step_seconds: float = 0.0
    last_log: float = 0.0
    first_tokens: int | None = None
    losses: list[float] = field(default_factory=list)


def clock_callback(clock: StepClock) -> TrainerCallback:
    from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

    class ClockCallback(TrainerCallback):
        def on_train_begin(
            self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
        ) -> None:
            clock.began = time.perf_counter()

        def on_step_begin(
            self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
        ) -> None:
            if clock.first_tokens is None:
                clock.first_tokens = state.num_input_tokens_seen
            clock.step_started = time.perf_counter()

        def on_step_end(
            self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
        ) -> None:
            clock.step_seconds += time.perf_counter() - clock.step_started

        def on_log(
            self,
            args: TrainingArguments,
            state: TrainerState,
            control: TrainerControl,
            logs: dict[str, float] | None = None,
            **kwargs: Any,
        ) -> None:
            if logs and "loss" in logs:
                clock.last_log = time.perf_counter()
                clock.losses.append(float(logs["loss"]))
                rate = (state.num_input_tokens_seen - (clock.first_tokens or 0)) / max(
                    clock.step_seconds, 1e-9
                )
                print(
                    f"    [{clock.label}] step {state.global_step}/{state.max_steps}: "
                    f"loss {logs['loss']:.4f}, {rate:.0f} tok/s",
                    file=sys.stderr,
                    flush=True,
                )

    return ClockCallback()


def bare_train(spec: BareSpec) -> BareResult:
    """The same LoRA/QLoRA SFT as a job, written against transformers, peft, trl and bitsandbytes only."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, prepare_model_for_kbit_training
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoTokenizer,
        BitsAndBytesConfig,
        PrinterCallback,
        ProgressCallback,
    )
    from trl import SFTConfig, SFTTrainer

    on_gpu = torch.cuda.is_available()
    loading = time.perf_counter()
    kwargs: dict[str, Any] = {"config": plain_config(AutoConfig.from_pretrained(spec.base_model))}
    kwargs["dtype"] = torch.float32
    if spec.quantization == "nf4":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16 if on_gpu else torch.float32,
        )
        if on_gpu:
            kwargs["device_map"] = {"": torch.cuda.current_device()}
    model: Any = AutoModelForCausalLM.from_pretrained(spec.base_model, **kwargs)
    if spec.quantization == "nf4":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=on_gpu)
    footprint = model.get_memory_footprint() / 2**20
    load_seconds = time.perf_counter() - loading
    after_load = peak_rss_mib()

    tokenizer = AutoTokenizer.from_pretrained(spec.base_model)
    tokenizer.chat_template = marked_template(tokenizer)
    conversations = [{"messages": row["messages"]} for row in read_jsonl(Path(spec.training_file))]
    clock = StepClock(spec.label)
    trainer = SFTTrainer(
        model=model,
        args=SFTConfig(
            output_dir=spec.output_dir,
            num_train_epochs=spec.n_epochs,
            max_steps=spec.max_steps,
            per_device_train_batch_size=spec.batch_size,
            learning_rate=spec.learning_rate,
            seed=spec.seed,
            max_length=2048,
            assistant_only_loss=True,
            eval_strategy="no",
            save_strategy="no",
            logging_strategy="steps",
            logging_steps=1,
            report_to="none",
            disable_tqdm=True,
            include_num_input_tokens_seen="non_padding",
            activation_checkpointing=on_gpu,
            bf16=on_gpu and torch.cuda.is_bf16_supported(),
            dataloader_pin_memory=on_gpu,
        ),
        train_dataset=Dataset.from_list(conversations),
        processing_class=tokenizer,
        peft_config=LoraConfig(
            r=spec.lora_r,
            lora_alpha=spec.lora_alpha,
            lora_dropout=spec.lora_dropout,
            target_modules="all-linear",
            bias="none",
            task_type="CAUSAL_LM",
        ),
        callbacks=[clock_callback(clock)],
    )
    for noisy in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(noisy)
    trainer.train()
    return BareResult(
        label=spec.label,
        quantization=spec.quantization,
        steps=trainer.state.global_step,
        tokens=int(trainer.state.num_input_tokens_seen - (clock.first_tokens or 0)),
        step_seconds=clock.step_seconds,
        wall_seconds=clock.last_log - clock.began,
        final_loss=clock.losses[-1] if clock.losses else None,
        peak_rss_after_load_mib=after_load,
        peak_rss_mib=peak_rss_mib(),
        model_footprint_mib=footprint,
        cuda_peak_mib=torch.cuda.max_memory_allocated() / 2**20 if on_gpu else None,
        load_seconds=load_seconds,
    )


def child_main(spec_file: Path) -> None:
    import datasets
    import transformers

    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    spec = BareSpec(**json.loads(spec_file.read_text()))
    result = bare_train(spec)
    Path(spec.result_file).write_text(json.dumps(asdict(result)))


def run_bare(spec: BareSpec, work: Path, env: dict[str, str]) -> BareResult:
    """``bare_train`` in a fresh Python process (its own peak RSS, no warm caches from this one)."""
    spec_file = work / f"{spec.label}.spec.json"
    spec_file.write_text(json.dumps(asdict(spec)))
    log(f"bare run {spec.label}: quantization {spec.quantization}, max_steps {spec.max_steps}")
    command = [sys.executable, str(Path(__file__).resolve()), "--child", str(spec_file)]
    done = subprocess.run(command, cwd=ROOT, env={**os.environ, **env})
    if done.returncode != 0:
        raise RuntimeError(f"bare run {spec.label} failed with exit code {done.returncode}")
    result = BareResult(**json.loads(Path(spec.result_file).read_text()))
    log(
        f"bare run {spec.label}: {result.steps} steps, {result.tokens} tokens, "
        f"{result.tokens_per_second_steps:.0f} tok/s (steps), "
        f"{result.tokens_per_second_wall:.0f} tok/s (wall), "
        f"peak RSS {result.peak_rss_mib:.0f} MiB"
    )
    return result


def bare_spec(
    options: Options, base: str, training: Path, work: Path, label: str, **changes: Any
) -> BareSpec:
    from finetune.config import Hyperparameters

    hyper = Hyperparameters.model_validate(options.hyperparameters())
    values: dict[str, Any] = {
        "base_model": base,
        "training_file": str(training),
        "output_dir": str(work / label),
        "result_file": str(work / f"{label}.result.json"),
        "label": label,
        "n_epochs": hyper.n_epochs,
        "batch_size": hyper.batch_size,
        "learning_rate": hyper.learning_rate,
        "lora_r": hyper.lora_r,
        "lora_alpha": hyper.lora_alpha,
        "lora_dropout": hyper.lora_dropout,
        "quantization": hyper.quantization,
        "seed": options.seed,
    }
    return BareSpec(**{**values, **changes})


# --- the parts ----------------------------------------------------------------------------------------------


@dataclass
class Results:
    machine: dict[str, Any]
    options: dict[str, Any]
    accuracy: dict[str, Any] = field(default_factory=dict)
    throughput: dict[str, Any] = field(default_factory=dict)
    memory: dict[str, Any] = field(default_factory=dict)
    wall_seconds: dict[str, float] = field(default_factory=dict)


def accuracy_part(
    options: Options, service: Service, client: OpenAI, splits: Splits, results: Results
) -> JobRun:
    facts, questions = load_facts(), load_questions(options.question_limit)
    training, validation = upload(client, splits.training), upload(client, splits.validation)
    run = run_job(service, client, training, validation, options.hyperparameters(), "kestrel", options.seed)
    assert run.model is not None
    listed = [m.id for m in client.models.list()]
    log(f"GET /v1/models: {listed}")
    log(f"asking {len(questions)} held-out questions to {BASE_MODEL}")
    base = ask_all(client, BASE_MODEL, questions, facts, options.max_tokens)
    log(f"asking {len(questions)} held-out questions to {run.model}")
    tuned = ask_all(client, run.model, questions, facts, options.max_tokens)
    span = run.training_span()
    evals = run.metrics("eval_loss")
    results.accuracy = {
        "job_id": run.job_id,
        "fine_tuned_model": run.model,
        "model_listed": run.model in listed,
        "training_examples": splits.training_count,
        "validation_examples": len(splits.validation_conversations),
        "questions": len(questions),
        "max_tokens": options.max_tokens,
        "base_correct": base.score,
        "tuned_correct": tuned.score,
        "base_masked": base.masked,
        "tuned_masked": tuned.masked,
        "base_answer_seconds": base.seconds,
        "tuned_answer_seconds": tuned.seconds,
        "job_wall_seconds": run.wall_seconds,
        "job_training_seconds": span[0] if span else None,
        "job_steps": span[1] if span else None,
        "job_trained_tokens": run.trained_tokens,
        "job_eval_losses": [m["eval_loss"] for m in evals],
        "job_final_train_loss": (run.metrics("train_loss") or [{}])[-1].get("train_loss"),
        "per_fact": per_fact(questions, base, tuned),
        "answers": [
            {"fact": q.fact, "question": q.question, "base": b, "tuned": t, "base_ok": bo, "tuned_ok": to}
            for q, b, t, bo, to in zip(
                questions, base.texts, tuned.texts, base.correct, tuned.correct, strict=True
            )
        ],
    }
    log(
        f"held-out facts stated: base {base.score}/{len(questions)}, "
        f"fine-tuned {tuned.score}/{len(questions)}"
    )
    return run


def per_fact(questions: list[Question], base: Answers, tuned: Answers) -> dict[str, list[int]]:
    """fact -> [questions, base right, fine-tuned right]."""
    table: dict[str, list[int]] = {}
    for question, b, t in zip(questions, base.correct, tuned.correct, strict=True):
        row = table.setdefault(question.fact, [0, 0, 0])
        row[0], row[1], row[2] = row[0] + 1, row[1] + b, row[2] + t
    return table


def eval_loss_part(service: Service, run: JobRun | None, splits: Splits, base: str, results: Results) -> None:
    """Loss on the validation split's assistant tokens: the served base model and the served merged model."""
    conversations = splits.validation_conversations
    log(f"eval loss of {BASE_MODEL} on {len(conversations)} validation conversations")
    base_loss, tokens = assistant_token_loss(base, conversations)
    results.accuracy.update(base_eval_loss=base_loss, eval_tokens=tokens)
    if run is not None:
        merged = service.data_dir.resolve() / "jobs" / run.job_id / "merged"
        log(f"eval loss of the merged fine-tuned model ({merged})")
        tuned_loss, _ = assistant_token_loss(str(merged), conversations)
        results.accuracy["tuned_eval_loss"] = tuned_loss
        log(f"eval loss: base {base_loss:.4f}, fine-tuned {tuned_loss:.4f} ({tokens} assistant tokens)")


def throughput_part(
    options: Options,
    service: Service | None,
    client: OpenAI | None,
    splits: Splits,
    base: str,
    work: Path,
    results: Results,
) -> None:
    """Alternating service jobs and bare runs on the throughput subset, one epoch each."""
    service_runs: list[dict[str, float]] = []
    bare_runs: list[dict[str, float]] = []
    files: tuple[str, str] | None = None
    if service is not None and client is not None:
        files = upload(client, splits.throughput), upload(client, splits.throughput_validation)
    for repeat in range(1, options.repeats + 1):
        log(f"throughput round {repeat}/{options.repeats}: {splits.throughput_count} examples, one epoch")
        if service is not None and client is not None and files is not None:
            hyper = options.hyperparameters(n_epochs=1)
            run = run_job(service, client, files[0], files[1], hyper, f"tput{repeat}", options.seed)
            service_runs.append(service_figures(run))
            log(f"service run {repeat}: {service_runs[-1]}")
        spec = bare_spec(options, base, splits.throughput, work, f"throughput-{repeat}", n_epochs=1)
        bare = run_bare(spec, work, options.thread_env())
        bare_runs.append(
            {
                "steps": bare.steps,
                "tokens": bare.tokens,
                "tokens_per_second_steps": bare.tokens_per_second_steps,
                "tokens_per_second_wall": bare.tokens_per_second_wall,
                "wall_seconds": bare.wall_seconds,
                "final_loss": bare.final_loss or 0.0,
            }
        )
    results.throughput = {
        "examples": splits.throughput_count,
        "service": service_runs,
        "bare": bare_runs,
        "service_median": medians(service_runs),
        "bare_median": medians(bare_runs),
    }


def service_figures(run: JobRun) -> dict[str, float]:
    span = run.training_span()
    last = run.metrics("train_loss")[-1]
    seconds, steps = span if span else (0.0, int(last["step"]))
    return {
        "steps": steps,
        "tokens": run.trained_tokens,
        "tokens_per_second_steps": float(last.get("tokens_per_second") or 0.0),
        "tokens_per_second_wall": run.trained_tokens / seconds if seconds else 0.0,
        "wall_seconds": seconds,
        "final_loss": float(last["train_loss"]),
        "job_seconds": run.wall_seconds,
    }


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    if not runs:
        return {}
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def memory_part(options: Options, splits: Splits, base: str, work: Path, results: Results) -> None:
    for quantization in ("nf4", "none"):
        spec = bare_spec(
            options,
            base,
            splits.training,
            work,
            f"memory-{quantization}",
            quantization=quantization,
            max_steps=options.memory_steps,
        )
        result = run_bare(spec, work, options.thread_env())
        results.memory[quantization] = {
            **asdict(result),
            "seconds_per_step": result.step_seconds / result.steps,
        }


# --- the report ---------------------------------------------------------------------------------------------


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a and b else "n/a"


def share(right: int, total: int) -> str:
    return f"{right}/{total} ({100 * right / total:.1f}%)" if total else "n/a"


def row(part: str, measure: str, a: str = "", b: str = "", compared: str = "", target: str = "") -> str:
    return f"| {part} | {measure} | {a} | {b} | {compared} | {target} |"


def table(results: Results, options: Options) -> str:
    m = results.machine
    learning_rate = 2e-4 * options.learning_rate_multiplier
    lines = [
        "## Fine-tuning benchmark (Kestrelmoor Outfitters)",
        "",
        f"Machine: {m['cpu']}, {m['cpus_usable']} usable cores (torch threads {m['torch_threads']}), "
        f"CUDA: {m['cuda'] or 'none'}; torch {m['torch']}, transformers {m['transformers']}, "
        f"peft {m['peft']}, trl {m['trl']}, bitsandbytes {m['bitsandbytes']}, Python {m['python']}; "
        f"load average at start {m['load_average']}; threads: {options.threads or 'torch default'}.",
        f"Hyperparameters: {options.hyperparameters()} (learning rate {learning_rate:g}), "
        f"seed {options.seed}.",
        "",
        row("Part", "Measure", "A", "B", "B/A", "Target"),
        row("---", "---", "---", "---", "---", "---"),
    ]
    lines += _accuracy_rows(results.accuracy)
    lines += _throughput_rows(results.throughput, options)
    lines += _memory_rows(results.memory, options)
    walls = ", ".join(f"{name} {seconds / 60:.1f} min" for name, seconds in results.wall_seconds.items())
    lines += ["", f"Wall times: {walls}."]
    return "\n".join(lines)


def _accuracy_rows(a: dict[str, Any]) -> list[str]:
    if not a:
        return []
    n, base, tuned = a["questions"], a["base_correct"], a["tuned_correct"]
    verdict = "met" if n and tuned / n >= 0.7 else "NOT met"
    rows = [
        row(
            "quality",
            f"held-out questions whose answer states the fact ({a['max_tokens']} tokens at most; "
            "A base, B fine-tuned)",
            share(base, n),
            share(tuned, n),
            ratio(tuned, base),
            f"B >= 70%: {verdict}",
        ),
        row(
            "quality",
            "answers where the safety layer masked PII",
            str(a["base_masked"]),
            str(a["tuned_masked"]),
        ),
    ]
    if "base_eval_loss" in a:
        rows.append(
            row(
                "quality",
                f"eval loss on assistant tokens, {a['validation_examples']} validation conversations "
                f"({a['eval_tokens']} tokens; A base, B served fine-tuned)",
                f"{a['base_eval_loss']:.4f}",
                f"{a.get('tuned_eval_loss', float('nan')):.4f}",
                ratio(a.get("tuned_eval_loss"), a["base_eval_loss"]),
                "B lower",
            )
        )
    if a["job_eval_losses"]:
        losses = ", ".join(f"{loss:.3f}" for loss in a["job_eval_losses"])
        rows.append(
            row("quality", "the job's own eval loss after each epoch (nf4 base + adapter)", "", losses)
        )
    rows += [
        row(
            "quality",
            f"the job: {a['job_steps']} steps, {a['job_trained_tokens']} tokens; training time / "
            "create-to-served time",
            "",
            f"{_minutes(a['job_training_seconds'])} / {_minutes(a['job_wall_seconds'])}",
        ),
        row(
            "quality",
            "time to answer every question (B includes loading the model on its first chat)",
            f"{a['base_answer_seconds']:.0f} s",
            f"{a['tuned_answer_seconds']:.0f} s",
        ),
    ]
    return rows


def _minutes(seconds: float | None) -> str:
    return f"{seconds / 60:.1f} min" if seconds else "n/a"


def _throughput_rows(t: dict[str, Any], options: Options) -> list[str]:
    if not t:
        return []
    s, b = t["service_median"], t["bare_median"]
    runs = f"median of {len(t['bare'])}, {options.throughput_steps} steps of {options.batch_size}"
    rows = [
        row(
            "throughput",
            f"tokens/s, {what} ({runs}; A bare TRL script, B service job)",
            f"{b.get(key, 0):.0f}",
            f"{s.get(key, 0):.0f}" if s else "skipped",
            ratio(s.get(key), b.get(key)),
            f"B/A >= 0.95: {_verdict(s.get(key), b.get(key))}",
        )
        for key, what in (
            ("tokens_per_second_wall", "trained tokens / training wall time"),
            ("tokens_per_second_steps", "over summed step times (the job's metrics events)"),
        )
    ]
    rows.append(
        row(
            "throughput",
            "tokens trained / training wall time (A bare, B service)",
            f"{b.get('tokens', 0):.0f} / {b.get('wall_seconds', 0):.1f} s",
            f"{s.get('tokens', 0):.0f} / {s.get('wall_seconds', 0):.1f} s" if s else "",
        )
    )
    if s.get("job_seconds"):
        rows.append(
            row(
                "throughput",
                "a whole throughput job (queue, load, train, eval, save, merge)",
                "",
                f"{s['job_seconds']:.0f} s",
            )
        )
    return rows


def _verdict(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "n/a"
    return "met" if a / b >= 0.95 else "NOT met"


def _memory_rows(memory: dict[str, Any], options: Options) -> list[str]:
    if "nf4" not in memory or "none" not in memory:
        return []
    q, f = memory["nf4"], memory["none"]
    rows = []
    for key, what, unit in (
        (
            "peak_rss_mib",
            f"peak RSS, {options.memory_steps} steps of {options.batch_size}, fresh process",
            "MiB",
        ),
        ("peak_rss_after_load_mib", "peak RSS once the model is loaded and prepared", "MiB"),
        ("model_footprint_mib", "model footprint (`get_memory_footprint`)", "MiB"),
        ("cuda_peak_mib", "`torch.cuda.max_memory_allocated`", "MiB"),
        ("seconds_per_step", "seconds per training step", "s"),
    ):
        if q[key] is None:
            rows.append(row("memory", f"{what}", "no CUDA device", "no CUDA device"))
            continue
        target = "" if key == "seconds_per_step" else f"A lower: {'yes' if q[key] < f[key] else 'no'}"
        rows.append(
            row(
                "memory",
                f"{what} (A QLoRA nf4, B LoRA fp32)",
                f"{q[key]:.2f} {unit}" if unit == "s" else f"{q[key]:.0f} {unit}",
                f"{f[key]:.2f} {unit}" if unit == "s" else f"{f[key]:.0f} {unit}",
                ratio(f[key], q[key]),
                target,
            )
        )
    return rows


# --- main ---------------------------------------------------------------------------------------------------


def contact_pii_policy(work: Path) -> Path:
    """A copy of the default policy that lets e-mail addresses and phone numbers through."""
    from safety.policy import DEFAULT_POLICY_FILE

    text = Path(DEFAULT_POLICY_FILE).read_text()
    text = re.sub(r'^(email|phone) = "mask"', r'\1 = "allow"', text, flags=re.MULTILINE)
    path = work / "policy.toml"
    path.write_text(text)
    return path


def timed(results: Results, name: str, action: Callable[[], Any]) -> Any:
    started = time.monotonic()
    try:
        return action()
    finally:
        results.wall_seconds[name] = time.monotonic() - started


def run(options: Options) -> Results:
    results = Results(machine=machine(), options={k: str(v) for k, v in asdict(options).items()})
    log(f"machine: {results.machine}")
    work = Path(tempfile.mkdtemp(prefix="bench-finetune-"))
    splits = make_splits(options, work)
    base = base_model_dir()
    log(
        f"work dir {work}; {splits.training_count} training, "
        f"{len(splits.validation_conversations)} validation, "
        f"{splits.throughput_count} throughput examples; base model {base}"
    )
    if options.skip_service and "accuracy" in options.parts:
        log("--skip-service: no accuracy part (it needs the service); throughput measures the bare side only")
    wants_service = not options.skip_service and (
        "accuracy" in options.parts or "throughput" in options.parts
    )
    service: Service | None = None
    job: JobRun | None = None
    try:
        if wants_service:
            env = options.thread_env()
            if options.allow_contact_pii:
                env["ASSISTANT_SAFETY__POLICY_FILE"] = str(contact_pii_policy(work))
            service = Service(work / "service", env)
            service.data_dir.mkdir()
            timed(results, "service start", service.start)
        client = service.client() if service is not None else None
        if "accuracy" in options.parts and service is not None and client is not None:
            job = timed(results, "accuracy", lambda: accuracy_part(options, service, client, splits, results))
        if "throughput" in options.parts:
            timed(
                results,
                "throughput",
                lambda: throughput_part(options, service, client, splits, base, work, results),
            )
    finally:
        if service is not None:
            service.stop()
    if options.threads is not None:
        import torch

        torch.set_num_threads(options.threads)
    if "accuracy" in options.parts and service is not None:
        timed(results, "eval loss", lambda: eval_loss_part(service, job, splits, base, results))
    if "memory" in options.parts:
        timed(results, "memory", lambda: memory_part(options, splits, base, work, results))
    if options.keep:
        log(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return results


def main(argv: Sequence[str] | None = None) -> None:
    parsed = parse_args(argv)
    if isinstance(parsed, Path):
        child_main(parsed)
        return
    results = run(parsed)
    report = table(results, parsed)
    print("\n" + report, flush=True)
    if parsed.json_path is not None:
        parsed.json_path.write_text(json.dumps(asdict(results), indent=2, default=str))
        log(f"results written to {parsed.json_path}")


if __name__ == "__main__":
    main()
