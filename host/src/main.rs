//! `deepembed`: discovers plugins, builds its command line from them, and runs extractions.

#![forbid(unsafe_code)]

mod cli;
mod device;
mod discovery;
mod input;
mod loader;
mod logger;
mod merge;
mod output;
mod pack;
mod pack_archive;
mod pack_create;
mod packs;
mod read_ahead;
mod resume;
mod run;
mod shard;
mod signals;
mod slurm;
mod warm_up;
mod writer;

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use deepembed_sdk::{Device, DeviceKind, InputSpec, OnError, Precision, RunSettings};
use serde_json::{json, Value};

use loader::Discovery;

fn main() {
    // Before any other thread starts: libtorch's CPU tensors reuse freed memory instead of
    // mapping fresh pages every batch.
    let keeps_large_blocks = deepembed_sdk::abi::large_blocks::keep_large_blocks();
    device::put_cudnn_attention_last();
    let argv: Vec<_> = std::env::args_os().collect();
    let quiet = argv.iter().any(|a| a == "--quiet" || a == "-q");
    logger::init(quiet);
    log::debug!("large freed blocks kept for reuse (glibc): {keeps_large_blocks}");
    signals::install();
    let status = match run_cli(argv) {
        Ok(()) => 0,
        Err(_) if signals::interrupted() => {
            log::error!("interrupted");
            signals::EXIT_STATUS
        }
        Err(e) => {
            log::error!("{e:#}");
            1
        }
    };
    // Everything is written, closed and reported by now (the writer thread is joined within
    // the run), so the C++ libraries' teardown can be skipped: libtorch's alone takes about
    // 0.1 s, deregistering its operators.
    log::debug!("exiting with status {status}");
    deepembed_sdk::abi::exit::exit_without_teardown(status)
}

fn run_cli(argv: Vec<std::ffi::OsString>) -> Result<()> {
    let discovery = loader::discover(&cli::prescan_plugin_paths(&argv));
    log::debug!("{} plugin(s) loaded", discovery.plugins.len());
    // `embed --model PACK/MODEL` becomes the pack's plugin command before clap reads it.
    let (argv, pack) = packs::resolve_model(argv, &discovery)?;
    let matches = cli::build(&discovery).get_matches_from(argv);
    let quiet = matches.get_flag("quiet");
    match matches.subcommand() {
        Some(("plugins", sub)) => list_plugins(&discovery, sub.get_flag("json")),
        Some(("packs", sub)) => packs_command(sub, &discovery),
        Some(("merge", sub)) => merge_shards(sub),
        Some(("slurm", sub)) => {
            let args: Vec<String> = sub.get_many::<String>("args").into_iter().flatten().cloned().collect();
            slurm::run(&args)
        }
        Some(("embed", sub)) => match sub.subcommand() {
            Some((name, plugin_matches)) => embed(&discovery, name, plugin_matches, quiet, pack),
            None => Err(anyhow!("name a plugin: deepembed embed <plugin>")),
        },
        _ => unreachable!("clap requires a subcommand"),
    }
}

