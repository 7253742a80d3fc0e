"""ResNet cases: torchvision hub files (pretrained), DeepTune finetuned and peft checkpoints."""

import torch.nn as nn
import torchvision

from .common import Adjusted, calibrate_batchnorm

HUB_FILES = {
    "resnet18": "resnet18-f37072fd.pth",
    "resnet34": "resnet34-b627a593.pth",
    "resnet50": "resnet50-0676ba61.pth",
    "resnet101": "resnet101-63fe2227.pth",
    "resnet152": "resnet152-394f9c45.pth",
}


def backbone(version, rng):
    model = getattr(torchvision.models, version)(weights=None)
    calibrate_batchnorm(model, rng)
    return model


def adjusted(version, rng, added, embed, outputs, lora_rank=None):
    model = backbone(version, rng)
    return Adjusted(model, "fc", model.fc.in_features, added, embed, outputs, lora_rank=lora_rank).eval()


def generate(ctx):
    # Pretrained: torchvision weights files, found through TORCH_HOME or named explicitly.
    for version, file in HUB_FILES.items():
        model = backbone(version, ctx.rng)
        ctx.save(model.state_dict(), ctx.hub / file)
        model.fc = nn.Identity()
        args = ["--use_case", "pretrained", "--model_version", version]
        if version == "resnet34":
            args += ["--model_weights", str(ctx.hub / file)]
        ctx.reference(f"pretrained-{version}", model, args)

    # DeepTune fine-tuned checkpoints.
    finetuned = [
        ("resnet18", 1, None, 3, "cls"),
        ("resnet18", 2, 64, 4, "cls"),
        ("resnet18", 2, 32, 1, "reg"),
        ("resnet50", 2, 128, 5, "cls"),
        ("resnet50", 1, None, 1, "reg"),
    ]
    for version, added, embed, outputs, mode in finetuned:
        model = adjusted(version, ctx.rng, added, embed, outputs)
        name = f"finetuned-{version}-a{added}-{mode}"
        path = ctx.save(model.state_dict(), f"finetuned/{name}/model_weights.pth")
        # The first case names the directory, the others the file.
        target = path.parent if added == 1 and mode == "cls" else path
        args = ["--use_case", "finetuned", "--model_version", version, "--model_weights", str(target), "--mode", mode]
        if version == "resnet50" and added == 2:
            args += ["--added_layers", "2", "--embed_size", str(embed), "--num_classes", str(outputs)]
        ctx.reference(name, model.embed, args)

    # DeepTune peft checkpoints (LoRA rank = embed_size, alpha 16).
    for version, added, rank, outputs in [("resnet18", 2, 8, 3), ("resnet18", 1, 4, 2), ("resnet50", 2, 16, 3)]:
        model = adjusted(version, ctx.rng, added, rank, outputs, lora_rank=rank)
        name = f"peft-{version}-a{added}"
        path = ctx.save(model.state_dict(), f"peft/{name}.pth")
        args = ["--use_case", "peft", "--model_version", version, "--model_weights", str(path)]
        ctx.reference(name, model.embed, args)
        if added == 1:
            # The same weights with only peft's copy of the backbone (`peftmodel.base_model.model.*`).
            trimmed = {k: v for k, v in model.state_dict().items() if not k.startswith("model.")}
            tpath = ctx.save(trimmed, f"peft/{name}-peft-keys-only.pth")
            args = ["--use_case", "peft", "--model_version", version, "--model_weights", str(tpath)]
            ctx.reference(f"{name}-peft-keys-only", model.embed, args)
