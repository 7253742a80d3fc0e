"""Writes the committed seed inputs of the fuzz targets: small, valid files of every kind each
target reads, so the fuzzer starts from deep inside the formats. `cargo xtask fuzz` adds the test
fixtures (tests/work) when they exist. Run with the project venv:
    .venv/bin/python tests/fuzz/seeds/gen_seeds.py tests/fuzz/seeds
"""

import io
import pickle
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import torch
from PIL import Image
from safetensors.torch import save as save_safetensors
from sklearn.preprocessing import StandardScaler

out = Path(sys.argv[1])
for d in ["image", "pickle", "joblib", "torch_zip", "safetensors"]:
    (out / d).mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(0)
torch.manual_seed(0)

# Images: every PNG mode the decoder converts, and the JPEG variants libjpeg-turbo takes.
rgb = Image.fromarray(rng.integers(0, 256, (9, 13, 3), dtype=np.uint8))
for mode in ["RGB", "RGBA", "L", "LA", "P", "1", "I;16"]:
    img = rgb.convert(mode) if mode != "I;16" else Image.fromarray(rng.integers(0, 65535, (9, 13), dtype=np.uint16))
    img.save(out / "image" / f"mode-{mode.replace(';', '')}.png")
Image.fromarray(rng.integers(0, 256, (1, 1, 3), dtype=np.uint8)).save(out / "image" / "one-pixel.png")
rgb.save(out / "image" / "baseline.jpg", quality=90)
rgb.save(out / "image" / "progressive.jpg", quality=75, progressive=True)
rgb.save(out / "image" / "444.jpg", quality=95, subsampling=0)
rgb.convert("L").save(out / "image" / "grey.jpg")
Image.fromarray(rng.integers(0, 256, (300, 17, 3), dtype=np.uint8)).save(out / "image" / "tall.jpg")
# The other formats: BMP, GIF, TIFF (LZW, and CMYK), WebP (lossless, lossy) and a CMYK JPEG.
rgb.save(out / "image" / "rgb.bmp")
rgb.convert("P").save(out / "image" / "palette.gif")
rgb.save(out / "image" / "lzw.tif", compression="tiff_lzw")
rgb.convert("CMYK").save(out / "image" / "cmyk.tif")
# 32-bit float (with a NaN) and signed integer grey TIFFs (Pillow's F and I), and grey with alpha.
grey = np.array(rgb.convert("L"), dtype=np.float32) * 1.3 - 30.0
grey[0, 0] = np.nan
Image.fromarray(grey).save(out / "image" / "float.tif")
Image.fromarray(np.array(rgb.convert("L"), dtype=np.int32) * 4 - 200).save(out / "image" / "int32.tif")
rgb.convert("LA").save(out / "image" / "la.tif")
rgb.save(out / "image" / "lossless.webp", lossless=True)
rgb.save(out / "image" / "lossy.webp", quality=80)
rgb.convert("CMYK").save(out / "image" / "cmyk.jpg")

# Pickles: the protocols, numpy arrays of several dtypes, containers.
values = {
    "f32": np.arange(6, dtype=np.float32).reshape(2, 3),
    "i64": np.array([1, -2, 3], dtype=np.int64),
    "u8": np.array([255, 0], dtype=np.uint8),
    "str": np.array(["a", "bc"]),
    "obj": np.array(["x", 1, None], dtype=object),
    "nested": OrderedDict(a=[1, 2.5, (True, None)], b={"k": b"bytes"}),
}
for proto in [2, 4, 5]:
    (out / "pickle" / f"values-p{proto}.pkl").write_bytes(pickle.dumps(values, protocol=proto))

# joblib files as pytorch-tabular's datamodule.sav holds them: frames, series, a fitted scaler.
frame = pd.DataFrame({"value": [0, 1, 2], "label": ["a", "b", None]}, index=pd.Index(["a", "b", "c"]))
scaler = StandardScaler().fit(rng.normal(size=(10, 3)))
joblib.dump({"frame": frame, "scaler": scaler}, out / "joblib" / "datamodule.sav")
joblib.dump(frame["value"], out / "joblib" / "series.joblib")
joblib.dump(pd.DataFrame({"x": [1.5, 2.5]}), out / "joblib" / "range-index.joblib")
joblib.dump(np.arange(4.0), out / "joblib" / "array.joblib")

# torch.save archives: a state dict, a Lightning-like checkpoint, views and several dtypes.
base = torch.randn(4, 3)
state = OrderedDict(
    [
        ("layer.weight", base),
        ("layer.bias", torch.zeros(3, dtype=torch.float16)),
        ("column", base[:, 1]),
        ("bf16", torch.ones(2, dtype=torch.bfloat16)),
        ("steps", torch.tensor(7)),
        ("expanded", torch.ones(1, 3).expand(4, 3)),
    ]
)
torch.save(state, out / "torch_zip" / "state_dict.pth")
torch.save({"state_dict": state, "epoch": 3, "hyper_parameters": {"lr": 0.1}}, out / "torch_zip" / "lightning.ckpt")
torch.save({"model": {"inner": OrderedDict(w=torch.arange(5))}}, out / "torch_zip" / "nested.pth")
# The pickle inside a torch archive is a seed for the pickle target too.
with zipfile.ZipFile(out / "torch_zip" / "state_dict.pth") as z:
    name = next(n for n in z.namelist() if n.endswith("data.pkl"))
    (out / "pickle" / "torch-data.pkl").write_bytes(z.read(name))

(out / "safetensors" / "model.safetensors").write_bytes(
    save_safetensors({"w": torch.randn(2, 3), "b": torch.zeros(3, dtype=torch.float16), "i": torch.arange(4)})
)
(out / "safetensors" / "empty.safetensors").write_bytes(save_safetensors({}))
