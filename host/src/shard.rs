//! `--shard I/N`: the I-th (from 0) of N contiguous row ranges of the embedded input, so N
//! processes (a Slurm array, several GPUs) can each embed one range and `deepembed merge` can put
//! the results back together.
//!
//! Cut points are the even ones (`k * rows / N`) moved to the nearest row-group boundary when one
//! is within a quarter of a range, so most shards read whole row groups; otherwise (a file of one
//! big row group, say) the even cut stands and the reader skips rows within the group.

use anyhow::{bail, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl Shard {
    /// `I/N` with 0 <= I < N, or `slurm`: this task's place in a Slurm array job.
    pub fn parse(text: &str) -> Result<Shard> {
        if text == "slurm" {
            return Shard::from_slurm(|name| std::env::var(name).ok());
        }
        let parsed = text.split_once('/').and_then(|(i, n)| Some((i.trim().parse().ok()?, n.trim().parse().ok()?)));
        match parsed {
            Some((index, count)) if count > 0 && index < count => Ok(Shard { index, count }),
            _ => bail!("--shard {text}: expected I/N with 0 <= I < N, e.g. --shard 0/4 for the first of four shards"),
        }
    }

    /// I and N of a Slurm array task: I = SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN (arrays
    /// may start at 1), N = SLURM_ARRAY_TASK_COUNT. Arrays with a step (`--array=0-9:2`) or a
    /// list are refused: their ids are not the range MIN..MIN+COUNT.
    fn from_slurm(var: impl Fn(&str) -> Option<String>) -> Result<Shard> {
        let number = |name: &str| -> Result<u64> {
            let value = var(name).ok_or_else(|| {
                anyhow::anyhow!(
                    "--shard slurm: {name} is not set; run it as a task of a Slurm array job (sbatch --array=0-3)"
                )
            })?;
            value.trim().parse().map_err(|_| anyhow::anyhow!("--shard slurm: {name}={value} is not a number"))
        };
        let (id, min, count) =
            (number("SLURM_ARRAY_TASK_ID")?, number("SLURM_ARRAY_TASK_MIN")?, number("SLURM_ARRAY_TASK_COUNT")?);
        if let Ok(max) = number("SLURM_ARRAY_TASK_MAX") {
            if max + 1 != min + count {
                bail!(
                    "--shard slurm: the array's ids are not {min}..{}: use a plain range (sbatch --array={min}-{}), \
                     not a step or a list",
                    min + count - 1,
                    min + count - 1
                );
            }
        }
        match id.checked_sub(min) {
            Some(index) if index < count => Ok(Shard { index, count }),
            _ => bail!("--shard slurm: task {id} is outside the array {min}..{}", min + count - 1),
        }
    }

    /// This shard's rows `[start, end)` of `rows`, given the row-group boundaries of the input
    /// (cumulative row counts, 0 and `rows` included).
    pub fn range(&self, rows: u64, boundaries: &[u64]) -> (u64, u64) {
        (self.cut(self.index, rows, boundaries), self.cut(self.index + 1, rows, boundaries))
    }

    /// The k-th cut point: 0 for k = 0, `rows` for k = N, monotonic in k.
    fn cut(&self, k: u64, rows: u64, boundaries: &[u64]) -> u64 {
        let even = (k as u128 * rows as u128 / self.count as u128) as u64;
        if k == 0 || k == self.count {
            return even;
        }
        let tolerance = rows / self.count / 4;
        let nearest = boundaries.iter().copied().min_by_key(|b| b.abs_diff(even)).unwrap_or(even);
        // The snapped cuts must stay ordered: keep each within its own quarter-range window.
        if nearest.abs_diff(even) <= tolerance {
            nearest
        } else {
            even
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(n: u64, rows: u64, boundaries: &[u64]) -> Vec<(u64, u64)> {
        (0..n).map(|i| Shard { index: i, count: n }.range(rows, boundaries)).collect()
    }

    #[test]
    fn shards_cover_every_row_once() {
        for (rows, groups) in [(10u64, 1u64), (1000, 7), (1001, 1001), (5, 1), (0, 1)] {
            let per = rows.div_ceil(groups).max(1);
            let mut boundaries: Vec<u64> = (0..=rows).step_by(per as usize).collect();
            boundaries.push(rows);
            for n in [1, 2, 3, 4, 7, 16] {
                let r = ranges(n, rows, &boundaries);
                assert_eq!(r[0].0, 0);
                assert_eq!(r.last().unwrap().1, rows);
                assert!(r.windows(2).all(|w| w[0].1 == w[1].0 && w[0].0 <= w[0].1), "{rows} rows, {n} shards: {r:?}");
            }
        }
    }

    #[test]
    fn cuts_move_to_nearby_row_group_boundaries() {
        // 1000 rows in groups of 100: four shards cut at 200/300, 500, 700/800, not 250 and 750.
        let boundaries: Vec<u64> = (0..=1000).step_by(100).collect();
        let r = ranges(4, 1000, &boundaries);
        assert!(r.iter().all(|(a, b)| a % 100 == 0 && b % 100 == 0), "{r:?}");
        // One big group: even cuts.
        assert_eq!(ranges(4, 1000, &[0, 1000]), vec![(0, 250), (250, 500), (500, 750), (750, 1000)]);
    }

    #[test]
    fn slurm_array_tasks_are_shards() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        };
        let task = env(&[
            ("SLURM_ARRAY_TASK_ID", "3"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
            ("SLURM_ARRAY_TASK_MAX", "4"),
        ]);
        assert_eq!(Shard::from_slurm(task).unwrap(), Shard { index: 2, count: 4 });
        let stepped = env(&[
            ("SLURM_ARRAY_TASK_ID", "2"),
            ("SLURM_ARRAY_TASK_MIN", "0"),
            ("SLURM_ARRAY_TASK_COUNT", "3"),
            ("SLURM_ARRAY_TASK_MAX", "4"),
        ]);
        assert!(Shard::from_slurm(stepped).unwrap_err().to_string().contains("plain range"));
        let outside = env(&[]);
        assert!(Shard::from_slurm(outside).unwrap_err().to_string().contains("SLURM_ARRAY_TASK_ID is not set"));
    }

    #[test]
    fn bad_specs_are_refused() {
        assert_eq!(Shard::parse("2/4").unwrap(), Shard { index: 2, count: 4 });
        for bad in ["4/4", "1/0", "x/2", "1", "-1/2"] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
    }
}
