//! The model families, each one file that registers itself with [`inventory`]: its versions,
//! their embedding widths, the backbone builder with torchvision's parameter names, and what
//! DeepTune refuses. Adding a family is adding a file here (and its `mod` line below); nothing
//! else lists families.

pub mod densenet;
pub mod efficientnet;
pub mod layers;
pub mod resnet;
pub mod siglip;
pub mod swin;
pub mod vgg;
pub mod vit;

use anyhow::{bail, Result};
use deepembed_sdk::checkpoint::StateDict;
use deepembed_sdk::options::UseCase;
use tch::{nn, Device};

use crate::image::Transform;
use crate::model::EmbeddingModel;
use crate::options::VisionOptions;

/// One model version a family offers.
pub struct Version {
    /// torchvision's name (DeepTune's `--model_version`), e.g. `resnet50`.
    pub name: &'static str,
    /// torchvision's hub file for the ImageNet weights DeepTune uses (empty when the version has
    /// no torchvision weights).
    pub hub_file: &'static str,
    /// Width of the backbone output in DeepTune's adjusted model: the input of its fc1, and the
    /// embedding with one added layer.
    pub features: i64,
    /// Width of the pretrained embedding; None where DeepTune refuses pretrained use.
    pub pretrained: Option<i64>,
}

/// What a family builds for one run: the module and the preprocessing its input needs.
pub struct Backbone {
    /// Images (B, 3, size, size) to features (B, width).
    pub module: Box<dyn nn::ModuleT>,
    pub transform: Transform,
}

/// A model family: one file under `models/`, registered with `inventory::submit!`.
pub trait Family: Sync {
    /// The leading letters of its versions, e.g. `densenet`.
    fn name(&self) -> &'static str;

    fn versions(&self) -> &'static [Version];

    /// Builds the backbone in `p`, to be filled from `weights` (torchvision's names, LoRA already
    /// merged), which the builder may read for shapes (ViT's position grid, for one).
    /// Pretrained: up to the pretrained embedding; finetuned and peft: DeepTune's backbone, whose
    /// output is `version.features` wide.
    fn build(&self, version: &Version, use_case: UseCase, weights: &StateDict, p: &nn::Path) -> Result<Backbone>;

    /// Weights a file may hold that the built backbone does not use (classifier heads,
    /// `num_batches_tracked`).
    fn unused(&self, use_case: UseCase, key: &str) -> bool;

    /// Renames keys of a weights file (torchvision names, LoRA already merged) to the names
    /// `build` uses, for files whose layout predates torchvision's current names.
    fn rename(&self, weights: StateDict) -> StateDict {
        weights
    }

    /// The version whose weights these are (torchvision names), if they are this family's; used
    /// to say what a checkpoint given for the wrong version actually holds.
    fn identify(&self, weights: &StateDict) -> Option<&'static str>;

    /// Fails, with DeepTune's reason, for a request DeepTune refuses. `added_layers` is the
    /// checkpoint's (finetuned and peft only).
    fn refuse(&self, version: &Version, use_case: UseCase, added_layers: Option<i64>) -> Result<()> {
        if use_case == UseCase::Pretrained && version.pretrained.is_none() {
            bail!("--use_case pretrained is not available for {}", version.name);
        }
        let _ = added_layers;
        Ok(())
    }

    /// Loads a run's model. The default reads torchvision weight files and DeepTune checkpoints;
    /// a family with other files (SigLIP's Hugging Face directories) overrides it.
    fn load(&self, version: &'static Version, opts: &VisionOptions, device: Device) -> Result<EmbeddingModel> {
        EmbeddingModel::load_torchvision(self, version, opts, device)
    }
}

/// A family's registration: `inventory::submit! { Registration(&MyFamily) }`.
pub struct Registration(pub &'static dyn Family);

inventory::collect!(Registration);

/// Every registered family, by name.
pub fn families() -> Vec<&'static dyn Family> {
    let mut all: Vec<&'static dyn Family> = inventory::iter::<Registration>.into_iter().map(|r| r.0).collect();
    all.sort_by_key(|f| f.name());
    all
}

/// Every version of every family, as `(family, version)`.
pub fn all_versions() -> Vec<(&'static dyn Family, &'static Version)> {
    families().into_iter().flat_map(|f| f.versions().iter().map(move |v| (f, v))).collect()
}

/// The `--model_version` values this plugin offers.
pub fn versions() -> Vec<&'static str> {
    all_versions().into_iter().map(|(_, v)| v.name).collect()
}

/// One line per version for listings: its embedding width in each use case.
pub fn describe(family: &dyn Family, version: &Version) -> String {
    let pretrained = match version.pretrained {
        Some(d) => d.to_string(),
        None => "refused".into(),
    };
    let one_layer = match family.refuse(version, UseCase::Finetuned, Some(1)) {
        Ok(()) => version.features.to_string(),
        Err(_) => "refused".into(),
    };
    format!(
        "{} (pretrained: {pretrained}; finetuned/peft: {one_layer} with 1 added layer, --embed_size with 2)",
        version.name
    )
}

pub fn lookup(name: &str) -> Result<(&'static dyn Family, &'static Version)> {
    let all = all_versions();
    if let Some(found) = all.iter().find(|(_, v)| v.name == name) {
        return Ok(*found);
    }
    let known: Vec<&str> = all.iter().map(|(_, v)| v.name).collect();
    bail!("--model_version {name} is not a known model; supported: {}", known.join(", "))
}
