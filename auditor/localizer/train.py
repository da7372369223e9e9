"""Training the localizer from scratch on CPU.

``train_localizer`` letterboxes the training images once into memory, then runs AdamW over
augmented batches drawn from that cache, and writes a bundle. It stops at ``steps`` or at
``max_minutes`` of training time, whichever comes first; the learning-rate schedule (linear
warm-up, cosine decay) follows whichever is further along, so a time-limited run still anneals.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from auditor.errors import UsageError
from auditor.localizer.bundle import LocalizerCard, save_localizer
from auditor.localizer.data import AugmentConfig, CanvasCache, TrainingImage, augment_batch
from auditor.localizer.infer import load_localizer
from auditor.localizer.network import LocalizerNet
from auditor.localizer.targets import losses, render

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Knobs of a training run (defaults: the bundled localizer's)."""

    working_size: int = 192
    cache_size: int = 240
    width: int = 12
    steps: int = 1200
    batch_size: int = 16
    lr: float = 3e-3
    weight_decay: float = 1e-4
    max_minutes: float | None = None
    seed: int = 0
    # One thread: on a shared 2-core machine two threads ran 3-5x slower per step (measured).
    threads: int | None = 1
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass(frozen=True)
class TrainResult:
    """What a training run did: the bundle it wrote and its loss history."""

    bundle: Path
    steps: int
    seconds: float
    final_loss: float
    history: tuple[tuple[int, float], ...]


def _learning_rate(peak: float, done: float) -> float:
    """Linear warm-up over the first 5% of the run, then cosine decay to zero."""
    if done < 0.05:
        return peak * max(done, 0.005) / 0.05
    return 0.5 * peak * (1.0 + math.cos(math.pi * min(1.0, (done - 0.05) / 0.95)))


def train_localizer(
    images: Sequence[TrainingImage] | CanvasCache,
    out: Path,
    config: TrainConfig = TrainConfig(),
    card: LocalizerCard | None = None,
    progress: Callable[[int, int, float], None] | None = None,
    init: Path | None = None,
) -> TrainResult:
    """Train a localizer (from scratch, or on from ``init``'s weights) and write a bundle.

    Parameters
    ----------
    images
        Annotated training images (any size; letterboxed to ``config.cache_size``), or a cache
        already built from them.
    out
        Bundle folder to write (created).
    config
        Training knobs.
    card
        Card fields to record (name, training summary, reproduce command); working size and
        width are taken from ``config``.
    progress
        Called as ``progress(step, total_steps, loss)`` after every step.
    init
        A localizer bundle whose weights start the run (same width); None starts from scratch.

    Raises
    ------
    ValueError
        When there are no training images.
    BundleError
        When ``init`` cannot be loaded.
    """
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    started = time.perf_counter()
    if isinstance(images, CanvasCache):
        cache = images
    else:
        if not images:
            raise ValueError("no training images given")
        cache = CanvasCache.build(images, config.cache_size)
        logger.info("cached %d images in %.1f s", len(cache), time.perf_counter() - started)
    net = LocalizerNet(width=config.width)
    if init is not None:
        net.load_state_dict(load_localizer(init).net.state_dict())
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    budget = None if config.max_minutes is None else 60.0 * config.max_minutes
    train_started = time.perf_counter()
    history: list[tuple[int, float]] = []
    running = float("nan")
    step = 0
    done = 0.0
    while done < 1.0 and step < config.steps:
        step += 1
        # Progress is the larger of steps done and time used, so a time-limited run still warms
        # up and anneals its learning rate fully before it stops.
        elapsed = time.perf_counter() - train_started
        done = max(step / config.steps, elapsed / budget if budget else 0.0)
        for group in opt.param_groups:
            group["lr"] = _learning_rate(config.lr, done)
        idx = rng.integers(0, len(cache), size=config.batch_size).tolist()
        x, targets = augment_batch(cache, idx, config.working_size, rng, config.augment)
        tgt = render(targets, config.working_size)
        terms = losses(net(x), tgt)
        opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        opt.step()
        value = float(terms["total"].detach())
        running = value if np.isnan(running) else 0.95 * running + 0.05 * value
        if step % 25 == 0 or step == 1:
            history.append((step, round(running, 4)))
            logger.info(
                "step %d (%.0f%%) loss %.3f (%s)",
                step,
                100 * done,
                running,
                ", ".join(f"{k} {float(v.detach()):.3f}" for k, v in terms.items() if k != "total"),
            )
        if progress is not None:
            progress(step, config.steps, running)
    net.eval()
    seconds = time.perf_counter() - started
    base = card or LocalizerCard(name=Path(out).name)
    training: dict[str, Any] = dict(base.training)
    training.update(
        {
            "images": len(cache),
            "steps": step,
            "batch_size": config.batch_size,
            "cache_size": config.cache_size,
            "lr": config.lr,
            "seed": config.seed,
            "seconds": round(seconds, 1),
            "final_loss": round(running, 4),
        }
    )
    final = replace(base, working_size=config.working_size, width=config.width, training=training)
    bundle = save_localizer(net, final, Path(out))
    return TrainResult(bundle, step, seconds, running, tuple(history))


