//! Our bicubic resize against Pillow's (`Image.resize(size, Image.BICUBIC)`, as SigLIP's
//! processor calls it) on the generated sample images: identical bytes. The generator
//! (tests/python/vision_families/siglip.py) writes each image (`NN.img`) and Pillow's output at
//! each size (`NN-SIZE.rgb`, RGB rows) under `vision/siglip/bicubic/`.

#![forbid(unsafe_code)]

use std::path::PathBuf;

use deepembed_image::decode::decode;
use deepembed_image::resize::resize;
use deepembed_image::{Filter, Limits};

fn fixtures() -> Option<PathBuf> {
    let root = match std::env::var_os("DEEPEMBED_TEST_DATA") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../tests/work"),
    };
    let dir = root.join("vision").join("siglip").join("bicubic");
    if dir.is_dir() {
        return Some(dir);
    }
    if std::env::var_os("DEEPEMBED_TEST_DATA").is_some() {
        panic!("{} is missing: generate it with tests/python/gen_vision.py (family siglip)", dir.display());
    }
    eprintln!("skipped: {} is missing; run `cargo xtask test`, which generates the fixtures", dir.display());
    None
}

#[test]
fn bicubic_resize_is_identical_to_pillow() {
    let Some(dir) = fixtures() else { return };
    let mut images: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "img"))
        .collect();
    images.sort();
    assert!(images.len() >= 10, "too few sample images in {}", dir.display());
    let mut compared = 0;
    let mut failures = Vec::new();
    for path in &images {
        let image = decode(&std::fs::read(path).unwrap(), &Limits::default()).unwrap();
        let stem = path.file_stem().unwrap().to_str().unwrap();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let reference = entry.unwrap().path();
            let name = reference.file_name().unwrap().to_str().unwrap().to_string();
            let Some(size) = name.strip_prefix(&format!("{stem}-")).and_then(|s| s.strip_suffix(".rgb")) else {
                continue;
            };
            let size: usize = size.parse().unwrap();
            let theirs = std::fs::read(&reference).unwrap();
            let ours = resize(&image, size, size, Filter::Bicubic).pixels;
            assert_eq!(ours.len(), theirs.len(), "{name}: sizes differ");
            let differing = ours.iter().zip(&theirs).filter(|(a, b)| a != b).count();
            if differing > 0 {
                let max = ours.iter().zip(&theirs).map(|(&a, &b)| (a as i32 - b as i32).abs()).max().unwrap_or(0);
                failures.push(format!(
                    "{name} ({}x{} -> {size}): {differing} values differ, by up to {max}",
                    image.width, image.height
                ));
            }
            compared += 1;
        }
    }
    assert!(compared >= images.len() * 3, "only {compared} reference resizes found in {}", dir.display());
    assert!(failures.is_empty(), "bicubic resize differs from Pillow's:\n{}", failures.join("\n"));
}
