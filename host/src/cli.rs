//! The command line, built at run time from what the discovered plugins declare, so a new
//! plugin gets its flags without a host rebuild. Flags use DeepTune's snake_case spellings
//! (`--batch_size`); the kebab-case spellings (`--batch-size`) are accepted too.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{anyhow, Result};
use clap::{Arg, ArgAction, ArgMatches, Command};
use deepembed_sdk::{ArgKind, ArgSpec, InputSpec, Manifest, RunSettings};
use serde_json::{Map, Value};

use crate::loader::Discovery;

/// Flags the host handles for every plugin, declared like a plugin's own. Their values reach
/// the plugin as typed [`RunSettings`], never as strings.
pub fn host_args() -> Vec<ArgSpec> {
    vec![
        ArgSpec::new("out", ArgKind::Path, "Directory that receives embed_output_<MODEL>_<date>_<time>/.")
            .default("deeptune_results"),
        ArgSpec::new("batch_size", ArgKind::Int, "Rows per batch.")
            .default(&RunSettings::DEFAULT_BATCH_SIZE.to_string())
            .min(1)
            .max(u32::MAX as i64),
        ArgSpec::new("device", ArgKind::String, "auto (first usable CUDA device, else cpu), cpu, cuda or cuda:N.")
            .default("auto"),
        ArgSpec::new(
            "on_error",
            ArgKind::String,
            "What to do with a row the model cannot use: fail, or skip it and record it in skipped_rows.json.",
        )
        .default("fail")
        .choices(&["fail", "skip"]),
        ArgSpec::new(
            "precision",
            ArgKind::String,
            "The model's arithmetic: fp32, fp16 (CUDA only) or bf16, the last two as torch.autocast does. Embeddings are written as float32.",
        )
        .default("fp32")
        .choices(&["fp32", "fp16", "bf16"]),
        ArgSpec::new(
            "shard",
            ArgKind::String,
            "Embed only the I-th (from 0) of N contiguous row ranges of the input, e.g. 0/4, or slurm (this Slurm array task's); put the shards together with deepembed merge.",
        ),
        ArgSpec::new(
            "commit_rows",
            ArgKind::Int,
            "Commit the output in durable pieces at least every this many input rows, for --resume (plugins whose rows are embedded independently).",
        )
        .default(&COMMIT_ROWS.to_string())
        .min(1),
        ArgSpec::new("commit_seconds", ArgKind::Int, "... or at least every this many seconds.")
            .default(&COMMIT_SECONDS.to_string())
            .min(1),
        ArgSpec::new("json", ArgKind::Bool, "Print a JSON summary of the result on stdout."),
    ]
}

/// The default commit interval in rows: a commit (closing a Parquet file, two syncs, two renames)
/// costs milliseconds, under 1% of the time even the fastest plugin takes for this many rows.
pub const COMMIT_ROWS: u64 = 100_000;
/// The default commit interval in seconds, for slow runs: a pre-empted run loses at most this.
pub const COMMIT_SECONDS: u64 = 300;

/// `deepembed packs ...`: model packs (host/src/packs.rs).
fn packs_command() -> Command {
    let name = || Arg::new("name").required(true).value_name("NAME").help("The pack's name.");
    let json = || Arg::new("json").long("json").action(ArgAction::SetTrue).help("Machine-readable output.");
    Command::new("packs")
        .about("Model packs: a site's models with their fixed flags and checksummed weights; run one with deepembed embed --model PACK/MODEL.")
        .subcommand_required(true)
        .subcommand(
            Command::new("install")
                .about("Verify every checksum of the pack directory PATH and install it.")
                .arg(Arg::new("path").required(true).value_name("PATH").value_parser(clap::value_parser!(PathBuf)))
                .arg(Arg::new("system").long("system").action(ArgAction::SetTrue).help("Install into the first directory of DEEPEMBED_PACK_PATH instead of the user data directory."))
                .arg(Arg::new("upgrade").long("upgrade").action(ArgAction::SetTrue).help("Replace an installed pack of the same name.")),
        )
        .subcommand(
            Command::new("create")
                .about("Write a pack directory from DeepTune fine-tuning runs: deepembed packs create OUT_DIR --name PACK --from-deeptune RUN_DIR --model-name MODEL [--from-deeptune ... --model-name ...]")
                .arg(Arg::new("out").required(true).value_name("OUT_DIR").value_parser(clap::value_parser!(PathBuf)))
                .arg(Arg::new("name").long("name").required(true).value_name("PACK").help("The pack's name."))
                .arg(Arg::new("version").long("version").default_value("1.0.0").help("The pack's version."))
                .arg(
                    Arg::new("from-deeptune")
                        .long("from-deeptune")
                        .required(true)
                        .action(ArgAction::Append)
                        .value_name("RUN_DIR")
                        .value_parser(clap::value_parser!(PathBuf))
                        .help("A DeepTune fine-tuning output directory; repeat for several models."),
                )
                .arg(
                    Arg::new("model-name")
                        .long("model-name")
                        .required(true)
                        .action(ArgAction::Append)
                        .value_name("MODEL")
                        .help("The name of the model made from the --from-deeptune before it."),
                ),
        )
        .subcommand(Command::new("list").about("The installed packs.").arg(json()))
        .subcommand(Command::new("show").about("A pack's card, flags and files.").arg(name()))
        .subcommand(
            Command::new("verify")
                .about("Hash every file of a pack (or of every pack) again.")
                .arg(Arg::new("name").value_name("NAME").help("The pack's name (default: every installed pack).")),
        )
        .subcommand(Command::new("remove").about("Remove an installed pack.").arg(name()))
}

