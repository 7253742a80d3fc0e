//! The embedding model of a run: a family's backbone, plus DeepTune's fc1 when two layers were
//! added.

use anyhow::Result;
use deepembed_sdk::checkpoint::StateDict;
use deepembed_sdk::options::UseCase;
use deepembed_sdk::weights::Linear;
use tch::nn::{self, ModuleT};
use tch::{Device, Tensor};

use crate::image::Transform;
use crate::models::{self, Backbone, Family, Version};
use crate::options::VisionOptions;
use crate::weights;

pub struct EmbeddingModel {
    // Owns the backbone's parameters.
    _vs: nn::VarStore,
    backbone: Box<dyn ModuleT>,
    /// fc1: the embedding is its output (before the ReLU) with two added layers.
    fc1: Option<Linear>,
    pub dims: i64,
    /// The preprocessing the backbone's input needs.
    pub transform: Transform,
    /// What was loaded, for embedding_details.json.
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl EmbeddingModel {
    /// The model `opts` ask for, by its family's loader.
    pub fn load(opts: &VisionOptions, device: Device) -> Result<EmbeddingModel> {
        let (family, version) = models::lookup(&opts.model_version)?;
        family.load(version, opts, device)
    }

    /// A model from its parts; `vs` owns the parameters of `backbone` and `fc1`.
    pub fn new(
        vs: nn::VarStore,
        backbone: Box<dyn ModuleT>,
        fc1: Option<Linear>,
        dims: i64,
        transform: Transform,
        details: serde_json::Map<String, serde_json::Value>,
    ) -> EmbeddingModel {
        EmbeddingModel { _vs: vs, backbone, fc1, dims, transform, details }
    }

    /// The loader of the torchvision families: pretrained from a torchvision weights file,
    /// finetuned and peft from a DeepTune checkpoint.
    pub fn load_torchvision<F: Family + ?Sized>(
        family: &F,
        version: &'static Version,
        opts: &VisionOptions,
        device: Device,
    ) -> Result<EmbeddingModel> {
        let mut vs = nn::VarStore::new(device);
        let mut details = serde_json::Map::new();
        let use_case = opts.use_case;
        let (backbone, fc1, dims) = match use_case {
            UseCase::Pretrained => {
                family.refuse(version, use_case, None)?;
                opts.head.warn_if_given_for_pretrained();
                let file = weights::pretrained_file(opts, version)?;
                log::info!("loading torchvision {} weights from {}", version.name, file.display());
                let sd = family.rename(StateDict::load(&file)?);
                let context = format!("--model_weights is not a torchvision {} weights file", version.name);
                let backbone = build_filled(family, version, use_case, &sd, &mut vs, &context)?;
                details.insert("weights".into(), file.display().to_string().into());
                (backbone, None, version.pretrained.unwrap_or(version.features))
            }
            UseCase::Finetuned | UseCase::Peft => {
                let file = weights::deeptune_checkpoint(opts, "pth", "DeepTune's .pth checkpoint")?;
                log::info!("loading DeepTune {} checkpoint {}", use_case.name(), file.display());
                let sd = StateDict::load(&file)?;
                let backbone_sd = family.rename(weights::deeptune_backbone(&sd, opts)?);
                let head = weights::deeptune_head(&sd, opts, &weights::HeadLayout::torchvision(version, opts), device)
                    .map_err(|e| weights::wrong_model(e, &backbone_sd, version, "the checkpoint does not fit"))?;
                family.refuse(version, use_case, Some(head.added_layers))?;
                let context = format!("the checkpoint's backbone is not a {}", version.name);
                let backbone = build_filled(family, version, use_case, &backbone_sd, &mut vs, &context)?;
                details.insert("weights".into(), file.display().to_string().into());
                details.insert("added_layers".into(), head.added_layers.into());
                details.insert("num_classes".into(), head.num_classes.into());
                if let Some(e) = head.embed_size {
                    details.insert("embed_size".into(), e.into());
                }
                let dims = head.embed_size.unwrap_or(version.features);
                (backbone, (head.added_layers == 2).then_some(head.fc1), dims)
            }
        };
        vs.freeze();
        details.insert("model_version".into(), version.name.into());
        details.insert("input_size".into(), backbone.transform.size.into());
        Ok(EmbeddingModel::new(vs, backbone.module, fc1, dims, backbone.transform, details))
    }

    /// Preprocessed images `(B, 3, size, size)` to `(B, dims)` embeddings.
    pub fn forward(&self, images: &Tensor) -> Tensor {
        tch::no_grad(|| {
            let features = self.backbone.forward_t(images, false).flatten(1, -1);
            match &self.fc1 {
                Some(fc1) => fc1.forward(&features),
                None => features,
            }
        })
    }
}

/// The family's backbone for `version`, built in `vs` and filled from `sd`; weights that do
/// not fit fail with `context`, naming the version they are when a family recognises them.
fn build_filled<F: Family + ?Sized>(
    family: &F,
    version: &Version,
    use_case: UseCase,
    sd: &StateDict,
    vs: &mut nn::VarStore,
    context: &str,
) -> Result<Backbone> {
    let backbone = family.build(version, use_case, sd, &vs.root())?;
    sd.copy_into(vs, |k| family.unused(use_case, k)).map_err(|e| weights::wrong_model(e, sd, version, context))?;
    Ok(backbone)
}
