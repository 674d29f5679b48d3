//! Where searches run: threads of their own (one per core), off the async
//! executor, at a lower CPU priority than the rest of the machine.
//!
//! A search is pure CPU work. On a host it shares with Redis and the
//! queue workers, eight concurrent searches at full priority take every
//! core and delay Redis' replies to the queues (measured on 2 cores: PING
//! p99 1.6–2.5 ms, 3.9 ms with other load; at nice 10, 0.3–1.5 ms). At
//! nice 10 the kernel lets any of those preempt a search at once, and
//! searches still get every cycle nobody else wants.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use super::SearchError;

/// Niceness of the search threads (0 is the default, 19 the lowest).
const SEARCH_NICE: libc::c_int = 10;

type Job = Box<dyn FnOnce() + Send>;

pub struct SearchPool {
    jobs: mpsc::Sender<Job>,
}

impl SearchPool {
    /// One thread per core; they end when the pool is dropped.
    pub fn new() -> Result<Self, SearchError> {
        let threads = std::thread::available_parallelism().map_or(2, usize::from);
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..threads {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("search-{n}"))
                .spawn(move || {
                    lower_priority();
                    loop {
                        // The lock is held only to take a job, not to run it.
                        let job = match queue.lock() {
                            Ok(queue) => queue.recv(),
                            Err(poisoned) => poisoned.into_inner().recv(),
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })
                .map_err(|e| SearchError::Storage(format!("starting a search thread: {e}")))?;
        }
        Ok(Self { jobs })
    }

    /// Runs `work` on a search thread and waits for its result.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, SearchError> + Send + 'static,
    ) -> Result<T, SearchError> {
        let (done, result) = oneshot::channel();
        // The caller's span goes along, so the search's own spans land in
        // the caller's trace rather than starting traces of their own.
        let span = tracing::Span::current();
        let job: Job = Box::new(move || {
            let outcome = span
                .in_scope(|| catch_unwind(AssertUnwindSafe(work)))
                .unwrap_or_else(|_| Err(SearchError::Storage("a search panicked".into())));
            let _ = done.send(outcome);
        });
        self.jobs
            .send(job)
            .map_err(|_| SearchError::Storage("the search threads are gone".into()))?;
        result
            .await
            .map_err(|_| SearchError::Storage("a search thread stopped".into()))?
    }
}

fn lower_priority() {
    // SAFETY: setpriority on this thread's own id; no memory is shared.
    let failed = unsafe {
        libc::setpriority(
            libc::PRIO_PROCESS,
            libc::gettid() as libc::id_t,
            SEARCH_NICE,
        )
    } != 0;
    if failed {
        tracing::debug!("could not lower the search threads' CPU priority");
    }
}

#[cfg(test)]
mod tests {
    use tracing::Instrument;

    use super::*;

    #[tokio::test]
    async fn work_runs_in_the_span_of_its_caller() {
        // Global: a search thread sees only the global subscriber, as in
        // the processes (which install theirs globally).
        let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry());
        let pool = SearchPool::new().expect("search pool");
        let caller = tracing::info_span!("caller");
        let expected = caller.id();
        assert!(expected.is_some());
        let seen = pool
            .run(|| Ok(tracing::Span::current().id()))
            .instrument(caller)
            .await
            .expect("the work ran");
        assert_eq!(seen, expected);
    }
}