/// `--resume [RUN_DIR]`: a flag whose value is optional, so it is not a plugin-style ArgSpec.
fn resume_arg() -> Arg {
    Arg::new("resume")
        .long("resume")
        .num_args(0..=1)
        .default_missing_value("")
        .value_name("RUN_DIR")
        .help(
            "Continue an interrupted run after its last committed piece: RUN_DIR, or the latest unfinished run in --out of \
             this plugin (and shard); starts a new run when there is none. The arguments, input files and plugin version \
             must be the run's.",
        )
}

/// Flags DeepTune's embedding command lines accept (its parsers' shared flags and those of each
/// modality) that a plugin may not use. They are accepted, so that DeepTune's command lines run
/// unchanged, recorded in `cli_arguments.json` when given, and otherwise change nothing (a
/// warning says so). Kept out of `--help`.
pub fn deeptune_args() -> Vec<ArgSpec> {
    let flag = |name: &str, kind: ArgKind| ArgSpec::new(name, kind, "Accepted for DeepTune's command lines.");
    vec![
        flag("mode", ArgKind::String),
        flag("grouper", ArgKind::String),
        flag("model_version", ArgKind::String),
        flag("added_layers", ArgKind::Int),
        flag("embed_size", ArgKind::Int),
        flag("num_classes", ArgKind::Int),
        flag("use_case", ArgKind::String),
        flag("freeze_backbone", ArgKind::Bool),
        flag("fixed_seed", ArgKind::Bool),
        flag("use_peft", ArgKind::Bool),
        flag("adaptive_error", ArgKind::Bool),
        flag("train_df", ArgKind::Path),
        flag("val_df", ArgKind::Path),
        flag("eval_df", ArgKind::Path),
        flag("num_epochs", ArgKind::Int),
        flag("learning_rate", ArgKind::Float),
        flag("gflu_stages", ArgKind::Int),
        flag("type", ArgKind::String),
    ]
}

/// An input table's flag: a required path.
fn input_arg(input: &InputSpec) -> ArgSpec {
    ArgSpec::new(&input.name, ArgKind::Path, &input.help).required()
}

/// The flags of `deepembed embed <plugin>`: the plugin's inputs and the host's, the plugin's
/// own (a plugin flag that repeats a host one is the host's), and DeepTune's that neither has.
pub struct CommandArgs {
    pub host: Vec<ArgSpec>,
    pub own: Vec<ArgSpec>,
    pub deeptune: Vec<ArgSpec>,
}

pub fn plugin_command_args(manifest: &Manifest) -> CommandArgs {
    let mut host: Vec<ArgSpec> = manifest.inputs.iter().map(input_arg).collect();
    host.extend(host_args());
    let own: Vec<ArgSpec> = manifest.args.iter().filter(|a| !host.iter().any(|h| h.name == a.name)).cloned().collect();
    let declared = |name: &str| host.iter().chain(&own).any(|a| a.name == name);
    let deeptune = deeptune_args().into_iter().filter(|a| !declared(&a.name)).collect();
    CommandArgs { host, own, deeptune }
}

