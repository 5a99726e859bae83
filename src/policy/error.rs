//! The policy loader's error: every problem found, each with file, line and reason.

use std::fmt;
use std::path::PathBuf;

/// One thing wrong with the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    /// 1-based; None when the problem concerns the whole file (or the file has no lines).
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file.display(), self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// The policy could not be loaded. Lists all problems, so an operator fixes them in one go.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyError {
    pub problems: Vec<Problem>,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problems.as_slice() {
            [one] => write!(f, "invalid policy: {one}"),
            many => {
                write!(f, "invalid policy, {} problems:", many.len())?;
                many.iter().try_for_each(|p| write!(f, "\n  {p}"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(line: Option<usize>, message: &str) -> Problem {
        Problem { file: PathBuf::from("/etc/pullgate/policy.d/a.toml"), line, message: message.into() }
    }

    #[test]
    fn display_single_and_many() {
        let one = PolicyError { problems: vec![problem(Some(3), "bad")] };
        assert_eq!(one.to_string(), "invalid policy: /etc/pullgate/policy.d/a.toml:3: bad");
        let two = PolicyError { problems: vec![problem(Some(3), "bad"), problem(None, "worse")] };
        assert_eq!(
            two.to_string(),
            "invalid policy, 2 problems:\n  /etc/pullgate/policy.d/a.toml:3: bad\n  /etc/pullgate/policy.d/a.toml: worse"
        );
    }
}
