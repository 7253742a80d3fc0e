"""Generates the GANDALF parity fixtures with pytorch-tabular itself.

Trains tiny GANDALF models for one epoch on random data (seeded) and saves each with
TabularModel.save_model, then computes reference embeddings the way pytorch-tabular sees the
data: TabularModel.load_model, the saved datamodule's own preprocessing
(prepare_inference_dataloader: saved category codes, saved scaler), then the model's embedding
layer and backbone in eval mode.

Writes, under OUT:
  <case>/model/ (or <case>/GANDALF_model/, DeepTune's layout)   the save_model directory
  <case>/eval.parquet       evaluation rows: model columns, the target, a grouper and a note column
  <case>/ref.f32            reference embeddings, row-major float32 (NaN where pytorch-tabular
                            gives NaN: rows with a missing continuous value)
  non_numeric.parquet       cls_mixed's eval rows with text in a continuous column
  box_cox_zero.parquet      reg_box_cox's eval rows with a zero, which Box-Cox cannot transform
  cases.json                what each case is and its shapes
"""

import contextlib
import io
import json
import tempfile
import logging
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)

from pytorch_tabular import TabularModel  # noqa: E402
from pytorch_tabular.config import DataConfig, OptimizerConfig, TrainerConfig  # noqa: E402
from pytorch_tabular.models import GANDALFConfig  # noqa: E402

TRAIN_ROWS = 240
EVAL_ROWS = 150  # more than two batches of 64: row order across batches is checked

CASES = {
    # Classification with string and integer categories; DeepTune's GANDALF_model/ layout.
    # Its eval data holds categories training never saw, missing categories and a missing
    # continuous value.
    "cls_mixed": dict(task="classification", continuous=["age", "dose", "score"], categorical=["site", "grade"], layout="GANDALF_model", unseen=True),
    # Regression on continuous columns only.
    "reg_continuous": dict(task="regression", continuous=["age", "dose", "score"], categorical=[], layout="model"),
    # Ghost batch norm on the continuous input (virtual_batch_size), more GFLU stages.
    "cls_virtual_batch": dict(task="classification", continuous=["age", "score"], categorical=["site"], layout="model", virtual_batch_size=16, gflu_stages=4),
    # Categories only, no continuous column.
    "reg_categorical": dict(task="regression", continuous=[], categorical=["site", "grade"], layout="model"),
    # DataConfig's continuous_feature_transform: scikit-learn's fitted quantile and power
    # transforms, before the scaler. Eval data reach beyond the training range (clipped tails)
    # and hold a missing continuous value.
    "cls_quantile_normal": dict(task="classification", continuous=["age", "dose", "score"], categorical=["site"], layout="model", unseen=True, transform="quantile_normal"),
    "reg_quantile_uniform": dict(task="regression", continuous=["age", "dose", "score"], categorical=[], layout="model", transform="quantile_uniform"),
    "cls_yeo_johnson": dict(task="classification", continuous=["age", "dose", "score"], categorical=["grade"], layout="model", unseen=True, transform="yeo-johnson"),
    # Box-Cox needs strictly positive values: a positive frame, and no scaler after it.
    "reg_box_cox": dict(task="regression", continuous=["age", "dose", "score"], categorical=["site"], layout="model", transform="box-cox", positive=True, normalize=False),
    # DataConfig's date_columns: calendar parts as categories, by frequency: a Parquet timestamp
    # in a named time zone by day, text with a strftime format by hour (its "date" suffix dropped
    # from the parts' names), ISO text with offsets by week. Eval dates include missing ones.
    "cls_dates": dict(task="classification", continuous=["age", "score"], categorical=["site"], layout="model", unseen=True,
                      dates=[["visit", "D", "%Y-%m-%d"], ["admit_date", "h", "%d/%m/%Y %H:%M"], ["week_of", "W", "ISO8601"]]),
}