/// `--plugin-path` values, read before clap runs because they decide which plugins (and so
/// which subcommands and flags) exist.
pub fn prescan_plugin_paths(argv: &[OsString]) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    let mut it = argv.iter().skip(1);
    while let Some(arg) = it.next() {
        let arg = arg.to_string_lossy();
        let value = if arg == "--plugin-path" || arg == "--plugin_path" {
            it.next().map(|v| v.to_string_lossy().into_owned())
        } else {
            arg.strip_prefix("--plugin-path=").or_else(|| arg.strip_prefix("--plugin_path=")).map(str::to_string)
        };
        if let Some(value) = value {
            paths.extend(std::env::split_paths(&value).filter(|p| !p.as_os_str().is_empty()));
        }
    }
    paths
}

pub fn build(discovery: &Discovery) -> Command {
    let mut embed = Command::new("embed")
        .about("Extract embeddings with a plugin: deepembed embed <plugin> --df data.parquet ...")
        .subcommand_required(true)
        .allow_external_subcommands(true);
    for plugin in &discovery.plugins {
        let m = &plugin.manifest;
        let mut sub = Command::new(m.name.clone())
            .about(format!("{} ({} embeddings)", m.description, m.modality))
            .after_help(format!("Models:\n  {}\nPlugin: {} {}", m.models.join("\n  "), m.name, m.version));
        let args = plugin_command_args(m);
        for spec in args.host.iter().chain(&args.own) {
            sub = sub.arg(clap_arg(spec));
        }
        for spec in &args.deeptune {
            sub = sub.arg(clap_arg(spec).hide(true));
        }
        // A unique prefix of a flag is the flag, as in DeepTune's argparse (`--target` for
        // `--target_column`).
        embed = embed.subcommand(sub.arg(resume_arg()).infer_long_args(true));
    }
    Command::new("deepembed")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Extract embeddings from pretrained and fine-tuned deep models into Parquet.")
        .subcommand_required(true)
        .arg(
            Arg::new("plugin-path")
                .long("plugin-path")
                .visible_alias("plugin_path")
                .global(true)
                .action(ArgAction::Append)
                .value_name("DIR")
                .help("Look for plugins here first (colon-separated list allowed)."),
        )
        .arg(
            Arg::new("quiet")
                .long("quiet")
                .short('q')
                .global(true)
                .action(ArgAction::SetTrue)
                .help("No progress bar and only warnings and errors on stderr."),
        )
        .subcommand(
            Command::new("plugins")
                .about("List discovered plugins, and files that could not be loaded with the reason.")
                .arg(Arg::new("json").long("json").action(ArgAction::SetTrue).help("Machine-readable output.")),
        )
        .subcommand(embed)
        .subcommand(packs_command())
        .subcommand(
            Command::new("slurm")
                .about("Submit an extraction as a Slurm array job of N shards plus a merge job: deepembed slurm --shards N [--dry-run] [sbatch options] -- embed <plugin> ...")
                .arg(
                    Arg::new("args")
                        .num_args(0..)
                        .allow_hyphen_values(true)
                        .trailing_var_arg(true)
                        .value_name("ARGS")
                        .help("--shards N, --dry-run (print the scripts instead), sbatch options (passed to the array job unchanged), then -- and the embed command."),
                ),
        )
        .subcommand(
            Command::new("merge")
                .about("Put the run directories of --shard I/N runs together as one run (checks they cover every row once).")
                .arg(
                    Arg::new("dirs")
                        .required(true)
                        .num_args(1..)
                        .value_parser(clap::value_parser!(PathBuf))
                        .value_name("DIR")
                        .help("The shards' run directories (embed_output_...), or directories holding them."),
                )
                .arg(
                    Arg::new("out")
                        .long("out")
                        .value_parser(clap::value_parser!(PathBuf))
                        .value_name("PATH")
                        .help("Directory that receives the merged embed_output_<MODEL>_<date>_<time>/ (default: the first shard's parent)."),
                )
                .arg(Arg::new("json").long("json").action(ArgAction::SetTrue).help("Print a JSON summary of the result on stdout.")),
        )
}

fn clap_arg(spec: &ArgSpec) -> Arg {
    let mut arg = Arg::new(spec.name.clone()).long(spec.name.clone()).help(spec.help.clone());
    let kebab = spec.name.replace('_', "-");
    if kebab != spec.name {
        arg = arg.visible_alias(kebab);
    }
    arg = match spec.kind {
        ArgKind::Bool => arg.action(ArgAction::SetTrue),
        ArgKind::List => arg.num_args(1..).action(ArgAction::Append),
        // A negative number is a value (for the range check to refuse), not a flag.
        ArgKind::Int => arg
            .allow_negative_numbers(true)
            .value_parser(clap::value_parser!(i64).range(spec.min.unwrap_or(i64::MIN)..=spec.max.unwrap_or(i64::MAX))),
        ArgKind::Float => arg.allow_negative_numbers(true).value_parser(clap::value_parser!(f64)),
        ArgKind::Path => arg.value_parser(clap::value_parser!(PathBuf)).value_name("PATH"),
        ArgKind::String => arg,
    };
    if !spec.choices.is_empty() {
        arg = arg.value_parser(spec.choices.clone());
    }
    if let Some(default) = &spec.default {
        arg = arg.default_value(default.clone());
    }
    arg.required(spec.required)
}

