fn main() -> std::process::ExitCode {
    farol::cli::run()
}
