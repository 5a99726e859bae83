//! `pullgate policy check`: the policy `serve` would load, as a table, or every problem in it.

use std::io::Write as _;
use std::process::ExitCode;

use crate::config::{Config, Overrides};
use crate::daemon::{self, DaemonError};
use crate::explain::PolicyTable;
use crate::policy::Policy;

use super::{ConfigArgs, EXIT_REFUSED, fail};

pub(super) fn run(args: &ConfigArgs) -> ExitCode {
    let config = match args.load(Overrides::default()) {
        Ok(config) => config,
        Err(code) => return code,
    };
    // The same preparation as `serve`, so anything that would stop the daemon shows here.
    let policy = match daemon::prepare(&config) {
        Ok(prepared) => prepared.policy.current(),
        Err(DaemonError::Policy(error)) => {
            eprintln!("pullgate: {error}");
            return ExitCode::from(EXIT_REFUSED);
        }
        Err(error) => return fail(&error),
    };
    match print(&config, &policy) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(&format!("cannot write the table: {error}")),
    }
}

fn print(config: &Config, policy: &Policy) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    write!(out, "{}", PolicyTable::new(policy))?;
    let json = match &config.policy_json {
        Some(path) => format!(" and {}", path.display()),
        None => String::new(),
    };
    let count = policy.rules().len();
    let rules = if count == 1 { "rule" } else { "rules" };
    writeln!(out, "\n{count} {rules} from {}{json}", config.policy_dir.display())?;
    if policy.is_empty() {
        eprintln!("pullgate: warning: the policy has no rules, so every pull will be rejected");
    }
    Ok(())
}
