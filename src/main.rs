//! The `wbs` binary: everything happens in the library; see `wbs --help`.

fn main() {
    std::process::exit(wbs::cli::run());
}
