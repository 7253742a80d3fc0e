//! libtorch's autocast with a chosen half type, on the CPU or on CUDA: the one thing the run
//! needs from libtorch that tch does not bind. tch's `autocast` switches CUDA autocast on and
//! off through deprecated entry points (libtorch warns on each use) and cannot choose the type,
//! which is float16 on CUDA and bfloat16 on the CPU unless set. Here the four functions of
//! `ATen/autocast_mode.h` that `torch.autocast(device_type, dtype)` uses are called directly.
//!
//! Safety contract of this module (the only `unsafe` code of deepembed outside [`boundary`]):
//!
//! - The functions are C++ functions of libtorch, declared here under their Itanium-mangled
//!   names (the ABI of the Linux libtorch deepembed builds against; the names are checked at
//!   link time, so a libtorch without them fails to link instead of misbehaving).
//! - Their parameters are `c10::DeviceType` and `c10::ScalarType`, both `enum class : int8_t`,
//!   and `bool`: passed and returned in registers exactly as `i8` and `bool` in the C calling
//!   convention. The values passed are the enums' own (CPU 0, CUDA 1; Half 5, BFloat16 15,
//!   fixed by c10's headers since they were written), spelled once, below.
//! - None of them throws for the CPU and CUDA device types (they read and write thread-local
//!   switches and a per-device type table), so no C++ exception can reach Rust. Other device
//!   types are never passed: [`Autocast`]'s device is a [`DeviceKind`].
//! - `increment_nesting`, `decrement_nesting` and `clear_cache` are torch-sys's C bindings, used
//!   as tch's `autocast` uses them. They catch C++ exceptions into torch-sys's last-error slot,
//!   which tch checks after its next call; none of these three can fail.
//!
//! [`boundary`]: crate::boundary

use crate::settings::{DeviceKind, Precision};

// c10::DeviceType and c10::ScalarType values (torch/headeronly/core/{DeviceType,ScalarType}.h).
const DEVICE_CPU: i8 = 0;
const DEVICE_CUDA: i8 = 1;
const SCALAR_HALF: i8 = 5;
const SCALAR_BFLOAT16: i8 = 15;

extern "C" {
    #[link_name = "_ZN2at8autocast19is_autocast_enabledEN3c1010DeviceTypeE"]
    fn is_autocast_enabled(device: i8) -> bool;
    #[link_name = "_ZN2at8autocast20set_autocast_enabledEN3c1010DeviceTypeEb"]
    fn set_autocast_enabled(device: i8, enabled: bool);
    #[link_name = "_ZN2at8autocast18get_autocast_dtypeEN3c1010DeviceTypeE"]
    fn get_autocast_dtype(device: i8) -> i8;
    #[link_name = "_ZN2at8autocast18set_autocast_dtypeEN3c1010DeviceTypeENS1_10ScalarTypeE"]
    fn set_autocast_dtype(device: i8, dtype: i8);
}

/// Runs `f` under the autocast `precision` asks for on `device` (fp32: no autocast at all), as
/// `with torch.autocast(device_type, dtype):` does: matrix products, convolutions and attention
/// in the half type, reductions and normalisations in float32. Autocast is per thread: it covers
/// what `f` runs on this thread. The previous switch and type are restored afterwards, also
/// when `f` panics.
pub fn autocast<T>(device: DeviceKind, precision: Precision, f: impl FnOnce() -> T) -> T {
    let dtype = match precision {
        Precision::Fp32 => return f(),
        Precision::Fp16 => SCALAR_HALF,
        Precision::Bf16 => SCALAR_BFLOAT16,
    };
    let _region = Autocast::enter(device, dtype);
    f()
}

/// Whether autocast is on for `device` on this thread, and its half type (c10's value).
#[cfg(test)]
fn autocast_type(device: DeviceKind) -> (bool, i8) {
    let device = device_type(device);
    // SAFETY: see the module's contract; a valid device type, no arguments by reference.
    unsafe { (is_autocast_enabled(device), get_autocast_dtype(device)) }
}

fn device_type(device: DeviceKind) -> i8 {
    match device {
        DeviceKind::Cpu => DEVICE_CPU,
        DeviceKind::Cuda => DEVICE_CUDA,
    }
}

/// An open autocast region; leaving it (drop) restores what was there before.
struct Autocast {
    device: i8,
    was_enabled: bool,
    was_dtype: i8,
}

impl Autocast {
    fn enter(device: DeviceKind, dtype: i8) -> Autocast {
        let device = device_type(device);
        // SAFETY: see the module's contract: valid device and scalar types, plain values.
        unsafe {
            let region =
                Autocast { device, was_enabled: is_autocast_enabled(device), was_dtype: get_autocast_dtype(device) };
            set_autocast_dtype(device, dtype);
            set_autocast_enabled(device, true);
            torch_sys::at_autocast_increment_nesting();
            region
        }
    }
}

impl Drop for Autocast {
    fn drop(&mut self) {
        // SAFETY: as in `enter`. The cast-weight cache is cleared when the outermost region
        // closes, as torch.autocast does, so no half copy of a weight outlives the run.
        unsafe {
            if torch_sys::at_autocast_decrement_nesting() == 0 {
                torch_sys::at_autocast_clear_cache();
            }
            set_autocast_enabled(self.device, self.was_enabled);
            set_autocast_dtype(self.device, self.was_dtype);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_region_sets_the_type_and_restores_what_was_there() {
        for device in [DeviceKind::Cpu, DeviceKind::Cuda] {
            let before = autocast_type(device);
            assert!(!before.0);
            for (precision, dtype) in [(Precision::Fp16, SCALAR_HALF), (Precision::Bf16, SCALAR_BFLOAT16)] {
                let inside = autocast(device, precision, || autocast_type(device));
                assert_eq!(inside, (true, dtype));
                assert_eq!(autocast_type(device), before);
            }
            assert_eq!(autocast(device, Precision::Fp32, || autocast_type(device)), before);
        }
    }

    #[test]
    fn a_panic_inside_still_closes_the_region() {
        let before = autocast_type(DeviceKind::Cpu);
        let caught = std::panic::catch_unwind(|| autocast(DeviceKind::Cpu, Precision::Bf16, || panic!("inside")));
        assert!(caught.is_err());
        assert_eq!(autocast_type(DeviceKind::Cpu), before);
    }
}
