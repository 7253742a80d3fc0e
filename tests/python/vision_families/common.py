"""What every vision family's generator shares: the run context, DeepTune's adjusted model,
PEFT wrapping, batch-norm calibration and the fixture file formats."""

import io
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torchvision
from PIL import Image

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def transform(size=224, resample=Image.BILINEAR, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """DeepTune's preprocessing (helpers.transformations) at `size`: PIL resize to a square, no
    crop, ToTensor, Normalize."""
    return torchvision.transforms.Compose(
        [
            torchvision.transforms.Resize(size=(size, size), interpolation=_interpolation(resample)),
            torchvision.transforms.ToTensor(),
            torchvision.transforms.Normalize(mean=mean, std=std),
        ]
    )


def _interpolation(resample):
    modes = torchvision.transforms.InterpolationMode
    return {Image.BILINEAR: modes.BILINEAR, Image.BICUBIC: modes.BICUBIC}[resample]


def write_f32(path, tensor):
    path.parent.mkdir(parents=True, exist_ok=True)
    tensor.detach().to(torch.float32).contiguous().numpy().astype("<f4").tofile(path)


class Context:
    """Where a family writes its files, the sample images, and the list of cases.

    A case is one `deepembed embed vision` run on images.parquet: its extra arguments, and the
    reference embeddings that run must reproduce."""

    def __init__(self, out: Path, images, rng):
        self.out = out
        self.images = images
        self.rng = rng
        self.hub = out / "torch_home" / "hub" / "checkpoints"
        self.hub.mkdir(parents=True, exist_ok=True)
        self.cases = []
        self._inputs = {}

    def inputs(self, size=224, resample=Image.BILINEAR, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        """The sample images preprocessed as DeepTune does at `size` (N x 3 x size x size)."""
        key = (size, resample, tuple(mean), tuple(std))
        if key not in self._inputs:
            t = transform(size, resample, mean, std)
            self._inputs[key] = torch.stack([t(Image.open(io.BytesIO(b)).convert("RGB")) for b in self.images])
        return self._inputs[key]

    def reference(self, name, fn, args, inputs=None, batch_size=8):
        """Records a case: `fn` maps a batch of preprocessed images to embeddings."""
        pre = self.inputs() if inputs is None else inputs
        with torch.no_grad():
            emb = torch.cat([fn(pre[i : i + batch_size]) for i in range(0, len(pre), batch_size)])
        write_f32(self.out / "ref" / f"{name}.f32", emb)
        self.cases.append({"name": name, "args": args, "rows": len(pre), "dims": emb.shape[1], "ref": f"ref/{name}.f32"})

    def save(self, state_dict, relative):
        """torch.save of a state dict under the fixture folder; returns the path."""
        path = self.out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state_dict, path)
        return path

    def write_cases(self):
        (self.out / "cases.json").write_text(json.dumps({"images": len(self.images), "cases": self.cases}, indent=2))


def calibrate_batchnorm(model, rng, batches=2, batch=6, size=224):
    """Random affine BN parameters, then running statistics from random inputs, so activations
    stay in a sane range through deep random networks."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                m.reset_running_stats()
                m.momentum = None  # cumulative average
        model.train()
        for _ in range(batches):
            model(torch.from_numpy(rng.normal(0, 1, size=(batch, 3, size, size)).astype(np.float32)))
    model.eval()


def set_module(root, path, module):
    """Replaces the submodule at dotted `path` (e.g. `heads.head`)."""
    parent, _, leaf = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)


class Adjusted(nn.Module):
    """DeepTune's adjusted model: the torchvision backbone under `model`, its head at `head_path`
    replaced by identity, flattened, then fc1 (and fc2 with two added layers).

    With `lora_rank`, peft LoRA wraps the backbone modules `lora_targets(model)` names (default:
    every Conv2d and Linear), as DeepTune's peft variants do; lora_B is randomised because peft
    starts it at zero, which would make a dropped merge invisible."""

    def __init__(self, model, head_path, features, added_layers, embed_size, outputs, lora_rank=None,
                 lora_targets=None, lora_alpha=16):
        super().__init__()
        self.model = model
        set_module(self.model, head_path, nn.Identity())
        self.flatten = nn.Flatten()
        if added_layers == 2:
            self.fc1 = nn.Linear(features, embed_size)
            self.fc2 = nn.Linear(embed_size, outputs)
        else:
            self.fc1 = nn.Linear(features, outputs)
        self.added_layers = added_layers
        if lora_rank is not None:
            from peft import LoraConfig, get_peft_model

            if lora_targets is None:
                targets = [n for n, m in self.model.named_modules() if type(m) in (nn.Conv2d, nn.Linear)]
            else:
                targets = lora_targets(self.model)
            config = LoraConfig(r=lora_rank, lora_alpha=lora_alpha, lora_dropout=0.1, bias="none",
                                target_modules=targets)
            self.peftmodel = get_peft_model(self.model, config)
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
