//! Pillow's resize on the model's device, for images decoded there (`--decode gpu`): the same
//! fixed-point arithmetic as `deepembed_image::resize`, each pass batched matrix products.
//!
//! A pass multiplies the 8-bit samples by its weights in 22-bit fixed point
//! (`resize::pass_taps`), adds half the scale, drops the fraction and clamps to 0..=255, as
//! Pillow's `clip8` does. Every product and partial sum is an integer of magnitude below 2^31,
//! which float64 holds exactly, so the products give Pillow's sums in any summation order: the
//! bytes are the CPU path's for the same decoded pixels (the tests compare them on the CPU).
//!
//! An output sample depends on a few neighbouring inputs only (7 for bilinear from 500 to 224),
//! so a pass does not multiply by its whole weight matrix, which is almost all zeros. Its
//! outputs go in tiles of [`TILE`]; a tile reads only the window of inputs its weights reach
//! (about `TILE` times the scale, plus the filter's reach), gathered first. From 500 to 224 that
//! is 78 inputs per tile instead of 500: about a sixth of the products.
//!
//! Images of different sizes go together: each is padded with zeros to the largest height and
//! width of its group, and to the widest window of the group; weights are zero there. A pass
//! takes every image's weights in one gather from a pool of its group's distinct sides, as the
//! host planned it ([`DeviceResize::plan`]): the same few operations for any number of images,
//! where each operation costs the host microseconds to queue on a GPU, ahead of the model's.
//!
//! Each image side's weights are made once on the host and cached on the device. The
//! `--decode gpu` path sends a chunk's new ones along with its other data, in its one
//! asynchronous copy from pinned memory ([`DeviceResize::missing`], [`DeviceResize::install`]):
//! photographs of mixed sizes bring new sides chunk after chunk, and a copy of its own from
//! ordinary memory would wait for the device's queued work each time.

use std::collections::HashMap;

use tch::{Device, Kind, Tensor};

use crate::image::resize::{pass_taps, Filter, FIXED_POINT_ROUNDING, FIXED_POINT_SCALE};

/// Outputs per tile: fewer means narrower windows (fewer products) and more, smaller matrix
/// products.
const TILE: usize = 32;

/// Device memory for weights kept between chunks (a 640-pixel side's take about 0.3 MiB): a
/// dataset's distinct image sides, a few hundred even for photographs of mixed sizes, are each
/// made and sent to the device once.
const CACHED_BYTES: usize = 512 << 20;

pub struct DeviceResize {
    filter: Filter,
    size: usize,
    device: Device,
    /// Outputs per tile ([`TILE`]; `size` makes one tile, the whole weight matrix).
    tile: usize,
    /// Each input side's tiles, with when they were last used (a count of uses).
    bands: HashMap<usize, Cached>,
    uses: u64,
    /// Bands `resize` made and sent itself, each a copy that waits (see `missing`).
    pub direct_uploads: u64,
}

struct Cached {
    band: Band,
    used: u64,
}

/// One input side's weights, by tile of outputs.
struct Band {
    /// Inputs in each tile's window.
    window: usize,
    /// (tiles) int64: the first input of each tile's window.
    starts: Tensor,
    /// (tiles, window, tile) float64: the weight of input `starts[j] + k` for output
    /// `j * tile + t` (zero past the last output).
    weights: Tensor,
}

impl DeviceResize {
    pub fn new(filter: Filter, size: usize, device: Device) -> DeviceResize {
        DeviceResize::with_tile(filter, size, device, TILE)
    }

    /// With `tile` outputs per tile (benchmarks compare tile sizes; `size` is the plain matrix
    /// product).
    pub fn with_tile(filter: Filter, size: usize, device: Device, tile: usize) -> DeviceResize {
        let tile = tile.clamp(1, size.max(1));
        DeviceResize { filter, size, device, tile, bands: HashMap::new(), uses: 0, direct_uploads: 0 }
    }

    /// `decoded`: (n, H, W, 3) bytes on the device, image `i` of `sizes[i]` = (width, height) at
    /// its top left. Returns the (n, size, size, 3) bytes Pillow's resize gives each image.
    ///
    /// The plan goes to the device in a copy of its own, which waits for the device's queued
    /// work: the `--decode gpu` path sends it with its other data instead ([`DeviceResize::plan`]).
    pub fn resize(&mut self, decoded: &Tensor, sizes: &[(usize, usize)]) -> Tensor {
        let plan = self.plan(sizes);
        let uploaded = Tensor::from_slice(&plan.indices).to_device(self.device);
        self.resize_planned(decoded, sizes, &plan, &uploaded)
    }

