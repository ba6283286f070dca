"""data.decode=device: the DataLoader workers only read each record's bytes; the training device decodes
the whole batch in one call and the views cut every crop from the full-size images (image_batch.py).

Workers: a record's bytes are handed over as they are when the device decodes them: a JPEG whose header
says RGB (YCbCr, the photographs' kind). Any other record (a PNG, a CMYK or grayscale JPEG, a file named
.JPEG that is not one) is decoded in the worker by the in-memory sets' decoder (decode.read_rgb, at
full size) and handed over as pixels, so that the device decoder meets only what it decodes alike.

Device: the JPEGs of a batch are decoded by one batched call (nvJPEG on a GPU: TorchCodec's decode_jpeg
where its CUDA decoder loads, else torchvision's), the same function on the CPU. On a GPU the next batch
is read and decoded by a thread on a side stream while the current one trains; the training stream waits
on its event and the batch's memory is marked in use there (record_stream). A batch the batched call
refuses is decoded image by image; an image the device decoder refuses by decode.read_rgb; one that too
refuses stops the run with its name (stream.unreadable_error), as the workers' decode does. Unreadable
records under data.bad_images=skip never reach an epoch (stream.StreamSet.open checks them first).

Randomness: the crops are drawn from the views' uniforms (the run's augmentation generator, saved in every
checkpoint), so a resumed run cuts the same crops; decoding itself draws nothing.
"""

from __future__ import annotations

import functools
import io
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch
from torch.utils.data import Dataset

from sparsehead.data.decode import read_rgb, torchcodec_decoders
from sparsehead.data.image_batch import ImageBatch
from sparsehead.data.stream import EpochBatches, StreamSet, data_loader, opened_image, unreadable_error


def payload(source: str | bytes, name: str) -> torch.Tensor:
    """What a worker hands over for one record (a file's path or a record's bytes): its bytes, uint8 (L,),
    for an RGB JPEG; else its pixels, uint8 (3, H, W), decoded here."""
    raw = source if isinstance(source, bytes) else Path(source).read_bytes()
    with opened_image(raw, name) as opened:  # the header only
        on_device = opened.format == "JPEG" and opened.mode == "RGB"
    if on_device:
        return torch.frombuffer(bytearray(raw), dtype=torch.uint8)
    try:
        return read_rgb(raw)
    except Exception as err:
        raise unreadable_error(name, err) from None


class EncodedImages(Dataset):
    """Item (epoch, i): record i's payload, its label and i (its name, should it not decode)."""

    def __init__(self, data: StreamSet):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, key: tuple[int, int]):
        _, i = key
        index = self.data.index
        return payload(index.source(i), index.name(i)), int(index.labels[i]), i


def collate(items):
    """A batch of payloads of varied lengths and shapes: kept as a list."""
    payloads, labels, indices = zip(*items)
    return list(payloads), torch.tensor(labels), list(indices)


def _tiny_jpeg() -> torch.Tensor:
    """An 8 x 8 JPEG's bytes: the probe of a device decoder."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buffer, "JPEG")
    return torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)


@functools.lru_cache(maxsize=None)
def jpeg_decoder(device: torch.device) -> Callable[[list[torch.Tensor]], list[torch.Tensor]]:
    """A batch of JPEG byte tensors (on the CPU) -> uint8 (3, H, W) RGB images on `device`: TorchCodec's
    decode_jpeg where it decodes on `device`, else torchvision's (nvJPEG on a GPU, libjpeg-turbo on the CPU)."""
    if torchcodec_decoders() is not None:
        from torchcodec.decoders import decode_jpeg

        def torchcodec(batch: list[torch.Tensor]) -> list[torch.Tensor]:
            return decode_jpeg(batch, mode="RGB", device=device)

        try:
            torchcodec([_tiny_jpeg()])
            return torchcodec
        except Exception:  # no CUDA decoder in this build: torchvision's
            pass
    import warnings

    from torchvision.io import ImageReadMode, decode_jpeg

    def torchvision(batch: list[torch.Tensor]) -> list[torch.Tensor]:
        with warnings.catch_warnings():  # torchvision 0.29 deprecates its decoders for TorchCodec's
            warnings.simplefilter("ignore", DeprecationWarning)
            return decode_jpeg(batch, mode=ImageReadMode.RGB, device=device)

    return torchvision


def _decode_one(raw: torch.Tensor, device: torch.device, name: str) -> torch.Tensor:
    try:
        return jpeg_decoder(device)([raw])[0]
    except RuntimeError:
        try:
            return read_rgb(bytes(raw.numpy())).to(device)
        except Exception as err:
            raise unreadable_error(name, err) from None


def decode_batch(payloads: list[torch.Tensor], device: torch.device, name: Callable[[int], str]) -> ImageBatch:
    """The batch's images on `device`: its JPEG payloads decoded there in one call, its pixels copied over.
    `name(k)` names payload k in an error."""
    jpegs = [k for k, p in enumerate(payloads) if p.dim() == 1]
    raws = [payloads[k] for k in jpegs]
    try:
        decoded = jpeg_decoder(device)(raws) if raws else []
    except RuntimeError:  # one image refused: each alone, to find it (and decode it some other way)
        decoded = [_decode_one(raw, device, name(k)) for k, raw in zip(jpegs, raws)]
    images = list(payloads)
    for k, img in zip(jpegs, decoded):
        images[k] = img
    return ImageBatch.of(images, device)


class DeviceDecodeFeed:
    """Training batches of a StreamSet decoded on `device`: (image_batch.ImageBatch, labels) per step, the
    bytes read by `workers` DataLoader processes (0: this one)."""

    def __init__(self, data: StreamSet, sampler, batch_size: int, workers: int, device: torch.device):
        self.batches = EpochBatches(sampler, batch_size)
        # Not pinned: the decoder reads the bytes on the host (nvJPEG parses them there too).
        self.loader = data_loader(
            EncodedImages(data), workers, torch.device("cpu"), batch_sampler=self.batches, collate_fn=collate
        )
        self.index, self.device = data.index, device

    def decode(self, batch) -> tuple[ImageBatch, torch.Tensor]:
        payloads, labels, indices = batch
        return decode_batch(payloads, self.device, lambda k: self.index.name(indices[k])), labels

    def epoch(self, epoch: int, first_batch: int) -> Iterator[tuple[ImageBatch, torch.Tensor]]:
        self.batches.epoch, self.batches.first_batch = epoch, first_batch
        if self.device.type == "cuda":
            return decoded_ahead(iter(self.loader), self.decode, self.device)
        return (self.decode(b) for b in self.loader)


def decoded_ahead(batches: Iterator, decode: Callable, device: torch.device) -> Iterator:
    """decode(batch) of each of `batches`, the next one read and decoded by a thread on a side stream while
    the caller trains on the current one; each handed over once the current stream waits for it."""
    side = torch.cuda.Stream(device)

    def next_decoded() -> Optional[tuple]:
        batch = next(batches, None)
        if batch is None:
            return None
        with torch.cuda.stream(side):
            images, labels = decode(batch)
            done = torch.cuda.Event()
            done.record(side)
        return images, labels, done

    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sparsehead-decode")
    try:
        ahead = pool.submit(next_decoded)
        while (item := ahead.result()) is not None:
            ahead = pool.submit(next_decoded)
            images, labels, done = item
            current = torch.cuda.current_stream(device)
            current.wait_event(done)
            for t in images.tensors():  # made on the side stream, used on this one: not reused before it is done
                t.record_stream(current)
            yield images, labels
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
