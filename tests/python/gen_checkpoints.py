"""Checkpoint-reader fixtures, written by torch and safetensors themselves.

numpy arrays come in plain pickles (protocols 2, 4, 5) and a joblib file, with numpy.expected.json.
Each file comes with <name>.expected.json: every tensor's dtype, shape and values (as floats), so
the Rust reader is checked against what PyTorch holds, not against pasted numbers.
"""

import argparse
import collections
import json
import os
import pathlib
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file


def expected(tensors):
    out = {}
    for name, t in tensors.items():
        out[name] = {
            "dtype": str(t.dtype).replace("torch.", ""),
            "shape": list(t.shape),
            "values": t.detach().to(torch.float64).flatten().tolist(),
        }
    return out


def write(out, name, obj, tensors):
    torch.save(obj, out / name)
    (out / f"{name}.expected.json").write_text(json.dumps(expected(tensors)))


class Node:
    """A tree node that knows its parent."""

    def __init__(self, name, parent=None):
        self.name = name
        self.parent = parent
        self.children = []


class Evil:
    """Unpickling this under Python runs a shell command that creates a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def main(out: Path):
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(3)
    g = torch.Generator().manual_seed(3)

    # Every dtype torchvision, transformers and Lightning save.
    dtypes = collections.OrderedDict()
    dtypes["f32"] = torch.randn(3, 4, generator=g)
    dtypes["f16"] = torch.randn(5, generator=g).to(torch.float16)
    dtypes["bf16"] = torch.randn(2, 3, generator=g).to(torch.bfloat16)
    dtypes["f64"] = torch.randn(4, generator=g, dtype=torch.float64)
    dtypes["i64"] = torch.tensor([-(2**40), -1, 0, 7, 2**62])
    dtypes["i32"] = torch.tensor([-5, 0, 2**30], dtype=torch.int32)
    dtypes["i16"] = torch.tensor([-300, 300], dtype=torch.int16)
    dtypes["i8"] = torch.tensor([-128, 127], dtype=torch.int8)
    dtypes["u8"] = torch.tensor([0, 1, 255], dtype=torch.uint8)
    dtypes["bool"] = torch.tensor([True, False, True])
    dtypes["scalar"] = torch.tensor(3.5)
    dtypes["empty"] = torch.zeros(0, 4)
    write(out, "dtypes.pth", dtypes, dtypes)

    # torch.save names the archive after the file; with some name lengths (21 characters, as
    # "finetuned-resnet18-a2") the first entry is as long as the record PyTorch puts before the
    # zip's end record, which misleads a reader that guesses where the archive starts.
    names = out / "names"
    names.mkdir(exist_ok=True)
    small = collections.OrderedDict(weight=torch.randn(3, 2, generator=g), bias=torch.randn(3, generator=g))
    for length in range(12, 33):
        write(names, f"{'finetuned-resnet18-a2-and-more-text'[:length]}.pth", small, small)

    # Views: storage offsets, strides, and storages shared between tensors.
    base = torch.arange(60, dtype=torch.float32).reshape(6, 10)
    views = collections.OrderedDict()
    views["base"] = base
    views["rows"] = base[2:4]  # offset 20
    views["transposed"] = base.t()  # strides (1, 10)
    views["strided"] = base[1:, ::3]  # offset 10, strides (10, 3)
    views["column"] = base[:, 7]
    views["shared_again"] = base.view(60)[5:9]
    write(out, "views.pth", views, views)

    # A training checkpoint: nested dicts around the state dict.
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 2))
    nested = {"epoch": 3, "model": model.state_dict(), "optimizer": {"lr": 0.1, "betas": (0.9, 0.99)}, "name": "run-1"}
    flat = {f"model.{k}": v for k, v in model.state_dict().items()}
    write(out, "nested.pth", nested, flat)

    # A Lightning-style checkpoint: state_dict next to objects of many classes (inert to us).
    lightning = {
        "epoch": 1,
        "global_step": 10,
        "pytorch-lightning_version": "2.5.0",
        "state_dict": model.state_dict(),
        "hyper_parameters": {"args": argparse.Namespace(lr=0.1, layers=[1, 2]), "path": pathlib.PurePosixPath("/data/x")},
        "numpy_stats": np.arange(4, dtype=np.float32),
        "loops": collections.OrderedDict(fit={"state": {"batches": 5}}),
        "big_int": 2**80,
        "set": {1, 2},
        "bytes": b"\x00\x01",
        "none": None,
    }
    # Objects that refer back to their parents, as omegaconf's nodes in real Lightning and
    # pytorch-tabular checkpoints do: a cycle the reader must cut, not follow.
    parent = Node("root")
    parent.children = [Node("leaf", parent), Node("leaf2", parent)]
    lightning["hyper_parameters"]["tree"] = parent
    write(out, "lightning.ckpt", lightning, dict(model.state_dict()))
    # A tensor pickled with plain pickle (as joblib files of Lightning callbacks hold): its storage
    # is a nested legacy torch.save, which stays an inert object.
    import pickle

    (out / "plain_pickle_tensor.pkl").write_bytes(pickle.dumps({"best_score": torch.tensor(0.25), "patience": 3}, protocol=2))

    # safetensors.
    st = {"a": torch.randn(2, 2, generator=g), "b": torch.arange(5, dtype=torch.int64), "c": torch.randn(3, generator=g).to(torch.bfloat16)}
    save_file(st, out / "weights.safetensors")
    (out / "weights.safetensors.expected.json").write_text(json.dumps(expected(st)))

    # Pickles that would run a shell command under Python.
    marker = out / "PWNED"
    torch.save(Evil(marker), out / "evil.pth")
    torch.save({"weight": torch.ones(2), "payload": Evil(marker)}, out / "evil_with_weights.pth")
    (out / "evil.json").write_text(json.dumps({"marker": str(marker)}))
    numpy_fixtures(out)
    pandas_fixtures(out)
    print(f"checkpoint fixtures in {out}")



def numpy_fixtures(out: Path):
    """numpy arrays in plain pickles (protocols 2, 4, 5) and in joblib files, with expectations."""
    import pickle

    import joblib

    arrays = {
        "f8": np.array([1.5, -2.25, 1e300], dtype=np.float64),
        "f4_2d": np.arange(6, dtype=np.float32).reshape(2, 3) / 3,
        "f4_fortran": np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)),
        "i8": np.array([-(2**40), 0, 7], dtype=np.int64),
        "u1": np.array([0, 255], dtype=np.uint8),
        "bool": np.array([True, False, True]),
        "big_endian": np.array([1.0, 2.0], dtype=">f8"),
        "empty": np.zeros((0, 3)),
        "scalar": np.float64(3.25),
    }
    strings = {"unicode": np.array(["a", "ñandú", "東京"]), "objects": np.array(["x", "yz"], dtype=object)}
    expected = {k: {"shape": list(np.shape(v)), "values": np.asarray(v, dtype=np.float64).ravel(order="C").tolist()} for k, v in arrays.items()}
    expected.update({k: {"shape": list(v.shape), "strings": v.astype(str).ravel().tolist()} for k, v in strings.items()})
    payload = {**arrays, **strings}
    for proto in (2, 4, 5):
        (out / f"numpy_p{proto}.pkl").write_bytes(pickle.dumps(payload, protocol=proto))
    joblib.dump(payload, out / "numpy.joblib")
    (out / "numpy.expected.json").write_text(json.dumps(expected))


def pandas_fixtures(out: Path):
    """pandas frames, series and indexes, fitted StandardScalers, RobustScalers and quantile and power
    transforms, as pytorch-tabular's datamodule.sav holds them, in plain pickles and a joblib
    file, with expectations."""
    import pickle

    import joblib
    import pandas as pd
    from sklearn.preprocessing import PowerTransformer, QuantileTransformer, RobustScaler, StandardScaler

    def nan_as_null(matrix):
        return [[None if np.isnan(v) else float(v) for v in row] for row in matrix]

    def plain(values):
        def one(v):
            if v is pd.NA:
                return None
            if isinstance(v, tuple):
                return plain(v)
            if isinstance(v, float) and np.isnan(v):
                return None
            return v.item() if hasattr(v, "item") else v

        return [one(v) for v in values]

    frames = {
        # Interleaved dtypes: the int64 block's placement is not one slice.
        "mixed": pd.DataFrame({"i": [1, -2, 3], "s": ["x", "ñ", "z"], "f": [0.5, 1.25, -3.0], "j": [10, 20, 30], "b": [True, False, True]}),
        # pytorch-tabular's category mapping: category index, "value" codes from 1.
        "mapping": pd.Series(pd.unique(pd.Series(["y", "x", 0, "z"])), name="c").reset_index().rename(columns={"index": "value"}).assign(value=lambda d: d["value"] + 1).set_index("c"),
        "float_index": pd.DataFrame({"value": [1, 2]}, index=pd.Index([0.5, 2.0], name="k")),
        "empty": pd.DataFrame({"a": pd.Series([], dtype="float64")}),
        # A groupby over two columns (pytorch-forecasting's GroupNormalizer): a MultiIndex, whose
        # labels are tuples, one of them with a missing level value.
        # Nullable integers (an ISO week from dt.isocalendar(), as a pytorch-tabular category
        # mapping's index) and nullable floats and booleans, with missing values.
        "nullable": pd.DataFrame(
            {"value": pd.array([1, None, 3], dtype="Int64"), "f": pd.array([0.5, None, 2.0], dtype="Float64"), "b": pd.array([True, None, False], dtype="boolean")},
            index=pd.Index(pd.array([53, 1, None], dtype="UInt32"), name="week"),
        ),
        # pandas' own strings (dtype "string", as `convert_dtypes()` and pandas 3 make text columns).
        "strings": pd.DataFrame(
            {"t": pd.array(["x", None, "ñ"], dtype="string[python]")},
            index=pd.Index(pd.array(["a", "b", None], dtype="string[python]"), name="s"),
        ),
        "multi_index": pd.DataFrame(
            {"center": [1.5, 2.5, 3.5, 4.5]},
            index=pd.MultiIndex.from_arrays([[0, 1, 0, 2], ["a", "b", None, "a"]], names=["k", "s"]),
        ),
    }
    series = {"named": pd.Series([3.5, -1.0], index=["p", "q"], name="w"), "ints": pd.Series([7, 8, 9])}
    expected = {
        "frames": {
            k: {"index": plain(f.index), "labels": plain(f.columns), "columns": [plain(f[c]) for c in f.columns]} for k, f in frames.items()
        },
        "series": {k: {"name": v.name, "index": plain(v.index), "values": plain(v)} for k, v in series.items()},
    }
    rng = np.random.default_rng(0)
    x = pd.DataFrame({"a": rng.normal(size=20), "b": rng.normal(3, 2, size=20)})
    scalers = {
        "scaler": StandardScaler().fit(x),
        "scaler_no_mean": StandardScaler(with_mean=False).fit(x.values),
        # RobustScaler has the same form (pytorch-forecasting accepts it as a scaler).
        "robust_scaler": RobustScaler(quantile_range=(10.0, 90.0)).fit(x.values),
        "robust_scaler_no_centering": RobustScaler(with_centering=False).fit(x),
    }
    probe = [[0.3, -1.7], [5.0, 2.0]]
    probes = {k: pd.DataFrame(probe, columns=["a", "b"]) if hasattr(s, "feature_names_in_") else np.array(probe) for k, s in scalers.items()}
    expected["scalers"] = {k: {"probe": probe, "transformed": s.transform(probes[k]).tolist()} for k, s in scalers.items()}
    expected["scalers"]["scaler"]["feature_names"] = ["a", "b"]
    # Transforms in the settings pytorch-tabular uses and in scikit-learn's other ones: integer
    # ties, few quantiles, a standardizing power transform. Probes: inside and beyond the fitted
    # range, on its ends and on tied quantiles, negative values, NaN (null in the JSON).
    ties = pd.DataFrame({"a": rng.integers(0, 5, size=40).astype(float), "b": rng.normal(size=40)})
    positive = pd.DataFrame({"a": rng.lognormal(size=30), "b": rng.uniform(0.5, 9.0, size=30)})
    transforms = {
        "quantile_normal": (QuantileTransformer(n_quantiles=10, output_distribution="normal").fit(ties), ties),
        "quantile_uniform": (QuantileTransformer(n_quantiles=15).fit(ties), ties),
        "yeo_johnson_standardized": (PowerTransformer(method="yeo-johnson").fit(ties), ties),
        "box_cox": (PowerTransformer(method="box-cox", standardize=False).fit(positive), positive),
    }
    expected["transforms"] = {}
    for name, (t, data) in transforms.items():
        lo, hi = data.min().to_numpy(), data.max().to_numpy()
        probe = np.array([lo, hi, (lo + hi) / 2, [2.0, 0.1], [1.0, 5.0], hi * 3, [np.nan, np.nan]])
        if name == "box_cox":
            probe = np.abs(probe) + 0.01
            probe[-1] = np.nan
        else:
            probe = np.vstack([probe, lo - 5, [-0.5, -2.5]])
        transformed = t.transform(pd.DataFrame(probe, columns=["a", "b"]))
        expected["transforms"][name] = {"probe": nan_as_null(probe), "transformed": nan_as_null(transformed)}
    categorical = pd.DataFrame({"c": pd.Categorical(["u", "v"])})
    payload = {"frames": frames, "series": series, **scalers, "categorical": categorical, "transforms": {k: t for k, (t, _) in transforms.items()}}
    for proto in (2, 5):
        (out / f"pandas_p{proto}.pkl").write_bytes(pickle.dumps(payload, protocol=proto))
    joblib.dump(payload, out / "pandas.joblib")
    (out / "pandas.expected.json").write_text(json.dumps(expected))


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve())