/// The values of `specs` as JSON, by snake_case name. Absent optional arguments are `null`,
/// so `cli_arguments.json` lists every argument; paths are made absolute.
pub fn collect_args(specs: &[ArgSpec], matches: &ArgMatches) -> Result<Map<String, Value>> {
    let mut args = Map::new();
    for spec in specs {
        let id = spec.name.as_str();
        let value = match spec.kind {
            ArgKind::Bool => Value::Bool(matches.get_flag(id)),
            ArgKind::Int => matches.get_one::<i64>(id).map_or(Value::Null, |v| Value::from(*v)),
            ArgKind::Float => matches.get_one::<f64>(id).map_or(Value::Null, |v| Value::from(*v)),
            ArgKind::Path => match matches.get_one::<PathBuf>(id) {
                Some(p) => Value::from(
                    std::path::absolute(p)
                        .map_err(|e| anyhow!("--{id} {}: {e}", p.display()))?
                        .to_string_lossy()
                        .into_owned(),
                ),
                None => Value::Null,
            },
            ArgKind::List => match matches.get_many::<String>(id) {
                Some(values) => Value::from(values.cloned().collect::<Vec<_>>()),
                None => Value::Null,
            },
            ArgKind::String => matches.get_one::<String>(id).map_or(Value::Null, |v| Value::from(v.clone())),
        };
        args.insert(id.to_string(), value);
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<OsString> {
        std::iter::once("deepembed").chain(args.iter().copied()).map(OsString::from).collect()
    }

    #[test]
    fn plugin_paths_are_found_in_every_spelling_before_clap_runs() {
        let found = prescan_plugin_paths(&argv(&[
            "embed",
            "x",
            "--plugin-path",
            "/a:/b",
            "--plugin_path=/c",
            "--plugin-path=/d",
            "--df",
            "f",
        ]));
        assert_eq!(found, ["/a", "/b", "/c", "/d"].map(PathBuf::from));
        assert!(prescan_plugin_paths(&argv(&["plugins", "--plugin-path"])).is_empty());
    }

    #[test]
    fn flags_accept_snake_and_kebab_case_and_record_every_argument() {
        let specs = vec![
            ArgSpec::new("model_version", ArgKind::String, "").required(),
            ArgSpec::new("embed_size", ArgKind::Int, ""),
            ArgSpec::new("cols", ArgKind::List, ""),
            ArgSpec::new("model_weights", ArgKind::Path, ""),
        ];
        let mut cmd = Command::new("t");
        for s in &specs {
            cmd = cmd.arg(clap_arg(s));
        }
        let m = cmd
            .clone()
            .try_get_matches_from([
                "t",
                "--model-version",
                "r18",
                "--embed_size",
                "64",
                "--cols",
                "a",
                "b",
                "--model_weights",
                "w.pth",
            ])
            .unwrap();
        let args = collect_args(&specs, &m).unwrap();
        assert_eq!(args["model_version"], "r18");
        assert_eq!(args["embed_size"], 64);
        assert_eq!(args["cols"], serde_json::json!(["a", "b"]));
        assert!(std::path::Path::new(args["model_weights"].as_str().unwrap()).is_absolute());
        let m = cmd.try_get_matches_from(["t", "--model_version", "r18"]).unwrap();
        let args = collect_args(&specs, &m).unwrap();
        assert!(args["embed_size"].is_null() && args.contains_key("embed_size"));
    }

    #[test]
    fn a_bad_batch_size_is_an_error_not_a_default() {
        let mut cmd = Command::new("t");
        for s in &host_args() {
            cmd = cmd.arg(clap_arg(s));
        }
        for bad in ["0", "x", "-3", "1.5", "99999999999"] {
            let err = cmd.clone().try_get_matches_from(["t", "--batch_size", bad]).unwrap_err().to_string();
            assert!(err.contains("--batch_size"), "{bad}: {err}");
        }
        let m = cmd.try_get_matches_from(["t"]).unwrap();
        assert_eq!(collect_args(&host_args(), &m).unwrap()["batch_size"], 32);
    }
}
