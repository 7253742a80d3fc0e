"""SigLIP cases: Hugging Face SigLIP directories (pretrained), DeepTune's custom_siglip_model.pt
(finetuned and peft), and Pillow's bicubic resize of the sample images (for the image crate).

The model is tiny and random (hidden 64, 2 layers, 4 heads, patch 16 or 14, images of 80 or 96), saved
by transformers' save_pretrained; the real so400m-patch14-384 cannot be downloaded here. Layer
norms and biases are randomised, since transformers initialises them to 1 and 0, which would
hide a dropped bias or a wrong epsilon.

The references preprocess as DeepTune's pinned transformers 4.41 SiglipImageProcessor did, by
hand: PIL bicubic resize to the processor's size, x * (1/255) in float64 then float32,
(x - 0.5) / 0.5 in float32. transformers 5's default (torchvision) resize differs.
"""

import io
import json

import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipVisionConfig, SiglipVisionModel

VISION = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
TEXT = dict(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
            max_position_embeddings=16, bos_token_id=None, eos_token_id=None, pad_token_id=1)
# Sizes whose Pillow bicubic output the image crate's test compares against (the fixtures' 80
# and 96, and so400m's 384).
BICUBIC_SIZES = (80, 96, 384)


def preprocess(images, size):
    """transformers 4.41's SiglipImageProcessor (bicubic, rescale 1/255, mean = std = 0.5)."""
    out = []
    for b in images:
        img = Image.open(io.BytesIO(b)).convert("RGB").resize((size, size), Image.BICUBIC)
        x = (np.asarray(img).astype(np.float64) * (1 / 255)).astype(np.float32)
        x = (x - np.float32(0.5)) / np.float32(0.5)
        out.append(torch.from_numpy(x.transpose(2, 0, 1).copy()))
    return torch.stack(out)


def randomise(model):
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.uniform_(0.5, 1.5)
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.05)
    return model.eval()


def vision_model(image_size, patch_size=16):
    return randomise(SiglipVisionModel(SiglipVisionConfig(image_size=image_size, patch_size=patch_size, **VISION)))


def full_model(image_size, patch_size=16):
    config = SiglipConfig(vision_config=dict(image_size=image_size, patch_size=patch_size, **VISION), text_config=TEXT)
    return randomise(SiglipModel(config))


def save_processor(directory, size):
    """The preprocessor_config.json SigLIP's processor saves (bicubic, rescale, mean/std 0.5)."""
    SiglipImageProcessor(size={"height": size, "width": size}).save_pretrained(directory)


class CustomSiglipModel(nn.Module):
    """DeepTune's src/vision/siglip.py CustomSiglipModel (and CustomSigLIPWithPeft with `peft`):
    a SiglipModel under `base_model`, `fc_layers` on the vision tower's pooled output (DeepTune
    hard-codes 1152, so400m's width; here the tiny model's)."""

    def __init__(self, base_model, num_classes, added_layers, embedding_dim, peft=False):
        super().__init__()
        self.base_model = base_model
        width = base_model.config.vision_config.hidden_size
        if added_layers == 2:
            self.fc_layers = nn.Sequential(nn.Linear(width, embedding_dim), nn.Linear(embedding_dim, num_classes))
        else:
            self.fc_layers = nn.Sequential(nn.Linear(width, num_classes))
        if peft:
            from peft import LoraConfig, get_peft_model

            config = LoraConfig(inference_mode=False, r=16, lora_alpha=32, lora_dropout=0.1,
                                target_modules=["v_proj", "q_proj"])
            self.base_model = get_peft_model(base_model, config)
            # peft starts lora_B at zero, which would make a dropped merge invisible.
            with torch.no_grad():
                for name, p in self.base_model.named_parameters():
                    if "lora_B" in name:
                        p.normal_(0, 0.05)
        self.eval()

    def get_image_embeddings(self, pixel_values):
        pooled = self.base_model.vision_model(pixel_values=pixel_values).pooler_output
        return self.fc_layers[0](pooled)


def deeptune_dir(ctx, relative, model, added_layers, embed_size, num_classes, image_size):
    """What DeepTune's SigLIP trainer writes (custom_siglip_model.pt, custom_siglip_config.json),
    plus the base model's config.json and preprocessor_config.json beside it."""
    path = ctx.save(model.state_dict(), f"{relative}/custom_siglip_model.pt")
    config = {"added_layers": added_layers, "embedding_dim": embed_size, "num_classes": num_classes}
    (path.parent / "custom_siglip_config.json").write_text(json.dumps(config))
    base = model.base_model.get_base_model() if hasattr(model.base_model, "get_base_model") else model.base_model
    base.config.to_json_file(path.parent / "config.json")
    save_processor(path.parent, image_size)
    return path


