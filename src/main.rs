//! The `funnel` command line: cli.rs declares it, commands.rs runs a command, processes.rs
//! runs `funnel run`'s processors.

mod cli;
mod commands;
mod processes;

use clap::Parser;

use cli::Cli;

fn init_logging(filter: &str, json: bool) {
    let env = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(env).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    init_logging(&cli.log, cli.log_json);
    // s3:// lakes (deltalake registers them at load time too; explicit, so no linker drops it).
    deltalake::aws::register_handlers(None);
    if let Err(e) = commands::run(cli).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
