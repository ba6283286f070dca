"""Image files to uint8 RGB tensors: TorchCodec for JPEG, PNG, WebP and GIF where it loads, Pillow
for the other formats and everywhere else (the same pixels, benchmarks/decode.py checks), and the
resize and centre crop of the in-memory data sets."""

from __future__ import annotations

import functools
import io
import math
import re
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F


def _sniff(raw: bytes) -> Optional[str]:
    """The format TorchCodec decodes, from the file's first bytes; None for any other."""
    if raw[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if raw[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if raw[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        return "webp"
    return None


@functools.lru_cache(maxsize=None)
def torchcodec_decoders() -> Optional[dict]:
    """TorchCodec's decoders by format, or None where torchcodec does not import or its libraries
    do not load (a torch it was not built for): Pillow then decodes every format, to the same
    pixels (benchmarks/decode.py checks), only slower."""
    try:
        from torchcodec import decoders

        formats = {
            "jpeg": decoders.decode_jpeg,
            "png": decoders.decode_png,
            "gif": decoders.decode_gif,
            "webp": decoders.decode_webp,
        }
        formats["png"](_as_tensor(_TINY_PNG))  # the compiled decoders load and work
    except Exception:
        return None
    return formats


def decoder_name() -> str:
    """The library decoding JPEG, PNG, WebP and GIF files: "torchcodec" or "pillow"."""
    return "torchcodec" if torchcodec_decoders() is not None else "pillow"


_TINY_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010802000000907753de"  # 1x1, red
    "0000000c4944415478da63f8cfc0000003010100f70341430000000049454e44ae426082"
)


def _as_tensor(raw: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8)


def read_rgb(source: Path | str | bytes) -> torch.Tensor:
    """An image (a file's path, or a record's bytes) as uint8 RGB (3, H, W): grayscale, RGBA (alpha
    dropped) and palette images are converted, 16-bit images keep their high byte, an animated GIF
    or WebP gives its first frame. TorchCodec decodes JPEG/PNG/WebP/GIF; Pillow the other formats
    (BMP, TIFF, PPM), and all of them where TorchCodec is missing."""
    raw = source if isinstance(source, bytes) else Path(source).read_bytes()
    if not raw:
        raise ValueError("the file is empty")
    fmt = _sniff(raw)
    codecs = torchcodec_decoders() if fmt else None
    if codecs is None:
        return _read_pillow(raw)
    try:
        if fmt == "png":  # "auto": a 16-bit PNG stays uint16 (uint8 would round v / 257)
            img = codecs["png"](_as_tensor(raw), mode="RGB", output_dtype="auto")
        else:
            img = codecs[fmt](_as_tensor(raw), mode="RGB")
    except RuntimeError as err:
        raise RuntimeError(re.sub(r"^[^,]*, \S+:\d+, ", "", str(err))) from None  # drop the C++ location
    img = img[0] if img.ndim == 4 else img  # an animated GIF or WebP: its first frame
    if img.dtype != torch.uint8:  # 16 bits: the high byte, as torchvision's to_dtype(scale=True)
        img = (img.to(torch.int32) >> 8).to(torch.uint8)
    return img  # a (3, H, W) view of (H, W, 3) memory: resizing or stacking copies it once


def _read_pillow(raw: bytes) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(raw)) as pil:
            if pil.mode.startswith("I;16") or (pil.mode == "I" and pil.format == "PNG"):  # 16-bit grey
                gray = (np.asarray(pil).astype(np.int64).clip(0, 65535) >> 8).astype(np.uint8)
                arr = np.repeat(gray[:, :, None], 3, axis=2)
            else:
                arr = np.array(pil if pil.mode == "RGB" else pil.convert("RGB"))
    except UnidentifiedImageError:
        raise ValueError("not an image file that Pillow or TorchCodec can read") from None
    return torch.from_numpy(arr).permute(2, 0, 1)  # a view, as TorchCodec's


def decode_resized(source: Path | str | bytes, size: int, crop_ratio: float = 1.0) -> torch.Tensor:
    return resize_crop(read_rgb(source), size, crop_ratio)


def resize_crop(img: torch.Tensor, size: int, crop_ratio: float = 1.0) -> torch.Tensor:
    """uint8 (3, H, W) -> (3, size, size): torchvision's Resize(floor(size / crop_ratio)) then
    CenterCrop(size), with their rounding (the longer side int(short' * long / short), the crop's
    offset round((n - size) / 2)); the resize antialiased bilinear, up or down, rounded back to
    uint8. crop_ratio 0.875 at size 224 is ImageNet's Resize(256) + CenterCrop(224); 1.0 keeps the
    whole shorter side. floor(size / crop_ratio) is timm's scale size."""
    h, w = img.shape[1:]
    short = math.floor(size / crop_ratio)
    nh, nw = (short, int(short * w / h)) if h <= w else (int(short * h / w), short)
    if (nh, nw) != (h, w):
        img = (
            F.interpolate(img[None].float(), size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)[0]
            .round()
            .clamp(0, 255)
            .to(torch.uint8)
        )
    top, left = int(round((nh - size) / 2)), int(round((nw - size) / 2))
    return img[:, top : top + size, left : left + size]