    /// What the host works out for resizing images of `sizes`, before anything runs on the
    /// device: each pass's distinct sides, and per image where its weights are. The caller
    /// sends `indices` to the device (int64) and hands them to [`DeviceResize::resize_planned`].
    pub fn plan(&self, sizes: &[(usize, usize)]) -> ResizePlan {
        let mut indices = Vec::with_capacity(6 * sizes.len());
        let sides = [0, 1].map(|pass| {
            let in_sizes: Vec<usize> = sizes.iter().map(|s| if pass == 0 { s.0 } else { s.1 }).collect();
            let mut sides = in_sizes.clone();
            sides.sort_unstable();
            sides.dedup();
            // Where each side's weights start in the pass's pool: the sides' weights one after
            // the other, (tiles, window, tile) each.
            let windows: Vec<usize> = sides.iter().map(|&s| self.window(s)).collect();
            let tiles = self.size.div_ceil(self.tile);
            let starts: Vec<usize> = windows
                .iter()
                .scan(0, |next, w| {
                    let start = *next;
                    *next += tiles * w * self.tile;
                    Some(start)
                })
                .collect();
            let place: Vec<usize> = in_sizes.iter().map(|s| sides.binary_search(s).expect("a side of these")).collect();
            indices.extend(place.iter().map(|&k| k as i64));
            indices.extend(place.iter().map(|&k| starts[k] as i64));
            indices.extend(place.iter().map(|&k| windows[k] as i64));
            sides
        });
        ResizePlan { sides, indices }
    }

    /// [`DeviceResize::resize`] with `plan` made by [`DeviceResize::plan`] for `sizes`, its
    /// indices already on the device (`uploaded`).
    pub fn resize_planned(
        &mut self,
        decoded: &Tensor,
        sizes: &[(usize, usize)],
        plan: &ResizePlan,
        uploaded: &Tensor,
    ) -> Tensor {
        let shape = decoded.size();
        let (n, height, width) = (shape[0], shape[1], shape[2]);
        let out = self.size as i64;
        assert_eq!(n as usize, sizes.len(), "one size per image");
        assert_eq!(uploaded.size(), [6 * n], "the plan for these images");
        let per_image = uploaded.view([2, 3, n]);
        // Horizontal: each of the (H, 3) rows of samples, along W.
        let rows = decoded.permute([0, 1, 3, 2]).reshape([n, height * 3, width]);
        let between = self.pass(&rows, &plan.sides[0], &per_image.get(0)).reshape([n, height, 3 * out]);
        // Vertical: each of the (3, out) columns, along H.
        let columns = between.transpose(1, 2);
        let resized = self.pass(&columns, &plan.sides[1], &per_image.get(1)).reshape([n, 3, out, out]);
        // (n, 3, out x, out y) -> (n, out y, out x, 3).
        resized.permute([0, 3, 2, 1]).to_kind(Kind::Uint8)
    }

