//! Choosing an upstream node for a request: the upstream's algorithm
//! (`roundrobin`, `least_conn` or `chash`) within priority groups, skipping
//! nodes that are unhealthy or that this request has tried already.
//!
//! APISIX's rules: nodes are grouped by `priority`, highest first, and a
//! lower group is used only when no node of the higher ones may be (all
//! unhealthy or tried); unhealthy nodes are skipped, unless every node of
//! the upstream is unhealthy, in which case all of them are used (a guess
//! is better than a certain 502); weight 0 nodes are never picked. Retries
//! ask again with the nodes tried so far, and get the next untried node in
//! the algorithm's own order until none is left, whatever the weights.
//!
//! A `Balancer` is built once per configuration and shared by every worker
//! (picks take no lock). It knows node positions, weights, priorities and
//! each node's shared [`Target`] (health and load), not addresses or
//! sockets.

mod chash;
mod key;
mod least_conn;
mod roundrobin;

use crate::health::Target;
use std::sync::Arc;

pub use key::{request_key, HashKey, Piece};

/// `type` of an upstream, as a balancer runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// Smooth weighted round-robin (APISIX's default).
    RoundRobin,
    /// Fewest requests in flight for the weight, per process.
    LeastConn,
    /// Consistent hashing of a request key.
    Chash,
}

/// One node as the balancer sees it.
#[derive(Debug, Clone, Copy)]
pub struct Member<'a> {
    /// `host:port`: where a node's points go on a hash ring.
    pub id: &'a str,
    pub weight: u32,
    /// Higher is used first; lower only when no higher node may be.
    pub priority: i64,
}

/// A node picked for a request. For `least_conn` it counts as one request
/// in flight on that node until it is dropped.
#[derive(Debug)]
pub struct Picked<'a> {
    /// Index into the upstream's nodes.
    pub index: usize,
    held: Option<&'a Target>,
}

impl Drop for Picked<'_> {
    fn drop(&mut self) {
        if let Some(t) = self.held {
            t.end();
        }
    }
}

/// The balancing state of one upstream (one configuration's version).
#[derive(Debug)]
pub struct Balancer {
    algorithm: Algorithm,
    weights: Vec<u32>,
    /// By node index: health and requests in flight, shared with the
    /// health checker and kept across reloads.
    targets: Vec<Arc<Target>>,
    /// Highest priority first.
    groups: Vec<Group>,
}

/// The nodes of one priority and their picker.
#[derive(Debug)]
struct Group {
    /// Node indexes; the picker works on positions in this list.
    members: Vec<usize>,
    picker: Picker,
}

#[derive(Debug)]
enum Picker {
    RoundRobin(roundrobin::RoundRobin),
    LeastConn(least_conn::LeastConn),
    Chash(chash::Ring),
}

impl Balancer {
    /// A balancer over `members` (by node index) with their shared
    /// `targets` (one per member, same order).
    pub fn new(algorithm: Algorithm, members: &[Member<'_>], targets: Vec<Arc<Target>>) -> Self {
        debug_assert_eq!(members.len(), targets.len());
        let mut priorities: Vec<i64> = members.iter().map(|m| m.priority).collect();
        priorities.sort_unstable_by(|a, b| b.cmp(a));
        priorities.dedup();
        let groups = priorities
            .into_iter()
            .map(|priority| {
                let indexes: Vec<usize> = (0..members.len())
                    .filter(|&i| members[i].priority == priority)
                    .collect();
                let weights: Vec<u32> = indexes.iter().map(|&i| members[i].weight).collect();
                let picker = match algorithm {
                    Algorithm::RoundRobin => {
                        Picker::RoundRobin(roundrobin::RoundRobin::new(&weights))
                    }
                    Algorithm::LeastConn => Picker::LeastConn(least_conn::LeastConn::new(&weights)),
                    Algorithm::Chash => {
                        let ids: Vec<&str> = indexes.iter().map(|&i| members[i].id).collect();
                        Picker::Chash(chash::Ring::new(&ids, &weights))
                    }
                };
                Group {
                    members: indexes,
                    picker,
                }
            })
            .collect();
        Balancer {
            algorithm,
            weights: members.iter().map(|m| m.weight).collect(),
            targets,
            groups,
        }
    }

    /// The shared state of node `index`.
    pub fn target(&self, index: usize) -> &Arc<Target> {
        &self.targets[index]
    }

    /// A node for a request that has tried the nodes in `tried` already;
    /// `key` is the request's hash key (`chash` only; without one, a
    /// rotating key spreads requests). `None` when every node that may be
    /// used has been tried.
    pub fn pick(&self, key: Option<&[u8]>, tried: &[usize]) -> Option<Picked<'_>> {
        let any_usable = self
            .targets
            .iter()
            .zip(&self.weights)
            .any(|(t, &w)| w > 0 && t.is_usable());
        let allowed = |index: usize| {
            !tried.contains(&index) && (!any_usable || self.targets[index].is_usable())
        };
        for group in &self.groups {
            let in_group = |position: usize| allowed(group.members[position]);
            let position = match &group.picker {
                Picker::RoundRobin(rr) => rr.pick(in_group),
                Picker::LeastConn(lc) => {
                    let load = |position: usize| self.targets[group.members[position]].in_flight();
                    lc.pick(load, in_group)
                }
                Picker::Chash(ring) => match key {
                    Some(key) => ring.pick(key, in_group),
                    None => ring.pick(&rotating_key(), in_group),
                },
            };
            if let Some(position) = position {
                let index = group.members[position];
                let held = (self.algorithm == Algorithm::LeastConn).then(|| {
                    let target = &*self.targets[index];
                    target.begin();
                    target
                });
                return Some(Picked { index, held });
            }
        }
        None
    }
}

