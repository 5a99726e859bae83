//! `pullgate verify`: the daemon's decision for one image, made the same way, without pulling.

use std::io::{BufRead as _, Write as _};
use std::process::ExitCode;

use crate::config::Overrides;
use crate::daemon;
use crate::decision::{PullRequest, Verdict};
use crate::explain::Explanation;
use crate::policy::valid_namespace;
use crate::registry::Credentials;

use super::{ConfigArgs, EXIT_ERROR, EXIT_REFUSED, Failure, Output};

#[derive(clap::Args)]
pub(super) struct VerifyArgs {
    /// The image as a pod spec names it, e.g. `registry.example/team/app:v1`.
    image: String,
    /// The pod's namespace; rules limited to namespaces apply only when it is given.
    #[arg(long, short, value_parser = namespace)]
    namespace: Option<String>,
    #[command(flatten)]
    config: ConfigArgs,
    /// Registry user for the signature fetch, as in the pod's image pull secret.
    #[arg(long)]
    username: Option<String>,
    /// Registry password (visible to other local users in the process list; see --password-stdin).
    #[arg(long, requires = "username")]
    password: Option<String>,
    /// Read the registry password from the first line of standard input.
    #[arg(long, requires = "username", conflicts_with = "password")]
    password_stdin: bool,
    /// Text for people, or one JSON object for tools (an error object when nothing could be decided).
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

/// A namespace no pod can have would match no namespace-limited rule and make the verdict
/// look like the node's answer for a real namespace.
fn namespace(name: &str) -> Result<String, String> {
    if valid_namespace(name) {
        Ok(name.to_owned())
    } else {
        Err(format!("{name:?} is not a Kubernetes namespace name (lower-case letters, digits and '-', at most 63)"))
    }
}

pub(super) fn run(args: VerifyArgs) -> ExitCode {
    let output = args.output;
    let config = match args.config.load(Overrides::default()) {
        Ok(config) => config,
        Err(error) => return output.fail(Failure::config(&error)),
    };
    let credentials = match credentials(&args) {
        Ok(credentials) => credentials,
        Err(error) => {
            return output
                .fail(Failure::new("input", format!("cannot read the password from standard input: {error}")));
        }
    };
    let prepared = match daemon::prepare(&config) {
        Ok(prepared) => prepared,
        Err(error) => return output.fail(Failure::prepare(error)),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => return output.fail(Failure::new("runtime", format!("cannot start the async runtime: {error}"))),
    };
    let pull = PullRequest { image: args.image.clone(), namespace: args.namespace.clone(), credentials };
    let decision = runtime.block_on(prepared.gate.decide(&pull));
    let explanation = Explanation::new(&args.image, args.namespace.as_deref(), &decision);
    if let Err(error) = print(&explanation, output) {
        return Output::Text.fail(Failure::new("output", format!("cannot write the explanation: {error}")));
    }
    match decision.verdict {
        Verdict::Accepted => ExitCode::SUCCESS,
        Verdict::Rejected => ExitCode::from(EXIT_REFUSED),
        Verdict::Unavailable => ExitCode::from(EXIT_ERROR),
    }
}

fn credentials(args: &VerifyArgs) -> std::io::Result<Credentials> {
    let password = match (&args.password, args.password_stdin) {
        (Some(password), _) => password.clone(),
        (None, true) => {
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
        (None, false) => String::new(),
    };
    let username = args.username.clone().unwrap_or_default();
    Ok(Credentials { username, password, ..Credentials::default() })
}

fn print(explanation: &Explanation, output: Output) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match output {
        Output::Text => write!(out, "{explanation}"),
        Output::Json => {
            serde_json::to_writer_pretty(&mut out, explanation)?;
            writeln!(out)
        }
    }
}
