"""The third-party zoo: every torchvision, timm and transformers architecture of
``tests/thirdparty/zoo.py`` through the ``Pruning`` callback at 50 % (channel, and head where
there is attention), compaction and ONNX Runtime, as the zoo tests run them.

For each model: the parameter ratio after compaction, whether the compacted model equals the
masked one and matches in ONNX Runtime, and every group of channels the dependency graph left
out, with its reason. Needs the zoo packages (``make zoo``; ``COMPRESSOR_ZOO_PACKAGES`` if they
are elsewhere). Run: ``python benchmarks/thirdparty_zoo.py`` (about 7 minutes on 2 cores).
Writes ``benchmarks/results/thirdparty_zoo.{json,md}``.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from _common import ROOT, write_result

sys.path.insert(0, str(ROOT))

from tests.thirdparty.harness import ZooResult, compress  # noqa: E402
from tests.thirdparty.zoo import ZOO  # noqa: E402

SPARSITY = 0.5
RATIO_LIMIT = 0.6  # the share of parameters kept that most of the zoo must stay under


def _cases(names: list[str]) -> list[tuple[str, str]]:
    return [(n, "channel") for n in names] + [(n, "head") for n in names if ZOO[n].heads]


def _exclusions(result: ZooResult) -> str:
    if not result.excluded:
        return "none"
    parts = [f"{e['channels']} ch. of `{e['modules'][0]}`"
             + (f" (+{len(e['modules']) - 1})" if len(e["modules"]) > 1 else "")
             + f": {e['reason']}" for e in result.excluded[:3]]
    more = len(result.excluded) - 3
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def table(results: list[ZooResult]) -> str:
    lines = ["| Model | Pruning | Parameters | Kept | Compacted = masked | ONNX Runtime | "
             "Excluded groups (channels of the first module: reason) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        equal = "yes" if r.masked_vs_compacted <= 1e-4 else f"no ({r.masked_vs_compacted:.1e})"
        onnx = "match" if r.onnx_accepted else f"differs ({r.onnx_max_abs_diff:.2g})"
        lines.append(f"| {r.name} | {r.granularity} | {r.parameters:,} | {r.ratio:.3f} | "
                     f"{equal} | {onnx} | {_exclusions(r).replace('|', '/')} |")
    channel = [r for r in results if r.granularity == "channel"]
    under = sum(r.ratio <= RATIO_LIMIT for r in channel)
    lines += ["", f"At {SPARSITY:.0%} channel sparsity, {under} of {len(channel)} models keep at "
              f"most {RATIO_LIMIT:.0%} of their parameters. Exceptions, and why:"]
    lines += [f"- {name}: {spec.why}" for name, spec in ZOO.items() if spec.why]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(ZOO), choices=list(ZOO))
    args = parser.parse_args()
    results = []
    for index, (name, granularity) in enumerate(_cases(args.models), start=1):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exclusions are recorded in the table
            result = compress(name, granularity, SPARSITY)
        print(f"[{index}] {name} {granularity}: kept {result.ratio:.3f} in {result.seconds:.0f} s",
              flush=True)
        results.append(result)
    data = {"sparsity": SPARSITY, "ratio_limit": RATIO_LIMIT,
            "results": [r.to_dict() for r in results]}
    write_result("thirdparty_zoo", data, f"# Third-party zoo at {SPARSITY:.0%}\n\n" + table(results))


if __name__ == "__main__":
    main()
