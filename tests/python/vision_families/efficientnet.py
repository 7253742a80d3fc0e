"""EfficientNet cases: torchvision hub files (pretrained), DeepTune finetuned and peft checkpoints.

Random EfficientNets with torchvision's default init output near-constants (the depthwise
kernels are initialised by fan-out, so activations shrink stage after stage). The weights here
are made informative: depthwise kernels by fan-in, a small batch-norm scale at the end of each
residual branch, and batch-norm running statistics measured on the fixture images themselves.

peft: DeepTune pins peft 0.10, whose LoRA on a depthwise convolution is dense (lora_A a full
`[r, C, k, k]` convolution with the base's kernel, stride and padding; lora_B `[C, r, 1, 1]`).
peft 0.16 and later refuse to build that model at all, so `Peft010` below mirrors peft 0.10's
module layout and forward by hand (`base_layer`, `lora_A.default`, `lora_B.default`,
`lora_dropout.default`; `base(x) + lora_B(lora_A(dropout(x))) * alpha / r`), on every Conv2d of
the backbone as DeepTune targets them, and the checkpoint keys come out as peft 0.10's.
"""

import math

import torch
import torch.nn as nn
import torchvision
from torchvision.models.efficientnet import MBConv

from .common import Adjusted, set_module

HUB_FILES = {
    "efficientnet_b0": "efficientnet_b0_rwightman-7f5810bc.pth",
    # DeepTune asks for weights="DEFAULT": IMAGENET1K_V2 for B1, IMAGENET1K_V1 for the others.
    "efficientnet_b1": "efficientnet_b1-c27df63c.pth",
    "efficientnet_b2": "efficientnet_b2_rwightman-c35c1473.pth",
    "efficientnet_b3": "efficientnet_b3_rwightman-b3899882.pth",
    "efficientnet_b4": "efficientnet_b4_rwightman-23ab8bcd.pth",
    "efficientnet_b5": "efficientnet_b5_lukemelas-1a07897c.pth",
    "efficientnet_b6": "efficientnet_b6_lukemelas-24a108a5.pth",
    "efficientnet_b7": "efficientnet_b7_lukemelas-c5b4e57e.pth",
}


def backbone(version, ctx):
    """A torchvision EfficientNet with informative random weights (see the module docstring)."""
    model = getattr(torchvision.models, version)(weights=None)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d) and m.groups > 1:
                nn.init.kaiming_normal_(m.weight, mode="fan_in")
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
        for m in model.modules():
            if isinstance(m, MBConv) and m.use_res_connect:
                m.block[-1][1].weight.uniform_(0.1, 0.3)
        measure_batchnorm(model, ctx.inputs())
    return model


def measure_batchnorm(model, images):
    """Batch-norm running statistics of `images` (one pass, cumulative average)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    model(images)
    model.eval()


class LoraConv010(nn.Module):
    """peft 0.10's LoRA Conv2d: its parameter names, and its unmerged eval forward."""

    def __init__(self, base, r, alpha):
        super().__init__()
        self.base_layer = base
        self.lora_dropout = nn.ModuleDict({"default": nn.Dropout(0.1)})
        # peft 0.10 builds lora_A from the base layer's in_channels, kernel, stride and padding,
        # without its groups: dense even on a depthwise convolution.
        self.lora_A = nn.ModuleDict(
            {"default": nn.Conv2d(base.in_channels, r, base.kernel_size, base.stride, base.padding, bias=False)}
        )
        self.lora_B = nn.ModuleDict({"default": nn.Conv2d(r, base.out_channels, (1, 1), (1, 1), bias=False)})
        self.scaling = alpha / r
        with torch.no_grad():
            nn.init.kaiming_uniform_(self.lora_A["default"].weight, a=math.sqrt(5))
            # peft starts lora_B at zero, which would make a dropped merge invisible.
            self.lora_B["default"].weight.normal_(0, 0.02)

    def forward(self, x):
        lora = self.lora_B["default"](self.lora_A["default"](self.lora_dropout["default"](x)))
        return self.base_layer(x) + lora * self.scaling


class _LoraModel(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x)


class Peft010(nn.Module):
    """`PeftModel` -> `base_model` (LoraModel) -> `model`, so the backbone's keys appear under
    `peftmodel.base_model.model.` as well as `model.`, sharing storage."""

    def __init__(self, model):
        super().__init__()
        self.base_model = _LoraModel(model)

    def forward(self, x):
        return self.base_model(x)


def adjusted(version, ctx, added, embed, outputs, lora_rank=None):
    model = backbone(version, ctx)
    features = model.classifier[1].in_features
    adj = Adjusted(model, "classifier", features, added, embed, outputs)
    if lora_rank is not None:
        # DeepTune's targets: every Conv2d and Linear of the backbone (its classifier is already
        # the identity, so: every Conv2d).
        targets = [n for n, m in adj.model.named_modules() if type(m) in (nn.Conv2d, nn.Linear)]
        for name in targets:
            set_module(adj.model, name, LoraConv010(adj.model.get_submodule(name), lora_rank, 16))
        adj.peftmodel = Peft010(adj.model)
    return adj.eval()


def generate(ctx):
    # Pretrained: torchvision weights files, found through TORCH_HOME.
    model = backbone("efficientnet_b0", ctx)
    ctx.save(model.state_dict(), ctx.hub / HUB_FILES["efficientnet_b0"])
    model.classifier = nn.Identity()
    ctx.reference("pretrained-efficientnet_b0", model, ["--use_case", "pretrained", "--model_version", "efficientnet_b0"])

    # B5-B7 normalise with eps 1e-3 (B0-B4: 1e-5); on these weights the wrong eps moves the
    # embedding by about 1 (largest value about 6). The weights file is stored in float16 to halve
    # its 122 MB (the reference runs on the same rounded weights).
    model = backbone("efficientnet_b5", ctx).half()
    ctx.save(model.state_dict(), ctx.hub / HUB_FILES["efficientnet_b5"])
    model = model.float()
    model.classifier = nn.Identity()
    args = ["--use_case", "pretrained", "--model_version", "efficientnet_b5"]
    ctx.reference("pretrained-efficientnet_b5-float16-file", model, args)

    # DeepTune fine-tuned checkpoints.
    for version, added, embed, outputs, mode in [
        ("efficientnet_b0", 1, None, 3, "cls"),
        ("efficientnet_b0", 2, 48, 1, "reg"),
    ]:
        model = adjusted(version, ctx, added, embed, outputs)
        name = f"finetuned-{version}-a{added}-{mode}"
        path = ctx.save(model.state_dict(), f"finetuned/{name}/model_weights.pth")
        args = ["--use_case", "finetuned", "--model_version", version, "--model_weights", str(path), "--mode", mode]
        ctx.reference(name, model.embed, args)

    # DeepTune peft checkpoints (LoRA rank = embed_size, alpha 16), in peft 0.10's layout.
    for version, added, rank, outputs in [("efficientnet_b0", 2, 8, 3)]:
        model = adjusted(version, ctx, added, rank, outputs, lora_rank=rank)
        name = f"peft-{version}-a{added}"
        path = ctx.save(model.state_dict(), f"peft/{name}.pth")
        args = ["--use_case", "peft", "--model_version", version, "--model_weights", str(path)]
        ctx.reference(name, model.embed, args)
