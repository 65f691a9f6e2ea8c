//! The `issuer-guard` binary: parses the command line and hands over to
//! `serve`, `check`, `status`, `restart` or `inventory`. Nothing else lives here.

use std::process::ExitCode;

use clap::Parser;
use issuer_guard::{
    check,
    cli::{Cli, Command},
    inventory, logging, restart, server, status,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            server::tune_allocator();
            logging::init(args.log_format.into());
            on_runtime(server::run(args.settings()))
        }
        Command::Check(args) => run_check(&args.options()),
        Command::Status(args) => run_status(&args.options()),
        Command::Restart(args) => run_restart(args),
        Command::Inventory(args) => {
            // A relist of every pod is a burst like a review's body: the
            // same settings, and one heap, keep it from staying resident.
            server::tune_allocator_lean();
            logging::init(args.log_format.into());
            on_runtime(inventory::run(args.options()))
        }
    }
}

/// Runs a command that talks to the network on the one async runtime the
/// process builds; `check` needs none.
fn on_runtime<E: std::fmt::Display>(
    work: impl std::future::Future<Output = Result<(), E>>,
) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    let result = runtime.block_on(work);
    // Tasks still running after the work is done (watches, reloaders) are
    // dropped; a stuck file read must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e.to_string()),
    }
}

fn run_check(options: &check::Options) -> ExitCode {
    match check::run(options) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("issuer-guard check: {e}");
            ExitCode::from(check::EXIT_UNUSABLE)
        }
    }
}

fn run_status(options: &status::Options) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("issuer-guard status: cannot start the async runtime: {e}");
            return ExitCode::from(status::EXIT_UNDECIDED);
        }
    };
    match runtime.block_on(status::run(options)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("issuer-guard status: {e}");
            ExitCode::from(status::EXIT_UNDECIDED)
        }
    }
}

fn run_restart(args: issuer_guard::cli::RestartArgs) -> ExitCode {
    let options = match args.options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("issuer-guard restart: {e}");
            return ExitCode::from(restart::EXIT_UNUSABLE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("issuer-guard restart: cannot start the async runtime: {e}");
            return ExitCode::from(restart::EXIT_UNUSABLE);
        }
    };
    match runtime.block_on(restart::run(&options)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("issuer-guard restart: {e}");
            ExitCode::from(restart::EXIT_UNUSABLE)
        }
    }
}

fn fail(message: &str) -> ExitCode {
    tracing::error!("start-up failed: {message}");
    ExitCode::FAILURE
}
