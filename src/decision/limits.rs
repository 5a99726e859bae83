//! Bounds of the decision layer, with the reason for each value.

/// How often a pull is decided before a policy that keeps being reloaded under it refuses it
/// (retryably). One reload during a decision is ordinary (an operator revoking a key); a
/// second one within the same decision means reloads outpace verification.
pub const DECISION_ATTEMPTS: usize = 2;
