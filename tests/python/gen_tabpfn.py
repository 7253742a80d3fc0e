"""Generates the TabPFN parity fixtures with tabpfn 6.2.0 and tabpfn-extensions themselves.

Builds tiny random TabPFN checkpoints with tabpfn's own classes (ModelConfig, get_architecture),
saved in the real format (torch.save of {state_dict, config, architecture_name}), then does
exactly what DeepTune does: fit a TabPFNClassifier/TabPFNRegressor on the train frame,
save_fitted_tabpfn_model, load_fitted_tabpfn_model, and
TabPFNEmbedding(n_fold=0).get_embeddings(X_train, y_train, X_eval, data_source="test")[0],
ensemble member 0. The features are every column but the target and the grouper: deepembed
leaves the grouper out on purpose (DeepTune would feed it to TabPFN). The --finetuning-mode
cases are joblib dumps of a fitted estimator whose model_path is a ModelSpecs object, as
DeepTune's trainer writes them (clone_model_for_evaluation, fit, joblib.dump); their weights
are the checkpoint's plus noise, as fine-tuning would leave them, and no file backs them.
Everything runs on the CPU (CUDA hidden): on a GPU tabpfn uses fp16 autocast and CUDA's randn.

Needs tests/python/requirements-tabpfn.txt in front of the venv:
    TABPFN_DISABLE_TELEMETRY=1 PYTHONPATH=.venv-tabpfn .venv/bin/python gen_tabpfn.py OUT

Writes, under OUT:
  cases.json                 {case: one-line description}, in generation order
  rng.json                   numpy Generator draws for the Rust RNG port (layout below)
  <case>/train.parquet       train rows: features, the grouper "patient_id" and "target"
  <case>/eval.parquet        eval rows, same columns (unseen categories and missing values in some)
  <case>/model.ckpt          the torch checkpoint (absent for the finetuned cases)
  <case>/model.tabpfn_fit    save_fitted_tabpfn_model's zip (the other cases), or
  <case>/finetuned.joblib    the joblib.dump of the fitted estimator (the finetuned cases)
  <case>/expected.parquet    member-0 embeddings of the eval rows in order: float32 columns
                             "0".."E-1"
  <case>/x_train.f64         member 0's preprocessed train matrix (executor_.X_trains[0]),
                             little-endian float64, row-major, info.x_train_shape
  <case>/x_eval.f64          the same for the eval rows (preprocessor_ then member 0's
                             transform, as get_embeddings does), info.x_eval_shape
  <case>/y_train.f64         member 0's train target (executor_.y_trains[0]: the permuted class
                             index, or the z-scored target), float64, n_train values
  <case>/args.json           the deepembed flags: train_df, eval_df, model_weights (relative
                             to the case folder), target_column, mode (cls|reg), grouper,
                             finetuning_mode (bool)
  <case>/info.json           what the test needs to know: the architecture (emsize, nhead,
                             features_per_group, nlayers, num_thinking_rows), n_features (model
                             inputs), n_train, n_eval, n_estimators, random_state, config
                             (default|minimal) and where its overrides live (init_params,
                             checkpoint, model_specs), s0 (member 0's seed), salt (fingerprint,
                             null without one), feature_permutation (null without the shuffle),
                             class_permutation (null: none), classes (sorted labels, as text),
                             inferred_categorical_indices (tabpfn's, original column indices),
                             bare_checkpoint_equivalent (true when --model_weights model.ckpt
                             alone, with tabpfn's default init params, gives the same result)

Deterministic: two runs write byte-identical files, except the .tabpfn_fit zips (file times)
and the joblib pickles (torch's legacy storage keys are memory addresses; set order follows
PYTHONHASHSEED), whose contents are the same.

The .tabpfn_fit names its checkpoint by ABSOLUTE path (init_params.json's model_path, as tabpfn
writes it): the fixtures are not relocatable; regenerate them rather than moving OUT.

Exactness (tabpfn's SVD is ARPACK, see the TabPFN spec): the default-config tables are small
(120-300 train rows, at most 7 columns reaching the SVD, so k=1), where a LAPACK-quality SVD gave
the same fingerprints; the minimal config has neither SVD nor fingerprint.

rng.json:
  "draws":     [{"seed", "method", "args", "values"}], each call on a FRESH default_rng(seed):
               method "integers" args {low, high, size (null: one value)}; "random" {size};
               "permutation" {n}; "choice" {a, size, replace}. "random" records also carry
               "bits": the float64 values' IEEE bit patterns as unsigned integers.
  "sequences": [{"seed", "calls": [{"method", "args", "values"(, "bits")}]}]: the same calls in
               the same order on ONE generator per seed (numpy keeps the spare half of a 64-bit
               draw across calls, so order matters).
  "member0_plans": [{"task", "random_state", "n_estimators", "n_classes" (null for reg),
               "class_shift" (shuffle|rotate|null), "seed" (s0), "class_permutation" (null for
               reg and for class_shift null: no permutation)}], each checked against tabpfn's
               own fitted estimator.
"""

