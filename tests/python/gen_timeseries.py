"""Generates the DeepAR parity fixtures with pytorch-forecasting itself.

Trains tiny DeepAR models (seeded, one epoch of three batches) the way DeepTune's
trainers/timeseries/train_deepar.py does (hourly time_idx from the earliest timestamp, a constant
`group` column when there are no group ids, TorchNormalizer on the target, NormalDistributionLoss)
and saves each as a Lightning checkpoint. Further cases train with pytorch-forecasting's other
target normalisers: its default ("auto", which picks an EncoderNormalizer or a GroupNormalizer
with a log or relu transformation from the training target), GroupNormalizers by one and two
columns (scale_by_group, robust, uncentred), EncoderNormalizers (robust, max_length, center=False)
and every transformation; with the inputs pytorch-forecasting adds per sample (relative time
index, encoder length, target scales); with other scalers for the other inputs (RobustScaler,
GroupNormalizer, EncoderNormalizer); with lags of the target, of inputs and of a category; with a
variable group of categories; with constants for missing hours (constant_fill_strategy); with
shorter windows (min_encoder_length); with two targets; and on pytorch-forecasting's own integer
time index. The reference embeddings are pytorch-forecasting's own
view of the evaluation rows: DeepAR.load_from_checkpoint, TimeSeriesDataSet.from_parameters with
the checkpoint's dataset_parameters (its fitted scalers, target normalizer and category encoders,
not refitted), the model's forward in eval mode, and the output of its last RNN call (the decoder
step: the top layer's state at the row, having seen max_encoder_length rows of history; of the
longest sample, where several end at a row).

pytorch-forecasting's DeepAR accepts no time-varying unknown input but the target ("Encoder and
decoder variables have to be the same apart from target variable"), so a DeepTune checkpoint never
has one: spo2 and posture are time-varying *known* here.

Writes, under OUT:
  <case>/model/deepar.ckpt   the checkpoint (state_dict, hyper_parameters, dataset_parameters)
  <case>/eval.parquet        evaluation rows (no pandas index column)
  <case>/expected.parquet    one row per eval.parquet row, same order: emb_0..emb_{H-1} (float32),
                             the target (float32, the row's own value), is_padded (bool: no sample
                             ends at the row, embedding zeros)
  <case>/args.json           the deepembed flags for the case, plus the model's shape for information
  cases.json                 the cases, their shapes and padded rows
"""

import contextlib
import json
import logging
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)

import lightning.pytorch as pl  # noqa: E402
from pytorch_forecasting import DeepAR, TimeSeriesDataSet  # noqa: E402
from pytorch_forecasting.data.encoders import EncoderNormalizer, GroupNormalizer, MultiNormalizer, TorchNormalizer  # noqa: E402
from pytorch_forecasting.metrics import MultiLoss, NormalDistributionLoss  # noqa: E402
from sklearn.preprocessing import RobustScaler, StandardScaler  # noqa: E402

TIME = "timestamp"
TARGET = "hr"

