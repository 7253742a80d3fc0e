//! tabpfn 6.2's `PerFeatureTransformer` forward up to the embedding (docs/TABPFN.md §5), for ensemble
//! member 0's preprocessed matrices: the embedding of an eval row is the final layer's output at
//! its target token.
//!
//! Eval rows stream. They attend to the context (thinking rows + train rows) and never to each
//! other, so the context goes through every layer once ([`TabPfn::context`]) and keeps, per layer,
//! the keys and values of its rows in each token column; any batch of eval rows then runs through
//! the layers against those ([`TabPfn::embed`]), and the result does not depend on the batching.
//! The one thing all eval rows share is the pair of per-column "differs from row 0" tests of the
//! input encoder, so the workflow is:
//!
//! ```text
//! let enc = InputEncoder::fit(&x_train, task, outlier_sigma)?;   // train statistics
//! let mut flags = enc.flags();                                   // train rows observed
//! for batch in eval { enc.observe(&mut flags, &batch)?; }        // cheap pass, no transformer
//! let ctx = model.context(&enc, &flags, &x_train, &y_train)?;
//! for batch in eval { let emb = model.embed(&ctx, &batch)?; }    // [b, emsize]
//! ```
//!
//! Memory: the context keeps, per layer, keys and values of `groups + 1` token columns over
//! `n_train + num_thinking_rows` rows, `head_dim` floats each, for one head (multiquery, tabpfn's
//! default) or every head: `nlayers x (groups + 1) x context rows x head_dim x 2` f32 (times
//! `nhead` without multiquery). [`context_bytes`] gives that plus the working set of building it.
//!
//! Randomness: the feature positional embedding is drawn from libtorch's CPU generator seeded
//! with `config.seed`, as tabpfn draws it on a CPU run. tch has no per-generator API, so the draw
//! reseeds libtorch's global generator (a process-wide side effect, serialised within this crate)
//! and on a CUDA run the embedding is still the CPU one: the result equals tabpfn on the CPU, not
//! tabpfn on a GPU (whose CUDA generator draws other numbers).

mod config;
mod input;
mod layer;

use std::collections::BTreeSet;
use std::sync::Mutex;

use anyhow::{bail, Result};
use deepembed_sdk::checkpoint::StateDict;
use deepembed_sdk::weights::Weights;
use tch::{Device, Kind, Tensor};

pub use config::{ModelConfig, PositionalEmbedding, Task, LEARNED_POSITIONS};
pub use input::{ColumnFlags, InputEncoder};
use layer::{chunked, ContextKv, Layer};

/// Serialises this crate's reseed-and-draw on libtorch's global generator.
static GLOBAL_GENERATOR: Mutex<()> = Mutex::new(());

/// The NaN indicator the target token of an eval row gets (`NanHandlingEncoderStep`).
const MISSING_TARGET: f64 = -2.0;

/// An attention sublayer's intermediates per token, in units of `emsize`: queries, keys, values,
/// heads, output.
const ATTENTION_STATES: i64 = 5;

/// A loaded tabpfn `PerFeatureTransformer` (weights shape-checked against the config).
pub struct TabPfn {
    config: ModelConfig,
    device: Device,
    /// `[E, 2G]` (+ `[E]`): `[normalised values, NaN indicators]` of a group to its token.
    encoder: (Tensor, Option<Tensor>),
    /// `[E, 2]`, `[E]`: `[target, NaN indicator]` to the target token.
    y_encoder: (Tensor, Tensor),
    /// `[T, E]`, when `num_thinking_rows > 0`.
    thinking: Option<Tensor>,
    /// Subspace: `[E, E/4]` and `[E]`; learned: the `[1000, E]` table.
    positional: Option<(Tensor, Option<Tensor>)>,
    /// tabpfn's packaged `[2000, 48]` column-embedding table, which replaces the first 2000
    /// random draws of a subspace model with emsize 192 and seed 42 (see
    /// [`TabPfn::needs_column_table`]).
    column_table: Option<Tensor>,
    layers: Vec<Layer>,
}

/// What eval rows need from the context rows: the frozen input encoder and column layout, the
/// positional embeddings, the eval target token's embedding, and each layer's keys and values.
pub struct Context {
    encoder: InputEncoder,
    groups: i64,
    /// Per `(group, slot)`, the padded input column it takes (`[groups * G]`), and whether the
    /// slot holds a kept column at all (`[1, groups, G]`).
    gather: Tensor,
    occupied: Tensor,
    /// `sqrt(G / used columns)` per group, `[groups, 1]`.
    scale: Tensor,
    /// `[groups, E]` on the device.
    positional: Option<Tensor>,
    /// `[E]` on the device.
    eval_target: Tensor,
    kv: Vec<ContextKv>,
    rows: i64,
}