import json
import logging
import os
import sys
import tempfile
import warnings
from dataclasses import asdict
from pathlib import Path

os.environ["CUDA_VISIBLE_DEVICES"] = ""  # CPU semantics; see the docstring
os.environ.setdefault("TABPFN_DISABLE_TELEMETRY", "1")

import joblib  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)

from tabpfn import TabPFNClassifier, TabPFNRegressor  # noqa: E402
from tabpfn.architectures import base as arch_base  # noqa: E402
from tabpfn.architectures.base.bar_distribution import FullSupportBarDistribution  # noqa: E402
from tabpfn.architectures.base.config import ModelConfig  # noqa: E402
from tabpfn.architectures.base.transformer import col_embedding_path as COL_EMBEDDING_PATH  # noqa: E402
from tabpfn.finetune_utils import clone_model_for_evaluation  # noqa: E402
from tabpfn.model_loading import load_fitted_tabpfn_model, save_fitted_tabpfn_model  # noqa: E402
from tabpfn.utils import fix_dtypes, validate_X_predict  # noqa: E402
from tabpfn_extensions.embedding import TabPFNEmbedding  # noqa: E402

TARGET = "target"
GROUPER = "patient_id"
I32MAX = 2**31 - 1

# The inference config with every stochastic and lossy step off: no SVD, no fingerprint, no
# shuffles, features passed through (cats first). With n_estimators=1.
MINIMAL = {
    "FINGERPRINT_FEATURE": False,
    "FEATURE_SHIFT_METHOD": None,
    "CLASS_SHIFT_METHOD": None,
    "POLYNOMIAL_FEATURES": "no",
    "PREPROCESS_TRANSFORMS": [
        {
            "name": "none",
            "categorical_name": "none",
            "append_original": False,
            "max_features_per_estimator": 500,
            "global_transformer_name": None,
            "differentiable": False,
        }
    ],
    "REGRESSION_Y_PREPROCESS_TRANSFORMS": [None],
}

TINY = dict(emsize=32, nhead=4, features_per_group=3, nlayers=2, nhid_factor=2, num_thinking_rows=4, seed=0)
# Other sizes: no thinking rows, groups of 2, three layers, 8-wide heads.
WIDER = dict(emsize=48, nhead=6, features_per_group=2, nlayers=3, nhid_factor=2, num_thinking_rows=0, seed=3)
# The released models' width and seed (emsize 192, seed 42): tabpfn then takes the first 2000
# positional draws from its packaged table tabpfn_col_embedding.pt. One layer keeps it quick.
RELEASED = dict(emsize=192, nhead=6, features_per_group=2, nlayers=1, nhid_factor=2, num_thinking_rows=4, seed=42)


# --------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------
def model_config(task: str, arch: dict) -> ModelConfig:
    return ModelConfig(**arch, max_num_classes=10 if task == "cls" else 0, num_buckets=0 if task == "cls" else 20)


