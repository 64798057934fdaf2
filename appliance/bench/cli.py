"""`appliance bench`: measure OpenAI-compatible endpoints side by side; `bench compare`.

appliance bench --target llama=http://127.0.0.1:8080 --model qwen2.5-coder-0.5b-instruct
appliance bench --launch ours=appliance,spec=ngram --launch ls-mod=llama-server,spec=ngram-mod \
  --launch-model qwen2.5-coder-0.5b-instruct --gguf MODEL.gguf --workload edit
appliance bench compare RUN.json [OTHER.json] [--baseline NAME] [--reference NAME] [--markdown]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from appliance.bench import compare as compare_mod
from appliance.bench import edit_report
from appliance.bench import results as results_mod
from appliance.bench.settings import WORKLOADS, Settings, TargetState
from appliance.bench.targets import Target, TargetSpecError, check_unique, parse_target

HELP = "benchmark OpenAI-compatible endpoints (ours, llama-server, vLLM, ...) on the same workloads"


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from e


def _workloads(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    bad = [n for n in names if n not in WORKLOADS]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown workload(s) {bad}; choose from {', '.join(WORKLOADS)}")
    return names


def _default_out() -> Path:
    try:
        from appliance.paths import data_dir

        return data_dir() / "bench"
    except Exception:
        return Path("bench-results")


def configure(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument(
        "action",
        nargs="*",
        metavar="compare FILE [FILE]",
        help="`compare A.json [B.json]`: ratios between runs or targets instead of measuring",
    )
    g = p.add_argument_group("what to measure")
    g.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="NAME=URL[,model=ID][,key=ENV]",
        help="an OpenAI-compatible endpoint (repeatable); key=ENV names the API key's variable",
    )
    g.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME",
        help="start `appliance serve --model NAME` for this catalog model and measure it (repeatable)",
    )
    g.add_argument(
        "--serve-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for the started `appliance serve` (repeatable, e.g. --serve-arg=--slots=4)",
    )
    g.add_argument(
        "--start-timeout", type=float, default=900.0, help="seconds to wait for /health (default 900)"
    )
    g.add_argument(
        "--launch",
        action="append",
        default=[],
        metavar="NAME=KIND[,opt=value...]",
        help="start a server and measure it with the others (repeatable): KIND appliance or "
        "llama-server; options model, gguf, bin, spec, threads, ctx, slots, args, env.VAR, ref "
        "(see appliance/bench/launch.py)",
    )
    g.add_argument("--launch-model", metavar="NAME", help="--launch: the model (catalog name / alias)")
    g.add_argument(
        "--llama-server", default="llama-server", metavar="PATH", help="--launch: llama-server's binary"
    )
    g.add_argument("--threads", type=int, help="--launch: threads of every launched server")
    w = p.add_argument_group("workloads")
    w.add_argument(
        "--workload",
        type=_workloads,
        default=["decode", "concurrency", "trace"],
        help=f"comma list of {','.join(WORKLOADS)} (default decode,concurrency,trace)",
    )
    w.add_argument(
        "--prompt-sizes",
        type=_ints,
        default=[128, 1024, 4096, 8192],
        help="prompt tokens for decode/prefill (default 128,1024,4096,8192; over the context: skipped)",
    )
    w.add_argument(
        "--max-tokens",
        type=int,
        default=128,
        help="output tokens per decode/concurrency request (default 128)",
    )
    w.add_argument("--concurrency", type=_ints, default=[1, 2, 4, 8], help="stream counts (default 1,2,4,8)")
    w.add_argument(
        "--trace",
        action="append",
        default=[],
        metavar="DIR|synthetic",
        help="agent trace folder of request bodies, or `synthetic` (repeatable; default synthetic)",
    )
    w.add_argument(
        "--trace-max-tokens",
        type=int,
        default=32,
        help="override each trace request's max_tokens (default 32; 0 keeps the agent's)",
    )
    w.add_argument(
        "--trace-warm",
        action="store_true",
        help="replay traces verbatim; by default each repetition is tagged as a new (cold) session",
    )
    w.add_argument(
        "--edits",
        metavar="NAMES|N",
        help="edit: comma list of case names (appliance/bench/edits/cases.json), or N for the first N",
    )
    w.add_argument(
        "--edit-max-tokens",
        type=int,
        default=4096,
        help="edit: max_tokens per request, room for the whole file (default 4096)",
    )
    w.add_argument(
        "--edit-warm",
        action="store_true",
        help="edit: send the same prompts every repetition (default: tagged per repetition, so cold)",
    )
    w.add_argument(
        "--session-fillers",
        type=int,
        default=4,
        help="session: requests sent between the cold and the new session (default 4, to evict the slots)",
    )
    m = p.add_argument_group("method")
    m.add_argument("--repeat", type=int, default=3, help="repetitions; medians with min and max (default 3)")
    m.add_argument(
        "--no-warmup", action="store_true", help="skip the warm-up generation (calibration still runs)"
    )
    m.add_argument("--no-ignore-eos", action="store_true", help="do not send ignore_eos")
    m.add_argument("--temperature", type=float, default=0.0)
    m.add_argument("--timeout", type=float, default=600.0, help="seconds per request (default 600)")
    m.add_argument("--model-bytes", type=int, help="bytes read per token (model file size) for the ceiling")
    m.add_argument("--gguf", type=Path, help="the GGUF the targets serve (its size gives the ceiling)")
    o = p.add_argument_group("output")
    o.add_argument("--out", type=Path, default=None, help="results folder (default DATA_DIR/bench)")
    o.add_argument("--no-chart", action="store_true")
    o.add_argument("--quiet", action="store_true", help="no live table")
    c = p.add_argument_group("compare")
    c.add_argument("--baseline", help="compare: the target others are divided by (default: the first)")
    c.add_argument("--markdown", action="store_true", help="compare: print a Markdown table")
    c.add_argument(
        "--reference",
        help="edit: the target whose outputs the others' are checked against (a target's ref= wins)",
    )
    return p


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `appliance bench` on the top-level CLI's subparsers."""
    p = subparsers.add_parser(
        "bench", help=HELP, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    configure(p)
    p.set_defaults(func=run_args)
    return p


def build_parser() -> argparse.ArgumentParser:
    return configure(
        argparse.ArgumentParser(
            prog="appliance bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
        )
    )


def main(argv: list[str]) -> int:
    return run_args(build_parser().parse_args(argv))


def run_args(args: argparse.Namespace) -> int:
    console = Console()
    if args.action:
        if args.action[0] != "compare" or len(args.action) not in (2, 3):
            console.print(
                "usage: appliance bench compare A.json [B.json] [--baseline NAME] [--reference NAME] "
                "[--markdown]"
            )
            return 2
        return cmd_compare(console, args.action[1:], args.baseline, args.markdown, args.reference)
    return cmd_run(console, args)


def cmd_compare(
    console: Console, files: list[str], baseline: str | None, as_markdown: bool, reference: str | None = None
) -> int:
    try:
        runs = [results_mod.load(f) for f in files]
        if len(runs) == 2:
            rows = compare_mod.compare_runs(runs[0], runs[1])
            title = f"{files[1]} / {files[0]} (ratios of medians)"
        else:
            rows = compare_mod.compare_within(runs[0], baseline)
            title = f"{files[0]}: each target / baseline (ratios of medians)"
    except (OSError, ValueError) as e:
        console.print(f"[red]compare: {e}[/red]")
        return 2
    if as_markdown:
        if len(runs) == 1:
            print(compare_mod.markdown_summary(runs[0]) + "\n")
            edits = edit_report.markdown(runs[0], baseline, reference)
            print(edits + "\n" if edits else "", end="")
        print(compare_mod.markdown(rows))
    else:
        compare_mod.print_rows(console, rows, title)
        for t in edit_report.tables(runs[-1], baseline, reference):
            console.print(t)
    return 0 if rows else 1


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings(
        workloads=args.workload,
        prompt_sizes=args.prompt_sizes,
        max_tokens=args.max_tokens,
        concurrency=args.concurrency,
        traces=args.trace or ["synthetic"],
        trace_max_tokens=args.trace_max_tokens or None,
        trace_cold=not args.trace_warm,
        session_fillers=args.session_fillers,
        repeat=max(1, args.repeat),
        warmup=not args.no_warmup,
        timeout_s=args.timeout,
        ignore_eos=not args.no_ignore_eos,
        temperature=args.temperature,
        edit_cases=[x.strip() for x in args.edits.split(",") if x.strip()] if args.edits else None,
        edit_max_tokens=args.edit_max_tokens,
        edit_cold=not args.edit_warm,
        edit_reference=args.reference,
    )


def _model_bytes(args: argparse.Namespace) -> int | None:
    from appliance.bench.machine import catalog_model_bytes

    if args.model_bytes:
        return args.model_bytes
    if args.gguf and args.gguf.is_file():
        return args.gguf.stat().st_size
    return catalog_model_bytes(args.model[0]) if args.model else None


class Recorder:
    """Keeps every target state and sample, and rewrites the results file after each sample,
    so an interrupted long run (an hour of agent traces) still leaves what it measured."""

    def __init__(self, inner: Any, write: Any):
        self.inner = inner
        self.write = write
        self.states: dict[str, TargetState] = {}
        self.samples: list = []

    def begin(self, total_steps: int) -> None:
        self.inner.begin(total_steps)

    def target(self, state: TargetState) -> None:
        self.states[state.target.name] = state
        self.inner.target(state)

    def sample(self, sample) -> None:
        self.samples.append(sample)
        self.inner.sample(sample)
        self.write(self)

    def end(self) -> None:
        self.inner.end()


def _start(console: Console, server, timeout_s: float, rec) -> Target | None:
    """Start one child server; a failure is recorded as that target's error (others go on)."""
    from appliance.bench.serve import ServerStartError

    console.print(f"starting {server.name}: {' '.join(server.command)}")
    try:
        server.start(timeout_s)
        return server.target
    except (ServerStartError, OSError) as e:
        rec.target(TargetState(target=server.target, error=f"{server.name} did not start: {e}"))
        return None


def _run_groups(
    console: Console, args: argparse.Namespace, targets: list[Target], settings, loaded, rec, launched=()
) -> None:
    """Group 0: the given endpoints, the first started model and every `--launch`ed server,
    interleaved; then one group per further model."""
    from appliance.bench import runner
    from appliance.bench.serve import ManagedServer

    groups: list[tuple[list[Target], str | None]] = [(targets, args.model[0] if args.model else None)]
    groups += [([], name) for name in args.model[1:]]
    for i, (group_targets, model) in enumerate(groups):
        servers = [ManagedServer(model, args.serve_arg)] if model else []
        servers += list(launched) if i == 0 else []
        group = list(group_targets)
        try:
            for server in servers:
                target = _start(console, server, args.start_timeout, rec)
                group += [target] if target else []
            if group:
                runner.run(group, settings, rec, loaded)
        finally:
            for server in servers:
                server.stop()


def _launched(args: argparse.Namespace) -> list:
    """The `--launch` servers (not started yet); raises TargetSpecError for a bad spec."""
    from appliance.bench import launch

    defaults = launch.Defaults(
        model=args.launch_model,
        gguf=str(args.gguf) if args.gguf else None,
        llama_server=args.llama_server,
        threads=args.threads,
    )
    return [launch.managed(launch.parse_launch(spec), defaults) for spec in args.launch]


def cmd_run(console: Console, args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from appliance.bench import chart, machine, report, runner

    try:
        targets = [parse_target(spec) for spec in args.target]
        launched = _launched(args)
        check_unique(targets + [s.target for s in launched])
    except TargetSpecError as e:
        console.print(f"[red]{e}[/red]")
        return 2
    if not targets and not args.model and not launched:
        console.print("[red]nothing to measure: give --target NAME=URL, --model NAME or --launch[/red]")
        return 2
    settings = settings_from(args)
    try:
        loaded = runner.load_traces(settings)
        if "edit" in settings.workloads:
            from appliance.bench.edit import load_edits

            load_edits(settings.edit_cases)  # a bad name fails here, before any server starts
    except (OSError, ValueError) as e:
        console.print(f"[red]{e}[/red]")
        return 2

    created = datetime.now(UTC)
    mach = machine.describe_machine()
    path = results_mod.result_path(args.out or _default_out(), created, settings.run_id)

    def results(rec: Recorder) -> dict[str, Any]:
        return results_mod.build(
            command=["appliance", "bench", *sys.argv[2:]] if sys.argv[1:2] == ["bench"] else sys.argv,
            settings=settings.describe()
            | {"traces_loaded": [(t.name, t.source, t.n_requests) for t in loaded]},
            machine=mach,
            targets=runner.describe_states(list(rec.states.values())),
            samples=rec.samples,
            ceiling=machine.ceiling(mach, _model_bytes(args)),
            created=created,
        )

    names = [t.name for t in targets] + [f"appliance:{m}" for m in args.model] + [s.name for s in launched]
    live = runner.NullReporter() if args.quiet else report.LiveReport(console, names)
    rec = Recorder(live, lambda r: results_mod.write(results(r), path))
    try:
        _run_groups(console, args, targets, settings, loaded, rec, launched)
    finally:
        live.end()
    res = results(rec)
    results_mod.write(res, path)
    report.print_results(console, res, list(rec.states.values()))
    for table in edit_report.tables(res, args.baseline, args.reference):
        console.print(table)
    console.print(f"results: {path}")
    if not args.no_chart:
        try:
            png = chart.write_chart(res, path.with_suffix(".png"))
        except ImportError:
            png = None
            console.print("no chart: matplotlib is not installed (pip install matplotlib)")
        if png:
            console.print(f"chart:   {png}")
    return 0 if any(s.ok for s in rec.samples) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