impl Context {
    /// Context rows (thinking rows + train rows).
    pub fn rows(&self) -> i64 {
        self.rows
    }

    /// Bytes held by the keys and values.
    pub fn kv_bytes(&self) -> u64 {
        self.kv.iter().map(|kv| 4 * (kv.keys.numel() + kv.values.numel()) as u64).sum()
    }
}

/// Bytes the context of `n_train` rows and `n_features` columns needs at its peak: the keys and
/// values it keeps (see the module doc), one layer's keys and values again while they are put
/// together, the state and the next state (`rows x (groups + 1) x emsize` f32 each), and one
/// chunk of a sublayer's intermediates (at most `CHUNK_ELEMENTS` floats, or one token column's
/// item attention if that is more). An estimate for refusing contexts that cannot fit; the eval
/// batches need memory in proportion to their own rows on top.
pub fn context_bytes(config: &ModelConfig, n_train: u64, n_features: u64) -> u64 {
    let rows = n_train + config.num_thinking_rows as u64;
    let tokens = config.groups(n_features as i64) as u64 + 1;
    let e = config.emsize as u64;
    let kv_width = if config.multiquery_item_attention_for_test_set { config.head_dim() } else { config.emsize } as u64;
    let kv_layer = 2 * tokens * rows * kv_width;
    let layers = config.nlayers as u64;
    let concatenating = if layers > 0 { kv_layer } else { 0 };
    let chunk = (layer::CHUNK_ELEMENTS as u64).max(ATTENTION_STATES as u64 * rows * e);
    4 * (layers * kv_layer + concatenating + 2 * rows * tokens * e + chunk)
}