    /// One pass: `samples` (n, rows, len), image `i`'s first samples of each row (as many as its
    /// side) resized to `self.size`, as (n, rows, size) float64 fixed-point results. `sides`:
    /// the pass's distinct input sides; `per_image` (3, n): each image's side's place among
    /// them, where its weights start in their pool, and its window.
    ///
    /// A fixed number of operations whatever the images: on a GPU each costs the host
    /// microseconds to queue, and the model's kernels are queued after them.
    fn pass(&mut self, samples: &Tensor, sides: &[usize], per_image: &Tensor) -> Tensor {
        let shape = samples.size();
        let (n, rows, len) = (shape[0], shape[1], shape[2]);
        let tile = self.tile as i64;
        let tiles = self.size.div_ceil(self.tile) as i64;
        let bands: Vec<Band> = sides.iter().map(|&s| self.band(s)).collect();
        let window = bands.iter().map(|b| b.window).max().unwrap_or(1) as i64;
        let (place, first, own_window) = (per_image.get(0), per_image.get(1), per_image.get(2).view([n, 1, 1, 1]));
        // Each image's tiles' windows, as indices into its samples; past an image's own window
        // (a narrower one padded to the group's), they may leave its samples: clamped, the
        // weights there being zero.
        let starts = Tensor::stack(&bands.iter().map(|b| &b.starts).collect::<Vec<_>>(), 0).index_select(0, &place);
        let offsets = Tensor::arange(window, (Kind::Int64, self.device));
        let reach = (starts.unsqueeze(-1) + &offsets).clamp_max(len - 1).view([n, tiles, 1, window]);
        // Gathered straight into (n, tiles, rows, window), the layout of the products.
        let gathered = samples
            .unsqueeze(1)
            .expand([n, tiles, rows, len], false)
            .gather(3, &reach.expand([n, tiles, rows, window], false), false)
            .to_kind(Kind::Double)
            .view([n * tiles, rows, window]);
        // Each image's (tiles, window, tile) weights, taken from the pool of the sides' weights
        // (then `tile` zeros): weight (j, k, t) of an image is at `first + (j * its window + k) *
        // tile + t`, and past its own window, in the zeros.
        let mut pool: Vec<Tensor> = bands.iter().map(|b| b.weights.view([-1])).collect();
        pool.push(Tensor::zeros([tile], (Kind::Double, self.device)));
        let pool = Tensor::cat(&pool, 0);
        let zeros_at = pool.size()[0] - tile;
        let tile_index = Tensor::arange(tiles, (Kind::Int64, self.device)).view([1, tiles, 1, 1]);
        let input = offsets.view([1, 1, window, 1]);
        let output = Tensor::arange(tile, (Kind::Int64, self.device)).view([1, 1, 1, tile]);
        let row_start = (first.view([n, 1, 1, 1]) + (tile_index * &own_window + &input) * tile)
            .masked_fill(&input.ge_tensor(&own_window), zeros_at);
        let weights = pool.take(&(row_start + output));
        // Pillow's `clip8`: `clamp(floor((sum + 2^21) / 2^22), 0, 255)`, exact in float64 (integer
        // sums, a division by a power of two); the rounding term is added by the product itself.
        // Filled on the device: a copy from the host would wait for the device's queued work.
        let rounding = Tensor::full([], FIXED_POINT_ROUNDING, (Kind::Double, self.device));
        let mut clipped = rounding
            .baddbmm(&gathered, &weights.view([n * tiles, window, tile]), 1.0, 1.0)
            .floor_divide_scalar(FIXED_POINT_SCALE);
        let _ = clipped.clamp_(0.0, 255.0);
        let outputs = clipped.view([n, tiles, rows, tile]).permute([0, 2, 1, 3]).reshape([n, rows, tiles * tile]);
        outputs.narrow(2, 0, self.size as i64)
    }

    /// The window of `in_size`'s tiles, from the cache or worked out.
    fn window(&self, in_size: usize) -> usize {
        self.bands.get(&in_size).map_or_else(|| self.host_band(in_size).window, |c| c.band.window)
    }

    /// The weights of those of `in_sizes` not cached yet, made on the host, once each: a caller
    /// sends them to the device with its own data, in one asynchronous copy, and hands them to
    /// [`DeviceResize::install`]. (A band made by `resize` itself is copied to the device from
    /// ordinary memory, which waits for the device's queued work.)
    pub fn missing(&self, in_sizes: impl IntoIterator<Item = usize>) -> Vec<HostBand> {
        let mut sizes: Vec<usize> = in_sizes.into_iter().filter(|s| !self.bands.contains_key(s)).collect();
        sizes.sort_unstable();
        sizes.dedup();
        sizes.into_iter().map(|s| self.host_band(s)).collect()
    }

    /// Caches `band`, whose starts (int64, one per tile) and weights (float64, flat) are on the
    /// device already.
    pub fn install(&mut self, band: &HostBand, starts: Tensor, weights: Tensor) {
        let tiles = self.size.div_ceil(self.tile) as i64;
        let weights = weights.view([tiles, band.window as i64, self.tile as i64]);
        self.cache(band.in_size, Band { window: band.window, starts, weights });
    }

    /// `in_size`'s weights, from the cache or made and cached.
    fn band(&mut self, in_size: usize) -> Band {
        self.uses += 1;
        if let Some(cached) = self.bands.get_mut(&in_size) {
            cached.used = self.uses;
            return cached.band.shallow_clone();
        }
        let host = self.host_band(in_size);
        self.direct_uploads += 1;
        let (starts, weights) = (Tensor::from_slice(&host.starts), Tensor::from_slice(&host.weights));
        self.install(&host, starts.to_device(self.device), weights.to_device(self.device));
        self.bands[&in_size].band.shallow_clone()
    }

    /// Keeps `band` for `in_size`, most recently used, dropping the least recently used ones
    /// beyond [`CACHED_BYTES`].
    fn cache(&mut self, in_size: usize, band: Band) {
        let bytes = |b: &Band| b.weights.numel() * 8;
        let mut cached: usize = self.bands.values().map(|c| bytes(&c.band)).sum();
        while cached + bytes(&band) > CACHED_BYTES {
            let Some(oldest) = self.bands.iter().min_by_key(|(_, c)| c.used).map(|(s, _)| *s) else { break };
            cached -= bytes(&self.bands.remove(&oldest).expect("just found").band);
        }
        self.uses += 1;
        self.bands.insert(in_size, Cached { band, used: self.uses });
    }

