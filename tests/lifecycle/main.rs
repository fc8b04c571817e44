//! The real binary: start-up errors, exit codes, the subcommands, logs, and graceful
//! shutdown on SIGTERM.

#[path = "../support/mod.rs"]
mod support;

mod cli;
mod logs;
#[cfg(target_os = "linux")]
mod memory;
mod open_files;
mod read_only;
mod shutdown;
mod traces;
