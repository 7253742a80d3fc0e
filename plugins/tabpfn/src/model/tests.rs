//! The streamed forward against a one-shot forward written the way tabpfn computes it (every
//! row in one sequence, the encoder steps over all rows at once, attention written out), plus the
//! loading checks. Weights and data come from a fixed xorshift, so no test touches libtorch's
//! global generator outside `seeded`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::*;

struct Rng(u64);

impl Rng {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }

    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform().max(1e-12), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    /// A float tensor of `shape` with entries uniform in `[-scale, scale]`.
    fn tensor(&mut self, shape: &[i64], scale: f64) -> Tensor {
        let n: i64 = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| ((2.0 * self.uniform() - 1.0) * scale) as f32).collect();
        Tensor::from_slice(&v).reshape(shape)
    }
}

fn tiny(task: Task) -> ModelConfig {
    ModelConfig {
        emsize: 16,
        nhead: 4,
        features_per_group: 3,
        nlayers: 2,
        nhid_factor: 2,
        seed: 7,
        num_thinking_rows: 2,
        feature_positional_embedding: PositionalEmbedding::Subspace,
        multiquery_item_attention_for_test_set: true,
        encoder_use_bias: false,
        remove_duplicate_features: false,
        max_num_classes: if task == Task::Classification { 10 } else { 0 },
        num_buckets: if task == Task::Classification { 0 } else { 20 },
    }
}

/// Every tensor a tabpfn checkpoint of `c` holds, random, decoder and criterion included.
fn checkpoint(c: &ModelConfig, rng: &mut Rng) -> BTreeMap<String, Tensor> {
    let (e, g, h, d) = (c.emsize, c.features_per_group, c.nhead, c.head_dim());
    let mut w = BTreeMap::new();
    let enc = format!("encoder.{}.layer", c.encoder_index());
    w.insert(format!("{enc}.weight"), rng.tensor(&[e, 2 * g], 0.5));
    if c.encoder_use_bias {
        w.insert(format!("{enc}.bias"), rng.tensor(&[e], 0.5));
    }
    let y = format!("y_encoder.{}.layer", c.y_encoder_index());
    w.insert(format!("{y}.weight"), rng.tensor(&[e, 2], 0.7));
    w.insert(format!("{y}.bias"), rng.tensor(&[e], 0.7));
    if c.num_thinking_rows > 0 {
        w.insert("add_thinking_tokens.row_token_values".into(), rng.tensor(&[c.num_thinking_rows, e], 1.0));
    }
    match c.feature_positional_embedding {
        PositionalEmbedding::Subspace => {
            w.insert("feature_positional_embedding_embeddings.weight".into(), rng.tensor(&[e, e / 4], 0.5));
            w.insert("feature_positional_embedding_embeddings.bias".into(), rng.tensor(&[e], 0.5));
        }
        PositionalEmbedding::Learned => {
            w.insert("feature_positional_embedding_embeddings.weight".into(), rng.tensor(&[1000, e], 1.0));
        }
        _ => {}
    }
    for l in 0..c.nlayers {
        let p = format!("transformer_encoder.layers.{l}");
        for attn in ["self_attn_between_features", "self_attn_between_items"] {
            w.insert(format!("{p}.{attn}._w_qkv"), rng.tensor(&[3, h, d, e], 0.4));
            w.insert(format!("{p}.{attn}._w_out"), rng.tensor(&[h, d, e], 0.3));
        }
        w.insert(format!("{p}.mlp.linear1.weight"), rng.tensor(&[e * c.nhid_factor, e], 0.4));
        w.insert(format!("{p}.mlp.linear2.weight"), rng.tensor(&[e, e * c.nhid_factor], 0.3));
    }
    w.insert("decoder_dict.standard.0.weight".into(), rng.tensor(&[e * c.nhid_factor, e], 0.1));
    if c.max_num_classes == 0 {
        w.insert("criterion.borders".into(), rng.tensor(&[21], 1.0));
    }
    w
}

fn state_dict(w: &BTreeMap<String, Tensor>) -> StateDict {
    StateDict::new(PathBuf::from("tiny.ckpt"), w.iter().map(|(k, v)| (k.clone(), v.shallow_clone())).collect())
}

