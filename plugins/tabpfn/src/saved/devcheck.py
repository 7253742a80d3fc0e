"""Dumps what tabpfn 6.2 itself reads from model files, for the ignored test
`saved::tests::devcheck_against_tabpfn` (it compares SavedTabPfn::load with these dumps).

    TABPFN_DISABLE_TELEMETRY=1 PYTHONPATH=<tabpfn 6.2 libs> python devcheck.py OUT FILE...

FILE: a .tabpfn_fit, a bare torch checkpoint (.ckpt) or a fine-tuned estimator's joblib. Run it
from the directory the .tabpfn_fit's relative model_path is relative to. For each FILE, OUT gets
<i>.json (task, params, tabpfn's resolved inference config and parsed architecture config) and
<i>.pt (the built model's state_dict, criterion.* of a regressor included), and OUT/manifest.json
lists them. Only tabpfn's own loading code runs here (the joblib is unpickled by joblib).
"""

import dataclasses
import json
import sys
import zipfile
from pathlib import Path

import torch
from tabpfn.base import ClassifierModelSpecs, RegressorModelSpecs, initialize_tabpfn_model
from tabpfn.model_loading import load_model


def state_dict(model, bardist):
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if bardist is not None:
        sd.update({f"criterion.{k}": v.detach().clone() for k, v in bardist.state_dict().items()})
    return sd


def from_params(params, model_path):
    which = "classifier" if params["__class_name__"] == "TabPFNClassifier" else "regressor"
    models, configs, bardist, ic = initialize_tabpfn_model(model_path, which, "fit_preprocessors")
    ic = ic.override_with_user_input(params.get("inference_config"))
    return which, models[0], configs[0], bardist, ic


def dump(path):
    path = Path(path)
    if zipfile.is_zipfile(path) and "init_params.json" in zipfile.ZipFile(path).namelist():
        params = json.loads(zipfile.ZipFile(path).read("init_params.json"))
        which, model, config, bardist, ic = from_params(params, params["model_path"])
        finetuning = False
    elif zipfile.is_zipfile(path):
        model, bardist, config, ic = load_model(path=path)
        which = "regressor" if config.max_num_classes == 0 else "classifier"
        params = {"n_estimators": 8, "random_state": 0, "categorical_features_indices": None,
                  "ignore_pretraining_limits": False}
        bardist = bardist if which == "regressor" else None
        finetuning = False
    else:
        import joblib
        est = joblib.load(path)
        specs = est.model_path
        assert isinstance(specs, (ClassifierModelSpecs, RegressorModelSpecs)), type(specs)
        which = "classifier" if isinstance(specs, ClassifierModelSpecs) else "regressor"
        model, config = specs.model, specs.architecture_config
        bardist = getattr(specs, "norm_criterion", None)
        ic = specs.inference_config.override_with_user_input(est.inference_config)
        params = est.get_params(deep=False)
        finetuning = True
    info = {
        "task": which,
        "n_estimators": params["n_estimators"],
        "random_state": params["random_state"],
        "categorical_features_indices": params["categorical_features_indices"],
        "ignore_pretraining_limits": params["ignore_pretraining_limits"],
        "inference": dataclasses.asdict(ic),
        "architecture": dataclasses.asdict(config),
    }
    return info, state_dict(model, bardist), finetuning


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    manifest = []
    for i, f in enumerate(sys.argv[2:]):
        info, sd, finetuning = dump(f)
        (out / f"{i}.json").write_text(json.dumps(info, indent=1))
        torch.save(sd, out / f"{i}.pt")
        manifest.append({"input": str(Path(f).resolve()), "finetuning": finetuning, "dump": str(i)})
        print(f, info["task"], len(sd), "tensors")
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))


if __name__ == "__main__":
    main()
