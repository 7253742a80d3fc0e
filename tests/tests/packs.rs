//! Model packs: a pack installed and run with `--model PACK/MODEL` gives the same file as the
//! same model with explicit flags, and records the pack; flags the pack fixes are refused; bad
//! packs are refused naming the file and the fault, installing nothing.

use std::path::{Path, PathBuf};

use deepembed_tests::*;
use serde_json::Value;

const WEIGHTS: &str = "resnet18-f37072fd.pth";

/// A pack directory `root/site` with one model: torchvision's ResNet-18, pretrained.
fn make_pack(root: &Path, toml_extra: &str) -> PathBuf {
    let dir = root.join("site");
    std::fs::create_dir_all(dir.join("weights")).unwrap();
    let weights = dir.join("weights").join(WEIGHTS);
    std::fs::copy(vision_torch_home().join("hub").join("checkpoints").join(WEIGHTS), &weights).unwrap();
    let sha = sha256(&weights);
    let text = format!(
        r#"[pack]
name = "site"
version = "3.0.0"
description = "Test pack"
license = "MIT"
maintainer = "lab@example.org"

[[model]]
name = "r18"
plugin = "vision"
plugin_version = ">=0.1, <1"
embedding_width = 512
user_flags = ["batch_size", "device"]
flags = {{ model_version = "resnet18", use_case = "pretrained" }}
paths = {{ model_weights = "weights/{WEIGHTS}" }}
files = [{{ path = "weights/{WEIGHTS}", sha256 = "{sha}" }}]
card = {{ intended_use = "tests", training_data = "ImageNet", metrics = "none" }}
{toml_extra}"#
    );
    std::fs::write(dir.join("pack.toml"), text).unwrap();
    dir
}

fn sha256(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap().to_string()
}

/// deepembed with its user data directory (where packs install) under `home`.
fn run(args: &[&str], home: &Path) -> std::process::Output {
    let data = home.join("data");
    deepembed_env(args, &[("XDG_DATA_HOME", data.to_str().unwrap()), ("DEEPEMBED_PACK_PATH", "")])
}

