//! A cluster's start with durable state: before the dataflow starts, the
//! processes agree on the checkpoint to restore (the newest one every
//! process completed: a process killed while the others wrote theirs may
//! lack the newest) and on the epoch to number the next one, so that
//! their coordinators cut the same epochs.
//!
//! The agreement is a dataflow of its own over the cluster's addresses,
//! one worker a process: each process broadcasts what it has, every
//! process decides the same from the same proposals ([`decide`]). It ends
//! before the engine's dataflow connects on the same addresses.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::vec::{Broadcast, Input};

use super::logs::Positions;
use super::store::{Loaded, Store};
use crate::reading::Blob;

/// What one process has.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Proposal {
    /// The process.
    pub process: usize,
    /// Its complete checkpoints: epoch, the processes of the cluster that
    /// wrote it, and its replayable sources' positions.
    pub complete: Vec<(u64, usize, Positions)>,
    /// The lowest epoch it can number the next checkpoint or journal
    /// segment with (past everything on its disk).
    pub next: u64,
    /// Its registry: the number of devices, and a hash of their ids in
    /// index order. Readings cross processes by device index, so every
    /// process must have the same registry.
    pub registry: (usize, u64),
}

/// The registry's fingerprint for a [`Proposal`].
pub fn fingerprint(registry: &ioc_devices::Registry) -> (usize, u64) {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for d in registry.devices() {
        for b in d.id.as_bytes().iter().chain(b"\n") {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    (registry.devices().len(), h)
}

/// What the processes agreed on.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Agreed {
    /// The checkpoint every process restores; `None`: none (all start
    /// empty and replay their whole journals).
    pub epoch: Option<u64>,
    /// The processes of the cluster that wrote it (this cluster's size
    /// when none).
    pub written_by: usize,
    /// Its replayable sources' positions over every process (a Kafka
    /// partition is wherever the process that read it left it).
    pub logs: Positions,
    /// The next checkpoint's epoch, the same everywhere.
    pub next: u64,
}

/// This process's proposal, from its checkpoint store and the highest
/// journal segment on its disk.
pub fn propose(
    process: usize,
    store: &Store,
    highest_segment: u64,
    registry: (usize, u64),
) -> Result<Proposal, String> {
    let listed = store.list()?;
    let complete = listed
        .iter()
        .filter_map(|l| {
            let m = l.manifest.as_ref().ok()?;
            Some((l.epoch, m.processes, m.logs.clone()))
        })
        .collect();
    let highest = listed.iter().map(|l| l.epoch).max().unwrap_or(0);
    Ok(Proposal {
        process,
        complete,
        next: highest.max(highest_segment) + 1,
        registry,
    })
}

/// What every process decides from all `processes` proposals: the newest
/// checkpoint that every process of the cluster that wrote it has (a
/// cluster of fewer processes than this one leaves the new processes
/// without one: they take their partitions from the others, see
/// [`agree`]). A cluster whose processes have checkpoints but none that
/// all the writers have, or only one written by more processes than this
/// one has, cannot restore a consistent state: an error says so.
pub fn decide(all: &[Proposal], processes: usize) -> Result<Agreed, String> {
    if all.iter().any(|p| p.registry != all[0].registry) {
        let each: Vec<String> = all
            .iter()
            .map(|p| {
                format!(
                    "process {} has {} devices ({:016x})",
                    p.process, p.registry.0, p.registry.1
                )
            })
            .collect();
        return Err(format!(
            "the processes' device registries differ ({}): readings cross processes by device \
             index, so every process needs the same one. Give every process the same \
             alerts.database and catalogue settings",
            each.join(", ")
        ));
    }
    let next = all.iter().map(|p| p.next).max().unwrap_or(1);
    let has = |p: &Proposal, e: u64| p.complete.iter().any(|c| c.0 == e);
    let written_by = |e: u64| {
        all.iter()
            .flat_map(|p| p.complete.iter())
            .find(|c| c.0 == e)
            .map_or(processes, |c| c.1)
    };
    let mut candidates: Vec<u64> = all
        .iter()
        .flat_map(|p| p.complete.iter().map(|c| c.0))
        .collect();
    candidates.sort_unstable();
    candidates.dedup();
    // Complete: every process that wrote it still has it.
    let complete = candidates.iter().rev().copied().find(|&e| {
        let w = written_by(e);
        all.iter().filter(|p| p.process < w).count() == w
            && all.iter().filter(|p| p.process < w).all(|p| has(p, e))
    });
    let Some(epoch) = complete else {
        if let Some(&e) = candidates
            .iter()
            .rev()
            .find(|&&e| written_by(e) > processes)
        {
            return Err(format!(
                "checkpoint {e} was written by a cluster of {} processes; this one has \
                 {processes}. A cluster restores on as many processes or more (the journals of \
                 processes taken away would be lost): start with the former hosts list, or move \
                 every process's data directory away to start empty",
                written_by(e)
            ));
        }
        if all.iter().any(|p| !p.complete.is_empty()) {
            let have: Vec<String> = all
                .iter()
                .map(|p| {
                    format!(
                        "process {} {:?}",
                        p.process,
                        p.complete.iter().map(|c| c.0).collect::<Vec<_>>()
                    )
                })
                .collect();
            return Err(format!(
                "the processes have no checkpoint that every process of the cluster that wrote \
                 it still has ({}): a process's data directory was lost, or the cluster had \
                 more processes than now. Move every process's data directory away to start \
                 the cluster empty",
                have.join(", ")
            ));
        }
        return Ok(Agreed {
            epoch: None,
            written_by: processes,
            logs: Positions::new(),
            next,
        });
    };
    let writers = written_by(epoch);
    let mut logs = Positions::new();
    for p in all {
        for (_, _, positions) in p.complete.iter().filter(|c| c.0 == epoch) {
            for (topic, partitions) in positions {
                let mine = logs.entry(topic.clone()).or_default();
                for (partition, offset) in partitions {
                    let o = mine.entry(*partition).or_insert(*offset);
                    *o = (*o).max(*offset);
                }
            }
        }
    }
    Ok(Agreed {
        epoch: Some(epoch),
        written_by: writers,
        logs,
        next: next.max(epoch + 1),
    })
}

/// A checkpoint on its way from a process that wrote it to one that
/// restores from it (a cluster restoring on more processes).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Shipped {
    /// The manifest, as JSON (its own serde form).
    manifest: Blob,
    /// The parts, in the manifest's order.
    parts: Vec<Blob>,
}