# Each case: the network, the frame's `style` (single series; several patients with statics and
# categories; several series with gaps), the target's `shape` and the `normalizer` (a factory, or
# "auto" for pytorch-forecasting's default) with the class and transformation it must resolve to.
CASES = {
    # DeepTune's default single series: no group ids, so training gets a constant `group` column
    # and eval.parquet has none. Text timestamps on the hour, rows in time order.
    "lstm1_single": dict(
        cell_type="LSTM", rnn_layers=1, hidden_size=8, max_encoder_length=4, group_ids=None, style="single",
        time_varying_known_reals=["dose"],
    ),
    # DeepTune's single series with a target normaliser by its constant `group` column, which
    # eval.parquet does not have: the column DeepTune adds is what the scales are read by.
    "gru1_single_group_normaliser": dict(
        cell_type="GRU", rnn_layers=1, hidden_size=5, max_encoder_length=4, group_ids=None, style="single",
        normalizer=lambda: GroupNormalizer(groups=["group"]),
        time_varying_known_reals=["dose"],
    ),
    # Several series, one of them new (group ids are not model inputs), statics, a known
    # category; Parquet timestamps; rows shuffled across series and time.
    "gru2_multi": dict(
        cell_type="GRU", rnn_layers=2, hidden_size=6, max_encoder_length=5, group_ids=["patient"], style="multi",
        static_categoricals=["ward"], static_reals=["age"], time_varying_known_categoricals=["shift"],
        time_varying_known_reals=["dose", "spo2"],
    ),
    # Missing hours (forward-filled by pytorch-forecasting), timestamps off the hour (the floor in
    # time_idx matters), time_idx itself an input (reset by linspace over filled gaps); series
    # interleaved round robin.
    "lstm2_gaps": dict(
        cell_type="LSTM", rnn_layers=2, hidden_size=10, max_encoder_length=6, group_ids=["patient"], style="gaps",
        time_varying_known_categoricals=["posture"], time_varying_known_reals=["time_idx", "dose"],
    ),
    # pytorch-forecasting's default normaliser on a skewed positive target with windows over 20:
    # an EncoderNormalizer fitted on each window's encoder, in log space. A new series in eval.
    "gru1_auto_encoder_log": dict(
        cell_type="GRU", rnn_layers=1, hidden_size=6, max_encoder_length=24, group_ids=["patient"], style="multi",
        shape="lognormal", normalizer="auto", resolves=("EncoderNormalizer", "log"),
        static_reals=["age"], time_varying_known_reals=["dose"],
    ),
    # The default on a positive, unskewed target with short windows: one GroupNormalizer over all
    # rows (no groups), relu. pytorch-forecasting then codes the group ids, so eval has no new one.
    "lstm1_auto_group_relu": dict(
        cell_type="LSTM", rnn_layers=1, hidden_size=7, max_encoder_length=5, group_ids=["patient"], style="multi",
        normalizer="auto", resolves=("GroupNormalizer", "relu"), known_series_only=True,
        static_categoricals=["ward"], time_varying_known_reals=["dose"],
    ),
    # A center and scale per patient, softplus.
    "gru2_group_softplus": dict(
        cell_type="GRU", rnn_layers=2, hidden_size=5, max_encoder_length=5, group_ids=["patient"], style="multi",
        shape="lognormal", normalizer=lambda: GroupNormalizer(groups=["patient"], transformation="softplus"),
        known_series_only=True, time_varying_known_reals=["dose", "spo2"],
    ),
    # By two columns, in another order than the group ids (a pandas MultiIndex of codes), robust,
    # uncentred. pytorch-forecasting takes a GroupNormalizer's columns from the group ids only.
    "lstm1_group2_robust": dict(
        cell_type="LSTM", rnn_layers=1, hidden_size=6, max_encoder_length=4, group_ids=["patient", "ward"],
        style="multi", normalizer=lambda: GroupNormalizer(groups=["ward", "patient"], method="robust", center=False),
        known_series_only=True, time_varying_known_reals=["dose"],
    ),
    # scale_by_group: the geometric mean of each column's scales, log1p.
    "gru1_group_by_group_log1p": dict(
        cell_type="GRU", rnn_layers=1, hidden_size=6, max_encoder_length=5, group_ids=["patient", "ward"],
        style="multi", normalizer=lambda: GroupNormalizer(
            groups=["patient", "ward"], scale_by_group=True, transformation="log1p"
        ),
        known_series_only=True, time_varying_known_reals=["dose"],
    ),
    # Fitted on each window: robust quantiles from the last 8 (center) and 5 (scale) encoder
    # steps, sqrt, across forward-filled gaps.
    "lstm1_encoder_robust_sqrt": dict(
        cell_type="LSTM", rnn_layers=1, hidden_size=8, max_encoder_length=10, group_ids=["patient"], style="gaps",
        normalizer=lambda: EncoderNormalizer(
            method="robust", max_length=[8, 5], transformation="sqrt", method_kwargs={"lower": 0.1, "upper": 0.9}
        ),
        time_varying_known_reals=["dose"],
    ),
    # Fitted on each window's last 6 steps, logit of a fraction, not centred.
    "gru1_encoder_logit": dict(
        cell_type="GRU", rnn_layers=1, hidden_size=5, max_encoder_length=8, group_ids=None, style="single",
        shape="fraction", normalizer=lambda: EncoderNormalizer(transformation="logit", center=False, max_length=6),
        time_varying_known_reals=["dose"],
    ),
    # One robust center and scale, x + 1.
    "lstm1_torch_count_robust": dict(
        cell_type="LSTM", rnn_layers=1, hidden_size=6, max_encoder_length=4, group_ids=None, style="single",
        normalizer=lambda: TorchNormalizer(method="robust", transformation="count"),
        time_varying_known_reals=["dose"],
    ),
    # pytorch-forecasting's own integer time index (as in its DeepAR tutorial), taken as it is:
    # eval starts at 150, after training's; time_idx is an input; gaps; the series id is also a
    # static category; the default normaliser (a GroupNormalizer without transformation, as the
    # target is not positive).
    "lstm1_integer_time_idx": dict(
        cell_type="LSTM", rnn_layers=1, hidden_size=6, max_encoder_length=6, group_ids=["patient"], style="gaps",
        integer_time=True, shape="centred", normalizer="auto", resolves=("GroupNormalizer", None),
        static_categoricals=["patient"], time_varying_known_reals=["time_idx", "dose"],
    ),
    # The inputs pytorch-forecasting adds per sample: relative time index, encoder length, and
    # the target normaliser's center and scale (a GroupNormalizer's per patient, log).
    "gru1_group_added_inputs": dict(
        cell_type="GRU", rnn_layers=1, hidden_size=6, max_encoder_length=5, group_ids=["patient"], style="multi",
        normalizer=lambda: GroupNormalizer(groups=["patient"], transformation="log"), known_series_only=True,
        dataset=dict(add_relative_time_idx=True, add_target_scales=True, add_encoder_length=True),
    ),
    # The same with an EncoderNormalizer: its center and scale are each window's.
    "lstm1_encoder_added_inputs": dict(
        cell_type="LSTM", rnn_layers=1, hidden_size=6, max_encoder_length=22, group_ids=["patient"], style="multi",
        shape="lognormal", normalizer="auto", resolves=("EncoderNormalizer", "log"),
        dataset=dict(add_relative_time_idx=True, add_target_scales=True), time_varying_known_reals=["dose"],
    ),
    # Other scalers than StandardScaler for the other inputs: each window's own (dose), a
    # GroupNormalizer by patient, keyed by the patients' names as the dataset does not code them
    # (spo2; the new patient takes the medians), scikit-learn's RobustScaler (age).
    "gru1_covariate_scalers": dict(
        cell_type="GRU", rnn_layers=1, hidden_size=6, max_encoder_length=5, group_ids=["patient"], style="multi",
        dataset=dict(scalers={
            "dose": EncoderNormalizer(),
            "spo2": GroupNormalizer(groups=["patient"], transformation="softplus"),
            "age": RobustScaler(),
        }),
        static_categoricals=["ward"], static_reals=["age"], time_varying_known_reals=["dose", "spo2"],
    ),
    # With a GroupNormalizer on the target the dataset codes the group ids: a GroupNormalizer by
    # a category (ward) on dose, an uncentred RobustScaler on age, and spo2 fitted on each
    # window's last 3 steps, in log space.
    "lstm1_covariate_normalisers_coded": dict(
        cell_type="LSTM", rnn_layers=1, hidden_size=6, max_encoder_length=5, group_ids=["patient"], style="multi",
        normalizer=lambda: GroupNormalizer(groups=["patient"]), known_series_only=True,
        dataset=dict(scalers={
            "dose": GroupNormalizer(groups=["ward"], method="robust"),
            "age": RobustScaler(with_centering=False, quantile_range=(10.0, 90.0)),
            "spo2": EncoderNormalizer(transformation="log", max_length=3),
        }),
        static_categoricals=["ward"], static_reals=["age"], time_varying_known_reals=["dose", "spo2"],
    ),
    # target_normalizer=None: TorchNormalizer(method="identity"), the target as it is.
    "gru1_no_normalizer": dict(
        cell_type="GRU", rnn_layers=1, hidden_size=6, max_encoder_length=6, group_ids=["patient"], style="gaps",
        shape="fraction", normalizer=None, resolves=("TorchNormalizer", None), time_varying_known_reals=["dose"],
    ),
    # Lags (pytorch-forecasting's `lags`): the target's own, one and three rows back within the
    # series, through a GroupNormalizer per patient; a category's, which adds an input no
    # embedding reads but drops each series' first four rows, as the largest lag does.
    "lstm1_lags_group": dict(
        cell_type="LSTM", rnn_layers=1, hidden_size=6, max_encoder_length=5, group_ids=["patient"], style="multi",
        normalizer=lambda: GroupNormalizer(groups=["patient"]), known_series_only=True,
        dataset=dict(lags={"hr": [1, 3], "shift": [4]}),
        static_reals=["age"], time_varying_known_categoricals=["shift"], time_varying_known_reals=["dose"],
    ),
    # Lags are rows, not hours: across gaps, the target two rows back and dose one and three rows
    # back, each normalised with its own normaliser's fit on the window (EncoderNormalizers).
    "gru1_lags_encoder_gaps": dict(
        cell_type="GRU", rnn_layers=1, hidden_size=7, max_encoder_length=6, group_ids=["patient"], style="gaps",
        normalizer=lambda: EncoderNormalizer(), dataset=dict(lags={"hr": [2], "dose": [1, 3]}, scalers={"dose": EncoderNormalizer(transformation="relu")}),
        time_varying_known_reals=["dose"],
    ),
    # An unscaled input lagged as it is, on the integer time index, the target under one log
    # GroupNormalizer.
    "gru1_lags_integer_unscaled": dict(
        cell_type="GRU", rnn_layers=1, hidden_size=5, max_encoder_length=4, group_ids=["patient"], style="gaps",
        integer_time=True, shape="lognormal", normalizer=lambda: GroupNormalizer(transformation="log"),
        dataset=dict(lags={"hr": [1], "dose": [2]}, scalers={"dose": None}), time_varying_known_reals=["dose"],
    ),
    # A variable group (pytorch-forecasting's `variable_groups`, as in its tutorials' special
    # days): two category columns sharing one encoder, their embedding rows summed.
    "gru1_variable_group": dict(
        cell_type="GRU", rnn_layers=1, hidden_size=6, max_encoder_length=5, group_ids=["patient"], style="multi",
        special_days=True, dataset=dict(variable_groups={"special": ["holiday", "event"]}),
        static_categoricals=["ward"], time_varying_known_categoricals=["shift", "special"],
        time_varying_known_reals=["dose"],
    ),
    # constant_fill_strategy: hours missing inside a window take constants instead of the latest
    # row's values (scaled, normalised and coded as the dataset does); other inputs forward-fill.
    "lstm1_constant_fill": dict(
        cell_type="LSTM", rnn_layers=1, hidden_size=7, max_encoder_length=6, group_ids=["patient"], style="gaps",
        dataset=dict(constant_fill_strategy={"hr": 75.0, "dose": 2.0, "posture": "sitting"}),
        time_varying_known_categoricals=["posture"], time_varying_known_reals=["dose"],
    ),
    # The target's constant joins the encoder an EncoderNormalizer is fitted on.
    "gru1_constant_fill_encoder": dict(
        cell_type="GRU", rnn_layers=1, hidden_size=6, max_encoder_length=8, group_ids=["patient"], style="gaps",
        normalizer=lambda: EncoderNormalizer(), dataset=dict(constant_fill_strategy={"hr": 80.0}),
        time_varying_known_reals=["dose"],
    ),
    # min_encoder_length < max_encoder_length: rows without a full window get the longest
    # shorter one pytorch-forecasting's index has, across gaps; the time index as an input.
    "lstm1_short_windows_gaps": dict(
        cell_type="LSTM", rnn_layers=1, hidden_size=6, max_encoder_length=6, group_ids=["patient"], style="gaps",
        dataset=dict(min_encoder_length=2), time_varying_known_reals=["time_idx", "dose"],
    ),
    # The same in series without gaps, with the inputs that follow each window's length (relative
    # time index, encoder length), a normaliser fitted on each window, and a lag of the target
    # (the index then starts at each series' third row).
    "gru1_short_windows_added": dict(
        cell_type="GRU", rnn_layers=1, hidden_size=6, max_encoder_length=8, group_ids=["patient"], style="multi",
        normalizer=lambda: EncoderNormalizer(),
        dataset=dict(min_encoder_length=3, add_relative_time_idx=True, add_encoder_length=True, lags={"hr": [2]}),
        time_varying_known_reals=["dose"],
    ),
    # Two targets (a MultiNormalizer: one fitted once, one on each window), each teacher-forced,
    # each with its normaliser's center and scale as inputs; both written.
    "lstm1_two_targets": dict(
        cell_type="LSTM", rnn_layers=1, hidden_size=6, max_encoder_length=6, group_ids=["patient"], style="multi",
        targets=["hr", "spo2"], normalizer=lambda: MultiNormalizer([TorchNormalizer(), EncoderNormalizer()]),
        known_series_only=True, dataset=dict(add_target_scales=True),
        static_reals=["age"], time_varying_known_reals=["dose"],
    ),
}
LISTS = [
    "static_categoricals", "static_reals", "time_varying_known_categoricals",
    "time_varying_unknown_categoricals", "time_varying_known_reals", "time_varying_unknown_reals",
]

