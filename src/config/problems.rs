//! What is wrong with a configuration, in the configuration file's words: each problem names
//! its key, and `file:line` when it comes from the file; every problem in the file at once.
//!
//! figment stops at the first type error and knows no lines, so the file is checked first on
//! its own: each value is read alone over the defaults (a value's type never depends on
//! another's), and its line comes from toml's spans.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use figment::providers::{Format as _, Serialized, Toml};
use figment::value::{Dict, Value};
use figment::{Figment, Profile, Provider as _};
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use toml::Spanned;

use super::Config;
use crate::error_text;

/// The configuration cannot be used; every problem found, one per line.
#[derive(Debug)]
pub struct ConfigError {
    problems: Vec<String>,
}

impl std::error::Error for ConfigError {}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problems.as_slice() {
            [one] => write!(f, "invalid configuration: {one}"),
            many => {
                write!(f, "invalid configuration, {} problems:", many.len())?;
                many.iter().try_for_each(|problem| write!(f, "\n  {problem}"))
            }
        }
    }
}

impl ConfigError {
    pub(super) fn unreadable(path: &Path, error: &std::io::Error) -> ConfigError {
        ConfigError { problems: vec![format!("cannot read the configuration file {}: {error}", path.display())] }
    }

    /// figment's errors (from the environment or flags, once the file has passed on its own).
    pub(super) fn extracting(error: figment::Error) -> ConfigError {
        ConfigError { problems: error.into_iter().map(|error| describe(&error)).collect() }
    }

    /// Problems of the merged configuration that the types alone accept.
    pub(super) fn values(problems: Vec<String>) -> ConfigError {
        ConfigError { problems }
    }
}

/// Every problem in the configuration file `path` holding `text`, each as `file:line: …`,
/// in the order of the file.
pub(super) fn in_file(path: &Path, text: &str) -> Result<(), ConfigError> {
    if let Err(error) = toml::from_str::<toml::Table>(text) {
        let line = error.span().map(|span| line_of(text, span.start));
        let at = File { path, lines: KeyLines::default() }.at(line);
        // toml's own words here: it quotes the characters it expected, which read fine.
        let message = error.message().trim().replace('\n', "; ");
        return Err(ConfigError { problems: vec![format!("{at}: not valid TOML: {message}")] });
    }
    // Only a date-time value (which no key takes) keeps the keys' lines from being read; its
    // problems are then reported without lines.
    let file = File { path, lines: KeyLines::of(text).unwrap_or_default() };
    let data = Toml::string(text).data().map_err(ConfigError::extracting)?;
    let dict = data.get(&Profile::Default).cloned().unwrap_or_default();
    let mut problems: Vec<(Option<usize>, String)> = Vec::new();
    for (key, value) in leaves(Vec::new(), dict) {
        let alone =
            Figment::from(Serialized::defaults(Config::default())).merge(Serialized::defaults(nest(&key, value)));
        let found: Vec<(Option<usize>, String)> = match alone.extract::<Config>() {
            Ok(config) => {
                let line = file.lines.line(&key);
                config
                    .value_problems()
                    .into_iter()
                    .map(|problem| (line, format!("{}: {problem}", file.at(line))))
                    .collect()
            }
            Err(errors) => errors.into_iter().map(|error| file.describe(&error)).collect(),
        };
        for problem in found {
            if !problems.contains(&problem) {
                problems.push(problem);
            }
        }
    }
    problems.sort_by_key(|(line, _)| *line);
    match problems.is_empty() {
        true => Ok(()),
        false => Err(ConfigError { problems: problems.into_iter().map(|(_, problem)| problem).collect() }),
    }
}

/// The configuration file being checked, for `file:line` prefixes.
struct File<'a> {
    path: &'a Path,
    lines: KeyLines,
}

impl File<'_> {
    fn at(&self, line: Option<usize>) -> String {
        match line {
            Some(line) => format!("{}:{line}", self.path.display()),
            None => self.path.display().to_string(),
        }
    }
}

impl File<'_> {
    /// One error of a value from this file, with the line of its key.
    fn describe(&self, error: &figment::Error) -> (Option<usize>, String) {
        let line = self.lines.line(&error.path);
        (line, format!("{}: {}", self.at(line), problem(error)))
    }
}

/// One figment error as "what is wrong with which key", in the file's words.
fn describe(error: &figment::Error) -> String {
    format!("{}{}", problem(error), source(error))
}

