"""data.storage=stream: a data set that is never held whole, decoded batch by batch in DataLoader workers.

Its images are the records of a split (records.Records: image files or shard records, read by the
worker that decodes them). Each training item is one image and its views (the crop plan:
crops.crop_plan, global views and any local crops): the image is decoded ONCE, each view's
RandomResizedCrop box and flip are drawn on the FULL-resolution size (crops.draw_crops, the
sampler the in-memory views use) and cut from it, with reduced-size JPEG decoding (PIL's draft:
1/2, 1/4, 1/8) whenever every box still has at least its view's size a side at that scale, then
resized to that size, flipped where drawn and returned as uint8. The rest of the augmentation
(jitter, grayscale, blur, solarize) runs batched on the device (views.ViewGenerator on the
crops.CutViews batch). Under data.decode=device the workers only read the bytes and the device decodes
and cuts (device_decode.py).

Randomness: the boxes and flips of image i in epoch e come from a generator seeded by (seed, e, i)
alone, never from a worker id or global state, so any number of workers, a resumed run and each
DDP rank (which draws the same boxes for its share of the indices as one process would) agree.
"""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from sparsehead.data import image_check, records, settings, subsets
from sparsehead.data.crops import CropSpec, CutViews, draw_crops
from sparsehead.data.decode import decode_resized
from sparsehead.data.errors import DataError
from sparsehead.data.evalset import EvalBatches
from sparsehead.data.records import Records
from sparsehead.data.settings import DataConfig

STATS_SAMPLE = 256  # images the channel mean/std are estimated on (a stream never sees the whole set at once)