# name -> (ward, age) for gru2_multi; p9 is only in the evaluation data.
PATIENTS = {"p1": ("A", 61.0), "p2": ("B", 45.0), "p3": ("A", 72.0), "p4": ("C", 38.0), "p9": ("B", 55.0)}
POSTURES = np.array(["lying", "sitting", "standing"])


def series(rng, name: str, case: dict, start: pd.Timestamp, hours: np.ndarray, shift: float) -> pd.DataFrame:
    """One patient's rows at the given hours after start; `shift` moves the distribution."""
    n = len(hours)
    style = case["style"]
    ts = start + pd.to_timedelta(hours, unit="h")
    if style == "gaps":
        # Off the hour by 17:00 to 58:59; make_frame puts the earliest row at exactly :17:00.
        ts = ts + pd.to_timedelta(17 * 60 + rng.integers(0, 42 * 60, n), unit="s")
    dose = rng.normal(2.0 + shift, 1.0, n)
    df = pd.DataFrame({TIME: ts, "dose": dose})
    if style != "single":
        df.insert(0, "patient", name)
    hr = 70.0 + 3.0 * dose + np.cumsum(rng.normal(0, 1, n)) * 0.5 + rng.normal(0, 1, n) + shift
    if style == "multi":
        ward, age = PATIENTS[name]
        df["ward"] = ward
        df["age"] = age + 2 * shift
        df["shift"] = np.where((ts.hour >= 7) & (ts.hour < 19), "day", "night")
        df["spo2"] = rng.normal(96.0 - shift, 1.5, n)
        hr = hr + 0.1 * (df["age"].to_numpy() - 50) - 0.5 * (df["spo2"].to_numpy() - 96)
    if style == "gaps":
        posture = POSTURES[rng.integers(0, 3, n)]
        df["posture"] = posture
        hr = hr + np.select([posture == "lying", posture == "standing"], [-4.0, 6.0], 0.0)
    if case.get("special_days"):  # drawn for these cases only, so the others keep their data
        df["holiday"] = rng.choice(["-", "-", "-", "easter", "xmas"], n)
        df["event"] = rng.choice(["-", "-", "fair", "strike"], n)
    shape = case.get("shape", "level")
    if shape == "lognormal":  # positive and skewed (sample skew well over 2.5)
        hr = 4.0 * np.exp(rng.normal(0, 1.0, n) + 0.05 * (hr - 75.0))
    elif shape == "centred":  # around 0, either sign
        hr = (hr - hr.mean()) / 4.0
    elif shape == "fraction":  # in (0, 1), around 0.5
        hr = 1.0 / (1.0 + np.exp(-(hr - hr.mean()) / 6.0))
    df[TARGET] = hr
    return df