fn problem(error: &figment::Error) -> String {
    use figment::error::Kind;
    let key = error.path.join(".");
    match &error.kind {
        Kind::UnknownField(found, expected) => {
            let hint = if found == "rule" { " (policy rules go in policy_dir files, not here)" } else { "" };
            let keys = match expected.is_empty() {
                true => "no keys are allowed here".to_owned(),
                false => format!("the keys here are {}", expected.join(", ")),
            };
            format!("unknown key \"{key}\"{hint}; {keys}")
        }
        Kind::InvalidType(actual, expected) | Kind::InvalidValue(actual, expected) => {
            let (expected, actual) = (error_text::expected(expected), error_text::found(&actual.to_string()));
            format!("\"{key}\" must be {expected}, not {actual}")
        }
        Kind::UnknownVariant(found, expected) => {
            let choices: Vec<String> = expected.iter().map(|choice| format!("{choice:?}")).collect();
            format!("\"{key}\" must be one of {}, not {found:?}", choices.join(", "))
        }
        Kind::Message(message) if key.is_empty() => error_text::plain(message),
        other => format!("\"{key}\": {}", error_text::plain(&other.to_string())),
    }
}

/// Where a value that is not from the file being checked came from.
fn source(error: &figment::Error) -> String {
    match error.metadata.as_ref() {
        Some(metadata) => match &metadata.source {
            Some(figment::Source::File(path)) => format!(" (in {})", path.display()),
            _ => format!(" (from {})", metadata.name.replace('`', "")),
        },
        None => String::new(),
    }
}

/// Each value of the file with its key path; tables are descended into, an empty one is a
/// value of its own (an unknown `[section]` with nothing in it is still unknown).
fn leaves(prefix: Vec<String>, dict: Dict) -> Vec<(Vec<String>, Value)> {
    let mut found = Vec::new();
    for (name, value) in dict {
        let mut key = prefix.clone();
        key.push(name);
        match value {
            Value::Dict(_, inner) if !inner.is_empty() => found.extend(leaves(key, inner)),
            value => found.push((key, value)),
        }
    }
    found
}

/// `value` at `key` in otherwise empty tables.
fn nest(key: &[String], value: Value) -> Dict {
    let Some((last, parents)) = key.split_last() else { return Dict::new() };
    let mut dict = Dict::from([(last.clone(), value)]);
    for name in parents.iter().rev() {
        dict = Dict::from([(name.clone(), Value::from(dict))]);
    }
    dict
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).unwrap_or(text).matches('\n').count() + 1
}

// === where each key sits ===

/// The line of every key in a TOML document, by dotted path.
#[derive(Default)]
struct KeyLines(HashMap<String, usize>);

impl KeyLines {
    fn of(text: &str) -> Result<KeyLines, toml::de::Error> {
        let tree: Tree = toml::from_str(text)?;
        let mut lines = HashMap::new();
        tree.collect(text, "", &mut lines);
        Ok(KeyLines(lines))
    }

    /// The line of `key`, or of the nearest table above it that the file names.
    fn line(&self, key: &[impl AsRef<str>]) -> Option<usize> {
        (1..=key.len()).rev().find_map(|n| {
            let path: Vec<&str> = key[..n].iter().map(AsRef::as_ref).collect();
            self.0.get(&path.join(".")).copied()
        })
    }
}

/// A TOML value reduced to its keys and their spans.
struct Tree(Vec<(Spanned<String>, Tree)>);

impl Tree {
    fn collect(&self, text: &str, prefix: &str, lines: &mut HashMap<String, usize>) {
        for (key, tree) in &self.0 {
            let path = if prefix.is_empty() { key.get_ref().clone() } else { format!("{prefix}.{}", key.get_ref()) };
            // A table's keys may come back under a later header; the first mention wins.
            lines.entry(path.clone()).or_insert_with(|| line_of(text, key.span().start));
            tree.collect(text, &path, lines);
        }
    }
}

impl<'de> Deserialize<'de> for Tree {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TreeVisitor)
    }
}

struct TreeVisitor;

impl<'de> Visitor<'de> for TreeVisitor {
    type Value = Tree;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any TOML value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Tree, E> {
        Ok(Tree(Vec::new()))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Tree, E> {
        Ok(Tree(Vec::new()))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Tree, E> {
        Ok(Tree(Vec::new()))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Tree, E> {
        Ok(Tree(Vec::new()))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<Tree, E> {
        Ok(Tree(Vec::new()))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Tree, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Tree(Vec::new()))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Tree, A::Error> {
        let mut keys = Vec::new();
        while let Some(key) = map.next_key::<Spanned<String>>()? {
            keys.push((key, map.next_value::<Tree>()?));
        }
        Ok(Tree(keys))
    }
}
