//! Generates a preset and prints the time taken and the statistics:
//! `cargo run -p mmkd-synth --example gen_timing -- office [seed] [out_dir]`.

use std::path::PathBuf;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "office".to_string());
    let seed: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(0);
    let dir = args.next().map(PathBuf::from).unwrap_or_else(|| std::env::temp_dir().join(format!("mmkd-synth-{name}")));
    let preset = mmkd_synth::Preset::by_name(&name)?;
    let started = Instant::now();
    let data = mmkd_synth::generate(&preset, seed)?;
    let generated = started.elapsed();
    data.write_sgfd(&dir)?;
    let total = started.elapsed();
    println!(
        "{name} seed {seed}: generate {:.2} s, generate + write {:.2} s ({})",
        generated.as_secs_f64(),
        total.as_secs_f64(),
        dir.display()
    );
    println!("{}", serde_json::to_string_pretty(&data.stats)?);
    Ok(())
}