def with_gaps(rng, length: int, gaps: int) -> np.ndarray:
    """Hours 0..length-1 without `gaps` of them (never the first; one pair of adjacent hours)."""
    drop = set(rng.choice(np.arange(2, length - 2), gaps - 2, replace=False).tolist())
    pair = int(rng.integers(8, length - 3))
    drop |= {pair, pair + 1}
    return np.array([h for h in range(length) if h not in drop])


def make_frame(rng, case: dict, train: bool) -> pd.DataFrame:
    shift = 0.0 if train else 5.0  # eval differs: scalers refitted on it would visibly differ
    start = pd.Timestamp("2024-01-01") if train else pd.Timestamp("2024-03-01")
    # Eval series long enough that most rows have a window.
    longer = 0 if train else max(0, case["max_encoder_length"] - 6) * 2
    style = case["style"]
    if style == "single":
        df = series(rng, "0", case, start, np.arange(150 if train else 60 + longer), shift)
        df[TIME] = df[TIME].dt.strftime("%Y-%m-%d %H:%M:%S")
        return df
    if style == "multi":
        # (patient, first hour, rows): eval has a new patient and series of different lengths.
        plan = [("p1", 0, 120), ("p2", 2, 110), ("p3", 5, 115), ("p4", 1, 120)] if train else [("p1", 3, 70), ("p3", 0, 48), ("p4", 6, 80), ("p9", 2, 55)]
        if case.get("known_series_only") and not train:
            plan = [p for p in plan if p[0] != "p9"]
        parts = [series(rng, p, case, start, first + np.arange(n + longer), shift) for p, first, n in plan]
        return pd.concat(parts, ignore_index=True)
    # gaps: series start at different hours, so time_idx (an input) is global, not per series.
    plan = [("q1", 0, 120, 8), ("q2", 4, 110, 8), ("q3", 9, 115, 8)] if train else [("q1", 0, 72, 5), ("q2", 3, 60, 4), ("q3", 7, 78, 6)]
    parts = [series(rng, p, case, start, first + with_gaps(rng, length + longer, gaps), shift) for p, first, length, gaps in plan]
    df = pd.concat(parts, ignore_index=True)
    if case.get("integer_time"):  # pytorch-forecasting's own index, from 150 in eval
        hours = (df[TIME] - start).dt.total_seconds() // 3600
        return df.drop(columns=TIME).assign(time_idx=hours.astype(np.int64) + (0 if train else 150))
    earliest = df[TIME].idxmin()
    df.loc[earliest, TIME] = df.loc[earliest, TIME].floor("h") + pd.Timedelta(minutes=17)
    df[TIME] = df[TIME].dt.strftime("%Y-%m-%d %H:%M:%S")
    return df


