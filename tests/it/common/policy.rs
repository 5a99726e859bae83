//! Policy files as the tests write them: one rule at a time, in pullgate's native TOML.

/// A rule requiring a signature by each of `keys` (key files beside the policy).
pub fn signed(scope: &str, keys: &[&str]) -> String {
    format!("{}keys = {keys:?}\n", rule(scope, "signed"))
}

/// A rule that accepts every image under `scope` unverified.
pub fn accept(scope: &str) -> String {
    rule(scope, "accept")
}

/// A rule that rejects every image under `scope`.
pub fn reject(scope: &str) -> String {
    rule(scope, "reject")
}

/// A rule with just a scope and a requirement ("accept", "reject", "signed" with keys to add).
pub fn rule(scope: &str, require: &str) -> String {
    format!("[[rule]]\nscope = \"{scope}\"\nrequire = \"{require}\"\n")
}
