"""ViT cases: torchvision hub files (pretrained), DeepTune finetuned and peft checkpoints, all
with vit_b_32's layout (patch 32, width 768, 12 heads, MLP 3072) but only one or two encoder
layers: the plugin reads the depth from the weights, as it reads the image size, and a full
vit_b_32 is 350 MB a file. The full layout of every version is checked by tests/vision_models.rs.
A vit_b_32 built with image_size=288 (a 9x9 position grid) must run at 288x288 because the input
size follows the weights."""

import torch
import torch.nn as nn
import torchvision

from .common import Adjusted

VERSION = "vit_b_32"
HUB_FILE = "vit_b_32-d86f8d99.pth"
FEATURES = 768


def backbone(rng, layers=1, image_size=224):
    """A random torchvision ViT of vit_b_32's layout with `layers` encoder layers. torchvision's
    init leaves every LayerNorm at weight 1, bias 0 and the class token at 0; random values there
    make a wrong LayerNorm or token order visible."""
    model = torchvision.models.VisionTransformer(image_size=image_size, patch_size=32, num_layers=layers,
                                                 num_heads=12, hidden_dim=768, mlp_dim=3072)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, m.weight.shape)).float())
                m.bias.copy_(torch.from_numpy(rng.normal(0, 0.1, m.bias.shape)).float())
        model.class_token.normal_(0, 0.02)
    return model.eval()


def deeptune_lora_targets(model):
    """DeepTune's vit_peft target rule: modules whose type is exactly Conv2d or Linear. Attention's
    out_proj is a NonDynamicallyQuantizableLinear, so it is left out (and in_proj is a bare
    parameter of nn.MultiheadAttention); what remains is conv_proj and each block's mlp.0/mlp.3."""
    targets = [n for n, m in model.named_modules() if type(m) in (nn.Conv2d, nn.Linear)]
    assert not any(t.endswith("out_proj") for t in targets)
    return targets


def adjusted(rng, added, embed, outputs, lora_rank=None):
    model = backbone(rng)
    return Adjusted(model, "heads.head", FEATURES, added, embed, outputs, lora_rank=lora_rank,
                    lora_targets=deeptune_lora_targets).eval()


def generate(ctx):
    # Pretrained: torchvision's hub file, found through TORCH_HOME. The embedding is the class
    # token after the final LayerNorm (DeepTune sets `heads` to identity).
    model = backbone(ctx.rng, layers=2)
    ctx.save(model.state_dict(), ctx.hub / HUB_FILE)
    model.heads = nn.Identity()
    ctx.reference(f"pretrained-{VERSION}-2-layers", model, ["--use_case", "pretrained", "--model_version", VERSION])

    # The input size follows the weights: a 9x9 position grid means 288x288 images.
    model = backbone(ctx.rng, image_size=288)
    path = ctx.save(model.state_dict(), f"vit/{VERSION}-288px.pth")
    model.heads = nn.Identity()
    args = ["--use_case", "pretrained", "--model_version", VERSION, "--model_weights", str(path)]
    ctx.reference(f"pretrained-{VERSION}-288px", model, args, inputs=ctx.inputs(size=288))

    # DeepTune fine-tuned checkpoints (heads.head replaced by identity, then fc1/fc2).
    for added, embed, outputs, mode in [(1, None, 3, "cls"), (2, 32, 1, "reg")]:
        model = adjusted(ctx.rng, added, embed, outputs)
        name = f"finetuned-{VERSION}-1-layer-a{added}-{mode}"
        path = ctx.save(model.state_dict(), f"finetuned/{name}/model_weights.pth")
        target = path.parent if added == 1 else path
        args = ["--use_case", "finetuned", "--model_version", VERSION, "--model_weights", str(target), "--mode", mode]
        ctx.reference(name, model.embed, args)

    # DeepTune peft checkpoint (LoRA rank = embed_size, alpha 16, DeepTune's targets). DeepTune's
    # adjustedViTPeft only builds with one added layer (with two it reads an attribute it never
    # sets), so that is the checkpoint DeepTune can write.
    rank = 8
    model = adjusted(ctx.rng, 1, rank, 4, lora_rank=rank)
    name = f"peft-{VERSION}-1-layer-a1"
    path = ctx.save(model.state_dict(), f"peft/{name}.pth")
    ctx.reference(name, model.embed, ["--use_case", "peft", "--model_version", VERSION, "--model_weights", str(path)])
