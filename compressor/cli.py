"""The ``compressor`` command line."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from compressor.errors import CompressorError

__all__ = ["main", "build_parser"]

# Static name tables, so that `--help`, `recipes` and `models` answer without importing torch,
# Lightning or torchao. They must equal compressor.models.list_models() and
# compressor.data.list_datamodules(); tests/test_cli_imports.py checks that they do.
_MODEL_NAMES = ("mlp", "mobilenetv2", "resnet110", "resnet18", "resnet20", "resnet50", "resnet56",
                "resnet8", "vit_tiny")
_DATA_NAMES = ("digits", "fashion-mnist", "synthetic")


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}, got {value}")
        return value
    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value:g}")
    return value


def _override(text: str) -> tuple[str, Any]:
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"must look like section.key=value, got {text!r}")
    return key.strip(), yaml.safe_load(value)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every ``compressor`` command."""
    parser = argparse.ArgumentParser(
        prog="compressor",
        description="Prune, quantize (int8 QAT) and distill PyTorch models in one Lightning "
                    "training loop, and export smaller int8 ONNX models.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    run = commands.add_parser("run", help="run a built-in recipe (by name) or a recipe YAML file",
                              description="Run a recipe end to end and write a report.")
    run.add_argument("recipe", help="built-in recipe name (see `compressor recipes`) or a .yaml path")
    run.add_argument("--out", help="output folder (default: runs/<recipe name>)")
    run.add_argument("--set", dest="overrides", action="append", type=_override, default=[],
                     metavar="KEY=VALUE", help="override a recipe value, e.g. --set train.epochs=2")
    run.add_argument("--quiet", action="store_true", help="no progress output")
    run.set_defaults(handler=_cmd_run)

    train = commands.add_parser("train", help="train a dense baseline model",
                                description="Train a reference model on a data set (no compression).")
    train.add_argument("--model", default="resnet20", choices=_MODEL_NAMES, metavar="MODEL",
                       help=f"reference model, one of: {', '.join(_MODEL_NAMES)}")
    train.add_argument("--data", default="fashion-mnist", choices=_DATA_NAMES,
                       metavar="DATA", help=f"data set, one of: {', '.join(_DATA_NAMES)}")
    train.add_argument("--epochs", type=_int_at_least(1), default=10, help="training epochs (>= 1)")
    train.add_argument("--batch-size", type=_int_at_least(1), default=128, help="batch size (>= 1)")
    train.add_argument("--lr", type=_positive_float, default=0.1, help="peak learning rate (> 0)")
    train.add_argument("--seed", type=_int_at_least(0), default=0, help="random seed")
    train.add_argument("--subset", type=_int_at_least(1), help="use only this many training samples")
    train.add_argument("--out", default="runs/train", help="output folder (default: runs/train)")
    train.add_argument("--quiet", action="store_true", help="no progress output")
    train.set_defaults(handler=_cmd_train)

    recipes = commands.add_parser(
        "recipes", help="list the built-in recipes, or print the recipe JSON schema")
    recipes.add_argument("what", nargs="?", choices=["list", "schema"], default="list",
                         help="`schema`: the JSON schema of a recipe file (for editors)")
    recipes.set_defaults(handler=_cmd_recipes)

    analyze = commands.add_parser(
        "analyze", help="sensitivity curves or the latency table of a recipe's model",
        description="Without training: `sensitivity` prunes each channel group (and residual "
                    "block) alone and measures the validation loss; `latency` measures the "
                    "ONNX Runtime latency table of this machine. Writes JSON and a PNG plot.")
    analyze.add_argument("what", choices=["sensitivity", "latency"], help="what to analyze")
    analyze.add_argument("recipe", help="built-in recipe name or a .yaml path")
    analyze.add_argument("--out", default="runs/analyze", help="output folder")
    analyze.add_argument("--precision", choices=["int8", "fp32"], default="int8",
                         help="precision of the deployed file the latency refers to")
    analyze.set_defaults(handler=_cmd_analyze)

    models = commands.add_parser("models", help="list the reference models and data sets")
    models.set_defaults(handler=_cmd_models)

    fetch = commands.add_parser(
        "fetch-data", help="make sure Fashion-MNIST is installed",
        description="Find Fashion-MNIST; if missing, install the Debian package "
                    "dataset-fashion-mnist (when apt is usable) or download it into the cache.")
    fetch.add_argument("--no-apt", action="store_true", help="do not try apt-get")
    fetch.add_argument("--no-download", action="store_true", help="do not download")
    fetch.set_defaults(handler=_cmd_fetch)

    export = commands.add_parser(
        "export", help="export a checkpoint to ONNX and verify it in ONNX Runtime",
        description="Rebuild the model of a checkpoint written by `compressor run` / `train`, "
                    "export it to ONNX and verify it (onnx.checker, parity with PyTorch, "
                    "int8-kernel audit, latency). Writes <out>.report.json next to the file; "
                    "a file that fails parity is kept as <name>.rejected.onnx and the command "
                    "exits with status 2.")
    export.add_argument("checkpoint", help="checkpoint (.ckpt) written by `compressor run/train`")
    export.add_argument("--out", help="ONNX file to write (default: the checkpoint's name with "
                                      ".onnx)")
    export.add_argument("--batch", type=_int_at_least(1), default=32,
                        help="batch size timed besides batch 1 (default: 32)")
    export.add_argument("--repeats", type=_int_at_least(1), default=20,
                        help="timed runs per batch size (default: 20)")
    export.add_argument("--opset", type=_int_at_least(18), help="ONNX opset (default: the "
                                                                 "exporter's)")
    export.add_argument("--static-batch", action="store_true",
                        help="fix the batch dimension to --batch instead of a dynamic one")
    export.set_defaults(handler=_cmd_export)

    bench = commands.add_parser(
        "bench", help="time ONNX files in ONNX Runtime side by side",
        description="File size, ONNX Runtime latency (1 intra-op thread, median of interleaved "
                    "runs) at batch 1 and --batch, speed-up against --baseline and the "
                    "int8-kernel audit of each file.")
    bench.add_argument("model", help="ONNX file")
    bench.add_argument("--baseline", help="ONNX file to compare against (e.g. the fp32 model)")
    bench.add_argument("--batch", type=_int_at_least(1), default=32,
                       help="batch size timed besides batch 1 (default: 32)")
    bench.add_argument("--repeats", type=_int_at_least(1), default=30,
                       help="timed runs per model and batch size (default: 30)")
    bench.add_argument("--threads", type=_int_at_least(1), default=1,
                       help="ONNX Runtime intra-op threads (default: 1)")
    bench.add_argument("--json", help="also write the measurements to this JSON file")
    bench.set_defaults(handler=_cmd_bench)
    return parser


