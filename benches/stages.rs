//! Each stage's rate on one thread, on a capture: `cargo bench --bench stages -- FILE [RULES]`.
//! Prints one JSON object (seconds per stage, packets, packets passed on to workers,
//! observations); `benches/line_rate.py --stages` turns it into rates and the scaling estimate.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use kavwatch::pipeline::{Options, stages};
use kavwatch::spill::SpillArea;
use kavwatch::worker::Limits;

fn main() {
    // `cargo bench` passes --bench; the capture is the first other argument.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let Some(path) = args.first().map(PathBuf::from) else {
        eprintln!("usage: cargo bench --bench stages -- CAPTURE [RULES]");
        std::process::exit(2);
    };
    let rules = kavwatch::rules::load::load(args.get(1).map(PathBuf::from).as_deref()).expect("rules");
    let opts = Options {
        workers: 1,
        decoders: 1,
        limits: Limits::default(),
        progress: false,
        decode: Default::default(),
        spill: SpillArea::new(std::env::temp_dir()),
        memory_budget: 32 << 20,
        stop: Arc::new(AtomicBool::new(false)),
    };
    match stages::measure(&path, Arc::new(kavwatch::rules::matcher::Rules::new(rules)), &opts) {
        Ok(t) => println!("{}", serde_json::to_string(&t).expect("serialises")),
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            std::process::exit(2);
        }
    }
}