impl TabPfn {
    /// Loads the weights `config` describes from `weights`, checking every shape; a missing,
    /// misshapen or unexpected tensor fails naming it (tabpfn loads state dicts strictly).
    pub fn new(config: ModelConfig, weights: &StateDict, device: Device) -> Result<TabPfn> {
        config.task()?;
        let w = Weights::new(weights, device);
        let (e, g, h) = (config.emsize, config.features_per_group, config.nhead);
        let mut known = BTreeSet::new();
        let mut take = |name: String, shape: &[i64]| -> Result<Tensor> {
            let t = w.tensor(&name, shape)?;
            known.insert(name);
            Ok(t)
        };

        let enc = format!("encoder.{}.layer", config.encoder_index());
        let encoder = (
            take(format!("{enc}.weight"), &[e, 2 * g])?,
            if config.encoder_use_bias { Some(take(format!("{enc}.bias"), &[e])?) } else { None },
        );
        let y = format!("y_encoder.{}.layer", config.y_encoder_index());
        let y_encoder = (take(format!("{y}.weight"), &[e, 2])?, take(format!("{y}.bias"), &[e])?);
        let thinking = match config.num_thinking_rows {
            0 => None,
            t => Some(take("add_thinking_tokens.row_token_values".into(), &[t, e])?),
        };
        let pe = "feature_positional_embedding_embeddings";
        let positional = match config.feature_positional_embedding {
            PositionalEmbedding::Subspace => {
                Some((take(format!("{pe}.weight"), &[e, e / 4])?, Some(take(format!("{pe}.bias"), &[e])?)))
            }
            PositionalEmbedding::Learned => Some((take(format!("{pe}.weight"), &[LEARNED_POSITIONS, e])?, None)),
            _ => None,
        };
        let mut layers = Vec::with_capacity(config.nlayers as usize);
        let multiquery = config.multiquery_item_attention_for_test_set;
        for l in 0..config.nlayers {
            let prefix = format!("transformer_encoder.layers.{l}");
            let layer = Layer::load(&w.at(&prefix), e, h, e * config.nhid_factor, multiquery)?;
            layers.push(layer);
            for name in [
                "self_attn_between_features._w_qkv",
                "self_attn_between_features._w_out",
                "self_attn_between_items._w_qkv",
                "self_attn_between_items._w_out",
                "mlp.linear1.weight",
                "mlp.linear2.weight",
            ] {
                known.insert(format!("{prefix}.{name}"));
            }
        }

        // The decoder is not applied, and a regressor's bar distribution is not either.
        let unused =
            |k: &str| k.starts_with("decoder_dict.") || (config.max_num_classes == 0 && k.starts_with("criterion."));
        let unexpected: Vec<&String> = weights.keys().filter(|k| !known.contains(*k) && !unused(k)).collect();
        if let Some(first) = unexpected.first() {
            bail!(
                "{}: unexpected weight {first}{}; the checkpoint's config does not describe these weights (tabpfn would refuse to load them)",
                weights.source().display(),
                match unexpected.len() {
                    1 => String::new(),
                    n => format!(" and {} more", n - 1),
                }
            );
        }
        Ok(TabPfn { config, device, encoder, y_encoder, thinking, positional, column_table: None, layers })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The embedding width (`emsize`).
    pub fn dims(&self) -> i64 {
        self.config.emsize
    }

    /// Runs the context rows (thinking rows, then `x_train` `[n_train, n_features]` with targets
    /// `y_train` `[n_train]`) through every layer. `enc` must have been fitted on `x_train` and
    /// `flags` must have observed every eval row that will be embedded (docs/TABPFN.md §6).
    /// `y_train` is the member-0 target: the class index (permuted) for a classifier, the z-scored
    /// value for a regressor.
    pub fn context(
        &self,
        enc: &InputEncoder,
        flags: &ColumnFlags,
        x_train: &Tensor,
        y_train: &Tensor,
    ) -> Result<Context> {
        let task = self.config.task()?;
        if enc.task() != task {
            bail!(
                "the checkpoint is a {} but the input encoder was fitted for {}; use the checkpoint's task",
                describe(task),
                describe(enc.task())
            );
        }
        if flags.n_features() != enc.n_features() as usize || flags.rows() < enc.n_train() as u64 {
            bail!("the column flags were not made by this input encoder's flags(); observe the eval rows into enc.flags()");
        }
        let n_train = enc.n_train();
        if x_train.size() != [n_train, enc.n_features()] {
            bail!(
                "the train matrix has shape {:?}, but the input encoder was fitted on [{n_train}, {}]",
                x_train.size(),
                enc.n_features()
            );
        }
        let y = y_train.to_device(Device::Cpu).to_kind(Kind::Float);
        if y.size() != [n_train] {
            bail!("the train targets have shape {:?}; expected [{n_train}], one per train row", y.size());
        }
        let targets = Vec::<f32>::try_from(&y)?;
        if let Some(row) = targets.iter().position(|v| !v.is_finite()) {
            bail!("train row {row} has target {}; the targets must be finite", targets[row]);
        }

        let _guard = tch::no_grad_guard();
        let (e, g) = (self.config.emsize, self.config.features_per_group);
        let groups = self.config.groups(enc.n_features());
        let (gather, occupied, scale) = layout(flags, g, groups);
        let positional = self.positional_embedding(groups)?;
        let (train_targets, eval_target) = target_values(&y, &targets, task);
        let target_tokens = |values: &Tensor, indicator: f64| {
            let input =
                Tensor::stack(&[values.shallow_clone(), values.full_like(indicator)], -1).to_device(self.device);
            input.linear(&self.y_encoder.0, Some(&self.y_encoder.1))
        };
        let mut ctx = Context {
            encoder: enc.share(),
            groups,
            gather,
            occupied,
            scale,
            positional,
            eval_target: target_tokens(&Tensor::from_slice(&[eval_target]), MISSING_TARGET).squeeze_dim(0),
            kv: Vec::with_capacity(self.layers.len()),
            rows: n_train + self.config.num_thinking_rows,
        };

        let features = self.feature_tokens(&ctx, x_train)?;
        let state = Tensor::cat(&[features, target_tokens(&train_targets, 0.0).unsqueeze(1)], 1);
        let mut state = match &self.thinking {
            Some(thinking) => {
                let t = thinking.size()[0];
                Tensor::cat(&[thinking.unsqueeze(1).expand([t, groups + 1, e], false), state], 0)
            }
            None => state,
        };
        let tokens = groups + 1;
        for layer in &self.layers {
            state = chunked(&state, 0, ATTENTION_STATES * tokens * e, |rows| layer.features(rows));
            let columns = state.transpose(0, 1);
            let next = Tensor::empty([tokens, ctx.rows, e], (Kind::Float, self.device));
            let (mut keys, mut values) = (Vec::new(), Vec::new());
            let step = (layer::CHUNK_ELEMENTS / (ATTENTION_STATES * ctx.rows * e)).max(1);
            let mut start = 0;
            while start < tokens {
                let len = step.min(tokens - start);
                let (out, kv) = layer.context_items(&columns.narrow(0, start, len));
                next.narrow(0, start, len).copy_(&out);
                keys.push(kv.keys);
                values.push(kv.values);
                start += len;
            }
            ctx.kv.push(ContextKv { keys: Tensor::cat(&keys, 0), values: Tensor::cat(&values, 0) });
            state = next.transpose(0, 1);
            state = chunked(&state, 0, (self.config.nhid_factor + 1) * tokens * e, |rows| layer.mlp(rows));
        }
        Ok(ctx)
    }

    /// The embeddings of eval rows `x_eval` (`[b, n_features]`, the member-0 preprocessed eval
    /// matrix, any float dtype): `[b, emsize]` f32 on the CPU.
    pub fn embed(&self, ctx: &Context, x_eval: &Tensor) -> Result<Tensor> {
        if ctx.kv.len() != self.layers.len() || ctx.eval_target.size() != [self.config.emsize] {
            bail!("this context was built by another model; build it with this model's context()");
        }
        let _guard = tch::no_grad_guard();
        let e = self.config.emsize;
        let features = self.feature_tokens(ctx, x_eval)?;
        let b = features.size()[0];
        if b == 0 {
            return Ok(Tensor::zeros([0, e], (Kind::Float, Device::Cpu)));
        }
        let tokens = ctx.groups + 1;
        let target = ctx.eval_target.view([1, 1, e]).expand([b, 1, e], false);
        let mut state = Tensor::cat(&[features, target], 1);
        for (layer, kv) in self.layers.iter().zip(&ctx.kv) {
            state = layer.features(&state);
            state = layer.eval_items(&state.transpose(0, 1), kv).transpose(0, 1);
            state = layer.mlp(&state);
        }
        Ok(state.select(1, tokens - 1).to_device(Device::Cpu).contiguous())
    }

    /// The feature tokens `[b, groups, E]` of `rows`: encoded, laid out in groups with the
    /// removed columns dropped, scaled by the used-column count, through the linear encoder, plus
    /// the positional embedding.
    fn feature_tokens(&self, ctx: &Context, rows: &Tensor) -> Result<Tensor> {
        let (values, indicators) = ctx.encoder.encode(rows)?;
        let g = self.config.features_per_group;
        let b = values.size()[0];
        let padded = ctx.groups * g;
        let place = |x: Tensor| {
            let pad = padded - x.size()[1];
            let x = if pad > 0 { Tensor::cat(&[x, Tensor::zeros([b, pad], (Kind::Float, Device::Cpu))], 1) } else { x };
            let x = x.index_select(1, &ctx.gather).reshape([b, ctx.groups, g]);
            x.zeros_like().where_self(&ctx.occupied.logical_not(), &x)
        };
        let values = place(values) * &ctx.scale;
        let input = Tensor::cat(&[values, place(indicators)], 2).to_device(self.device);
        let tokens = input.linear(&self.encoder.0, self.encoder.1.as_ref());
        Ok(match &ctx.positional {
            Some(pe) => tokens + pe.unsqueeze(0),
            None => tokens,
        })
    }

    /// Whether this model's positional embeddings start with tabpfn's packaged column-embedding
    /// table (`tabpfn_col_embedding.pt`): tabpfn swaps it in for the first 2000 random draws when
    /// the subspace draws are 48 wide (emsize 192) and the seed is 42, as in its released models.
    pub fn needs_column_table(&self) -> bool {
        self.config.feature_positional_embedding == PositionalEmbedding::Subspace
            && self.config.emsize / 4 == 48
            && self.config.seed == 42
    }

    /// Gives the model tabpfn's column-embedding table (`[rows, 48]`, at least 2000 rows).
    pub fn set_column_table(&mut self, table: Tensor) -> Result<()> {
        let size = table.size();
        if size.len() != 2 || size[1] != 48 || size[0] < 2000 {
            bail!("tabpfn_col_embedding.pt holds a tensor of shape {size:?}; tabpfn's is [2000, 48]");
        }
        self.column_table = Some(table.to_kind(Kind::Float));
        Ok(())
    }

    /// `[groups, E]`: what `add_embeddings` adds to every row's group tokens.
    fn positional_embedding(&self, groups: i64) -> Result<Option<Tensor>> {
        let (e, seed) = (self.config.emsize, self.config.seed);
        let mode = self.config.feature_positional_embedding;
        let column_table = match (self.needs_column_table(), &self.column_table) {
            (false, _) => None,
            (true, Some(table)) => Some(table),
            (true, None) => bail!(
                "this checkpoint (emsize 192, seed 42) takes its first 2000 feature positional embeddings from tabpfn's packaged table tabpfn_col_embedding.pt; no table was given to the model"
            ),
        };
        if mode == PositionalEmbedding::None {
            return Ok(None);
        }
        let cpu = (Kind::Float, Device::Cpu);
        let draw = seeded(seed, || match mode {
            PositionalEmbedding::Subspace => Tensor::randn([groups, e / 4], cpu),
            PositionalEmbedding::NormalRandVec => Tensor::randn([groups, e], cpu),
            PositionalEmbedding::UniRandVec => Tensor::rand([groups, e], cpu) * 2.0 - 1.0,
            PositionalEmbedding::Learned => {
                Tensor::randint_low(0, LEARNED_POSITIONS, [groups], (Kind::Int64, Device::Cpu))
            }
            PositionalEmbedding::None => unreachable!("returned above"),
        });
        // tabpfn: `embs[:2000] = COL_EMBEDDING[: embs.shape[0]]`.
        if let Some(table) = column_table {
            let n = groups.min(2000);
            draw.narrow(0, 0, n).copy_(&table.narrow(0, 0, n));
        }
        let draw = draw.to_device(self.device);
        Ok(Some(match (mode, &self.positional) {
            (PositionalEmbedding::Subspace, Some((weight, bias))) => draw.linear(weight, bias.as_ref()),
            (PositionalEmbedding::Learned, Some((table, _))) => table.index_select(0, &draw),
            _ => draw,
        }))
    }
}

/// Runs `draw` on libtorch's global generator freshly seeded with `seed`, which equals drawing
/// from a fresh `torch.Generator().manual_seed(seed)`: both reset the mt19937 state and the
/// cached normal sample. Every use of the global generator in this crate goes through here.
pub(crate) fn seeded<T>(seed: i64, draw: impl FnOnce() -> T) -> T {
    let _lock = GLOBAL_GENERATOR.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    tch::manual_seed(seed);
    draw()
}

fn describe(task: Task) -> &'static str {
    match task {
        Task::Classification => "classifier",
        Task::Regression => "regressor",
    }
}