/// A key for a `chash` pick that has none (a plugin's call to the
/// upstream): successive calls spread over the ring.
fn rotating_key() -> [u8; 8] {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed).to_le_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Report;

    fn targets(n: usize) -> Vec<Arc<Target>> {
        (0..n)
            .map(|i| {
                Arc::new(Target::new(
                    format!("127.0.0.1:{}", 1000 + i).parse().unwrap(),
                ))
            })
            .collect()
    }

    fn members(spec: &[(u32, i64)]) -> (Vec<String>, Vec<(u32, i64)>) {
        let ids = (0..spec.len()).map(|i| format!("n{i}:80")).collect();
        (ids, spec.to_vec())
    }

    fn balancer(algorithm: Algorithm, spec: &[(u32, i64)]) -> (Balancer, Vec<Arc<Target>>) {
        let (ids, spec) = members(spec);
        let m: Vec<Member> = ids
            .iter()
            .zip(&spec)
            .map(|(id, &(weight, priority))| Member {
                id,
                weight,
                priority,
            })
            .collect();
        let t = targets(m.len());
        (Balancer::new(algorithm, &m, t.clone()), t)
    }

    fn take_down(t: &Target) {
        t.report(Report::TcpFailure, 1);
        assert!(!t.is_usable());
    }

    /// Every node is tried once, in the balancer's order, however skewed
    /// the weights, then there is nothing left.
    #[test]
    fn retries_reach_every_node_whatever_the_weights() {
        for algorithm in [
            Algorithm::RoundRobin,
            Algorithm::LeastConn,
            Algorithm::Chash,
        ] {
            let (b, _) = balancer(algorithm, &[(100, 0), (1, 0), (7, 0)]);
            let mut tried = Vec::new();
            while let Some(p) = b.pick(Some(b"key"), &tried) {
                assert!(!tried.contains(&p.index), "{algorithm:?}");
                tried.push(p.index);
            }
            tried.sort_unstable();
            assert_eq!(tried, vec![0, 1, 2], "{algorithm:?}");
        }
    }

    #[test]
    fn unhealthy_nodes_are_skipped_unless_all_are() {
        for algorithm in [
            Algorithm::RoundRobin,
            Algorithm::LeastConn,
            Algorithm::Chash,
        ] {
            let (b, t) = balancer(algorithm, &[(100, 0), (1, 0)]);
            take_down(&t[0]);
            for i in 0..50 {
                let key = format!("k{i}");
                assert_eq!(
                    b.pick(Some(key.as_bytes()), &[]).unwrap().index,
                    1,
                    "{algorithm:?}"
                );
            }
            // Tried the healthy one: the unhealthy one is not a fallback.
            assert!(b.pick(None, &[1]).is_none(), "{algorithm:?}");
            take_down(&t[1]);
            let mut seen = [false; 2];
            let mut held = Vec::new(); // least_conn spreads what is in flight
            for i in 0..200 {
                let key = format!("k{i}");
                let picked = b.pick(Some(key.as_bytes()), &[]).unwrap();
                seen[picked.index] = true;
                held.push(picked);
            }
            assert_eq!(seen, [true, true], "{algorithm:?}: all unhealthy, all used");
        }
    }

    #[test]
    fn lower_priorities_serve_only_when_higher_ones_cannot() {
        let (b, t) = balancer(Algorithm::RoundRobin, &[(1, 0), (1, 0), (5, -1)]);
        for _ in 0..20 {
            assert_ne!(b.pick(None, &[]).unwrap().index, 2);
        }
        assert_eq!(b.pick(None, &[0, 1]).unwrap().index, 2, "both tried");
        take_down(&t[0]);
        take_down(&t[1]);
        for _ in 0..20 {
            assert_eq!(b.pick(None, &[]).unwrap().index, 2, "both unhealthy");
        }
        assert!(b.pick(None, &[2]).is_none());
    }

    #[test]
    fn weight_zero_is_never_picked() {
        let (b, _) = balancer(Algorithm::LeastConn, &[(0, 0), (1, 0)]);
        assert_eq!(b.pick(None, &[]).unwrap().index, 1);
        assert!(b.pick(None, &[1]).is_none());
    }

    #[test]
    fn least_conn_counts_picks_until_they_are_dropped() {
        let (b, t) = balancer(Algorithm::LeastConn, &[(1, 0), (1, 0)]);
        let first = b.pick(None, &[]).unwrap();
        let second = b.pick(None, &[]).unwrap();
        assert_ne!(first.index, second.index, "the busy node is avoided");
        assert_eq!(t[first.index].in_flight(), 1);
        drop(first);
        drop(second);
        assert_eq!((t[0].in_flight(), t[1].in_flight()), (0, 0));
        let (rr, t) = balancer(Algorithm::RoundRobin, &[(1, 0)]);
        let _held = rr.pick(None, &[]).unwrap();
        assert_eq!(t[0].in_flight(), 0, "only least_conn counts");
    }

    #[test]
    fn chash_keeps_a_key_on_one_node() {
        let (b, _) = balancer(Algorithm::Chash, &[(1, 0), (1, 0), (1, 0)]);
        for i in 0..100 {
            let key = format!("user-{i}");
            let first = b.pick(Some(key.as_bytes()), &[]).unwrap().index;
            for _ in 0..5 {
                assert_eq!(b.pick(Some(key.as_bytes()), &[]).unwrap().index, first);
            }
        }
    }
}