def build_checkpoint(task: str, path: Path, seed: int, arch: dict, inference_config=None) -> None:
    torch.manual_seed(seed)
    cfg = model_config(task, arch)
    crit = FullSupportBarDistribution(torch.linspace(-4.0, 4.0, cfg.num_buckets + 1)) if task == "reg" else None
    model = arch_base.get_architecture(cfg, n_out=crit.num_bars if crit else cfg.max_num_classes, cache_trainset_representation=False)
    # tabpfn zero-initialises the attention output projections and mlp.linear2, which would make
    # every layer an identity + LayerNorm: give them random values.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("_w_out") or name.endswith("mlp.linear2.weight"):
                p.uniform_(-0.3, 0.3)
    sd = dict(model.state_dict())
    if crit is not None:
        sd.update({f"criterion.{k}": v for k, v in crit.state_dict().items()})
    ckpt = {"state_dict": sd, "config": asdict(cfg), "architecture_name": "base"}  # v2.5 style
    if inference_config is not None:
        ckpt["inference_config"] = inference_config
    torch.save(ckpt, path)


# --------------------------------------------------------------------------------------------
# tables (train and eval rows from one draw; the grouper is a patient id)
# --------------------------------------------------------------------------------------------
def split(df: pd.DataFrame, n_train: int):
    df.insert(0, GROUPER, [f"p{i // 3:04d}" for i in range(len(df))])
    return df.iloc[:n_train].reset_index(drop=True), df.iloc[n_train:].reset_index(drop=True)


def table_mixed(n_train: int, n_eval: int, task: str, seed: int):
    """Numbers, a column with NaN, a constant, a text category with missing values (tabpfn 6.2
    writes their NaN into the wrong column of the train matrix), an integer category (inferred
    categorical: fewer than 4 values, more than 100 train rows). Eval: unseen and missing
    categories."""
    rng = np.random.default_rng(seed)
    n = n_train + n_eval
    df = pd.DataFrame(
        {
            "num_a": rng.normal(size=n),
            "num_b": rng.exponential(size=n) * 10,
            "num_nan": np.where(rng.random(n) < 0.15, np.nan, rng.normal(size=n)),
            "const": np.full(n, 7.0),
            "site": rng.choice(np.array(["red", "green", "blue", None], dtype=object), size=n, p=[0.4, 0.3, 0.2, 0.1]),
            "grade": rng.integers(0, 3, size=n),
            "num_c": rng.uniform(-5, 5, size=n),
        }
    )
    if task == "cls":
        df[TARGET] = (df["num_a"] + (df["grade"] == 1) + rng.normal(size=n) * 0.5 > 0.3).astype(int) + (df["num_c"] > 2)
    else:
        df[TARGET] = df["num_a"] * 3 + df["num_c"] + rng.normal(size=n)
    df.loc[n_train + 2, "site"] = "purple"  # unseen text category
    df.loc[n_train + 4, "grade"] = 5  # unseen integer category
    return split(df, n_train)


def table_common(n_train: int, n_eval: int, task: str, seed: int):
    """A {0, 1, NaN} numeric category common enough for ordinal_very_common_categories_shuffled,
    6 text categories, upper-case text (sorts before "__MISSING__"), unseen eval categories; six
    text classes for classification (with random_state 0 and 8 members, member 0 then permutes
    both the classes and the {0, 1, NaN} column's codes)."""
    rng = np.random.default_rng(seed)
    n = n_train + n_eval
    df = pd.DataFrame(
        {
            "s6": rng.choice(list("pqrstu"), size=n),
            "b01": np.where(rng.random(n) < 0.1, np.nan, rng.integers(0, 2, size=n).astype(float)),
            "sU": rng.choice(np.array(["Alpha", "beta", "Gamma", None], dtype=object), size=n, p=[0.4, 0.3, 0.2, 0.1]),
            "x0": rng.normal(size=n),
            "x1": rng.lognormal(size=n),
            "x2": rng.normal(size=n),
        }
    )
    df.loc[n_train + 3, "sU"] = "Zeta"
    df.loc[n_train + 5, "s6"] = "unseen"
    df.loc[n_train + 7, "b01"] = 2.0
    if task == "cls":
        df[TARGET] = rng.choice(np.array(["ant", "bee", "cat", "dog", "eel", "fox"]), size=n)
    else:
        df[TARGET] = df["x0"] + 0.5 * (df["s6"] == "q") + rng.normal(size=n)
    return split(df, n_train)