/// Train and eval matrices (f64, as the preprocessing hands them over) with the cases the
/// encoder has to get right: NaN, ±inf, a constant column, a column constant on train apart
/// from NaN that varies in eval (docs/TABPFN.md §6), an outlier, and 7 columns (a padded group).
fn table(rng: &mut Rng, n_train: usize, n_eval: usize) -> (Tensor, Tensor) {
    let n = n_train + n_eval;
    let mut rows = Vec::with_capacity(n * 7);
    for r in 0..n {
        let eval = r >= n_train;
        let a = rng.normal();
        rows.push(a);
        rows.push(if rng.uniform() < 0.2 { f64::NAN } else { rng.normal() * 3.0 + 1.0 });
        rows.push(7.0);
        rows.push(match (eval, r) {
            (false, 1) => f64::NAN,
            (false, _) => 5.0,
            (true, _) if r % 3 == 0 => 6.0,
            (true, _) => 5.0,
        });
        rows.push(match r {
            4 => f64::INFINITY,
            _ if r == n - 2 => f64::NEG_INFINITY,
            _ => a * 2.0 + rng.normal(),
        });
        rows.push((rng.uniform() * 3.0).floor());
        rows.push(if r == 3 { 1e4 } else { rng.normal() * 100.0 });
    }
    let x = Tensor::from_slice(&rows).reshape([n as i64, 7]);
    (x.narrow(0, 0, n_train as i64), x.narrow(0, n_train as i64, n_eval as i64))
}

fn targets(rng: &mut Rng, task: Task, n: usize) -> Tensor {
    let v: Vec<f64> = (0..n)
        .map(|i| match task {
            Task::Classification => ((i % 3) as f64 + if rng.uniform() < 0.3 { 1.0 } else { 0.0 }).min(2.0),
            Task::Regression => rng.normal(),
        })
        .collect();
    Tensor::from_slice(&v)
}

// ---- the one-shot reference -------------------------------------------------------------------

fn masked_mean(x: &Tensor, mask: &Tensor) -> Tensor {
    let count = mask.logical_not().to_kind(Kind::Float).sum_dim_intlist(0, false, None::<Kind>);
    x.zeros_like().where_self(mask, x).sum_dim_intlist(0, false, None::<Kind>) / count.clamp_min(1.0)
}

fn masked_std(x: &Tensor) -> Tensor {
    let nan = x.isnan();
    let count = nan.logical_not().to_kind(Kind::Float).sum_dim_intlist(0, false, None::<Kind>);
    let d = (x - masked_mean(x, &nan)).square();
    (d.zeros_like().where_self(&d.isnan(), &d).sum_dim_intlist(0, false, None::<Kind>) / (count - 1.0).clamp_min(1.0))
        .sqrt()
}

fn norm(x: &Tensor) -> Tensor {
    let mean = x.mean_dim(-1, true, Kind::Float);
    let var = (x - &mean).square().mean_dim(-1, true, Kind::Float);
    (x - mean) / (var + 1e-5).sqrt()
}

/// softmax(q k^T / sqrt(D)) v over `[batch, len, H, D]` inputs, out as `[batch, len, H * D]`.
fn attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Tensor {
    let d = q.size()[3];
    let (q, k, v) = (q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2));
    let p = (q.matmul(&k.transpose(-1, -2)) / (d as f64).sqrt()).softmax(-1, Kind::Float);
    let o = p.matmul(&v).transpose(1, 2);
    let s = o.size();
    o.reshape([s[0], s[1], s[2] * s[3]])
}

/// `x @ w[i]^T` per head: `[..., E]` and `w` `[3, H, D, E]` to `[..., H, D]`.
fn heads(x: &Tensor, w: &Tensor, i: i64) -> Tensor {
    let (h, d, e) = (w.size()[1], w.size()[2], w.size()[3]);
    let mut shape = x.size();
    shape.pop();
    shape.extend([h, d]);
    x.matmul(&w.select(0, i).reshape([h * d, e]).tr()).reshape(shape)
}