def frame(rng: np.random.Generator, n: int, task: str, unseen: bool = False, positive: bool = False, dates: bool = False) -> pd.DataFrame:
    sites = np.array(["north", "south", "east", "west"])
    df = pd.DataFrame(
        {
            "age": rng.normal(50, 15, n),
            "dose": rng.integers(0, 40, n),  # an integer column: scaled as float64, as sklearn does
            "score": rng.normal(0, 1, n),
            "site": sites[rng.integers(0, 4, n)],
            "grade": rng.integers(1, 4, n),
        }
    )
    df["y"] = rng.integers(0, 3, n) if task == "classification" else df["age"] * 0.1 + rng.normal(0, 1, n)
    if positive:
        df["age"] = df["age"].abs() + 1
        df["dose"] = df["dose"] + 1
        df["score"] = np.exp(df["score"])
    df["cohort"] = np.where(rng.random(n) < 0.5, "A", "B")
    df["note"] = [f"row {i}" for i in range(n)]
    if dates:  # drawn for these cases only, so the others keep their data
        start = pd.Timestamp("2023-01-01")
        visit = start + pd.to_timedelta(rng.integers(0, 800 * 24, n), unit="h")
        df["visit"] = visit.tz_localize("UTC").tz_convert("Europe/Berlin")  # parts in Berlin time
        admit = start + pd.to_timedelta(rng.integers(0, 800 * 24 * 60, n), unit="min")
        df["admit_date"] = admit.strftime("%d/%m/%Y %H:%M")
        week = start + pd.to_timedelta(rng.integers(0, 800 * 24, n), unit="h")
        df["week_of"] = week.strftime("%Y-%m-%dT%H:%M:%S+02:00")
        if unseen:
            df.loc[5, "visit"] = pd.NaT
            df.loc[6, "admit_date"] = None
    if unseen:
        df.loc[3, "site"] = "mars"  # never seen in training: the unseen code 0
        df.loc[7, "grade"] = 9
        df.loc[11, "site"] = None  # missing: pytorch-tabular's missing code
        df.loc[20, "age"] = np.nan  # missing continuous: pytorch-tabular gives NaN embeddings
    return df


def train(case: dict, train_df: pd.DataFrame, seed: int) -> TabularModel:
    data_config = DataConfig(
        target=["y"],
        continuous_cols=case["continuous"],
        categorical_cols=case["categorical"],
        continuous_feature_transform=case.get("transform"),
        date_columns=case.get("dates", []),
        normalize_continuous_features=case.get("normalize", True),
    )
    trainer_config = TrainerConfig(
        max_epochs=1, batch_size=32, accelerator="cpu", progress_bar="none", checkpoints=None, load_best=False, early_stopping=None, seed=seed
    )
    model_config = GANDALFConfig(
        task=case["task"], gflu_stages=case.get("gflu_stages", 2), virtual_batch_size=case.get("virtual_batch_size"), seed=seed
    )
    model = TabularModel(data_config=data_config, model_config=model_config, optimizer_config=OptimizerConfig(), trainer_config=trainer_config, verbose=False)
    with contextlib.redirect_stdout(io.StringIO()):  # its model summary table
        model.fit(train=train_df, seed=seed)
    return model


def reference(model_dir: Path, eval_df: pd.DataFrame) -> np.ndarray:
    """pytorch-tabular's own view: saved preprocessing, embedding layer, backbone, eval mode."""
    model = TabularModel.load_model(str(model_dir))
    net = model.model.eval()
    loader = model.datamodule.prepare_inference_dataloader(eval_df, batch_size=64)
    out = []
    with torch.no_grad():
        for batch in loader:
            out.append(net.compute_backbone(net.embed_input(batch)).numpy())
    return np.concatenate(out).astype(np.float32)


def main(out: Path):
    out.mkdir(parents=True, exist_ok=True)
    # Lightning and pytorch-tabular write logs and temporary files into the working directory.
    with tempfile.TemporaryDirectory() as scratch, contextlib.chdir(scratch):
        generate(out)


def generate(out: Path):
    cases = {}
    for i, (name, case) in enumerate(CASES.items()):
        torch.manual_seed(i)
        rng = np.random.default_rng(100 + i)
        train_df = frame(rng, TRAIN_ROWS, case["task"], positive=case.get("positive", False), dates="dates" in case)
        model = train(case, train_df, seed=i)
        model_dir = out / name / case["layout"]
        model.save_model(str(model_dir))
        eval_df = frame(rng, EVAL_ROWS, case["task"], unseen=case.get("unseen", False), positive=case.get("positive", False), dates="dates" in case)
        eval_path = out / name / "eval.parquet"
        eval_df.to_parquet(eval_path, index=False)
        # The reference reads the file back, as a user's pandas would.
        ref = reference(model_dir, pd.read_parquet(eval_path))
        assert ref.shape[0] == EVAL_ROWS
        (out / name / "ref.f32").write_bytes(ref.tobytes())
        cases[name] = {
            **case,
            # Relative to OUT: the directory a user passes as --model_weights.
            "model_arg": name if case["layout"] == "GANDALF_model" else f"{name}/{case['layout']}",
            "eval": f"{name}/eval.parquet",
            "rows": EVAL_ROWS,
            "dims": int(ref.shape[1]),
            "nan_rows": sorted(int(r) for r in np.where(np.isnan(ref).any(axis=1))[0]),
        }
        if name == "cls_mixed":
            bad = eval_df.copy()
            bad["age"] = bad["age"].astype(str)
            bad.loc[5, "age"] = "abc"
            bad.to_parquet(out / "non_numeric.parquet", index=False)
        if name == "reg_box_cox":
            bad = eval_df.copy()
            bad.loc[9, "score"] = 0.0
            bad.to_parquet(out / "box_cox_zero.parquet", index=False)
    (out / "cases.json").write_text(json.dumps(cases, indent=1))
    print(f"tabular fixtures in {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve())
