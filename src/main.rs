#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    pullgate::cli::main()
}