/// tabpfn's forward over all rows at once (docs/TABPFN.md §5).
fn one_shot(
    w: &BTreeMap<String, Tensor>,
    c: &ModelConfig,
    x_train: &Tensor,
    y: &Tensor,
    x_eval: &Tensor,
    sigma: Option<f64>,
) -> Tensor {
    let (e, g) = (c.emsize, c.features_per_group);
    let x = Tensor::cat(&[x_train, x_eval], 0).to_kind(Kind::Float);
    let y = y.to_kind(Kind::Float);
    let (s, m) = (x.size()[0], x.size()[1]);
    let n = x_train.size()[0];
    let ng = (m + g - 1) / g;
    let x = Tensor::cat(&[x, Tensor::zeros([s, ng * g - m], (Kind::Float, Device::Cpu))], 1).reshape([s, ng, g]);
    // RemoveEmptyFeatures over every row, kept columns to the front of their group.
    let differs =
        |x: &Tensor| x.narrow(0, 1, s - 1).eq_tensor(&x.get(0)).sum_dim_intlist(0, false, Kind::Int64).ne(s - 1);
    let keep = Vec::<bool>::try_from(differs(&x).flatten(0, -1)).unwrap();
    let compact = Tensor::zeros([s, ng, g], (Kind::Float, Device::Cpu));
    for group in 0..ng {
        let mut slot = 0;
        for j in 0..g {
            if keep[(group * g + j) as usize] {
                let mut dst = compact.select(1, group).select(1, slot);
                dst.copy_(&x.select(1, group).select(1, j));
                slot += 1;
            }
        }
    }
    let x = compact;
    let inf = x.isinf();
    let nan_ind = x.isnan().to_kind(Kind::Float) * -2.0
        + inf.logical_and(&x.gt(0.0)).to_kind(Kind::Float) * 2.0
        + inf.logical_and(&x.lt(0.0)).to_kind(Kind::Float) * 4.0;
    let bad = x.isnan().logical_or(&inf);
    let fill = masked_mean(&x.narrow(0, 0, n), &bad.narrow(0, 0, n));
    let mut x = fill.unsqueeze(0).expand_as(&x).where_self(&bad, &x);
    if let Some(sigma) = sigma {
        let t = x.narrow(0, 0, n);
        let (m1, s1) = (masked_mean(&t, &t.isnan()), masked_std(&t));
        let out = t.gt_tensor(&(&m1 + &s1 * sigma)).logical_or(&t.lt_tensor(&(&m1 - &s1 * sigma)));
        let t = t.full_like(f64::NAN).where_self(&out, &t);
        let (m2, s2) = (masked_mean(&t, &t.isnan()), masked_std(&t));
        let (lo, hi) = (&m2 - &s2 * sigma, &m2 + &s2 * sigma);
        x = ((x.abs() + 1.0).log().neg() + &lo).maximum(&x);
        x = ((x.abs() + 1.0).log() + &hi).minimum(&x);
    }
    let t = x.narrow(0, 0, n);
    let sd = masked_std(&t);
    let sd = sd.ones_like().where_self(&sd.eq(0.0), &sd);
    let x = ((&x - masked_mean(&t, &t.isnan())) / (sd + 1e-16)).clamp(-100.0, 100.0);
    let used = differs(&x).sum_dim_intlist(-1, true, Kind::Float).clamp_min(1.0);
    let x = &x * (used.reciprocal() * g as f64).sqrt();
    let enc = format!("encoder.{}.layer", c.encoder_index());
    let mut emb_x = Tensor::cat(&[x, nan_ind], -1).matmul(&w[&format!("{enc}.weight")].tr());
    if c.encoder_use_bias {
        emb_x += &w[&format!("{enc}.bias")];
    }
    // Target token: eval rows get the train mean, a classifier counts the classes below.
    let mean = y.mean(Kind::Float);
    let mut yv = Tensor::cat(&[y.shallow_clone(), mean.expand([s - n], false)], 0);
    if c.max_num_classes >= 2 {
        let classes = y.unique_dim(0, true, false, false).0;
        yv = yv.unsqueeze(-1).gt_tensor(&classes).sum_dim_intlist(-1, false, Kind::Float);
    }
    let ind = Tensor::cat(
        &[Tensor::zeros([n], (Kind::Float, Device::Cpu)), Tensor::full([s - n], -2.0, (Kind::Float, Device::Cpu))],
        0,
    );
    let ye = format!("y_encoder.{}.layer", c.y_encoder_index());
    let emb_y = Tensor::stack(&[yv, ind], -1).matmul(&w[&format!("{ye}.weight")].tr()) + &w[&format!("{ye}.bias")];
    // Feature positional embedding.
    let cpu = (Kind::Float, Device::Cpu);
    let pe = "feature_positional_embedding_embeddings";
    let emb_x = match c.feature_positional_embedding {
        PositionalEmbedding::Subspace => {
            let r = seeded(c.seed, || Tensor::randn([ng, e / 4], cpu));
            emb_x + r.matmul(&w[&format!("{pe}.weight")].tr()) + &w[&format!("{pe}.bias")]
        }
        PositionalEmbedding::NormalRandVec => emb_x + seeded(c.seed, || Tensor::randn([ng, e], cpu)),
        PositionalEmbedding::UniRandVec => emb_x + seeded(c.seed, || Tensor::rand([ng, e], cpu) * 2.0 - 1.0),
        PositionalEmbedding::Learned => {
            let idx = seeded(c.seed, || Tensor::randint_low(0, 1000, [ng], (Kind::Int64, Device::Cpu)));
            emb_x + w[&format!("{pe}.weight")].index_select(0, &idx)
        }
        PositionalEmbedding::None => emb_x,
    };
    let mut state = Tensor::cat(&[emb_x, emb_y.unsqueeze(1)], 1);
    let t = c.num_thinking_rows;
    if t > 0 {
        let think = w["add_thinking_tokens.row_token_values"].unsqueeze(1).expand([t, ng + 1, e], false);
        state = Tensor::cat(&[think, state], 0);
    }
    let sep = n + t;
    let total = state.size()[0];
    for l in 0..c.nlayers {
        let p = format!("transformer_encoder.layers.{l}");
        let (fq, fo) = (
            &w[&format!("{p}.self_attn_between_features._w_qkv")],
            &w[&format!("{p}.self_attn_between_features._w_out")],
        );
        let out_proj = |o: &Tensor, wo: &Tensor| o.matmul(&wo.reshape([-1, e]));
        let a = attention(&heads(&state, fq, 0), &heads(&state, fq, 1), &heads(&state, fq, 2));
        state = norm(&(&state + out_proj(&a, fo)));
        let (iq, io) =
            (&w[&format!("{p}.self_attn_between_items._w_qkv")], &w[&format!("{p}.self_attn_between_items._w_out")]);
        let cols = state.transpose(0, 1);
        let ctx = cols.narrow(1, 0, sep);
        let test = cols.narrow(1, sep, total - sep);
        let new_ctx = &ctx + out_proj(&attention(&heads(&ctx, iq, 0), &heads(&ctx, iq, 1), &heads(&ctx, iq, 2)), io);
        let (k, v) = if c.multiquery_item_attention_for_test_set {
            let h = c.nhead;
            let first = iq.narrow(1, 0, 1);
            let k = heads(&ctx, &first, 1);
            let v = heads(&ctx, &first, 2);
            let shape = [ng + 1, sep, h, c.head_dim()];
            (k.expand(shape, false), v.expand(shape, false))
        } else {
            (heads(&ctx, iq, 1), heads(&ctx, iq, 2))
        };
        let new_test = &test + out_proj(&attention(&heads(&test, iq, 0), &k, &v), io);
        state = norm(&Tensor::cat(&[new_ctx, new_test], 1).transpose(0, 1));
        let hidden = state.matmul(&w[&format!("{p}.mlp.linear1.weight")].tr()).gelu("none");
        state = norm(&(&state + hidden.matmul(&w[&format!("{p}.mlp.linear2.weight")].tr())));
    }
    state.narrow(0, sep, total - sep).select(1, ng)
}