def table_medium(n_train: int, n_eval: int, task: str, seed: int):
    """Many rows and more columns for batching. "flag" is constant on train apart from NaN and
    varies on eval: tabpfn decides which inputs are constant over train and ALL eval rows of the
    call, so a batched implementation must too."""
    rng = np.random.default_rng(seed)
    n = n_train + n_eval
    z = rng.normal(size=(n, 4))
    df = pd.DataFrame({f"f{i}": z @ rng.normal(size=4) + 0.3 * rng.normal(size=n) for i in range(14)})
    df.loc[rng.random(n) < 0.05, "f3"] = np.nan
    df["cat"] = rng.choice(list("abcdef"), size=n)
    flag = np.where(np.arange(n) % 7 == 0, np.nan, 5.0)
    flag[n_train:][np.arange(n_eval) % 3 == 0] = 6.0
    df["flag"] = flag
    if task == "cls":
        df[TARGET] = (z[:, 0] > 0).astype(int) + (z[:, 1] > 1)
    else:
        df[TARGET] = z[:, 0] + 0.1 * rng.normal(size=n)
    return split(df, n_train)


TABLES = {"mixed": table_mixed, "common": table_common, "medium": table_medium}

# name: task, table (kind, n_train, n_eval, seed), architecture, config, where the config's
# overrides live, and the model form.
CASES = {
    "cls_default": dict(task="cls", table=("mixed", 150, 40, 1), arch=TINY, config="default", form="fit",
                        what="classification, 3 classes, v2.5 default config, 8 members"),
    "cls_minimal": dict(task="cls", table=("mixed", 150, 40, 1), arch=TINY, config="minimal", where="init_params",
                        form="fit", what="classification, minimal config in init_params, 1 member"),
    "reg_default": dict(task="reg", table=("mixed", 150, 40, 2), arch=TINY, config="default", form="fit",
                        pandas_index=True,
                        what="regression, v2.5 default config (quantile), 8 members; files saved with pandas indexes"),
    "reg_minimal": dict(task="reg", table=("mixed", 150, 40, 2), arch=TINY, config="minimal", where="checkpoint",
                        form="fit", what="regression, minimal config in the checkpoint, 1 member"),
    "cls6_default": dict(task="cls", table=("common", 250, 50, 3), arch=TINY, config="default", form="fit",
                         what="classification, 6 text classes, shuffled ordinal codes, v2.5 default config"),
    "cls_medium_minimal": dict(task="cls", table=("medium", 1000, 400, 4), arch=WIDER, config="minimal",
                               where="init_params", form="fit",
                               what="1000 train x 400 eval rows, 16 features, wider model, minimal config"),
    "cls_released_minimal": dict(task="cls", table=("mixed", 150, 40, 7), arch=RELEASED, config="minimal",
                                 where="init_params", form="fit",
                                 what="emsize 192 and seed 42: tabpfn's packaged column-embedding table"),
    "cls_finetuned": dict(task="cls", table=("mixed", 150, 40, 5), arch=TINY, config="default", form="finetuned",
                          what="--finetuning-mode joblib, classification, default params"),
    "reg_finetuned": dict(task="reg", table=("common", 200, 40, 6), arch=TINY, config="default", form="finetuned",
                          what="--finetuning-mode joblib, regression, default params"),
}


