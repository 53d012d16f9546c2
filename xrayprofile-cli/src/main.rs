//! `xrayprofile`: see the crate docs of `xrayprofile_cli`.

fn main() -> std::process::ExitCode {
    xrayprofile_cli::main()
}
