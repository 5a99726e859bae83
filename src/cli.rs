//! Command-line interface: parses arguments and hands each command its configuration.

mod policy_check;
mod verify;
mod verify_bundle;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, ConfigError, LogFormat, LogOverrides, Overrides};
use crate::daemon::DaemonError;
use crate::explain::SCHEMA_VERSION;
use crate::policy::Problem;

/// `verify` and `policy check`: the image or policy is refused / has problems.
const EXIT_REFUSED: u8 = 1;
/// Every command: pullgate could not do what was asked (configuration, registry unreachable).
const EXIT_ERROR: u8 = 2;

#[derive(Parser)]
#[command(name = "pullgate", version, about = "Verifies image signatures before containerd pulls")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the CRI on the listen socket, relaying to containerd.
    Serve(ServeArgs),
    /// Decide on IMAGE exactly as the daemon would, without pulling, and explain why.
    ///
    /// Exit status: 0 accepted, 1 rejected, 2 error (bad configuration or policy, registry
    /// unreachable). It follows the verdict even under an audit-mode rule, where the daemon
    /// would let the pull go ahead.
    Verify(verify::VerifyArgs),
    /// Check one sigstore bundle offline (the sigstore-conformance CLI protocol).
    ///
    /// Exit status: 0 verified, 1 refused (the message names the check), 2 error (unreadable
    /// input, unusable trusted root).
    VerifyBundle(verify_bundle::VerifyBundleArgs),
    /// Inspect the node policy.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Load configuration and policy as `serve` would, then list the rules or every problem.
    ///
    /// Exit status: 0 the policy loads, 1 it has problems, 2 the configuration is unusable.
    Check(policy_check::CheckArgs),
}

/// Where the configuration comes from; shared by every command so they all read the same.
#[derive(clap::Args)]
struct ConfigArgs {
    /// TOML configuration file.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Directory of policy files (overrides `policy_dir`).
    #[arg(long)]
    policy_dir: Option<PathBuf>,
    /// A containers-policy.json read in addition to the policy directory (overrides `policy_json`).
    #[arg(long)]
    policy_json: Option<PathBuf>,
}

/// How `verify` and `policy check` report, failures included.
#[derive(Clone, Copy, Default, clap::ValueEnum)]
enum Output {
    /// Text for people; errors on standard error.
    #[default]
    Text,
    /// One JSON object on standard output for tools, an error object too.
    Json,
}

/// Something that kept a command from doing what was asked, as `Output` reports it.
struct Failure {
    /// `usage`, `config`, `policy`, `input` or `output`: what a tool should look at.
    kind: &'static str,
    message: String,
    /// Each problem of a policy that does not load, with its file and line.
    problems: Vec<Problem>,
    exit: u8,
}

impl Failure {
    fn new(kind: &'static str, message: impl std::fmt::Display) -> Failure {
        Failure { kind, message: message.to_string(), problems: Vec::new(), exit: EXIT_ERROR }
    }

    fn config(error: &ConfigError) -> Failure {
        Failure::new("config", error)
    }

    /// What keeps the daemon from starting: the policy, with each of its problems, or the rest
    /// of the configuration.
    fn prepare(error: DaemonError) -> Failure {
        match error {
            DaemonError::Policy(error) => {
                let message = error.to_string();
                Failure { kind: "policy", message, problems: error.problems, exit: EXIT_ERROR }
            }
            other => Failure::new("config", other),
        }
    }
}

impl Output {
    fn fail(self, failure: Failure) -> ExitCode {
        match self {
            Output::Text => eprintln!("pullgate: {}", failure.message),
            Output::Json => {
                let problems: Vec<serde_json::Value> = failure
                    .problems
                    .iter()
                    .map(|p| serde_json::json!({"file": p.file, "line": p.line, "message": p.message}))
                    .collect();
                let error = serde_json::json!({
                    "kind": failure.kind,
                    "message": failure.message,
                    "problems": problems,
                });
                println!("{}", serde_json::json!({"schema_version": SCHEMA_VERSION, "error": error}));
            }
        }
        ExitCode::from(failure.exit)
    }
}