fn installed(home: &Path) -> Vec<String> {
    let dir = home.join("data").join("deepembed").join("packs");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn a_pack_model_embeds_as_the_same_model_with_explicit_flags() {
    let work = scratch("packs-roundtrip");
    let pack = make_pack(&work.join("src"), "");
    let installed_ok = run(&["packs", "install", pack.to_str().unwrap()], &work);
    assert!(installed_ok.status.success(), "{}", stderr(&installed_ok));
    let listed = run(&["packs", "list", "--json"], &work);
    let list: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(list[0]["name"], "site");
    assert_eq!(list[0]["version"], "3.0.0");

    let df = fixtures().join("vision").join("images.parquet");
    let out = work.join("out");
    let by_pack = run(
        &[
            "embed",
            "--model",
            "site/r18",
            "--df",
            df.to_str().unwrap(),
            "--device",
            "cpu",
            "--batch_size",
            "4",
            "--out",
            out.to_str().unwrap(),
            "--quiet",
            "--json",
        ],
        &work,
    );
    assert!(by_pack.status.success(), "{}", stderr(&by_pack));
    let summary: Value = serde_json::from_slice(&by_pack.stdout).unwrap();
    let pack_dir = PathBuf::from(summary["output_dir"].as_str().unwrap());

    let explicit = embed_resnet18(&df, &work.join("explicit"), &["--batch_size", "4"]);
    assert_eq!(read_parquet(&output_parquet(&pack_dir)), read_parquet(&output_parquet(&explicit)));

    let sha = sha256(&pack.join("weights").join(WEIGHTS));
    for file in ["cli_arguments.json", "embedding_details.json"] {
        let record = &json(&pack_dir.join(file))["pack"];
        assert_eq!(record["name"], "site", "{file}");
        assert_eq!(record["version"], "3.0.0", "{file}");
        assert_eq!(record["model"], "r18", "{file}");
        assert_eq!(record["files_sha256"][format!("weights/{WEIGHTS}")], sha.as_str(), "{file}");
    }

    // The plugin may be named as well, if it is the pack's.
    let named = run(
        &["embed", "vision", "--model", "site/r18", "--df", df.to_str().unwrap(), "--batch_size", "4"]
            .iter()
            .chain(&["--device", "cpu", "--out", out.to_str().unwrap(), "--quiet", "--json"])
            .copied()
            .collect::<Vec<_>>(),
        &work,
    );
    assert!(named.status.success(), "{}", stderr(&named));
    let named_dir = serde_json::from_slice::<Value>(&named.stdout).unwrap()["output_dir"].as_str().unwrap().to_string();
    assert_eq!(read_parquet(&output_parquet(Path::new(&named_dir))), read_parquet(&output_parquet(&explicit)));
    let wrong = run(&["embed", "gpt2", "--model", "site/r18", "--df", df.to_str().unwrap()], &work);
    assert!(stderr(&wrong).contains("runs plugin 'vision', not 'gpt2'"), "{}", stderr(&wrong));

    // A flag the pack fixes, and one it does not let a user set.
    let fixed =
        run(&["embed", "--model", "site/r18", "--df", df.to_str().unwrap(), "--model_version", "resnet50"], &work);
    assert!(!fixed.status.success());
    assert!(stderr(&fixed).contains("--model_version is fixed by pack site/r18 to \"resnet18\""), "{}", stderr(&fixed));
    let other = run(&["embed", "--model", "site/r18", "--df", df.to_str().unwrap(), "--mode", "reg"], &work);
    assert!(stderr(&other).contains("--mode is not a flag pack site/r18 lets a user set"), "{}", stderr(&other));

    // An installed weight file changed since it was checked: hashed again, refused.
    let installed_weights = work.join("data/deepembed/packs/site/weights").join(WEIGHTS);
    let mut bytes = std::fs::read(&installed_weights).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&installed_weights, bytes).unwrap();
    let tampered = run(&["embed", "--model", "site/r18", "--df", df.to_str().unwrap(), "--device", "cpu"], &work);
    assert!(!tampered.status.success());
    assert!(stderr(&tampered).contains("SHA-256") && stderr(&tampered).contains(&sha), "{}", stderr(&tampered));
    let verify = run(&["packs", "verify", "site"], &work);
    assert!(!verify.status.success(), "{}", stderr(&verify));

    let removed = run(&["packs", "remove", "site"], &work);
    assert!(removed.status.success(), "{}", stderr(&removed));
    assert!(installed(&work).is_empty());
}