/// Sends `mine` (if any) to every process of the computation and returns
/// what all of them sent, once `expected` items have come. Every worker
/// must call it at the same point: it builds a dataflow.
fn gather<T: timely::ExchangeData + Clone>(
    worker: &mut timely::worker::Worker,
    mine: Option<T>,
    expected: usize,
) -> Vec<T> {
    let got: Arc<Mutex<Vec<T>>> = Arc::default();
    let sink = got.clone();
    let mut input = worker.dataflow::<u64, _, _>(|scope| {
        let (input, stream) = scope.new_input::<T>();
        stream
            .broadcast()
            .sink(Pipeline, "Gather", move |(data, _)| {
                data.for_each(|_, d| {
                    if let Ok(mut all) = sink.lock() {
                        all.extend(d.drain(..));
                    }
                });
            });
        input
    });
    if let Some(m) = mine {
        input.send(m);
    }
    input.advance_to(1);
    drop(input);
    while got.lock().map_or(0, |g| g.len()) < expected {
        worker.step();
    }
    got.lock()
        .map(|mut g| std::mem::take(&mut *g))
        .unwrap_or_default()
}

/// Runs the agreement among the processes at `hosts` (this one being
/// `process`): returns once every process has sent its proposal. When the
/// checkpoint agreed on was written by fewer processes than there are
/// now, the processes that wrote it send it to every process (`load`
/// reads this process's copy), and the checkpoints of all writers come
/// back for [`merge`] to restore each process's partitions from.
pub fn agree(
    hosts: &[String],
    process: usize,
    mine: Proposal,
    load: impl Fn(u64) -> Result<Loaded, String> + Send + Sync + 'static,
) -> Result<(Agreed, Vec<Loaded>), String> {
    let processes = hosts.len();
    let config = timely::Config {
        communication: timely::CommunicationConfig::Cluster {
            threads: 1,
            process,
            addresses: hosts.to_vec(),
            report: false,
            zerocopy: false,
        },
        worker: timely::WorkerConfig::default(),
    };
    type Outcome = Result<(Agreed, Vec<Loaded>), String>;
    let outcome: Arc<Mutex<Option<Outcome>>> = Arc::default();
    let into = outcome.clone();
    let guards = timely::execute(config, move |worker| {
        let all = gather(worker, Some(mine.clone()), processes);
        let agreed = match decide(&all, processes) {
            Ok(a) => a,
            Err(e) => {
                if let Ok(mut o) = into.lock() {
                    *o = Some(Err(e));
                }
                while worker.step() {}
                return;
            }
        };
        // Restoring on more processes than wrote the checkpoint: every
        // writer sends its copy to everyone (every process builds this
        // dataflow: they all decided alike).
        let mut loaded = Vec::new();
        let mut failed = None;
        if let Some(epoch) = agreed.epoch.filter(|_| agreed.written_by < processes) {
            let mine = (process < agreed.written_by).then(|| match load(epoch) {
                Ok(l) => Shipped {
                    manifest: Blob(serde_json::to_vec(&l.manifest).unwrap_or_default()),
                    parts: l.parts.into_iter().map(Blob).collect(),
                },
                Err(e) => {
                    // Sent empty, so that nobody waits for it: the
                    // restore fails everywhere.
                    failed = Some(e);
                    Shipped::default()
                }
            });
            for s in gather(worker, mine, agreed.written_by) {
                match serde_json::from_slice::<super::store::Manifest>(&s.manifest.0) {
                    Ok(manifest) => loaded.push(Loaded {
                        manifest,
                        parts: s.parts.into_iter().map(|b| b.0).collect(),
                    }),
                    Err(e) => {
                        failed.get_or_insert(format!("a checkpoint sent by another process: {e}"));
                    }
                }
            }
        }
        while worker.step() {}
        if let Ok(mut o) = into.lock() {
            *o = Some(match failed {
                Some(e) => Err(e),
                None => Ok((agreed, loaded)),
            });
        }
    })?;
    for r in guards.join() {
        r?;
    }
    let taken = outcome.lock().map_err(|e| e.to_string())?.take();
    taken.unwrap_or_else(|| Err("the agreement ended without a decision".into()))
}

