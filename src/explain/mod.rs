//! What `pullgate verify` and `pullgate policy check` show: plain views of a decision and of
//! the loaded rules, as text for people and (for `verify`) as JSON for tools. Views only; the
//! decision itself is always made by [`crate::decision::Gate`].

mod decision;
mod rule;
mod table;

pub use decision::{DaemonAction, Explanation, SCHEMA_VERSION, SignatureView};
pub use rule::{KeyView, RuleView};
pub use table::PolicyTable;
