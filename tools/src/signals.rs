//! SIGINT/SIGTERM (stop) and SIGHUP (reload certificates) handling without
//! async-signal-safety worries: the signals are blocked in every thread and
//! one thread takes them with `sigwait`.

use std::sync::mpsc;

use anyhow::Result;

/// The name of the signal that reloads certificates.
pub const RELOAD: &str = "SIGHUP";

/// The blocked signal set.
pub struct Signals {
    set: libc::sigset_t,
}

impl Signals {
    /// Blocks SIGINT, SIGTERM and SIGHUP in the calling thread (and so in
    /// every thread it spawns afterwards).
    pub fn block() -> Result<Signals> {
        // SAFETY: sigset_t is plain data; sigemptyset initialises it.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid sigset_t owned here; the calls only write it
        // and the calling thread's mask.
        let rc = unsafe {
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigaddset(&mut set, libc::SIGHUP);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut())
        };
        if rc != 0 {
            anyhow::bail!(
                "pthread_sigmask failed: {}",
                std::io::Error::from_raw_os_error(rc)
            );
        }
        Ok(Signals { set })
    }

    /// Starts the thread that waits for the signals; each one is passed to
    /// `on_signal` and sent (by name) on the returned channel.
    pub fn spawn_waiter(
        self,
        on_signal: impl Fn(&'static str) + Send + 'static,
    ) -> mpsc::Receiver<&'static str> {
        let (tx, rx) = mpsc::channel();
        let set = self.set;
        std::thread::Builder::new()
            .name("ringport-signals".into())
            .spawn(move || loop {
                let mut sig: libc::c_int = 0;
                // SAFETY: `set` is an initialised sigset_t; `sig` is written by sigwait.
                let rc = unsafe { libc::sigwait(&set, &mut sig) };
                if rc != 0 {
                    continue;
                }
                let name = match sig {
                    libc::SIGINT => "SIGINT",
                    libc::SIGHUP => "SIGHUP",
                    _ => "SIGTERM",
                };
                on_signal(name);
                if tx.send(name).is_err() {
                    return;
                }
            })
            .expect("spawning the signal thread");
        rx
    }
}