def _cmd_run(args: argparse.Namespace) -> int:
    from compressor.recipes.loader import load_recipe
    from compressor.recipes.runner import run_recipe

    recipe = load_recipe(args.recipe, dict(args.overrides))
    run_recipe(recipe, args.out, progress=not args.quiet)
    return 0


def _cmd_analyze(args: argparse.Namespace) -> int:
    from compressor.recipes.analyze import analyze
    from compressor.recipes.loader import load_recipe

    analyze(load_recipe(args.recipe), args.what, args.out, args.precision)
    print(f"Wrote {args.out}/{args.what}.json and {args.out}/{args.what}.png")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from compressor.recipes.loader import recipe_from_dict
    from compressor.recipes.runner import run_recipe

    data: dict[str, Any] = {"name": args.data, "batch_size": args.batch_size}
    if args.subset is not None:
        data["subset"] = args.subset
    recipe = recipe_from_dict({
        "name": f"train-{args.model}-{args.data}", "seed": args.seed,
        "model": {"name": args.model}, "data": data,
        "train": {"epochs": args.epochs, "optimizer": {"lr": args.lr}},
    }, source="from the command line")
    run_recipe(recipe, args.out, progress=not args.quiet)
    return 0


def _cmd_recipes(args: argparse.Namespace) -> int:
    if getattr(args, "what", "list") == "schema":
        from compressor.recipes.json_schema import recipe_json_schema

        print(json.dumps(recipe_json_schema(), indent=2))
        return 0
    from compressor.recipes.loader import builtin_recipes

    for name, description in builtin_recipes().items():
        print(f"{name:32s} {description}")
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    print("models:    " + ", ".join(_MODEL_NAMES))
    print("data sets: " + ", ".join(_DATA_NAMES))
    return 0


def _cmd_fetch(args: argparse.Namespace) -> int:
    from compressor.data.sources import ensure_fashion_mnist

    folder = ensure_fashion_mnist(allow_apt=not args.no_apt, allow_download=not args.no_download)
    print(f"Fashion-MNIST is in {folder}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from compressor.export import export_onnx
    from compressor.recipes.restore import restore_model

    restored = restore_model(args.checkpoint)
    out = Path(args.out) if args.out else Path(args.checkpoint).with_suffix(".onnx")
    example = restored.example_inputs(args.batch if args.static_batch else 2)
    report = export_onnx(restored.model, out, example,
                         dynamic_batch=not args.static_batch, opset=args.opset,
                         metadata={"recipe": restored.recipe.get("name", ""),
                                   "model": restored.model_spec.name,
                                   "input_shape": list(restored.input_shape)},
                         latency_batches=sorted({1, args.batch}), latency_repeats=args.repeats)
    print(report)
    print(f"Wrote {report.path} and {report.report_path}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from compressor.export import compare_onnx
    from compressor.utils.io import atomic_write_json

    name = Path(args.model).name
    models = {name: args.model}
    baseline = None
    if args.baseline:
        baseline = Path(args.baseline).name
        if baseline == name:
            baseline = f"{baseline} (baseline)"
        models[baseline] = args.baseline
    result = compare_onnx(models, baseline=baseline, batch_sizes=sorted({1, args.batch}),
                          repeats=args.repeats, threads=args.threads)
    print(result.title())
    print(result.to_markdown())
    if args.json:
        atomic_write_json(args.json, result.to_dict())
        print(f"Wrote {args.json}")
    return 0


def _quiet_third_party_chatter() -> None:
    """The command prints its own progress and reports; hide hardware banners, tips and
    deprecation notices of the libraries underneath (warnings about the user's run stay)."""
    logging.getLogger("pytorch_lightning.utilities.rank_zero").setLevel(logging.WARNING)
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``compressor`` command; returns the exit code.

    Process-wide settings (environment variables, warning filters, log levels) belong here and
    nowhere in the library: the command skips torchao's compiled kernels (an explicit user
    setting wins), a program that imports the library keeps them.
    """
    os.environ.setdefault("TORCHAO_FORCE_SKIP_LOADING_SO_FILES", "1")
    args = build_parser().parse_args(argv)
    _quiet_third_party_chatter()
    try:
        return int(args.handler(args))
    except CompressorError as error:
        print(f"compressor {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
