"""Training and validation batches: ``DetectionLoader`` -> (images, targets, meta) per batch.

- ``images``: float32 (B, 3, S, S), RGB, 0..1 (CONTRACTS.md).
- ``targets``: float32 (M, 6), rows ``[batch_index, class, x1, y1, x2, y2]`` in network-input
  pixels.
- ``meta``: :class:`BatchMeta` dict: ``paths``, dataset ``indices``, ``letterbox`` (the
  :class:`LetterboxInfo` of each image in validation mode, to map predictions back to original
  pixels; None for augmented images) and ``skipped`` (images that failed to decode).

Randomness is deterministic by ``seed``: the sample order comes from a DistributedSampler
seeded with (seed, epoch), and each sample's augmentation from its own generator seeded with
(seed, epoch, index), so a run is reproducible whatever the number of workers or processes.
An image that fails to decode is replaced by another one in training (batches keep their
size, so DDP ranks stay in step) and left out of the batch in validation; either way it is
counted once in ``dataset.report``.

Validation letterboxes exactly as the runtime's ``preprocess`` does, so metrics measured
during training and on an exported model see the same pixels. With ``world_size > 1`` and
``drop_last=False`` the sampler pads the last shard with repeated images (DistributedSampler's
rule); use ``drop_last=True`` for training so every rank takes the same number of steps.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Iterator
from typing import TypedDict

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..runtime.processing import LetterboxInfo
from .augment import AugmentConfig, Augmenter, letterbox_sample
from .dataset import DetectionDataset, ImageReadError, Sample
from .report import DatasetError

_MAX_SUBSTITUTES = 20


class BatchMeta(TypedDict):
    """Per-image facts of one batch, in batch order (``skipped`` lists failed images)."""

    paths: list[str]
    indices: list[int]
    letterbox: list[LetterboxInfo | None]
    skipped: list[tuple[str, str]]  # (path, reason)


class _Item(TypedDict):
    image: np.ndarray | None
    boxes: np.ndarray
    classes: np.ndarray
    path: str
    index: int
    letterbox: LetterboxInfo | None
    skipped: list[tuple[str, str]]


class _TorchView(Dataset):
    """A DetectionDataset seen by torch: index -> one letterboxed or augmented item."""

    def __init__(
        self, dataset: DetectionDataset, imgsz: int, augmenter: Augmenter | None, seed: int
    ) -> None:
        self.dataset = dataset
        self.imgsz = imgsz
        self.augmenter = augmenter
        self.seed = seed
        self.epoch = 0
        self._unreadable: dict[int, str] = {}  # per process: do not retry a known-bad file

    def __len__(self) -> int:
        return len(self.dataset)

    def _try_load(self, index: int) -> Sample | str:
        if index in self._unreadable:
            return self._unreadable[index]
        try:
            return self.dataset.load(index)
        except ImageReadError as e:
            self._unreadable[index] = str(e)
            return str(e)

    def __getitem__(self, index: int) -> _Item:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        skipped: list[tuple[str, str]] = []

        def load(i: int) -> Sample:
            # Replace an unreadable image by a random readable one, remembering what happened.
            for _ in range(_MAX_SUBSTITUTES):
                got = self._try_load(i)
                if isinstance(got, Sample):
                    return got
                skipped.append((self.dataset.image_path(i), got))
                i = int(rng.integers(len(self.dataset)))
            raise DatasetError(
                f"{self.dataset.source}: {_MAX_SUBSTITUTES} unreadable images in a row; "
                f"e.g. {skipped[-1][1]}"
            )

        if self.augmenter is not None:
            image, boxes, classes = self.augmenter(index, load, len(self.dataset), rng)
            path = self.dataset.image_path(index)
            return _Item(
                image=image,
                boxes=boxes,
                classes=classes,
                path=path,
                index=index,
                letterbox=None,
                skipped=skipped,
            )
        got = self._try_load(index)
        path = self.dataset.image_path(index)
        if not isinstance(got, Sample):
            # Validation never substitutes: a duplicated image would bias the metric.
            return _Item(
                image=None,
                boxes=np.zeros((0, 4), np.float32),
                classes=np.zeros(0, np.int64),
                path=path,
                index=index,
                letterbox=None,
                skipped=[(path, got)],
            )
        image, boxes, info = letterbox_sample(got.image, got.boxes, self.imgsz)
        return _Item(
            image=image,
            boxes=boxes,
            classes=got.classes,
            path=got.path,
            index=index,
            letterbox=info,
            skipped=skipped,
        )


def collate(items: list[_Item]) -> tuple[torch.Tensor, torch.Tensor, BatchMeta]:
    """Stack items into (images RGB 0..1 NCHW, targets (M, 6), meta)."""
    skipped = [s for it in items for s in it["skipped"]]
    items = [it for it in items if it["image"] is not None]
    if items:
        # BGR HWC -> RGB CHW once, on uint8, before the float conversion (4x less to move).
        chw = np.stack([it["image"].transpose(2, 0, 1)[::-1] for it in items])
        images = torch.from_numpy(chw).float().div_(255.0)
    else:
        images = torch.zeros((0, 3, 0, 0))
    rows = [
        np.concatenate(
            [
                np.full((len(it["boxes"]), 1), b, np.float32),
                it["classes"].astype(np.float32)[:, None],
                it["boxes"].astype(np.float32),
            ],
            1,
        )
        for b, it in enumerate(items)
    ]
    targets = torch.from_numpy(np.concatenate(rows)) if rows else torch.zeros((0, 6))
    meta = BatchMeta(
        paths=[it["path"] for it in items],
        indices=[it["index"] for it in items],
        letterbox=[it["letterbox"] for it in items],
        skipped=skipped,
    )
    return images, targets.reshape(-1, 6), meta


def _worker_context() -> mp.context.BaseContext | None:
    """Workers start from a fork server, not by forking this process.

    Forking a process in which a runtime's thread pool (onnxruntime, OpenVINO, XNNPACK, ...)
    holds a lock leaves the child deadlocked or crashing; a fork server is a clean
    interpreter that has imported only the loader, so each epoch's workers still start fast.
    """
    if "forkserver" not in mp.get_all_start_methods():  # Windows, some macOS setups
        return None
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    return ctx


def _worker_init(_worker_id: int) -> None:
    # Each worker is one of few processes on a small CPU: no nested thread pools.
    cv2.setNumThreads(1)
    torch.set_num_threads(1)


class DetectionLoader:
    """Iterable of (images, targets, meta) batches with the epoch and close-mosaic switches."""

    def __init__(
        self,
        dataset: DetectionDataset,
        imgsz: int,
        batch_size: int,
        *,
        augment: bool,
        hyp: AugmentConfig | None = None,
        shuffle: bool | None = None,
        workers: int = 0,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
    ) -> None:
        if len(dataset) == 0:
            raise DatasetError(f"{dataset.source}: empty dataset")
        if imgsz % 32:
            raise ValueError(f"imgsz must be a multiple of the largest stride 32, got {imgsz}")
        if batch_size < 1 or workers < 0 or not 0 <= rank < world_size:
            raise ValueError(
                f"bad loader settings: batch_size={batch_size}, workers={workers}, "
                f"rank={rank}, world_size={world_size}"
            )
        self.dataset = dataset
        self.names = dataset.names
        self.imgsz = imgsz
        self.batch_size = batch_size
        self.augment = augment
        self.hyp = (hyp or AugmentConfig()) if augment else None
        self.augmenter = Augmenter(imgsz, self.hyp) if augment else None
        self.view = _TorchView(dataset, imgsz, self.augmenter, seed)
        # Also for one process: DistributedSampler gives seeded, epoch-aware shuffling.
        self.sampler = DistributedSampler(
            self.view,
            num_replicas=world_size,
            rank=rank,
            shuffle=augment if shuffle is None else shuffle,
            seed=seed,
            drop_last=drop_last,
        )
        self.workers = workers
        self.seed = seed
        self.epoch = 0
        self._loader = DataLoader(
            self.view,
            batch_size=batch_size,
            sampler=self.sampler,
            num_workers=workers,
            collate_fn=collate,
            drop_last=drop_last,
            pin_memory=torch.cuda.is_available(),
            worker_init_fn=_worker_init if workers else None,
            multiprocessing_context=_worker_context() if workers else None,
            generator=torch.Generator().manual_seed(seed),
            # Not persistent: workers then copy the current epoch and mosaic switch each epoch.
            persistent_workers=False,
        )

    def set_epoch(self, epoch: int, total_epochs: int | None = None) -> None:
        """Reshuffle and reseed for ``epoch``; with ``total_epochs``, close mosaic when due."""
        self.epoch = epoch
        self.sampler.set_epoch(epoch)
        self.view.epoch = epoch
        if (
            total_epochs is not None
            and self.hyp is not None
            and epoch >= total_epochs - self.hyp.close_mosaic
        ):
            self.close_mosaic()

    def close_mosaic(self) -> None:
        """Mosaic and mixup off from the next iteration on (plain resize + affine + colour)."""
        if self.augmenter is not None:
            self.augmenter.close_mosaic()

    @property
    def mosaic(self) -> bool:
        """Whether mosaic is still on."""
        return self.augmenter is not None and self.augmenter.mosaic_enabled

    def __len__(self) -> int:
        return len(self._loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, BatchMeta]]:
        for images, targets, meta in self._loader:
            for path, reason in meta["skipped"]:
                # Workers have their own copy of the report: count in this process.
                self.dataset.note_unreadable(path, reason)
            if len(images):
                yield images, targets, meta
