"""VGG cases (vgg11 only: the others differ in the number of convolutions alone, which
`identify` and the Rust builder read from the same configuration table).

- pretrained: torchvision hub file; embedding = the flattened 7x7 pool output (25088): DeepTune
  sets classifier.6 to identity, then keeps every child of the model but the last (the whole
  classifier) and flattens.
- finetuned, 1 added layer: the flattened 7x7 pool output (25088); 2 added layers: fc1.
- peft: LoRA on every convolution (DeepTune's targets: Conv2d, Linear and Flatten modules of
  the backbone, whose classifier is already an identity), rank = embed_size, alpha 16.

Size: real vgg11 weights are 531 MB (classifier.0 alone is 4096 x 25088). To stay near the
fixture budget, large weights are saved as views of smaller random storages (`compact`): the
files are ordinary torch.save state dicts with torchvision's keys and shapes, whose tensors
share storage the way any view does. classifier.0's storage cannot go below ~136 MiB: the
checkpoint reader refuses views more than 256 MiB larger than their storage.
"""

import torch
import torchvision

from .common import Adjusted

HUB_FILE = "vgg11-8a719046.pth"
FEATURES = 512 * 7 * 7

# Elements of storage behind each compacted weight (256 KiB of float32).
CAP = 64 * 1024
# The reader's limit on how far a view may exceed its storage (MAX_EXPANDED_VIEW_BYTES), in
# float32 elements, with 64 Ki elements to spare.
MAX_EXPANSION = (256 << 20) // 4 - (64 << 10)


def compact(model, cap=CAP, shared=()):
    """Replaces each weight of more than `cap` elements by a view of a random storage of about
    `cap` elements, drawn with the initialised weight's mean and standard deviation; a larger
    weight's rows overlap. The weights named in `shared` (same initial distribution) are views
    of one storage. Returns {data_ptr: view} for `saved`."""
    params = [(n, p) for n, p in model.named_parameters() if p.dim() >= 2 and p.numel() > cap]
    groups = [[(n, p)] for n, p in params if n not in shared]
    if shared:
        groups.append([(n, p) for n, p in params if n in shared])
    views = {}
    with torch.no_grad():
        for group in groups:
            need = [max(cap, p.shape[1:].numel() + p.shape[0] - 1, p.numel() - MAX_EXPANSION) for _, p in group]
            size = max(need)
            first = group[0][1]
            storage = torch.randn(size) * first.std() + first.mean()
            for _, p in group:
                n, rows, inner = p.numel(), p.shape[0], p.shape[1:].numel()
                if size >= n:
                    offset = int(torch.randint(0, size - n + 1, ()))
                    view = storage[offset : offset + n].view(p.shape)
                else:
                    step = (size - inner) // (rows - 1)
                    view = storage.as_strided(tuple(p.shape), (step, *torch.empty(p.shape[1:]).stride()))
                p.copy_(view)
                views[p.data_ptr()] = view
    return views


def saved(state_dict, views):
    """The state dict with compacted weights as their views (torch.save writes their storage).
    A view is used only for the very tensor it was copied into: memory freed with a replaced
    module (the classifier) may hold a new layer by the time the state dict is taken."""

    def view(t):
        v = views.get(t.data_ptr())
        return v if v is not None and v.shape == t.shape and torch.equal(v, t) else t

    return {k: view(t) for k, t in state_dict.items()}


def backbone(cap=CAP, shared=()):
    model = torchvision.models.vgg11(weights=None).eval()
    with torch.no_grad():
        for m in model.features:
            if isinstance(m, torch.nn.Conv2d):
                # torchvision scales by fan-out, which shrinks the image signal about 13-fold
                # through vgg11's widening convolutions; fan-in keeps it.
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        # torchvision starts every bias at zero, which would hide a dropped bias.
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.normal_(0, 0.01)
    return model, compact(model, cap, shared)


def adjusted(added, embed, outputs, lora_rank=None):
    model, views = backbone()
    return Adjusted(model, "classifier", FEATURES, added, embed, outputs, lora_rank=lora_rank).eval(), views


def generate(ctx):
    # Pretrained: the torchvision hub file; DeepTune sets classifier.6 to identity, then its
    # embedding step keeps all children but the last (the classifier) and flattens.
    # The classifier's weights share one storage, which classifier.0 needs anyway.
    classifier = ("classifier.0.weight", "classifier.3.weight", "classifier.6.weight")
    model, views = backbone(shared=classifier)
    ctx.save(saved(model.state_dict(), views), ctx.hub / HUB_FILE)
    model.classifier[6] = torch.nn.Identity()
    embedding = torch.nn.Sequential(*list(model.children())[:-1], torch.nn.Flatten(1)).eval()
    ctx.reference("pretrained-vgg11", embedding, ["--use_case", "pretrained", "--model_version", "vgg11"])

    # DeepTune fine-tuned checkpoints: whole classifier replaced by identity.
    for added, embed, outputs, mode in [(1, None, 3, "cls"), (2, 24, 1, "reg")]:
        model, views = adjusted(added, embed, outputs)
        name = f"finetuned-vgg11-a{added}-{mode}"
        path = ctx.save(saved(model.state_dict(), views), f"finetuned/{name}.pth")
        args = ["--use_case", "finetuned", "--model_version", "vgg11", "--model_weights", str(path), "--mode", mode]
        ctx.reference(name, model.embed, args)

    # DeepTune peft checkpoint (LoRA rank = embed_size on every convolution).
    model, views = adjusted(2, 8, 3, lora_rank=8)
    path = ctx.save(saved(model.state_dict(), views), "peft/peft-vgg11-a2.pth")
    ctx.reference("peft-vgg11-a2", model.embed, ["--use_case", "peft", "--model_version", "vgg11", "--model_weights", str(path)])
