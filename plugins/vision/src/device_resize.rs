//! Pillow's resize on the model's device, for images decoded there (`--decode gpu`): the same
//! fixed-point arithmetic as `deepembed_image::resize`, each pass a batched matrix product.
//!
//! A pass multiplies the 8-bit samples by its weights in 22-bit fixed point
//! (`resize::weight_matrix`), adds half the scale, drops the fraction and clamps to 0..=255, as
//! Pillow's `clip8` does. Every product and partial sum is an integer of magnitude below 2^31,
//! which float64 holds exactly, so the products give Pillow's sums in any summation order: the
//! bytes are the CPU path's for the same decoded pixels (the tests compare them on the CPU).
//!
//! Images of different sizes go together: each is padded with zeros to the largest height and
//! width of its group, and its weight matrices have zero columns there.

use tch::{Device, Kind, Tensor};

use crate::image::resize::{weight_matrix, Filter, FIXED_POINT_ROUNDING, FIXED_POINT_SCALE};

/// Device memory for weight matrices kept between chunks (a matrix for a 640-pixel side is
/// 1.1 MiB): a dataset's distinct image sides, a few hundred even for photographs of mixed
/// sizes, are each made and sent to the device once.
const CACHED_BYTES: usize = 512 << 20;

pub struct DeviceResize {
    filter: Filter,
    size: usize,
    device: Device,
    /// Most recently used last: (input size, the `size` x input size float64 weights).
    matrices: Vec<(usize, Tensor)>,
}

impl DeviceResize {
    pub fn new(filter: Filter, size: usize, device: Device) -> DeviceResize {
        DeviceResize { filter, size, device, matrices: Vec::new() }
    }

    /// `decoded`: (n, H, W, 3) bytes on the device, image `i` of `sizes[i]` = (width, height) at
    /// its top left. Returns the (n, size, size, 3) bytes Pillow's resize gives each image.
    pub fn resize(&mut self, decoded: &Tensor, sizes: &[(usize, usize)]) -> Tensor {
        let shape = decoded.size();
        let (n, height, width) = (shape[0], shape[1], shape[2]);
        let out = self.size as i64;
        assert_eq!(n as usize, sizes.len(), "one size per image");
        let horizontal = self.padded_matrices(sizes.iter().map(|s| s.0), width);
        let vertical = self.padded_matrices(sizes.iter().map(|s| s.1), height);
        // Horizontal: (n, H, 3, W) samples by (n, W, out) weights.
        let samples = decoded.permute([0, 1, 3, 2]).to_kind(Kind::Double).reshape([n, height * 3, width]);
        let between = fixed_point(&samples.bmm(&horizontal.transpose(1, 2))).reshape([n, height, 3 * out]);
        // Vertical: (n, out, H) weights by (n, H, 3 * out) samples.
        let resized = fixed_point(&vertical.bmm(&between)).reshape([n, out, 3, out]);
        resized.permute([0, 1, 3, 2]).to_kind(Kind::Uint8)
    }

    /// The weight matrices for inputs of `sizes`, each padded with zero columns to `padded`:
    /// (n, self.size, padded) float64 on the device.
    fn padded_matrices(&mut self, sizes: impl Iterator<Item = usize>, padded: i64) -> Tensor {
        let sizes: Vec<usize> = sizes.collect();
        let all = Tensor::zeros([sizes.len() as i64, self.size as i64, padded], (Kind::Double, self.device));
        for (i, &size) in sizes.iter().enumerate() {
            let matrix = self.matrix(size);
            all.get(i as i64).narrow(1, 0, size as i64).copy_(&matrix);
        }
        all
    }

    /// The (self.size, in_size) float64 weights, from the cache or made and cached.
    fn matrix(&mut self, in_size: usize) -> Tensor {
        if let Some(i) = self.matrices.iter().position(|(s, _)| *s == in_size) {
            let entry = self.matrices.remove(i);
            let matrix = entry.1.shallow_clone();
            self.matrices.push(entry);
            return matrix;
        }
        let bytes = |in_size: usize| in_size * self.size * 8;
        let mut cached: usize = self.matrices.iter().map(|(s, _)| bytes(*s)).sum();
        while cached + bytes(in_size) > CACHED_BYTES && !self.matrices.is_empty() {
            cached -= bytes(self.matrices.remove(0).0);
        }
        let weights: Vec<f64> = weight_matrix(self.filter, in_size, self.size).into_iter().map(f64::from).collect();
        let matrix = Tensor::from_slice(&weights).view([self.size as i64, in_size as i64]).to_device(self.device);
        self.matrices.push((in_size, matrix.shallow_clone()));
        matrix
    }
}

/// Pillow's `clip8` of fixed-point sums: `clamp(floor((sum + 2^21) / 2^22), 0, 255)`, exact in
/// float64 (a division by a power of two).
fn fixed_point(sums: &Tensor) -> Tensor {
    ((sums + FIXED_POINT_ROUNDING) / FIXED_POINT_SCALE).floor().clamp(0.0, 255.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::decode::RgbImage;
    use crate::image::resize::resize_into;

    /// Images of mixed sizes (shrunk, enlarged, one side already at the target, both), padded
    /// into one group, give the CPU path's bytes, for both filters.
    #[test]
    fn a_padded_group_gives_the_cpu_resize_bytes() {
        let sizes = [(500, 375), (224, 300), (37, 224), (224, 224), (61, 19), (640, 480)];
        let (width, height) = (640, 480);
        for filter in [Filter::Bilinear, Filter::Bicubic] {
            let mut expected = Vec::new();
            let decoded = Tensor::zeros([sizes.len() as i64, height, width, 3], (Kind::Uint8, Device::Cpu));
            for (i, &(w, h)) in sizes.iter().enumerate() {
                tch::manual_seed(i as i64);
                let image = Tensor::randint(256, [h as i64, w as i64, 3], (Kind::Uint8, Device::Cpu));
                let pixels = Vec::<u8>::try_from(image.view([-1])).unwrap();
                decoded.get(i as i64).narrow(0, 0, h as i64).narrow(1, 0, w as i64).copy_(&image);
                let mut out = vec![0u8; 224 * 224 * 3];
                resize_into(&RgbImage { width: w, height: h, pixels }, 224, 224, filter, &mut out);
                expected.extend(out);
            }
            let mut resize = DeviceResize::new(filter, 224, Device::Cpu);
            let ours = resize.resize(&decoded, &sizes);
            assert_eq!(ours.size(), [sizes.len() as i64, 224, 224, 3]);
            let ours = Vec::<u8>::try_from(ours.contiguous().view([-1])).unwrap();
            let differing = ours.iter().zip(&expected).filter(|(a, b)| a != b).count();
            assert_eq!(differing, 0, "{filter:?}: {differing} of {} bytes differ", expected.len());
        }
    }
}