/// The checkpoints every writer sent, as one: their parts side by side
/// (each part keeps its worker's index in the cluster that wrote it), the
/// lowest watermark, the writers' workers added up. Restored like one
/// process's checkpoint, each process keeping the partitions it owns now.
pub fn merge(mut loaded: Vec<Loaded>) -> Result<Loaded, String> {
    loaded.sort_by_key(|l| l.manifest.parts.first().map_or(0, |p| p.worker));
    let mut all = loaded
        .pop()
        .ok_or_else(|| "no checkpoint came from the processes that wrote it".to_owned())?;
    // `workers` is now every writer's: one "process" of them all.
    all.manifest.processes = 1;
    for l in loaded {
        all.manifest.workers += l.manifest.workers;
        all.manifest.watermark_ms = all.manifest.watermark_ms.min(l.manifest.watermark_ms);
        all.manifest.parts.extend(l.manifest.parts);
        all.parts.extend(l.parts);
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn p(process: usize, epochs: &[u64], next: u64) -> Proposal {
        p_of(3, process, epochs, next)
    }

    /// A proposal whose checkpoints a cluster of `writers` wrote.
    fn p_of(writers: usize, process: usize, epochs: &[u64], next: u64) -> Proposal {
        Proposal {
            process,
            complete: epochs
                .iter()
                .map(|e| {
                    let mut logs = Positions::new();
                    logs.entry("t".into())
                        .or_default()
                        .insert(process as i32, *e as i64 * 10);
                    (*e, writers, logs)
                })
                .collect(),
            next,
            registry: (261, 7),
        }
    }

    #[test]
    fn the_newest_checkpoint_every_process_wrote_and_the_next_epoch_past_all() {
        // Process 1 was killed before it wrote checkpoint 12.
        let all = [
            p(0, &[11, 12], 13),
            p(1, &[10, 11], 14),
            p(2, &[11, 12], 13),
        ];
        let a = decide(&all, 3).unwrap();
        assert_eq!(a.epoch, Some(11));
        assert_eq!(a.next, 14);
        // Each Kafka partition where the process that read it left it.
        assert_eq!(a.logs["t"], [(0, 110), (1, 110), (2, 110)].into());
        // A fresh cluster.
        let a = decide(&[p(0, &[], 1), p(1, &[], 3)], 2).unwrap();
        assert_eq!((a.epoch, a.next), (None, 3));
        // Another registry on one process.
        let mut other = p(1, &[11], 12);
        other.registry = (262, 8);
        assert!(
            decide(&[p(0, &[11], 12), other], 2)
                .unwrap_err()
                .contains("registries differ")
        );
        // One more process than wrote it: the writers' newest.
        let a = decide(
            &[
                p_of(2, 0, &[4, 5], 6),
                p_of(2, 1, &[5], 6),
                p_of(2, 2, &[], 1),
            ],
            3,
        )
        .unwrap();
        assert_eq!((a.epoch, a.written_by), (Some(5), 2));
        // A writer's lost directory; fewer processes than wrote it.
        assert!(
            decide(&[p_of(2, 0, &[5], 6), p_of(2, 1, &[], 1)], 2)
                .unwrap_err()
                .contains("still has")
        );
        assert!(
            decide(&[p(0, &[5], 6), p(1, &[5], 6)], 2)
                .unwrap_err()
                .contains("3 processes")
        );
    }

    #[test]
    fn processes_agree_over_the_network() {
        let hosts: Vec<String> = (0..3)
            .map(|_| {
                let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                l.local_addr().unwrap().to_string()
            })
            .collect();
        let runs: Vec<_> = (0..3)
            .map(|i| {
                let hosts = hosts.clone();
                std::thread::spawn(move || {
                    let mine = p(i, &[7, 8 + i as u64 % 2], 20 + i as u64);
                    agree(&hosts, i, mine, |_| Err("not needed".into()))
                        .unwrap()
                        .0
                })
            })
            .collect();
        let agreed: Vec<Agreed> = runs.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(agreed.iter().all(|a| a == &agreed[0]));
        assert_eq!((agreed[0].epoch, agreed[0].next), (Some(7), 22));
    }
}