/// Each bad pack is refused with the file and the fault named, and nothing is installed.
#[test]
fn bad_packs_are_refused_naming_the_fault() {
    let work = scratch("packs-bad");
    let check = |name: &str, pack: &Path, expected: &[&str]| {
        let out = run(&["packs", "install", pack.to_str().unwrap()], &work);
        let err = stderr(&out);
        assert!(!out.status.success(), "{name}: installed:\n{err}");
        for e in expected {
            assert!(err.contains(e), "{name}: expected '{e}' in:\n{err}");
        }
        assert!(installed(&work).is_empty(), "{name}: left {:?} installed", installed(&work));
    };

    let tampered = make_pack(&work.join("tampered"), "");
    let sha = sha256(&tampered.join("weights").join(WEIGHTS));
    std::fs::write(tampered.join("weights").join(WEIGHTS), b"not the weights").unwrap();
    check("tampered", &tampered, &[WEIGHTS, &sha, "SHA-256"]);

    let missing = make_pack(&work.join("missing"), "");
    std::fs::remove_file(missing.join("weights").join(WEIGHTS)).unwrap();
    check("missing", &missing, &[WEIGHTS, "missing"]);

    let unknown = make_pack(&work.join("unknown"), "");
    let text = std::fs::read_to_string(unknown.join("pack.toml")).unwrap();
    std::fs::write(unknown.join("pack.toml"), text.replace("plugin = \"vision\"", "plugin = \"xray3d\"")).unwrap();
    check("unknown plugin", &unknown, &["needs plugin 'xray3d'", "not installed"]);

    let version = make_pack(&work.join("version"), "");
    let text = std::fs::read_to_string(version.join("pack.toml")).unwrap();
    std::fs::write(version.join("pack.toml"), text.replace(">=0.1, <1", ">=2")).unwrap();
    check("plugin version", &version, &["needs plugin vision >=2", "is installed"]);

    let malformed = make_pack(&work.join("malformed"), "");
    let text = std::fs::read_to_string(malformed.join("pack.toml")).unwrap();
    std::fs::write(malformed.join("pack.toml"), text.replace("embedding_width = 512", "embedding_width = = 512"))
        .unwrap();
    check("malformed", &malformed, &["pack.toml", "(line 12, column 19)"]);

    let escaping = make_pack(&work.join("escaping"), "");
    let text = std::fs::read_to_string(escaping.join("pack.toml")).unwrap();
    std::fs::write(
        escaping.join("pack.toml"),
        text.replace(&format!("path = \"weights/{WEIGHTS}\""), "path = \"../../etc/passwd\""),
    )
    .unwrap();
    check("escaping", &escaping, &["../../etc/passwd", "leaves the pack directory"]);

    // A name clash: refused unless --upgrade.
    let good = make_pack(&work.join("good"), "");
    assert!(run(&["packs", "install", good.to_str().unwrap()], &work).status.success());
    let again = run(&["packs", "install", good.to_str().unwrap()], &work);
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("a pack named site (version 3.0.0) is installed")
            && stderr(&again).contains("--upgrade")
    );
    let upgraded = run(&["packs", "install", good.to_str().unwrap(), "--upgrade"], &work);
    assert!(upgraded.status.success(), "{}", stderr(&upgraded));
    assert_eq!(installed(&work), vec!["site".to_string()]);
}

/// `dir` as a `.tar.zst` whose entries are `prefix/<path in dir>`, plus `extra` entries written
/// with raw names (which the tar crate's checked API would refuse).
fn archive(dir: &Path, prefix: &str, target: &Path, extra: &[(&str, &[u8])]) {
    let file = std::fs::File::create(target).unwrap();
    let encoder = zstd::Encoder::new(file, 3).unwrap().auto_finish();
    let mut tar = tar::Builder::new(encoder);
    tar.append_dir_all(prefix, dir).unwrap();
    for (name, data) in extra {
        let mut header = tar::Header::new_old();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        tar.append(&header, *data).unwrap();
    }
    tar.finish().unwrap();
}

#[test]
fn a_pack_archive_installs_and_one_escaping_its_directory_is_refused() {
    let work = scratch("packs-archive");
    let pack = make_pack(&work.join("src"), "");
    let good = work.join("site-3.0.0.tar.zst");
    archive(&pack, "site", &good, &[]);
    let out = run(&["packs", "install", good.to_str().unwrap()], &work);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(installed(&work), vec!["site".to_string()]);
    let removed = run(&["packs", "remove", "site"], &work);
    assert!(removed.status.success());

    let evil = work.join("evil.tar.zst");
    archive(&pack, "site", &evil, &[("../../escaped.txt", b"outside")]);
    let out = run(&["packs", "install", evil.to_str().unwrap()], &work);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("'../../escaped.txt' leaves the pack directory"), "{}", stderr(&out));
    assert!(installed(&work).is_empty(), "{:?}", installed(&work));
    assert!(!work.join("data").join("escaped.txt").exists() && !work.join("escaped.txt").exists());
}