# --------------------------------------------------------------------------------------------
# the RNG plan, with numpy's Generator itself (checked against tabpfn below)
# --------------------------------------------------------------------------------------------
def member0_plan(random_state: int, n_estimators: int, n_classes, class_shift):
    """The draws tabpfn's fit makes, in order, up to member 0's seed (EnsembleConfig.generate_*,
    then fit_preprocessing)."""
    rng = np.random.default_rng(random_state)
    rng.integers(0, I32MAX)  # static_seed
    start = rng.integers(0, 1000)
    rng.choice(np.arange(start, start + n_estimators), size=n_estimators, replace=False)  # feature shifts
    perm = None
    if n_classes is not None:
        if class_shift == "shuffle":
            noise = rng.random((n_estimators * 3, n_classes))
            uniqs = sorted({tuple(np.argsort(row).tolist()) for row in noise})
            perms = [u for u in uniqs for _ in range(n_estimators // len(uniqs))]
            rest = n_estimators % len(uniqs)
            if rest:
                perms += [uniqs[i] for i in rng.choice(len(uniqs), size=rest)]
            perm = list(perms[0])
        elif class_shift == "rotate":
            shifts = rng.permutation(n_classes)
            k = rng.choice(n_classes, size=n_estimators)[0]
            perm = np.roll(np.arange(n_classes), shifts[k]).tolist()
        # None: no draws, no permutation
    rng.integers(0, I32MAX)  # infer_random_state in fit_preprocessing
    seed = int(rng.integers(0, I32MAX, n_estimators)[0])
    return seed, perm


def fitted_plan(est):
    """Member 0's seed and class permutation as tabpfn's fitted estimator holds them."""
    seed = est.executor_.preprocessors[0].steps[-1].random_state  # ShuffleFeaturesStep
    perm = getattr(est.executor_.ensemble_configs[0], "class_permutation", None)
    return int(seed), (None if perm is None else [int(i) for i in perm])


def rng_fixture(cls_ckpt: Path, reg_ckpt: Path) -> dict:
    calls = [
        ("integers", {"low": 0, "high": I32MAX, "size": 5}),
        ("integers", {"low": 0, "high": 1000, "size": None}),
        ("integers", {"low": 0, "high": 65536, "size": None}),
        ("random", {"size": 5}),
        ("permutation", {"n": 1}),
        ("permutation", {"n": 2}),
        ("permutation", {"n": 7}),
        ("permutation", {"n": 100}),
        ("choice", {"a": 50, "size": 10, "replace": False}),
        ("choice", {"a": 20000, "size": 500, "replace": False}),  # numpy's tail-shuffle branch
        ("choice", {"a": 7, "size": 5, "replace": True}),
    ]

    def call(g, method, args):
        if method == "integers":
            out = g.integers(args["low"], args["high"], size=args["size"])
        elif method == "random":
            out = g.random(args["size"])
        elif method == "permutation":
            out = g.permutation(args["n"])
        else:
            out = g.choice(args["a"], size=args["size"], replace=args["replace"])
        rec = {"method": method, "args": args, "values": np.asarray(out).tolist()}
        if method == "random":
            rec["bits"] = [int(b) for b in np.asarray(out, dtype="<f8").view("<u8")]
        return rec

    seeds = [0, 1, 42, 2**31 - 2]
    draws = [{"seed": s, **call(np.random.default_rng(s), m, a)} for s in seeds for m, a in calls]
    sequences = []
    for s in seeds:
        g = np.random.default_rng(s)
        sequences.append({"seed": s, "calls": [call(g, m, a) for m, a in calls]})

    # Member-0 plans, each checked against a classifier/regressor tabpfn fits on a small table.
    plans = []
    wanted = [("cls", rs, n, c, "shuffle") for rs in (0, 42) for n, c in [(8, 2), (8, 3), (8, 5), (8, 10), (1, 2), (4, 7)]]
    wanted += [("cls", 0, 8, 3, "rotate"), ("cls", 7, 4, 7, "rotate"), ("cls", 0, 8, 3, None)]
    wanted += [("reg", 0, 8, None, None), ("reg", 42, 1, None, None)]
    rng = np.random.default_rng(99)
    for task, rs, n_est, n_classes, shift in wanted:
        seed, perm = member0_plan(rs, n_est, n_classes, shift)
        X = pd.DataFrame({"a": rng.normal(size=40), "b": rng.normal(size=40)})
        if task == "cls":
            y = np.arange(40) % n_classes
            est = TabPFNClassifier(model_path=str(cls_ckpt), device="cpu", n_estimators=n_est, random_state=rs,
                                   inference_config={"CLASS_SHIFT_METHOD": shift})
        else:
            y = rng.normal(size=40)
            est = TabPFNRegressor(model_path=str(reg_ckpt), device="cpu", n_estimators=n_est, random_state=rs)
        est.fit(X, y)
        assert fitted_plan(est) == (seed, perm), (task, rs, n_est, n_classes, shift, fitted_plan(est), seed, perm)
        plans.append({"task": task, "random_state": rs, "n_estimators": n_est, "n_classes": n_classes,
                      "class_shift": shift, "seed": seed, "class_permutation": perm})
    return {"draws": draws, "sequences": sequences, "member0_plans": plans}


# --------------------------------------------------------------------------------------------
# DeepTune's calls
# --------------------------------------------------------------------------------------------
def features(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(columns=[TARGET, GROUPER])


def embed(est, task: str, train_df: pd.DataFrame, eval_df: pd.DataFrame) -> np.ndarray:
    """embed/tabular/tabpfn_embeddings.py: member 0 of TabPFNEmbedding(n_fold=0)."""
    kw = {"tabpfn_clf": est} if task == "cls" else {"tabpfn_reg": est}
    emb = TabPFNEmbedding(n_fold=0, **kw).get_embeddings(features(train_df), train_df[TARGET], features(eval_df), data_source="test")
    return emb[0]


def make_case(name: str, case: dict, case_dir: Path, scratch: Path) -> str:
    task = case["task"]
    Est = TabPFNClassifier if task == "cls" else TabPFNRegressor
    kind, n_train, n_eval, seed = case["table"]
    train_df, eval_df = TABLES[kind](n_train, n_eval, task, seed)
    if case.get("pandas_index"):
        # As after a shuffle or a split: pandas saves a non-range index as a column
        # (__index_level_0__, or its name) and reads it back as the index, not a feature.
        train_df.index = pd.Index(np.arange(len(train_df)) * 7 + 3)
        eval_df.index = pd.Index(np.arange(len(eval_df)) * 5 + 1, name="row_id")
    train_df.to_parquet(case_dir / "train.parquet", index=bool(case.get("pandas_index")))
    eval_df.to_parquet(case_dir / "eval.parquet", index=bool(case.get("pandas_index")))
    # The reference reads the files back, as DeepTune's pandas would.
    train_df = pd.read_parquet(case_dir / "train.parquet")
    eval_df = pd.read_parquet(case_dir / "eval.parquet")
    X_tr, y_tr = features(train_df), train_df[TARGET]

    minimal = case["config"] == "minimal"
    where = case.get("where")
    init_config = MINIMAL if minimal and where == "init_params" else None
    ckpt_config = MINIMAL if minimal and where == "checkpoint" else None
    n_est = 1 if minimal else 8
    default_params = not minimal  # only model_path and device given: tabpfn's defaults otherwise

    if case["form"] == "fit":
        ckpt = case_dir / "model.ckpt"
        build_checkpoint(task, ckpt, 10 + seed, case["arch"], ckpt_config)
        if default_params:
            trained = Est(model_path=str(ckpt), device="cpu")
        else:
            trained = Est(model_path=str(ckpt), device="cpu", n_estimators=n_est, random_state=0, inference_config=init_config)
        trained.fit(X_tr, y_tr)  # DeepTune's trainer
        weights = "model.tabpfn_fit"
        save_fitted_tabpfn_model(trained, case_dir / weights)
        est = load_fitted_tabpfn_model(case_dir / weights, device="cpu")
    else:
        # DeepTune's finetune_tabpfn: a fine-tuned estimator, clone_model_for_evaluation, fit, dump.
        ckpt = scratch / f"{name}.ckpt"
        build_checkpoint(task, ckpt, 10 + seed, case["arch"])
        tuned = Est(model_path=str(ckpt), device="cpu", n_estimators=2, ignore_pretraining_limits=True)
        tuned.fit(X_tr, y_tr)
        torch.manual_seed(seed)
        with torch.no_grad():  # what fine-tuning leaves: weights that are no checkpoint's
            for p in tuned.models_[0].parameters():
                p.add_(0.05 * torch.randn_like(p))
        evaluator = clone_model_for_evaluation(tuned, {}, Est)
        evaluator.fit(X_tr, y_tr)
        weights = "finetuned.joblib"
        joblib.dump(evaluator, case_dir / weights)
        ckpt.unlink()
        est = joblib.load(case_dir / weights)
        n_est = est.n_estimators

    expected = embed(est, task, train_df, eval_df)
    assert expected.shape == (n_eval, case["arch"]["emsize"]) and expected.dtype == np.float32, expected.shape
    assert np.isfinite(expected).all()
    pd.DataFrame(expected, columns=[str(i) for i in range(expected.shape[1])]).to_parquet(case_dir / "expected.parquet", index=False)

    # Member 0's intermediates, from the estimator get_embeddings refitted.
    ex = est.executor_
    x_train = np.ascontiguousarray(ex.X_trains[0], dtype="<f8")
    X_ev = fix_dtypes(validate_X_predict(features(eval_df), est), cat_indices=est.categorical_features_indices)
    x_eval = np.ascontiguousarray(ex.preprocessors[0].transform(est.preprocessor_.transform(X_ev)).X, dtype="<f8")
    y_train = np.ascontiguousarray(ex.y_trains[0], dtype="<f8")
    assert x_train.shape[0] == n_train and x_eval.shape == (n_eval, x_train.shape[1]) and y_train.shape == (n_train,)
    (case_dir / "x_train.f64").write_bytes(x_train.tobytes())
    (case_dir / "x_eval.f64").write_bytes(x_eval.tobytes())
    (case_dir / "y_train.f64").write_bytes(y_train.tobytes())

    # The plan deepembed must derive, against the fitted estimator's.
    n_classes = len(est.classes_) if task == "cls" else None
    shift = est.inference_config_.CLASS_SHIFT_METHOD if task == "cls" else None
    s0, class_perm = member0_plan(0, n_est, n_classes, shift)
    assert fitted_plan(est) == (s0, class_perm), (name, fitted_plan(est), s0, class_perm)

    steps = {type(s).__name__: s for s in ex.preprocessors[0].steps}
    fingerprint = steps.get("AddFingerprintFeaturesStep")
    permutation = getattr(steps["ShuffleFeaturesStep"], "index_permutation_", None)
    if permutation is not None:
        permutation = [int(i) for i in np.asarray(permutation)]
        if permutation == list(range(len(permutation))) and shift is None and est.inference_config_.FEATURE_SHIFT_METHOD is None:
            permutation = None
    args = {
        "train_df": "train.parquet",
        "eval_df": "eval.parquet",
        "model_weights": weights,
        "target_column": TARGET,
        "mode": task,
        "grouper": GROUPER,
        "finetuning_mode": case["form"] == "finetuned",
    }
    arch = case["arch"]
    info = {
        "what": case["what"],
        **{k: arch[k] for k in ("emsize", "nhead", "features_per_group", "nlayers", "num_thinking_rows")},
        "n_features": int(X_tr.shape[1]),
        "n_train": n_train,
        "n_eval": n_eval,
        "n_estimators": int(n_est),
        "random_state": 0,
        "config": case["config"],
        "config_in": where if minimal else ("model_specs" if case["form"] == "finetuned" else None),
        "s0": s0,
        "salt": None if fingerprint is None else int(fingerprint.rnd_salt_),
        "feature_permutation": permutation,
        "class_permutation": class_perm,
        "classes": [str(c) for c in est.classes_] if task == "cls" else None,
        "inferred_categorical_indices": [int(i) for i in est.inferred_categorical_indices_],
        "x_train_shape": list(x_train.shape),
        "x_eval_shape": list(x_eval.shape),
        "bare_checkpoint_equivalent": case["form"] == "fit" and default_params,
        # The packaged table this model reads (deepembed is pointed at tabpfn's own copy).
        "column_table": str(COL_EMBEDDING_PATH) if arch["emsize"] == 192 and arch["seed"] == 42 else None,
    }
    (case_dir / "args.json").write_text(json.dumps(args, indent=1) + "\n")
    (case_dir / "info.json").write_text(json.dumps(info, indent=1) + "\n")
    return case["what"]


def main(out: Path):
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    cases = {}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        for name, case in CASES.items():
            case_dir = out / name
            case_dir.mkdir(parents=True, exist_ok=True)
            cases[name] = make_case(name, case, case_dir, scratch)
        build_checkpoint("cls", scratch / "cls.ckpt", 0, TINY)
        build_checkpoint("reg", scratch / "reg.ckpt", 0, TINY)
        (out / "rng.json").write_text(json.dumps(rng_fixture(scratch / "cls.ckpt", scratch / "reg.ckpt")) + "\n")
    (out / "cases.json").write_text(json.dumps(cases, indent=1) + "\n")
    print(f"tabpfn fixtures in {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve())
