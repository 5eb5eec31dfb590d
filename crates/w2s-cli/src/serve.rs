//! `w2s serve`: the OpenAI-compatible server.

use clap::Args;
use w2s_server::{serve, ServeEvent, ServeOptions};

use w2s_engine::RunSettings;

use crate::fail::Fail;

/// Arguments of `w2s serve`.
#[derive(Debug, Args)]
#[command(allow_negative_numbers = true)]
pub struct ServeArgs {
    #[command(flatten)]
    pub run: RunSettings,
    #[command(flatten)]
    pub serve: ServeOptions,
}

pub fn run(args: ServeArgs) -> Result<(), Fail> {
    let settings = args.run.check()?;
    let cfg = args
        .serve
        .check(settings.search.clone(), &settings.engine)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Fail {
            code: 1,
            message: format!("cannot start the async runtime: {e}"),
        })?;
    let say = |event: ServeEvent| match event {
        ServeEvent::Listening(addr) => eprintln!("listening on http://{addr}"),
        ServeEvent::Draining => eprintln!("shutting down: draining in-flight requests"),
    };
    runtime
        .block_on(serve(cfg, settings.engine, &say))
        .map_err(|e| {
            let code = match e.kind() {
                w2s_server::ServeErrorKind::Setup => 2,
                w2s_server::ServeErrorKind::Runtime => 1,
            };
            Fail {
                code,
                message: e.to_string(),
            }
        })
}
