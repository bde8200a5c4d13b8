"""Engine benchmark: the same model and reports in-process and through `radbridge llm-server`.

    .venv/bin/python benchmarks/engines.py [--reports 6] [--in-flight 1,4,8] [--model PATH]
    .venv/bin/python benchmarks/engines.py --gpu --model /models/qwen2.5-7b-instruct-q4_k_m.gguf

One run, one table: the LLM stage (`workers.llm_stage.extract`, template chest_findings, the
reports of tests/fixtures/eval/chest_findings.jsonl cycled to --reports) through

- `in-process`: the llamacpp engine (llguidance loop, prefix reuse), one report at a time;
- `llm-server xK`: the openai engine against llama.cpp's server started in this process
  (xllamacpp, `--parallel` = the largest K), K reports in flight from a thread pool.

Columns: reports/s, output tokens/s (as each engine counts them: the in-process engine's JSON is
compact, the server's json_schema output has whitespace, so compare reports/s first), p50/p95
latency per report, and reports/s relative to in-process. Each mode first runs one unmeasured
report (model load, prefix cache), and the server first gets one unmeasured request per slot, all
at once: llama.cpp caches the shared prompt prefix per slot (it is not shared between slots), so a
cold slot evaluates the whole ~3,400-token prompt once; a long run pays that once per slot, the
steady state is what is measured. `--gpu` offloads every layer (RADBRIDGE_N_GPU_LAYERS=-1) in
both engines: it needs CUDA builds (llama-cpp-python built with -DGGML_CUDA=on, see the README;
xllamacpp from its cu128/cu132 index) and a real model.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from adapter.settings import Settings  # noqa: E402
from mappings.report import Report  # noqa: E402
from mappings.template import get_template  # noqa: E402
from workers.engine_openai import OpenAIEngine  # noqa: E402
from workers.extraction_engine import ExtractionEngine  # noqa: E402
from workers.llm_server import start_llm_server  # noqa: E402
from workers.llm_stage import extract  # noqa: E402

REPORTS = ROOT / "tests" / "fixtures" / "eval" / "chest_findings.jsonl"


@dataclass
class Row:
    mode: str
    in_flight: int
    seconds: float
    latencies: list[float]
    tokens: int
    failed: int
    errors: list[str]

    @property
    def reports_per_s(self) -> float:
        return len(self.latencies) / self.seconds

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def load_reports(n: int) -> list[Report]:
    rows = [json.loads(line) for line in REPORTS.read_text("utf-8").splitlines() if line.strip()]
    return [
        Report(source_format="hl7v2", report_id=f"b{i}", text=rows[i % len(rows)]["text"])
        for i in range(n)
    ]


def run(
    engine: ExtractionEngine, reports: list[Report], settings: Settings, in_flight: int, mode: str
) -> Row:
    template = get_template("chest_findings")
    extract(reports[0], template, engine, settings=settings)  # warm-up, not measured

    def one(report: Report) -> tuple[float, int, str | None]:
        started = time.perf_counter()
        try:
            extraction = extract(report, template, engine, settings=settings)
        except Exception as exc:  # a failed report still cost its time; counted, not hidden
            return time.perf_counter() - started, 0, f"{type(exc).__name__}: {exc}"[:120]
        return time.perf_counter() - started, extraction.timings.completion_tokens, None

    started = time.perf_counter()
    with ThreadPoolExecutor(in_flight) as pool:
        results = list(pool.map(one, reports))
    seconds = time.perf_counter() - started
    return Row(
        mode, in_flight, seconds, [r[0] for r in results], sum(r[1] for r in results),
        sum(r[2] is not None for r in results), [r[2] for r in results if r[2]],
    )  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reports", type=int, default=6)
    parser.add_argument("--in-flight", default="1,4,8", help="server concurrency levels")
    parser.add_argument("--model", type=Path, default=None, help="GGUF (default: bundled SmolLM2)")
    parser.add_argument(
        "--threads", type=int, default=None, help="llama.cpp threads (default: all)"
    )
    parser.add_argument("--gpu", action="store_true", help="offload all layers (CUDA builds)")
    parser.add_argument("--skip-in-process", action="store_true")
    args = parser.parse_args()
    levels = [int(x) for x in args.in_flight.split(",")]
    settings = Settings(
        model_path=args.model, n_threads=args.threads, n_gpu_layers=-1 if args.gpu else 0,
        stage="llm", max_tokens=768,
    )  # fmt: skip
    reports = load_reports(args.reports)
    rows: list[Row] = []
    if not args.skip_in_process:
        from workers.engine import close_engines, get_llamacpp_engine

        rows.append(run(get_llamacpp_engine(settings), reports, settings, 1, "in-process"))
        close_engines()  # free the cores' caches and memory for the server
    port = _free_port()
    with start_llm_server(settings, port=port, parallel=max(levels)) as server:
        warm = settings.model_copy(
            update={
                "engine": "openai",
                "llm_base_url": server.base_url,
                "llm_concurrency": max(levels),
            }
        )
        run(OpenAIEngine(warm), reports[:1] * max(levels), warm, max(levels), "warm-up")
        for level in levels:
            client = settings.model_copy(
                update={
                    "engine": "openai",
                    "llm_base_url": server.base_url,
                    "llm_concurrency": level,
                }
            )
            engine = OpenAIEngine(client)
            rows.append(run(engine, reports, client, level, f"llm-server x{level}"))
            engine.close()
    base = rows[0].reports_per_s if not args.skip_in_process else None
    model = (args.model or Path("SmolLM2-135M-Instruct.Q4_1.gguf")).name
    print(f"\nmodel {model}, {len(reports)} reports, template chest_findings, "
          f"{'GPU (all layers)' if args.gpu else f'CPU {args.threads or os.cpu_count()} threads'}")  # fmt: skip
    header = f"{'engine':<16} {'in flight':>9} {'reports/s':>10} {'out tok/s':>10} {'p50 s':>8} {'p95 s':>8} {'failed':>6} {'vs in-process':>13}"
    print(header)
    print("-" * len(header))
    for row in rows:
        ratio = f"{row.reports_per_s / base:.2f}x" if base else "n/a"
        print(
            f"{row.mode:<16} {row.in_flight:>9} {row.reports_per_s:>10.3f} "
            f"{row.tokens / row.seconds:>10.1f} {statistics.median(row.latencies):>8.1f} "
            f"{row.percentile(0.95):>8.1f} {row.failed:>6} {ratio:>13}"
        )
    for row in rows:
        for error in sorted(set(row.errors)):
            print(f"  {row.mode}: {row.errors.count(error)} x {error}")


if __name__ == "__main__":
    main()