#[derive(clap::Args)]
struct ServeArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Socket to serve on (overrides `listen`).
    #[arg(long)]
    listen: Option<PathBuf>,
    /// containerd's socket (overrides `upstream`).
    #[arg(long)]
    upstream: Option<PathBuf>,
    /// Log format (overrides `log.format`).
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
}

pub fn main() -> ExitCode {
    // Before anything can reach sigstore-crypto, which panics without a provider.
    crate::verify::keyless::provider::install();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return usage_error(error, std::env::args_os().skip(1)),
    };
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Verify(args) => verify::run(args),
        Command::VerifyBundle(args) => verify_bundle::run(&args),
        Command::Policy(PolicyCommand::Check(args)) => policy_check::run(&args),
    }
}

/// A command line clap refuses. With `--output json` among the arguments that is one JSON
/// error object on standard output too, so a tool never has to read clap's text; help and
/// version requests, and everything without `--output json`, are clap's own.
fn usage_error(error: clap::Error, args: impl Iterator<Item = std::ffi::OsString>) -> ExitCode {
    use clap::error::ErrorKind;
    let informational = matches!(
        error.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    );
    if informational || !asks_for_json(args) {
        error.exit();
    }
    Output::Json.fail(Failure::new("usage", usage_message(&error.to_string())))
}

/// `--output json` or `--output=json` before any `--`.
fn asks_for_json(args: impl Iterator<Item = std::ffi::OsString>) -> bool {
    let mut previous_was_output = false;
    for arg in args {
        let arg = arg.to_string_lossy();
        if arg == "--" {
            return false;
        }
        if arg == "--output=json" || (previous_was_output && arg == "json") {
            return true;
        }
        previous_was_output = arg == "--output";
    }
    false
}

/// clap's message without its `error: ` label and the usage and tips that follow it.
fn usage_message(text: &str) -> String {
    let text = text.strip_prefix("error: ").unwrap_or(text);
    let lines: Vec<&str> = text.lines().take_while(|line| !line.trim().is_empty()).map(str::trim).collect();
    lines.join(" ")
}

impl ConfigArgs {
    fn load(&self, overrides: Overrides) -> Result<Config, ConfigError> {
        let overrides =
            Overrides { policy_dir: self.policy_dir.clone(), policy_json: self.policy_json.clone(), ..overrides };
        Config::load(self.config.as_deref(), &overrides)
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let overrides = Overrides {
        listen: args.listen,
        upstream: args.upstream,
        log: args.log_format.map(|format| LogOverrides { format }),
        ..Overrides::default()
    };
    let config = match args.config.load(overrides) {
        Ok(config) => config,
        Err(error) => return fail(&error),
    };
    if let Err(error) = crate::telemetry::init(&config.log) {
        return fail(&error);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => return fail(&error),
    };
    match runtime.block_on(crate::daemon::serve(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "pullgate stopped");
            ExitCode::FAILURE
        }
    }
}

fn fail(error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("pullgate: {error}");
    ExitCode::from(EXIT_ERROR)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    #[test]
    fn arguments_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn json_output_is_found_however_it_is_written() {
        let asks = |args: &[&str]| asks_for_json(args.iter().map(std::ffi::OsString::from));
        assert!(asks(&["verify", "nginx", "--output", "json"]));
        assert!(asks(&["policy", "check", "--output=json", "--bogus"]));
        assert!(!asks(&["verify", "nginx", "--output", "text"]));
        assert!(!asks(&["verify", "nginx", "json"]));
        assert!(!asks(&["verify", "--", "--output", "json"]));
    }

    #[test]
    fn a_usage_message_keeps_the_problem_and_drops_the_usage() {
        let error = Cli::try_parse_from(["pullgate", "verify", "--output", "json"]).err().expect("no image accepted");
        assert_eq!(usage_message(&error.to_string()), "the following required arguments were not provided: <IMAGE>");
    }

    #[test]
    fn password_needs_a_username_and_one_source() {
        let parse = |args: &[&str]| Cli::try_parse_from([&["pullgate", "verify", "nginx"], args].concat());
        assert!(parse(&["--password", "p"]).is_err());
        assert!(parse(&["--username", "u", "--password", "p", "--password-stdin"]).is_err());
        assert!(parse(&["--username", "u", "--password-stdin", "--output", "json"]).is_ok());
    }
}
