use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = homelab_autopilot::cli::Cli::parse();
    ExitCode::from(homelab_autopilot::commands::main(cli))
}
