//! Row counts of a follower's main tables sampled throughout a test: the
//! follower must keep serving reads, and no table may ever be seen empty.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use pgsieve::harness::cluster::connect_url;

/// Tables the sampler watches: none may ever be seen empty once copied.
const SAMPLED: [&str; 4] = ["roles", "resources", "role_memberships", "secrets"];

/// Samples row counts of [`SAMPLED`] on a follower until stopped; returns
/// the samples taken and every sample that found a table empty.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(u64, Vec<String>)>,
}

impl Sampler {
    /// Starts sampling the follower at `url` every 10 ms.
    pub fn spawn(url: String) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let (mut samples, mut empty) = (0u64, Vec::new());
            let mut client = None;
            while !flag.load(Ordering::Relaxed) {
                if client.is_none() {
                    client = connect_url(&url).await.ok();
                }
                if let Some(c) = &client {
                    let sql = SAMPLED
                        .iter()
                        .map(|t| format!("(SELECT count(*) FROM public.{t})"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    match c.query_one(&format!("SELECT {sql}"), &[]).await {
                        Ok(row) => {
                            samples += 1;
                            for (i, t) in SAMPLED.iter().enumerate() {
                                if row.get::<_, i64>(i) == 0 {
                                    empty.push(format!("{t} empty at sample {samples}"));
                                }
                            }
                        }
                        Err(_) => client = None,
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (samples, empty)
        });
        Sampler { stop, task }
    }

    /// Stops; returns the samples taken and the empty-table findings.
    pub async fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("sampler task")
    }
}
