//! Logs, metrics and traces.
pub mod access;
pub mod json;
pub mod logging;
pub mod metrics;
pub mod openmetrics;
pub mod traces;
pub mod writer;

/// An error and every cause under it, `: `-separated: the driver's errors put the useful
/// part (a refused connection, a rejected password, a missing table) in their sources,
/// which `Display` alone leaves out.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Some errors already print their cause; say it once.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// What a panic said, for the log: its `&str` or `String` payload.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|text| (*text).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}
