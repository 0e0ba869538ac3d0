//! The `kavwatch` command: parses the command line, calls the library, maps errors to exit
//! codes (0 done, 2 bad usage or input, 3 `--fail-on-active` and an active host).

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::run() {
        Ok(code) => code,
        Err(e) => {
            // One line: the chain of contexts, outermost first.
            eprintln!("kavwatch: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::from(2)
        }
    }
}
