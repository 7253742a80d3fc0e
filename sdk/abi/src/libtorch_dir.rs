//! Where the libtorch this process runs lives: the host loads libtorch's CUDA library from
//! there, and `--decode gpu` looks beside it for nvJPEG (pip installs both under the same
//! site-packages).

use std::path::{Path, PathBuf};

/// The directory of the libtorch_cpu.so mapped into this process, from /proc/self/maps.
pub fn loaded_libtorch_dir() -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .map(Path::new)
        .find(|path| path.file_name().is_some_and(|name| name == "libtorch_cpu.so"))
        .and_then(|path| path.parent().map(Path::to_path_buf))
}
