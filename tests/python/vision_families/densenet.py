"""DenseNet cases (densenet121: the others differ only in growth rate, block lengths and stem
width, which `identify` and the Rust builder read from the same table).

DeepTune extracts DenseNet embeddings only through fc1 (--added_layers 2): pretrained and one
added layer are refused, so the cases are finetuned and peft with two added layers. Large
weights are saved as views of smaller storages to keep the fixtures small (see vgg.py).
"""

import torchvision

from .common import Adjusted, calibrate_batchnorm
from .vgg import compact, saved

FEATURES = 1024


def adjusted(rng, embed, outputs, lora_rank=None):
    model = torchvision.models.densenet121(weights=None)
    views = compact(model, cap=4 * 1024)
    calibrate_batchnorm(model, rng)
    return Adjusted(model, "classifier", FEATURES, 2, embed, outputs, lora_rank=lora_rank).eval(), views


def generate(ctx):
    model, views = adjusted(ctx.rng, 32, 4)
    name = "finetuned-densenet121-a2-cls"
    sd = saved(model.state_dict(), views)
    path = ctx.save(sd, f"finetuned/{name}/model_weights.pth")
    args = ["--use_case", "finetuned", "--model_version", "densenet121", "--model_weights", str(path.parent)]
    ctx.reference(name, model.embed, args)

    model, views = adjusted(ctx.rng, 8, 3, lora_rank=8)
    path = ctx.save(saved(model.state_dict(), views), "peft/peft-densenet121-a2.pth")
    args = ["--use_case", "peft", "--model_version", "densenet121", "--model_weights", str(path)]
    ctx.reference("peft-densenet121-a2", model.embed, args)
