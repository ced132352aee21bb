"""Compaction under DDP (2 CPU processes): the wrapper is rebuilt and ranks stay in sync."""

import subprocess
import sys
import textwrap

import pytest
import pytorch_lightning as pl

from compressor.callbacks import Pruning
from compressor.errors import ConfigError
from compressor.models import create_model
from compressor.training import ClassificationModule

#: Two CPU processes, a few digits batches; the script defines ``module``, ``pruning``, ``CHECK``.
FIT = """
trainer = pl.Trainer(max_epochs=3, accelerator="cpu", devices=2, strategy="ddp",
                     callbacks=[pruning, CHECK], logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False,
                     limit_train_batches=4, limit_val_batches=1)
trainer.fit(module, datamodule=DigitsDataModule(batch_size=32))
"""

SCRIPT = """
import pytorch_lightning as pl
import torch

from compressor.callbacks import Pruning
from compressor.data import DigitsDataModule
from compressor.models import create_model
from compressor.training import ClassificationModule


class CheckInSync(pl.Callback):
    def on_train_end(self, trainer, pl_module):
        model = pl_module.model
        assert model.conv1.out_channels == 4, "not compacted"
        total = torch.stack([p.detach().sum() for p in model.parameters()]).sum()
        gathered = trainer.strategy.all_gather(total)
        assert torch.allclose(gathered, gathered[0].expand_as(gathered)), gathered
        if trainer.is_global_zero:
            print("IN SYNC", gathered.tolist())


torch.manual_seed(0)
model = create_model("resnet8", num_classes=10, in_channels=1, width_mult=0.5)
module = ClassificationModule(model, 10, (1, 8, 8), optimizer={"lr": 0.05})
pruning = Pruning("channel", sparsity=0.5, schedule="linear", start_epoch=0, end_epoch=1,
                  example_inputs=torch.randn(2, 1, 8, 8))
""" + "CHECK = CheckInSync()\n" + FIT


@pytest.mark.slow
def test_channel_compaction_under_ddp(tmp_path):
    script = tmp_path / "ddp_compaction.py"
    script.write_text(textwrap.dedent(SCRIPT))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "IN SYNC" in result.stdout


def test_ddp_spawn_with_compaction_is_refused_before_training():
    model = create_model("resnet8", num_classes=10, in_channels=1, width_mult=0.5)
    module = ClassificationModule(model, 10, (1, 8, 8))
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", devices=1, strategy="ddp_spawn",
                         logger=False, enable_checkpointing=False, enable_progress_bar=False)
    with pytest.raises(ConfigError, match="strategy='ddp_spawn'"):
        Pruning("channel", sparsity=0.5).setup(trainer, module, "fit")


AUTO_SCRIPT = """
import pytorch_lightning as pl
import torch

from compressor.callbacks import Pruning
from compressor.data import DigitsDataModule
from compressor.models import create_model
from compressor.training import ClassificationModule


class SamePlan(pl.Callback):
    def on_train_end(self, trainer, pl_module):
        plan = pruning.plan
        # The plan's stage timings differ between two computations: equal means rank 0's plan
        # was shared, not recomputed.
        mine = torch.tensor([*plan.kept.values(), *plan.seconds.values()], dtype=torch.float64)
        gathered = trainer.strategy.all_gather(mine)
        assert torch.equal(gathered[0], gathered[1]), gathered
        shapes = torch.tensor([float(p.numel()) for p in pl_module.model.parameters()])
        all_shapes = trainer.strategy.all_gather(shapes)
        assert torch.equal(all_shapes[0], all_shapes[1])
        if trainer.is_global_zero:
            print("SAME PLAN", plan.kept)


torch.manual_seed(0)
model = create_model("resnet8", num_classes=10, in_channels=1)
module = ClassificationModule(model, 10, (1, 8, 8), optimizer={"lr": 0.05})
pruning = Pruning("channel", allocation="auto", budget={"macs": 0.5}, criterion="taylor",
                  schedule="linear", start_epoch=0, end_epoch=1,
                  example_inputs=torch.randn(2, 1, 8, 8))
""" + "CHECK = SamePlan()\n" + FIT


@pytest.mark.slow
def test_automatic_allocation_under_ddp_is_made_once_and_shared(tmp_path):
    script = tmp_path / "ddp_auto.py"
    script.write_text(textwrap.dedent(AUTO_SCRIPT))
    env = {**__import__("os").environ, "COMPRESSOR_CACHE_DIR": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=600, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "SAME PLAN" in result.stdout
