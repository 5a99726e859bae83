//! `pullgate policy check`: the policy `serve` would load, as a table, or every problem in it;
//! with what may not mean what its author meant (ignored files, rules that cannot match).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use serde::Serialize;

use crate::config::{Config, Overrides};
use crate::daemon;
use crate::explain::{PolicyTable, RuleView, SCHEMA_VERSION};
use crate::policy::lint::{self, RootInForce, Warning, WarningKind};
use crate::policy::{Policy, RootSource};
use crate::verify::keyless::root::{self, Authority, BUILT_IN_ROOT_SOURCE};

use super::{ConfigArgs, EXIT_REFUSED, Failure, Output};

#[derive(clap::Args)]
pub(super) struct CheckArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// The table for people, or one JSON object for tools (an error object when it does not load).
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

/// What `--output json` prints for a policy that loads; field names are a stable interface.
#[derive(Serialize)]
struct Report {
    schema_version: u32,
    policy_dir: PathBuf,
    policy_json: Option<PathBuf>,
    rules: Vec<RuleView>,
    warnings: Vec<WarningView>,
    /// The trusted roots keyless rules verify against, each once.
    trusted_roots: Vec<RootView>,
}

#[derive(Serialize)]
struct RootView {
    /// The built-in root's label, a root file, or the policy.json a fulcio root is built from.
    root: String,
    /// `built-in`, `file` or `policy-json`.
    source: &'static str,
    /// For the built-in root: the crate release it is embedded in.
    built_in_from: Option<&'static str>,
    /// The newest `validFor` start among its authorities: how recent the root is.
    newest_start: Option<jiff::Timestamp>,
    rules: usize,
    authorities: Vec<Authority>,
}

impl RootView {
    fn new(root: RootInForce) -> RootView {
        let (source, built_in_from) = match root.source {
            RootSource::BuiltIn => ("built-in", Some(BUILT_IN_ROOT_SOURCE)),
            RootSource::File(_) => ("file", None),
            RootSource::PolicyJson { .. } => ("policy-json", None),
        };
        RootView {
            newest_start: root::newest_start(&root.authorities),
            root: root.label,
            source,
            built_in_from,
            rules: root.rules,
            authorities: root.authorities,
        }
    }

    /// Its heading line, then one line per authority.
    fn text(&self) -> String {
        let rules = if self.rules == 1 { "rule" } else { "rules" };
        let mut from = String::new();
        if let Some(crate_release) = self.built_in_from {
            from = format!(", from {crate_release}");
        }
        if let Some(newest) = self.newest_start {
            from.push_str(&format!(", newest authority from {}", newest.strftime("%Y-%m-%d")));
        }
        let mut text = format!("trusted root: {} ({} {rules}{from})\n", self.root, self.rules);
        for authority in &self.authorities {
            text.push_str(&format!("  {}\n", authority.describe()));
        }
        text
    }
}

#[derive(Serialize)]
struct WarningView {
    /// `ignored`, `rule`, `root` (a trusted root that expires soon or has no CA valid now), or
    /// `alias` (a note, not a problem).
    kind: WarningKind,
    file: PathBuf,
    message: String,
}

pub(super) fn run(args: &CheckArgs) -> ExitCode {
    let output = args.output;
    let config = match args.config.load(Overrides::default()) {
        Ok(config) => config,
        Err(error) => return output.fail(Failure::config(&error)),
    };
    // The same preparation as `serve`, so anything that would stop the daemon shows here.
    let policy = match daemon::prepare(&config) {
        Ok(prepared) => prepared.policy.current(),
        Err(error) => {
            let failure = Failure::prepare(error);
            // A policy with problems is this command's finding, not its failure.
            let exit = if failure.kind == "policy" { EXIT_REFUSED } else { failure.exit };
            return output.fail(Failure { exit, ..failure });
        }
    };
    let warnings = lint::warnings(&policy, &config.policy_dir, config.policy_json.as_deref());
    let written = match output {
        Output::Text => print_text(&config, &policy, &warnings),
        Output::Json => print_json(&config, &policy, warnings),
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => Output::Text.fail(Failure::new("output", format!("cannot write the report: {error}"))),
    }
}

fn print_text(config: &Config, policy: &Policy, warnings: &[Warning]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    write!(out, "{}", PolicyTable::new(policy))?;
    let roots = lint::roots_in_force(policy);
    if !roots.is_empty() {
        writeln!(out)?;
    }
    roots.into_iter().try_for_each(|root| write!(out, "{}", RootView::new(root).text()))?;
    if !warnings.is_empty() {
        writeln!(out)?;
    }
    warnings.iter().try_for_each(|warning| writeln!(out, "{warning}"))?;
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
    for note in lint::alias_notes(policy) {
        eprintln!("pullgate: note: {}", note.message);
    }
    Ok(())
}

fn print_json(config: &Config, policy: &Policy, warnings: Vec<Warning>) -> std::io::Result<()> {
    let report = Report {
        schema_version: SCHEMA_VERSION,
        policy_dir: config.policy_dir.clone(),
        policy_json: config.policy_json.clone(),
        rules: policy.rules().iter().map(RuleView::new).collect(),
        warnings: warnings
            .into_iter()
            .chain(lint::alias_notes(policy))
            .map(|Warning { file, kind, message }| WarningView { kind, file, message })
            .collect(),
        trusted_roots: lint::roots_in_force(policy).into_iter().map(RootView::new).collect(),
    };
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &report)?;
    writeln!(out)
}