/// The per-group column layout from the flags: `RemoveEmptyFeaturesEncoderStep` moves each
/// group's kept columns (raw values not all equal to row 0's) to the front and zeroes the rest;
/// `VariableNumFeaturesEncoderStep` scales a group by `sqrt(G / used)`, `used` counting the
/// columns whose normalised values are not all equal (at least 1).
fn layout(flags: &ColumnFlags, g: i64, groups: i64) -> (Tensor, Tensor, Tensor) {
    let (raw, normalized) = (flags.raw_differs(), flags.normalized_differs());
    let mut gather = Vec::with_capacity((groups * g) as usize);
    let mut occupied = Vec::with_capacity((groups * g) as usize);
    let mut scale = Vec::with_capacity(groups as usize);
    for group in 0..groups as usize {
        let columns = group * g as usize..(group + 1) * g as usize;
        let kept: Vec<usize> = columns.clone().filter(|&c| raw.get(c).copied().unwrap_or(false)).collect();
        let used = kept.iter().filter(|&&c| normalized[c]).count().max(1);
        for slot in 0..g as usize {
            gather.push(kept.get(slot).copied().unwrap_or(columns.start) as i64);
            occupied.push(slot < kept.len());
        }
        // Both f32 operations round correctly, as torch's true_divide and sqrt do.
        scale.push((g as f32 / used as f32).sqrt());
    }
    (
        Tensor::from_slice(&gather),
        Tensor::from_slice(&occupied).reshape([1, groups, g]),
        Tensor::from_slice(&scale).reshape([groups, 1]),
    )
}

/// The target encoder's inputs: train targets `[n_train]` and the value every eval row gets.
/// An eval row's missing target becomes the train mean (`NanHandlingEncoderStep`); a classifier
/// then maps each value to the number of train classes below it
/// (`MulticlassClassificationTargetEncoder`).
fn target_values(y: &Tensor, targets: &[f32], task: Task) -> (Tensor, f32) {
    let mean = (y.sum(Kind::Float) / targets.len() as f64).double_value(&[]) as f32;
    match task {
        Task::Regression => (y.shallow_clone(), mean),
        Task::Classification => {
            let mut classes = targets.to_vec();
            classes.sort_by(f32::total_cmp);
            classes.dedup();
            let below = |v: f32| classes.iter().filter(|&&c| v > c).count() as f32;
            let train: Vec<f32> = targets.iter().map(|&v| below(v)).collect();
            (Tensor::from_slice(&train), below(mean))
        }
    }
}

#[cfg(test)]
mod tests;