@dataclass(frozen=True)
class TrainJob:
    """A ``train-localizer`` run: where the images come from and where the bundle goes.

    Images come from an annotated archive (``archive`` + ``annotations``, box-file formats), from
    ``synth_studies`` studies of the synthetic world ``synth_seed``, or both. ``cache`` names an
    ``.npz`` file: loaded when it exists (the sources are then not read again), written after the
    images are prepared otherwise.
    """

    out: Path
    archive: Path | None = None
    annotations: Path | None = None
    synth_studies: int = 0
    synth_seed: int = 101
    synth_max_side: int = 480
    cache: Path | None = None
    init: Path | None = None
    name: str = ""
    reproduce: str = ""
    config: TrainConfig = field(default_factory=TrainConfig)


def _job_images(job: TrainJob) -> Iterator[TrainingImage]:
    if job.archive is not None and job.annotations is not None:
        from auditor.localizer.evaluate import archive_items

        for item in archive_items(job.archive, job.annotations):
            yield TrainingImage(
                item.pixels, item.boxes, item.levels, item.partial, item.fractured, item.name
            )
    if job.synth_studies > 0:
        from auditor.localizer.synthdata import synth_training_images

        yield from synth_training_images(job.synth_studies, job.synth_seed, job.synth_max_side)


def run_training(
    job: TrainJob, progress: Callable[[int, int, float], None] | None = None
) -> TrainResult:
    """Prepare the job's images (or load its cache), train, and write the bundle.

    Raises
    ------
    UsageError
        When the job names no image source, or only one of archive / annotations.
    """
    if (job.archive is None) != (job.annotations is None):
        raise UsageError("give both --archive and --annotations, or neither")
    has_cache = job.cache is not None and Path(job.cache).is_file()
    if not has_cache and job.archive is None and job.synth_studies <= 0:
        raise UsageError("no training images: give --archive/--annotations and/or --synth N")
    if has_cache and job.cache is not None:
        cache = CanvasCache.load(job.cache)
        logger.info("loaded %d cached images from %s", len(cache), job.cache)
    else:
        if job.config.threads:
            torch.set_num_threads(job.config.threads)
        cache = CanvasCache.build(_job_images(job), job.config.cache_size)
        if job.cache is not None:
            cache.save(job.cache)
    sources = []
    if job.archive is not None:
        sources.append(f"annotated archive {job.archive} ({job.annotations})")
    if job.synth_studies:
        sources.append(
            f"{job.synth_studies} synthetic lateral studies, seed {job.synth_seed}, generated at "
            f"{job.synth_max_side} px long side, field-of-view kinds capped at 30% each"
        )
    card = LocalizerCard(
        name=job.name or Path(job.out).name,
        reproduce=job.reproduce,
        training={"sources": sources},
    )
    if job.init is not None:
        sources.append(f"continued from the weights of {job.init}")
    return train_localizer(cache, job.out, job.config, card, progress, init=job.init)
