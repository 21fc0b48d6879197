//! SIGINT and SIGTERM end a live run cleanly: the kernel's export file and a
//! followed file have no end of their own, so a signal is how an operator
//! (or systemd) ends the run, and the summary, the model and a sealed,
//! indexed archive must still be written. A second signal quits at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};

/// Blocks SIGINT and SIGTERM in the calling thread (and so in every thread
/// it starts later: call it before any) and starts a thread that waits for
/// them. Returns the flag the first one sets.
pub fn stop_on_signals() -> anyhow::Result<Arc<AtomicBool>> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None).context("blocking signals")?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    std::thread::Builder::new()
        .name("tsem-signals".into())
        .spawn(move || {
            let mut first = true;
            while let Ok(sig) = set.wait() {
                if first {
                    eprintln!("tsem-stream: {sig}: finishing the run (again to quit at once)");
                    flag.store(true, Ordering::SeqCst);
                    first = false;
                } else {
                    std::process::exit(128 + sig as i32);
                }
            }
        })
        .context("starting the signal thread")?;
    Ok(stop)
}
