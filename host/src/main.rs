//! `deepembed`: discovers plugins, builds its command line from them, and runs extractions.

mod cli;
mod device;
mod discovery;
mod input;
mod loader;
mod logger;
mod output;
mod run;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Context, Result};
use serde_json::json;

use loader::Discovery;

fn main() -> ExitCode {
    let argv: Vec<_> = std::env::args_os().collect();
    let quiet = argv.iter().any(|a| a == "--quiet" || a == "-q");
    logger::init(quiet);
    match run_cli(argv) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_cli(argv: Vec<std::ffi::OsString>) -> Result<()> {
    let discovery = loader::discover(&cli::prescan_plugin_paths(&argv));
    let matches = cli::build(&discovery).get_matches_from(argv);
    let quiet = matches.get_flag("quiet");
    match matches.subcommand() {
        Some(("plugins", sub)) => list_plugins(&discovery, sub.get_flag("json")),
        Some(("embed", sub)) => match sub.subcommand() {
            Some((name, plugin_matches)) => embed(&discovery, name, plugin_matches, quiet),
            None => Err(anyhow!("name a plugin: deepembed embed <plugin>")),
        },
        _ => unreachable!("clap requires a subcommand"),
    }
}

fn embed(discovery: &Discovery, name: &str, matches: &clap::ArgMatches, quiet: bool) -> Result<()> {
    let plugin = discovery.find(name).ok_or_else(|| {
        let known: Vec<&str> = discovery.plugins.iter().map(|p| p.manifest.name.as_str()).collect();
        let known = if known.is_empty() { "none".to_string() } else { known.join(", ") };
        anyhow!("unknown plugin '{name}'; known plugins: {known}\n{}", discovery.explain())
    })?;
    let host = cli::host_args();
    let specs: Vec<_> = host
        .iter()
        .chain(plugin.manifest.args.iter().filter(|a| !host.iter().any(|h| h.name == a.name)))
        .cloned()
        .collect();
    let args = cli::collect_args(&specs, matches)?;
    let device = device::resolve(args.str("device").unwrap_or("auto"))?;
    let df = PathBuf::from(args.require_str("df")?);
    let out = PathBuf::from(args.str("out").unwrap_or("deeptune_results"));
    let batch_size = args.int("batch_size")?.unwrap_or(32);
    if batch_size < 1 {
        return Err(anyhow!("--batch_size must be at least 1, got {batch_size}"));
    }
    let json_summary = args.flag("json");
    let result =
        run::embed(run::EmbedRequest { plugin, args, df, out, batch_size: batch_size as usize, device, quiet })?;
    log::info!("embeddings written to {}", result.file.display());
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
        writeln!(text, "  models:   {}", m.models.join(", "))?;
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
