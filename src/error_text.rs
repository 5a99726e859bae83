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