// ---- the streamed forward ---------------------------------------------------------------------

fn sigma_for(task: Task) -> Option<f64> {
    (task == Task::Classification).then_some(12.0)
}

/// Streams `x_eval` in batches of `batch` after observing every eval row.
fn streamed(model: &TabPfn, task: Task, x_train: &Tensor, y: &Tensor, x_eval: &Tensor, batch: i64) -> Tensor {
    let enc = InputEncoder::fit(x_train, task, sigma_for(task)).unwrap();
    let mut flags = enc.flags();
    let n = x_eval.size()[0];
    for start in (0..n).step_by(batch as usize) {
        enc.observe(&mut flags, &x_eval.narrow(0, start, batch.min(n - start))).unwrap();
    }
    let ctx = model.context(&enc, &flags, x_train, y).unwrap();
    let parts: Vec<Tensor> = (0..n)
        .step_by(batch as usize)
        .map(|start| model.embed(&ctx, &x_eval.narrow(0, start, batch.min(n - start))).unwrap())
        .collect();
    Tensor::cat(&parts, 0)
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

fn check(c: ModelConfig, seed: u64) {
    let task = c.task().unwrap();
    let mut rng = Rng(seed);
    let w = checkpoint(&c, &mut rng);
    let model = TabPfn::new(c.clone(), &state_dict(&w), Device::Cpu).unwrap();
    let (x_train, x_eval) = table(&mut rng, 30, 9);
    let y = targets(&mut rng, task, 30);
    let expected = one_shot(&w, &c, &x_train, &y, &x_eval, sigma_for(task));
    assert_eq!(expected.size(), [9, c.emsize]);
    assert!(expected.isfinite().all().int64_value(&[]) == 1);
    for batch in [1, 4, 9] {
        let got = streamed(&model, task, &x_train, &y, &x_eval, batch);
        let diff = max_diff(&got, &expected);
        assert!(diff < 1e-5, "{c:?} batch {batch}: max diff {diff}");
    }
}

#[test]
fn streaming_equals_the_one_shot_forward_classifier() {
    check(tiny(Task::Classification), 1);
}

#[test]
fn streaming_equals_the_one_shot_forward_regressor() {
    check(tiny(Task::Regression), 2);
}

#[test]
fn streaming_equals_the_one_shot_forward_in_every_variant() {
    let variants = [
        ModelConfig { multiquery_item_attention_for_test_set: false, ..tiny(Task::Classification) },
        ModelConfig { num_thinking_rows: 0, encoder_use_bias: true, ..tiny(Task::Regression) },
        ModelConfig { remove_duplicate_features: true, features_per_group: 2, ..tiny(Task::Classification) },
        ModelConfig { feature_positional_embedding: PositionalEmbedding::NormalRandVec, ..tiny(Task::Regression) },
        ModelConfig { feature_positional_embedding: PositionalEmbedding::UniRandVec, ..tiny(Task::Classification) },
        ModelConfig { feature_positional_embedding: PositionalEmbedding::Learned, ..tiny(Task::Regression) },
        ModelConfig {
            feature_positional_embedding: PositionalEmbedding::None,
            nlayers: 1,
            ..tiny(Task::Classification)
        },
        // One group holding every column (tabpfn's batch-of-one selection path), and one column per group.
        ModelConfig { features_per_group: 8, ..tiny(Task::Regression) },
        ModelConfig { features_per_group: 1, ..tiny(Task::Classification) },
    ];
    for (i, c) in variants.into_iter().enumerate() {
        check(c, 10 + i as u64);
    }
}

#[test]
fn eval_rows_seen_only_by_the_flags_change_the_result() {
    // Column 3 is 5 (or NaN) on train and 5 or 6 in eval: whether the 6s were observed decides
    // the used-column count of its group, as it does in tabpfn's single call.
    let task = Task::Regression;
    let c = tiny(task);
    let mut rng = Rng(5);
    let w = checkpoint(&c, &mut rng);
    let model = TabPfn::new(c.clone(), &state_dict(&w), Device::Cpu).unwrap();
    let (x_train, x_eval) = table(&mut rng, 30, 9);
    let y = targets(&mut rng, task, 30);
    let enc = InputEncoder::fit(&x_train, task, None).unwrap();
    let fives = x_eval.narrow(0, 1, 2); // eval rows 31 and 32: column 3 is 5
    let mut partial = enc.flags();
    enc.observe(&mut partial, &fives).unwrap();
    let mut full = partial.clone();
    enc.observe(&mut full, &x_eval).unwrap();
    assert_ne!(partial.normalized_differs()[3], full.normalized_differs()[3]);
    let alone = model.embed(&model.context(&enc, &partial, &x_train, &y).unwrap(), &fives).unwrap();
    let together = model.embed(&model.context(&enc, &full, &x_train, &y).unwrap(), &fives).unwrap();
    assert!(max_diff(&alone, &together) > 1e-3);
    let expected = one_shot(&w, &c, &x_train, &y, &x_eval, None).narrow(0, 1, 2);
    assert!(max_diff(&together, &expected) < 1e-5);
    let expected_alone = one_shot(&w, &c, &x_train, &y, &fives, None);
    assert!(max_diff(&alone, &expected_alone) < 1e-5);
}

#[test]
fn the_positional_embedding_is_the_same_whatever_was_drawn_before() {
    let c = tiny(Task::Classification);
    let mut rng = Rng(6);
    let model = TabPfn::new(c.clone(), &state_dict(&checkpoint(&c, &mut rng)), Device::Cpu).unwrap();
    let first = model.positional_embedding(5).unwrap().unwrap();
    let _ = seeded(123, || Tensor::randn([100], (Kind::Float, Device::Cpu)));
    let again = model.positional_embedding(5).unwrap().unwrap();
    assert_eq!(max_diff(&first, &again), 0.0);
    assert_eq!(first.size(), [5, 16]);
    let other =
        TabPfn::new(ModelConfig { seed: 8, ..c.clone() }, &state_dict(&checkpoint(&c, &mut Rng(6))), Device::Cpu)
            .unwrap();
    assert!(max_diff(&other.positional_embedding(5).unwrap().unwrap(), &first) > 1e-3);
}

#[test]
fn weights_are_checked_by_name_and_shape() {
    let c = tiny(Task::Classification);
    let w = checkpoint(&c, &mut Rng(7));
    let key = "transformer_encoder.layers.1.self_attn_between_items._w_out";
    let mut bad = state_dict(&w);
    bad.insert(key, Tensor::zeros([4, 16, 4], (Kind::Float, Device::Cpu)));
    let e = TabPfn::new(c.clone(), &bad, Device::Cpu).err().unwrap().to_string();
    assert!(e.contains(key) && e.contains("has shape [4, 16, 4], expected [4, 4, 16]"), "{e}");

    let mut missing = state_dict(&w);
    missing.remove("add_thinking_tokens.row_token_values");
    let e = TabPfn::new(c.clone(), &missing, Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("add_thinking_tokens.row_token_values"), "{e}");

    let mut extra = state_dict(&w);
    extra.insert("encoder.5.layer.bias", Tensor::zeros([16], (Kind::Float, Device::Cpu)));
    let e = TabPfn::new(c.clone(), &extra, Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("unexpected weight encoder.5.layer.bias"), "{e}");

    // A classifier has no bar distribution.
    let mut criterion = state_dict(&w);
    criterion.insert("criterion.borders", Tensor::zeros([3], (Kind::Float, Device::Cpu)));
    assert!(TabPfn::new(c.clone(), &criterion, Device::Cpu).is_err());

    // remove_duplicate_features moves the encoder to encoder.6.
    let e = TabPfn::new(ModelConfig { remove_duplicate_features: true, ..c.clone() }, &state_dict(&w), Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("encoder.6.layer.weight"), "{e}");
}

#[test]
fn misuse_is_refused_with_a_reason() {
    let c = tiny(Task::Classification);
    let mut rng = Rng(8);
    let model = TabPfn::new(c.clone(), &state_dict(&checkpoint(&c, &mut rng)), Device::Cpu).unwrap();
    let (x_train, x_eval) = table(&mut rng, 30, 4);
    let y = targets(&mut rng, Task::Classification, 30);
    let reg = InputEncoder::fit(&x_train, Task::Regression, None).unwrap();
    let e = model.context(&reg, &reg.flags(), &x_train, &y).err().unwrap().to_string();
    assert!(e.contains("classifier") && e.contains("regressor"), "{e}");
    let enc = InputEncoder::fit(&x_train, Task::Classification, Some(12.0)).unwrap();
    let e = model.context(&enc, &enc.flags(), &x_train, &y.narrow(0, 0, 29)).err().unwrap().to_string();
    assert!(e.contains("[29]") && e.contains("[30]"), "{e}");
    let mut y_nan = Vec::<f64>::try_from(&y).unwrap();
    y_nan[4] = f64::NAN;
    let e = model.context(&enc, &enc.flags(), &x_train, &Tensor::from_slice(&y_nan)).err().unwrap().to_string();
    assert!(e.contains("train row 4"), "{e}");
    let ctx = model.context(&enc, &enc.flags(), &x_train, &y).unwrap();
    let e = model.embed(&ctx, &x_eval.narrow(1, 0, 6)).err().unwrap().to_string();
    assert!(e.contains("7 features"), "{e}");
    assert_eq!(model.embed(&ctx, &x_eval.narrow(0, 0, 0)).unwrap().size(), [0, 16]);

    // The packaged column-embedding table of emsize 192 / seed 42 is required, not guessed.
    let big = ModelConfig { emsize: 192, nhead: 6, nlayers: 0, seed: 42, ..c.clone() };
    let mut model = TabPfn::new(big.clone(), &state_dict(&checkpoint(&big, &mut rng)), Device::Cpu).unwrap();
    assert!(model.needs_column_table());
    let e = model.context(&enc, &enc.flags(), &x_train, &y).err().unwrap().to_string();
    assert!(e.contains("tabpfn_col_embedding.pt"), "{e}");
    let e = model.set_column_table(Tensor::zeros([10, 48], (Kind::Float, Device::Cpu))).err().unwrap().to_string();
    assert!(e.contains("[2000, 48]"), "{e}");
}

#[test]
fn targets_become_class_ranks_and_eval_rows_the_train_mean() {
    let cls = |v: &[f32]| {
        let (train, eval) = target_values(&Tensor::from_slice(v), v, Task::Classification);
        (Vec::<f32>::try_from(&train).unwrap(), eval)
    };
    // Mean 0.75: one class (0) below it.
    assert_eq!(cls(&[0.0, 0.0, 1.0, 2.0]), (vec![0.0, 0.0, 1.0, 2.0], 1.0));
    // Classes {0, 2}: 2 is the second class; mean 4/3 has one class below it.
    assert_eq!(cls(&[0.0, 2.0, 2.0]), (vec![0.0, 1.0, 1.0], 1.0));
    let (train, eval) = target_values(&Tensor::from_slice(&[1.0f32, 2.0, 6.0]), &[1.0, 2.0, 6.0], Task::Regression);
    assert_eq!((Vec::<f32>::try_from(&train).unwrap(), eval), (vec![1.0, 2.0, 6.0], 3.0));
}

#[test]
fn context_bytes_counts_the_kept_keys_and_values() {
    let c = tiny(Task::Classification);
    let mut rng = Rng(9);
    let model = TabPfn::new(c.clone(), &state_dict(&checkpoint(&c, &mut rng)), Device::Cpu).unwrap();
    let (x_train, _) = table(&mut rng, 30, 1);
    let y = targets(&mut rng, Task::Classification, 30);
    let enc = InputEncoder::fit(&x_train, Task::Classification, Some(12.0)).unwrap();
    let ctx = model.context(&enc, &enc.flags(), &x_train, &y).unwrap();
    // 2 layers x (3 groups + 1) tokens x (30 + 2) rows x head_dim 4 x (keys, values) x 4 bytes.
    let kv = 2 * 4 * 32 * 4 * 2 * 4;
    assert_eq!(ctx.kv_bytes(), kv);
    assert_eq!(ctx.rows(), 32);
    // Plus one layer's keys and values while they are concatenated, the state twice (32 rows x 4
    // tokens x 16) and one 2^24-float chunk.
    let working = 4 * (2 * 4 * 32 * 4 + 2 * 32 * 4 * 16 + (1 << 24));
    assert_eq!(context_bytes(&c, 30, 7), kv + working);
    // Without multiquery every head's keys and values are kept: nhead times more.
    let all = ModelConfig { multiquery_item_attention_for_test_set: false, ..c.clone() };
    assert_eq!(context_bytes(&all, 30, 7), 4 * kv + 4 * (4 * 2 * 4 * 32 * 4 + 2 * 32 * 4 * 16 + (1 << 24)));
    // 300 000 rows: one column's item attention (5 x rows x emsize floats) outgrows the chunk.
    let rows = 300_002u64;
    assert_eq!(context_bytes(&c, 300_000, 7), 4 * (3 * 2 * 4 * rows * 4 + 2 * rows * 4 * 16 + 5 * rows * 16));
}
