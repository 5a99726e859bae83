//! Daemon configuration: one struct, its documented defaults, and the figment layering
//! (TOML file, then `PULLGATE_*` environment, then CLI flags).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::registry::RegistryConfig;

mod problems;

pub use problems::ConfigError;

/// Where the kubelet will look for an image service next to containerd.
const DEFAULT_LISTEN: &str = "/run/pullgate/pullgate.sock";
/// Where node operators (and configuration management) drop policy files.
const DEFAULT_POLICY_DIR: &str = "/etc/pullgate/policy.d";
/// containerd's own CRI socket on a stock install.
const DEFAULT_UPSTREAM: &str = "/run/containerd/containerd.sock";
/// Long enough for an in-flight image pull of a few hundred MiB to finish on SIGTERM, short
/// enough that systemd (TimeoutStopSec=30 in our unit) never has to SIGKILL us.
const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(20);
/// A local Unix socket either connects at once or not at all; waiting longer only delays the
/// UNAVAILABLE answer the kubelet needs to retry.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Long enough that a deployment rolling out over a few minutes verifies its image once per
/// node; short enough that a signature deleted from the registry stops admitting its image
/// soon. (A policy change needs no TTL: it empties the cache.)
const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(5 * 60);
/// Far more distinct (image, rule) pairs than a node runs (the kubelet's default is 110 pods);
/// an entry is at most a few KiB, so the cache stays within a few MiB whatever a registry sends.
const DEFAULT_CACHE_MAX_ENTRIES: usize = 1024;
/// A kubelet holds one or two connections, and crictl, health probes and node tools a few
/// more each while they run; far beyond that is not a node's own clients. Each connection can
/// hold a few hundred KiB of buffers, so this also bounds pullgate's memory.
const DEFAULT_MAX_CONNECTIONS: usize = 64;

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Unix socket pullgate serves the CRI on.
    pub listen: PathBuf,
    /// containerd's CRI socket that every call is relayed to.
    pub upstream: PathBuf,
    /// How long a SIGTERM waits for in-flight calls before exiting anyway.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// How long to wait for the upstream socket to accept a connection.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Connections to `listen` served at once; further ones are closed as they arrive.
    pub max_connections: usize,
    /// Every `*.toml` file here is part of the policy.
    pub policy_dir: PathBuf,
    /// An optional containers-policy.json file, read in addition to `policy_dir`.
    pub policy_json: Option<PathBuf>,
    pub registry: RegistryConfig,
    pub cache: CacheConfig,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
}

/// The verification result cache (see `decision::cache`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// How long an accepted verification is reused for the same digest and rule; 0 disables
    /// the cache, and more than a day counts as a day. Rejections are kept for at most a few
    /// seconds whatever this says.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Most results kept at once; when full, the entry closest to expiry goes first.
    pub max_entries: usize,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing `EnvFilter` directive, e.g. `info` or `pullgate=debug`.
    pub level: String,
}

/// The Prometheus endpoint. Off unless an address is given: the daemon runs as root on every
/// node, so it opens no TCP port the operator did not ask for.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Address to serve `GET /metrics` on, e.g. `127.0.0.1:9464`.
    pub listen: Option<SocketAddr>,
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: PathBuf::from(DEFAULT_LISTEN),
            upstream: PathBuf::from(DEFAULT_UPSTREAM),
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            policy_dir: PathBuf::from(DEFAULT_POLICY_DIR),
            policy_json: None,
            registry: RegistryConfig::default(),
            cache: CacheConfig::default(),
            log: LogConfig::default(),
            metrics: MetricsConfig::default(),
        }
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig { ttl: DEFAULT_CACHE_TTL, max_entries: DEFAULT_CACHE_MAX_ENTRIES }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: LogFormat::Text, level: "info".to_owned() }
    }
}

/// Values given on the command line; only the ones present override the layers below.
#[derive(Debug, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_json: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<LogOverrides>,
}