/// A third-party plugin library built outside the workspace (tests/plugins, by `cargo xtask test`).
fn third_party(name: &str) -> PathBuf {
    let built = std::env::var_os("DEEPEMBED_THIRD_PARTY_PLUGINS")
        .map(PathBuf::from)
        .unwrap_or_else(|| binary().parent().unwrap().to_path_buf());
    let file = built.join(format!("libthirdparty_{name}.so"));
    assert!(file.is_file(), "{} missing: `cargo xtask test` builds tests/plugins", file.display());
    file
}

/// A pack `tp` shipping the plugin library `plugin` for its model `echo`.
fn plugin_pack(root: &Path, plugin: &Path) -> PathBuf {
    let dir = root.join("tp");
    std::fs::create_dir_all(dir.join("plugins")).unwrap();
    let name = plugin.file_name().unwrap().to_str().unwrap();
    std::fs::copy(plugin, dir.join("plugins").join(name)).unwrap();
    let sha = sha256(&dir.join("plugins").join(name));
    let text = format!(
        r#"[pack]
name = "tp"
version = "1.0.0"
plugins = [{{ path = "plugins/{name}", sha256 = "{sha}" }}]

[[model]]
name = "echo"
plugin = "echo"
plugin_version = "0.3"
embedding_width = 2
flags = {{ column = "value" }}
user_flags = ["device", "batch_size"]
"#
    );
    std::fs::write(dir.join("pack.toml"), text).unwrap();
    dir
}

