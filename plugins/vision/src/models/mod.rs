//! Backbone architectures, by torchvision name. Each file holds one family with torchvision's
//! parameter names, so torchvision and DeepTune state dicts load as they are.

pub mod resnet;

use anyhow::{bail, Result};
use tch::nn;

/// One model version the plugin can build.
pub struct Architecture {
    /// torchvision's name, e.g. `resnet50`.
    pub version: &'static str,
    /// Width of the pooled features before the classifier.
    pub features: i64,
    /// torchvision's hub file name for its ImageNet weights (DeepTune uses IMAGENET1K_V1).
    pub hub_file: &'static str,
    pub build: fn(&nn::Path) -> Box<dyn nn::ModuleT>,
}

pub const ARCHITECTURES: &[Architecture] = resnet::ARCHITECTURES;

/// The `--model_version` values this plugin offers.
pub fn versions() -> Vec<&'static str> {
    ARCHITECTURES.iter().map(|a| a.version).collect()
}

/// Families DeepTune has that this plugin does not implement yet.
const NOT_YET: &[&str] = &["densenet", "vgg", "efficientnet", "vit", "swin", "siglip"];

pub fn lookup(version: &str) -> Result<&'static Architecture> {
    if let Some(arch) = ARCHITECTURES.iter().find(|a| a.version == version) {
        return Ok(arch);
    }
    let known: Vec<&str> = ARCHITECTURES.iter().map(|a| a.version).collect();
    if let Some(family) = NOT_YET.iter().find(|f| version.starts_with(*f)) {
        bail!("--model_version {version}: the {family} family is not supported by this version of the vision plugin yet; supported: {}", known.join(", "));
    }
    bail!("--model_version {version} is not a known model; supported: {}", known.join(", "))
}