fn embed(
    discovery: &Discovery,
    name: &str,
    matches: &clap::ArgMatches,
    quiet: bool,
    pack: Option<packs::PackUse>,
) -> Result<()> {
    let plugin = discovery.find(name).ok_or_else(|| {
        let known: Vec<&str> = discovery.plugins.iter().map(|p| p.manifest.name.as_str()).collect();
        let known = if known.is_empty() { "none".to_string() } else { known.join(", ") };
        anyhow!("unknown plugin '{name}'; known plugins: {known}\n{}", discovery.explain())
    })?;
    let specs = cli::plugin_command_args(&plugin.manifest);
    let host = cli::collect_args(&specs.host, matches)?;
    let options = cli::collect_args(&specs.own, matches)?;
    let mut deeptune = cli::collect_args(&specs.deeptune, matches)?;
    deeptune.retain(|_, v| !v.is_null() && v != &Value::Bool(false));
    for (flag, value) in &deeptune {
        log::warn!("--{flag} {value}: accepted for DeepTune's command lines; the {name} plugin does not use it");
    }
    let text = |key: &str| host.get(key).and_then(Value::as_str).ok_or_else(|| anyhow!("--{key} is missing"));
    let batch_size = host.get("batch_size").and_then(Value::as_u64).and_then(|n| u32::try_from(n).ok());
    let device = device::resolve(text("device")?)?;
    warm_up::start(device);
    let settings = RunSettings {
        batch_size: batch_size.filter(|&n| n > 0).ok_or_else(|| anyhow!("--batch_size must be a positive integer"))?,
        device,
        on_error: OnError::parse(text("on_error")?).ok_or_else(|| anyhow!("--on_error must be fail or skip"))?,
        precision: precision(text("precision")?, device)?,
    };
    let mut inputs = Vec::new();
    for input in &plugin.manifest.inputs {
        // One stream per declared pass, each reading the file from its start.
        for _ in 0..input.passes.max(1) {
            inputs.push(run::InputFile { flag: input.name.clone(), path: PathBuf::from(text(&input.name)?) });
        }
    }
    let embedded_spec = InputSpec::embedded_of(&plugin.manifest.inputs);
    let embedded = embedded_spec.map(|i| i.name.clone());
    // Rows embedded on their own: the input can be cut into ranges (shards) and the output
    // committed in pieces (resume).
    let resumable = embedded_spec.is_some_and(|i| i.rows_independent && i.passes <= 1);
    let shard = match host.get("shard").and_then(Value::as_str) {
        None => None,
        Some(text) => {
            let shard = shard::Shard::parse(text)?;
            if !resumable {
                bail!(
                    "--shard {text}: plugin {name} embeds a row from other rows too (a series' history, or statistics \
                     over the whole table), so a range of rows alone would give other embeddings; run it unsharded"
                );
            }
            Some(shard)
        }
    };
    let out = PathBuf::from(text("out")?);
    let json_summary = host.get("json").and_then(Value::as_bool).unwrap_or(false);
    // cli_arguments.json records every argument, the host's and the plugin's.
    let mut arguments = host.clone();
    arguments.extend(options.clone());
    arguments.extend(deeptune);
    // A pack's run records which validated model produced it.
    let expected_dims = pack.as_ref().and_then(|p| p.embedding_width);
    let pack_record = pack.map(|p| p.record);
    if let Some(record) = &pack_record {
        arguments.insert("pack".into(), record.clone());
    }
    let number = |key: &str| host.get(key).and_then(Value::as_u64).ok_or_else(|| anyhow!("--{key} is missing"));
    let commit = match resumable {
        true => Some(resume::CommitPolicy {
            rows: number("commit_rows")?,
            interval: std::time::Duration::from_secs(number("commit_seconds")?),
        }),
        false => None,
    };
    let resume = matches
        .get_one::<String>("resume")
        .map(|dir| (!dir.is_empty()).then(|| std::path::absolute(dir)).transpose())
        .transpose()
        .context("--resume")?;
    let request = run::EmbedRequest {
        plugin,
        settings,
        options,
        arguments,
        inputs,
        embedded,
        shard,
        out,
        quiet,
        commit,
        resume,
        pack: pack_record,
        expected_dims,
    };
    let result = run::embed(request)?;
    match &result.file {
        Some(file) => log::info!("embeddings written to {}", file.display()),
        None => {
            log::warn!("this shard holds no rows (more shards than rows?): no embeddings file; merge takes it as it is")
        }
    }
    if json_summary {
        let summary = json!({
            "output_dir": result.dir,
            "embeddings": result.file,
            "rows": result.rows,
            "skipped_rows": result.skipped,
        });
        print_stdout(&(serde_json::to_string_pretty(&summary)? + "\n"))?;
    }
    Ok(())
}

fn packs_command(matches: &clap::ArgMatches, discovery: &Discovery) -> Result<()> {
    let name = |m: &clap::ArgMatches| m.get_one::<String>("name").cloned();
    match matches.subcommand() {
        Some(("install", sub)) => {
            let path = sub.get_one::<PathBuf>("path").expect("required");
            let dir = packs::install(path, sub.get_flag("system"), sub.get_flag("upgrade"), discovery)?;
            log::info!("installed {}", dir.display());
            Ok(())
        }
        Some(("create", sub)) => {
            let runs: Vec<&PathBuf> = sub.get_many::<PathBuf>("from-deeptune").into_iter().flatten().collect();
            let names: Vec<&String> = sub.get_many::<String>("model-name").into_iter().flatten().collect();
            if runs.len() != names.len() {
                bail!("give one --model-name after each --from-deeptune ({} runs, {} names)", runs.len(), names.len());
            }
            let sources: Vec<pack_create::Source> = runs
                .into_iter()
                .zip(names)
                .map(|(run, name)| pack_create::Source { run_dir: run.clone(), model_name: name.clone() })
                .collect();
            let out = sub.get_one::<PathBuf>("out").expect("required");
            let name = sub.get_one::<String>("name").expect("required");
            let version = sub.get_one::<String>("version").expect("has a default");
            let written = pack_create::create(out, name, version, &sources, discovery)?;
            log::info!("pack written: {}", written.display());
            Ok(())
        }
        Some(("list", sub)) => print_stdout(&packs::list(sub.get_flag("json"))?),
        Some(("show", sub)) => print_stdout(&packs::show(&name(sub).expect("required"))?),
        Some(("verify", sub)) => print_stdout(&packs::verify(name(sub).as_deref())?),
        Some(("remove", sub)) => {
            let dir = packs::remove(&name(sub).expect("required"))?;
            log::info!("removed {}", dir.display());
            Ok(())
        }
        _ => unreachable!("clap requires a subcommand"),
    }
}

