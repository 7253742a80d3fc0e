//! Prints the inert value tree of a pickle or joblib file: `cargo run --example dump_pickle FILE`.
fn main() -> anyhow::Result<()> {
    let path = std::env::args().nth(1).expect("usage: dump_pickle FILE");
    let value = deepembed_sdk::checkpoint::read_pickle_file(std::path::Path::new(&path))?;
    println!("{value:#?}");
    Ok(())
}
