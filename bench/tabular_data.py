"""The tabular benchmarks' clinical-style table: 12 continuous lab values, 4 categorical columns,
a binary outcome and a patient id. Shared by `cargo xtask bench tabular` (which trains its GANDALF
on it) and the GPU check (which embeds a large one with that model)."""

import numpy as np
import pandas as pd

CONTINUOUS = [f"lab_{i}" for i in range(12)]
CATEGORIES = {"site": 8, "ward": 20, "sex": 2, "smoker": 3}


def clinical_table(rng: np.random.Generator, n: int) -> pd.DataFrame:
    df = pd.DataFrame({c: rng.normal(0, 1, n) for c in CONTINUOUS})
    for c, k in CATEGORIES.items():
        df[c] = [f"{c}_{v}" for v in rng.integers(0, k, n)]
    df["outcome"] = rng.integers(0, 2, n)
    df["patient_id"] = [f"p{i}" for i in range(n)]
    return df