def pooled(model):
    return lambda x: model(pixel_values=x).pooler_output


def generate(ctx):
    root = ctx.out / "siglip"
    inputs = {size: preprocess(ctx.images, size) for size in (80, 96)}

    # Pretrained: a SiglipVisionModel directory (transformers 5 names, no prefix).
    model = vision_model(80)
    model.save_pretrained(root / "vision-tiny")
    save_processor(root / "vision-tiny", 80)
    args = ["--use_case", "pretrained", "--model_version", "siglip", "--model_weights", str(root / "vision-tiny")]
    ctx.reference("pretrained-siglip-tiny-vision-model", pooled(model), args, inputs=inputs[80])

    # The same kind of model as transformers 4 saved it (`vision_model.` prefix,
    # pytorch_model.bin), without preprocessor_config.json: the size comes from config.json.
    model = vision_model(96)
    legacy = root / "vision-tiny-transformers4"
    legacy.mkdir(parents=True, exist_ok=True)
    torch.save({f"vision_model.{k}": v for k, v in model.state_dict().items()}, legacy / "pytorch_model.bin")
    model.config.to_json_file(legacy / "config.json")
    args = ["--use_case", "pretrained", "--model_version", "siglip", "--model_weights", str(legacy)]
    ctx.reference("pretrained-siglip-tiny-vision-model-transformers4-bin", pooled(model), args, inputs=inputs[96])

    # A full SiglipModel (text tower too) in DeepTune's download layout: model/ and preprocessor/.
    model = full_model(96)
    model.save_pretrained(root / "deeptune-layout" / "model")
    save_processor(root / "deeptune-layout" / "preprocessor", 96)
    args = ["--use_case", "pretrained", "--model_version", "siglip",
            "--model_weights", str(root / "deeptune-layout" / "model")]
    ctx.reference("pretrained-siglip-tiny-full-model", pooled(model.vision_model), args, inputs=inputs[96])

    # Finetuned, two added layers: the embedding is fc_layers[0]'s output.
    model = CustomSiglipModel(full_model(80), num_classes=3, added_layers=2, embedding_dim=24)
    path = deeptune_dir(ctx, "siglip/finetuned-a2", model, 2, 24, 3, 80)
    args = ["--use_case", "finetuned", "--model_version", "siglip", "--model_weights", str(path.parent)]
    ctx.reference("finetuned-siglip-tiny-a2", model.get_image_embeddings, args, inputs=inputs[80])

    # Peft (LoRA r 16, alpha 32 on q_proj and v_proj), two added layers; the .pt named directly.
    # Patch 14 does not divide 96 (nor so400m's 384): the convolution drops the remainder.
    model = CustomSiglipModel(full_model(96, patch_size=14), num_classes=4, added_layers=2, embedding_dim=20, peft=True)
    path = deeptune_dir(ctx, "siglip/peft-a2", model, 2, 20, 4, 96)
    args = ["--use_case", "peft", "--model_version", "siglip", "--model_weights", str(path),
            "--added_layers", "2", "--embed_size", "20", "--num_classes", "4"]
    ctx.reference("peft-siglip-tiny-a2", model.get_image_embeddings, args, inputs=inputs[96])

    # One added layer: DeepTune's embedding would be fc_layers[0]'s output, the class logits;
    # deepembed refuses it (no reference; an error test uses this file).
    model = CustomSiglipModel(full_model(80), num_classes=3, added_layers=1, embedding_dim=None)
    deeptune_dir(ctx, "siglip/finetuned-a1", model, 1, None, 3, 80)

    # Pillow's bicubic resize of every sample image, for plugins/vision/image/tests/bicubic.rs.
    bicubic = root / "bicubic"
    bicubic.mkdir(parents=True, exist_ok=True)
    for i, b in enumerate(ctx.images):
        (bicubic / f"{i:02d}.img").write_bytes(b)
        rgb = Image.open(io.BytesIO(b)).convert("RGB")
        for size in BICUBIC_SIZES:
            (bicubic / f"{i:02d}-{size}.rgb").write_bytes(np.asarray(rgb.resize((size, size), Image.BICUBIC)).tobytes())
