"""Generates the vision parity fixtures with the reference libraries themselves.

Writes, under OUT:
  images.parquet          sample images (JPEG and PNG; several sizes, aspect ratios and modes)
                          with labels and pass-through columns
  preprocessed.f32        DeepTune's preprocessing of each image (N x 3 x 224 x 224, little-endian)
  bad_images.parquet      a dataset with an undecodable image and a null image
  formats.parquet         the other formats Pillow opens (BMP, GIF, TIFF, WebP, CMYK JPEG) in
                          their modes, and formats_preprocessed.f32, DeepTune's preprocessing of them
  formats_refused.parquet TIFFs decoded differently from Pillow (JPEG-compressed) or not at all
  torch_home/hub/checkpoints/<torchvision file>   random-weight torchvision models
  finetuned/, peft/, ...  DeepTune-style checkpoints and other weight files, per family
  ref/<case>.f32          reference embeddings of images.parquet for each case
  cases.json              what each case runs and where its reference is
  shapes.json             every torchvision version's hub file and tensor names and shapes

Each family's weights and cases come from its module in vision_families/ (`generate(ctx)`).
`gen_vision.py OUT [FAMILY...]` runs only the families named (for working on one family).
Everything is seeded per family. Weights are random; BatchNorm statistics are calibrated on
random inputs so activations stay in a sane range through deep networks.
"""

import importlib
import json
import io
import pkgutil
import sys
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torchvision
from PIL import Image

import vision_families
from vision_families.common import Context, write_f32

