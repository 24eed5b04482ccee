//! The trees of a trained booster in a flat, cache-friendly form for online forecasts: 24-byte
//! nodes in one array instead of forust-ml's 80-byte nodes in a vector per tree. Built from the
//! booster; predictions are the booster's to the last bit of each leaf (checked in the tests).

use forust_ml::GradientBooster;

/// A leaf has `feature == LEAF` and its value in `threshold`.
const LEAF: u16 = u16::MAX;
/// Rows walked through one tree together.
const LOCKSTEP: usize = 4;

#[derive(Debug, Clone, Copy)]
struct Node {
    threshold: f64,
    left: u32,
    right: u32,
    missing: u32,
    feature: u16,
}

#[derive(Debug, Clone)]
pub struct CompactTrees {
    nodes: Vec<Node>,
    roots: Vec<u32>,
    base_score: f64,
    /// The value that marks a missing feature (NaN unless the booster was told otherwise).
    missing: f64,
}

impl CompactTrees {
    pub fn of(booster: &GradientBooster) -> Result<CompactTrees, String> {
        let mut nodes = Vec::new();
        let mut roots = Vec::with_capacity(booster.trees.len());
        for tree in &booster.trees {
            let base = u32::try_from(nodes.len()).map_err(|_| "too many tree nodes")?;
            roots.push(base);
            let index = |i: usize| -> Result<u32, String> {
                if i >= tree.nodes.len() {
                    return Err(format!(
                        "a tree node points at node {i} of {}",
                        tree.nodes.len()
                    ));
                }
                Ok(base + i as u32)
            };
            for node in &tree.nodes {
                nodes.push(if node.is_leaf {
                    Node {
                        threshold: f64::from(node.weight_value),
                        left: 0,
                        right: 0,
                        missing: 0,
                        feature: LEAF,
                    }
                } else {
                    Node {
                        threshold: node.split_value,
                        left: index(node.left_child)?,
                        right: index(node.right_child)?,
                        missing: index(node.missing_node)?,
                        feature: u16::try_from(node.split_feature)
                            .ok()
                            .filter(|f| *f != LEAF)
                            .ok_or("a split on a feature beyond 65534")?,
                    }
                });
            }
        }
        Ok(CompactTrees {
            nodes,
            roots,
            base_score: booster.base_score,
            missing: booster.missing,
        })
    }

    /// The highest feature index any split reads, so rows can be checked once up front.
    pub fn max_feature(&self) -> Option<usize> {
        self.nodes
            .iter()
            .filter(|n| n.feature != LEAF)
            .map(|n| n.feature as usize)
            .max()
    }

    /// Raw predictions for several rows (each longer than [`Self::max_feature`]), walking each
    /// tree for up to four rows in lockstep: the walks are independent, so the CPU overlaps
    /// their loads instead of waiting on one chain of nodes at a time.
    pub fn predict_rows(&self, rows: &[Vec<f64>]) -> Vec<f64> {
        let mut out = Vec::with_capacity(rows.len());
        for group in rows.chunks(LOCKSTEP) {
            let mut sums = [self.base_score; LOCKSTEP];
            for &root in &self.roots {
                let mut at = [root; LOCKSTEP];
                loop {
                    let mut walking = false;
                    for (r, row) in group.iter().enumerate() {
                        let node = &self.nodes[at[r] as usize];
                        if node.feature == LEAF {
                            continue;
                        }
                        walking = true;
                        at[r] = self.next(node, row[node.feature as usize]);
                    }
                    if !walking {
                        break;
                    }
                }
                for (r, sum) in sums.iter_mut().enumerate().take(group.len()) {
                    *sum += self.nodes[at[r] as usize].threshold;
                }
            }
            out.extend_from_slice(&sums[..group.len()]);
        }
        out
    }

    fn next(&self, node: &Node, v: f64) -> u32 {
        let missing = if self.missing.is_nan() {
            v.is_nan()
        } else {
            v == self.missing
        };
        if missing {
            node.missing
        } else if v < node.threshold {
            node.left
        } else {
            node.right
        }
    }
}
