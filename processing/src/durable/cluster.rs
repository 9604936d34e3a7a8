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
use super::store::Store;

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
}

/// What the processes agreed on.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Agreed {
    /// The checkpoint every process restores; `None`: none (all start
    /// empty and replay their whole journals).
    pub epoch: Option<u64>,
    /// Its replayable sources' positions over every process (a Kafka
    /// partition is wherever the process that read it left it).
    pub logs: Positions,
    /// The next checkpoint's epoch, the same everywhere.
    pub next: u64,
}

/// This process's proposal, from its checkpoint store and the highest
/// journal segment on its disk.
pub fn propose(process: usize, store: &Store, highest_segment: u64) -> Result<Proposal, String> {
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
    })
}

/// What every process decides from all `processes` proposals: the newest
/// epoch in every one, written by a cluster of this size. A cluster in
/// which some processes have checkpoints but none in common with the
/// others cannot restore a consistent state: an error says so.
pub fn decide(all: &[Proposal], processes: usize) -> Result<Agreed, String> {
    let next = all.iter().map(|p| p.next).max().unwrap_or(1);
    let common = all
        .first()
        .into_iter()
        .flat_map(|p| p.complete.iter().map(|c| c.0))
        .filter(|e| all.iter().all(|p| p.complete.iter().any(|c| c.0 == *e)))
        .max();
    let Some(epoch) = common else {
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
                "the processes have no checkpoint in common ({}): a cluster restores one \
                 checkpoint that every process wrote. A process added to the cluster, or one \
                 whose data directory was lost, cannot be restored yet; move every process's \
                 data directory away to start the cluster empty",
                have.join(", ")
            ));
        }
        return Ok(Agreed {
            epoch: None,
            logs: Positions::new(),
            next,
        });
    };
    let mut logs = Positions::new();
    for p in all {
        for (_, written_by, positions) in p.complete.iter().filter(|c| c.0 == epoch) {
            if *written_by != processes {
                return Err(format!(
                    "checkpoint {epoch} was written by a cluster of {written_by} processes; this \
                     one has {processes}. Restoring a checkpoint on another number of processes \
                     is not supported yet: start with the former hosts list, or move every \
                     process's data directory away to start empty"
                ));
            }
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
        logs,
        next: next.max(epoch + 1),
    })
}

/// Runs the agreement among the processes at `hosts` (this one being
/// `process`): returns once every process has sent its proposal.
pub fn agree(hosts: &[String], process: usize, mine: Proposal) -> Result<Agreed, String> {
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
    let got: Arc<Mutex<Vec<Proposal>>> = Arc::default();
    let into = got.clone();
    let guards = timely::execute(config, move |worker| {
        let into = into.clone();
        let mut input = worker.dataflow::<u64, _, _>(|scope| {
            let (input, stream) = scope.new_input::<Proposal>();
            stream
                .broadcast()
                .sink(Pipeline, "Proposals", move |(data, _)| {
                    data.for_each(|_, d| {
                        if let Ok(mut all) = into.lock() {
                            all.extend(d.drain(..));
                        }
                    });
                });
            input
        });
        input.send(mine.clone());
        input.advance_to(1);
        drop(input);
        while worker.step() {}
    })?;
    for r in guards.join() {
        r?;
    }
    let all = got.lock().map_err(|e| e.to_string())?.clone();
    if all.len() != processes {
        return Err(format!(
            "{} of {processes} processes' proposals arrived",
            all.len()
        ));
    }
    decide(&all, processes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn p(process: usize, epochs: &[u64], next: u64) -> Proposal {
        Proposal {
            process,
            complete: epochs
                .iter()
                .map(|e| {
                    let mut logs = Positions::new();
                    logs.entry("t".into())
                        .or_default()
                        .insert(process as i32, *e as i64 * 10);
                    (*e, 3, logs)
                })
                .collect(),
            next,
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
        // Nothing in common; another cluster's size.
        assert!(
            decide(&[p(0, &[5], 6), p(1, &[], 1)], 2)
                .unwrap_err()
                .contains("no checkpoint in common")
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
                    agree(&hosts, i, p(i, &[7, 8 + i as u64 % 2], 20 + i as u64)).unwrap()
                })
            })
            .collect();
        let agreed: Vec<Agreed> = runs.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(agreed.iter().all(|a| a == &agreed[0]));
        assert_eq!((agreed[0].epoch, agreed[0].next), (Some(7), 22));
    }
}
