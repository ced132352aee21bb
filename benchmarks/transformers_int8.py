"""Transformers from Hugging Face: head pruning + int8 QAT + export in one ``Trainer.fit``, and
the exported files against the dense fp32 models in ONNX Runtime.

Three ``transformers`` models (random weights: latency does not depend on the values; the fit
trains on random labels only to run every callback for real): a ViT
(``ViTForImageClassification``), BERT (``BertForSequenceClassification``) and GPT-2
(``GPT2ForSequenceClassification``). Each is trained for ``--epochs`` short epochs on a plain
LightningModule with ``Pruning("head", sparsity=0.5)`` (one shot at epoch 0, compaction at its end; with
``--mlp`` a second, channel ``Pruning`` removes half of every MLP's hidden width as well),
``QuantizationAwareTraining(start_epoch=1)`` and ``ExportONNX``. The exported int8 file is
compared with the dense fp32 file and the dense model's int8 file (PTQ with the same quantizer)
side by side: 1 intra-op thread, medians of interleaved repeats, batch 1 and 32; the int8 audit
reports every matrix product left in float (there should be none: the attention products run as
``QLinearMatMul``).

Target: the pruned int8 ViT >= 2.5x faster than the dense fp32 ViT at batch 32.
Run: ``python benchmarks/transformers_int8.py`` (about 10 minutes on 2 cores).
Writes ``benchmarks/results/transformers_int8.{json,md}``.
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch
from _common import ROOT, RUNS, write_result
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(ROOT))

from compressor.callbacks import ExportONNX, Pruning, QuantizationAwareTraining  # noqa: E402
from compressor.export import compare_onnx, export_onnx  # noqa: E402
from compressor.quantization import calibrate, convert, prepare_ptq  # noqa: E402
from compressor.utils.modules import count_parameters  # noqa: E402
from tests.thirdparty.harness import Classifier, LogitsOnly  # noqa: E402

TARGET = {"model": "vit", "batch": 32, "speedup": 2.5}
HIDDEN, LAYERS, HEADS, MLP = 256, 6, 8, 1024


@dataclass(frozen=True)
class Spec:
    """A transformers model and the inputs it takes."""

    build: Callable[[], torch.nn.Module]
    make_inputs: Callable[[int, int], torch.Tensor]  # (batch, seed) -> inputs
    classes: int


def _hf(model: str, config: str, **kwargs: Any) -> Callable[[], torch.nn.Module]:
    def build() -> torch.nn.Module:
        import transformers

        return getattr(transformers, model)(getattr(transformers, config)(**kwargs))
    return build


def _images(batch: int, seed: int) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _tokens(batch: int, seed: int) -> torch.Tensor:
    return torch.randint(3, 1000, (batch, 64), generator=torch.Generator().manual_seed(seed))


_WIDTHS = dict(hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
               intermediate_size=MLP)
SPECS = {
    "vit": Spec(_hf("ViTForImageClassification", "ViTConfig", image_size=32, patch_size=4,
                    num_labels=10, **_WIDTHS), _images, 10),
    "bert": Spec(_hf("BertForSequenceClassification", "BertConfig", vocab_size=1000,
                     max_position_embeddings=64, num_labels=3, **_WIDTHS), _tokens, 3),
    "gpt2": Spec(_hf("GPT2ForSequenceClassification", "GPT2Config", vocab_size=1000,
                     n_positions=64, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, n_inner=MLP,
                     num_labels=3, pad_token_id=0, bos_token_id=1, eos_token_id=2), _tokens, 3),
}


def dense_int8(model: torch.nn.Module, spec: Spec) -> torch.nn.Module:
    """The dense model quantized after training (PTQ, same quantizer), for reference."""
    prepared = prepare_ptq(copy.deepcopy(model), spec.make_inputs(2, 0))
    calibrate(prepared, [spec.make_inputs(16, seed) for seed in range(4)])
    return convert(prepared)


def compress(name: str, spec: Spec, epochs: int, mlp: bool, folder: Any) -> dict[str, Any]:
    """One fit with head pruning (+ MLP channels), QAT and export; the three files' paths."""
    torch.manual_seed(0)
    net = LogitsOnly(spec.build().train())
    dense = copy.deepcopy(net).eval()
    files = {"dense fp32": folder / "dense_fp32.onnx", "dense int8 (PTQ)": folder / "dense_int8.onnx"}
    example = spec.make_inputs(2, 0)
    export_onnx(dense, files["dense fp32"], example, latency_batches=())
    export_onnx(dense_int8(dense, spec), files["dense int8 (PTQ)"], example, latency_batches=())
    inputs = spec.make_inputs(64, 1)
    labels = torch.randint(0, spec.classes, (64,), generator=torch.Generator().manual_seed(2))
    loader = DataLoader(TensorDataset(inputs, labels), batch_size=16)
    callbacks: list[pl.Callback] = [Pruning("head", sparsity=0.5, criterion="l1", schedule="one-shot",
                                            start_epoch=0)]
    if mlp:
        callbacks.append(Pruning("channel", sparsity=0.5, criterion="l1", schedule="one-shot",
                                 start_epoch=0))
    pruned_name = "50% heads" + (" + 50% MLP" if mlp else "") + " + int8 (one fit)"
    files[pruned_name] = folder / "pruned_int8.onnx"
    export = ExportONNX(files[pruned_name], example_inputs=example, batch_sizes=())
    callbacks += [QuantizationAwareTraining(start_epoch=1), export]
    trainer = pl.Trainer(max_epochs=epochs, callbacks=callbacks, logger=False,
                         enable_checkpointing=False, enable_model_summary=False,
                         enable_progress_bar=False, accelerator="cpu", devices=1)
    parameters = count_parameters(net)
    trainer.fit(Classifier(net), train_dataloaders=loader)
    report = export.report
    return {"files": {k: str(v) for k, v in files.items()}, "pruned": pruned_name,
            "parameters": parameters, "parity": report.parity.to_dict() if report.parity else None,
            "accepted": report.accepted}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=list(SPECS), choices=list(SPECS))
    parser.add_argument("--mlp", action="store_true",
                        help="also remove half of every MLP's hidden channels")
    args = parser.parse_args()
    results, tables = {}, []
    for name in args.models:
        folder = RUNS / "transformers_int8" / name
        fit = compress(name, SPECS[name], args.epochs, args.mlp, folder)
        bench = compare_onnx(fit["files"], baseline="dense fp32", batch_sizes=(1, 32),
                             repeats=args.repeats)
        pruned = next(e for e in bench.entries if e.name == fit["pruned"])
        results[name] = {**fit, "bench": bench.to_dict(),
                         "speedup": {str(b): s for b, s in pruned.speedup.items()},
                         "float_matmuls_left": [vars(n) for n in pruned.audit.float_nodes]}
        tables.append(f"### {name}\n\n{bench.to_markdown()}\n{fit['pruned']} vs dense fp32: "
                      f"{pruned.speedup[1]:.2f}x at batch 1, {pruned.speedup[32]:.2f}x at batch "
                      f"32; float matrix products left: {len(pruned.audit.float_nodes)}.\n")
    measured = results.get(TARGET["model"], {}).get("speedup", {}).get(str(TARGET["batch"]))
    data = {"models": results, "settings": {"hidden": HIDDEN, "layers": LAYERS, "heads": HEADS,
                                            "mlp": MLP, "epochs": args.epochs,
                                            "prune_mlp": args.mlp},
            "target": TARGET, "meets_target": measured is not None and measured >= TARGET["speedup"]}
    title = bench.title() if results else ""
    write_result("transformers_int8" + ("_mlp" if args.mlp else ""), data,
                 f"{title}\n\n" + "\n".join(tables))


if __name__ == "__main__":
    main()
