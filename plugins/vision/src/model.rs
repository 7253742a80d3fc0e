//! The embedding model of a run: a backbone, plus DeepTune's fc1 when two layers were added.

use anyhow::{Context, Result};
use deepembed_sdk::checkpoint::StateDict;
use deepembed_sdk::weights::Linear;
use tch::nn::{self, ModuleT};
use tch::{Device, Tensor};

use crate::models;
use crate::options::VisionOptions;
use crate::weights;
use deepembed_sdk::options::UseCase;

pub struct EmbeddingModel {
    // Owns the backbone's parameters.
    _vs: nn::VarStore,
    backbone: Box<dyn ModuleT>,
    /// fc1: the embedding is its output (before the ReLU) with two added layers.
    fc1: Option<Linear>,
    pub dims: i64,
    /// What was loaded, for embedding_details.json.
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl EmbeddingModel {
    pub fn load(opts: &VisionOptions, device: Device) -> Result<EmbeddingModel> {
        let arch = models::lookup(&opts.model_version)?;
        let mut vs = nn::VarStore::new(device);
        let backbone = (arch.build)(&vs.root());
        let mut details = serde_json::Map::new();
        let fc1 = match opts.use_case {
            UseCase::Pretrained => {
                opts.head.warn_if_given_for_pretrained();
                let file = weights::pretrained_file(opts, arch)?;
                log::info!("loading torchvision {} weights from {}", arch.version, file.display());
                let sd = StateDict::load(&file)?;
                sd.copy_into(&mut vs, weights::unused_key)
                    .with_context(|| format!("--model_weights is not a torchvision {} weights file", arch.version))?;
                details.insert("weights".into(), file.display().to_string().into());
                None
            }
            UseCase::Finetuned | UseCase::Peft => {
                let file = weights::deeptune_checkpoint(opts)?;
                log::info!("loading DeepTune {} checkpoint {}", opts.use_case.name(), file.display());
                let sd = StateDict::load(&file)?;
                let head = weights::deeptune_head(&sd, opts, arch, device)?;
                let backbone_sd = weights::deeptune_backbone(&sd, opts)?;
                backbone_sd
                    .copy_into(&mut vs, weights::unused_key)
                    .with_context(|| format!("the checkpoint's backbone is not a {}", arch.version))?;
                details.insert("weights".into(), file.display().to_string().into());
                details.insert("added_layers".into(), head.added_layers.into());
                details.insert("num_classes".into(), head.num_classes.into());
                if let Some(e) = head.embed_size {
                    details.insert("embed_size".into(), e.into());
                }
                (head.added_layers == 2).then_some(head.fc1)
            }
        };
        vs.freeze();
        let dims = fc1.as_ref().map_or(arch.features, |fc1| fc1.weight.size()[0]);
        details.insert("model_version".into(), arch.version.into());
        Ok(EmbeddingModel { _vs: vs, backbone, fc1, dims, details })
    }

    /// `(B, 3, 224, 224)` preprocessed images to `(B, dims)` embeddings.
    pub fn forward(&self, images: &Tensor) -> Tensor {
        tch::no_grad(|| {
            let features = self.backbone.forward_t(images, false);
            match &self.fc1 {
                Some(fc1) => fc1.forward(&features),
                None => features,
            }
        })
    }
}