def view_seed(seed: int, epoch: int, i: int) -> int:
    """A 63-bit seed for image i in epoch e of a run with `seed`: the same wherever it is computed."""
    digest = hashlib.blake2b(f"{seed}/{epoch}/{i}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def unreadable_error(name: str, err: Exception) -> DataError:
    return DataError(
        f"cannot read image {name} ({err}); remove or repair it, or set data.bad_images=skip to "
        "leave unreadable images out"
    )


def opened_image(source: str | bytes, name: str = ""):
    """The opened image (a file's path: the one open of the file; a record's bytes), only its header
    read yet; close it (`with`). `name` names it in an error (by default the path)."""
    from PIL import Image

    try:
        return Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    except Exception as err:  # the image's problem, reported by name
        raise unreadable_error(name or str(source), err) from None


def _decode(pil, name: str, request: tuple[int, int] | None = None):
    """The opened image `pil` decoded as RGB; a JPEG at the smallest of 1, 1/2, 1/4, 1/8 scale that is
    still at least `request` (width, height). Returns (image, (x scale, y scale) of the decoded image):
    each side is rounded up on its own (ceil(W / k), ceil(H / k)), so the two scales differ."""
    full = pil.size
    try:
        if request is not None and pil.format == "JPEG":
            pil.draft("RGB", request)
        rgb = pil.convert("RGB")
    except Exception as err:
        raise unreadable_error(name, err) from None
    return rgb, (rgb.size[0] / full[0], rgb.size[1] / full[1])


def _to_uint8(pil) -> torch.Tensor:
    return torch.from_numpy(np.asarray(pil, dtype=np.uint8).copy()).permute(2, 0, 1)


def _box(pil, scale: tuple[float, float], top, left, height, width) -> tuple[float, float, float, float]:
    """The full-resolution crop box (top, left, height, width) on the decoded image: x by its x scale,
    y by its y scale, kept inside it (the scales' float rounding)."""
    sx, sy = scale
    return left * sx, top * sy, min((left + width) * sx, pil.size[0]), min((top + height) * sy, pil.size[1])


def cut_views(
    source: str | bytes, plan: Sequence[CropSpec], generator: torch.Generator, name: str = ""
) -> tuple[torch.Tensor, ...]:
    """The views of one image (a file's path or a record's bytes; `name` for errors, by default the
    path), one uint8 (3, spec.size, spec.size) per CropSpec of `plan`, from one decode."""
    from PIL import Image

    name = name or str(source)
    with opened_image(source, name) as opened:  # one open: the header gives the size the boxes need, then the decode
        width, height = opened.size
        drawn = [draw_crops(spec, 1, height, width, generator, "cpu") for spec in plan]
        boxes = [b[0].tolist() for b, _ in drawn]
        # The decoded image may be this much smaller: every box keeps at least its view's size a side.
        reduce = min([1.0] + [spec.size / min(h, w) for spec, (_, _, h, w) in zip(plan, boxes)])
        pil, s = _decode(opened, name, (math.ceil(width * reduce), math.ceil(height * reduce)))
    views = []
    for spec, box, (_, flip) in zip(plan, boxes, drawn):
        view = pil.resize((spec.size, spec.size), Image.BILINEAR, box=_box(pil, s, *box))
        views.append(_to_uint8(view.transpose(Image.FLIP_LEFT_RIGHT) if flip else view))
    return tuple(views)


def centre_crop(source: str | bytes, size: int, ratio: float, name: str = "") -> torch.Tensor:
    """Evaluation input, uint8 (3, size, size): the in-memory set's own decode (the shorter side
    resized to size / ratio, the centre square of `size`; decode.decode_resized), so that a streamed
    and an in-memory evaluation of the same images see the same pixels."""
    try:
        return decode_resized(source if isinstance(source, bytes) else Path(source), size, ratio)
    except Exception as err:  # the image's problem, reported by name
        raise unreadable_error(name or str(source), err) from None


@dataclass
class StreamSet(EvalBatches):
    """The ImageSet of data.storage=stream: labels and classes in memory, pixels in the records' files
    (evalset.EvalSet: what evaluation reads of it)."""

    index: Records
    image_size: int
    skipped: int = 0
    workers: int = 0  # DataLoader worker processes of its evaluation batches (data.workers)
    decode: str = "workers"  # where its training images are decoded (data.decode; device_decode.py)
    crop_ratio: float = 1.0  # of its evaluation crops (settings.crop_ratio_of)

    @classmethod
    def open(cls, cfg: DataConfig, split: str) -> "StreamSet":
        idx, skipped = records.index(cfg, split), 0
        if cfg.bad_images == "skip":  # every record checked up front (once: cached): an epoch never meets a bad one
            problems = image_check.problems(idx, cfg.cache_dir)
            bad = [(idx.name(i), e) for i, e in enumerate(problems) if e is not None]
            image_check.report_bad(bad, len(idx), idx.where, cfg.bad_images)
            idx, skipped = idx.select([i for i, e in enumerate(problems) if e is None]), len(bad)
        if (keep := subsets.subset_indices(cfg, split, idx.labels)) is not None:
            idx = idx.select(keep)
        return cls(
            idx,
            cfg.image_size,
            skipped=skipped,
            workers=cfg.workers,
            decode=cfg.decode,
            crop_ratio=settings.crop_ratio_of(cfg, split),
        )

    def __len__(self) -> int:
        return len(self.index)

    @property
    def labels(self) -> torch.Tensor:
        return torch.from_numpy(self.index.labels)

    @property
    def classes(self) -> list[str]:
        return self.index.classes

    @property
    def names(self) -> list[str]:
        return self.index.paths

    def centre_crop(self, i: int) -> torch.Tensor:
        """Image i's evaluation input (centre_crop)."""
        return centre_crop(self.index.source(i), self.image_size, self.crop_ratio, self.index.name(i))

    def channel_stats(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std in [0, 1] of the centre crops of a fixed sample of the images."""
        n = len(self)
        pick = np.random.default_rng(0).permutation(n)[:STATS_SAMPLE]
        x = torch.stack([self.centre_crop(int(i)) for i in np.sort(pick)])
        x = x.float().div_(255).transpose(0, 1).reshape(3, -1)
        return x.mean(dim=1).tolist(), x.std(dim=1).clamp_min(1e-3).tolist()

    @property
    def item_shape(self) -> tuple[int, int, int]:
        return (3, self.image_size, self.image_size)

    def fingerprint(self) -> str:
        """A short hash of the records (by name, in order), the labels, the image size and crop; the
        pixels are never all read (a file rewritten under its name keeps the fingerprint)."""
        h = hashlib.sha256(f"stream {self.image_size} {self.crop_ratio} {self.index.where}".encode())
        h.update("\n".join(self.index.paths).encode())
        h.update(np.ascontiguousarray(self.index.labels, dtype=np.int64).tobytes())
        return h.hexdigest()[:16]

    def eval_plan(self, plan):
        """Centre crops decoded by DataLoader workers (self.workers; 0: in this process), one batch
        per index list, at most a few batches ahead."""
        plan = [list(b) for b in plan]
        return iter(
            data_loader(CentreCrops(self), self.workers, torch.device("cpu"), persistent=False, batch_sampler=plan)
        )


class ViewCrops(Dataset):
    """Item (epoch, i): the views of image i for that epoch (cut_views), and its label."""

    def __init__(self, data: StreamSet, plan: Sequence[CropSpec], seed: int):
        self.data, self.plan, self.seed = data, tuple(plan), seed

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, key: tuple[int, int]):
        epoch, i = key
        generator = torch.Generator().manual_seed(view_seed(self.seed, epoch, i))
        index = self.data.index
        return cut_views(index.source(i), self.plan, generator, index.name(i)), int(index.labels[i])


class CentreCrops(Dataset):
    def __init__(self, data: StreamSet):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.data.centre_crop(i)


class EpochBatches(Sampler):
    """The batches of (epoch, index) keys from `first_batch` on, in the DistributedSampler's order
    for `epoch` (set both before each pass): a resumed run starts mid-epoch at the same batch."""

    def __init__(self, sampler, batch_size: int):
        self.sampler, self.batch_size = sampler, batch_size
        self.epoch, self.first_batch = 0, 0

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size - self.first_batch

    def __iter__(self):
        self.sampler.set_epoch(self.epoch)
        order = list(self.sampler)
        for b in range(self.first_batch, len(order) // self.batch_size):
            yield [(self.epoch, i) for i in order[b * self.batch_size : (b + 1) * self.batch_size]]


def data_loader(dataset, workers: int, device: torch.device, persistent: bool = True, **kwargs) -> DataLoader:
    return DataLoader(
        dataset,
        num_workers=workers,
        persistent_workers=persistent and workers > 0,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if workers else None,
        # Its own generator: each pass draws the workers' base seed from it, not from torch's global
        # stream, which a resumed run must continue exactly (the crops never read that seed).
        generator=torch.Generator(),
        **kwargs,
    )


class StreamFeed:
    """Training batches of a StreamSet: (crops.CutViews, labels) per step, the views of `plan` cut by
    `workers` DataLoader processes (0: in this one) from boxes drawn from `seed`."""

    def __init__(
        self,
        data: StreamSet,
        sampler,
        batch_size: int,
        plan: Sequence[CropSpec],
        seed: int,
        workers: int,
        device: torch.device,
    ):
        self.batches = EpochBatches(sampler, batch_size)
        self.loader = data_loader(ViewCrops(data, plan, seed), workers, device, batch_sampler=self.batches)

    def epoch(self, epoch: int, first_batch: int):
        self.batches.epoch, self.batches.first_batch = epoch, first_batch
        return ((CutViews(tuple(crops)), labels) for crops, labels in self.loader)