fn merge_shards(matches: &clap::ArgMatches) -> Result<()> {
    let dirs: Vec<PathBuf> = matches.get_many::<PathBuf>("dirs").into_iter().flatten().cloned().collect();
    let merged = merge::merge(&dirs, matches.get_one::<PathBuf>("out").map(PathBuf::as_path))?;
    log::info!("{} shards, {} rows merged into {}", dirs.len(), merged.rows, merged.file.display());
    if matches.get_flag("json") {
        let summary = json!({"output_dir": merged.dir, "embeddings": merged.file, "rows": merged.rows});
        print_stdout(&(serde_json::to_string_pretty(&summary)? + "\n"))?;
    }
    Ok(())
}

/// `--precision`, checked against the device it will run on.
fn precision(text: &str, device: Device) -> Result<Precision> {
    let precision = Precision::parse(text).ok_or_else(|| anyhow!("--precision must be fp32, fp16 or bf16"))?;
    match precision {
        Precision::Bf16 if device.kind == DeviceKind::Cpu && !cpu_has_bf16_instructions() => {
            log::warn!(
                "--precision bf16: this CPU has no bfloat16 instructions (AVX512-BF16), so libtorch emulates them \
                 and the run may be slower than with --precision fp32"
            );
            Ok(precision)
        }
        Precision::Fp32 | Precision::Bf16 => Ok(precision),
        // libtorch's CPU kernels for float16 are slower than float32 on most CPUs.
        Precision::Fp16 if device.kind == DeviceKind::Cpu => bail!(
            "--precision fp16 needs a CUDA device (the run is on the CPU); use --precision bf16 (bfloat16 autocast, \
             which CPUs run) or --precision fp32, or --device cuda"
        ),
        Precision::Fp16 => Ok(precision),
    }
}

/// Whether the CPU computes bfloat16 products natively (AVX512-BF16; the AMX tiles of the CPUs
/// that have them come with it), where bf16 autocast runs 2-3x faster than float32
/// (docs/BENCHMARKS.md). Other architectures: assumed, not checked.
fn cpu_has_bf16_instructions() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx512bf16");
    #[cfg(not(target_arch = "x86_64"))]
    return true;
}

fn list_plugins(discovery: &Discovery, as_json: bool) -> Result<()> {
    if as_json {
        let value = json!({
            "host": {
                "version": env!("CARGO_PKG_VERSION"),
                "sdk_abi_version": deepembed_sdk::SDK_ABI_VERSION,
                "libtorch_version": deepembed_sdk::LIBTORCH_VERSION,
            },
            "plugins": discovery.plugins.iter().map(|p| json!({
                "name": p.manifest.name,
                "version": p.manifest.version,
                "modality": p.manifest.modality,
                "description": p.manifest.description,
                "models": p.manifest.models,
                "sdk_abi_version": p.sdk_abi_version,
                "libtorch_version": p.libtorch_version,
                "path": p.path,
            })).collect::<Vec<_>>(),
            "not_loaded": discovery.rejected.iter().map(|r| json!({"path": r.path, "reason": r.reason})).collect::<Vec<_>>(),
            "searched": discovery.searched.iter().map(|(p, why)| json!({"path": p, "source": why})).collect::<Vec<_>>(),
        });
        return print_stdout(&(serde_json::to_string_pretty(&value).context("formatting JSON")? + "\n"));
    }
    let mut text = String::new();
    if discovery.plugins.is_empty() {
        writeln!(text, "no plugins found")?;
    }
    for p in &discovery.plugins {
        let m = &p.manifest;
        writeln!(text, "{} {} ({})", m.name, m.version, m.modality)?;
        writeln!(text, "  {}", m.description)?;
        // Short model names share a line; described models (a width per use case) get one each.
        if m.models.iter().any(|model| model.contains(' ') && model.contains('(')) {
            writeln!(text, "  models:")?;
            for model in &m.models {
                writeln!(text, "    {model}")?;
            }
        } else {
            writeln!(text, "  models:   {}", m.models.join(", "))?;
        }
        writeln!(text, "  sdk abi:  {}    libtorch: {}", p.sdk_abi_version, p.libtorch_version)?;
        writeln!(text, "  path:     {}", p.path.display())?;
    }
    for r in &discovery.rejected {
        writeln!(text, "not loaded: {}\n  {}", r.path.display(), r.reason)?;
    }
    writeln!(text, "searched:")?;
    for (dir, why) in &discovery.searched {
        writeln!(text, "  {} [{why}]{}", dir.display(), if dir.exists() { "" } else { " (does not exist)" })?;
    }
    print_stdout(&text)
}

/// Writes results to stdout. A reader that closed the pipe early (`| head`) is not an error.
fn print_stdout(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}
