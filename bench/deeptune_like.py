"""What DeepTune's `embed.vision.embed` does for a pretrained torchvision model, as a baseline: pandas reads
the whole Parquet file, a Dataset decodes with PIL per row, torchvision transforms, a DataLoader
(no workers on CPU, as DeepTune), the model, np.vstack of all embeddings, a DataFrame, Parquet.

Usage: deeptune_like.py DATA.parquet WEIGHTS.pth MODEL BATCH_SIZE OUT.parquet [DEVICE [WORKERS]]
DeepTune uses min(8, cpus // 2) workers and pinned memory on a GPU, no workers on the CPU.
"""

import io
import sys

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torchvision
from PIL import Image
from torch.utils.data import DataLoader, Dataset

TRANSFORM = torchvision.transforms.Compose([
    torchvision.transforms.Resize(size=(224, 224)),
    torchvision.transforms.ToTensor(),
    torchvision.transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
])


class ParquetImages(Dataset):
    def __init__(self, df):
        self.df = df

    def __len__(self):
        return len(self.df)

    def __getitem__(self, i):
        row = self.df.iloc[i]
        img = Image.open(io.BytesIO(row["images"])).convert("RGB")
        extras = row.drop(labels=["images", "labels"]).to_dict()
        return TRANSFORM(img), torch.tensor(row["labels"], dtype=torch.long), extras


def without_classifier(model, name):
    """The pretrained embedding deepembed computes: the classifier's input (VGG: its 4096-wide
    penultimate layer after the ReLU)."""
    if name.startswith("vgg"):
        model.classifier = model.classifier[:5]
    elif name.startswith("vit"):
        model.heads = nn.Identity()
    elif name.startswith("swin"):
        model.head = nn.Identity()
    elif name.startswith(("efficientnet", "densenet")):
        model.classifier = nn.Identity()
    else:
        model.fc = nn.Identity()
    return model


def main(data, weights, model_name, batch_size, out, device="cpu", workers=0):
    model = getattr(torchvision.models, model_name)(weights=None)
    model.load_state_dict(torch.load(weights, weights_only=True))
    model = without_classifier(model, model_name)
    model.eval().to(device)
    df = pd.read_parquet(data)
    loader = DataLoader(ParquetImages(df), batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=device != "cpu", persistent_workers=workers > 0)
    embeddings, labels, extras = [], [], []
    with torch.no_grad():
        for x, y, extra in loader:
            embeddings.append(model(x.to(device)).cpu().numpy())
            labels += y.numpy().tolist()
            for i in range(len(x)):
                extras.append({k: v[i].item() if hasattr(v[i], "item") else v[i] for k, v in extra.items()})
    result = pd.concat([pd.DataFrame(np.vstack(embeddings)), pd.DataFrame(labels, columns=["label"]), pd.DataFrame(extras)], axis=1)
    result.columns = [str(c) for c in result.columns]
    result.to_parquet(out, index=False)


if __name__ == "__main__":
    extra = sys.argv[6:]
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], extra[0] if extra else "cpu", int(extra[1]) if len(extra) > 1 else 0)
