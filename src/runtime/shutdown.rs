//! Graceful shutdown: the first SIGTERM or Ctrl-C flips one flag every loop checks between
//! batches, so a batch in flight is finished (or aborted) cleanly before exit.

use std::sync::OnceLock;

use tokio::sync::watch;

fn channel() -> &'static (watch::Sender<bool>, watch::Receiver<bool>) {
    static CH: OnceLock<(watch::Sender<bool>, watch::Receiver<bool>)> = OnceLock::new();
    CH.get_or_init(|| watch::channel(false))
}

/// Install the signal handlers (once per process).
pub fn install() {
    tokio::spawn(async {
        signal().await;
        tracing::info!("shutdown requested; finishing the current batch");
        let _ = channel().0.send(true);
    });
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = tokio::signal::ctrl_c() => {},
    }
}

pub fn requested() -> bool {
    *channel().1.borrow()
}

/// Resolves once shutdown was requested.
pub async fn wait() {
    let mut rx = channel().1.clone();
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Ask every loop in this process to stop (used by commands that end on their own).
pub fn request() {
    let _ = channel().0.send(true);
}