#[derive(Debug, Serialize)]
pub struct LogOverrides {
    pub format: LogFormat,
}

impl Config {
    /// The figment that `serve` and the other commands extract from; exposed so tests can layer
    /// their own providers without touching the process environment.
    pub fn figment(file: Option<&Path>, overrides: &Overrides) -> Figment {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        // `__` separates nesting, so PULLGATE_LOG__FORMAT sets `log.format`.
        figment.merge(Env::prefixed("PULLGATE_").split("__")).merge(Serialized::defaults(overrides))
    }

    /// The file is checked on its own first, so that all of its problems are reported at
    /// once, each at its line; then the layers together.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|error| ConfigError::unreadable(path, &error))?;
            problems::in_file(path, &text)?;
        }
        Self::from_figment(Self::figment(file, overrides))
    }

    pub fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        let config: Config = figment.extract().map_err(ConfigError::extracting)?;
        match config.value_problems() {
            problems if problems.is_empty() => Ok(config),
            problems => Err(ConfigError::values(problems)),
        }
    }

    /// What the types alone accept but the daemon would silently misread: every problem, so
    /// one run reports them all.
    fn value_problems(&self) -> Vec<String> {
        // A cap of 0 would refuse the kubelet itself, on every connection.
        let no_connections = (self.max_connections == 0)
            .then(|| "max_connections = 0 would refuse every client, the kubelet too; leave it out for 64".to_owned());
        log_level_problems(&self.log.level)
            .into_iter()
            .chain(no_connections)
            .chain(self.registry.insecure.iter().filter_map(|entry| crate::registry::insecure_entry_problem(entry)))
            .collect()
    }
}

