"""Swin V1 cases: a full swin_t torchvision hub file (pretrained), and DeepTune finetuned and
peft checkpoints of a small swin_t-shaped network built with torchvision's own constructor.

Sizes: the swin_t hub file is 28M parameters (~110 MB). The checkpoints use
SwinTransformer(patch 4, embed_dim 96, depths [1, 2, 1, 0], heads [3, 6, 12, 24], window 8,
mlp_ratio 1): four stages, so 768 features as swin_t, ~2.9M parameters (~12 MB) each. Window 8
on the 56/28/14/7 grids pads the 28 and 14 grids (28 -> 32, 14 -> 16) and shifts on a padded grid
with its mask; the full swin_t covers window 7, and the zeroed shift on its 7x7 last stage.

Peft: DeepTune wraps only `qkv`/`proj`, which torchvision's functional attention reads as
`self.qkv.weight`, so the peft-wrapped forward ignores the LoRA. deepembed merges what the
checkpoint holds; the reference is the torchvision model after peft's own merge_and_unload
(W + B @ A * alpha / r), not the wrapped forward."""

import copy

import torch
import torch.nn as nn
import torchvision
from torchvision.models.swin_transformer import ShiftedWindowAttention, SwinTransformer

from .common import Adjusted

HUB_FILES = {
    "swin_t": "swin_t-704ceda3.pth",
    "swin_s": "swin_s-5e29d889.pth",
    "swin_b": "swin_b-68c6b09e.pth",
}


def informative(model):
    """torchvision's init leaves attention nearly uniform (qkv and the bias table at std 0.02),
    which would hide a wrong bias index or mask; wider attention weights, a unit-scale bias table
    and random LayerNorm affines make every part of the network show in the output."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, ShiftedWindowAttention):
                dim = m.qkv.in_features
                m.relative_position_bias_table.normal_(0, 1)
                for lin in (m.qkv, m.proj):
                    lin.weight.normal_(0, dim**-0.5)
                    lin.bias.normal_(0, 0.1)
            elif isinstance(m, nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
    return model.eval()


def mini():
    """A swin_t-shaped network (96 channels, four stages, 768 features) small enough for the
    fixture budget; see the module docstring."""
    model = SwinTransformer(patch_size=[4, 4], embed_dim=96, depths=[1, 2, 1, 0], num_heads=[3, 6, 12, 24],
                            window_size=[8, 8], mlp_ratio=1.0, stochastic_depth_prob=0.2)
    return informative(model)


def deeptune_targets(model):
    # DeepTune's swin_peft: Linear layers whose name contains qkv, proj or head (head is already
    # an identity by then).
    return [n for n, m in model.named_modules()
            if any(s in n for s in ("qkv", "proj", "head")) and isinstance(m, nn.Linear)]


def generate(ctx):
    # Pretrained: the full swin_t as torchvision's hub file, found through TORCH_HOME and named.
    model = informative(torchvision.models.swin_t(weights=None))
    path = ctx.save(model.state_dict(), ctx.hub / HUB_FILES["swin_t"])
    model.head = nn.Identity()
    ctx.reference("pretrained-swin_t", model, ["--use_case", "pretrained", "--model_version", "swin_t"])
    ctx.reference("pretrained-swin_t-model-weights", model,
                  ["--use_case", "pretrained", "--model_version", "swin_t", "--model_weights", str(path)])

    # DeepTune fine-tuned checkpoints of the small network: head replaced, fc1 (and fc2).
    for added, embed, outputs, mode in [(1, None, 3, "cls"), (2, 32, 4, "cls")]:
        model = Adjusted(mini(), "head", 768, added, embed, outputs).eval()
        name = f"finetuned-swin_t-mini-w8-a{added}-{mode}"
        path = ctx.save(model.state_dict(), f"finetuned/{name}/model_weights.pth")
        target = path.parent if added == 1 else path
        args = ["--use_case", "finetuned", "--model_version", "swin_t", "--model_weights", str(target), "--mode", mode]
        if added == 2:
            args += ["--added_layers", "2", "--embed_size", str(embed), "--num_classes", str(outputs)]
        ctx.reference(name, model.embed, args)

    # DeepTune peft checkpoint (LoRA rank = embed_size, alpha 16, on qkv/proj only).
    rank = 8
    model = Adjusted(mini(), "head", 768, 2, rank, 3, lora_rank=rank, lora_targets=deeptune_targets).eval()
    name = "peft-swin_t-mini-w8-a2"
    path = ctx.save(model.state_dict(), f"peft/{name}.pth")
    merged = copy.deepcopy(model.peftmodel).merge_and_unload().eval()
    with torch.no_grad():
        wrapped = model.embed(ctx.inputs()[:4])
        ours = model.fc1(model.flatten(merged(ctx.inputs()[:4])))
    # The wrapped forward ignores the LoRA (see above): the merge must change the output, or this
    # case would not test it.
    assert (wrapped - ours).abs().max() > 1e-3, "merged LoRA does not change the swin output"
    ctx.reference(name, lambda x: model.fc1(model.flatten(merged(x))),
                  ["--use_case", "peft", "--model_version", "swin_t", "--model_weights", str(path)])
