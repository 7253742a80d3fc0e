"""Generates the vision parity fixtures with the reference libraries themselves.

Writes, under OUT:
  images.parquet          sample images (JPEG and PNG; several sizes, aspect ratios and modes)
                          with labels and pass-through columns
  preprocessed.f32        DeepTune's preprocessing of each image (N x 3 x 224 x 224, little-endian)
  bad_images.parquet      a dataset with an undecodable image and a null image
  torch_home/hub/checkpoints/<torchvision file>   random-weight torchvision ResNets
  finetuned/*.pth, peft/*.pth                      DeepTune-style checkpoints
  ref/<case>.f32          reference embeddings of images.parquet for each case
  cases.json              what each case runs and where its reference is

Everything is seeded. Weights are random; BatchNorm statistics are calibrated on random inputs
so activations stay in a sane range through deep networks.
"""

import io
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torchvision
from PIL import Image
from peft import LoraConfig, get_peft_model

# DeepTune's preprocessing (helpers.transformations).
TRANSFORM = torchvision.transforms.Compose(
    [
        torchvision.transforms.Resize(size=(224, 224)),
        torchvision.transforms.ToTensor(),
        torchvision.transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    ]
)

HUB_FILES = {
    "resnet18": "resnet18-f37072fd.pth",
    "resnet34": "resnet34-b627a593.pth",
    "resnet50": "resnet50-0676ba61.pth",
    "resnet101": "resnet101-63fe2227.pth",
    "resnet152": "resnet152-394f9c45.pth",
}


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


def calibrate_batchnorm(model, rng, batches=2, batch=6):
    """Random affine BN parameters, then running statistics from random inputs."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                m.reset_running_stats()
                m.momentum = None  # cumulative average
        model.train()
        for _ in range(batches):
            model(torch.from_numpy(rng.normal(0, 1, size=(batch, 3, 224, 224)).astype(np.float32)))
    model.eval()


def backbone(version, rng):
    model = getattr(torchvision.models, version)(weights=None)
    calibrate_batchnorm(model, rng)
    return model


class Adjusted(nn.Module):
    """DeepTune's adjusted model layout: backbone under `model` (fc replaced by identity), then fc1
    (and fc2). With `lora_rank`, peft LoRA wraps every backbone Conv2d and Linear, as DeepTune's
    peft variant does."""

    def __init__(self, model, added_layers, embed_size, outputs, lora_rank=None):
        super().__init__()
        features = model.fc.in_features
        self.model = model
        self.model.fc = nn.Identity()
        self.flatten = nn.Flatten()
        if added_layers == 2:
            self.fc1 = nn.Linear(features, embed_size)
            self.fc2 = nn.Linear(embed_size, outputs)
        else:
            self.fc1 = nn.Linear(features, outputs)
        self.added_layers = added_layers
        if lora_rank is not None:
            targets = [n for n, m in self.model.named_modules() if type(m) in (nn.Conv2d, nn.Linear)]
            config = LoraConfig(r=lora_rank, lora_alpha=16, lora_dropout=0.1, bias="none", target_modules=targets)
            self.peftmodel = get_peft_model(self.model, config)
            # peft starts lora_B at zero, which would make the merge invisible.
            with torch.no_grad():
                for name, p in self.peftmodel.named_parameters():
                    if "lora_B" in name:
                        p.normal_(0, 0.02)
        else:
            self.peftmodel = None

    def embed(self, x):
        x = self.peftmodel(x) if self.peftmodel is not None else self.model(x)
        x = self.flatten(x)
        return self.fc1(x) if self.added_layers == 2 else x


def write_f32(path, tensor):
    path.parent.mkdir(parents=True, exist_ok=True)
    tensor.detach().to(torch.float32).contiguous().numpy().astype("<f4").tofile(path)


def main(out: Path):
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

    pre = torch.stack([TRANSFORM(Image.open(io.BytesIO(b)).convert("RGB")) for b in images])
    write_f32(out / "preprocessed.f32", pre)

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

    bad = df.head(8).copy()
    bad.loc[3, "images"] = b"\xff\xd8\xff\xe0 this is not really a jpeg"
    bad.loc[5, "images"] = None
    bad.to_parquet(out / "bad_images.parquet", index=False)

    cases = []
    hub = out / "torch_home" / "hub" / "checkpoints"
    hub.mkdir(parents=True, exist_ok=True)

    def reference(name, fn, args, batch_size):
        with torch.no_grad():
            emb = torch.cat([fn(pre[i : i + batch_size]) for i in range(0, n, batch_size)])
        write_f32(out / "ref" / f"{name}.f32", emb)
        cases.append({"name": name, "args": args, "rows": n, "dims": emb.shape[1], "ref": f"ref/{name}.f32"})

    # Pretrained: torchvision weights files, found through TORCH_HOME or named explicitly.
    for version, file in HUB_FILES.items():
        model = backbone(version, rng)
        torch.save(model.state_dict(), hub / file)
        model.fc = nn.Identity()
        args = ["--use_case", "pretrained", "--model_version", version]
        if version == "resnet34":
            args += ["--model_weights", str(hub / file)]
        reference(f"pretrained-{version}", model, args, 8)

    # DeepTune fine-tuned checkpoints.
    finetuned = [
        ("resnet18", 1, None, 3, "cls"),
        ("resnet18", 2, 64, 4, "cls"),
        ("resnet18", 2, 32, 1, "reg"),
        ("resnet50", 2, 128, 5, "cls"),
        ("resnet50", 1, None, 1, "reg"),
    ]
    for version, added, embed, outputs, mode in finetuned:
        model = Adjusted(backbone(version, rng), added, embed, outputs).eval()
        name = f"finetuned-{version}-a{added}-{mode}"
        path = out / "finetuned" / name / "model_weights.pth"
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), path)
        # The first case names the directory, the others the file.
        target = path.parent if added == 1 and mode == "cls" else path
        args = ["--use_case", "finetuned", "--model_version", version, "--model_weights", str(target), "--mode", mode]
        if version == "resnet50" and added == 2:
            args += ["--added_layers", "2", "--embed_size", str(embed), "--num_classes", str(outputs)]
        reference(name, model.embed, args, 8)

    # DeepTune peft checkpoints (LoRA rank = embed_size, alpha 16).
    for version, added, rank, outputs in [("resnet18", 2, 8, 3), ("resnet18", 1, 4, 2), ("resnet50", 2, 16, 3)]:
        model = Adjusted(backbone(version, rng), added, rank, outputs, lora_rank=rank).eval()
        name = f"peft-{version}-a{added}"
        path = out / "peft" / f"{name}.pth"
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), path)
        args = ["--use_case", "peft", "--model_version", version, "--model_weights", str(path)]
        reference(name, model.embed, args, 8)
        if added == 1:
            # The same weights with only peft's copy of the backbone (`peftmodel.base_model.model.*`).
            trimmed = {k: v for k, v in model.state_dict().items() if not k.startswith("model.")}
            tpath = out / "peft" / f"{name}-peft-keys-only.pth"
            torch.save(trimmed, tpath)
            args = ["--use_case", "peft", "--model_version", version, "--model_weights", str(tpath)]
            reference(f"{name}-peft-keys-only", model.embed, args, 8)

    (out / "cases.json").write_text(json.dumps({"images": n, "cases": cases}, indent=2))
    print(f"vision fixtures: {n} images, {len(cases)} cases in {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
