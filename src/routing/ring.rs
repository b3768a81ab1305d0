//! The ring: ketama consistent hashing with weighted points, or modula.
//!
//! Both are built exactly as twemproxy 0.5.0 builds them (`nc_ketama.c`, `nc_modula.c`), so
//! that with the same shard names, weights and hash, a key lands on the same shard:
//! - ketama: each member gets `floor(weight / total * 40 * members) * 4` points; the points for
//!   `"<name>-<i>"` are the four little-endian words of its MD5. A key goes to the first point
//!   at or after its hash, wrapping around.
//! - modula: member `i` appears `weight_i` times in order; a key goes to `hash % total_weight`.

use super::hash::md5_word;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distribution {
    Ketama,
    Modula,
}

impl Distribution {
    pub fn parse(name: &str) -> Option<Distribution> {
        match name {
            "ketama" => Some(Distribution::Ketama),
            "modula" => Some(Distribution::Modula),
            _ => None,
        }
    }
}

/// One shard as the ring sees it: its identity and its weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingMember {
    pub name: String,
    pub weight: u32,
}

const KETAMA_POINTS_PER_SERVER: f32 = 160.0;
const KETAMA_POINTS_PER_HASH: u32 = 4;

#[derive(Debug, Clone)]
pub struct Ring {
    kind: Distribution,
    /// Ketama: (point, member) sorted by point. Modula: (0, member) once per unit of weight.
    pub(super) points: Vec<(u32, u32)>,
    members: usize,
}

impl Ring {
    /// Builds the ring. `members` must be non-empty with positive weights (checked by config).
    pub fn new(kind: Distribution, members: &[RingMember]) -> Ring {
        let points = match kind {
            Distribution::Ketama => ketama_points(members),
            Distribution::Modula => members
                .iter()
                .enumerate()
                .flat_map(|(i, m)| std::iter::repeat_n((0, i as u32), m.weight as usize))
                .collect(),
        };
        Ring {
            kind,
            points,
            members: members.len(),
        }
    }

    pub fn member_count(&self) -> usize {
        self.members
    }

    /// The member index for a key hash.
    #[inline]
    pub fn lookup(&self, hash: u32) -> usize {
        let i = match self.kind {
            Distribution::Ketama => {
                let i = self.points.partition_point(|&(p, _)| p < hash);
                if i == self.points.len() {
                    0
                } else {
                    i
                }
            }
            Distribution::Modula => hash as usize % self.points.len(),
        };
        self.points[i].1 as usize
    }
}

fn ketama_points(members: &[RingMember]) -> Vec<(u32, u32)> {
    let total: u64 = members.iter().map(|m| u64::from(m.weight)).sum();
    let live = members.len() as f32;
    let mut points = Vec::new();
    for (index, member) in members.iter().enumerate() {
        // Single-precision arithmetic, as in twemproxy, so rounding agrees with it.
        let pct = member.weight as f32 / total as f32;
        let per_server =
            ((pct * KETAMA_POINTS_PER_SERVER / 4.0 * live + 0.000_000_000_1).floor() as u32) * 4;
        for hash_index in 0..per_server / KETAMA_POINTS_PER_HASH {
            let host = format!("{}-{}", member.name, hash_index);
            for word in 0..KETAMA_POINTS_PER_HASH as usize {
                points.push((md5_word(host.as_bytes(), word), index as u32));
            }
        }
    }
    // twemproxy sorts by point only (qsort, not stable); equal points are vanishingly rare and
    // ordering them by member keeps the ring deterministic.
    points.sort_unstable();
    points
}