def picture(rng, w, h):
    """A smooth gradient plus noise and a few blocks: detail at several scales."""
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack(
        [
            (x * 255.0 / max(w - 1, 1)),
            (y * 255.0 / max(h - 1, 1)),
            ((x + y) * 127.0 / max(w + h - 2, 1)),
        ],
        axis=-1,
    )
    noise = rng.normal(0, 25, size=(h, w, 3))
    img = base + noise
    for _ in range(4):
        x0, y0 = rng.integers(0, max(w - 1, 1)), rng.integers(0, max(h - 1, 1))
        img[y0 : y0 + h // 4 + 1, x0 : x0 + w // 4 + 1] = rng.integers(0, 256, size=3)
    return np.clip(img, 0, 255).astype(np.uint8)


def encode(arr, mode, fmt, **save):
    rgb = Image.fromarray(arr)
    if mode == "L":
        im = rgb.convert("L")
    elif mode == "LA":
        im = rgb.convert("LA")
    elif mode == "RGBA":
        im = rgb.convert("RGBA")
        a = np.array(im)
        a[..., 3] = np.linspace(0, 255, a.shape[1], dtype=np.uint8)[None, :]
        im = Image.fromarray(a)
    elif mode == "P":
        im = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    elif mode == "P-trns":
        im = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
        im.info["transparency"] = 3
    elif mode == "1":
        im = rgb.convert("1")
    elif mode == "I;16":
        g = np.array(rgb.convert("L"), dtype=np.uint16)
        # Values above 255 too: Pillow clips them when converting to RGB.
        im = Image.fromarray((g * 3).astype(np.uint16))
    elif mode == "F":
        # Float grey (microscopy, scientific imaging): below 0, above 255, fractions, and a
        # NaN and infinities, each of which Pillow's conversion to RGB clips its own way.
        f = np.array(rgb.convert("L"), dtype=np.float32) * 1.3 - 30.0 + 0.37
        f[0, :3] = [np.nan, np.inf, -np.inf]
        im = Image.fromarray(f)
    elif mode == "I":
        # 32-bit signed grey, negative and above 255 too.
        im = Image.fromarray(np.array(rgb.convert("L"), dtype=np.int32) * 4 - 200)
    elif mode == "RGB16":
        # Pillow cannot write 16-bit RGB; build the PNG with numpy through a minimal writer.
        return png16_rgb(arr)
    else:
        im = rgb
    buf = io.BytesIO()
    if mode == "P-trns":
        im.save(buf, format=fmt, transparency=3)
    else:
        im.save(buf, format=fmt, **save)
    return buf.getvalue()


# (width, height, Pillow mode, format, save options): every other format Pillow opens that a
# dataset plausibly holds, in the modes its encoder writes.
FORMAT_SPECS = [
    (61, 47, "RGB", "BMP", {}),
    (64, 50, "L", "BMP", {}),
    (70, 41, "P", "BMP", {}),
    (33, 20, "1", "BMP", {}),
    (300, 200, "RGB", "TIFF", {}),
    (250, 190, "RGB", "TIFF", {"compression": "tiff_lzw"}),
    (250, 190, "RGB", "TIFF", {"compression": "tiff_adobe_deflate"}),
    (120, 90, "RGB", "TIFF", {"compression": "packbits"}),
    (160, 120, "L", "TIFF", {}),
    (160, 120, "RGBA", "TIFF", {}),
    (230, 225, "I;16", "TIFF", {}),
    (150, 110, "F", "TIFF", {}),
    (150, 110, "I", "TIFF", {}),
    (150, 110, "LA", "TIFF", {}),
    (90, 70, "RGB16", "TIFF", {}),
    (64, 48, "1", "TIFF", {}),
    (140, 100, "CMYK-K", "TIFF", {}),
    # The Orientation tag, which Pillow's TIFF reader applies on load: each of its eight values.
    *[(130, 90, "RGB", "TIFF", {"tiffinfo": {274: o}}) for o in range(1, 9)],
    (120, 80, "L", "TIFF", {"compression": "tiff_lzw", "tiffinfo": {274: 6}}),
    (200, 150, "P", "GIF", {}),
    (120, 160, "P-trns", "GIF", {}),
    (300, 220, "RGB", "WEBP", {"lossless": True}),
    (301, 219, "RGB", "WEBP", {"quality": 80}),
    (180, 140, "RGBA", "WEBP", {"quality": 80}),
    (180, 140, "RGBA", "WEBP", {"lossless": True}),
    (260, 180, "CMYK-K", "JPEG", {"quality": 92}),
]

# Formats refused with a reason: JPEG inside TIFF (another JPEG decoder than Pillow's libjpeg),
# palette TIFF (not read).
REFUSED_SPECS = [
    (200, 150, "RGB", "TIFF", {"compression": "jpeg"}),
    (120, 90, "P", "TIFF", {}),
]


def encode_format(arr, mode, fmt, **save):
    if mode == "RGB16" and fmt == "TIFF":
        return tiff16_rgb(arr)
    if mode == "CMYK-K":
        # CMYK with a black channel that varies: Pillow's RGB -> CMYK conversion leaves K at 0.
        cmyk = np.array(Image.fromarray(arr).convert("CMYK"))
        cmyk[..., 3] = (np.arange(arr.shape[0])[:, None] * 7 + np.arange(arr.shape[1])[None, :]) % 256
        buf = io.BytesIO()
        Image.frombytes("CMYK", (arr.shape[1], arr.shape[0]), cmyk.tobytes()).save(buf, format=fmt, **save)
        return buf.getvalue()
    if mode == "P-trns" and fmt != "PNG":
        buf = io.BytesIO()
        Image.fromarray(arr).convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(buf, format=fmt, transparency=3)
        return buf.getvalue()
    return encode(arr, mode, fmt, **save)


def tiff16_rgb(arr):
    """A baseline little-endian TIFF of 16-bit RGB samples (Pillow reads them, keeping the high
    byte, but cannot write them)."""
    import struct

    h, w, _ = arr.shape
    wide = (arr.astype(np.uint16) * 257 + np.arange(w, dtype=np.uint16)[None, :, None]).astype("<u2").tobytes()
    entries = [(256, 4, 1, w), (257, 4, 1, h), (258, 3, 3, None), (259, 3, 1, 1), (262, 3, 1, 2),
               (273, 4, 1, None), (277, 3, 1, 3), (278, 4, 1, h), (279, 4, 1, len(wide)), (284, 3, 1, 1)]
    bits_at = 8 + 2 + 12 * len(entries) + 4
    data_at = bits_at + 6
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        value = {258: bits_at, 273: data_at}.get(tag, value)
        ifd += struct.pack("<HHI", tag, kind, count) + (struct.pack("<HH", value, 0) if kind == 3 and count == 1 else struct.pack("<I", value))
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + struct.pack("<HHH", 16, 16, 16) + wide


def png16_rgb(arr):
    import struct
    import zlib

    h, w, _ = arr.shape
    wide = (arr.astype(np.uint16) * 257 + np.arange(w, dtype=np.uint16)[None, :, None]).astype(">u2")
    raw = b"".join(b"\x00" + wide[y].tobytes() for y in range(h))

    def chunk(kind, data):
        c = struct.pack(">I", len(data)) + kind + data
        return c + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


# (width, height, mode, format, save options)
IMAGE_SPECS = [
    (500, 375, "RGB", "JPEG", {"quality": 90}),  # 4:2:0, a typical photo
    (375, 500, "RGB", "JPEG", {"quality": 75}),  # tall
    (640, 480, "RGB", "JPEG", {"quality": 95, "subsampling": 0}),  # 4:4:4
    (333, 221, "RGB", "JPEG", {"quality": 85, "subsampling": 1}),  # 4:2:2, odd sizes
    (300, 300, "L", "JPEG", {"quality": 90}),  # greyscale JPEG
    (224, 224, "RGB", "JPEG", {"quality": 90}),  # already 224: no resampling
    (1000, 120, "RGB", "JPEG", {"quality": 80}),  # very wide
    (90, 700, "RGB", "JPEG", {"quality": 80}),  # very tall (Pillow 13 would change order here)
    (31, 17, "RGB", "PNG", {}),  # upscaling
    (256, 256, "RGB", "PNG", {}),
    (257, 190, "RGBA", "PNG", {}),
    (200, 150, "L", "PNG", {}),
    (180, 240, "LA", "PNG", {}),
    (320, 200, "P", "PNG", {}),
    (120, 160, "P-trns", "PNG", {}),
    (64, 48, "1", "PNG", {}),
    (230, 225, "I;16", "PNG", {}),
    (100, 80, "RGB16", "PNG", {}),
    (1, 1, "RGB", "PNG", {}),
    (2, 3000, "RGB", "PNG", {}),
    (448, 448, "RGB", "JPEG", {"quality": 60}),
    (225, 223, "RGB", "JPEG", {"quality": 92}),
]


def make_images(rng):
    return [encode(picture(rng, w, h), mode, fmt, **save) for (w, h, mode, fmt, save) in IMAGE_SPECS]


# DeepTune's torchvision versions (SigLIP is not torchvision's).
TORCHVISION_VERSIONS = (
    [f"resnet{d}" for d in (18, 34, 50, 101, 152)]
    + [f"densenet{d}" for d in (121, 161, 169, 201)]
    + [f"vgg{d}" for d in (11, 13, 16, 19)]
    + [f"efficientnet_b{i}" for i in range(8)]
    + ["vit_b_16", "vit_b_32", "vit_l_16", "vit_l_32", "vit_h_14"]
    + ["swin_t", "swin_s", "swin_b"]
)


def write_shapes(out: Path):
    """shapes.json: for every torchvision version, the hub file of the weights DeepTune loads and the name and shape of every tensor those weights hold, from models built
    on the meta device (nothing allocated). ViT is built at its weights' input size."""
    from torchvision.models import get_model_weights

    shapes = {}
    for version in TORCHVISION_VERSIONS:
        enum = get_model_weights(version)
        # DeepTune asks for IMAGENET1K_V1 by name for ResNets, torchvision's DEFAULT elsewhere.
        weights = enum.IMAGENET1K_V1 if version.startswith("resnet") else enum.DEFAULT
        kwargs = {"image_size": weights.meta["min_size"][0]} if version.startswith("vit") else {}
        with torch.device("meta"):
            model = getattr(torchvision.models, version)(weights=None, **kwargs)
        shapes[version] = {
            "hub_file": weights.url.rsplit("/", 1)[-1],
            "tensors": {k: list(v.shape) for k, v in model.state_dict().items()},
        }
    (out / "shapes.json").write_text(json.dumps(shapes))


def main(out: Path, only):
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)

    images = make_images(rng)
    n = len(images)
    df = pd.DataFrame(
        {
            "patient_id": [f"P{i:03d}" for i in range(n)],
            "images": images,
            "labels": rng.integers(0, 4, size=n).astype(np.int64),
            "site": rng.integers(0, 3, size=n).astype(np.int32),
            "age": [None if i % 7 == 3 else float(30 + i) for i in range(n)],
        }
    )
    df.to_parquet(out / "images.parquet", index=False)

    ctx = Context(out, images, rng)
    write_f32(out / "preprocessed.f32", ctx.inputs())

    # A larger set for downstream tools that cross-validate (df-analyze): the sample images
    # repeated, with a binary label and a categorical column (df-analyze 0.1.3 divides by zero
    # when a table has no categorical column at all).
    many = pd.DataFrame({
        "images": [images[i % n] for i in range(120)],
        "labels": np.arange(120) % 2,
        "row": np.arange(120),
        "site": [("north", "south", "east")[i % 3] for i in range(120)],
    })
    many.to_parquet(out / "images_120.parquet", index=False)

    formats = [encode_format(picture(rng, w, h), mode, fmt, **save) for (w, h, mode, fmt, save) in FORMAT_SPECS]
    for data, (_, _, mode, fmt, _) in zip(formats, FORMAT_SPECS):
        assert Image.open(io.BytesIO(data)).format == fmt, (fmt, mode)
    pd.DataFrame({"images": formats, "format": [f"{fmt} {mode}" for (_, _, mode, fmt, _) in FORMAT_SPECS]}).to_parquet(out / "formats.parquet", index=False)
    write_f32(out / "formats_preprocessed.f32", Context(out, formats, rng).inputs())
    refused = [encode_format(picture(rng, w, h), mode, fmt, **save) for (w, h, mode, fmt, save) in REFUSED_SPECS]
    pd.DataFrame({"images": refused}).to_parquet(out / "formats_refused.parquet", index=False)

    bad = df.head(8).copy()
    bad.loc[3, "images"] = b"\xff\xd8\xff\xe0 this is not really a jpeg"
    bad.loc[5, "images"] = None
    bad.to_parquet(out / "bad_images.parquet", index=False)

    write_shapes(out)
    families = sorted(m.name for m in pkgutil.iter_modules(vision_families.__path__) if m.name != "common")
    for family in families:
        if only and family not in only:
            continue
        # Seeded per family, so adding or changing one family leaves the others' fixtures alone.
        seed = zlib.crc32(family.encode())
        torch.manual_seed(seed)
        ctx.rng = np.random.default_rng(seed)
        before = len(ctx.cases)
        importlib.import_module(f"vision_families.{family}").generate(ctx)
        print(f"vision fixtures: {family}: {len(ctx.cases) - before} cases", flush=True)
    ctx.write_cases()
    print(f"vision fixtures: {n} images, {len(ctx.cases)} cases in {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), set(sys.argv[2:]))
