//! Ensemble member 0's feature pipeline (`EnsembleConfig.to_pipeline`, docs/TABPFN.md §4), in tabpfn's
//! order: remove constant columns, reshape (subsample, lay out, transform; SVD appended),
//! re-encode categoricals, fingerprint, shuffle. Fitted on the train columns; eval rows go
//! through the fitted steps independently of each other.

use anyhow::Result;

use super::config::{CategoricalEncoding, GlobalTransformer, MemberConfig};
use super::ordinal::Ordinal;
use super::reshape::Reshape;
use super::svd::Svd;
use super::{constant, fingerprint, ordinal, reshape, shuffle, svd, Rng};

#[derive(Debug, Clone)]
pub struct Member {
    kept: Vec<usize>,
    reshape: Reshape,
    svd: Option<Svd>,
    ordinal: Option<Ordinal>,
    salt: Option<f64>,
    permutation: Vec<usize>,
}

/// Keeps the columns at the (ascending) positions `kept`, moving them.
fn keep(columns: Vec<Vec<f64>>, kept: &[usize]) -> Vec<Vec<f64>> {
    let mut wanted = kept.iter().peekable();
    columns.into_iter().enumerate().filter_map(|(j, c)| (wanted.next_if_eq(&&j).is_some()).then_some(c)).collect()
}

impl Member {
    /// Fits on the encoded train columns (`categorical`: tabpfn's categorical indices);
    /// returns the member and the train matrix, row-major.
    pub fn fit<R: Rng>(
        columns: Vec<Vec<f64>>,
        categorical: &[usize],
        cfg: &MemberConfig,
        rng_for: &impl Fn(u64) -> R,
    ) -> Result<(Member, Vec<f64>)> {
        let rows = columns.first().map_or(0, Vec::len);
        let (kept, categorical) = constant::fit(&columns, categorical)?;
        let columns = keep(columns, &kept);
        let reshaped = reshape::fit(columns, &categorical, rows, cfg, rng_for)?;
        let (mut columns, categorical) = (reshaped.columns, reshaped.categorical);
        let divisor = match cfg.global_transformer {
            GlobalTransformer::None => None,
            GlobalTransformer::Svd => Some(2),
            GlobalTransformer::SvdQuarterComponents => Some(4),
        };
        let svd = match divisor {
            Some(divisor) if reshaped.features >= 2 => {
                let k = svd::component_count(rows, reshaped.features, divisor);
                let (svd, components) = svd::fit(&columns, k)?;
                columns.extend(components);
                Some(svd)
            }
            _ => None,
        };
        let ordinal = match cfg.categorical {
            CategoricalEncoding::Ordinal { filter, shuffled } => {
                let (step, recoded) = ordinal::fit(columns, &categorical, filter, shuffled, cfg.seed, rng_for);
                columns = recoded;
                Some(step)
            }
            CategoricalEncoding::None | CategoricalEncoding::Numeric => None,
        };
        let salt = cfg.fingerprint.then(|| fingerprint::salt(&mut rng_for(cfg.seed)));
        if let Some(salt) = salt {
            let hashes = fingerprint::train(&columns, salt);
            columns.push(hashes);
        }
        let permutation = shuffle::permutation(cfg.feature_shift, columns.len(), cfg.seed, rng_for);
        let member = Member { kept, reshape: reshaped.step, svd, ordinal, salt, permutation };
        let matrix = member.row_major(&columns, rows);
        Ok((member, matrix))
    }

    /// The number of output columns.
    pub fn width(&self) -> usize {
        self.permutation.len()
    }

    /// Transforms encoded eval columns into the eval matrix, row-major.
    pub fn transform(&self, columns: Vec<Vec<f64>>) -> Vec<f64> {
        let rows = columns.first().map_or(0, Vec::len);
        let mut columns = self.reshape.transform(keep(columns, &self.kept));
        if let Some(svd) = &self.svd {
            let components = svd.transform(&columns);
            columns.extend(components);
        }
        if let Some(ordinal) = &self.ordinal {
            columns = ordinal.transform(columns);
        }
        if let Some(salt) = self.salt {
            let hashes = fingerprint::eval(&columns, salt);
            columns.push(hashes);
        }
        self.row_major(&columns, rows)
    }

    fn row_major(&self, columns: &[Vec<f64>], rows: usize) -> Vec<f64> {
        let width = self.permutation.len();
        let mut out = vec![0.0; rows * width];
        for (c, &j) in self.permutation.iter().enumerate() {
            for (i, &v) in columns[j].iter().enumerate() {
                out[i * width + c] = v;
            }
        }
        out
    }
}
