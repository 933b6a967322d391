"""The ``cxbench`` command line: run, score, tasks, metrics, data."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT_TASKS = (
    "vqa_closed",
    "vqa_open",
    "report_generation",
    "temporal_comparison",
    "localization",
    "diagnosis_recall1",
)
DEFAULT_MODELS = ("prior", "random", "phantom-cnn")


def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _add_include(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--include-path", action="append", default=[], metavar="DIR", help="extra folder of task YAMLs"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cxbench", description="Evaluate chest X-ray multimodal LLMs.")
    sub = parser.add_subparsers(dest="command")

    run = sub.add_parser("run", help="evaluate models on tasks (default: baselines on the default suite)")
    run.add_argument("--tasks", type=_csv, default=list(DEFAULT_TASKS), help="comma-separated task names")
    run.add_argument(
        "--model",
        action="append",
        dest="models",
        metavar="SPEC",
        help="model spec (repeatable): prior, random, phantom-cnn, predictions:FILE, python:MOD:FN",
    )
    run.add_argument(
        "--model-args",
        action="append",
        default=[],
        metavar="K=V,...",
        help="arguments for the model given at the same position (repeatable)",
    )
    run.add_argument("--limit", type=int, default=None, help="evaluate only the first N samples of each task")
    run.add_argument("--seed", type=int, default=0, help="seed for bootstrap CIs and seeded models")
    run.add_argument("--batch-size", type=int, default=8)
    run.add_argument(
        "--output", default="results", help="folder for result files and logs (default: results)"
    )
    run.add_argument(
        "--cache", default=None, metavar="PATH", help="SQLite response cache (default: user cache)"
    )
    run.add_argument("--no-cache", action="store_true", help="do not read or write the response cache")
    run.add_argument("--split", default=None, help="data split to evaluate (default: the task's)")
    run.add_argument("--data-root", default=None, help="root folder of the task's data set")
    run.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the 95%% CIs")
    run.add_argument("--no-progress", action="store_true", help="hide progress bars")
    run.add_argument(
        "--ray", type=int, default=0, metavar="N", help="shard each task over N Ray actors (one model each)"
    )
    run.add_argument("--ray-address", default=None, help="Ray cluster address (default: a local instance)")
    run.add_argument(
        "--shard",
        default=None,
        metavar="I/N",
        help="evaluate shard I of N (0-based); join with `cxbench merge`",
    )
    _add_include(run)

    score = sub.add_parser("score", help="re-score per-sample logs without calling the model")
    score.add_argument("logs", nargs="+", help="*.samples.jsonl files written by `cxbench run`")
    score.add_argument("--output", default=None, help="result file to write (one log only)")
    score.add_argument("--seed", type=int, default=0)
    score.add_argument("--bootstrap", type=int, default=1000)
    _add_include(score)

    merge = sub.add_parser("merge", help="join the shard logs of `run --shard I/N` into one run")
    merge.add_argument("run_dir", help="the results/<model>/ folder holding the shard logs")
    merge.add_argument(
        "--tasks", type=_csv, default=None, help="tasks to merge (default: every sharded task)"
    )
    _add_include(merge)

    tasks = sub.add_parser("tasks", help="list tasks and their metrics")
    _add_include(tasks)

    sub.add_parser("metrics", help="list metrics")

    board = sub.add_parser("leaderboard", help="build leaderboards from result files")
    board_sub = board.add_subparsers(dest="board_command")
    build = board_sub.add_parser("build", help="tables, plots and an HTML page for a leaderboard")
    build.add_argument("name", help="leaderboard name (leaderboards/NAME.yaml) or a YAML path")
    build.add_argument("--results", default=None, help="results folder (default: the YAML's)")
    build.add_argument("--output", default=None, help="output folder (default: leaderboards/NAME/)")

    from cxbench.arena import add_arena_arguments
    from cxbench.compare import add_compare_arguments
    from cxbench.interop.lm_eval import add_interop_arguments
    from cxbench.report.tables import add_table_arguments
    from cxbench.serve import add_serve_arguments

    compare = sub.add_parser(
        "compare", help="paired significance test of a candidate run against a baseline (CI gate)"
    )
    add_compare_arguments(compare)
    add_interop_arguments(sub)  # export lm-eval / import lm-eval
    arena = sub.add_parser("arena", help="pairwise Report Arena judging with Bradley-Terry ratings")
    add_arena_arguments(arena)
    table = sub.add_parser("table", help="paper tables (LaTeX/Markdown/CSV) from result files")
    add_table_arguments(table)

    serve = sub.add_parser("serve", help="serve any cxbench model as an OpenAI-compatible endpoint")
    add_serve_arguments(serve)

    browse = sub.add_parser("browse", help="static HTML pages to read a run sample by sample")
    browse.add_argument("run", help="a results/<model>/ folder or one *.samples.jsonl log")
    browse.add_argument("--output", default=None, help="output file (one log) or folder")

    data = sub.add_parser("data", help="data sets")
    data_sub = data.add_subparsers(dest="data_command")
    from cxbench.data.check import add_check_arguments

    check = data_sub.add_parser(
        "check", help="counts, labels, missing images and malformed rows of a data set"
    )
    add_check_arguments(check)
    phantom = data_sub.add_parser("phantom", help="generate the synthetic phantom CXR data set")
    phantom.add_argument("--n-cases", type=int, default=1500)
    phantom.add_argument("--seed", type=int, default=0)
    phantom.add_argument("--size", type=int, default=256)
    phantom.add_argument("--out", default=None, help="output folder (default: the user cache)")

    cache = sub.add_parser("cache", help="check or repair the response cache")
    cache_sub = cache.add_subparsers(dest="cache_command")
    for name, text in (
        ("check", "exit 1 if the cache file is damaged (SQLite header, length, quick_check)"),
        ("repair", "move a damaged cache aside (PATH.corrupt-<date>) and rebuild it from its readable rows"),
    ):
        command = cache_sub.add_parser(name, help=text)
        command.add_argument("path", nargs="?", default=None, help="cache file (default: the user cache)")
    return parser


def _cmd_run(args: argparse.Namespace) -> int:
    from cxbench.models import load_model, parse_model_args
    from cxbench.results import atomic_write_text, leaderboard_markdown
    from cxbench.runner import RunConfig, run_task
    from cxbench.tasks import get_task

    specs = args.models or list(DEFAULT_MODELS)
    if len(args.model_args) > len(specs):
        raise ValueError("more --model-args than --model")
    model_args = [parse_model_args(a) for a in args.model_args] + [{}] * (len(specs) - len(args.model_args))
    tasks = [get_task(name, args.include_path) for name in args.tasks]
    config = RunConfig(
        batch_size=args.batch_size,
        limit=args.limit,
        seed=args.seed,
        output_dir=args.output,
        cache_path="" if args.no_cache else args.cache,
        n_bootstrap=args.bootstrap,
        split=args.split,
        data_root=args.data_root,
        progress=not args.no_progress,
        shard=_parse_shard(args.shard),
    )
    results = []
    for spec, kwargs in zip(specs, model_args, strict=True):
        try:
            model = load_model(spec, kwargs)
        except TypeError as exc:
            raise ValueError(f"--model-args for {spec!r}: {exc}") from None
        for task in tasks:
            if args.ray:
                from cxbench.distributed import run_with_ray

                result, shards = run_with_ray(
                    task.name, spec, kwargs, config, args.ray, args.include_path, address=args.ray_address
                )
                results.append(result)
                calls = sum(s["model_calls"] for s in shards)
                print(
                    f"{model.name} / {task.name}: {result['n']} samples over {args.ray} Ray actors, "
                    f"{calls} model calls",
                    file=sys.stderr,
                )
                continue
            result, stats = run_task(task, model, config, spec=spec)
            _add_robustness_drop(result, task, Path(args.output) / model.name)
            results.append(result)
            errors = ", ".join(f"{k}={v}" for k, v in result["errors"].items() if v) or "none"
            print(
                f"{model.name} / {task.name}: {stats.samples} samples, {stats.model_calls} model calls, "
                f"{stats.cache_hits} cached, errors: {errors}, {stats.seconds:.1f}s",
                file=sys.stderr,
            )
    table = leaderboard_markdown(results)
    # the folder's table covers every model evaluated into it, not only this run's
    folder_table = leaderboard_markdown(_folder_results(Path(args.output), results))
    atomic_write_text(Path(args.output) / "leaderboard.md", folder_table + "\n")
    print(table)
    return 0


def _folder_results(out: Path, current: list[dict]) -> list[dict]:
    """Result files already in ``out`` (``MODEL/TASK.json``; other models first, sorted by folder)
    followed by this run's results, which replace older files of the same model and task."""
    mine = {(r["model"]["name"], r["task"]["name"]) for r in current}
    earlier: dict[tuple[str, str], dict] = {}
    for path in sorted(out.glob("*/*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            key = (data["model"]["name"], data["task"]["name"])
            if not isinstance(data["metrics"], dict) or key in mine:
                continue
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not a result file (or damaged: `cxbench table` reports those)
        earlier[key] = data
    return [*earlier.values(), *current]


def _add_robustness_drop(result: dict, task, out_dir: Path) -> None:
    """For a TASK@VARIANT run, record the drop against the base task's result when it exists."""
    base_name = task.config.get("base_task")
    base_path = out_dir / f"{base_name}.json" if base_name else None
    if base_path is None or not base_path.is_file():
        return
    from cxbench.results import load_result, write_result
    from cxbench.variants import robustness_drop

    result["robustness_drop"] = {"base_task": base_name, **robustness_drop(load_result(base_path), result)}
    write_result(out_dir / f"{task.name}.json", result)


def _parse_shard(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard expects I/N, e.g. 0/4; got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"--shard {text}: I must be in 0..N-1")
    return index, count


def _cmd_merge(args: argparse.Namespace) -> int:
    import re

    from cxbench.runner import merge_shards
    from cxbench.tasks import get_task

    run_dir = Path(args.run_dir)
    names = args.tasks or sorted(
        {
            re.sub(r"\.shard\d+of\d+\.samples\.jsonl$", "", p.name)
            for p in run_dir.glob("*.shard*of*.samples.jsonl")
        }
    )
    if not names:
        raise ValueError(f"no shard logs (*.shardIofN.samples.jsonl) in {run_dir}")
    for name in names:
        result = merge_shards(get_task(name, args.include_path), run_dir)
        primary = result["metrics"][result["primary_metric"]]
        print(f"{name}: merged {result['n']} samples; {result['primary_metric']} = {primary['value']:.4f}")
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from cxbench.results import write_result
    from cxbench.runner import rescore_log
    from cxbench.tasks import get_task

    if args.output and len(args.logs) > 1:
        raise ValueError("--output takes one log at a time")
    for log in args.logs:
        with open(log, encoding="utf-8") as handle:
            first = json.loads(handle.readline() or "{}")
        header = first.get("header")
        if not header:
            raise ValueError(f"{log}: no cxbench log header on line 1")
        task = get_task(header["task"], args.include_path)
        if task.task_hash != header.get("task_hash"):
            print(f"note: task {task.name!r} changed since {log} was written", file=sys.stderr)
        summary, _ = rescore_log(task, log, n_bootstrap=args.bootstrap, seed=args.seed)
        result_path = Path(log).with_name(Path(log).name.replace(".samples.jsonl", ".json"))
        base = json.loads(result_path.read_text()) if result_path.is_file() else {}
        from cxbench.results import now_iso

        result = {**base, **summary, "date": now_iso(), "rescored_from": str(log)}
        out = Path(args.output) if args.output else result_path.with_name(result_path.stem + ".rescored.json")
        write_result(out, result)
        values = ", ".join(f"{k}={v['value']:.4f}" for k, v in summary["metrics"].items())
        print(f"{task.name} ({summary['n']} samples): {values} -> {out}")
    return 0


def _cmd_tasks(args: argparse.Namespace) -> int:
    from cxbench.tasks import discover

    print("| task | family | dataset | metrics (primary first) |\n|---|---|---|---|")
    for name, task in sorted(discover(args.include_path).items()):
        ordered = [task.primary_metric] + [m for m in task.metrics if m != task.primary_metric]
        print(f"| {name} | {task.family} | {task.dataset['name']}/{task.split()} | {', '.join(ordered)} |")
    return 0


def _cmd_metrics(args: argparse.Namespace) -> int:
    from cxbench import metrics

    print("| metric | better | averaging | model | description |\n|---|---|---|---|---|")
    for name in metrics.names():
        try:
            m = metrics.get(name)
        except Exception as exc:  # e.g. SPICE without its jars
            print(f"| {name} | | | | unavailable here: {exc} |")
            continue
        print(f"| {name} | {m.direction} | {m.averaging} | {m.model or ''} | {m.description} |")
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from cxbench.data import phantom

    if args.data_command == "check":
        from cxbench.data.check import cli_check

        return cli_check(args)
    if args.data_command != "phantom":
        raise ValueError("usage: cxbench data phantom [--n-cases N] [--seed S] [--size PX] [--out DIR]")
    kwargs = {"n_cases": args.n_cases, "seed": args.seed, "size": args.size}
    root = Path(args.out) if args.out else phantom.default_root(**kwargs)
    path = phantom.ensure_phantom(root, **kwargs)
    print(path)
    return 0


def _cmd_leaderboard(args: argparse.Namespace) -> int:
    from cxbench.report.leaderboard import build

    if args.board_command != "build":
        raise ValueError("usage: cxbench leaderboard build NAME [--results DIR] [--output DIR]")
    out = build(args.name, results_dir=args.results, output=args.output)
    print(f"leaderboard written to {out}/ (index.html, leaderboard.md/.csv/.tex, plots/)")
    return 0


def _cmd_browse(args: argparse.Namespace) -> int:
    from cxbench.report.browser import browse

    for page in browse(args.run, args.output):
        print(page)
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from cxbench.compare import cli_compare

    return cli_compare(args)


def _cmd_export(args: argparse.Namespace) -> int:
    from cxbench.interop.lm_eval import cli_export

    return cli_export(args)


def _cmd_import(args: argparse.Namespace) -> int:
    from cxbench.interop.lm_eval import cli_import

    return cli_import(args)


def _cmd_arena(args: argparse.Namespace) -> int:
    from cxbench.arena import cli_arena

    return cli_arena(args)


def _cmd_table(args: argparse.Namespace) -> int:
    from cxbench.report.tables import cli_table

    return cli_table(args)


def _cmd_cache(args: argparse.Namespace) -> int:
    from cxbench.cache import check_cache_file, repair_cache
    from cxbench.paths import cache_dir

    if not args.cache_command:
        print("usage: cxbench cache {check,repair} [PATH]", file=sys.stderr)
        return 2
    path = Path(args.path) if args.path else cache_dir() / "responses.sqlite"
    if args.cache_command == "check":
        problem = check_cache_file(path)
        print(f"{path}: {problem or ('ok' if path.exists() else 'no cache file yet')}")
        return 1 if problem else 0
    quarantine, kept, lost = repair_cache(path)
    if quarantine is None:
        print(f"{path}: ok, nothing to repair")
    else:
        print(
            f"{path}: damaged file moved to {quarantine}; "
            f"{kept} answer(s) copied into a fresh cache, {lost} lost"
        )
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from cxbench.serve import cli_serve

    return cli_serve(args)


COMMANDS = {
    "run": _cmd_run,
    "score": _cmd_score,
    "tasks": _cmd_tasks,
    "metrics": _cmd_metrics,
    "data": _cmd_data,
    "merge": _cmd_merge,
    "leaderboard": _cmd_leaderboard,
    "browse": _cmd_browse,
    "serve": _cmd_serve,
    "compare": _cmd_compare,
    "table": _cmd_table,
    "arena": _cmd_arena,
    "export": _cmd_export,
    "import": _cmd_import,
    "cache": _cmd_cache,
}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    from cxbench.cache import CacheError
    from cxbench.data.adapters import DataError
    from cxbench.models.base import ModelError
    from cxbench.report.leaderboard import LeaderboardError
    from cxbench.tasks import TaskError

    try:
        return COMMANDS[args.command](args)
    except (
        TaskError,
        ModelError,
        DataError,
        CacheError,
        LeaderboardError,
        ValueError,
        FileNotFoundError,
    ) as exc:
        print(f"cxbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cxbench: interrupted; finished samples are cached and will not be redone", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
