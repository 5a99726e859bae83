//! Error text for operators: outer messages from transport crates ("error sending request",
//! "transport error") say nothing on their own; the cause chain names the real problem.

pub(crate) fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// serde's and toml's wording of a type error (`invalid type: string "one", expected i64`,
/// ``unknown field `requir`, expected one of `scope`, …``) in a configuration file reader's
/// words: no Rust type names, no nested backticks. Anything not recognised keeps its words,
/// with backtick quotes made plain quotes.
pub(crate) fn plain(message: &str) -> String {
    let message = message.trim();
    let invalid = message.strip_prefix("invalid type: ").or_else(|| message.strip_prefix("invalid value: "));
    if let Some((actual, wanted)) = invalid.and_then(|rest| rest.rsplit_once(", expected ")) {
        return format!("must be {}, not {}", expected(wanted), found(actual));
    }
    if let Some((field, choices)) = message.strip_prefix("unknown field ").and_then(|rest| rest.split_once(", ")) {
        return format!("unknown key {}; {}", quoted(field), keys_here(choices));
    }
    if let Some((variant, choices)) = message.strip_prefix("unknown variant ").and_then(|rest| rest.split_once(", ")) {
        let choices = choices.strip_prefix("expected ").unwrap_or(choices);
        return format!("must be {}, not {}", expected(choices), quoted(variant));
    }
    if let Some(field) = message.strip_prefix("missing field ") {
        return format!("missing key {}", quoted(field));
    }
    unquote(message)
}

/// What a value must be, as serde names it (`usize`, `a sequence`, ``one of `a`, `b` ``).
pub(crate) fn expected(serde: &str) -> String {
    let serde = serde.trim();
    let integer = ["usize", "u64", "u32", "u16", "u8", "isize", "i64", "i32", "i16", "i8"];
    match serde.trim_start_matches("a ").trim_start_matches("an ") {
        name if integer.contains(&name) => "a whole number".to_owned(),
        name if name.starts_with("nonzero") => "a whole number above 0".to_owned(),
        "f64" | "f32" => "a number".to_owned(),
        "sequence" => "a list".to_owned(),
        "map" => "a table".to_owned(),
        "path string" => "a path".to_owned(),
        "boolean" | "bool" => "true or false".to_owned(),
        name if name.starts_with("struct ") => "a table".to_owned(),
        _ if serde.contains('`') => {
            // serde lists choices as "`a`", "`a` or `b`" or "one of `a`, `b`".
            let choices: Vec<String> = serde.split('`').skip(1).step_by(2).map(|c| format!("{c:?}")).collect();
            match choices.as_slice() {
                [one] => one.clone(),
                many => format!("one of {}", many.join(", ")),
            }
        }
        _ => serde.to_owned(),
    }
}

/// What was found instead, as serde, figment or toml describe it: `signed int `-1``,
/// `string "x"`, `map`.
pub(crate) fn found(actual: &str) -> String {
    let actual = actual.trim();
    if let Some(text) = actual.strip_prefix("string ") {
        return format!("the string {text}");
    }
    if let Some((_, literal)) = actual.split_once('`') {
        return literal.trim_end_matches('`').to_owned();
    }
    match actual {
        "map" => "a table".to_owned(),
        "sequence" => "a list".to_owned(),
        "unit" | "unit value" | "option" => "nothing".to_owned(),
        other => other.strip_prefix("bool ").or_else(|| other.strip_prefix("boolean ")).unwrap_or(other).to_owned(),
    }
}

/// serde's "expected one of `a`, `b`" after an unknown field, as the keys allowed here.
fn keys_here(choices: &str) -> String {
    let names: Vec<&str> = choices.split('`').skip(1).step_by(2).collect();
    if names.is_empty() {
        return "no keys are allowed here".to_owned();
    }
    format!("the keys here are {}", names.join(", "))
}

/// "`x`" → "\"x\"".
fn quoted(name: &str) -> String {
    format!("{:?}", name.trim().trim_matches('`'))
}

fn unquote(message: &str) -> String {
    let mut plain = String::with_capacity(message.len());
    for (i, piece) in message.split('`').enumerate() {
        if i > 0 {
            plain.push('"');
        }
        plain.push_str(piece);
    }
    plain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_words_become_the_files_words() {
        let cases = [
            ("invalid type: string \"one\", expected i64", "must be a whole number, not the string \"one\""),
            ("invalid type: map, expected a sequence", "must be a list, not a table"),
            ("invalid type: integer `5`, expected a sequence", "must be a list, not 5"),
            ("invalid type: floating point `1.5`, expected usize", "must be a whole number, not 1.5"),
            ("invalid type: integer `3`, expected a string", "must be a string, not 3"),
            ("invalid type: boolean `true`, expected path string", "must be a path, not true"),
            (
                "unknown field `requir`, expected one of `scope`, `require`, `keys`",
                "unknown key \"requir\"; the keys here are scope, require, keys",
            ),
            ("unknown field `rules`, expected `rule`", "unknown key \"rules\"; the keys here are rule"),
            (
                "unknown variant `warn`, expected `enforce` or `audit`",
                "must be one of \"enforce\", \"audit\", not \"warn\"",
            ),
            ("missing field `require`", "missing key \"require\""),
            ("duplicate key `scope` in table `rule`", "duplicate key \"scope\" in table \"rule\""),
        ];
        for (serde, ours) in cases {
            assert_eq!(plain(serde), ours, "{serde}");
        }
        assert_eq!(found("signed int `-1`"), "-1");
        assert_eq!(expected("a nonzero usize"), "a whole number above 0");
    }
}
