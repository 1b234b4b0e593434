"""`Trainer`: one training run of an `FSLoRAPersonSearch` from a `TrainConfig` into a run folder.

Run folder layout::

    RUN/config.yaml            the merged TrainConfig (model inlined, oim.num_ids from the data)
    RUN/command.txt            the exact command line(s), one per start / resume
    RUN/metrics.jsonl          step records (losses, lr, grad norm) and epoch evaluations
    RUN/checkpoints/step-*/    training checkpoints (fslora.training.checkpoint), newest `keep_checkpoints`
    RUN/plots/*.png            losses.png, frequency_weights.png, expert_masks.png (refreshed every epoch)
    RUN/final/                 save_pretrained of the trained model; its model card has the metrics

What is trained: with adapters, the backbone is frozen (``W0``) and the adapters + head learn; without
(``use_adapters: false``, the NAE baseline or a backbone pretraining stage) everything learns. The
optimizer sees exactly the parameters with ``requires_grad``.

Resuming restores model, optimizer, scheduler and RNG states and replays the interrupted epoch's
order from its batch position (`EpochOrder`), so the next batch is the one the run would have taken.
SIGINT (Ctrl-C) finishes the current step, writes a checkpoint and stops.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from fslora.data.records import PersonSearchSplit
from fslora.models import FSLoRAPersonSearch
from fslora.training.checkpoint import (
    Progress,
    init_weights_from,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from fslora.training.config import OPTIMIZERS, TrainConfig
from fslora.training.data import (
    EpochOrder,
    IdentityMap,
    TrainImages,
    collate,
    describe_split,
    evenly_spaced,
    load_dataset,
    read_rgb,
    trainable_records,
)
from fslora.training.metrics_log import MetricsLog
from fslora.training.optimizer import build_optimizer
from fslora.training.plots import (
    mean_frequency_weights,
    plot_expert_masks,
    plot_frequency_weights,
    plot_losses,
)
from fslora.training.precise_bn import recompute_batchnorm_stats
from fslora.training.schedule import build_scheduler

logger = logging.getLogger("fslora.train")

CONFIG_NAME = "config.yaml"


class Trainer:
    """Builds data, model, optimizer and schedule from a config; `fit()` trains (or resumes) the run."""

    def __init__(
        self,
        config: TrainConfig,
        run_dir: str | Path,
        *,
        command: str = "",
        resume: bool = False,
        max_steps: int | None = None,
        progress: bool = True,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.command = command
        self.max_steps = max_steps
        self.progress = progress
        self.device = _device(config.device)
        self.split = self._load_split(config)
        records = evenly_spaced(trainable_records(self.split.images), config.data.train_images)
        self.ids = IdentityMap.from_records(records)
        if self.ids.num_ids == 0:
            raise ValueError(
                f"{self.split.name}: no labelled identity among the training images (OIM needs some)"
            )
        model_config = replace(
            config.model,
            oim=replace(config.model.oim, num_ids=self.ids.num_ids),
            autocast_bf16=config.amp,
        )
        self.config = config = replace(config, model=model_config)
        self.resume_from = self._check_run_dir(resume)

        torch.manual_seed(config.seed)
        np.random.seed(config.seed)
        self.model = FSLoRAPersonSearch(model_config)
        if config.init_backbone_from and self.resume_from is None:
            logger.info(
                "initialised %s",
                init_weights_from(self.model, config.init_backbone_from, heads=config.init_heads),
            )
        self.model.to(self.device).train()
        self._bn_refreshed_at: int | None = None
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        opt = config.optim
        self.optimizer = build_optimizer(self.model, self.params, opt)
        self.dataset = TrainImages(records, self.ids)
        self.order = EpochOrder(len(self.dataset), config.batch_size, config.seed, config.data.hflip)
        self.steps_per_epoch = self.order.batches_per_epoch
        self.scheduler = build_scheduler(
            self.optimizer,
            steps_per_epoch=self.steps_per_epoch,
            warmup_steps=opt.warmup_steps,
            warmup_factor=opt.warmup_factor,
            milestones=opt.milestones,
            gamma=opt.gamma,
        )
        self.metrics = MetricsLog(self.run_dir / "metrics.jsonl")
        self.progress_state = Progress()
        self.last_eval: dict[str, float] | None = None
        self.stop_requested = False

    # -- setup ---------------------------------------------------------------------------------------

    @staticmethod
    def _load_split(config: TrainConfig) -> PersonSearchSplit:
        d = config.data
        return load_dataset(
            d.dataset,
            d.root,
            gallery_size=d.gallery_size,
            synthps_seed=d.synthps_seed,
            synthps_preset=d.synthps_preset,
        )

    def _check_run_dir(self, resume: bool) -> Path | None:
        """The checkpoint to resume from; refuses to overwrite a run that has checkpoints."""
        latest = latest_checkpoint(self.run_dir / "checkpoints")
        if resume:
            if latest is None:
                raise FileNotFoundError(f"--resume: no checkpoint in {self.run_dir / 'checkpoints'}")
            return latest
        if latest is not None or (self.run_dir / "final").exists():
            raise ValueError(
                f"run folder {self.run_dir} already holds a run; "
                "pass --resume to continue it or another --out"
            )
        return None

    # -- training ------------------------------------------------------------------------------------

    def fit(self) -> dict[str, Any]:
        """Train to ``config.epochs`` (or ``max_steps``); returns a summary with the last evaluation."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / CONFIG_NAME).write_text(self.config.to_yaml())
        resuming = self.resume_from is not None
        with (self.run_dir / "command.txt").open("a" if resuming else "w") as f:
            f.write(self.command + "\n")
        if not resuming:
            self.metrics.truncate(step=0, epoch=0)  # leftovers of a start that never checkpointed
        else:
            self.progress_state = load_checkpoint(
                self.resume_from, self.model, self.optimizer, self.scheduler
            )
            dropped = self.metrics.truncate(self.progress_state.step, self.progress_state.epoch)
            evals = [r for r in self.metrics.read() if r.get("kind") == "eval"]
            self.last_eval = _figures(evals[-1]) if evals else None
            logger.info(
                "resumed from %s (%s), dropped %d later log records",
                self.resume_from,
                self.progress_state,
                dropped,
            )
        self._log_start()
        stopped = False
        with _graceful_sigint(self):
            while self.progress_state.epoch < self.config.epochs and not stopped:
                stopped = self._train_epoch()
                if not stopped:
                    self._end_epoch()
        if stopped:
            return {"stopped": True, "step": self.progress_state.step, "epoch": self.progress_state.epoch}
        return self._finish()

    def _log_start(self) -> None:
        counts = self.model.parameter_counts()
        info = describe_split(self.split, self.config.data.root)
        logger.info(
            "%s: %d training images, %d identities, %d steps/epoch, %d epochs on %s; "
            "params total %d, trainable %d",
            info["name"],
            len(self.dataset),
            self.ids.num_ids,
            self.steps_per_epoch,
            self.config.epochs,
            self.device,
            counts["total"],
            counts["trainable"],
        )

    def _loader(self, epoch: int, skip: int) -> DataLoader:
        self.order.set_epoch(epoch, skip)
        workers = self.config.data.num_workers
        return DataLoader(
            self.dataset,
            batch_sampler=self.order,
            collate_fn=collate,
            num_workers=workers,
            prefetch_factor=2 if workers else None,
            # Its own generator: creating an iterator would otherwise draw a worker seed from the global
            # RNG, and a resumed run creates one more iterator than an uninterrupted run.
            generator=torch.Generator().manual_seed(self.config.seed + epoch),
        )

    def _train_epoch(self) -> bool:
        """One (possibly partial) epoch; True when training must stop early (max_steps / SIGINT)."""
        p = self.progress_state
        epoch = p.epoch
        loader = self._loader(epoch, p.batch)
        bar = tqdm(
            loader,
            desc=f"epoch {epoch + 1}/{self.config.epochs}",
            initial=p.batch,
            total=self.steps_per_epoch,
            unit="step",
            disable=None if self.progress else True,
        )
        timer = time.perf_counter()
        for batch in bar:
            record = self._step(batch)
            p = self.progress_state = Progress(epoch=epoch, step=p.step + 1, batch=p.batch + 1)
            if p.step == 1 or p.step % self.config.log_every == 0:
                now = time.perf_counter()
                self.metrics.write(
                    {
                        "kind": "step",
                        "epoch": epoch + 1,
                        "step": p.step,
                        **record,
                        "sec_per_step": round(now - timer, 4),
                    }
                )
            timer = time.perf_counter()
            bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.2e}")
            every = self.config.checkpoint_every_steps
            at_limit = self.max_steps is not None and p.step >= self.max_steps
            if (
                at_limit
                or self.stop_requested
                or (every and p.step % every == 0 and p.batch < self.steps_per_epoch)
            ):
                self._checkpoint()
                if at_limit or self.stop_requested:
                    bar.close()
                    why = "max_steps reached" if at_limit else "interrupted"
                    logger.info("%s at step %d: checkpoint written, resume with --resume", why, p.step)
                    return True
        bar.close()
        return False

    def _step(self, batch: list[Any]) -> dict[str, Any]:
        images = [s.image for s in batch]
        targets = [s.target for s in batch]
        lr = self.optimizer.param_groups[0]["lr"]
        losses = self.model(images, targets)
        weights = self.config.optim.loss_weights
        unknown = set(weights) - set(losses)
        if unknown:
            raise ValueError(
                f"optim.loss_weights names unknown losses {sorted(unknown)}; the model gives {sorted(losses)}"
            )
        loss = sum(weights.get(name, 1.0) * value for name, value in losses.items())
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite loss at step {self.progress_state.step + 1}: "
                + ", ".join(f"{k}={v.item():.4g}" for k, v in losses.items())
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip = self.config.optim.grad_clip
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, clip if clip is not None else float("inf"))
        self.optimizer.step()
        self.scheduler.step()
        record: dict[str, Any] = {"lr": lr, "loss": loss.item()}
        record.update({k: v.item() for k, v in losses.items()})
        record["grad_norm"] = float(grad_norm)
        record["images"] = [s.index for s in batch]
        return record

    def _refresh_batchnorm(self) -> None:
        """Precise BatchNorm stats (``precise_bn_batches``) for the current weights, once per step."""
        wanted = self.config.precise_bn_batches
        if not wanted or self._bn_refreshed_at == self.progress_state.step:
            return
        size = self.config.batch_size
        picks = evenly_spaced(range(len(self.dataset)), wanted * size)  # unflipped, spread over the split
        samples = ([self.dataset[i] for i in picks[k : k + size]] for k in range(0, len(picks), size))
        batches = (([s.image for s in b], [s.target for s in b]) for b in samples)
        with self._own_rng():  # the RPN / RoI samplers draw random numbers
            recompute_batchnorm_stats(self.model, batches)
        self._bn_refreshed_at = self.progress_state.step

    def _checkpoint(self) -> Path:
        self._refresh_batchnorm()
        return save_checkpoint(
            self.run_dir / "checkpoints",
            self.model,
            self.optimizer,
            self.scheduler,
            self.progress_state,
            keep=self.config.keep_checkpoints,
        )

    def _end_epoch(self) -> None:
        p = self.progress_state
        done = p.epoch + 1
        self.progress_state = Progress(epoch=done, step=p.step, batch=0)
        every = self.config.eval.every
        final = done == self.config.epochs and self.config.eval.at_end
        if final or (every and done % every == 0):
            self._refresh_batchnorm()
            with self._own_rng():  # evaluation and plots must not shift the training RNG stream
                self.last_eval = self.evaluate(full=final)
            self.metrics.write({"kind": "eval", "epoch": done, "step": p.step, **self.last_eval})
            logger.info(
                "epoch %d: %s",
                done,
                ", ".join(f"{k} {v:.4f}" for k, v in self.last_eval.items() if isinstance(v, float)),
            )
        self._checkpoint()
        if self.config.plots.enabled:
            with self._own_rng():
                self.plot()

    def _own_rng(self) -> Any:
        """Runs a block on a copy of the RNG state: a resumed run must not depend on side work."""
        devices = [self.device] if self.device.type == "cuda" else []
        return torch.random.fork_rng(devices=devices)

    def evaluate(self, full: bool = False) -> dict[str, float]:
        """The test protocol of the dataset on the current model: ``eval.max_queries`` queries, or all
        of them with ``full`` (the final evaluation, whose figures go into the model card)."""
        from fslora.evaluate import evaluate_model

        e = self.config.eval
        return evaluate_model(
            self.model,
            self.split,
            max_queries=None if full else e.max_queries,
            multi_view=e.multi_view,
            batch_size=e.batch_size,
            score_thresh=e.score_thresh,
            progress=self.progress,
        )

    def plot(self) -> None:
        """Loss curves; with adapters also frequency weights and expert masks on a few test images."""
        folder = self.run_dir / "plots"
        plot_losses(self.metrics.read(), folder / "losses.png")
        if not self.config.model.use_adapters:
            return
        records = (self.split.gallery or self.split.images)[: self.config.plots.num_images]
        images = [read_rgb(r.image_path) for r in records]
        detections = self.model.detect(
            images, score_thresh=self.config.eval.score_thresh, capture_routing=True
        )
        routings = [d.routing for d in detections if d.routing]
        weights = mean_frequency_weights(routings)
        if weights:
            plot_frequency_weights(weights, folder / "frequency_weights.png")
        if routings:
            plot_expert_masks(images[0], routings[0], folder / "expert_masks.png")

    def _finish(self) -> dict[str, Any]:
        """Save the trained model with its model card into RUN/final."""
        c, info = self.config, describe_split(self.split, self.config.data.root)
        training_data = (
            f"{c.data.dataset} `{info['name']}` at `{info['root']}`: {info['train_images']} training images, "
            f"{info['train_identities']} identities. {c.epochs} epochs, batch {c.batch_size}, "
            f"{OPTIMIZERS[c.optim.name]} lr {c.optim.lr:g}. Command:\n\n"
            + "\n".join(f"    {line}" for line in run_commands(self.run_dir))
            + "\n\nFull training config: `config.yaml` of the run folder."
        )
        metrics = dict(self.last_eval or {})
        final = self.model.save_pretrained(
            self.run_dir / "final", metrics=metrics or None, training_data=training_data
        )
        (final / "train_config.yaml").write_text(self.config.to_yaml())
        logger.info("saved %s", final)
        return {
            "stopped": False,
            "step": self.progress_state.step,
            "epoch": self.progress_state.epoch,
            "final": str(final),
            "metrics": metrics,
        }


def run_commands(run_dir: Path) -> list[str]:
    """The command lines that started and resumed a run (its command.txt), oldest first."""
    file = run_dir / "command.txt"
    return [line for line in file.read_text().splitlines() if line] if file.is_file() else []


def _figures(record: dict[str, Any]) -> dict[str, float]:
    return {k: v for k, v in record.items() if k not in ("kind", "epoch", "step")}


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device is {name!r} but CUDA is not available")
    return device


@contextmanager
def _graceful_sigint(trainer: Trainer) -> Iterator[None]:
    """First Ctrl-C: stop after the current step with a checkpoint; a second one interrupts at once."""

    def handler(signum: int, frame: Any) -> None:
        if trainer.stop_requested:
            raise KeyboardInterrupt
        trainer.stop_requested = True
        logger.warning("interrupt: stopping after this step (Ctrl-C again to abort without a checkpoint)")

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: no handler, Ctrl-C behaves as usual
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
