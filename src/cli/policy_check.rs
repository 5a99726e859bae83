//! `pullgate policy check`: the policy `serve` would load, as a table, or every problem in it.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::process::ExitCode;

use crate::config::{Config, Overrides};
use crate::daemon::{self, DaemonError};
use crate::explain::PolicyTable;
use crate::policy::Policy;
use crate::reference::RegistryHost;

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
    note_aliases(policy);
    Ok(())
}

/// A scope naming `127.0.0.1:5000` also covers `localhost:5000`: say so, once per host, so
/// nobody writes a second rule expecting it to be separate.
fn note_aliases(policy: &Policy) {
    let hosts: BTreeSet<&RegistryHost> = policy.rules().iter().filter_map(|rule| rule.scope.registry()).collect();
    for host in hosts {
        let aliases = host.well_known_aliases();
        if !aliases.is_empty() {
            eprintln!("pullgate: note: scopes on \"{host}\" also cover {}", aliases.join(", "));
        }
    }
}