/// Level names a bare `log.level` directive may be.
const LOG_LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// A tracing filter reads a bare word as a target to log at every level, so `level = "verbose"`
/// would silence everything but a target named "verbose": a bare word must be a level, and a
/// target is written `target=level`.
fn log_level_problems(level: &str) -> Option<String> {
    let bare_words = level.split(',').map(str::trim).filter(|d| !d.contains(['=', '[']));
    let unknown: Vec<&str> = bare_words.filter(|d| !LOG_LEVELS.contains(&d.to_ascii_lowercase().as_str())).collect();
    if unknown.is_empty() {
        return tracing_subscriber::EnvFilter::try_new(level).err().map(|e| format!("log.level {level:?}: {e}"));
    }
    let shown: Vec<String> = unknown.iter().map(|d| format!("{d:?}")).collect();
    Some(format!(
        "log.level {level:?}: {} is not a level; write one of {} or target=level (e.g. \"pullgate=debug\")",
        shown.join(", "),
        LOG_LEVELS.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::Jail;

    fn load_in_jail(jail: &Jail, overrides: &Overrides) -> Result<Config, ConfigError> {
        Config::load(Some(&jail.directory().join("pullgate.toml")), overrides)
    }

    #[test]
    fn defaults_apply_without_a_file() {
        Jail::expect_with(|_| {
            let config = Config::load(None, &Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(config, Config::default());
            assert_eq!(config.listen, PathBuf::from(DEFAULT_LISTEN));
            Ok(())
        });
    }

    #[test]
    fn file_then_env_then_flags() {
        Jail::expect_with(|jail| {
            jail.create_file("pullgate.toml", "listen = \"/a.sock\"\nupstream = \"/u.sock\"\n")?;
            jail.set_env("PULLGATE_UPSTREAM", "/env.sock");
            jail.set_env("PULLGATE_LOG__FORMAT", "json");
            let flags = Overrides { listen: Some("/flag.sock".into()), ..Default::default() };
            let config = load_in_jail(jail, &flags).map_err(|e| e.to_string())?;
            assert_eq!(config.listen, PathBuf::from("/flag.sock"));
            assert_eq!(config.upstream, PathBuf::from("/env.sock"));
            assert_eq!(config.log.format, LogFormat::Json);
            Ok(())
        });
    }

    #[test]
    fn metrics_listener_is_off_unless_given() {
        Jail::expect_with(|jail| {
            assert_eq!(Config::default().metrics.listen, None);
            jail.create_file("pullgate.toml", "[metrics]\nlisten = \"127.0.0.1:9464\"\n")?;
            let config = load_in_jail(jail, &Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(config.metrics.listen, Some("127.0.0.1:9464".parse().unwrap()));
            jail.create_file("pullgate.toml", "[metrics]\nlisten = \"localhost\"\n")?;
            let err = load_in_jail(jail, &Overrides::default()).expect_err("address without port accepted");
            assert!(err.to_string().contains("listen"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn unknown_key_is_named() {
        Jail::expect_with(|jail| {
            jail.create_file("pullgate.toml", "listne = \"/a.sock\"\n")?;
            let err = load_in_jail(jail, &Overrides::default()).expect_err("unknown key accepted");
            assert!(err.to_string().contains("listne"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn bad_value_is_named() {
        Jail::expect_with(|jail| {
            jail.create_file("pullgate.toml", "shutdown_grace = \"soon\"\n[log]\nformat = \"xml\"\n")?;
            let err = load_in_jail(jail, &Overrides::default()).expect_err("bad value accepted");
            let text = err.to_string();
            assert!(text.contains("shutdown_grace") || text.contains("format"), "{text}");
            Ok(())
        });
    }

    #[test]
    fn the_documented_file_shows_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/pullgate.toml");
        // The file alone, without the environment layer the other tests jail.
        let figment = Figment::from(Serialized::defaults(Config::default())).merge(Toml::file_exact(path));
        assert_eq!(Config::from_figment(figment).unwrap(), Config::default());
    }

    #[test]
    fn a_log_level_that_is_no_level_is_an_error() {
        Jail::expect_with(|jail| {
            for good in ["warn", "INFO", "pullgate=debug,info", "off"] {
                jail.create_file("pullgate.toml", &format!("[log]\nlevel = {good:?}\n"))?;
                load_in_jail(jail, &Overrides::default()).map_err(|e| format!("{good}: {e}"))?;
            }
            for bad in ["verbose", "info,pullgate", ""] {
                jail.create_file("pullgate.toml", &format!("[log]\nlevel = {bad:?}\n"))?;
                let err = load_in_jail(jail, &Overrides::default()).expect_err(bad).to_string();
                assert!(err.contains("log.level") && err.contains("is not a level"), "{bad}: {err}");
            }
            Ok(())
        });
    }

    #[test]
    fn an_insecure_registry_written_as_a_url_is_an_error_saying_what_to_write() {
        Jail::expect_with(|jail| {
            jail.create_file("pullgate.toml", "[registry]\ninsecure = [\"127.0.0.1:5000\", \"mirror.local\"]\n")?;
            load_in_jail(jail, &Overrides::default()).map_err(|e| e.to_string())?;
            let file = "[registry]\ninsecure = [\"http://127.0.0.1:41085\", \"r.local:5000/v2/\"]\n";
            jail.create_file("pullgate.toml", file)?;
            let err = load_in_jail(jail, &Overrides::default()).expect_err("URL accepted").to_string();
            assert!(err.contains("write host:port (e.g. \"127.0.0.1:41085\")"), "{err}");
            assert!(
                err.contains("\"r.local:5000/v2/\": write host:port (e.g. \"r.local:5000\")"),
                "both reported: {err}"
            );
            Ok(())
        });
    }

    #[test]
    fn a_connection_cap_of_zero_is_an_error() {
        Jail::expect_with(|jail| {
            jail.create_file("pullgate.toml", "max_connections = 1\n")?;
            load_in_jail(jail, &Overrides::default()).map_err(|e| e.to_string())?;
            jail.create_file("pullgate.toml", "max_connections = 0\n")?;
            let err = load_in_jail(jail, &Overrides::default()).expect_err("a cap of 0 accepted").to_string();
            assert!(err.contains("max_connections = 0 would refuse every client"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn type_errors_read_in_the_files_words() {
        Jail::expect_with(|jail| {
            let path = jail.directory().join("pullgate.toml");
            let cases = [
                ("polcy_dir = \"/p\"\n", "1: unknown key \"polcy_dir\"; the keys here are listen, upstream,"),
                (
                    "[cache]\nmax_entries = \"many\"\n",
                    "2: \"cache.max_entries\" must be a whole number, not the string \"many\"",
                ),
                (
                    "[registry]\n\ninsecure = \"a:1\"\n",
                    "3: \"registry.insecure\" must be a list, not the string \"a:1\"",
                ),
                ("max_connections = -1\n", "1: \"max_connections\" must be a whole number, not -1"),
                (
                    "[registry]\nchecks_total = 0\n",
                    "2: \"registry.checks_total\" must be a whole number above 0, not 0",
                ),
                ("log.format = \"xml\"\n", "1: \"log.format\" must be one of \"text\", \"json\", not \"xml\""),
                ("[metrics]\nlisten = \"localhost\"\n", "2: \"metrics.listen\": invalid socket address syntax"),
                ("[rule]\nscope = \"*\"\n", "1: unknown key \"rule\" (policy rules go in policy_dir files, not here)"),
                ("# pullgate\n[log.x]\n", "2: unknown key \"log.x\"; the keys here are format, level"),
                ("listen = \n", "1: not valid TOML: "),
            ];
            for (file, expected) in cases {
                jail.create_file("pullgate.toml", file)?;
                let err = load_in_jail(jail, &Overrides::default()).expect_err(file).to_string();
                let expected = format!("invalid configuration: {}:{expected}", path.display());
                assert!(err.starts_with(&expected), "{file}:\n{err}\nis not\n{expected}");
                for library in ["default.", "usize", "i64", "``", "sequence", "TOML file"] {
                    assert!(!err.contains(library), "{err}");
                }
            }
            Ok(())
        });
    }

    #[test]
    fn every_problem_in_the_file_is_reported_at_once_in_its_order() {
        Jail::expect_with(|jail| {
            let file = "max_connections = \"x\"\n[cache]\nmax_entries = \"many\"\nttl = 5\n[log]\nlevel = \"loud\"\n\
                        [registry]\ninsecure = [\"http://r.example\"]\nchecks_total = 0\n";
            jail.create_file("pullgate.toml", file)?;
            let err = load_in_jail(jail, &Overrides::default()).expect_err("accepted").to_string();
            let path = jail.directory().join("pullgate.toml").display().to_string();
            let lines: Vec<&str> = err.lines().collect();
            assert_eq!(lines[0], "invalid configuration, 6 problems:", "{err}");
            let located: Vec<String> =
                lines[1..].iter().map(|line| line.trim().split(' ').next().unwrap_or_default().to_owned()).collect();
            let expected: Vec<String> = [1, 3, 4, 6, 8, 9].iter().map(|n| format!("{path}:{n}:")).collect();
            assert_eq!(located, expected, "{err}");
            Ok(())
        });
    }

    #[test]
    fn a_value_from_the_environment_says_so() {
        Jail::expect_with(|jail| {
            jail.set_env("PULLGATE_CACHE__MAX_ENTRIES", "many");
            let err = Config::load(None, &Overrides::default()).expect_err("accepted").to_string();
            assert_eq!(
                err,
                "invalid configuration: \"cache.max_entries\" must be a whole number, not the string \"many\" \
                 (from PULLGATE_ environment variable(s))"
            );
            Ok(())
        });
    }

    #[test]
    fn missing_file_is_an_error() {
        Jail::expect_with(|jail| {
            let err = load_in_jail(jail, &Overrides::default()).expect_err("missing file accepted");
            assert!(err.to_string().contains("pullgate.toml"), "{err}");
            Ok(())
        });
    }
}