    /// `in_size`'s taps cut into tiles of outputs, each with the window of inputs its taps
    /// reach.
    fn host_band(&self, in_size: usize) -> HostBand {
        let taps = pass_taps(self.filter, in_size, self.size);
        let tile = self.tile;
        let spans: Vec<(usize, usize)> = taps
            .chunks(tile)
            .map(|outputs| {
                let first = outputs.iter().map(|(x, _)| *x).min().unwrap_or(0);
                let end = outputs.iter().map(|(x, w)| x + w.len()).max().unwrap_or(0);
                (first, end.max(first + 1))
            })
            .collect();
        let window = spans.iter().map(|(first, end)| end - first).max().unwrap_or(1);
        let mut weights = vec![0f64; spans.len() * window * tile];
        for (j, (outputs, &(first, _))) in taps.chunks(tile).zip(&spans).enumerate() {
            for (t, (xmin, w)) in outputs.iter().enumerate() {
                for (k, &weight) in w.iter().enumerate() {
                    weights[(j * window + xmin - first + k) * tile + t] = f64::from(weight);
                }
            }
        }
        let starts = spans.iter().map(|&(first, _)| first as i64).collect();
        HostBand { in_size, window, starts, weights }
    }
}

/// The host's part of a resize (see [`DeviceResize::plan`]).
pub struct ResizePlan {
    /// Per pass (horizontal, vertical), the distinct input sides, in the order their weights
    /// are pooled.
    sides: [Vec<usize>; 2],
    /// (2 passes, 3, n images), flat, for the device: each image's side's place in its pass's
    /// sides, where its weights start in the pass's pool, and its window.
    pub indices: Vec<i64>,
}

/// One input side's weights made on the host (see [`DeviceResize::missing`]).
pub struct HostBand {
    pub in_size: usize,
    window: usize,
    /// The first input of each tile's window.
    pub starts: Vec<i64>,
    /// (tiles, window, tile), flat: the weight of input `starts[j] + k` for output
    /// `j * tile + t`.
    pub weights: Vec<f64>,
}

impl Band {
    /// The same tensors, shared.
    fn shallow_clone(&self) -> Band {
        Band { window: self.window, starts: self.starts.shallow_clone(), weights: self.weights.shallow_clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::decode::RgbImage;
    use crate::image::resize::resize_into;

    /// Images of mixed sizes (shrunk, enlarged, one side already at the target, both, one far
    /// larger than the rest), padded into one group, give the CPU path's bytes, for both
    /// filters, for an output size that is not a whole number of tiles, and for any tile size.
    #[test]
    fn a_padded_group_gives_the_cpu_resize_bytes() {
        let sizes = [(500, 375), (224, 300), (37, 224), (224, 224), (61, 19), (640, 480), (1999, 33), (299, 299)];
        let (width, height) = (1999, 480);
        for out_size in [224, 299] {
            for filter in [Filter::Bilinear, Filter::Bicubic] {
                let mut expected = Vec::new();
                let decoded = Tensor::zeros([sizes.len() as i64, height, width, 3], (Kind::Uint8, Device::Cpu));
                for (i, &(w, h)) in sizes.iter().enumerate() {
                    tch::manual_seed(i as i64);
                    let image = Tensor::randint(256, [h as i64, w as i64, 3], (Kind::Uint8, Device::Cpu));
                    let pixels = Vec::<u8>::try_from(image.view([-1])).unwrap();
                    decoded.get(i as i64).narrow(0, 0, h as i64).narrow(1, 0, w as i64).copy_(&image);
                    let mut out = vec![0u8; out_size * out_size * 3];
                    resize_into(&RgbImage { width: w, height: h, pixels }, out_size, out_size, filter, &mut out);
                    expected.extend(out);
                }
                // Bytes past each image, as a reused buffer holds: they must not count.
                let _ = decoded.get(0).narrow(1, 500, 100).fill_(255);
                let _ = decoded.get(0).narrow(0, 375, 100).fill_(255);
                // Tiles of the default size, small ones, and one tile (the whole matrix).
                for tile in [TILE, 7, out_size] {
                    let mut resize = DeviceResize::with_tile(filter, out_size, Device::Cpu, tile);
                    let ours = resize.resize(&decoded, &sizes);
                    assert_eq!(ours.size(), [sizes.len() as i64, out_size as i64, out_size as i64, 3]);
                    let ours = Vec::<u8>::try_from(ours.contiguous().view([-1])).unwrap();
                    let differing = ours.iter().zip(&expected).filter(|(a, b)| a != b).count();
                    let total = expected.len();
                    assert_eq!(
                        differing, 0,
                        "{filter:?} to {out_size}, tiles of {tile}: {differing} of {total} differ"
                    );
                }
            }
        }
    }
}
