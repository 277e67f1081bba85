use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = homelab_autopilot::cli::parse();
    ExitCode::from(homelab_autopilot::commands::main(cli))
}