#[test]
fn a_pack_shipping_its_plugin_embeds_without_rebuilding_the_host() {
    let work = scratch("packs-plugin");
    let pack = plugin_pack(&work.join("src"), &third_party("echo"));
    let out = run(&["packs", "install", pack.to_str().unwrap()], &work);
    assert!(out.status.success(), "{}", stderr(&out));

    let df = work.join("numbers.parquet");
    let values = arrow::array::Float64Array::from(vec![1.5, -2.0, 0.25]);
    write_parquet(
        &df,
        &arrow::array::RecordBatch::try_from_iter([("value", std::sync::Arc::new(values) as _)]).unwrap(),
    );
    let result = work.join("out");
    let ran = run(
        &[
            "embed",
            "--model",
            "tp/echo",
            "--df",
            df.to_str().unwrap(),
            "--device",
            "cpu",
            "--out",
            result.to_str().unwrap(),
        ],
        &work,
    );
    assert!(ran.status.success(), "{}", stderr(&ran));
    let dir = std::fs::read_dir(&result).unwrap().next().unwrap().unwrap().path();
    let batch = read_parquet(&dir.join("ECHO_embeddings.parquet"));
    assert_eq!(batch.num_rows(), 3);

    // A shipped plugin built against another SDK ABI is refused, naming it.
    let bad = plugin_pack(&work.join("bad"), &third_party("bad_abi"));
    let text = std::fs::read_to_string(bad.join("pack.toml")).unwrap();
    std::fs::write(bad.join("pack.toml"), text.replace("name = \"tp\"", "name = \"tp-bad\"")).unwrap();
    let refused = run(&["packs", "install", bad.to_str().unwrap()], &work);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("libthirdparty_bad_abi.so") && stderr(&refused).contains("ABI"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(installed(&work), vec!["tp".to_string()]);
}

/// Two runs' outputs are the same: same columns, the same carried values, and embeddings equal
/// to float32 noise. Two processes running the same model on the same rows are not bitwise
/// reproducible on the CPU (one of 200+ fresh-clone runs gave a GPT-2 fixture's embeddings
/// 1.4e-6 apart); a wrong flag, weight file or pooling moves them by far more than 1e-5.
fn assert_same_output(ours: &arrow::array::RecordBatch, theirs: &arrow::array::RecordBatch, model: &str) {
    assert_eq!(ours.schema(), theirs.schema(), "{model}");
    for (i, field) in ours.schema().fields().iter().enumerate() {
        let (a, b) = (ours.column(i), theirs.column(i));
        if field.data_type() == &arrow::datatypes::DataType::Float32 {
            assert_eq!(a.nulls(), b.nulls(), "{model}: column {}", field.name());
            // A NaN on both sides (a row without its value) is the same output.
            let values = |c: &arrow::array::ArrayRef| {
                let floats = c.as_any().downcast_ref::<arrow::array::Float32Array>().unwrap();
                floats.values().iter().map(|v| if v.is_nan() { f32::INFINITY } else { *v }).collect::<Vec<f32>>()
            };
            let (a, b) = (values(a), values(b));
            for (row, (x, y)) in a.iter().zip(&b).enumerate() {
                let same = x == y || (x - y).abs() <= 1e-5;
                assert!(same, "{model}: column {} row {row}: {x} against {y}", field.name());
            }
        } else {
            assert_eq!(a, b, "{model}: column {}", field.name());
        }
    }
}

/// The flags of the parity case `name` in `cases.json` of the `modality` fixtures.
fn case_args(modality: &str, name: &str) -> Vec<String> {
    let cases = fixture_cases(modality);
    let case = cases["cases"].as_array().unwrap().iter().find(|c| c["name"] == name).unwrap().clone();
    case["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect()
}

/// `packs create --from-deeptune` on a vision run and a BERT run laid out as DeepTune's trainers
/// write them; the installed pack's models embed as the same models with explicit flags.
#[test]
fn a_pack_made_from_deeptune_runs_embeds_as_the_runs_models() {
    let work = scratch("packs-create");
    // A vision fine-tuning run: the adjusted model's weights and the training arguments.
    let vision_run = work.join("trainval_output_FINETUNED-resnet18_20261127_1200");
    std::fs::create_dir_all(&vision_run).unwrap();
    let case = fixtures().join("vision").join("finetuned").join("finetuned-resnet18-a2-cls");
    std::fs::copy(case.join("model_weights.pth"), vision_run.join("model_weights.pth")).unwrap();
    let arguments = serde_json::json!({
        "mode": "cls", "out": work.to_str().unwrap(), "batch_size": 8, "grouper": null, "num_epochs": 1, "num_classes": 3,
        "use_peft": false, "model_version": "resnet18", "added_layers": 2, "embed_size": 64, "freeze_backbone": false,
        "fixed_seed": true, "learning_rate": 0.0001, "train_df": "train.parquet", "val_df": "val.parquet", "eval_df": null,
        "adaptive_error": false, "model": "FINETUNED-resnet18", "model_architecture": "resnet",
    });
    std::fs::write(vision_run.join("cli_arguments.json"), arguments.to_string()).unwrap();
    std::fs::write(vision_run.join("training_log.csv"), "epoch,epoch_loss\n0,1.0\n").unwrap();
    // BERT and GPT-2 fine-tuning runs and a GANDALF one, as the generators write them
    // (bert_model/ or gpt2_model/, tokenizer/, model_config.json, model_weights.pth; GANDALF_model/).
    let bert_run = fixtures().join("text").join("finetuned-a2");
    let gpt2_run = fixtures().join("text").join("gpt2-finetuned");
    let gandalf_run = fixtures().join("tabular").join("cls_mixed");

    let pack = work.join("pack");
    let created = run(
        &[
            "packs",
            "create",
            pack.to_str().unwrap(),
            "--name",
            "lab",
            "--version",
            "2.1.0",
            "--from-deeptune",
            vision_run.to_str().unwrap(),
            "--model-name",
            "xray",
            "--from-deeptune",
            bert_run.to_str().unwrap(),
            "--model-name",
            "notes",
            "--from-deeptune",
            gpt2_run.to_str().unwrap(),
            "--model-name",
            "notes-gpt2",
            "--from-deeptune",
            gandalf_run.to_str().unwrap(),
            "--model-name",
            "vitals",
        ],
        &work,
    );
    assert!(created.status.success(), "{}", stderr(&created));
    let text = std::fs::read_to_string(pack.join("pack.toml")).unwrap();
    assert!(text.contains("embedding_width = 64") && text.contains("embedding_width = 24"), "{text}");
    // GANDALF's width comes from its checkpoint's shapes; the reference's embeddings have it.
    let gandalf_dims = fixture_cases("tabular")["cls_mixed"]["dims"].as_u64().unwrap();
    let vitals = text.split("[[model]]").find(|m| m.contains("name = \"vitals\"")).expect("the GANDALF model");
    assert!(vitals.contains(&format!("embedding_width = {gandalf_dims}")), "{vitals}");
    let installed_ok = run(&["packs", "install", pack.to_str().unwrap()], &work);
    assert!(installed_ok.status.success(), "{}", stderr(&installed_ok));

    let compare = |model: &str, plugin: &str, df: &Path, case_args: Vec<String>| {
        let out = work.join(format!("out-{model}"));
        let by_pack = run(
            &[
                "embed",
                "--model",
                &format!("lab/{model}"),
                "--df",
                df.to_str().unwrap(),
                "--device",
                "cpu",
                "--out",
                out.to_str().unwrap(),
                "--quiet",
                "--json",
                "--on_error",
                "skip",
            ],
            &work,
        );
        assert!(by_pack.status.success(), "{model}: {}", stderr(&by_pack));
        let summary: Value = serde_json::from_slice(&by_pack.stdout).unwrap();
        let explicit_out = work.join(format!("explicit-{model}"));
        let mut args: Vec<String> = vec![
            plugin.into(),
            "--df".into(),
            df.to_str().unwrap().into(),
            "--out".into(),
            explicit_out.to_str().unwrap().into(),
        ];
        args.extend(case_args);
        args.extend(["--on_error".to_string(), "skip".to_string()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let explicit = embed_ok(&args, &[]);
        let ours = read_parquet(&output_parquet(Path::new(summary["output_dir"].as_str().unwrap())));
        assert_same_output(&ours, &read_parquet(&output_parquet(&explicit)), model);
    };
    let texts = fixtures().join("text").join("texts.parquet");
    compare(
        "xray",
        "vision",
        &fixtures().join("vision").join("images.parquet"),
        case_args("vision", "finetuned-resnet18-a2-cls"),
    );
    compare("notes", "mbert", &texts, case_args("text", "finetuned-a2"));
    compare("notes-gpt2", "gpt2", &texts, case_args("text", "gpt2-finetuned"));
    let weights = gandalf_run.to_str().unwrap().to_string();
    compare("vitals", "gandalf", &gandalf_run.join("eval.parquet"), vec!["--model_weights".into(), weights]);
}

/// `--system` installs into the first site directory of DEEPEMBED_PACK_PATH, where packs are
/// also looked up (a read-only cluster file system, in real use).
#[test]
fn system_packs_go_to_the_site_directory() {
    let work = scratch("packs-system");
    let pack = make_pack(&work.join("src"), "");
    let site = work.join("site-packs");
    let env = |extra: &[&str]| {
        let data = work.join("data");
        let args: Vec<&str> = extra.to_vec();
        deepembed_env(
            &args,
            &[("XDG_DATA_HOME", data.to_str().unwrap()), ("DEEPEMBED_PACK_PATH", site.to_str().unwrap())],
        )
    };
    let out = env(&["packs", "install", "--system", pack.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(site.join("site").join("pack.toml").is_file());
    assert!(installed(&work).is_empty(), "a --system install must not go to the user directory");
    let listed: Value = serde_json::from_slice(&env(&["packs", "list", "--json"]).stdout).unwrap();
    assert_eq!(listed[0]["name"], "site");
    assert!(listed[0]["path"].as_str().unwrap().starts_with(site.to_str().unwrap()));
}
