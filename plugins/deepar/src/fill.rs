//! `constant_fill_strategy`: the values pytorch-forecasting puts in the hours it fills inside a
//! window (missing hours, with `allow_missing_timesteps`) instead of the latest earlier row's.
//! The dataset encodes each constant once, as it encodes the variable: a continuous input through
//! its scaler, the target through the target normaliser (for one fitted on each window, the raw
//! constant joins the window's encoder), a category through its encoder.

use std::path::Path;

use anyhow::{anyhow, Result};
use deepembed_sdk::checkpoint::Value;

use crate::normaliser::{fitted_input, Normaliser, Scales};
use crate::saved::{Categorical, Real, RealSource, Target};

/// The constants, ready for a window: in the form the records hold their slots.
#[derive(Debug, Clone, Default)]
pub struct ConstantFill {
    /// Continuous input slots and their scaled constants.
    pub reals: Vec<(usize, f32)>,
    /// Categorical inputs and their constants' codes.
    pub codes: Vec<(usize, u32)>,
    /// Each target's constant, if it has one, as its slot holds it: normalised, or, for a
    /// normaliser fitted on each window, prepared (transformed) for the window's fit.
    pub targets: Vec<Option<f32>>,
}

impl ConstantFill {
    /// Reads the dataset's `constant_fill_strategy` for the model's inputs.
    pub fn read(
        dataset: &Value,
        reals: &[Real],
        targets: &[Target],
        categoricals: &[Categorical],
        path: &Path,
    ) -> Result<ConstantFill> {
        let mut fill = ConstantFill { targets: vec![None; targets.len()], ..ConstantFill::default() };
        let entries = dataset.get("constant_fill_strategy").and_then(Value::dict_entries).unwrap_or_default();
        for (name, value) in entries {
            let name = name
                .as_str()
                .ok_or_else(|| anyhow!("{}: constant_fill_strategy has a non-string key", path.display()))?;
            let refuse = |why: &str| -> anyhow::Error {
                anyhow!("{}: constant_fill_strategy fills '{name}', {why}", path.display())
            };
            let number =
                || value.as_f64().ok_or_else(|| refuse(&format!("with a {}, not a number", value.type_name())));
            if let Some(column) = categoricals.iter().position(|c| c.name == name) {
                let text = match value {
                    Value::Str(s) => s.clone(),
                    Value::Int(i) => i.to_string(),
                    other => return Err(refuse(&format!("with a {}, not a category", other.type_name()))),
                };
                let code = categoricals[column].code_of(Some(&text)).map_err(|e| refuse(&e))?;
                let code = u32::try_from(code).map_err(|_| refuse("with a code out of range"))?;
                fill.codes.push((column, code));
            } else if let Some(slot) = reals.iter().position(|r| r.name == name) {
                let real = &reals[slot];
                match &real.source {
                    RealSource::Target(k) => {
                        fill.targets[*k] = Some(match &targets[*k].normaliser {
                            Normaliser::Fitted { transformation, scales: Scales::Global { center, scale } } => {
                                fitted_input(*transformation, (*center, *scale), number()?).map_err(|e| refuse(&e))?
                            }
                            Normaliser::PerWindow(normaliser) => {
                                normaliser.prepare(&[Some(number()?)]).remove(0).map_err(|e| refuse(&e))?
                            }
                            Normaliser::Fitted { scales: Scales::ByGroup(_), .. } => return Err(refuse(
                                "and its normaliser scales by series: pytorch-forecasting encodes the constant with the scales of whichever series sorts first, which deepembed does not copy",
                            )),
                        });
                    }
                    RealSource::Column(_) => {
                        // A scikit-learn scaler is the affine case of a fitted normaliser.
                        let (transformation, params) = match &real.normaliser {
                            None => (None, (real.center, real.scale)),
                            Some(Normaliser::Fitted { transformation, scales: Scales::Global { center, scale } }) => {
                                (*transformation, (*center, *scale))
                            }
                            Some(_) => return Err(refuse(
                                "and its scaler is fitted per series or per window, which pytorch-forecasting applies to the constant in ways deepembed does not copy",
                            )),
                        };
                        fill.reals
                            .push((slot, fitted_input(transformation, params, number()?).map_err(|e| refuse(&e))?));
                    }
                    _ => {
                        return Err(refuse(
                            "which pytorch-forecasting computes itself; deepembed fills input columns and the target",
                        ))
                    }
                }
            } else {
                // Not an input of the network (a lagged category's, say): nothing to fill.
                log::debug!("constant_fill_strategy fills '{name}', which the network does not read");
            }
        }
        Ok(fill)
    }
}
