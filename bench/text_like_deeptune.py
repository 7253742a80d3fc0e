"""What DeepTune's text embedding scripts do, as a baseline: pandas reads the whole file, the
transformers tokenizer pads every batch to 256 tokens, the model runs, the embeddings (BERT: the
[CLS] vector; GPT-2: the mean over real tokens) are stacked into a DataFrame and written.

Usage: text_like_deeptune.py bert|gpt2 DATA.parquet MODEL_DIR BATCH_SIZE OUT.parquet
"""

import sys

import numpy as np
import pandas as pd
import torch
from transformers import AutoTokenizer, BertModel, GPT2Model


def main(kind, data, model_dir, batch_size, out):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if kind == "gpt2":
        tokenizer.pad_token = tokenizer.eos_token
        model = GPT2Model.from_pretrained(model_dir).eval()
    else:
        model = BertModel.from_pretrained(model_dir).eval()
    df = pd.read_parquet(data)
    texts, labels = df["text"].tolist(), df["labels"].tolist()
    others = df.drop(columns=["text", "labels"])
    embeddings = []
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            inputs = tokenizer(texts[i:i + batch_size], padding="max_length", max_length=256, truncation=True, return_tensors="pt")
            h = model(**inputs).last_hidden_state
            if kind == "gpt2":
                m = inputs["attention_mask"].unsqueeze(-1).float()
                e = (h * m).sum(1) / m.sum(1).clamp(min=1e-6)
            else:
                e = h[:, 0, :]
            embeddings.append(e.numpy())
    result = pd.DataFrame(np.vstack(embeddings))
    result.columns = [str(c) for c in result.columns]
    result["labels"] = labels
    pd.concat([result, others.reset_index(drop=True)], axis=1).to_parquet(out, index=False)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