def prepare(df: pd.DataFrame, case: dict) -> pd.DataFrame:
    """DeepTune's preparation (train_deepar.py), for training and evaluation frames alike; a frame
    with pytorch-forecasting's own integer time index keeps it."""
    df = df.copy()
    if case.get("integer_time"):
        df[TARGET] = df[TARGET].astype(np.float64)
        return df.sort_values("time_idx", kind="stable")
    if case["group_ids"] is None:
        df["group"] = "0"
    df[TIME] = pd.to_datetime(df[TIME])
    df = df.sort_values(TIME, kind="stable")
    df["time_idx"] = ((df[TIME] - df[TIME].min()).dt.total_seconds() // 3600).astype(int)
    df[TARGET] = df[TARGET].astype(np.float64)
    return df


def group_ids(case: dict) -> list:
    return ["group"] if case["group_ids"] is None else case["group_ids"]


def target_normalizer(case: dict):
    """The case's normaliser as TimeSeriesDataSet takes it; DeepTune's TorchNormalizer by default."""
    make = case.get("normalizer", TorchNormalizer)
    return make() if callable(make) else make


def targets(case: dict) -> list:
    return case.get("targets", [TARGET])


def train(case: dict, df: pd.DataFrame) -> pl.Trainer:
    cutoff = int(df["time_idx"].max() * 0.8)
    names = targets(case)
    training = TimeSeriesDataSet(
        df[df["time_idx"] <= cutoff], time_idx="time_idx", target=names[0] if len(names) == 1 else names,
        max_prediction_length=1, max_encoder_length=case["max_encoder_length"],
        time_varying_known_categoricals=case.get("time_varying_known_categoricals", []),
        time_varying_unknown_categoricals=case.get("time_varying_unknown_categoricals", []),
        static_categoricals=case.get("static_categoricals", []),
        time_varying_known_reals=case.get("time_varying_known_reals", []),
        time_varying_unknown_reals=case.get("time_varying_unknown_reals", []) + names,
        static_reals=case.get("static_reals", []),
        group_ids=group_ids(case), allow_missing_timesteps=True,
        target_normalizer=target_normalizer(case), **case.get("dataset", {}),
    )
    resolved = training.target_normalizer
    if "resolves" in case:
        assert (type(resolved).__name__, resolved.transformation) == case["resolves"], resolved
    validation = TimeSeriesDataSet.from_dataset(training, df, min_prediction_idx=cutoff + 1, stop_randomization=True)
    net = DeepAR.from_dataset(
        training, learning_rate=0.01, hidden_size=case["hidden_size"], rnn_layers=case["rnn_layers"],
        cell_type=case["cell_type"], optimizer="Adam",
        loss=NormalDistributionLoss() if len(names) == 1 else MultiLoss([NormalDistributionLoss() for _ in names]),
    )
    trainer = pl.Trainer(
        accelerator="cpu", max_epochs=1, limit_train_batches=3, limit_val_batches=1, deterministic=True,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(
        net,
        train_dataloaders=training.to_dataloader(train=True, batch_size=32, num_workers=0),
        val_dataloaders=validation.to_dataloader(train=False, batch_size=64, num_workers=0),
    )
    return trainer


def check_fitted_state_used(params: dict, ds: TimeSeriesDataSet, frame: pd.DataFrame):
    """The evaluation dataset must carry the checkpoint's scalers and encoders, not refit them."""
    for name, scaler in params["scalers"].items():
        used = ds._scalers[name]
        if not isinstance(scaler, StandardScaler):
            assert type(used) is type(scaler), (name, used)
            continue
        assert isinstance(used, StandardScaler), (name, used)
        assert np.array_equal(used.mean_, scaler.mean_) and np.array_equal(used.scale_, scaler.scale_), name
        if name not in frame.columns:
            continue  # an input pytorch-forecasting adds (relative time index, target scales)
        refit = StandardScaler().fit(frame[[name]].astype(np.float64))
        assert abs(refit.mean_[0] - scaler.mean_[0]) > 0.5, f"{name}: eval data too like training"
    saved, used = params["target_normalizer"], ds.target_normalizer
    if isinstance(saved, MultiNormalizer):
        pairs = zip(saved.normalizers, used.normalizers, params["target"])
    else:
        pairs = [(saved, used, TARGET)]
    for saved, used, target in pairs:
        check_target_normaliser(saved, used, frame[target])
    for name, encoder in params["categorical_encoders"].items():
        if not name.startswith("__group_id__"):  # group ids get new series appended, as intended
            assert ds._categorical_encoders[name].classes_ == encoder.classes_, name


def check_target_normaliser(saved, used, values: pd.Series):
    if isinstance(saved, EncoderNormalizer):
        pass  # fitted on each window at prediction time
    elif isinstance(saved, GroupNormalizer):
        if isinstance(saved.norm_, dict):
            assert str(used.norm_) == str(saved.norm_)
        else:
            assert used.norm_.equals(saved.norm_)
    else:
        assert used.center_ == saved.center_ and used.scale_ == saved.scale_
        if saved.method != "identity":
            assert abs(saved.preprocess(values).mean() - saved.center_) > 2.0, "eval target too like training"


def reference(ckpt: Path, frame: pd.DataFrame, case: dict) -> tuple[np.ndarray, np.ndarray, dict]:
    """pytorch-forecasting's own view: checkpoint's dataset parameters, forward in eval mode."""
    model = DeepAR.load_from_checkpoint(str(ckpt), weights_only=False)
    model.eval()
    params = model.dataset_parameters
    # Eval starts no earlier than training; an earlier start would drop samples before it.
    assert params["min_prediction_idx"] <= frame["time_idx"].min()
    ds = TimeSeriesDataSet.from_parameters(params, frame, predict=False, stop_randomization=True)
    check_fitted_state_used(params, ds, frame)

    gids = group_ids(case)
    keys = list(zip(*[frame[g] for g in gids], frame["time_idx"]))
    assert len(set(keys)) == len(keys), "two rows of a series in one hour"
    row_of = dict(zip(keys, frame["__row"]))

    hidden = case["hidden_size"]
    emb = np.zeros((len(frame), hidden), dtype=np.float32)
    longest = np.zeros(len(frame), dtype=np.int64)  # by file row: the longest sample's encoder
    calls = []
    hook = model.rnn.register_forward_hook(lambda module, args, out: calls.append(out))
    with torch.no_grad():
        for x, _ in ds.to_dataloader(train=False, batch_size=64, num_workers=0):
            calls.clear()
            model(x)
            assert len(calls) == 2, "encoder and decoder RNN calls"
            out, state = calls[-1]  # the decoder step
            assert out.shape == (len(x["groups"]), 1, hidden), out.shape
            top = (state[0] if isinstance(state, tuple) else state)[-1]
            assert torch.equal(out[:, 0], top), "decoder output is the top layer's state"
            index = ds.x_to_index(x)
            lengths = x["encoder_lengths"].tolist()
            for b, key in enumerate(zip(*[index[g] for g in gids], index["time_idx"])):
                # Several samples end at a series' last row (and, with min_encoder_length, at
                # some others): the row's window is the longest.
                row = row_of[tuple(key)]
                if lengths[b] > longest[row]:
                    longest[row] = lengths[b]
                    emb[row] = out[b, 0].numpy()
    hook.remove()
    filled = longest > 0
    assert np.array_equal(longest, np.array(expected_windows(frame, case, params, gids))), "windows differ from the rule"
    info = {"x_reals": list(model.hparams.x_reals), "x_categoricals": list(model.hparams.x_categoricals)}
    return emb, ~filled, info


def expected_windows(frame: pd.DataFrame, case: dict, params: dict, gids: list) -> list:
    """Per file row, the encoder length of the longest sample pytorch-forecasting's index ends
    at it (0 for none), by the rule deepembed follows: each series without its first max_lag
    rows (lags drop them); a row has the full window when the series has a row exactly L hours
    earlier; otherwise, with min_encoder_length m < L, a window from the series' earliest row
    after t - L, of at least m hours, when no row between the previous row's t' - L (excluded)
    and t - L (included) could start a longer one, when the next row lies more than L hours
    after the window's start, or when the row is the series' last."""
    L = case["max_encoder_length"]
    m = params.get("min_encoder_length") or L
    max_lag = max((max(lags) for lags in (params.get("lags") or {}).values()), default=0)
    out = [0] * len(frame)
    for _, series in frame.sort_values("time_idx", kind="stable").groupby(gids, observed=True):
        times = series["time_idx"].tolist()[max_lag:]
        rows = series["__row"].tolist()[max_lag:]
        for i, (t, row) in enumerate(zip(times, rows)):
            earlier = [s for s in times[:i] if s >= t - L]
            if not earlier:
                continue
            k = t - earlier[0]
            if k == L:
                out[row] = L
                continue
            no_longer = i > 0 and not any(times[i - 1] - L < s <= t - L for s in times[:i])
            far_next = i + 1 < len(times) and times[i + 1] - earlier[0] > L
            if k >= m and (no_longer or far_next or i + 1 == len(times)):
                out[row] = k
    return out


def eval_order(rng, case: dict, df: pd.DataFrame) -> pd.DataFrame:
    if case["style"] == "multi":
        return df.iloc[rng.permutation(len(df))].reset_index(drop=True)
    if case["style"] == "gaps":  # each series in time order, series taken in turn
        df = df.copy()
        df["__k"] = df.groupby("patient").cumcount()
        return df.sort_values(["__k", "patient"], kind="stable").drop(columns="__k").reset_index(drop=True)
    return df.reset_index(drop=True)


def iso8601_fixture(out: Path):
    """pandas' reading of ISO 8601 text (`to_datetime(format="ISO8601")`, which the time
    columns of DeepAR and GANDALF take): each string's local time (nanoseconds, as if UTC) and
    UTC offset in minutes, or null where pandas refuses it. For the shared parser's test."""
    dates = ["2024-03-01", "2024-3-1", "2024/03/01", "2024.03.01", "2024 03 01", "2024\\03\\01", "20240301",
             "2024-03", "2024", "202403", "2024-03/01", "2024-02-30", "2024-13-01", "2023-02-29", "2024-02-29",
             " 2024-03-01", "24-03-01", "2024-03-01 ", "", "   ", "+2024-03-01", "2024-03-1"]
    times = ["", "T02", " 02", "T2", " 2:05", "T02:05", "T0205", "T020500", "T02:05:07", "T02:5:7", "T02:05:07.5",
             "T02:05:07.123456789", "T02:05:07.1234567891234", "T02:05:07.", "T24:00", "T23:60", "T23:59:60",
             "T02:05:07,5", "t02:00", "  02:00", "T02:05:07 ", "T205", "T02:05:7", "T0205:07"]
    zones = ["", "Z", " Z", "+02:00", "-0230", "+2", "+02:0", " +05:30", "+24", "+02:00:00", "UTC", "+02 ", "Z ", "-00:45"]
    strings = dates + [d + t + z for d in ["2024-03-01", "20240301"] for t in times for z in zones]
    rows = []
    for text in strings:
        try:
            ts = pd.to_datetime(pd.Series([text]), format="ISO8601")[0]
            if ts is pd.NaT:  # empty text: missing, not a time
                raise ValueError(text)
        except (ValueError, OverflowError):
            rows.append({"text": text, "local_nanos": None, "offset_minutes": None})
            continue
        offset = ts.utcoffset()
        rows.append({"text": text, "local_nanos": int(ts.tz_localize(None).value) if offset is not None else int(ts.value),
                     "offset_minutes": None if offset is None else int(offset.total_seconds() // 60)})
    (out / "iso8601.json").write_text(json.dumps(rows, indent=0))


def main(out: Path):
    out.mkdir(parents=True, exist_ok=True)
    iso8601_fixture(out)
    # Lightning writes into the working directory.
    with tempfile.TemporaryDirectory() as scratch, contextlib.chdir(scratch):
        generate(out)


def generate(out: Path):
    cases = {}
    for i, (name, case) in enumerate(CASES.items()):
        pl.seed_everything(i, verbose=False)
        rng = np.random.default_rng(200 + i)
        trainer = train(case, prepare(make_frame(rng, case, train=True), case))
        ckpt = out / name / "model" / "deepar.ckpt"
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(str(ckpt))

        eval_df = eval_order(rng, case, make_frame(rng, case, train=False))
        if name == "gru2_multi":
            eval_df[TIME] = pd.to_datetime(eval_df[TIME]).astype("datetime64[ns]")
        eval_path = out / name / "eval.parquet"
        eval_df.to_parquet(eval_path, index=False)
        # The reference reads the file back, as a user's pandas would.
        read = pd.read_parquet(eval_path)
        frame = prepare(read.assign(__row=np.arange(len(read))), case)
        emb, padded, info = reference(ckpt, frame, case)

        hidden = case["hidden_size"]
        expected = pd.DataFrame({f"emb_{j}": emb[:, j] for j in range(hidden)})
        for target in targets(case):
            expected[target] = read[target].astype(np.float32)
        expected["is_padded"] = padded
        expected.to_parquet(out / name / "expected.parquet", index=False)
        assert 0 < padded.sum() < len(read) / 3, padded.sum()

        args = {"time_idx_column": "time_idx" if case.get("integer_time") else TIME, "target_column": TARGET}
        if case["group_ids"] is not None:
            args["group_ids"] = case["group_ids"]
        args |= {k: case[k] for k in LISTS if case.get(k)}
        args |= {k: case[k] for k in ["hidden_size", "rnn_layers", "cell_type", "max_encoder_length"]}
        (out / name / "args.json").write_text(json.dumps(args, indent=1))
        normalizer = torch.load(ckpt, weights_only=False)["dataset_parameters"]["target_normalizer"]
        cases[name] = {
            "target_normalizer": [type(normalizer).__name__, getattr(normalizer, "transformation", None)],
            "model_weights": f"{name}/model",
            "eval": f"{name}/eval.parquet",
            "expected": f"{name}/expected.parquet",
            "args": args,
            "rows": len(read),
            "series": int(frame.groupby(group_ids(case)).ngroups),
            "padded_rows": sorted(int(r) for r in np.where(padded)[0]),
            **info,
        }
        print(f"{name} ({type(normalizer).__name__}, {normalizer.transformation}): rows {len(read)}, padded {int(padded.sum())}, H {hidden}, max |emb| {np.abs(emb).max():.4f}")
    (out / "cases.json").write_text(json.dumps(cases, indent=1))
    print(f"timeseries fixtures in {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve())
